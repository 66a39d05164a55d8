"""One place where errors and notices reach the user: a bar above the tabs, never a blocking box.

Errors stay until dismissed (they say what failed and what to do); notices fade after a while.
Every message is also logged; the traces of unexpected errors are logged where they are caught.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QWidget

log = logging.getLogger(__name__)

STYLES = {
    "error": "background:#5c1e1e; color:#ffd9d9; border-radius:4px; padding:6px;",
    "info": "background:#1e3a5c; color:#dbe9ff; border-radius:4px; padding:6px;",
}


class NotificationBar(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 0)
        layout.addWidget(self.label, 1)
        layout.addWidget(close)
        self._timer = QTimer(self, singleShot=True, interval=6000, timeout=self.hide)
        self.hide()

    def error(self, message: str) -> None:
        log.error("shown to user: %s", message)
        self._show(message, "error")
        self._timer.stop()

    def info(self, message: str) -> None:
        log.info("shown to user: %s", message)
        if self.isVisible() and self.property("kind") == "error":
            return  # an error stays until the user has read and dismissed it
        self._show(message, "info")
        self._timer.start()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""

    def _show(self, message: str, kind: str) -> None:
        self.label.setText(message)
        self.label.setStyleSheet(STYLES[kind])
        self.setProperty("kind", kind)
        self.show()
