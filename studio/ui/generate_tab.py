"""The Generate tab: text to image with a Stable Diffusion model, previewed at every step.

Builds GenerateRequests from the widgets (one per image asked for, with consecutive seeds) and hands
them to the main window's queue; the model is only read, off the GUI thread, to adapt the controls
to its family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from studio.engines.base import EngineError
from studio.engines.diffusion import MAX_SEED, MAX_SIDE, MIN_SIDE, GenerateRequest, rounded_size
from studio.ui.convert import load_qimage
from studio.ui.diffusion_tab import DiffusionTab
from studio.ui.image_view import ImageView
from studio.ui.result_strip import ResultStrip

MAX_COUNT = 16
DEFAULT_PRESETS = [(512, 512), (576, 448), (448, 576), (640, 384), (384, 640)]


class GenerateTab(DiffusionTab):
    tool = "generate"
    title = "Generate"
    accepts_images = False
    send_targets = ("Inpaint", "Upscale")

    def __init__(self, window) -> None:
        super().__init__(window)
        self.result_path: Path | None = None
        self._build()
        self.controls.familyChanged.connect(self._family_changed)
        self._set_presets(DEFAULT_PRESETS)
        if window.ctx.settings.diffusion_model:
            self.controls.picker.choose(window.ctx.settings.diffusion_model)

    def _build(self) -> None:
        self.preset_combo = QComboBox()
        self.preset_combo.setToolTip("Sizes near the model's native resolution")
        self.preset_combo.activated.connect(self._preset_chosen)
        self.width_spin = _side_spin()
        self.height_spin = _side_spin()
        self.width_spin.valueChanged.connect(self._size_edited)
        self.height_spin.valueChanged.connect(self._size_edited)
        self.size_note = QLabel("")
        self.size_note.setWordWrap(True)
        self.size_note.setStyleSheet("color:#e0a040;")
        self.size_note.setVisible(False)
        self.count_spin = QSpinBox(minimum=1, maximum=MAX_COUNT, value=1)
        self.count_spin.setToolTip("Images to make, with seeds seed, seed+1, …; each is an entry")
        size_row = QHBoxLayout()
        size_row.addWidget(self.width_spin)
        size_row.addWidget(QLabel("×"))
        size_row.addWidget(self.height_spin)
        form = self.controls.form
        form.insertRow(3, "Size", self.preset_combo)
        form.insertRow(4, "", size_row)
        form.insertRow(5, self.size_note)
        form.addRow("Images", self.count_spin)

        controls = QWidget()
        column = QVBoxLayout(controls)
        column.addWidget(self.controls)
        column.addWidget(self._build_run_widgets("Generate"))
        column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(controls)
        scroll.setMinimumWidth(300)
        scroll.setMaximumWidth(400)
        self.view = ImageView(placeholder="Write a prompt and press Generate (Ctrl+Enter)")
        self.results = ResultStrip()
        self.results.chosen.connect(self._result_chosen)
        pictures = QWidget()
        picture_column = QVBoxLayout(pictures)
        picture_column.setContentsMargins(0, 0, 0, 0)
        picture_column.addWidget(self.view, 1)
        picture_column.addWidget(self.results)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(scroll)
        splitter.addWidget(pictures)
        splitter.setStretchFactor(1, 1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

    # -- the model's family ---------------------------------------------------------------
    def _family_changed(self, family: Any, adopt_defaults: bool) -> None:
        if family is None:
            return
        self._set_presets(family.size_presets)
        if adopt_defaults:
            self._set_size(*family.size_presets[0])

    def _set_presets(self, presets: list[tuple[int, int]]) -> None:
        self.preset_combo.clear()
        for width, height in presets:
            self.preset_combo.addItem(f"{width} × {height}", (width, height))
        self._show_matching_preset()

    def _preset_chosen(self, index: int) -> None:
        size = self.preset_combo.itemData(index)
        if size:
            self._set_size(*size)

    def _set_size(self, width: int, height: int) -> None:
        self.width_spin.setValue(width)
        self.height_spin.setValue(height)

    def _size_edited(self) -> None:
        self._show_matching_preset()
        _, _, note = rounded_size(self.width_spin.value(), self.height_spin.value())
        self.size_note.setText(f"The {note.replace('rounded', 'will be rounded')}." if note else "")
        self.size_note.setVisible(bool(note))

    def _show_matching_preset(self) -> None:
        size = (self.width_spin.value(), self.height_spin.value())
        combo = self.preset_combo
        matching = [i for i in range(combo.count()) if tuple(combo.itemData(i)) == size]
        combo.setCurrentIndex(matching[0] if matching else -1)

    # -- running --------------------------------------------------------------------------
    def open_image(self, path: Path, parent_id: int | None = None) -> None:
        """Generate starts from text: an image opened here goes to the Inpaint tab."""
        inpaint = self.window_.tool_tabs.get("inpaint")
        if inpaint is not None:
            self.window_.tabs.setCurrentWidget(inpaint)
            inpaint.open_image(path, parent_id)

    def build_requests(self) -> list[GenerateRequest]:
        """One request per image asked for, seeds counting up from the seed shown."""
        width, height, note = rounded_size(self.width_spin.value(), self.height_spin.value())
        if note:
            self._set_size(width, height)
            self.size_note.setText(f"The {note}.")
            self.size_note.setVisible(True)
        settings = self.window_.ctx.settings
        seed = self.controls.seed_for_run()
        common = dict(
            self.controls.values(),
            width=width,
            height=height,
            output_format=settings.output_format,
            quality=settings.jpeg_quality,
            device=settings.device,
            precision=settings.precision,
            memory=settings.diffusion_memory,
        )
        return [
            GenerateRequest(**common, seed=(seed + k) % (MAX_SEED + 1))
            for k in range(self.count_spin.value())
        ]

    def run(self) -> None:
        if not self.has_model():
            return
        family = self.controls.family
        if family is not None and family.inpainting:
            self.set_status(
                "This is an inpainting model: use it in the Inpaint tab, or choose an ordinary "
                "model to generate images.",
                error=True,
            )
            return
        try:
            requests = self.build_requests()
        except EngineError as exc:
            self.set_status(str(exc), error=True)
            return
        for request in requests:
            self.submit(request)

    def load_request(self, request: Any) -> None:
        self.controls.load(request)
        self._set_size(request.width, request.height)
        self.count_spin.setValue(1)

    def preview_size(self, request: Any) -> tuple[int, int]:
        return request.width, request.height

    def show_result(self, entry: Any) -> None:
        if entry.outputs:
            self.results.add(entry.id, entry.outputs[0].path, f"seed {entry.seed}")

    def _result_chosen(self, entry_id: int, path: Path) -> None:
        """The picked result is shown, and is the one the To … buttons send."""
        if not path.is_file():
            self.set_status(f"Entry #{entry_id} was deleted from the History.", error=True)
            return
        self.last_entry_id = entry_id
        self.result_path = path
        self.view.set_before(None)
        self.view.set_image(load_qimage(path), keep_view=True)

    def restore_input(self) -> None:
        """A cancelled or failed run's partial preview goes; the last finished image returns."""
        self.view.set_image(load_qimage(self.result_path) if self.result_path else None)


def _side_spin() -> QSpinBox:
    spin = QSpinBox(minimum=MIN_SIDE, maximum=MAX_SIDE, singleStep=8)
    spin.setSuffix(" px")
    spin.setValue(512)
    spin.setToolTip("Multiples of 8; other values are rounded when the run starts")
    return spin
