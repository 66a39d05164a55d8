"""The mask painter: exact brush geometry, erasing, undo, masks from files and alpha, zoom and pan.

Strokes are checked against a brute-force reference: a pixel is masked when its centre lies within
half the brush size of the path (every segment, evaluated over the whole image).
"""

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QEvent, QObject, QPoint, QPointF, QRect, Qt
from PySide6.QtGui import QColor, QImage, QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication, QVBoxLayout, QWidget

from studio.errors import UserError
from studio.ui.convert import qimage_from_array
from studio.ui.mask_canvas import MaskCanvas, MaskToolbar
from studio.ui.mask_layer import MaskLayer

WIDTH, HEIGHT = 200, 150  # shown in a 400x300 canvas: fitted at exactly 2x, origin (0, 0)


def photo(width: int = WIDTH, height: int = HEIGHT, alpha: np.ndarray | None = None) -> QImage:
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    if alpha is not None:
        pixels = np.concatenate([pixels, alpha[..., None]], axis=-1)
    return qimage_from_array(pixels)


def within_brush(
    shape: tuple[int, int], path: list[tuple[float, float]], brush: int, offset=(0, 0)
) -> np.ndarray:
    """Pixels (of a window at `offset` = (left, top)) whose centre is within brush/2 of `path`,
    and those under the path's points."""
    radius = brush / 2
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    xs += offset[0] + 0.5
    ys += offset[1] + 0.5
    distance = np.full(shape, np.inf)
    segments = list(itertools.pairwise(path)) or [(path[0], path[0])]
    for (ax, ay), (bx, by) in segments:
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        t = 0.0 if length2 == 0 else np.clip(((xs - ax) * dx + (ys - ay) * dy) / length2, 0, 1)
        distance = np.minimum(distance, np.hypot(xs - ax - t * dx, ys - ay - t * dy))
    # No centre may sit on the brush's edge, or the comparison would test rounding, not geometry.
    assert np.abs(distance - radius).min() > 1e-6
    selected = distance <= radius
    for x, y in path:
        column, row = int(np.floor(x)) - offset[0], int(np.floor(y)) - offset[1]
        if 0 <= row < shape[0] and 0 <= column < shape[1]:
            selected[row, column] = True
    return selected


def as_mask(selected: np.ndarray) -> np.ndarray:
    return np.where(selected, 255, 0).astype(np.uint8)


@pytest.fixture
def canvas(qtbot) -> MaskCanvas:
    canvas = MaskCanvas()
    qtbot.addWidget(canvas)
    canvas.resize(400, 300)
    canvas.set_image(photo())
    canvas.show()
    canvas.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is canvas)
    canvas.setFocus()
    qtbot.waitUntil(canvas.hasFocus)
    assert canvas.zoom() == pytest.approx(2.0)
    return canvas


def drag(qtbot, canvas: MaskCanvas, points, button=Qt.MouseButton.LeftButton, modifier=None):
    modifier = modifier or Qt.KeyboardModifier.NoModifier
    qtbot.mousePress(canvas, button, modifier, QPoint(*points[0]))
    for point in points[1:]:
        qtbot.mouseMove(canvas, QPoint(*point))
    qtbot.mouseRelease(canvas, button, modifier, QPoint(*points[-1]))


def image_path(canvas: MaskCanvas, widget_points) -> list[tuple[float, float]]:
    mapped = [canvas.map_to_image(QPointF(*point)) for point in widget_points]
    return [(p.x(), p.y()) for p in mapped]


# -- painting --------------------------------------------------------------------------------


def test_stroke_masks_exactly_the_pixels_within_the_brush_radius_of_the_path(canvas):
    canvas.set_brush_size(9)
    path = [(20.3, 30.7), (24.1, 33.2), (160.4, 120.9), (161.2, 40.35)]  # a jump of 170 px
    with_signal = []
    canvas.maskChanged.connect(lambda: with_signal.append(True))
    canvas.paint_stroke([QPointF(x, y) for x, y in path])
    expected = as_mask(within_brush((HEIGHT, WIDTH), path, 9))
    np.testing.assert_array_equal(canvas.mask(), expected)
    assert canvas.has_mask() and with_signal == [True]
    assert canvas.can_undo()


