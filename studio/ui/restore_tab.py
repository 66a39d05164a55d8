"""The Restore tab: an old photo, Studio's restoration VAE (or a user's model), the result.

Builds a RestoreRequest from the widgets and hands it to the main window's queue. Three views:
the result beside its input (a before/after split, with a choice of the variations), the damage
mask painted over the photo (the detected scratches and dust appear there after a run; paint or
erase, and the next run fills exactly that mask), and the per-pixel uncertainty map.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider

from studio.app.jobs import Job, JobSnapshot, JobState
from studio.app.settings import with_recent_file
from studio.errors import UserError
from studio.imaging import load_picture, picture_from_array, save_picture
from studio.models.shipped import shipped_restorers
from studio.ui.convert import load_qimage, qimage_from_array
from studio.ui.image_view import ImageView
from studio.ui.mask_canvas import MaskCanvas, MaskToolbar
from studio.ui.model_picker import ModelFilePicker
from studio.ui.output_widgets import SeedRow, choose_passes, format_widgets, passes_combo
from studio.ui.tool_tab import ToolTab

MIN_TILE = 64  # the engine's smallest restore tile (studio.engines.restore.MIN_TILE)
VAE_ARCHITECTURE = "StudioRestoreVAE"  # studio.nn.restore_vae.ARCHITECTURE_ID
FACE_PASSES = 2  # a face model sees upright faces: as they are, and mirrored
SEEDED_FACE_MODELS = ("GFPGAN",)  # its decoder draws noise: the seed chooses it
MASK_HINT = (
    "Red = filled by the next run. The first run detects scratches and dust; paint more or "
    "erase, then Restore again. Clear to detect again."
)
MAX_SEED = 2**32 - 1
MAX_VARIATIONS = 8


class RestoreTab(ToolTab):
    tool = "restore"
    title = "Restore"
    open_dialog_title = "Open a photo"

    def __init__(self, window) -> None:
        super().__init__(window)
        self.input_path: Path | None = None
        self.parent_id: int | None = None
        self.result_paths: list[Path] = []  # the restored photo, then its variations
        self._jobs: dict[int, str] = {}  # job id -> model name
        self._passes_before_faces = 0  # the passes a face model could not take, to give back
        self._build()
        self.refresh_models()
        window.modelsChanged.connect(self.refresh_models)
        first = next(iter(shipped_restorers()), None)  # works out of the box
        if first is not None:
            self.set_model(first)
        self._sync_enabled()

    # -- layout ---------------------------------------------------------------------------
    def _build(self) -> None:
        settings = self.window_.ctx.settings
        self.open_button = QPushButton("Open image…")
        self.open_button.clicked.connect(self.choose_image)
        self.input_label = QLabel("No photo — open one or drop it here")
        self.input_label.setWordWrap(True)
        self.picker = ModelFilePicker(
            self.window_,
            "restore",
            hint="Studio's VAE, or SCUNet, NAFNet, FBCNN, DRUNet, GFPGAN, …",
            browse_title="Choose a restoration model",
            describe=lambda info: f"{info.architecture} · {info.parameters / 1e6:.2f} M parameters",
            remember=with_recent_file,
            refuse=_refuse_upscalers,
        )
        self.picker.changed.connect(self._sync_enabled)
        self.model_combo = self.picker.combo
        self.model_label = self.picker.label
        self.strength_slider = _fraction_slider(1.0, "Blend with the original: 0 = unchanged")
        self.denoise_slider = _fraction_slider(
            1.0, "How much grain and noise to remove (0 keeps the grain; scratches still fill)"
        )
        self.scratches_check = QCheckBox("Fix scratches and dust")
        self.scratches_check.setChecked(True)
        self.scratches_check.setToolTip(
            "Fill the damage mask: detected on the first run, then as you paint it"
        )
        self.inpaint_edit = QLineEdit()
        self.inpaint_edit.setPlaceholderText("the VAE's decoder")
        self.inpaint_edit.setToolTip(
            "Optional: a diffusion inpainting model (Hugging Face id, diffusers folder or "
            "checkpoint) that repaints the damage mask over the decoder's fill"
        )
        self.colour_check = QCheckBox("Correct fading and colour cast")
        self.ensemble_combo = passes_combo()
        self.ensemble_combo.activated.connect(self._forget_passes_before_faces)
        self.tile_spin = QSpinBox(minimum=0, maximum=4096, singleStep=64)
        self.tile_spin.setSpecialValueText("Automatic")
        self.tile_spin.setSuffix(" px")
        self.tile_spin.setValue(settings.tile_size)
        self.seed_row = SeedRow(MAX_SEED, "The same seed and settings draw the same variations")
        self.seed_spin, self.dice_button = self.seed_row.spin, self.seed_row.dice
        self.variations_spin = QSpinBox(minimum=1, maximum=MAX_VARIATIONS)
        self.variations_spin.setToolTip(
            "Pictures to make: the best guess, then alternatives drawn from the VAE's latent"
        )
        self.format_combo, self.quality_spin = format_widgets(settings)
        self.run_button = QPushButton("Restore")
        self.run_button.setToolTip("Restore the photo (Ctrl+Enter)")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.run)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow(self.open_button)
        form.addRow(self.input_label)
        form.addRow("Model", self.picker)
        form.addRow(self.model_label)
        form.addRow("Strength", self.strength_slider)
        form.addRow("Denoise", self.denoise_slider)
        form.addRow(self.scratches_check)
        form.addRow("Fill with", self.inpaint_edit)
        form.addRow(self.colour_check)
        form.addRow("Passes", self.ensemble_combo)
        form.addRow("Variations", self.variations_spin)
        form.addRow("Seed", self.seed_row)
        form.addRow("Tile", self.tile_spin)
        form.addRow("Format", self.format_combo)
        form.addRow("Quality", self.quality_spin)
        controls = QWidget()
        column = QVBoxLayout(controls)
        column.addLayout(form)
        column.addWidget(self.run_button)
        column.addWidget(self.status)
        column.addStretch(1)
        controls.setMaximumWidth(340)

        self.view = ImageView(placeholder="Drop an old photo here")
        self.variation_combo = QComboBox()
        self.variation_combo.setToolTip("Which restoration the split view shows")
        self.variation_combo.currentIndexChanged.connect(self._show_variation)
        compare = QWidget()
        compare_column = QVBoxLayout(compare)
        compare_column.setContentsMargins(0, 0, 0, 0)
        compare_column.addWidget(self.variation_combo)
        compare_column.addWidget(self.view, 1)
        self.mask_canvas = MaskCanvas(placeholder="Open a photo to paint its damage mask")
        self.mask_toolbar = MaskToolbar(self.mask_canvas)
        self.mask_toolbar.failed.connect(self.window_.notifications.error)
        self.mask_hint = QLabel(MASK_HINT)
        self.mask_hint.setWordWrap(True)
        mask_page = QWidget()
        mask_column = QVBoxLayout(mask_page)
        mask_column.setContentsMargins(0, 0, 0, 0)
        mask_column.addWidget(self.mask_toolbar)
        mask_column.addWidget(self.mask_hint)
        mask_column.addWidget(self.mask_canvas, 1)
        self.uncertainty_view = ImageView(placeholder="The uncertainty map shows after a run")
        self.views = QTabWidget()
        self.views.addTab(compare, "Before / after")
        self.views.addTab(mask_page, "Damage mask")
        self.views.addTab(self.uncertainty_view, "Uncertainty")

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(controls)
        splitter.addWidget(self.views)
        splitter.setStretchFactor(1, 1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)
        self.variation_combo.setVisible(False)

    # -- inputs ---------------------------------------------------------------------------
    def open_image(self, path: Path, parent_id: int | None = None) -> None:
        image = self.take_input(path, parent_id)
        if image is None:
            return
        self.view.set_before(None)
        self.view.set_image(image)
        self.mask_canvas.set_image(image)
        self.uncertainty_view.set_image(None)
        self._set_results([])
        self.set_status("")
        self._sync_enabled()

    def set_model(self, path: Path) -> None:
        self.picker.set_model(path)

    def refresh_models(self) -> None:
        self.picker.refresh()

    @property
    def model_info(self) -> Any:
        return self.picker.info

    # -- running --------------------------------------------------------------------------
    def build_request(self) -> Any:
        from studio.engines.restore import RestoreRequest

        settings = self.window_.ctx.settings
        fix = self.scratches_check.isChecked() and self._runs_vae()
        return RestoreRequest(
            input_path=str(self.input_path),
            model_path=str(self.model_combo.currentData()),
            strength=round(float(self.strength_slider.value()), 3),
            denoise=round(float(self.denoise_slider.value()), 3),
            fix_scratches=fix,
            mask_path=self._saved_mask() if fix and self.mask_canvas.has_mask() else None,
            colour_correction=self.colour_check.isChecked(),
            inpaint_model=(self.inpaint_edit.text().strip() or None) if fix else None,
            tile=0 if self.tile_spin.value() <= 0 else max(self.tile_spin.value(), MIN_TILE),
            ensemble=int(self.ensemble_combo.currentData()),
            seed=int(self.seed_spin.value()),
            variations=self.variations_spin.value() if self._runs_vae() else 1,
            output_format=self.format_combo.currentText(),
            quality=self.quality_spin.value(),
            device=settings.device,
            precision=settings.precision,
        )

    def _saved_mask(self) -> str:
        """The painted mask as a PNG named by its content (the history keeps its own copy)."""
        mask = self.mask_canvas.mask()
        digest = hashlib.sha256(mask.tobytes() + str(mask.shape).encode()).hexdigest()[:16]
        folder = self.window_.ctx.dirs.cache / "masks"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"mask-{digest}.png"
        if not path.exists():
            save_picture(picture_from_array(mask), path, fmt="png")
        return str(path)

    def run(self) -> None:
        if self.input_path is None:
            self.set_status("Open a photo first (or drop one on this tab).", error=True)
            return
        if self.model_combo.currentData() is None:
            self.set_status("Choose a model file first (Browse…).", error=True)
            return
        try:
            request = self.build_request()
        except UserError as exc:
            self.set_status(str(exc), error=True)
            return
        self.submit(request)

    def load_request(self, request: Any) -> None:
        self.open_image(Path(request.input_path))
        if request.model_path:
            self.set_model(Path(request.model_path))
        self.strength_slider.setValue(request.strength)
        self.denoise_slider.setValue(request.denoise)
        self.scratches_check.setChecked(request.fix_scratches)
        self.colour_check.setChecked(request.colour_correction)
        self.inpaint_edit.setText(request.inpaint_model or "")
        self.tile_spin.setValue(request.tile)
        choose_passes(self.ensemble_combo, request.ensemble)
        self.seed_spin.setValue(request.seed)
        self.variations_spin.setValue(request.variations)
        self.format_combo.setCurrentText(request.output_format)
        self.quality_spin.setValue(request.quality)
        if request.mask_path:
            self._show_mask_file(Path(request.mask_path))

    def submit(self, request: Any) -> Job:
        model = Path(request.model_path).name if request.model_path else "studio-restore-vae"
        title = f"Restore {Path(request.input_path).name} with {model}"
        job = self.window_.submit(
            request, title=title, parent_id=self.parent_id, on_finished=self._finished
        )
        self._jobs[job.id] = model
        self.set_status(f"Queued: {title}")
        return job

    def job_changed(self, job: JobSnapshot) -> None:
        """Show a running job's preview (tiles filled in as they finish)."""
        if job.id in self._jobs and job.state == JobState.RUNNING:
            if job.preview is not None:
                self.view.set_before(None)
                self.view.set_image(qimage_from_array(job.preview), keep_view=True)
            self.set_status(f"{self._jobs[job.id]}: {job.message}")

    def _finished(self, job: JobSnapshot) -> None:
        model = self._jobs.pop(job.id, "")
        if job.state == JobState.DONE:
            entry = job.result
            self.show_result(entry)
            self.set_status(f"Done with {model} in {entry.duration_s:.1f} s — entry #{entry.id}")
        else:
            self.report_unfinished(job)

    def show_result(self, entry: Any) -> None:
        """The restored photo in the split view, its variations, uncertainty and damage mask."""
        roles = entry.facts.get("outputs") or ["restored"]
        files = {role: output.path for role, output in zip(roles, entry.outputs, strict=False)}
        pictures = [path for role, path in files.items() if role in ("restored",)]
        pictures += [path for role, path in files.items() if role.startswith("variation")]
        self._set_results(pictures)
        if "uncertainty" in files:
            self.uncertainty_view.set_image(load_qimage(files["uncertainty"]))
        if "damage mask" in files:
            self._show_mask_file(files["damage mask"])

    def _show_mask_file(self, path: Path) -> None:
        try:
            mask = load_picture(path).pixels[..., 0] > 0.5
        except UserError as exc:
            self.window_.notifications.error(str(exc))
            return
        image = self.mask_canvas.image()
        if image is None or (image.height(), image.width()) != mask.shape:
            return
        self.mask_canvas.set_mask(mask.astype(np.uint8) * 255)

    def _set_results(self, paths: list[Path]) -> None:
        self.result_paths = paths
        self.variation_combo.blockSignals(True)
        self.variation_combo.clear()
        for index in range(len(paths)):
            self.variation_combo.addItem("Best guess" if index == 0 else f"Variation {index}")
        self.variation_combo.blockSignals(False)
        self.variation_combo.setVisible(len(paths) > 1)
        if paths:
            self._show_variation(0)

    def _show_variation(self, index: int) -> None:
        if not 0 <= index < len(self.result_paths):
            return
        self.view.set_image(load_qimage(self.result_paths[index]), keep_view=True)
        if self.input_path is not None:
            self.view.set_before(load_qimage(self.input_path))

    def restore_input(self) -> None:
        super().restore_input()
        self._set_results([])

    def _sync_enabled(self) -> None:
        info = self.model_info
        ready = self.input_path is not None and info is not None  # not while a model is read
        self.run_button.setEnabled(ready)
        vae = self._runs_vae()
        for control in (self.scratches_check, self.inpaint_edit, self.variations_spin):
            control.setEnabled(vae)
        self.seed_row.setEnabled(vae or getattr(info, "architecture", "") in SEEDED_FACE_MODELS)
        self.mask_hint.setText(MASK_HINT if vae else f"{MASK_HINT} (Studio's VAE only.)")
        faces = info is not None and info.faces
        self.tile_spin.setEnabled(not faces)  # a face model restores each face whole
        passes = self.ensemble_combo.model()
        for row in range(self.ensemble_combo.count()):
            upright = int(self.ensemble_combo.itemData(row)) <= FACE_PASSES
            passes.item(row).setEnabled(upright or not faces)
        chosen = int(self.ensemble_combo.currentData())
        if faces and chosen > FACE_PASSES:
            self._passes_before_faces = chosen  # given back when a model that can is chosen
            choose_passes(self.ensemble_combo, FACE_PASSES)
        elif not faces and info is not None and self._passes_before_faces:
            choose_passes(self.ensemble_combo, self._passes_before_faces)
            self._passes_before_faces = 0

    def _forget_passes_before_faces(self, _row: int) -> None:
        self._passes_before_faces = 0  # the user chose: that choice stands

    def _runs_vae(self) -> bool:
        """Whether the chosen model is Studio's VAE: only it finds and fills scratches and
        draws variations (a model still being read counts as it: the built-in one is first)."""
        info = self.model_info
        return info is None or info.architecture == VAE_ARCHITECTURE


def _fraction_slider(value: float, tip: str) -> QLabeledDoubleSlider:
    slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
    slider.setRange(0.0, 1.0)
    slider.setSingleStep(0.05)
    slider.setDecimals(2)
    slider.setValue(value)
    slider.setToolTip(tip)
    return slider


def _refuse_upscalers(info: Any) -> str | None:
    if info.purpose == "restore":
        return None
    return (
        f"{info.name} is a x{info.scale} upscaler; use it in the Upscale tab, or choose a x1 "
        "restoration model."
    )
