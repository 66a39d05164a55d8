"""The Upscale tab: an image, a super-resolution model, and the result beside its input.

Builds an UpscaleRequest from the widgets and hands it to the main window's queue; never touches
the model itself. Several models can run on one image to compare them side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from studio.app.jobs import Job, JobSnapshot, JobState
from studio.app.settings import with_recent_model
from studio.models.shipped import shipped_upscalers
from studio.ui.convert import load_qimage, qimage_from_array
from studio.ui.image_view import ImageView
from studio.ui.model_picker import MODEL_FILTER, ModelFilePicker
from studio.ui.output_widgets import choose_passes, format_widgets, passes_combo
from studio.ui.tool_tab import ToolTab

MIN_TILE = 32  # the tiler's smallest tile (studio.engines.tiling.MIN_TILE, which imports torch)


class UpscaleTab(ToolTab):
    tool = "upscale"
    title = "Upscale"

    def __init__(self, window) -> None:
        super().__init__(window)
        self.input_path: Path | None = None
        self.parent_id: int | None = None
        self._jobs: dict[int, str] = {}  # job id -> model name
        self._compare_jobs: set[int] = set()
        self._compared_entry: int | None = None  # a finished run of the current comparison
        self._build()
        settings = window.ctx.settings
        self.refresh_models()
        window.modelsChanged.connect(self.refresh_models)
        chosen = Path(settings.upscale_model) if settings.upscale_model else None
        if chosen is None or not chosen.is_file():
            chosen = next(iter(shipped_upscalers()), None)  # works out of the box
        if chosen is not None:
            self.set_model(chosen)
        self._sync_enabled()

    # -- layout ---------------------------------------------------------------------------
    def _build(self) -> None:
        self.open_button = QPushButton("Open image…")
        self.open_button.clicked.connect(self.choose_image)
        self.input_label = QLabel("No image — open one or drop it here")
        self.input_label.setWordWrap(True)
        self.picker = ModelFilePicker(
            self.window_,
            "upscale",
            hint="Any upscaler spandrel reads: Real-ESRGAN, SwinIR, HAT, …",
            browse_title="Choose an upscaler model",
            describe=lambda info: (
                f"{info.architecture} · ×{info.scale} · {info.parameters / 1e6:.2f} M parameters"
            ),
            remember=with_recent_model,
        )
        self.picker.changed.connect(self._sync_enabled)
        self.model_combo = self.picker.combo
        self.model_label = self.picker.label
        self.custom_scale = QCheckBox("Custom output scale")
        self.scale_spin = QDoubleSpinBox(minimum=1.0, maximum=16.0, singleStep=0.5, value=2.0)
        self.scale_spin.setSuffix("×")
        self.custom_scale.toggled.connect(self.scale_spin.setEnabled)
        self.scale_spin.setEnabled(False)
        self.tile_spin = QSpinBox(minimum=0, maximum=4096, singleStep=32)
        self.tile_spin.setSpecialValueText("Automatic")
        self.tile_spin.setSuffix(" px")
        self.tile_spin.setValue(self.window_.ctx.settings.tile_size)
        self.ensemble_combo = passes_combo()
        self.format_combo, self.quality_spin = format_widgets(self.window_.ctx.settings)
        self.run_button = QPushButton("Upscale")
        self.run_button.setToolTip("Upscale the image (Ctrl+Enter)")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.run)
        self.compare_button = QPushButton("Compare models…")
        self.compare_button.setToolTip(
            "Run several models on this image and view them side by side"
        )
        self.compare_button.clicked.connect(self._choose_comparison)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow(self.open_button)
        form.addRow(self.input_label)
        form.addRow("Model", self.picker)
        form.addRow(self.model_label)
        form.addRow(self.custom_scale)
        form.addRow("Scale", self.scale_spin)
        form.addRow("Passes", self.ensemble_combo)
        form.addRow("Tile", self.tile_spin)
        form.addRow("Format", self.format_combo)
        form.addRow("Quality", self.quality_spin)
        controls = QWidget()
        column = QVBoxLayout(controls)
        column.addLayout(form)
        column.addWidget(self.run_button)
        column.addWidget(self.compare_button)
        column.addWidget(self.status)
        column.addStretch(1)
        controls.setMaximumWidth(340)

        self.view = ImageView(placeholder="Drop an image here")
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(controls)
        splitter.addWidget(self.view)
        splitter.setStretchFactor(1, 1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

    # -- inputs ---------------------------------------------------------------------------
    def open_image(self, path: Path, parent_id: int | None = None) -> None:
        image = self.take_input(path, parent_id)
        if image is None:
            return
        self.view.set_before(None)
        self.view.set_image(image)
        self.set_status("")
        self._sync_enabled()

    def set_model(self, path: Path) -> None:
        self.picker.set_model(path)

    def refresh_models(self) -> None:
        self.picker.refresh()

    @property
    def model_info(self) -> Any:
        return self.picker.info

    def _choose_comparison(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Models to compare", "", MODEL_FILTER)
        if paths:
            self.compare([Path(p) for p in paths])

    # -- running --------------------------------------------------------------------------
    def build_request(self, model_path: Path | None = None) -> Any:
        from studio.engines.upscale import UpscaleRequest

        settings = self.window_.ctx.settings
        return UpscaleRequest(
            input_path=str(self.input_path),
            model_path=str(model_path or self.model_combo.currentData()),
            scale=self.scale_spin.value() if self.custom_scale.isChecked() else None,
            tile=snap_tile(self.tile_spin.value()),
            ensemble=int(self.ensemble_combo.currentData()),
            output_format=self.format_combo.currentText(),
            quality=self.quality_spin.value(),
            device=settings.device,
            precision=settings.precision,
        )

    def run(self) -> None:
        if self.input_path is None:
            self.set_status("Open an image first (or drop one on this tab).", error=True)
            return
        if self.model_combo.currentData() is None:
            self.set_status("Choose a model file first (Browse…).", error=True)
            return
        self.submit(self.build_request())

    def compare(self, models: list[Path]) -> None:
        """Queue one run per model on the current image; the viewer then shows them side by side."""
        if self.input_path is None:
            self.set_status("Open an image first (or drop one on this tab).", error=True)
            return
        for model in models:
            job = self.submit(self.build_request(model))
            self._compare_jobs.add(job.id)

    def load_request(self, request: Any) -> None:
        self.open_image(Path(request.input_path))
        self.set_model(Path(request.model_path))
        self.custom_scale.setChecked(request.scale is not None)
        if request.scale is not None:
            self.scale_spin.setValue(request.scale)
        self.tile_spin.setValue(request.tile)
        choose_passes(self.ensemble_combo, request.ensemble)
        self.format_combo.setCurrentText(request.output_format)
        self.quality_spin.setValue(request.quality)

    def submit(self, request: Any) -> Job:
        model = Path(request.model_path).name
        title = f"Upscale {Path(request.input_path).name} with {model}"
        job = self.window_.submit(
            request, title=title, parent_id=self.parent_id, on_finished=self._finished
        )
        self._jobs[job.id] = model
        self.set_status(f"Queued: {title}")
        return job

    def job_changed(self, job: JobSnapshot) -> None:
        """Show a running job's preview (tiles filled in as they finish)."""
        if job.id in self._jobs and job.state == JobState.RUNNING and job.preview is not None:
            self.view.set_before(None)
            self.view.set_image(qimage_from_array(job.preview), keep_view=True)
            self.set_status(f"{self._jobs[job.id]}: {job.message}")

    def _finished(self, job: JobSnapshot) -> None:
        model = self._jobs.pop(job.id, "")
        comparing = job.id in self._compare_jobs
        self._compare_jobs.discard(job.id)
        if job.state == JobState.DONE:
            entry = job.result
            self.show_result(entry)
            self.set_status(f"Done with {model} in {entry.duration_s:.1f} s — entry #{entry.id}")
            if comparing:
                self._compared_entry = entry.id
        if comparing and not self._compare_jobs and self._compared_entry is not None:
            self.window_.open_entry(self._compared_entry)  # the side by side of every model run
            self._compared_entry = None
        if job.state != JobState.DONE:
            self.report_unfinished(job)

    def show_result(self, entry: Any) -> None:
        if not entry.outputs:
            return
        self.view.set_image(load_qimage(entry.outputs[0].path))
        if self.input_path is not None:
            self.view.set_before(load_qimage(self.input_path))

    def _sync_enabled(self) -> None:
        ready = self.input_path is not None and self.model_combo.currentData() is not None
        self.run_button.setEnabled(ready)
        self.compare_button.setEnabled(self.input_path is not None)


def snap_tile(value: int) -> int:
    """0 means automatic; anything else is at least the engine's smallest tile."""
    return 0 if value <= 0 else max(value, MIN_TILE)