def test_one_click_stamps_a_round_dot_and_a_1px_brush_the_pixel_under_it(canvas):
    canvas.set_brush_size(7)
    canvas.paint_stroke([QPointF(50.2, 60.9)])
    np.testing.assert_array_equal(
        canvas.mask(), as_mask(within_brush((HEIGHT, WIDTH), [(50.2, 60.9)], 7))
    )
    canvas.clear_mask()
    canvas.set_brush_size(1)
    canvas.paint_stroke([QPointF(70.95, 80.02)])  # near a corner: no pixel centre within 0.5
    assert list(zip(*np.nonzero(canvas.mask()), strict=True)) == [(80, 70)]


def test_a_fast_mouse_drag_paints_a_gapless_line_through_the_event_positions(canvas, qtbot):
    canvas.set_brush_size(5)
    widget_points = [(41, 61), (45, 64), (301, 233), (303, 91)]  # jumps between two events
    drag(qtbot, canvas, widget_points)
    path = image_path(canvas, widget_points)
    assert path[0] == pytest.approx((20.5, 30.5))
    np.testing.assert_array_equal(canvas.mask(), as_mask(within_brush((HEIGHT, WIDTH), path, 5)))
    assert canvas.can_undo()
    canvas.undo()
    assert not canvas.has_mask()  # the whole drag was one step


def test_shift_click_draws_a_straight_line_from_where_the_last_stroke_ended(canvas, qtbot):
    canvas.set_brush_size(5)
    drag(qtbot, canvas, [(41, 41), (81, 61)])
    qtbot.mouseClick(
        canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier, QPoint(301, 221)
    )
    path = image_path(canvas, [(41, 41), (81, 61), (301, 221)])
    np.testing.assert_array_equal(canvas.mask(), as_mask(within_brush((HEIGHT, WIDTH), path, 5)))
    canvas.undo()  # the line is a step of its own
    np.testing.assert_array_equal(
        canvas.mask(), as_mask(within_brush((HEIGHT, WIDTH), path[:2], 5))
    )


def test_right_drag_alt_drag_and_eraser_mode_erase(canvas, qtbot):
    canvas.set_mask(np.full((HEIGHT, WIDTH), 255, np.uint8))
    canvas.set_brush_size(7)
    right = [(41, 41), (121, 41)]
    alt = [(41, 141), (121, 141)]
    eraser = [(41, 241), (121, 241)]
    drag(qtbot, canvas, right, Qt.MouseButton.RightButton)
    drag(qtbot, canvas, alt, modifier=Qt.KeyboardModifier.AltModifier)
    canvas.set_eraser(True)
    drag(qtbot, canvas, eraser)
    erased = np.zeros((HEIGHT, WIDTH), bool)
    for points in (right, alt, eraser):
        erased |= within_brush((HEIGHT, WIDTH), image_path(canvas, points), 7)
    np.testing.assert_array_equal(canvas.mask(), as_mask(~erased))
    canvas.paint_stroke([QPointF(100.5, 10.5)])  # programmatic strokes paint unless told
    assert canvas.mask()[10, 100] == 255
    canvas.paint_stroke([QPointF(100.5, 10.5)], erase=True)
    assert canvas.mask()[10, 100] == 0


def test_the_overlay_shows_the_painted_mask_in_the_overlay_colour(canvas):
    canvas.set_brush_size(20)
    canvas.paint_stroke([QPointF(50.5, 50.5)])
    canvas.grab()
    canvas.overlay_colour = QColor(0, 0, 255, 255)
    canvas.paint_stroke([QPointF(150.5, 100.5)])  # painted after the colour changed
    shown = canvas.grab().toImage()
    assert shown.pixelColor(101, 101) == QColor(0, 0, 255)  # image (50.5, 50.5) at zoom 2
    assert shown.pixelColor(301, 201) == QColor(0, 0, 255)
    assert shown.pixelColor(300, 100) != QColor(0, 0, 255)


# -- mask operations and history -------------------------------------------------------------


