"""Where an image sits inside a widget: fitted to it, or zoomed and panned by the user.

ImageView and MaskCanvas both keep one, so every view in Studio zooms with the wheel around the
cursor, pans by dragging, toggles fit / 100 % on double-click and answers the same zoom keys
(0 fit, 1 100 %, + and -). Image coordinates are continuous: pixel (x, y) covers
[x, x + 1) x [y, y + 1).
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtWidgets import QWidget

MIN_ZOOM = 0.02
MAX_ZOOM = 32.0
MAX_FIT_ZOOM = 8.0  # fitting a thumbnail blows it up no further than this
ZOOM_STEP = 1.25  # one wheel notch or one +/- key press


class Viewport:
    """The zoom and pan of one widget showing an image of `image_size`.

    In fit mode the image is centred and scaled to the widget (and follows its resizes);
    otherwise `offset` moves the centred position by what the user panned.
    """

    def __init__(self, widget: QWidget, zoom_changed: Callable[[float], None]) -> None:
        self._widget = widget
        self._zoom_changed = zoom_changed
        self._size: QSize | None = None
        self._zoom = 1.0
        self._offset = QPointF(0, 0)
        self._fit = True
        self._pan_origin = QPointF()
        self._offset_origin = QPointF()

    def set_image_size(self, size: QSize | None, *, keep_view: bool = False) -> None:
        """Show an image of `size`; fit it unless `keep_view` and the size is unchanged."""
        same_size = self._size is not None and size is not None and size == self._size
        self._size = size if size is not None and not size.isEmpty() else None
        if not (keep_view and same_size):
            self._fit = True

    # -- zoom -----------------------------------------------------------------------------
    def zoom(self) -> float:
        """Screen pixels per image pixel, as shown now."""
        return self._fit_zoom() if self._fit else self._zoom

    def is_fit(self) -> bool:
        return self._fit

    def fit(self) -> None:
        self._fit = True
        self._widget.update()
        self._zoom_changed(self.zoom())

    def set_zoom(self, zoom: float, anchor: QPointF | None = None) -> None:
        """Zoom so that the image point under `anchor` (widget coordinates, default the centre)
        stays where it is."""
        if self._size is None:
            return
        if anchor is None:
            anchor = QPointF(self._widget.width() / 2, self._widget.height() / 2)
        image_point = self.to_image(anchor)
        self._zoom = min(max(zoom, MIN_ZOOM), MAX_ZOOM)
        self._fit = False
        self._offset = anchor - image_point * self._zoom - self._centred_origin(self._zoom)
        self._widget.update()
        self._zoom_changed(self._zoom)

    def zoom_by_wheel(self, steps: float, anchor: QPointF) -> None:
        """`steps` wheel notches (120ths of angleDelta) around the cursor at `anchor`."""
        self.set_zoom(self.zoom() * ZOOM_STEP**steps, anchor)

    def toggle_fit(self, anchor: QPointF) -> None:
        """Double-click: from fit to 100 % around the cursor, from anything else back to fit."""
        if self._fit:
            self.set_zoom(1.0, anchor)
        else:
            self.fit()

    def zoom_key(self, key: int) -> bool:
        """Handle 0 (fit), 1 (100 %), + and -; False for any other key."""
        if key == Qt.Key.Key_0:
            self.fit()
        elif key == Qt.Key.Key_1:
            self.set_zoom(1.0)
        elif key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.set_zoom(self.zoom() * ZOOM_STEP)
        elif key == Qt.Key.Key_Minus:
            self.set_zoom(self.zoom() / ZOOM_STEP)
        else:
            return False
        return True

    # -- pan ------------------------------------------------------------------------------
    def start_pan(self, position: QPointF) -> None:
        """Begin a drag at `position`; a fitted image keeps its place and stops following
        resizes."""
        if self._fit:
            self._zoom, self._fit, self._offset = self._fit_zoom(), False, QPointF(0, 0)
        self._pan_origin = QPointF(position)
        self._offset_origin = QPointF(self._offset)

    def pan_to(self, position: QPointF) -> None:
        self._offset = self._offset_origin + (position - self._pan_origin)
        self._widget.update()

    # -- mapping --------------------------------------------------------------------------
    def image_rect(self) -> QRectF:
        """The image's rectangle in widget coordinates (empty without an image)."""
        if self._size is None:
            return QRectF()
        zoom = self.zoom()
        origin = self._origin()
        return QRectF(origin.x(), origin.y(), self._size.width() * zoom, self._size.height() * zoom)

    def to_image(self, widget_pos: QPointF) -> QPointF:
        return (QPointF(widget_pos) - self._origin()) / self.zoom()

    def to_widget(self, image_pos: QPointF) -> QPointF:
        return QPointF(image_pos) * self.zoom() + self._origin()

    def _fit_zoom(self) -> float:
        if self._size is None:
            return 1.0
        return min(
            self._widget.width() / self._size.width(),
            self._widget.height() / self._size.height(),
            MAX_FIT_ZOOM,
        )

    def _centred_origin(self, zoom: float) -> QPointF:
        if self._size is None:
            return QPointF(0, 0)
        return QPointF(
            (self._widget.width() - self._size.width() * zoom) / 2,
            (self._widget.height() - self._size.height() * zoom) / 2,
        )

    def _origin(self) -> QPointF:
        centred = self._centred_origin(self.zoom())
        return centred if self._fit else centred + self._offset
