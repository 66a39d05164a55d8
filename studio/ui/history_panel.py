"""The history panel: where a person reviews every result before it leaves the studio.

Nothing Studio makes is delivered unreviewed, so this panel is built for fast keyboard review: a
grid of thumbnails, newest first, with A (approve), X (reject), U (back to pending) and 0–5
(rating) acting on the selection and moving on to the next result. Filters and a search narrow the
grid; pages of 60 keep a history of ten thousand entries as quick as one of ten, because only the
page on screen is ever read from the store and only the thumbnails on screen are decoded.
"""

from __future__ import annotations

import html
import json
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QRect,
    QSize,
    Qt,
    QUrl,
    Signal,
)
from PySide6.QtGui import (
    QAction,
    QColor,
    QDesktopServices,
    QImageReader,
    QKeySequence,
    QPainter,
    QPen,
    QPixmap,
)
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import QSignalDebouncer

from studio.app.history import Entry, EntryNotFound, ExportReport, HistoryError, HistoryStore
from studio.app.runs import TOOLS
from studio.ui.entry_viewer import EntryViewer, ReviewBar, stars

PAGE_SIZE = 60
THUMB_PX = 128
TILE = QSize(THUMB_PX + 20, THUMB_PX + 44)
THUMB_CACHE_SIZE = 6 * PAGE_SIZE
SEARCH_DEBOUNCE_MS = 250
ENTRY_ROLE = Qt.ItemDataRole.UserRole + 1

APPROVED_COLOUR = QColor(46, 160, 67)
REJECTED_COLOUR = QColor(218, 54, 51)
STAR_COLOUR = QColor(240, 180, 40)
STATUS_LABELS = {"running": "Running…", "failed": "Failed", "cancelled": "Cancelled"}
REVIEW_FILTERS = {
    "All reviews": None,
    "Pending": "pending",
    "Approved": "approved",
    "Rejected": "rejected",
}


class ThumbnailCache:
    """Thumbnails decoded on first paint, the most recently shown few pages kept in memory."""

    def __init__(self, capacity: int = THUMB_CACHE_SIZE) -> None:
        self._capacity = capacity
        self._pixmaps: OrderedDict[Path, QPixmap] = OrderedDict()

    def get(self, entry: Entry) -> QPixmap | None:
        path = entry.outputs[0].thumb if entry.outputs else None
        if path is None:
            return None
        if path in self._pixmaps:
            self._pixmaps.move_to_end(path)
        else:
            self._pixmaps[path] = _read_thumbnail(path)
            if len(self._pixmaps) > self._capacity:
                self._pixmaps.popitem(last=False)
        pixmap = self._pixmaps[path]
        return None if pixmap.isNull() else pixmap


def _read_thumbnail(path: Path) -> QPixmap:
    reader = QImageReader(str(path))
    size = reader.size()
    if size.isValid():
        reader.setScaledSize(size.scaled(THUMB_PX, THUMB_PX, Qt.AspectRatioMode.KeepAspectRatio))
    return QPixmap.fromImage(reader.read())  # a null pixmap when the file is missing or damaged


