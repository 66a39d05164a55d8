"""One history entry at full size, where the reviewer decides on it.

The output is shown over its first input with a draggable before/after split, so what a model
changed is visible pixel for pixel. When several models ran on the same input (its siblings), a
row of synchronised views puts their results side by side: that is how a person picks the best
model for an image. Approve, reject, rating and note are at hand here as in the history panel;
`ReviewBar` is the one set of review controls both use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtGui import QAction, QImage, QKeySequence
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from studio.app.history import Entry, HistoryError, HistoryStore
from studio.ui.convert import load_qimage
from studio.ui.image_view import ImageView

REVIEW_KEYS = {"approved": "A", "rejected": "X", "pending": "U"}
REVIEW_LABELS = {"approved": "Approve", "rejected": "Reject", "pending": "Pending"}


def stars(rating: int) -> str:
    return "★" * rating + "☆" * (5 - rating)


def model_title(entry: Entry) -> str:
    return entry.model_name or f"#{entry.id}"


class ReviewBar(QWidget):
    """Approve / Reject / Pending, a 0–5 rating and a note for one entry.

    The bar only asks; its owner writes to the store and calls `show_entry` with the result. Every
    request names the entry the bar showed when the user acted, so a note typed before the
    selection moved on lands on the right entry.
    """

    reviewRequested = Signal(int, str)  # entry id, "approved" | "rejected" | "pending"
    ratingRequested = Signal(int, int)  # entry id, 0..5
    noteEdited = Signal(int, str)  # entry id, the new note

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._entry: Entry | None = None
        self.review_actions = {state: self._review_action(state) for state in REVIEW_KEYS}
        self.rating_actions = [self._rating_action(rating) for rating in range(6)]
        self.set_shortcut_context(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.rating = QComboBox()
        self.rating.addItems(["No rating", *(stars(n) for n in range(1, 6))])
        self.rating.setToolTip("Rating (keys 0–5)")
        self.rating.activated.connect(self._request_rating)
        self.note = QLineEdit()
        self.note.setPlaceholderText("Note")
        self.note.setClearButtonEnabled(True)
        self.note.editingFinished.connect(self._note_finished)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for action in self.review_actions.values():
            button = QToolButton()
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            layout.addWidget(button)
        layout.addWidget(self.rating)
        layout.addWidget(self.note, 1)
        self.show_entry(None)

    def entry(self) -> Entry | None:
        return self._entry

    def show_entry(self, entry: Entry | None) -> None:
        """Show `entry`'s review without emitting anything; None disables the controls."""
        self._entry = entry
        for state, action in self.review_actions.items():
            action.setEnabled(entry is not None and (state != "approved" or entry.status == "done"))
            action.setChecked(entry is not None and entry.review == state)
        for action in self.rating_actions:
            action.setEnabled(entry is not None)
        with QSignalBlocker(self.rating), QSignalBlocker(self.note):
            self.rating.setCurrentIndex(entry.rating if entry else 0)
            self.note.setText(entry.note if entry else "")
        self.rating.setEnabled(entry is not None)
        self.note.setEnabled(entry is not None)

    def set_shortcut_context(self, context: Qt.ShortcutContext) -> None:
        """Keys act only where the owner adds the actions (widget and children) by default."""
        for action in self.actions_with_shortcuts():
            action.setShortcutContext(context)

    def actions_with_shortcuts(self) -> list[QAction]:
        return [*self.review_actions.values(), *self.rating_actions]

    def _review_action(self, state: str) -> QAction:
        key = REVIEW_KEYS[state]
        action = QAction(REVIEW_LABELS[state], self)
        action.setCheckable(True)
        action.setShortcut(QKeySequence(key))
        action.setToolTip(f"{REVIEW_LABELS[state]} ({key})")
        action.triggered.connect(lambda: self._request_review(state))
        return action

    def _rating_action(self, rating: int) -> QAction:
        action = QAction(f"Rate {rating}", self)
        action.setShortcut(QKeySequence(str(rating)))
        action.triggered.connect(lambda: self._request_rating(rating))
        return action

    def _request_review(self, state: str) -> None:
        if self._entry is None:
            return
        self.review_actions[state].setChecked(self._entry.review == state)  # until the owner says
        self.reviewRequested.emit(self._entry.id, state)

    def _request_rating(self, rating: int) -> None:
        if self._entry is not None:
            self.ratingRequested.emit(self._entry.id, rating)

    def _note_finished(self) -> None:
        if self._entry is not None and self.note.text() != self._entry.note:
            self.noteEdited.emit(self._entry.id, self.note.text())


