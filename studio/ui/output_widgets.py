"""Controls several tabs share for what a run writes and draws: the output format with its
quality, a seed with the dice that picks a new one, and the passes a network averages."""

from __future__ import annotations

import random

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QSpinBox, QToolButton, QWidget
from superqt import QLargeIntSpinBox

from studio.app.settings import OUTPUT_FORMATS, Settings
from studio.engines.base import ENSEMBLE_SIZES

ENSEMBLE_LABELS = {1: "1 (fastest)", 2: "2: mirrored too", 4: "4: flipped too", 8: "8: turned too"}


def format_widgets(settings: Settings) -> tuple[QComboBox, QSpinBox]:
    """The output format and the JPEG/WebP quality, starting at the settings' choices."""
    combo = QComboBox()
    combo.addItems(OUTPUT_FORMATS)
    combo.setCurrentText(settings.output_format)
    quality = QSpinBox(minimum=1, maximum=100)
    quality.setValue(settings.jpeg_quality)
    quality.setToolTip("JPEG and WebP quality (PNG and TIFF are lossless)")
    return combo, quality


def passes_combo() -> QComboBox:
    """How many of the photo's symmetries the network runs on and averages (the request's
    `ensemble`; its data is the count)."""
    combo = QComboBox()
    for count in ENSEMBLE_SIZES:
        combo.addItem(ENSEMBLE_LABELS[count], count)
    combo.setToolTip(
        "Run the model on the photo mirrored and turned as well, and average the answers: "
        "a little cleaner, that many times slower"
    )
    return combo


def choose_passes(combo: QComboBox, count: int) -> None:
    """Show a stored request's passes (1 if it names none the combo offers)."""
    combo.setCurrentIndex(max(0, combo.findData(count)))


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
