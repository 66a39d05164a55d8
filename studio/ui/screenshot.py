"""The README's picture of the main window: a real photo upscaled and reviewed in a real window.

    xvfb-run -a python -m studio.ui.screenshot docs/main-window.png [--image PHOTO] [--model FILE]

Runs on a throw-away STUDIO_HOME so it never touches the user's history.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

SAMPLE_PHOTOS = (
    Path("/usr/share/backgrounds/mate/nature/LadyBird.jpg"),
    Path("/usr/share/backgrounds/mate/nature/FreshFlower.jpg"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--crop", type=int, default=320, help="side of the centre crop to upscale")
    args = parser.parse_args(argv)
    os.environ["STUDIO_HOME"] = tempfile.mkdtemp(prefix="studio-screenshot-")

    from PIL import Image
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from studio.app.context import AppContext
    from studio.ui.main_window import MainWindow

    source = args.image or next((p for p in SAMPLE_PHOTOS if p.is_file()), None)
    if source is None:
        print("no sample photo: pass --image or apt-get install mate-backgrounds", file=sys.stderr)
        return 2
    with Image.open(source) as photo:
        side = min(args.crop, *photo.size)
        left, top = (photo.width - side) // 2, (photo.height - side) // 2
        crop = Path(os.environ["STUDIO_HOME"]) / f"{source.stem}.png"
        photo.convert("RGB").crop((left, top, left + side, top + side)).save(crop)

    app = QApplication.instance() or QApplication(sys.argv)
    ctx = AppContext.open()
    window = MainWindow(ctx)
    window.resize(1500, 900)
    window.show()
    tab = window.tool_tabs["upscale"]
    tab.open_image(crop)
    tab.set_model(args.model)
    _wait(app, lambda: tab.model_info is not None or bool(window.notifications.text()))
    loop = QEventLoop()
    window.jobs.finished.connect(lambda job: loop.quit())
    tab.run()
    loop.exec()
    window.history_panel.approve_selected()
    tab.view.set_split(0.45)
    _wait(app, lambda: "detecting" not in window.device_label.text())
    QTimer.singleShot(300, loop.quit)
    loop.exec()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(args.output))
    print(f"wrote {args.output}")
    window.close()
    ctx.close()
    return 0


def _wait(app, condition, timeout_s: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)


if __name__ == "__main__":
    sys.exit(main())
