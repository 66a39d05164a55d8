"""The mask canvas's brush on a 12-megapixel photo, against two ways of painting whole frames.

    python bench/mask_brush.py [--width 4000] [--height 3000] [--brush 64] [--events 300]

A drag of `--events` mouse positions crosses the image diagonally (about 17 px between events,
a quick hand). Studio (MaskLayer.stroke_to) rasterises only the box around each segment. The
references repaint the mask at the same events the way simpler painters do:
- "full-frame numpy": the same exact capsule test, evaluated over the whole mask per event;
- "QPainter + full copy": a round-capped line drawn with QPainter on an 8-bit QImage (antialias
  off), then the whole QImage copied to numpy, as a canvas that keeps its mask in Qt must before
  handing it on.
Each variant runs `--rounds` times; the best round is compared (fairest on a shared machine).
Also printed: what one undo step of the stroke holds, against a snapshot of the mask; and, in a
shown 1000x700 MaskCanvas at 100 %, a left-drag (paint, repaint of the dirty box) against the same
drag with the middle button (pan, which repaints the whole view, as every image view does).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from studio.ui.mask_layer import Box, MaskLayer, capsule_pixels


def drag_path(width: int, height: int, events: int) -> list[tuple[float, float]]:
    return [
        (width * (0.1 + 0.8 * i / events) + 0.37, height * (0.15 + 0.7 * i / events) + 0.21)
        for i in range(events + 1)
    ]


def studio_stroke(layer: MaskLayer, path, radius: float) -> tuple[float, float, float]:
    """Seconds for the drag's segments, for ending the stroke (its undo step), and for undo."""
    layer.begin_stroke(radius, erase=False)
    start = time.perf_counter()
    for a, b in itertools.pairwise(path):
        layer.stroke_to(a, b)
    painted = time.perf_counter()
    layer.end_stroke()
    ended = time.perf_counter()
    layer.undo()
    undone = time.perf_counter()
    layer.redo()
    return painted - start, ended - painted, undone - ended


def full_frame_numpy(mask: np.ndarray, path, radius: float) -> float:
    whole = Box(0, 0, mask.shape[1], mask.shape[0])
    start = time.perf_counter()
    for a, b in itertools.pairwise(path):
        mask[capsule_pixels(whole, a, b, radius)] = 255
    return time.perf_counter() - start


def qpainter_full_copy(width: int, height: int, path, brush: int) -> Callable[[], float]:
    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtGui import QColor, QImage, QPainter, QPen

    image = QImage(width, height, QImage.Format.Format_Grayscale8)

    def run() -> float:
        image.fill(0)
        pen = QPen(QColor(255, 255, 255), brush)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        start = time.perf_counter()
        for a, b in itertools.pairwise(path):
            painter = QPainter(image)
            painter.setPen(pen)
            painter.drawLine(QPointF(*a), QPointF(*b))
            painter.end()
            rows = np.frombuffer(image.constBits(), np.uint8).reshape(height, -1)
            rows[:, :width].copy()
        return time.perf_counter() - start

    return run


def canvas_drags(width: int, height: int, brush: int, events: int) -> tuple[float, float]:
    """Seconds per mouse event, events and repaints included: painting, then panning."""
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QColor, QImage, QMouseEvent
    from PySide6.QtWidgets import QApplication

    from studio.ui.mask_canvas import MaskCanvas

    app = QApplication.instance()
    canvas = MaskCanvas()
    canvas.resize(1000, 700)
    photo = QImage(width, height, QImage.Format.Format_RGB32)
    photo.fill(QColor(90, 120, 150))
    canvas.set_image(photo)
    canvas.set_brush_size(brush)
    canvas.show()
    canvas.set_zoom(1.0)
    app.processEvents()

    def drag(button: Qt.MouseButton) -> float:
        points = [QPointF(100 + 800 * i / events, 100 + 500 * i / events) for i in range(events)]
        kinds = [QEvent.Type.MouseButtonPress] + [QEvent.Type.MouseMove] * (events - 2)
        kinds.append(QEvent.Type.MouseButtonRelease)
        start = time.perf_counter()
        for kind, point in zip(kinds, points, strict=True):
            held = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else button
            pressed = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseMove else button
            event = QMouseEvent(kind, point, point, pressed, held, Qt.KeyboardModifier.NoModifier)
            QApplication.sendEvent(canvas, event)
            app.processEvents()  # paint what the event invalidated, now
        return (time.perf_counter() - start) / events

    painting = drag(Qt.MouseButton.LeftButton)
    panning = drag(Qt.MouseButton.MiddleButton)
    canvas.close()
    canvas.deleteLater()
    return painting, panning


def main() -> None:
    from PySide6.QtWidgets import QApplication

    app = QApplication([])  # noqa: F841 (it must exist while the Qt variants run)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--brush", type=int, default=64)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reference-events", type=int, default=8)
    args = parser.parse_args()
    radius = args.brush / 2
    path = drag_path(args.width, args.height, args.events)
    # The full-frame numpy reference is slow: time it on fewer events, report per event.
    short = path[: args.reference_events + 1]
    qpainter = qpainter_full_copy(args.width, args.height, path, args.brush)

    studio, numpy_full, qt_full = math.inf, math.inf, math.inf
    end, undo = math.inf, math.inf
    layer = MaskLayer(args.width, args.height)
    for _ in range(args.rounds):
        layer = MaskLayer(args.width, args.height)
        painting, ending, undoing = studio_stroke(layer, path, radius)
        studio, end, undo = (
            min(studio, painting / args.events),
            min(end, ending),
            min(undo, undoing),
        )
        mask = np.zeros((args.height, args.width), np.uint8)
        numpy_full = min(numpy_full, full_frame_numpy(mask, short, radius) / len(short[1:]))
        qt_full = min(qt_full, qpainter() / args.events)

    megapixels = args.width * args.height / 1e6
    print(f"{args.width}x{args.height} ({megapixels:.1f} MP), brush {args.brush} px, ")
    print(f"{args.events} mouse events, best of {args.rounds} rounds; time per mouse event:")
    print(f"  Studio, dirty box only        {studio * 1e3:8.3f} ms")
    print(
        f"  full-frame numpy              {numpy_full * 1e3:8.3f} ms  ({numpy_full / studio:6.1f}x)"
    )
    print(f"  QPainter + full numpy copy    {qt_full * 1e3:8.3f} ms  ({qt_full / studio:6.1f}x)")
    print(f"ending the stroke (its undo step) {end * 1e3:.1f} ms; undoing it {undo * 1e3:.1f} ms")
    snapshot = args.width * args.height
    step = layer.history_bytes()
    print(
        f"one undo step of the stroke: {step / 1e3:.1f} kB compressed, against "
        f"{snapshot / 1e6:.1f} MB for a snapshot ({snapshot / max(step, 1):.0f}x smaller)"
    )
    layer.invert()
    print(f"an invert adds {(layer.history_bytes() - step) / 1e3:.1f} kB")
    painting, panning = canvas_drags(args.width, args.height, args.brush, args.events)
    print(
        f"in a 1000x700 canvas at 100 %, per mouse event with its repaint: painting "
        f"{painting * 1e3:.2f} ms, panning {panning * 1e3:.2f} ms ({panning / painting:.1f}x)"
    )


if __name__ == "__main__":
    main()