def test_undo_and_redo_restore_every_step_exactly(canvas):
    rng = np.random.default_rng(3)
    states = [canvas.mask()]

    def record():
        states.append(canvas.mask())

    canvas.set_brush_size(12)
    canvas.paint_stroke([QPointF(30.3, 40.6), QPointF(90.7, 70.2)])
    record()
    canvas.paint_stroke([QPointF(60.3, 20.6), QPointF(60.7, 140.2)], erase=True)
    record()
    canvas.invert_mask()
    record()
    canvas.set_mask(rng.random((HEIGHT, WIDTH)) > 0.5)
    record()
    canvas.clear_mask()
    record()
    for state in reversed(states[:-1]):
        canvas.undo()
        np.testing.assert_array_equal(canvas.mask(), state)
    assert not canvas.can_undo()
    for state in states[1:]:
        canvas.redo()
        np.testing.assert_array_equal(canvas.mask(), state)
    assert not canvas.can_redo()
    canvas.undo()
    canvas.paint_stroke([QPointF(5.5, 5.5)])  # a new edit forgets what was undone
    assert not canvas.can_redo()


def test_history_keeps_the_last_50_steps(canvas):
    canvas.set_brush_size(1)
    for i in range(60):
        canvas.paint_stroke([QPointF(2.5 + 3 * i, 2.5)])
    for _ in range(50):
        canvas.undo()
    assert not canvas.can_undo()
    painted = np.flatnonzero(canvas.mask()[2])  # the first ten dots are beyond undo
    assert painted.tolist() == [2 + 3 * i for i in range(10)]


def test_invert_and_clear(canvas):
    canvas.set_brush_size(10)
    canvas.paint_stroke([QPointF(40.5, 40.5)])
    painted = canvas.mask()
    canvas.invert_mask()
    np.testing.assert_array_equal(canvas.mask(), 255 - painted)
    canvas.clear_mask()
    assert not canvas.has_mask() and canvas.mask().shape == (HEIGHT, WIDTH)


def test_set_mask_binarises_and_refuses_another_shape(canvas):
    values = np.zeros((HEIGHT, WIDTH), np.uint8)
    values[0, :4] = [0, 127, 128, 200]
    canvas.set_mask(values)
    assert canvas.mask()[0, :4].tolist() == [0, 0, 255, 255]
    with pytest.raises(ValueError, match="does not match"):
        canvas.set_mask(np.zeros((WIDTH, HEIGHT), np.uint8))


def test_mask_from_alpha_masks_the_transparent_pixels(qtbot, canvas):
    alpha = np.full((HEIGHT, WIDTH), 255, np.uint8)
    alpha[10:20, 30:50] = 0
    alpha[100, 7] = 254  # barely transparent is still transparent
    canvas.set_image(photo(alpha=alpha))
    assert canvas.mask_from_alpha()
    np.testing.assert_array_equal(canvas.mask(), as_mask(alpha < 255))
    canvas.undo()
    assert not canvas.has_mask()
    canvas.set_image(photo())
    canvas.paint_stroke([QPointF(5.5, 5.5)])
    before = canvas.mask()
    assert not canvas.mask_from_alpha()
    np.testing.assert_array_equal(canvas.mask(), before)


def test_saved_mask_is_a_greyscale_png_that_loads_back_identically(canvas, tmp_path):
    canvas.set_brush_size(15)
    canvas.paint_stroke([QPointF(20.3, 30.7), QPointF(150.2, 100.9)])
    painted = canvas.mask()
    target = tmp_path / "mask.png"
    canvas.save_mask(target)
    with Image.open(target) as saved:
        assert saved.format == "PNG" and saved.mode == "L"
        np.testing.assert_array_equal(np.asarray(saved), painted)
    assert [p.name for p in tmp_path.iterdir()] == ["mask.png"]  # no temporary file left
    canvas.clear_mask()
    canvas.load_mask(target)
    np.testing.assert_array_equal(canvas.mask(), painted)
    canvas.undo()
    assert not canvas.has_mask()


def test_loaded_masks_use_alpha_when_transparent_else_luminance(canvas, tmp_path):
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)
    colour = np.stack([grey, grey, grey], axis=-1)
    Image.fromarray(colour).save(tmp_path / "luminance.jpg.png")
    canvas.load_mask(tmp_path / "luminance.jpg.png")
    np.testing.assert_array_equal(canvas.mask(), as_mask(grey > 127))
    rgba = np.concatenate([np.zeros_like(colour), grey[..., None]], axis=-1)  # black, painted
    Image.fromarray(rgba).save(tmp_path / "layer.png")
    canvas.load_mask(tmp_path / "layer.png")
    np.testing.assert_array_equal(canvas.mask(), as_mask(grey > 127))


