"""Settings: compute device and precision, default tile size, diffusion memory mode, output format
and quality."""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout, QSpinBox, QWidget

from studio.app.settings import (
    DEVICES,
    DIFFUSION_MEMORY_MODES,
    OUTPUT_FORMATS,
    PRECISIONS,
    Settings,
)
from studio.ui.upscale_tab import snap_tile


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self._settings = settings
        self.device = _combo(DEVICES, settings.device)
        self.device.setToolTip("auto: CUDA, then Apple MPS, then the CPU")
        self.precision = _combo(PRECISIONS, settings.precision)
        self.precision.setToolTip("auto: half precision on GPUs when the model supports it")
        self.tile = QSpinBox(minimum=0, maximum=4096, singleStep=32)
        self.tile.setSpecialValueText("Automatic (from free memory)")
        self.tile.setValue(settings.tile_size)
        self.diffusion_memory = _combo(DIFFUSION_MEMORY_MODES, settings.diffusion_memory)
        self.diffusion_memory.setToolTip(
            "How Generate and Inpaint save GPU memory:\n"
            "auto — decided from free GPU memory when a model loads\n"
            "off — everything on the GPU (fastest, needs the most memory)\n"
            "balanced — attention slicing and VAE tiling (a little slower)\n"
            "low — balanced plus model CPU offload (slowest, for small GPUs)"
        )
        self.output_format = _combo(OUTPUT_FORMATS, settings.output_format)
        self.quality = QSpinBox(minimum=1, maximum=100)
        self.quality.setValue(settings.jpeg_quality)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Device", self.device)
        form.addRow("Precision", self.precision)
        form.addRow("Default tile size", self.tile)
        form.addRow("Diffusion memory", self.diffusion_memory)
        form.addRow("Output format", self.output_format)
        form.addRow("JPEG / WebP quality", self.quality)
        form.addRow(buttons)

    def settings(self) -> Settings:
        return replace(
            self._settings,
            device=self.device.currentText(),
            precision=self.precision.currentText(),
            tile_size=snap_tile(self.tile.value()),
            diffusion_memory=self.diffusion_memory.currentText(),
            output_format=self.output_format.currentText(),
            jpeg_quality=self.quality.value(),
        )


def _combo(items: tuple[str, ...], current: str) -> QComboBox:
    combo = QComboBox()
    combo.addItems(items)
    combo.setCurrentText(current)
    return combo