class SyncedZoom:
    """Keeps several image views at the same displayed size while any one of them zooms.

    Views of different resolutions (a 2x and a 4x upscale) get zooms in inverse proportion to
    their widths, so the same region of the scene stays the same size on screen.
    """

    def __init__(self) -> None:
        self.enabled = True
        self._views: list[ImageView] = []
        self._busy = False

    def set_enabled(self, on: bool) -> None:
        self.enabled = on

    def add(self, view: ImageView) -> None:
        self._views.append(view)
        view.zoomChanged.connect(lambda zoom, source=view: self._follow(source, zoom))

    def _follow(self, source: ImageView, zoom: float) -> None:
        if self._busy or not self.enabled or source.image() is None:
            return
        self._busy = True
        try:
            for view in self._views:
                if view is not source and view.image() is not None:
                    view.set_zoom(zoom * source.image().width() / max(view.image().width(), 1))
        finally:
            self._busy = False


class EntryViewer(QDialog):
    """An entry at full size over its input, with its siblings side by side when there are any.

    Non-modal: the history panel opens one per Open and keeps working underneath. Review changes
    made here are written to the store at once and announced with `reviewChanged(entry_id)`.
    """

    reviewChanged = Signal(int)

    def __init__(self, store: HistoryStore, entry_id: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self._entry = store.get(entry_id)
        self.setWindowTitle(f"Studio — entry #{entry_id}")
        self.resize(1100, 760)
        self.compare_view = ImageView(placeholder="No image")
        self.side_by_side = QCheckBox("Side by side")
        self.sync_zoom = QCheckBox("Synchronise zoom")
        self.sync_zoom.setChecked(True)
        self.caption = QLabel()
        self.review_bar = ReviewBar()
        self.review_bar.set_shortcut_context(Qt.ShortcutContext.WindowShortcut)
        self.sibling_views: list[ImageView] = []
        self.sibling_buttons: dict[int, QToolButton] = {}  # entry id -> its column's title
        self._sibling_group = QButtonGroup(self)
        self._synced = SyncedZoom()
        self._pages = QStackedWidget()
        self._pages.addWidget(self.compare_view)
        self._build_layout()
        self._connect()
        self._show_compare()
        self._build_siblings()
        self.review_bar.show_entry(self._entry)

    # -- public ---------------------------------------------------------------------------
    def entry(self) -> Entry:
        """The entry the review controls act on (the clicked sibling in side-by-side mode)."""
        return self._entry

    def show_side_by_side(self, on: bool) -> None:
        self.side_by_side.setChecked(on)

    # -- building -------------------------------------------------------------------------
    def _build_layout(self) -> None:
        top = QHBoxLayout()
        top.addWidget(self.caption, 1)
        top.addWidget(self.side_by_side)
        top.addWidget(self.sync_zoom)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self._pages, 1)
        layout.addWidget(self.review_bar)
        # A / X / U work anywhere in the window; digits stay with ImageView (0 = fit, 1 = 100 %).
        self.addActions(list(self.review_bar.review_actions.values()))

    def _connect(self) -> None:
        self.side_by_side.toggled.connect(self._pages.setCurrentIndex)
        self.side_by_side.toggled.connect(self._update_caption)
        self.sync_zoom.toggled.connect(self._synced.set_enabled)
        self.review_bar.reviewRequested.connect(self._set_review)
        self.review_bar.ratingRequested.connect(self._set_rating)
        self.review_bar.noteEdited.connect(self._set_note)

    def _show_compare(self) -> None:
        entry = self._entry
        self._update_caption()
        if not entry.outputs:
            self.compare_view.set_placeholder(entry.error or f"No output ({entry.status})")
            return
        self.compare_view.set_image(self._load(entry.outputs[0].path, self.compare_view))
        if entry.inputs:
            self.compare_view.set_before(self._load(entry.inputs[0].path, self.compare_view))

    def _update_caption(self) -> None:
        if self.side_by_side.isChecked():
            self.caption.setText("The same input through each model · click a title to review it")
        else:
            self.caption.setText(_caption(self._entry))

    def _build_siblings(self) -> None:
        siblings = [s for s in self.store.siblings(self._entry.id) if s.status == "done"]
        has_siblings = len(siblings) > 1
        self.side_by_side.setVisible(has_siblings)
        self.sync_zoom.setVisible(has_siblings)
        if not has_siblings:
            return
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        for sibling in siblings:
            layout.addLayout(self._sibling_column(sibling), 1)
        self._pages.addWidget(row)

    def _sibling_column(self, sibling: Entry) -> QVBoxLayout:
        title = QToolButton()
        title.setCheckable(True)
        title.setChecked(sibling.id == self._entry.id)
        title.setText(_sibling_title(sibling))
        title.setToolTip("Review this result")
        title.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self._sibling_group.addButton(title)
        self.sibling_buttons[sibling.id] = title
        title.clicked.connect(lambda: self._review_sibling(sibling.id))
        view = ImageView(placeholder="No image")
        if sibling.outputs:
            view.set_image(self._load(sibling.outputs[0].path, view))
        view.setProperty("entry_id", sibling.id)
        self._synced.add(view)
        self.sibling_views.append(view)
        column = QVBoxLayout()
        column.addWidget(title)
        column.addWidget(view, 1)
        return column

    @staticmethod
    def _load(path: Path, view: ImageView) -> QImage | None:
        try:
            return load_qimage(path)
        except (OSError, ValueError) as exc:
            view.set_placeholder(f"Cannot show {path.name}: {exc}")
            return None

    # -- review ---------------------------------------------------------------------------
    def _review_sibling(self, entry_id: int) -> None:
        self._entry = self.store.get(entry_id)
        self.review_bar.show_entry(self._entry)

    def _set_review(self, entry_id: int, state: str) -> None:
        self._write(entry_id, lambda: self.store.set_review(entry_id, state))

    def _set_rating(self, entry_id: int, rating: int) -> None:
        self._write(entry_id, lambda: self.store.set_rating(entry_id, rating))

    def _set_note(self, entry_id: int, note: str) -> None:
        self._write(entry_id, lambda: self.store.set_note(entry_id, note))

    def _write(self, entry_id: int, write: Callable[[], None]) -> None:
        try:
            write()
            entry = self.store.get(entry_id)
        except HistoryError as exc:
            QMessageBox.warning(self, "Review not saved", str(exc))
            return
        if entry_id == self._entry.id:
            self._entry = entry
            self.review_bar.show_entry(entry)
        button = self.sibling_buttons.get(entry_id)
        if button is not None:
            button.setText(_sibling_title(entry))
        self.reviewChanged.emit(entry_id)


def _caption(entry: Entry) -> str:
    size = ""
    if entry.outputs and entry.outputs[0].width:
        size = f" · {entry.outputs[0].width}×{entry.outputs[0].height}"
    before = " · drag the divider to compare with the input" if entry.inputs else ""
    return f"#{entry.id} {entry.tool} · {model_title(entry)}{size}{before}"


def _sibling_title(entry: Entry) -> str:
    review = {"approved": "  ✓", "rejected": "  ✕"}.get(entry.review, "")
    rating = f"  {stars(entry.rating)}" if entry.rating else ""
    return f"{model_title(entry)}{review}{rating}"
