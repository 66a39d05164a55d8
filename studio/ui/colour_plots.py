"""Where a picture's colours lie: an OKLab chroma scatter, and the legend of the likelihood map.

`ChromaPlot` is a vectorscope for OKLab: a few thousand pixels sampled from a picture, each drawn
at its (a, b) chroma in its own colour, on a dark disc with the sRGB primaries and secondaries
marked. Grey sits in the centre, saturation grows outward, hue is the angle; putting the source,
the reference and the result side by side shows at a glance whether a grade moved the colours where
the reference has them. Sampling decodes the picture, so `sample_chroma` runs off the GUI thread.

`HeatLegend` explains the likelihood map's colours, with the ramp the engine painted it with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

SAMPLE_COUNT = 4000
CHROMA_RANGE = 0.35  # OKLab chroma at the disc's edge; sRGB's most saturated colour is ~0.32
RING_STEP = 0.1
POINT_PX = 2

# OKLab (a, b) of the sRGB primaries and secondaries: the vectorscope's targets
HUE_MARKERS: tuple[tuple[str, tuple[int, int, int], float, float], ...] = (
    ("R", (255, 0, 0), 0.2249, 0.1258),
    ("Y", (255, 255, 0), -0.0714, 0.1986),
    ("G", (0, 255, 0), -0.2339, 0.1795),
    ("C", (0, 255, 255), -0.1494, -0.0394),
    ("B", (0, 0, 255), -0.0325, -0.3115),
    ("M", (255, 0, 255), 0.2746, -0.1692),
)


@dataclass(frozen=True)
class ChromaSamples:
    """Pixels sampled from a picture: their sRGB colours and their OKLab chroma."""

    rgb: np.ndarray  # (N, 3) uint8, sRGB
    ab: np.ndarray  # (N, 2) float32, OKLab a and b


def sample_chroma(path: str | Path, count: int = SAMPLE_COUNT, seed: int = 0) -> ChromaSamples:
    """`count` pixels of the picture at `path` (at most as many as it has, transparent ones left
    out), converted to sRGB first as the grade engine does. Decodes the file: call it off the GUI
    thread."""
    from studio.engines.color import srgb_to_oklab_array, to_srgb
    from studio.imaging import load_picture

    picture = to_srgb(load_picture(path))
    pixels = picture.pixels.reshape(-1, picture.channels)
    if picture.has_alpha:
        pixels = pixels[pixels[:, -1] > 0.5]
    colour = pixels[:, :3] if pixels.shape[1] >= 3 else np.repeat(pixels[:, :1], 3, axis=1)
    rng = np.random.default_rng(seed)
    if colour.shape[0] > count:
        colour = colour[rng.choice(colour.shape[0], count, replace=False)]
    colour = np.clip(colour.astype(np.float32), 0.0, 1.0)
    ab = srgb_to_oklab_array(colour)[:, 1:]
    return ChromaSamples(rgb=np.rint(colour * 255).astype(np.uint8), ab=ab.astype(np.float32))


class ChromaPlot(QWidget):
    """The OKLab a/b plane of one picture's sampled colours (a to the right, b up)."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(120, 120)
        self._title = title
        self._samples: ChromaSamples | None = None
        self._message = "No image"
        self._points: QImage | None = None  # the scatter, rendered for the current size

    def title(self) -> str:
        return self._title

    def set_title(self, title: str) -> None:
        self._title = title
        self.update()

    def samples(self) -> ChromaSamples | None:
        return self._samples

    def message(self) -> str:
        return "" if self._samples is not None else self._message

    def set_samples(self, samples: ChromaSamples) -> None:
        self._samples = samples
        self._points = None
        self.update()

    def clear(self, message: str = "No image") -> None:
        """No points; `message` says why (nothing chosen yet, still reading, cannot be read)."""
        self._samples = None
        self._message = message
        self._points = None
        self.update()

    # -- geometry -------------------------------------------------------------------------
    def _disc(self) -> tuple[QPointF, float]:
        """Centre and radius (pixels) of the disc of chroma CHROMA_RANGE."""
        top = 18.0  # room for the title
        radius = max(min(self.width(), self.height() - top) / 2 - 4, 10.0)
        return QPointF(self.width() / 2, top + (self.height() - top) / 2), radius

    def plot_position(self, a: float, b: float) -> QPointF:
        """Where the OKLab chroma (a, b) is drawn, in widget coordinates."""
        centre, radius = self._disc()
        scale = radius / CHROMA_RANGE
        return QPointF(centre.x() + a * scale, centre.y() - b * scale)

    # -- painting -------------------------------------------------------------------------
    def resizeEvent(self, event) -> None:
        self._points = None
        super().resizeEvent(event)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor(38, 38, 40))
        centre, radius = self._disc()
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(18, 18, 20))
        painter.drawEllipse(centre, radius, radius)
        self._paint_graticule(painter, centre, radius)
        if self._samples is not None:
            if self._points is None or self._points.size() != self.size():
                self._points = self._render_points(self._samples)
            clip = QPainterPath()
            clip.addEllipse(centre, radius, radius)
            painter.setClipPath(clip)
            painter.drawImage(0, 0, self._points)
            painter.setClipping(False)
        self._paint_markers(painter)
        painter.setPen(QColor(200, 200, 205))
        painter.drawText(
            QRectF(6, 2, self.width() - 12, 16), Qt.AlignmentFlag.AlignLeft, self._title
        )
        if self._samples is None and self._message:
            painter.setPen(QColor(150, 150, 155))
            painter.drawText(
                QRectF(centre.x() - radius, centre.y() - 10, 2 * radius, 20),
                Qt.AlignmentFlag.AlignCenter,
                self._message,
            )

    def _paint_graticule(self, painter: QPainter, centre: QPointF, radius: float) -> None:
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(QPen(QColor(70, 70, 76), 1))
        rings = np.arange(RING_STEP, CHROMA_RANGE + 1e-9, RING_STEP)
        for chroma in rings:
            r = radius * chroma / CHROMA_RANGE
            painter.drawEllipse(centre, r, r)
        painter.drawLine(
            QPointF(centre.x() - radius, centre.y()), QPointF(centre.x() + radius, centre.y())
        )
        painter.drawLine(
            QPointF(centre.x(), centre.y() - radius), QPointF(centre.x(), centre.y() + radius)
        )

    def _paint_markers(self, painter: QPainter) -> None:
        painter.setBrush(Qt.BrushStyle.NoBrush)
        for label, rgb, a, b in HUE_MARKERS:
            point = self.plot_position(a, b)
            colour = QColor(*rgb)
            painter.setPen(QPen(colour, 1.5))
            painter.drawRect(QRectF(point.x() - 5, point.y() - 5, 10, 10))
            painter.drawText(QPointF(point.x() + 7, point.y() - 6), label)

    def _render_points(self, samples: ChromaSamples) -> QImage:
        """The points as a transparent image of the widget's size: numpy does the placing."""
        height, width = self.height(), self.width()
        canvas = np.zeros((height, width, 4), np.uint8)
        centre, radius = self._disc()
        scale = radius / CHROMA_RANGE
        x = np.rint(centre.x() + samples.ab[:, 0] * scale).astype(np.int64)
        y = np.rint(centre.y() - samples.ab[:, 1] * scale).astype(np.int64)
        for dy in range(POINT_PX):
            for dx in range(POINT_PX):
                px, py = x + dx, y + dy
                inside = (px >= 0) & (px < width) & (py >= 0) & (py < height)
                canvas[py[inside], px[inside], :3] = samples.rgb[inside]
                canvas[py[inside], px[inside], 3] = 255
        image = QImage(canvas.data, width, height, canvas.strides[0], QImage.Format.Format_RGBA8888)
        return image.copy()


