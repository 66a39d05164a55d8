"""Paint a mask over an image: what inpainting regenerates, or the scratches a restore repairs.

MaskCanvas shows an image with its mask as a coloured overlay at the image's full resolution.
Left-drag paints with a round brush (Shift+click: a straight line from the last stroke's end),
right-drag or Alt+drag erases, middle-drag or Space+drag pans, the wheel zooms around the cursor
and double-click toggles fit / 100 % (the Viewport every Studio view shares). The mask lives in a
MaskLayer (numpy, 0/255); the overlay is an 8-bit indexed QImage over that same buffer, so a
stroke writes numpy pixels under the brush and repaints only their rectangle on screen.
MaskToolbar holds the brush and mask commands and their keys.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QEvent, QPointF, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QAction,
    QColor,
    QImage,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
    QPainter,
    QPen,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QFileDialog,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QToolButton,
    QWidget,
)
from superqt import QFlowLayout

from studio.errors import UserError
from studio.imaging import ImageError, load_picture, picture_from_array, save_picture, to_uint8
from studio.ui.mask_layer import MASKED, Box, MaskLayer, binary
from studio.ui.viewport import Viewport

MIN_BRUSH = 1
MAX_BRUSH = 512
DEFAULT_BRUSH = 40
SLIDER_STEPS = 1000  # the size slider is logarithmic: small brushes get as much travel as large
BRUSH_STEP = 1.2  # [ and ] scale the brush by this, at least one pixel
DEFAULT_OVERLAY = QColor(255, 40, 40, 128)
MASK_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.tif *.tiff *.bmp *.gif);;All files (*)"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # Rec. 601, as Pillow's "L"


class MaskCanvas(QWidget):
    """An image with a paintable mask overlay; zoom (wheel, around cursor) and pan (middle drag
    or Space+drag); right-drag or Alt erases; double-click toggles fit / 100 %."""

    maskChanged = Signal()  # after every stroke / clear / invert / undo / redo / set_mask
    zoomChanged = Signal(float)
    brushSizeChanged = Signal(int)
    eraserChanged = Signal(bool)

    def __init__(self, parent: QWidget | None = None, placeholder: str = "") -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(160, 120)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self._placeholder = placeholder
        self._image: QImage | None = None
        self._layer = MaskLayer(0, 0)
        self._overlay: QImage | None = None  # Indexed8 over self._layer.mask's buffer
        self._has_transparency = False
        self._overlay_colour = QColor(DEFAULT_OVERLAY)
        self._viewport = Viewport(self, self.zoomChanged.emit)
        self._brush_size = DEFAULT_BRUSH
        self._eraser = False
        self._drag: str | None = None  # "paint" or "pan" while a button is held
        self._drag_button = Qt.MouseButton.NoButton
        self._last_point = QPointF()  # image coordinates, during a stroke
        self._stroke_end: QPointF | None = None  # where the last mouse stroke ended
        self._stroke_moved = False
        self._click_step = False  # the last undo step is a stroke without movement
        self._pointer: QPointF | None = None  # where the brush outline is drawn
        self._space_held = False
        self._make_actions()

    # -- actions (keys work while the canvas or its toolbar has focus) ---------------------
    def _make_actions(self) -> None:
        self.undo_action = self._action("Undo", "Undo the last mask edit (Ctrl+Z)", self.undo)
        self.undo_action.setShortcut(QKeySequence("Ctrl+Z"))
        self.redo_action = self._action(
            "Redo", "Redo the mask edit you undid (Ctrl+Shift+Z)", self.redo
        )
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.invert_action = self._action(
            "Invert", "Swap masked and unmasked (Ctrl+I)", self.invert_mask
        )
        self.invert_action.setShortcut(QKeySequence("Ctrl+I"))
        self.clear_action = self._action("Clear", "Remove the whole mask", self.clear_mask)
        self.eraser_action = self._action(
            "Eraser",
            "Erase instead of paint (E); right-drag or Alt+drag erases in any mode",
            self.set_eraser,
        )
        self.eraser_action.setCheckable(True)
        self.eraser_action.setShortcut(QKeySequence("E"))
        self.smaller_brush_action = self._action("Smaller brush", "[", self._smaller_brush)
        self.smaller_brush_action.setShortcut(QKeySequence("["))
        self.bigger_brush_action = self._action("Bigger brush", "]", self._bigger_brush)
        self.bigger_brush_action.setShortcut(QKeySequence("]"))
        self._sync_actions()

    def _action(self, text: str, tip: str, slot) -> QAction:
        action = QAction(text, self)
        action.setToolTip(tip)
        action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def actions_for_keys(self) -> list[QAction]:
        """The actions with keys, for a toolbar to add so they work while it has focus too."""
        return [
            self.undo_action,
            self.redo_action,
            self.invert_action,
            self.eraser_action,
            self.smaller_brush_action,
            self.bigger_brush_action,
        ]

    def _sync_actions(self) -> None:
        has_image = self._image is not None
        self.undo_action.setEnabled(self._layer.can_undo())
        self.redo_action.setEnabled(self._layer.can_redo())
        self.invert_action.setEnabled(has_image)
        self.clear_action.setEnabled(self.has_mask())

    # -- image ----------------------------------------------------------------------------
    def image(self) -> QImage | None:
        return self._image

    def set_image(self, image: QImage | None) -> None:
        """Show `image` with an empty mask of its size; the undo history starts afresh."""
        if image is not None and image.isNull():
            image = None
        self._image = image
        width, height = (image.width(), image.height()) if image is not None else (0, 0)
        self._overlay = None  # it points into the old layer's buffer: drop it first
        self._layer = MaskLayer(width, height)
        self._overlay = self._wrap_overlay() if image is not None else None
        alpha = _alpha(image) if image is not None else None
        self._has_transparency = alpha is not None and bool((alpha < 255).any())
        self._viewport.set_image_size(image.size() if image is not None else None)
        self._click_step = False
        self._stroke_end = None
        self.update()
        self._changed()

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self.update()

    def _wrap_overlay(self) -> QImage:
        mask = self._layer.mask
        height, width = mask.shape
        overlay = QImage(mask.data, width, height, width, QImage.Format.Format_Indexed8)
        overlay.setColorTable(self._colour_table())
        return overlay

    def _colour_table(self) -> list[int]:
        return [0] + [self._overlay_colour.rgba()] * MASKED

    # -- mask -----------------------------------------------------------------------------
    def mask(self) -> np.ndarray:
        """A copy of the mask: HxW uint8, 0 = keep, 255 = masked."""
        return self._layer.mask.copy()

    def set_mask(self, mask: np.ndarray) -> None:
        """Replace the mask (undoable). uint8 values above 127, or True, count as masked."""
        mask = np.asarray(mask)
        expected = (self._layer.height, self._layer.width)
        if self._image is None:
            raise ValueError("there is no image to set a mask on")
        if mask.shape != expected:
            raise ValueError(
                f"mask shape {mask.shape} does not match the image's {expected} (height, width)"
            )
        self._apply(self._layer.replace(binary(mask)))

    def has_mask(self) -> bool:
        return bool(self._layer.mask.any())

    def clear_mask(self) -> None:
        self._apply(self._layer.clear())

    def invert_mask(self) -> None:
        self._apply(self._layer.invert())

    def can_mask_from_alpha(self) -> bool:
        """Whether the image has any pixel that is not fully opaque."""
        return self._has_transparency

    def mask_from_alpha(self) -> bool:
        """Mask the transparent pixels (alpha < 255), undoably; False, and the mask untouched,
        when the image has no alpha or is opaque everywhere."""
        if self._image is None or not self._has_transparency:
            return False
        alpha = _alpha(self._image)
        assert alpha is not None
        self._apply(self._layer.replace(np.where(alpha < 255, np.uint8(MASKED), np.uint8(0))))
        return True

    def load_mask(self, path: str | Path) -> None:
        """Read any image as the mask (undoable): alpha > 127 is masked when the file has
        transparency, otherwise luminance > 127. It must be the image's size."""
        path = Path(path)
        if self._image is None:
            raise UserError("Open an image before loading a mask for it.")
        picture = load_picture(path)
        width, height = self._layer.width, self._layer.height
        if (picture.width, picture.height) != (width, height):
            raise ImageError(
                f"The mask {path.name} is {picture.width}×{picture.height} pixels but the image is "
                f"{width}×{height}. Load a mask made for this image, or resize it to "
                f"{width}×{height}.",
                path,
            )
        self._apply(self._layer.replace(_mask_from_pixels(picture.pixels)))

    def save_mask(self, path: str | Path) -> None:
        """Write the mask as an 8-bit greyscale PNG (atomically: a whole file or none)."""
        if self._image is None:
            raise UserError("There is no mask to save: open an image and paint one first.")
        save_picture(picture_from_array(self._layer.mask), Path(path), fmt="png")

    # -- history --------------------------------------------------------------------------
    def undo(self) -> None:
        self._apply(self._layer.undo())

    def redo(self) -> None:
        self._apply(self._layer.redo())

    def can_undo(self) -> bool:
        return self._layer.can_undo()

    def can_redo(self) -> bool:
        return self._layer.can_redo()

    def _apply(self, changed: Box | None) -> None:
        """After an edit: repaint what changed, and tell the world."""
        self._click_step = False
        if changed is not None:
            self._update_image_box(changed)
        self._changed()

    def _changed(self) -> None:
        self._sync_actions()
        self.maskChanged.emit()

    # -- brush ----------------------------------------------------------------------------
    @property
    def brush_size(self) -> int:
        """Brush diameter in image pixels."""
        return self._brush_size

    @brush_size.setter
    def brush_size(self, size: int) -> None:
        self.set_brush_size(size)

    def set_brush_size(self, size: int) -> None:
        size = min(max(int(size), MIN_BRUSH), MAX_BRUSH)
        if size == self._brush_size:
            return
        old_outline = self._outline_rect()
        self._brush_size = size
        self.update(old_outline.united(self._outline_rect()))
        self.brushSizeChanged.emit(size)

    def _smaller_brush(self) -> None:
        self.set_brush_size(min(self._brush_size - 1, round(self._brush_size / BRUSH_STEP)))

    def _bigger_brush(self) -> None:
        self.set_brush_size(max(self._brush_size + 1, round(self._brush_size * BRUSH_STEP)))

    @property
    def eraser(self) -> bool:
        return self._eraser

    @eraser.setter
    def eraser(self, on: bool) -> None:
        self.set_eraser(on)

    def set_eraser(self, on: bool) -> None:
        on = bool(on)
        self.eraser_action.setChecked(on)
        if on == self._eraser:
            return
        self._eraser = on
        self.update(self._outline_rect())
        self.eraserChanged.emit(on)

    @property
    def overlay_colour(self) -> QColor:
        return QColor(self._overlay_colour)

    @overlay_colour.setter
    def overlay_colour(self, colour: QColor) -> None:
        self._overlay_colour = QColor(colour)
        if self._overlay is not None:
            # A new wrapper: changing a QImage that painting shared could detach it from the mask.
            self._overlay = self._wrap_overlay()
        self.update()

    def paint_stroke(self, points: list[QPointF], *, erase: bool = False) -> None:
        """Paint (or erase) along `points` in image coordinates: what a mouse drag does, as one
        undo step. Every pixel whose centre is within half the brush size of the path changes."""
        if self._image is None or not points:
            return
        self._layer.begin_stroke(self._brush_size / 2, erase=erase)
        previous = points[0]
        for point in points:
            self._stroke_segment(previous, point)
            previous = point
        self._layer.end_stroke()
        self._apply(None)

    def _stroke_segment(self, start: QPointF, end: QPointF) -> None:
        box = self._layer.stroke_to((start.x(), start.y()), (end.x(), end.y()))
        if box is not None:
            self._update_image_box(box)

    # -- mapping --------------------------------------------------------------------------
    def map_to_image(self, widget_pos: QPointF) -> QPointF:
        """The image point under `widget_pos`; pixel (x, y) spans [x, x+1) x [y, y+1)."""
        return self._viewport.to_image(widget_pos)

    def map_from_image(self, image_pos: QPointF) -> QPointF:
        return self._viewport.to_widget(image_pos)

    def zoom(self) -> float:
        return self._viewport.zoom()

    def set_zoom(self, zoom: float, anchor: QPointF | None = None) -> None:
        self._viewport.set_zoom(zoom, anchor)

    def fit(self) -> None:
        self._viewport.fit()

    def _update_image_box(self, box: Box) -> None:
        top_left = self._viewport.to_widget(QPointF(box.left, box.top))
        bottom_right = self._viewport.to_widget(QPointF(box.left + box.width, box.top + box.height))
        self.update(QRectF(top_left, bottom_right).toAlignedRect().adjusted(-2, -2, 2, 2))

    def _outline_rect(self) -> QRect:
        if self._pointer is None:
            return QRect()
        radius = self._brush_size / 2 * self._viewport.zoom() + 3
        corner = self._pointer - QPointF(radius, radius)
        return QRectF(corner, QSize(0, 0)).adjusted(0, 0, 2 * radius, 2 * radius).toAlignedRect()

    def _move_pointer(self, position: QPointF | None) -> None:
        old = self._outline_rect()
        self._pointer = position
        self.update(old.united(self._outline_rect()))

    # -- painting -------------------------------------------------------------------------
    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(38, 38, 40))
        if self._image is None:
            painter.setPen(QColor(160, 160, 165))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self._placeholder)
            return
        # Smooth when shrunk; zoomed in, each mask pixel shows as the square it is.
        painter.setRenderHint(
            QPainter.RenderHint.SmoothPixmapTransform, self._viewport.zoom() < 2.0
        )
        rect = self._viewport.image_rect()
        painter.drawImage(rect, self._image)
        assert self._overlay is not None
        painter.drawImage(rect, self._overlay)
        if self._pointer is not None and self._drag != "pan" and not self._space_held:
            self._paint_outline(painter)

    def _paint_outline(self, painter: QPainter) -> None:
        """The brush's true size at this zoom: a light ring over a dark one, dashed for the
        eraser, so it shows on any image."""
        assert self._pointer is not None
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        radius = max(self._brush_size / 2 * self._viewport.zoom(), 1.0)
        style = Qt.PenStyle.DashLine if self._eraser else Qt.PenStyle.SolidLine
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(QPen(QColor(0, 0, 0, 170), 3))
        painter.drawEllipse(self._pointer, radius, radius)
        painter.setPen(QPen(QColor(255, 255, 255, 230), 1, style))
        painter.drawEllipse(self._pointer, radius, radius)

    # -- input ----------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:
        if self._image is None or self._drag is not None:
            return
        button = event.button()
        position = event.position()
        left = button == Qt.MouseButton.LeftButton
        if button == Qt.MouseButton.MiddleButton or (left and self._space_held):
            self._drag, self._drag_button = "pan", button
            self._viewport.start_pan(position)
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
            self.update(self._outline_rect())
        elif left or button == Qt.MouseButton.RightButton:
            modifiers = event.modifiers()
            alt = bool(modifiers & Qt.KeyboardModifier.AltModifier)
            erase = self._eraser or alt or button == Qt.MouseButton.RightButton
            self._drag, self._drag_button = "paint", button
            self._start_stroke(
                self.map_to_image(position),
                erase=erase,
                from_last=bool(modifiers & Qt.KeyboardModifier.ShiftModifier),
            )

    def _start_stroke(self, point: QPointF, *, erase: bool, from_last: bool) -> None:
        """Begin a mouse stroke at `point`; Shift (`from_last`) draws a straight line to it
        from where the previous stroke ended, as in Photoshop and Krita."""
        start = self._stroke_end if from_last and self._stroke_end is not None else point
        self._layer.begin_stroke(self._brush_size / 2, erase=erase)
        self._stroke_segment(start, point)
        self._stroke_moved = start != point
        self._last_point = point

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        position = event.position()
        if self._drag == "pan":
            self._viewport.pan_to(position)
            return
        if self._drag == "paint":
            point = self.map_to_image(position)
            self._stroke_segment(self._last_point, point)
            self._stroke_moved = self._stroke_moved or point != self._last_point
            self._last_point = point
        self._move_pointer(position if self._image is not None else None)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._drag is None or event.button() != self._drag_button:
            return
        drag, self._drag = self._drag, None
        if drag == "pan":
            self.setCursor(self._idle_cursor())
            self.update(self._outline_rect())
            return
        changed = self._layer.end_stroke()
        self._apply(None)
        self._click_step = changed and not self._stroke_moved
        self._stroke_end = self._last_point

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if self._image is None:
            return
        if event.button() not in (Qt.MouseButton.LeftButton, Qt.MouseButton.MiddleButton):
            return
        self._take_back_clicks()
        self._viewport.toggle_fit(event.position())
        self._move_pointer(event.position())

    def _take_back_clicks(self) -> None:
        """A double-click is a view gesture: take back the dots its clicks painted."""
        taken: Box | None = None
        drag, self._drag = self._drag, None  # Qt may send the second press before this event
        if drag == "pan":
            self.setCursor(self._idle_cursor())
        elif drag == "paint" and self._layer.end_stroke():
            if self._stroke_moved:
                self._click_step = False  # a real stroke now lies on top: keep both
            else:
                taken = self._layer.drop_last_step()
        if self._click_step:
            first = self._layer.drop_last_step()
            taken = first.united(taken) if first is not None else taken
        if taken is not None or drag == "paint":
            self._apply(taken)

    def wheelEvent(self, event: QWheelEvent) -> None:
        if self._image is None:
            return
        self._viewport.zoom_by_wheel(event.angleDelta().y() / 120.0, event.position())
        self._move_pointer(event.position())

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space:
            if not event.isAutoRepeat():
                self._space_held = True
                self.setCursor(self._idle_cursor())
                self.update(self._outline_rect())
            return
        if not self._viewport.zoom_key(event.key()):
            super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._release_space()
            return
        super().keyReleaseEvent(event)

    def focusOutEvent(self, event) -> None:
        self._release_space()  # the key's release may go to another widget
        super().focusOutEvent(event)

    def leaveEvent(self, event: QEvent) -> None:
        if self._drag is None:
            self._move_pointer(None)
        super().leaveEvent(event)

    def _release_space(self) -> None:
        self._space_held = False
        if self._drag != "pan":
            self.setCursor(self._idle_cursor())
        self.update(self._outline_rect())

    def _idle_cursor(self) -> Qt.CursorShape:
        return Qt.CursorShape.OpenHandCursor if self._space_held else Qt.CursorShape.CrossCursor


