"""A zoomable, pannable image view, with an optional before/after split for comparisons.

Wheel zooms around the cursor, dragging pans, double-click toggles fit and 100 %. With a `before`
image the view shows it left of a divider that the user drags; both share the after image's frame,
so an input and its upscaled output line up pixel for pixel.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPen, QWheelEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from studio.ui.viewport import Viewport

DIVIDER_GRAB_PX = 8


class ImageView(QWidget):
    zoomChanged = Signal(float)

    def __init__(self, parent: QWidget | None = None, placeholder: str = "") -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(160, 120)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._image: QImage | None = None
        self._before: QImage | None = None
        self._placeholder = placeholder
        self._viewport = Viewport(self, self.zoomChanged.emit)
        self._split = 0.5
        self._drag: str | None = None

    # -- content --------------------------------------------------------------------------
    def image(self) -> QImage | None:
        return self._image

    def set_image(self, image: QImage | None, *, keep_view: bool = False) -> None:
        self._image = image
        size = image.size() if image is not None and not image.isNull() else None
        self._viewport.set_image_size(size, keep_view=keep_view)
        self.update()

    def set_before(self, image: QImage | None) -> None:
        """Show `image` left of the split divider; None turns the comparison off."""
        self._before = image
        self.update()

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self.update()

    @property
    def split(self) -> float:
        return self._split

    def set_split(self, fraction: float) -> None:
        self._split = min(max(fraction, 0.0), 1.0)
        self.update()

    # -- zoom -----------------------------------------------------------------------------
    def zoom(self) -> float:
        return self._viewport.zoom()

    def fit(self) -> None:
        self._viewport.fit()

    def set_zoom(self, zoom: float, anchor: QPointF | None = None) -> None:
        self._viewport.set_zoom(zoom, anchor)

    def _divider_x(self) -> float:
        rect = self._viewport.image_rect()
        return rect.left() + rect.width() * self._split

    # -- painting and input ---------------------------------------------------------------
    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(38, 38, 40))
        if self._image is None or self._image.isNull():
            painter.setPen(QColor(160, 160, 165))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self._placeholder)
            return
        smooth = self._viewport.zoom() < 2.0
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, smooth)
        rect = self._viewport.image_rect()
        painter.drawImage(rect, self._image)
        if self._before is not None and not self._before.isNull():
            x = self._divider_x()
            painter.save()
            painter.setClipRect(QRectF(rect.left(), rect.top(), x - rect.left(), rect.height()))
            painter.drawImage(rect, self._before)
            painter.restore()
            painter.setPen(QPen(QColor(255, 255, 255, 220), 2))
            painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
            painter.setPen(QColor(255, 255, 255))
            painter.drawText(QPointF(rect.left() + 8, rect.top() + 18), "Before")
            painter.drawText(QPointF(x + 8, rect.top() + 18), "After")

    def wheelEvent(self, event: QWheelEvent) -> None:
        if self._image is None:
            return
        self._viewport.zoom_by_wheel(event.angleDelta().y() / 120.0, event.position())

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if self._image is None or event.button() != Qt.MouseButton.LeftButton:
            return
        near_divider = abs(event.position().x() - self._divider_x()) <= DIVIDER_GRAB_PX
        self._drag = "split" if self._before is not None and near_divider else "pan"
        if self._drag == "pan":
            self._viewport.start_pan(event.position())

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag == "split":
            rect = self._viewport.image_rect()
            self.set_split((event.position().x() - rect.left()) / max(rect.width(), 1.0))
        elif self._drag == "pan":
            self._viewport.pan_to(event.position())
        elif self._before is not None and self._image is not None:
            near = abs(event.position().x() - self._divider_x()) <= DIVIDER_GRAB_PX
            cursor = Qt.CursorShape.SplitHCursor if near else Qt.CursorShape.ArrowCursor
            self.setCursor(cursor)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag = None

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if self._image is not None:
            self._viewport.toggle_fit(event.position())

    def keyPressEvent(self, event) -> None:
        if not self._viewport.zoom_key(event.key()):
            super().keyPressEvent(event)
