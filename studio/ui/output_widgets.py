"""Controls several tabs share for what a run writes and draws: the output format with its
quality, and a seed with the dice that picks a new one."""

from __future__ import annotations

import random

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QSpinBox, QToolButton, QWidget
from superqt import QLargeIntSpinBox

from studio.app.settings import OUTPUT_FORMATS, Settings


def format_widgets(settings: Settings) -> tuple[QComboBox, QSpinBox]:
    """The output format and the JPEG/WebP quality, starting at the settings' choices."""
    combo = QComboBox()
    combo.addItems(OUTPUT_FORMATS)
    combo.setCurrentText(settings.output_format)
    quality = QSpinBox(minimum=1, maximum=100)
    quality.setValue(settings.jpeg_quality)
    quality.setToolTip("JPEG and WebP quality (PNG and TIFF are lossless)")
    return combo, quality


class SeedRow(QWidget):
    """A seed (0 to `maximum`) and its dice, as one form row: `spin`, `dice`."""

    def __init__(self, maximum: int, tooltip: str) -> None:
        super().__init__()
        self.maximum = maximum
        self.spin = QLargeIntSpinBox()
        self.spin.setRange(0, maximum)
        self.spin.setToolTip(tooltip)
        self.dice = QToolButton()
        self.dice.setText("⚄")
        self.dice.setToolTip("Pick a random seed")
        self.dice.clicked.connect(self.roll)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.spin, 1)
        row.addWidget(self.dice)

    def roll(self) -> None:
        self.spin.setValue(random.SystemRandom().randrange(self.maximum + 1))
