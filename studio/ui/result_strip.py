"""A row of thumbnails of the pictures a tab made in this session, newest first: with several
images per run (or several runs), the one shown and sent on is the one picked here."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QListView, QListWidget, QListWidgetItem

THUMBNAIL = 72
MAX_RESULTS = 48  # older results stay in the History panel


class ResultStrip(QListWidget):
    """`add` a finished entry's picture; `chosen(entry_id, path)` when one is picked."""

    chosen = Signal(int, Path)

    def __init__(self) -> None:
        super().__init__()
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(False)
        self.setMovement(QListView.Movement.Static)
        self.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.setFixedHeight(THUMBNAIL + 28)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setToolTip("This session's results, newest first: click one to show and send it")
        self.setVisible(False)
        self.currentItemChanged.connect(self._show)
        self.itemClicked.connect(self._show)  # back to it after another run's previews

    def add(self, entry_id: int, path: Path, label: str) -> None:
        """Put a result first. It becomes the current one unless an older one is picked: a run
        finishing does not take away what the user is looking at (which is shown again)."""
        following = self.currentRow() <= 0
        pixmap = QPixmap(str(path))
        if not pixmap.isNull():
            pixmap = pixmap.scaled(
                THUMBNAIL,
                THUMBNAIL,
                Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
        item = QListWidgetItem(QIcon(pixmap), "")
        item.setData(Qt.ItemDataRole.UserRole, (entry_id, Path(path)))
        item.setToolTip(f"{label} · entry #{entry_id}")
        self.insertItem(0, item)
        while self.count() > MAX_RESULTS:
            self.takeItem(self.count() - 1)
        self.setVisible(self.count() > 1)
        if following:
            self.setCurrentRow(0)
        else:
            self._show(self.currentItem())

    def entry_ids(self) -> list[int]:
        return [self.item(row).data(Qt.ItemDataRole.UserRole)[0] for row in range(self.count())]

    def _show(self, item: QListWidgetItem | None, _previous: object = None) -> None:
        if item is not None:
            entry_id, path = item.data(Qt.ItemDataRole.UserRole)
            self.chosen.emit(entry_id, path)