def _alpha(image: QImage) -> np.ndarray | None:
    """The image's alpha channel as HxW uint8, None when its format has none."""
    if not image.hasAlphaChannel():
        return None
    alpha = image.convertToFormat(QImage.Format.Format_Alpha8)
    rows = np.frombuffer(alpha.constBits(), dtype=np.uint8, count=alpha.sizeInBytes())
    rows = rows.reshape(alpha.height(), alpha.bytesPerLine())
    return rows[:, : alpha.width()].copy()


def _mask_from_pixels(pixels: np.ndarray) -> np.ndarray:
    """0/255 from a loaded picture: its alpha where it has transparency, else its luminance."""
    if pixels.shape[2] == 4 and bool((pixels[..., 3] < 1.0).any()):
        return binary(to_uint8(pixels[..., 3]))
    luminance = pixels[..., 0] if pixels.shape[2] == 1 else pixels[..., :3] @ _LUMA
    return binary(to_uint8(luminance))


class MaskToolbar(QWidget):
    """Brush size, brush / eraser, and the mask commands of one MaskCanvas, with their keys.

    Errors from loading or saving a mask are emitted as `failed(message)` for the tab to show.
    """

    failed = Signal(str)

    def __init__(self, canvas: MaskCanvas, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.canvas = canvas
        for action in canvas.actions_for_keys():
            self.addAction(action)  # the keys also work while a toolbar control has focus
        self._build()
        canvas.brushSizeChanged.connect(self._show_brush_size)
        canvas.eraserChanged.connect(self._show_eraser)
        canvas.maskChanged.connect(self._sync_enabled)
        self._show_brush_size(canvas.brush_size)
        self._show_eraser(canvas.eraser)
        self._sync_enabled()

    def _build(self) -> None:
        canvas = self.canvas
        size_tip = "Brush size in image pixels ([ smaller, ] bigger)"
        self.size_slider = QSlider(Qt.Orientation.Horizontal)
        self.size_slider.setRange(0, SLIDER_STEPS)
        self.size_slider.setToolTip(size_tip)
        self.size_slider.setFixedWidth(140)
        self.size_slider.valueChanged.connect(
            lambda position: canvas.set_brush_size(_size_at(position))
        )
        self.size_spin = QSpinBox(minimum=MIN_BRUSH, maximum=MAX_BRUSH)
        self.size_spin.setSuffix(" px")
        self.size_spin.setToolTip(size_tip)
        self.size_spin.valueChanged.connect(canvas.set_brush_size)

        self.brush_button = self._button("Brush", "Paint the mask (E switches to the eraser)")
        self.brush_button.setCheckable(True)
        self.brush_button.clicked.connect(lambda: canvas.set_eraser(False))
        self.eraser_button = self._button(action=canvas.eraser_action)  # checked with it
        self.undo_button = self._button(action=canvas.undo_action)
        self.redo_button = self._button(action=canvas.redo_action)
        self.clear_button = self._button(action=canvas.clear_action)
        self.invert_button = self._button(action=canvas.invert_action)
        self.from_alpha_button = self._button("From alpha", "Mask the image's transparent pixels")
        self.from_alpha_button.clicked.connect(canvas.mask_from_alpha)
        self.load_button = self._button(
            "Load mask…", "Load a mask image of the same size: white (or opaque) is masked"
        )
        self.load_button.clicked.connect(self._choose_mask_to_load)
        self.save_button = self._button("Save mask…", "Save the mask as a greyscale PNG")
        self.save_button.clicked.connect(self._choose_mask_file_to_save)

        row = QFlowLayout(self)  # wraps onto a second line in a narrow tab
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.size_slider)
        row.addWidget(self.size_spin)
        for button in (
            self.brush_button,
            self.eraser_button,
            self.undo_button,
            self.redo_button,
            self.clear_button,
            self.invert_button,
            self.from_alpha_button,
            self.load_button,
            self.save_button,
        ):
            row.addWidget(button)

    def _button(
        self, text: str = "", tip: str = "", *, action: QAction | None = None
    ) -> QToolButton:
        button = QToolButton()
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        if action is not None:
            button.setDefaultAction(action)
        else:
            button.setText(text)
            button.setToolTip(tip)
        return button

    def _show_brush_size(self, size: int) -> None:
        for widget, value in ((self.size_slider, _slider_at(size)), (self.size_spin, size)):
            widget.blockSignals(True)
            widget.setValue(value)
            widget.blockSignals(False)

    def _show_eraser(self, on: bool) -> None:
        self.brush_button.setChecked(not on)

    def _sync_enabled(self) -> None:
        has_image = self.canvas.image() is not None
        self.from_alpha_button.setEnabled(self.canvas.can_mask_from_alpha())
        self.load_button.setEnabled(has_image)
        self.save_button.setEnabled(has_image)

    def _choose_mask_to_load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a mask", "", MASK_FILTER)
        if path:
            self._report(self.canvas.load_mask, path)

    def _choose_mask_file_to_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the mask", "mask.png", "PNG (*.png)")
        if path:
            target = Path(path)
            if target.suffix.lower() != ".png":
                target = target.with_name(target.name + ".png")
            self._report(self.canvas.save_mask, target)

    def _report(self, operation, path: str | Path) -> None:
        try:
            operation(path)
        except UserError as exc:
            self.failed.emit(str(exc))


def _size_at(position: int) -> int:
    return round(MIN_BRUSH * (MAX_BRUSH / MIN_BRUSH) ** (position / SLIDER_STEPS))


def _slider_at(size: int) -> int:
    return round(SLIDER_STEPS * np.log(size / MIN_BRUSH) / np.log(MAX_BRUSH / MIN_BRUSH))
