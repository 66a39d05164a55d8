"""The Inpaint tab: paint over part of a photo and let a diffusion model repaint just that part.

The painted mask is saved as a PNG next to the request (the history keeps its own copy), so a run,
its re-run and the command line all read the same file. Pixels outside the mask come back
unchanged; "only masked area" works on a crop around the mask at the model's resolution, so a
small fix on a large photo keeps its full resolution.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from studio.app.jobs import JobSnapshot
from studio.engines.base import EngineError
from studio.engines.diffusion import MAX_SIDE, MIN_SIDE, InpaintRequest, crop_box
from studio.errors import UserError
from studio.ui.convert import load_qimage
from studio.ui.diffusion_tab import DiffusionTab
from studio.ui.image_view import ImageView
from studio.ui.mask_canvas import MaskCanvas, MaskToolbar

ORDINARY_STRENGTH = 0.75  # ordinary models keep some of what was under the mask
INPAINTING_STRENGTH = 1.0  # dedicated inpainting models are trained to repaint it whole


class InpaintTab(DiffusionTab):
    tool = "inpaint"
    title = "Inpaint"
    send_targets = ("Inpaint", "Upscale")

    def __init__(self, window) -> None:
        super().__init__(window)
        self._mask_files: dict[int, Path] = {}  # job id -> the mask PNG this tab wrote for it
        self._build()
        self.controls.familyChanged.connect(self._family_changed)
        if window.ctx.settings.diffusion_model:
            self.controls.picker.choose(window.ctx.settings.diffusion_model)

    def _build(self) -> None:
        self.open_button = QPushButton("Open image…")
        self.open_button.clicked.connect(self.choose_image)
        self.input_label = QLabel("No image — open one, drop it here, or send one from History")
        self.input_label.setWordWrap(True)
        self.strength = QDoubleSpinBox(minimum=0.05, maximum=1.0, singleStep=0.05)
        self.strength.setValue(ORDINARY_STRENGTH)
        self.strength.setToolTip("How much of what is under the mask may change (1 = all of it)")
        self.mask_blur = QSpinBox(minimum=0, maximum=256, value=4)
        self.mask_blur.setSuffix(" px")
        self.mask_blur.setToolTip("Feather the mask's edge inwards; outside it nothing changes")
        self.only_masked = QCheckBox("Only masked area")
        self.only_masked.setChecked(True)
        self.only_masked.setToolTip(
            "Repaint a crop around the mask at the model's resolution and paste it back: small "
            "fixes on large photos keep their full resolution"
        )
        self.padding = QSpinBox(minimum=0, maximum=4096, value=32)
        self.padding.setSuffix(" px")
        self.padding.setToolTip("Context around the mask that the model sees")
        self.only_masked.toggled.connect(self.padding.setEnabled)
        self.native_resolution = QCheckBox("The model's own")
        self.native_resolution.setChecked(True)
        self.native_resolution.setToolTip("Repaint at the side the model was trained at")
        self.resolution = QSpinBox(minimum=MIN_SIDE, maximum=MAX_SIDE, singleStep=64, value=512)
        self.resolution.setSuffix(" px")
        self.resolution.setEnabled(False)
        self.resolution.setToolTip(
            "The side the model repaints at (the area is scaled to it and back): higher gives a "
            "small area more detail but takes longer; multiples of 8"
        )
        self.resolution.editingFinished.connect(
            lambda: self.resolution.setValue(self.resolution.value() // 8 * 8)
        )
        self.native_resolution.toggled.connect(lambda on: self.resolution.setEnabled(not on))
        form = self.controls.form
        form.insertRow(0, self.open_button)
        form.insertRow(1, self.input_label)
        form.addRow("Strength", self.strength)
        form.addRow("Mask blur", self.mask_blur)
        form.addRow(self.only_masked)
        form.addRow("Padding", self.padding)
        resolution_row = QHBoxLayout()
        resolution_row.addWidget(self.native_resolution)
        resolution_row.addWidget(self.resolution, 1)
        form.addRow("Resolution", resolution_row)

        controls = QWidget()
        column = QVBoxLayout(controls)
        column.addWidget(self.controls)
        column.addWidget(self._build_run_widgets("Inpaint"))
        self.send_buttons["Inpaint"].setText("Keep editing")
        self.send_buttons["Inpaint"].setToolTip("Paint on the result for another fix")
        column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(controls)
        scroll.setMinimumWidth(300)
        scroll.setMaximumWidth(400)

        self.canvas = MaskCanvas(placeholder="Open or drop an image, then paint what to repaint")
        self.mask_toolbar = MaskToolbar(self.canvas)
        self.mask_toolbar.failed.connect(self.window_.notifications.error)
        mask_page = QWidget()
        mask_column = QVBoxLayout(mask_page)
        mask_column.setContentsMargins(0, 0, 0, 0)
        mask_column.addWidget(self.mask_toolbar)
        mask_column.addWidget(self.canvas, 1)
        self.view = ImageView(placeholder="The result shows here")
        self.pages = QTabWidget()
        self.pages.addTab(mask_page, "Mask")
        self.pages.addTab(self.view, "Result")

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(scroll)
        splitter.addWidget(self.pages)
        splitter.setStretchFactor(1, 1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

    def _family_changed(self, family: Any, adopt_defaults: bool) -> None:
        if family is not None and self.native_resolution.isChecked():
            self.resolution.setValue(family.native)  # where a custom resolution starts from
        if family is not None and adopt_defaults:
            self.strength.setValue(INPAINTING_STRENGTH if family.inpainting else ORDINARY_STRENGTH)

    # -- inputs ---------------------------------------------------------------------------
    def open_image(self, path: Path, parent_id: int | None = None) -> None:
        """A new photo to fix (from a file, a drop, or an entry sent from the history)."""
        image = self.take_input(Path(path), parent_id)
        if image is None:
            return
        self.canvas.set_image(image)
        self.view.set_before(None)
        self.view.set_image(image)
        self.pages.setCurrentIndex(0)
        hint = "Paint over what to repaint, describe it, then Inpaint (Ctrl+Enter)."
        if self.canvas.can_mask_from_alpha():
            hint += " Its transparent pixels can be the mask: From alpha."
        self.set_status(hint)

    # -- running --------------------------------------------------------------------------
    def build_request(self, mask_path: Path) -> InpaintRequest:
        settings = self.window_.ctx.settings
        return InpaintRequest(
            image_path=str(self.input_path),
            mask_path=str(mask_path),
            **self.controls.values(),
            strength=round(self.strength.value(), 3),
            mask_blur=self.mask_blur.value(),
            only_masked=self.only_masked.isChecked(),
            padding=self.padding.value(),
            resolution=self.working_resolution(),
            seed=self.controls.seed_for_run(),
            output_format=settings.output_format,
            quality=settings.jpeg_quality,
            device=settings.device,
            precision=settings.precision,
            memory=settings.diffusion_memory,
        )

    def working_resolution(self) -> int:
        """As a request takes it: 0 (the model's own) or a multiple of 8."""
        if self.native_resolution.isChecked():
            return 0
        return self.resolution.value() // 8 * 8

    def run(self) -> None:
        if not self.has_model():
            return
        if self.input_path is None:
            self.set_status("Open an image first (or drop one on this tab).", error=True)
            return
        if not self.canvas.has_mask():
            self.set_status("Paint over the area to repaint first (the mask is empty).", error=True)
            return
        if int(self.controls.steps.value() * self.strength.value()) < 1:
            self.set_status(
                f"{self.controls.steps.value()} step at strength {self.strength.value():g} leaves "
                "no denoising step (diffusers runs steps × strength of them): raise the steps or "
                "the strength.",
                error=True,
            )
            return
        mask_path = self._mask_folder() / f"mask-{uuid.uuid4().hex}.png"
        try:
            self.canvas.save_mask(mask_path)
            request = self.build_request(mask_path)
        except (EngineError, UserError, OSError) as exc:
            mask_path.unlink(missing_ok=True)
            self.set_status(str(exc), error=True)
            return
        job = self.submit(request)
        self._mask_files[job.id] = mask_path

    def _mask_folder(self) -> Path:
        folder = self.window_.ctx.dirs.cache / "masks"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def load_request(self, request: Any) -> None:
        self.controls.load(request)
        self.open_image(Path(request.image_path))
        try:
            self.canvas.load_mask(request.mask_path)
        except UserError as exc:
            self.window_.notifications.error(str(exc))
        self.strength.setValue(request.strength)
        self.mask_blur.setValue(request.mask_blur)
        self.only_masked.setChecked(request.only_masked)
        self.padding.setValue(request.padding)
        self.native_resolution.setChecked(request.resolution == 0)
        if request.resolution:
            self.resolution.setValue(request.resolution)

    def preview_size(self, request: Any) -> tuple[int, int]:
        """The crop the model repaints: its preview is shown at that size."""
        mask = self.canvas.mask() > 0
        if not mask.any():
            return self.canvas.image().width(), self.canvas.image().height()
        left, top, right, bottom = crop_box(mask, request.padding, request.only_masked)
        return right - left, bottom - top

    def show_preview(self, image) -> None:
        self.pages.setCurrentWidget(self.view)
        super().show_preview(image)

    def _finished(self, job: JobSnapshot) -> None:
        super()._finished(job)
        mask = self._mask_files.pop(job.id, None)
        if mask is not None:  # the history stored its own copy when the run started
            mask.unlink(missing_ok=True)

    def show_result(self, entry: Any) -> None:
        if not entry.outputs:
            return
        self.last_entry_id = entry.id
        self.pages.setCurrentWidget(self.view)
        self.view.set_image(load_qimage(entry.outputs[0].path))
        if self.input_path is not None:
            self.view.set_before(load_qimage(self.input_path))