class HeatLegend(QWidget):
    """The likelihood map's colour ramp, from colours the reference has to colours it lacks."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFixedHeight(30)
        self.setMinimumWidth(180)
        policy = self.sizePolicy()
        policy.setRetainSizeWhenHidden(True)  # showing it does not move the image below
        self.setSizePolicy(policy)
        self._ramp: QImage | None = None

    def has_ramp(self) -> bool:
        return self._ramp is not None

    def set_ramp(self, ramp: np.ndarray | None) -> None:
        """`ramp` (N, 3) uint8, left: as common as the reference's median colour; right: absent."""
        if ramp is None:
            self._ramp = None
        else:
            row = np.ascontiguousarray(ramp.reshape(1, -1, 3).astype(np.uint8))
            image = QImage(row.data, row.shape[1], 1, row.strides[0], QImage.Format.Format_RGB888)
            self._ramp = image.copy()
        self.update()

    def paintEvent(self, event) -> None:
        if self._ramp is None:
            return
        painter = QPainter(self)
        painter.drawImage(QRectF(0, 0, self.width(), 10), self._ramp)
        painter.setPen(self.palette().color(QPalette.ColorRole.WindowText))
        text = QRectF(0, 12, self.width(), self.height() - 12)
        painter.drawText(text, Qt.AlignmentFlag.AlignLeft, "in the reference")
        painter.drawText(text, Qt.AlignmentFlag.AlignRight, "missing from it")
