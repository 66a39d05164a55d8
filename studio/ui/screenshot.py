"""The README's pictures of the main window: real photos upscaled and graded in a real window.

    xvfb-run -a python -m studio.ui.screenshot docs/   [--model FILE] [--diffusion-model PATH]

Writes main-window.png (Upscale tab, built-in model), grade-tab.png (a reference match),
restore-tab.png (a photo aged by the training's damage pipeline, restored by the built-in VAE), and
with a
diffusion model generate-tab.png (a prompt and its image) and inpaint-tab.png (a mask painted on a
photo). `make screenshot` passes the tiny random-weight test pipeline, whose pictures are noise: the
shots show the controls, not what a trained model paints. Runs on a throw-away STUDIO_HOME so it
never touches the user's history.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

PHOTOS = Path("/usr/share/backgrounds/mate/nature")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", type=Path, default=None, help="default: the built-in x4")
    parser.add_argument(
        "--diffusion-model", default="", help="repo id, diffusers folder or checkpoint"
    )
    args = parser.parse_args(argv)
    if not PHOTOS.is_dir():
        print("needs sample photos: apt-get install mate-backgrounds", file=sys.stderr)
        return 2
    home = Path(tempfile.mkdtemp(prefix="studio-screenshot-"))
    os.environ["STUDIO_HOME"] = str(home)

    from PySide6.QtWidgets import QApplication

    from studio.app.context import AppContext
    from studio.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv)
    ctx = AppContext.open()
    window = MainWindow(ctx)
    window.resize(1500, 900)
    window.show()
    args.folder.mkdir(parents=True, exist_ok=True)

    upscale = window.tool_tabs["upscale"]
    small = _crop(PHOTOS / "LadyBird.jpg", home / "ladybird.png", 720, (0.70, 0.50), shrink=4)
    upscale.open_image(small)
    if args.model is not None:
        upscale.set_model(args.model)
    _wait(app, lambda: upscale.model_info is not None or bool(window.notifications.text()))
    _run(app, window, upscale.run)
    window.history_panel.approve_selected()
    upscale.view.set_split(0.5)
    _wait(app, lambda: "detecting" not in window.device_label.text())
    _save(app, window, args.folder / "main-window.png")

    grade = window.tool_tabs["grade"]
    window.tabs.setCurrentWidget(grade)
    grade.open_image(_crop(PHOTOS / "GreenMeadow.jpg", home / "meadow.png", 900, (0.5, 0.5)))
    grade.set_mode("reference")
    grade.set_file("reference", _crop(PHOTOS / "Dune.jpg", home / "dune.png", 900, (0.5, 0.5)))
    _run(app, window, grade.run)
    grade.view.set_split(0.5)
    plots = (grade.source_plot, grade.reference_plot, grade.result_plot)
    _wait(app, lambda: all(plot.samples() is not None for plot in plots), timeout_s=30)
    _save(app, window, args.folder / "grade-tab.png")

    restore = window.tool_tabs["restore"]
    window.tabs.setCurrentWidget(restore)
    restore.open_image(_aged(PHOTOS / "LadyBird.jpg", home / "ladybird-aged.png"))
    _run(app, window, restore.run)
    restore.view.set_split(0.5)
    _save(app, window, args.folder / "restore-tab.png")
    if args.diffusion_model:
        _generate_and_inpaint(app, window, args.diffusion_model, home, args.folder)
    window.close()
    ctx.close()
    return 0


def _generate_and_inpaint(app, window, model: str, home: Path, folder: Path) -> None:
    from PySide6.QtCore import QPointF

    generate = window.tool_tabs["generate"]
    window.tabs.setCurrentWidget(generate)
    controls = generate.controls
    controls.picker.choose(model)
    _wait(app, lambda: controls.family is not None or bool(window.notifications.text()))
    controls.prompt.setPlainText("a ceramic mug on a linen tablecloth, soft morning light")
    controls.negative.setPlainText("blurry, text")
    controls.seed.setValue(1234)
    controls.seed_lock.setChecked(True)
    _run(app, window, generate.run)
    _save(app, window, folder / "generate-tab.png")

    inpaint = window.tool_tabs["inpaint"]
    window.tabs.setCurrentWidget(inpaint)
    inpaint.open_image(_crop(PHOTOS / "Garden.jpg", home / "garden.png", 900, (0.5, 0.5), 2))
    inpaint.controls.prompt.setPlainText("a bumblebee resting on the petal")
    inpaint.canvas.set_brush_size(48)
    inpaint.canvas.paint_stroke([QPointF(180, 300), QPointF(260, 320), QPointF(300, 300)])
    _save(app, window, folder / "inpaint-tab.png")


def _crop(
    source: Path, target: Path, side: int, centre: tuple[float, float], shrink: int = 1
) -> Path:
    """A square crop; `shrink` makes it a small web-sized picture, what upscaling is for."""
    from PIL import Image

    with Image.open(source) as photo:
        side = min(side, *photo.size)
        left = int(min(max(photo.width * centre[0] - side / 2, 0), photo.width - side))
        top = int(min(max(photo.height * centre[1] - side / 2, 0), photo.height - side))
        crop = photo.convert("RGB").crop((left, top, left + side, top + side))
        crop.resize((side // shrink, side // shrink), Image.Resampling.BICUBIC).save(target)
    return target


def _aged(source: Path, target: Path) -> Path:
    """A crop aged the way the restoration VAE's training data is: grain, fading, scratches..."""
    import random

    import numpy as np
    from PIL import Image

    from studio.train.restore_degrade import degrade_old_photo

    crop = _crop(source, target, 900, (0.65, 0.5), shrink=2)
    clean = np.asarray(Image.open(crop).convert("RGB"), dtype=np.float32) / 255
    aged = degrade_old_photo(clean, random.Random(7)).degraded
    Image.fromarray((np.clip(aged, 0, 1) * 255).round().astype(np.uint8)).save(target)
    return target


def _run(app, window, start) -> None:
    done = []
    window.jobs.finished.connect(done.append)
    start()
    _wait(app, lambda: bool(done), timeout_s=600)


def _save(app, window, path: Path) -> None:
    _wait(app, lambda: False, timeout_s=0.5)  # let the views repaint
    window.grab().save(str(path))
    print(f"wrote {path}")


def _wait(app, condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)


if __name__ == "__main__":
    sys.exit(main())
