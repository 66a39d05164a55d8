"""Start the desktop application: the window shows at once, torch and models load on first use."""

from __future__ import annotations

import logging
import sys
import traceback

from PySide6.QtWidgets import QApplication

from studio.app.context import AppContext, setup_logging

log = logging.getLogger(__name__)


def run(argv: list[str] | None = None) -> int:
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName("Studio")
    app.setOrganizationName("Studio")
    ctx = AppContext.open()
    log_file = setup_logging(ctx.dirs.log)
    from studio.ui.main_window import MainWindow

    window = MainWindow(ctx)
    install_excepthook(window, log_file)
    window.show()
    try:
        return app.exec()
    finally:
        ctx.close()


def install_excepthook(window, log_file) -> None:
    """An unexpected error is logged in full and shown in one line; the app keeps running."""

    def hook(exc_type, exc, tb) -> None:
        log.error("unhandled error:\n%s", "".join(traceback.format_exception(exc_type, exc, tb)))
        window.notifications.error(
            f"Unexpected error: {exc_type.__name__}: {exc}. Details are in {log_file}."
        )

    sys.excepthook = hook
