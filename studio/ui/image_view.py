"""A zoomable, pannable image view, with an optional before/after split for comparisons.

Wheel zooms around the cursor, dragging pans, double-click toggles fit and 100 %. With a `before`
image the view shows it left of a divider that the user drags; both share the after image's frame,
so an input and its upscaled output line up pixel for pixel.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPen, QWheelEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

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
        self._zoom = 1.0
        self._offset = QPointF(0, 0)
        self._fit = True
        self._split = 0.5
        self._drag: str | None = None
        self._drag_origin = QPointF()
        self._offset_origin = QPointF()

    # -- content --------------------------------------------------------------------------
    def image(self) -> QImage | None:
        return self._image

    def set_image(self, image: QImage | None, *, keep_view: bool = False) -> None:
        same_size = (
            self._image is not None and image is not None and image.size() == self._image.size()
        )
        self._image = image
        if not (keep_view and same_size):
            self._fit = True
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
        return self._effective_zoom()

    def fit(self) -> None:
        self._fit = True
        self.update()
        self.zoomChanged.emit(self._effective_zoom())

    def set_zoom(self, zoom: float, anchor: QPointF | None = None) -> None:
        if self._image is None:
            return
        anchor = anchor if anchor is not None else QPointF(self.width() / 2, self.height() / 2)
        old = self._effective_zoom()
        origin = self._origin()
        image_point = (anchor - origin) / old
        self._zoom = min(max(zoom, 0.02), 32.0)
        self._fit = False
        self._offset = anchor - image_point * self._zoom - self._centred_origin(self._zoom)
        self.update()
        self.zoomChanged.emit(self._zoom)

    def _fit_zoom(self) -> float:
        if self._image is None or self._image.isNull():
            return 1.0
        return min(
            self.width() / max(self._image.width(), 1),
            self.height() / max(self._image.height(), 1),
            8.0,
        )

    def _effective_zoom(self) -> float:
        return self._fit_zoom() if self._fit else self._zoom

    def _centred_origin(self, zoom: float) -> QPointF:
        assert self._image is not None
        return QPointF(
            (self.width() - self._image.width() * zoom) / 2,
            (self.height() - self._image.height() * zoom) / 2,
        )

    def _origin(self) -> QPointF:
        zoom = self._effective_zoom()
        centred = self._centred_origin(zoom)
        return centred if self._fit else centred + self._offset

    def _image_rect(self) -> QRectF:
        zoom = self._effective_zoom()
        assert self._image is not None
        origin = self._origin()
        return QRectF(
            origin.x(), origin.y(), self._image.width() * zoom, self._image.height() * zoom
        )

    def _divider_x(self) -> float:
        rect = self._image_rect()
        return rect.left() + rect.width() * self._split

    # -- painting and input ---------------------------------------------------------------
    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(38, 38, 40))
        if self._image is None or self._image.isNull():
            painter.setPen(QColor(160, 160, 165))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self._placeholder)
            return
        smooth = self._effective_zoom() < 2.0
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, smooth)
        rect = self._image_rect()
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
        steps = event.angleDelta().y() / 120.0
        self.set_zoom(self._effective_zoom() * (1.25**steps), event.position())

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if self._image is None or event.button() != Qt.MouseButton.LeftButton:
            return
        near_divider = abs(event.position().x() - self._divider_x()) <= DIVIDER_GRAB_PX
        self._drag = "split" if self._before is not None and near_divider else "pan"
        if self._drag == "pan" and self._fit:
            self._zoom, self._fit, self._offset = self._fit_zoom(), False, QPointF(0, 0)
        self._drag_origin = event.position()
        self._offset_origin = QPointF(self._offset)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag == "split":
            rect = self._image_rect()
            self.set_split((event.position().x() - rect.left()) / max(rect.width(), 1.0))
        elif self._drag == "pan":
            self._offset = self._offset_origin + (event.position() - self._drag_origin)
            self.update()
        elif self._before is not None and self._image is not None:
            near = abs(event.position().x() - self._divider_x()) <= DIVIDER_GRAB_PX
            cursor = Qt.CursorShape.SplitHCursor if near else Qt.CursorShape.ArrowCursor
            self.setCursor(cursor)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag = None

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if self._fit:
            self.set_zoom(1.0, event.position())
        else:
            self.fit()

    def keyPressEvent(self, event) -> None:
        if event.key() == Qt.Key.Key_0:
            self.fit()
        elif event.key() == Qt.Key.Key_1:
            self.set_zoom(1.0)
        elif event.key() in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.set_zoom(self._effective_zoom() * 1.25)
        elif event.key() == Qt.Key.Key_Minus:
            self.set_zoom(self._effective_zoom() / 1.25)
        else:
            super().keyPressEvent(event)