class EntryListModel(QAbstractListModel):
    """One page of entries; the entry itself is under ENTRY_ROLE, its thumbnail the decoration."""

    def __init__(self, thumbnails: ThumbnailCache, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._thumbnails = thumbnails
        self._entries: list[Entry] = []

    def set_entries(self, entries: list[Entry]) -> None:
        self.beginResetModel()
        self._entries = list(entries)
        self.endResetModel()

    def entry_at(self, row: int) -> Entry:
        return self._entries[row]

    def row_of(self, entry_id: int) -> int | None:
        return next((row for row, e in enumerate(self._entries) if e.id == entry_id), None)

    def replace(self, entry: Entry) -> None:
        row = self.row_of(entry.id)
        if row is not None:
            self._entries[row] = entry
            self.dataChanged.emit(self.index(row), self.index(row))

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._entries)

    def data(
        self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if not index.isValid():
            return None
        entry = self._entries[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return f"#{entry.id} {entry.tool}"
        if role == Qt.ItemDataRole.DecorationRole:
            return self._thumbnails.get(entry)
        if role == Qt.ItemDataRole.ToolTipRole:
            return _tooltip(entry)
        if role == ENTRY_ROLE:
            return entry
        return None


class EntryDelegate(QStyledItemDelegate):
    """A tile: thumbnail, a green or red frame and corner mark for the review, failed and
    cancelled runs greyed out with their status, the id and tool, and the stars."""

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        return TILE

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        entry: Entry = index.data(ENTRY_ROLE)
        tile = option.rect.adjusted(2, 2, -2, -2)
        thumb = QRect(
            tile.left() + (tile.width() - THUMB_PX) // 2, tile.top() + 6, THUMB_PX, THUMB_PX
        )
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(tile, option.palette.highlight())
        self._paint_thumbnail(painter, thumb, entry, index.data(Qt.ItemDataRole.DecorationRole))
        self._paint_review(painter, tile, thumb, entry)
        self._paint_caption(painter, option, tile, thumb, entry)
        painter.restore()

    @staticmethod
    def _paint_thumbnail(
        painter: QPainter, thumb: QRect, entry: Entry, pixmap: QPixmap | None
    ) -> None:
        finished = entry.status == "done"
        painter.setOpacity(1.0 if finished else 0.35)
        if pixmap is None:
            painter.fillRect(thumb, QColor(60, 60, 64))
        else:
            target = QRect(0, 0, pixmap.width(), pixmap.height())
            target.moveCenter(thumb.center())
            painter.drawPixmap(target, pixmap)
        painter.setOpacity(1.0)
        if not finished:
            painter.setPen(QColor(235, 235, 235))
            painter.drawText(
                thumb, Qt.AlignmentFlag.AlignCenter, STATUS_LABELS.get(entry.status, "")
            )

    @staticmethod
    def _paint_review(painter: QPainter, tile: QRect, thumb: QRect, entry: Entry) -> None:
        colour = {"approved": APPROVED_COLOUR, "rejected": REJECTED_COLOUR}.get(entry.review)
        if colour is None:
            return
        painter.setPen(QPen(colour, 3))
        painter.drawRect(tile.adjusted(1, 1, -2, -2))
        mark = QRect(thumb.right() - 21, thumb.top() + 3, 18, 18)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(colour)
        painter.drawEllipse(mark)
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(
            mark, Qt.AlignmentFlag.AlignCenter, "✓" if entry.review == "approved" else "✕"
        )

    @staticmethod
    def _paint_caption(
        painter: QPainter, option: QStyleOptionViewItem, tile: QRect, thumb: QRect, entry: Entry
    ) -> None:
        line = QRect(tile.left() + 6, thumb.bottom() + 4, tile.width() - 12, 16)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        painter.setPen(
            option.palette.highlightedText().color() if selected else option.palette.text().color()
        )
        caption = option.fontMetrics.elidedText(
            f"#{entry.id} {entry.tool}", Qt.TextElideMode.ElideRight, line.width()
        )
        painter.drawText(line, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, caption)
        if entry.rating:
            painter.setPen(STAR_COLOUR)
            painter.drawText(
                line.translated(0, 16), Qt.AlignmentFlag.AlignLeft, stars(entry.rating)
            )


class HistoryPanel(QWidget):
    """Browse, review and act on history entries; the main window docks it and listens.

    Dialogs go through replaceable attributes (`confirm`, `choose_folder`, `inform`, `open_url`)
    so tests and scripts can answer them.
    """

    rerunRequested = Signal(int)  # entry id
    sendRequested = Signal(int, str)  # entry id, tab name
    entryActivated = Signal(int)  # entry id, opened full size
    reviewChanged = Signal(int)  # entry id whose review, rating or note changed

    def __init__(self, store: HistoryStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.page_size = PAGE_SIZE
        self.advance_after_review = True
        self.confirm: Callable[[str], bool] = self._ask_confirmation
        self.choose_folder: Callable[[], str] = self._ask_export_folder
        self.inform: Callable[[str, str], None] = self._show_message
        self.open_url: Callable[[QUrl], object] = QDesktopServices.openUrl
        self._offset = 0
        self._total = 0
        self._send_targets: list[str] = []
        self._build_filters()
        self._build_list()
        self._build_pager()
        self._build_actions()
        self._build_details()
        self._build_layout()
        self.refresh()

    # -- public ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the current page, keeping the selection where it still exists."""
        row = max(self.list_view.currentIndex().row(), 0)
        self._load_page(keep_id=self.current_id(), fallback_row=row)

    def select_entry(self, entry_id: int) -> bool:
        """Show and select `entry_id`, turning the page (or clearing filters) to reach it."""
        if self._select_id(entry_id):
            return True
        offset = self._find_offset(entry_id)
        if offset is None:
            self._clear_filters()
            offset = self._find_offset(entry_id)
        if offset is None:
            return False
        self._offset = offset
        self._load_page(keep_id=entry_id, fallback_row=-1)
        return self.current_id() == entry_id

    def show_new_entry(self, entry_id: int) -> bool:
        """Select a just-finished entry, unless the user is reviewing in the list: a selection
        that moved under their keys would approve an entry they never looked at. Never turns
        pages or clears filters."""
        if self.list_view.hasFocus():
            return False
        return self._select_id(entry_id)

    def current_id(self) -> int | None:
        entry = self.current_entry()
        return entry.id if entry else None

    def current_entry(self) -> Entry | None:
        index = self.list_view.currentIndex()
        return index.data(ENTRY_ROLE) if index.isValid() else None

    def set_send_targets(self, tabs: list[str]) -> None:
        """The tabs an entry's output can be sent to, shown in the Send to… menu."""
        self._send_targets = list(tabs)
        self.send_menu.clear()
        for tab in self._send_targets:
            self.send_menu.addAction(tab, lambda tab=tab: self.send_selected(tab))
        self._update_actions()

    def approve_selected(self) -> None:
        self._review_selected("approved")

    def reject_selected(self) -> None:
        self._review_selected("rejected")

    def unreview_selected(self) -> None:
        self._review_selected("pending")

    def rate_selected(self, rating: int) -> None:
        if (entry_id := self.current_id()) is not None:
            self._set_rating(entry_id, rating)

    def rerun_selected(self) -> None:
        if (entry_id := self.current_id()) is not None:
            self.rerunRequested.emit(entry_id)

    def send_selected(self, tab: str) -> None:
        if (entry_id := self.current_id()) is not None:
            self.sendRequested.emit(entry_id, tab)

    def open_selected(self) -> EntryViewer | None:
        """Open the selection full size in a non-modal viewer, and announce it."""
        entry = self.current_entry()
        if entry is None or not entry.outputs:
            return None
        viewer = EntryViewer(self.store, entry.id, self)
        viewer.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        viewer.reviewChanged.connect(self._entry_changed)
        viewer.show()
        self.entryActivated.emit(entry.id)
        return viewer

    def reveal_selected(self) -> None:
        """Open the folder holding the selection's output file in the system file manager."""
        entry = self.current_entry()
        if entry is not None and entry.outputs:
            self.open_url(QUrl.fromLocalFile(str(entry.outputs[0].path.parent)))

    def delete_selected(self) -> None:
        entry = self.current_entry()
        if entry is None or not self.confirm(_delete_question(entry)):
            return
        row = self.list_view.currentIndex().row()
        try:
            self.store.delete(entry.id)
        except HistoryError as exc:
            self.inform("Not deleted", str(exc))
        self._load_page(keep_id=None, fallback_row=row)

    def export_approved(self) -> None:
        """Ask for a folder, copy every approved output there with its audit, say what happened."""
        folder = self.choose_folder()
        if not folder:
            return
        try:
            report = self.store.export_approved(Path(folder))
        except (OSError, HistoryError) as exc:
            self.inform("Export failed", str(exc))
            return
        self.inform("Export approved", _export_summary(report))

    # -- building -------------------------------------------------------------------------
    def _build_filters(self) -> None:
        self.tool_filter = QComboBox()
        self.tool_filter.addItem("All tools", None)
        for name, tool in TOOLS.items():
            self.tool_filter.addItem(tool.title, name)
        self.review_filter = QComboBox()
        for label, review in REVIEW_FILTERS.items():
            self.review_filter.addItem(label, review)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search parameters, model, note…")
        self.search.setClearButtonEnabled(True)
        self._search_debouncer = QSignalDebouncer(parent=self)
        self._search_debouncer.setTimeout(SEARCH_DEBOUNCE_MS)
        self.search.textChanged.connect(self._search_debouncer.throttle)
        self.search.returnPressed.connect(self._search_debouncer.flush)
        self._search_debouncer.triggered.connect(self._filters_changed)
        self.tool_filter.currentIndexChanged.connect(self._filters_changed)
        self.review_filter.currentIndexChanged.connect(self._filters_changed)

    def _build_list(self) -> None:
        self.model = EntryListModel(ThumbnailCache(), self)
        self.list_view = QListView()
        self.list_view.setViewMode(QListView.ViewMode.IconMode)
        self.list_view.setResizeMode(QListView.ResizeMode.Adjust)
        self.list_view.setMovement(QListView.Movement.Static)
        self.list_view.setUniformItemSizes(True)
        self.list_view.setSelectionMode(QListView.SelectionMode.SingleSelection)
        self.list_view.setItemDelegate(EntryDelegate(self.list_view))
        self.list_view.setModel(self.model)
        self.list_view.selectionModel().currentChanged.connect(self._show_current)
        self.list_view.activated.connect(lambda _index: self.open_selected())

    def _build_pager(self) -> None:
        self.prev_button = QToolButton()
        self.prev_button.setArrowType(Qt.ArrowType.LeftArrow)
        self.prev_button.setToolTip("Newer entries")
        self.prev_button.clicked.connect(lambda: self._turn_page(-1))
        self.next_button = QToolButton()
        self.next_button.setArrowType(Qt.ArrowType.RightArrow)
        self.next_button.setToolTip("Older entries")
        self.next_button.clicked.connect(lambda: self._turn_page(+1))
        self.page_label = QLabel()

    def _build_actions(self) -> None:
        self.review_bar = ReviewBar()
        self.review_bar.reviewRequested.connect(self._set_review)
        self.review_bar.ratingRequested.connect(self._set_rating)
        self.review_bar.noteEdited.connect(self._set_note)
        self.open_action = self._action(
            "Open", "Return", self.open_selected, "Show full size, compared with the input"
        )
        self.rerun_action = self._action(
            "Re-run", "Ctrl+R", self.rerun_selected, "Run the same request again"
        )
        self.send_menu = QMenu("Send to", self)
        self.send_action = QAction("Send to…", self)
        self.send_action.setToolTip("Use the output as the input of a tool")
        self.send_action.setMenu(self.send_menu)
        self.reveal_action = self._action(
            "Reveal", "", self.reveal_selected, "Show the file's folder"
        )
        delete_key = QKeySequence(QKeySequence.StandardKey.Delete).toString()
        self.delete_action = self._action(
            "Delete", delete_key, self.delete_selected, "Delete the entry and its files"
        )
        self.export_action = QAction("Export approved…", self)
        self.export_action.setToolTip(
            "Copy every approved result, with an audit trail, to a folder"
        )
        self.export_action.triggered.connect(self.export_approved)
        self.list_view.addActions(self.review_bar.actions_with_shortcuts())

    def _action(self, text: str, key: str, slot: Callable[[], object], tip: str) -> QAction:
        action = QAction(text, self)
        action.setToolTip(f"{tip} ({key})" if key else tip)
        if key:
            action.setShortcut(QKeySequence(key))
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self.list_view.addAction(action)
        action.triggered.connect(lambda: slot())
        return action

    def _build_details(self) -> None:
        self.details = QLabel()
        self.details.setTextFormat(Qt.TextFormat.RichText)
        self.details.setWordWrap(True)
        self.details.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.details.linkActivated.connect(self._follow_link)

    def _build_layout(self) -> None:
        filters = QHBoxLayout()
        filters.addWidget(self.tool_filter)
        filters.addWidget(self.review_filter)
        filters.addWidget(self.search, 1)
        pager = QHBoxLayout()
        pager.addWidget(self.prev_button)
        pager.addWidget(self.page_label, 1, Qt.AlignmentFlag.AlignCenter)
        pager.addWidget(self.next_button)
        toolbar = QToolBar()
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        toolbar.addActions([self.open_action, self.rerun_action, self.send_action])
        toolbar.addActions([self.reveal_action, self.delete_action])
        toolbar.addSeparator()
        toolbar.addAction(self.export_action)
        send_button = toolbar.widgetForAction(self.send_action)
        if isinstance(send_button, QToolButton):
            send_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.details)
        lower = QWidget()
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        for widget in (toolbar, self.review_bar):
            lower_layout.addWidget(widget)
        lower_layout.addWidget(scroll, 1)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.list_view)
        splitter.addWidget(lower)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(filters)
        layout.addWidget(splitter, 1)
        layout.addLayout(pager)

    # -- pages and filters ----------------------------------------------------------------
    def _filters(self) -> dict[str, Any]:
        return {
            "tool": self.tool_filter.currentData(),
            "review": self.review_filter.currentData(),
            "text": self.search.text().strip() or None,
        }

    def _filters_changed(self) -> None:
        self._offset = 0
        self._load_page(keep_id=self.current_id(), fallback_row=0)

    def _clear_filters(self) -> None:
        for widget in (self.tool_filter, self.review_filter, self.search):
            widget.blockSignals(True)
        self.tool_filter.setCurrentIndex(0)
        self.review_filter.setCurrentIndex(0)
        self.search.clear()
        for widget in (self.tool_filter, self.review_filter, self.search):
            widget.blockSignals(False)
        self._search_debouncer.cancel()

    def _turn_page(self, step: int) -> None:
        self._offset = max(0, self._offset + step * self.page_size)
        self._load_page(keep_id=None, fallback_row=0)

    def _load_page(self, *, keep_id: int | None, fallback_row: int) -> None:
        filters = self._filters()
        self._total = self.store.count(**filters)
        last_page = max(0, (self._total - 1) // self.page_size * self.page_size)
        self._offset = min(self._offset, last_page)
        self.model.set_entries(
            self.store.query(**filters, offset=self._offset, limit=self.page_size)
        )
        self._update_pager()
        if keep_id is None or not self._select_id(keep_id):
            self._select_row(min(fallback_row, self.model.rowCount() - 1))
        self._show_current()

    def _find_offset(self, entry_id: int) -> int | None:
        """The offset of the page holding `entry_id` under the current filters; a scan, because
        the store answers pages, not positions (a rare path: links and finished jobs)."""
        filters = self._filters()
        for offset in range(0, self.store.count(**filters), self.page_size):
            page = self.store.query(**filters, offset=offset, limit=self.page_size)
            if any(entry.id == entry_id for entry in page):
                return offset
        return None

    def _update_pager(self) -> None:
        shown = self.model.rowCount()
        self.page_label.setText(_page_text(self._offset, shown, self._total))
        self.prev_button.setEnabled(self._offset > 0)
        self.next_button.setEnabled(self._offset + shown < self._total)

    # -- selection ------------------------------------------------------------------------
    def _select_id(self, entry_id: int) -> bool:
        row = self.model.row_of(entry_id)
        if row is not None:
            self._select_row(row)
        return row is not None

    def _select_row(self, row: int) -> None:
        if row < 0:
            self.list_view.setCurrentIndex(QModelIndex())
            return
        index = self.model.index(row)
        self.list_view.setCurrentIndex(index)
        self.list_view.scrollTo(index)

    def _show_current(self) -> None:
        entry = self.current_entry()
        self.review_bar.show_entry(entry)
        self.details.setText(details_html(entry) if entry else _empty_text(self._total))
        self._update_actions()

    def _update_actions(self) -> None:
        entry = self.current_entry()
        has_output = entry is not None and bool(entry.outputs)
        self.open_action.setEnabled(has_output)
        self.reveal_action.setEnabled(has_output)
        self.send_action.setEnabled(
            has_output and entry.status == "done" and bool(self._send_targets)
        )
        self.rerun_action.setEnabled(entry is not None and entry.status != "running")
        self.delete_action.setEnabled(entry is not None and entry.status != "running")

    def _follow_link(self, link: str) -> None:
        if link.startswith("entry:"):
            self.select_entry(int(link.removeprefix("entry:")))

    # -- review ---------------------------------------------------------------------------
    def _review_selected(self, state: str) -> None:
        if (entry_id := self.current_id()) is not None:
            self._set_review(entry_id, state)

    def _set_review(self, entry_id: int, state: str) -> None:
        changed = self._write(entry_id, lambda: self.store.set_review(entry_id, state))
        if changed and state != "pending" and self.advance_after_review:
            self._select_row(
                min(self.list_view.currentIndex().row() + 1, self.model.rowCount() - 1)
            )

    def _set_rating(self, entry_id: int, rating: int) -> None:
        self._write(entry_id, lambda: self.store.set_rating(entry_id, rating))

    def _set_note(self, entry_id: int, note: str) -> None:
        self._write(entry_id, lambda: self.store.set_note(entry_id, note))

    def _write(self, entry_id: int, write: Callable[[], None]) -> bool:
        """Apply one review change; a refusal (approving a failed run, an entry another Studio
        deleted) is told to the user and the page re-read."""
        try:
            write()
        except HistoryError as exc:
            self.inform("Review not saved", str(exc))
            self.refresh()
            return False
        self._entry_changed(entry_id)
        return True

    def _entry_changed(self, entry_id: int) -> None:
        """Re-read one entry after its review changed here or in a viewer."""
        try:
            self.model.replace(self.store.get(entry_id))
        except EntryNotFound:
            self.refresh()
            return
        if entry_id == self.current_id():
            self._show_current()
        self.reviewChanged.emit(entry_id)

    # -- dialogs (replaceable) ------------------------------------------------------------
    def _ask_confirmation(self, question: str) -> bool:
        answer = QMessageBox.question(self, "Delete entry", question)
        return answer == QMessageBox.StandardButton.Yes

    def _ask_export_folder(self) -> str:
        return QFileDialog.getExistingDirectory(self, "Export approved results to")

    def _show_message(self, title: str, text: str) -> None:
        QMessageBox.information(self, title, text)


# -- text -----------------------------------------------------------------------------------
def _page_text(offset: int, shown: int, total: int) -> str:
    if total == 0:
        return "No entries"
    return f"{offset + 1:,}–{offset + shown:,} of {total:,}"


def _empty_text(total: int) -> str:
    return "Select a result to see how it was made." if total else "Nothing here yet."


def _tooltip(entry: Entry) -> str:
    parts = [f"#{entry.id} {entry.tool}", entry.model_name or "", f"{entry.status}, {entry.review}"]
    return "\n".join(part for part in parts if part)


def _delete_question(entry: Entry) -> str:
    files = f"{len(entry.outputs)} output file{'s' if len(entry.outputs) != 1 else ''}"
    return f"Delete entry #{entry.id} and its {files}? This cannot be undone."


def _export_summary(report: ExportReport) -> str:
    text = f"Exported {len(report.files)} file(s) from {len(report.entry_ids)} entries"
    text += f" to {report.dest_dir}."
    text += f"\nAudit: {report.audit_json.name}, {report.audit_csv.name}"
    if report.skipped:
        text += f"\nSkipped {len(report.skipped)} entries that were no longer approved or finished."
    return text


def details_html(entry: Entry) -> str:
    """How the entry was made, as a two-column table; the parent is a link the panel follows."""
    rows = [
        ("Tool", _escape(TOOLS[entry.tool].title if entry.tool in TOOLS else entry.tool)),
        ("Status", _status_html(entry)),
        ("Review", _escape(f"{entry.review} {stars(entry.rating)}")),
        ("Model", _escape(_model_text(entry))),
        ("Seed", _escape(entry.seed)),
        ("Device", _escape(" / ".join(str(part) for part in (entry.device, entry.dtype) if part))),
        (
            "Duration",
            _escape(f"{entry.duration_s:.1f} s" if entry.duration_s is not None else None),
        ),
        ("Created", _escape(_local_time(entry.created_at))),
        (
            "Parent",
            f'<a href="entry:{entry.parent_id}">#{entry.parent_id}</a>' if entry.parent_id else "",
        ),
        ("Inputs", _escape(", ".join(item.original_name for item in entry.inputs))),
        ("Outputs", _escape(", ".join(_output_text(output) for output in entry.outputs))),
    ]
    parameters = [(key, _escape(_value_text(value))) for key, value in entry.request.items()]
    return (
        f"<table cellspacing='2'>{_rows_html(rows)}</table>"
        f"<p><b>Parameters</b></p><table cellspacing='2'>{_rows_html(parameters)}</table>"
    )


def _rows_html(rows: list[tuple[str, str]]) -> str:
    return "".join(
        f"<tr><td><b>{html.escape(label)}</b>&nbsp;</td><td>{value}</td></tr>"
        for label, value in rows
        if value
    )


def _escape(value: object) -> str:
    return "" if value is None else html.escape(str(value))


def _status_html(entry: Entry) -> str:
    status = html.escape(str(entry.status))
    if entry.error:
        return f"{status}: <span style='color:#da3633'>{html.escape(entry.error)}</span>"
    return status


def _model_text(entry: Entry) -> str | None:
    if not entry.model_name:
        return None
    return (
        f"{entry.model_name} ({entry.model_sha256[:10]})"
        if entry.model_sha256
        else entry.model_name
    )


def _output_text(output: Any) -> str:
    size = f"{output.width}×{output.height}, " if output.width else ""
    return f"{output.path.name} ({size}{_file_size(output.size)})"


def _file_size(size: int) -> str:
    if size < 1_000_000:
        return f"{size / 1000:.0f} kB" if size >= 1000 else f"{size} B"
    return f"{size / 1e6:.1f} MB"


def _value_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _local_time(moment: datetime | None) -> str | None:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else None