def test_a_mask_of_another_size_is_refused_naming_both_sizes(canvas, tmp_path):
    Image.new("L", (64, 48), 255).save(tmp_path / "small.png")
    canvas.paint_stroke([QPointF(5.5, 5.5)])
    before = canvas.mask()
    with pytest.raises(UserError) as refused:
        canvas.load_mask(tmp_path / "small.png")
    assert "64×48" in str(refused.value) and f"{WIDTH}×{HEIGHT}" in str(refused.value)
    assert "small.png" in str(refused.value)
    np.testing.assert_array_equal(canvas.mask(), before)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match=r"broken\.png"):
        canvas.load_mask(tmp_path / "broken.png")


# -- view ------------------------------------------------------------------------------------


def wheel(canvas: MaskCanvas, position: QPointF, notches: int) -> None:
    event = QWheelEvent(
        position,
        canvas.mapToGlobal(position),
        QPoint(0, 0),
        QPoint(0, 120 * notches),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(canvas, event)


def test_wheel_zoom_keeps_the_image_point_under_the_cursor(canvas):
    cursor = QPointF(123, 87)
    under = canvas.map_to_image(cursor)
    wheel(canvas, cursor, 2)
    assert canvas.zoom() == pytest.approx(2.0 * 1.25**2)
    assert canvas.map_to_image(cursor).x() == pytest.approx(under.x())
    assert canvas.map_to_image(cursor).y() == pytest.approx(under.y())
    wheel(canvas, QPointF(300, 20), -3)
    assert canvas.zoom() == pytest.approx(2.0 * 1.25**-1)


def test_mapping_and_painting_follow_zoom_and_pan(canvas, qtbot):
    canvas.set_zoom(4.0, QPointF(0, 0))
    assert canvas.map_to_image(QPointF(40, 20)) == QPointF(10, 5)
    drag(qtbot, canvas, [(100, 100), (80, 90), (60, 80)], Qt.MouseButton.MiddleButton)
    assert canvas.map_to_image(QPointF(40, 20)) == QPointF(20, 10)
    assert canvas.map_from_image(QPointF(20, 10)) == QPointF(40, 20)
    assert not canvas.has_mask()  # panning paints nothing
    qtbot.keyPress(canvas, Qt.Key.Key_Space)
    drag(qtbot, canvas, [(100, 100), (140, 120)])
    qtbot.keyRelease(canvas, Qt.Key.Key_Space)
    assert canvas.map_to_image(QPointF(40, 20)) == QPointF(10, 5)
    assert not canvas.has_mask()
    canvas.set_brush_size(1)
    drag(qtbot, canvas, [(42, 22)])  # image (10.5, 5.5)
    assert list(zip(*np.nonzero(canvas.mask()), strict=True)) == [(5, 10)]


def send_mouse(canvas: MaskCanvas, kind: QEvent.Type, position: QPointF) -> None:
    left = Qt.MouseButton.LeftButton
    held = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else left
    event = QMouseEvent(
        kind, position, canvas.mapToGlobal(position), left, held, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(canvas, event)


@pytest.mark.parametrize("second_press", [False, True], ids=["qt5-order", "qt6-order"])
def test_double_click_toggles_fit_and_100_percent_without_leaving_a_dot(canvas, second_press):
    position = QPointF(100, 100)
    press, release = QEvent.Type.MouseButtonPress, QEvent.Type.MouseButtonRelease
    double = QEvent.Type.MouseButtonDblClick
    clicks = [press, release, *([press] if second_press else []), double, release]
    for kind in clicks:
        send_mouse(canvas, kind, position)
    assert canvas.zoom() == pytest.approx(1.0)
    assert canvas.map_to_image(position) == QPointF(50, 50)  # zoomed around the cursor
    assert not canvas.has_mask() and not canvas.can_undo()
    canvas.set_brush_size(4)
    canvas.paint_stroke([QPointF(20.5, 20.5)])
    assert canvas.map_to_image(QPointF(150, 150)) == QPointF(100, 100)
    for kind in clicks:
        send_mouse(canvas, kind, QPointF(150, 150))
    assert canvas.zoom() == pytest.approx(2.0)
    assert canvas.mask()[20, 20] == 255 and canvas.mask()[100, 100] == 0  # only clicks undone
    canvas.undo()
    assert not canvas.has_mask() and not canvas.can_undo()


class PaintedRegions(QObject):
    """Records what area each paint event of its parent widget redraws."""

    def __init__(self, widget: QWidget) -> None:
        super().__init__(widget)
        self.rects: list[QRect] = []
        widget.installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:
        if event.type() == QEvent.Type.Paint:
            self.rects.append(event.rect())
        return False


def test_a_stroke_on_a_12_megapixel_photo_touches_only_its_rectangle(canvas, qtbot):
    big = QImage(4000, 3000, QImage.Format.Format_RGB32)
    big.fill(QColor(90, 120, 150))
    canvas.set_image(big)
    canvas.set_zoom(1.0, QPointF(0, 0))  # the photo's top-left corner at the widget's
    assert canvas.map_to_image(QPointF(0, 0)) == QPointF(0, 0)
    painted = PaintedRegions(canvas)
    QApplication.processEvents()
    painted.rects.clear()

    path = [(100.3, 120.7), (260.2, 181.9)]
    canvas.set_brush_size(64)
    canvas.paint_stroke([QPointF(x, y) for x, y in path])
    left, top = 100 - 40, 120 - 40
    window = canvas.mask()[top : top + 180, left : left + 280]
    expected = within_brush(window.shape, path, 64, offset=(left, top))
    np.testing.assert_array_equal(window, as_mask(expected))
    assert int(np.count_nonzero(canvas.mask())) == int(expected.sum())  # nothing outside

    qtbot.waitUntil(lambda: bool(painted.rects))
    stroke_on_screen = QRect(100 - 40, 120 - 40, 260 - 100 + 80, 182 - 120 + 80)
    for rect in painted.rects:
        assert stroke_on_screen.adjusted(-4, -4, 4, 4).contains(rect), rect
    canvas.undo()
    assert not canvas.has_mask()


def hover(canvas: MaskCanvas, position: QPointF) -> None:
    event = QMouseEvent(
        QEvent.Type.MouseMove,
        position,
        canvas.mapToGlobal(position),
        Qt.MouseButton.NoButton,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(canvas, event)


def outline_distances(canvas: MaskCanvas, centre: QPointF) -> np.ndarray:
    """How far from `centre` the pixels lie that the brush outline changes on screen."""
    canvas.leaveEvent(QEvent(QEvent.Type.Leave))
    without = canvas.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    hover(canvas, centre)
    shown = canvas.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    rows, columns = np.nonzero(
        np.asarray(shown.constBits()).reshape(shown.height(), -1)
        != np.asarray(without.constBits()).reshape(without.height(), -1)
    )
    return np.hypot(columns // 3 + 0.5 - centre.x(), rows + 0.5 - centre.y())


def test_brush_outline_shows_the_brush_size_at_the_current_zoom(canvas):
    canvas.set_brush_size(40)  # 20 image pixels of radius: 40 on screen at 2x
    distances = outline_distances(canvas, QPointF(200, 150))
    assert distances.size > 100
    assert distances.min() >= 37 and distances.max() <= 43  # a ring 3 px wide
    wheel(canvas, QPointF(200, 150), 1)  # 2.5x
    distances = outline_distances(canvas, QPointF(200, 150))
    assert distances.min() >= 47 and distances.max() <= 53


def test_undo_steps_hold_only_what_changed_compressed():
    layer = MaskLayer(4000, 3000)
    layer.begin_stroke(32, erase=False)
    layer.stroke_to((1000.3, 1000.7), (1800.2, 1400.9))
    assert layer.end_stroke()
    painted = layer.mask.copy()
    stroke = layer.history_bytes()
    assert stroke < 50_000  # the mask itself is 12 MB
    for _ in range(50):
        layer.invert()  # the 50th pushes the stroke out of the history
    assert layer.history_bytes() < 50 * 20_000
    for _ in range(50):
        layer.undo()
    assert not layer.can_undo()
    np.testing.assert_array_equal(layer.mask, painted)


# -- toolbar and keys ------------------------------------------------------------------------


@pytest.fixture
def painter(qtbot):
    panel = QWidget()
    qtbot.addWidget(panel)
    canvas = MaskCanvas(panel)
    toolbar = MaskToolbar(canvas, panel)
    layout = QVBoxLayout(panel)
    layout.addWidget(toolbar)
    layout.addWidget(canvas)
    panel.resize(900, 500)
    canvas.set_image(photo())
    panel.show()
    panel.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is panel)
    canvas.setFocus()
    qtbot.waitUntil(canvas.hasFocus)
    yield canvas, toolbar
    panel.close()  # the panel owns both: it must live as long as the test


def test_keys_change_brush_toggle_eraser_undo_redo_and_invert(painter, qtbot):
    canvas, toolbar = painter
    canvas.set_brush_size(40)
    qtbot.keyClick(canvas, Qt.Key.Key_BracketRight)
    assert canvas.brush_size == 48
    assert toolbar.size_spin.value() == 48
    qtbot.keyClick(canvas, Qt.Key.Key_BracketLeft)
    qtbot.keyClick(canvas, Qt.Key.Key_BracketLeft)
    assert canvas.brush_size == 33
    canvas.set_brush_size(1)
    qtbot.keyClick(canvas, Qt.Key.Key_BracketLeft)
    assert canvas.brush_size == 1
    qtbot.keyClick(canvas, Qt.Key.Key_BracketRight)
    assert canvas.brush_size == 2

    qtbot.keyClick(canvas, Qt.Key.Key_E)
    assert canvas.eraser and toolbar.eraser_button.isChecked()
    qtbot.keyClick(canvas, Qt.Key.Key_E)
    assert not canvas.eraser and toolbar.brush_button.isChecked()

    canvas.paint_stroke([QPointF(10.5, 10.5)])
    painted = canvas.mask()
    qtbot.keyClick(canvas, Qt.Key.Key_I, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(canvas.mask(), 255 - painted)
    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(canvas.mask(), painted)
    shift_control = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    qtbot.keyClick(canvas, Qt.Key.Key_Z, shift_control)
    np.testing.assert_array_equal(canvas.mask(), 255 - painted)


def test_toolbar_drives_the_canvas(painter, qtbot):
    canvas, toolbar = painter
    toolbar.size_spin.setValue(100)
    assert canvas.brush_size == 100
    toolbar.size_slider.setValue(toolbar.size_slider.maximum())
    assert canvas.brush_size == 512 and toolbar.size_spin.value() == 512
    toolbar.size_slider.setValue(0)
    assert canvas.brush_size == 1
    assert not toolbar.undo_button.isEnabled() and not toolbar.clear_button.isEnabled()
    assert not toolbar.from_alpha_button.isEnabled()  # an opaque image
    toolbar.invert_button.click()
    assert canvas.mask().min() == 255
    assert toolbar.undo_button.isEnabled() and toolbar.clear_button.isEnabled()
    toolbar.undo_button.click()
    assert not canvas.has_mask() and toolbar.redo_button.isEnabled()
    toolbar.eraser_button.click()
    assert canvas.eraser
    toolbar.brush_button.click()
    assert not canvas.eraser
    for button in (toolbar.undo_button, toolbar.redo_button, toolbar.invert_button):
        assert "Ctrl+" in button.toolTip()
    assert "[" in toolbar.size_slider.toolTip() and "(E)" in toolbar.eraser_button.toolTip()


def test_toolbar_reports_a_mask_it_cannot_load(painter, qtbot, tmp_path, monkeypatch):
    _, toolbar = painter
    Image.new("L", (10, 10)).save(tmp_path / "tiny.png")
    monkeypatch.setattr(
        "studio.ui.mask_canvas.QFileDialog.getOpenFileName",
        lambda *args, **kwargs: (str(tmp_path / "tiny.png"), ""),
    )
    with qtbot.waitSignal(toolbar.failed) as failed:
        toolbar.load_button.click()
    assert "10×10" in failed.args[0]
    saved = tmp_path / "out"
    monkeypatch.setattr(
        "studio.ui.mask_canvas.QFileDialog.getSaveFileName",
        lambda *args, **kwargs: (str(saved), ""),
    )
    toolbar.save_button.click()
    assert Path(f"{saved}.png").is_file()
