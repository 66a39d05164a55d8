"""The Models dialog: per tool, what is installed and what can be downloaded, with licences shown
before a download, disk use, download with progress and cancel, import and remove.

Downloads and imports (which hash, and may copy, gigabytes) run on a worker thread, not on the job
queue: the queue's thread owns the compute device, and a download must not hold up a generation.
The dialog emits `modelsChanged` after every download, import or removal; the main window relays
it to the tabs so their model pickers refresh.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTabBar,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import create_worker

from studio.app.runs import describe_error
from studio.models.library import LIBRARY_TOOLS, ModelItem, ModelLibrary, human_size
from studio.progress import Cancelled

TOOL_TITLES = {
    "upscale": "Upscale",
    "restore": "Restore",
    "diffusion": "Diffusion (Generate, Inpaint)",
}
NON_COMMERCIAL = "Non-commercial"
MODEL_FILTER = "Model files (*.safetensors *.pth *.pt *.ckpt *.bin);;All files (*)"
COLUMNS = ("Model", "State", "Size", "Licence", "Family")


class _Task(QObject):
    """A download or import on a worker thread: its progress arrives on the GUI thread."""

    progress = Signal(float, str)

    def __init__(self, name: str, parent: QObject) -> None:
        super().__init__(parent)
        self.name = name
        self.cancel_event = threading.Event()

    def report(self, fraction: float, message: str, preview: object = None) -> None:
        self.progress.emit(fraction, message)  # from the worker thread; delivered queued


class ModelsDialog(QDialog):
    modelsChanged = Signal()
    taskFinished = Signal(str)  # "done" | "cancelled" | "failed: <reason>"

    def __init__(self, library: ModelLibrary, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.library = library
        self.setWindowTitle("Models")
        self.resize(980, 560)
        self.task: _Task | None = None
        self._worker: Any = None
        self._items: list[ModelItem] = []
        self._build()
        self.refresh()

    # -- layout ---------------------------------------------------------------------------
    def _build(self) -> None:
        self.tool_bar = QTabBar()
        for tool in LIBRARY_TOOLS:
            self.tool_bar.addTab(TOOL_TITLES[tool])
        self.tool_bar.currentChanged.connect(lambda _index: self.refresh())
        self.table = QTreeWidget()
        self.table.setHeaderLabels(COLUMNS)
        self.table.setRootIsDecorated(False)
        self.table.setAlternatingRowColors(True)
        self.table.setColumnWidth(0, 240)
        self.table.setColumnWidth(1, 110)
        self.table.setColumnWidth(2, 80)
        self.table.setColumnWidth(3, 260)
        self.table.currentItemChanged.connect(lambda *_: self._show_details())
        self.details = QLabel("")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setMinimumHeight(70)
        self.disk_use = QLabel("")

        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self.download_selected)
        self.remove_button = QPushButton("Remove…")
        self.remove_button.clicked.connect(self.remove_selected)
        self.import_file_button = QPushButton("Import file…")
        self.import_file_button.clicked.connect(self._choose_file)
        self.import_folder_button = QPushButton("Import folder…")
        self.import_folder_button.setToolTip("A diffusers folder (with model_index.json)")
        self.import_folder_button.clicked.connect(self._choose_folder)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)

        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setVisible(False)
        self.progress_label = QLabel("")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setVisible(False)

        buttons = QHBoxLayout()
        for button in (self.download_button, self.remove_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        for button in (self.import_file_button, self.import_folder_button, self.close_button):
            buttons.addWidget(button)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress_bar, 1)
        progress_row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tool_bar)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.details)
        layout.addWidget(self.disk_use)
        layout.addLayout(progress_row)
        layout.addWidget(self.progress_label)
        layout.addLayout(buttons)

    # -- state ----------------------------------------------------------------------------
    @property
    def tool(self) -> str:
        return LIBRARY_TOOLS[self.tool_bar.currentIndex()]

    def show_tool(self, tool: str) -> None:
        self.tool_bar.setCurrentIndex(LIBRARY_TOOLS.index(tool))

    def refresh(self) -> None:
        """Read the library again and list the current tool's models, installed first."""
        selected = self.selected()
        try:
            items = self.library.items(self.tool)
            total = self.library.disk_use()
        except Exception as exc:  # a damaged registry: say so in the dialog
            self.details.setText(describe_error(exc))
            return
        self._items = sorted(items, key=lambda item: not item.installed)
        self.table.clear()
        for item in self._items:
            self.table.addTopLevelItem(self._row(item))
        names = [item.name for item in self._items]
        if selected is not None and selected.name in names:
            self.table.setCurrentItem(self.table.topLevelItem(names.index(selected.name)))
        elif self._items:
            self.table.setCurrentItem(self.table.topLevelItem(0))
        tool_use = sum(item.size_bytes or 0 for item in self._items if item.installed)
        self.disk_use.setText(
            f"Installed {TOOL_TITLES[self.tool].split(' (')[0].lower()} models use "
            f"{human_size(tool_use)} · all models: {human_size(total)}"
        )
        self._show_details()

    def _row(self, item: ModelItem) -> QTreeWidgetItem:
        state = "Installed" if item.installed else "Available"
        if item.origin == "shipped":
            state = "Built in"
        elif item.installed and item.in_place:
            state = "Installed (in place)"
        size = human_size(item.size_bytes)
        if not item.installed and item.kind == "hf_repo" and item.size_bytes:
            size = f"~{size}"
        licence = item.licence or "—"
        if item.non_commercial:
            licence = f"{NON_COMMERCIAL}: {licence}"
        row = QTreeWidgetItem([item.name, state, size, licence, item.family])
        row.setToolTip(3, licence)
        row.setToolTip(0, item.description)
        if item.non_commercial:
            row.setForeground(3, QBrush(QColor("#d08020")))
        return row

    def selected(self) -> ModelItem | None:
        row = self.table.currentItem()
        if row is None:
            return None
        index = self.table.indexOfTopLevelItem(row)
        return self._items[index] if 0 <= index < len(self._items) else None

    def select(self, name: str) -> None:
        for index, item in enumerate(self._items):
            if item.name == name:
                self.table.setCurrentItem(self.table.topLevelItem(index))

    def _show_details(self) -> None:
        item = self.selected()
        busy = self.task is not None
        self.download_button.setEnabled(bool(item and item.downloadable) and not busy)
        self.remove_button.setEnabled(bool(item and item.removable) and not busy)
        self.import_file_button.setEnabled(not busy)
        self.import_folder_button.setEnabled(not busy)
        if item is None:
            self.details.setText("")
            return
        lines = [f"<b>{_html(item.name)}</b> — {_html(item.description)}"]
        licence = _html(item.licence or "not stated")
        if item.non_commercial:
            licence = f"<b>{NON_COMMERCIAL}</b> — {licence}"
        lines.append(f"Licence: {licence}")
        if item.installed:
            lines.append(f"Location: {_html(str(item.path or item.location))}")
        elif item.source_kind == "page":
            lines.append(
                f"Published only on {_html(item.page or '')}: download it there, then "
                "<i>Import file…</i>"
            )
        else:
            approx = "about " if item.kind == "hf_repo" else ""
            lines.append(
                f"Download: {approx}{human_size(item.size_bytes)} from {_html(item.location)}"
            )
        self.details.setText("<br>".join(lines))

    # -- downloading ----------------------------------------------------------------------
    def download_selected(self) -> None:
        item = self.selected()
        if item is None or not item.downloadable or self.task is not None:
            return
        if item.non_commercial and not self._confirm(
            f"Download {item.name}?",
            f"{item.name}'s licence does not allow commercial use:\n\n{item.licence}\n\n"
            "Download it anyway?",
        ):
            return
        library, name = self.library, item.name
        self._start(
            name,
            lambda task: library.download(
                name, progress=task.report, cancelled=task.cancel_event.is_set
            ),
            f"Downloading {name}…",
        )

    # -- importing ------------------------------------------------------------------------
    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a model file", "", MODEL_FILTER)
        if path:
            self.import_path(Path(path))

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Import a diffusers folder")
        if path:
            self.import_path(Path(path))

    def import_path(self, path: Path) -> None:
        """Ask whether to use the model where it is or copy it; import it off the GUI thread."""
        if self.task is not None:
            return
        copy = self._ask_copy(path)
        if copy is None:
            return
        library = self.library
        self._start(
            path.name,
            lambda task: library.import_path(
                path, copy=copy, progress=task.report, cancelled=task.cancel_event.is_set
            ),
            f"Importing {path.name}…",
        )

    def _ask_copy(self, path: Path) -> bool | None:
        """True to copy, False to reference in place, None to cancel."""
        box = QMessageBox(self)
        box.setWindowTitle("Import a model")
        box.setText(f"Import {path.name}")
        box.setInformativeText(
            "Use it where it is (Studio never moves or deletes it), or copy it into Studio's "
            "models folder (safe if the original is moved or deleted; takes disk space)?"
        )
        in_place = box.addButton("Use where it is", QMessageBox.ButtonRole.AcceptRole)
        copy = box.addButton("Copy into Studio", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(in_place)
        box.exec()
        clicked = box.clickedButton()
        if clicked is copy:
            return True
        if clicked is in_place:
            return False
        return None

    # -- removing -------------------------------------------------------------------------
    def remove_selected(self) -> None:
        item = self.selected()
        if item is None or not item.removable or self.task is not None:
            return
        if item.in_place:
            what = f"Studio forgets {item.name}; the file at {item.path} stays where it is."
        elif item.kind == "hf_repo":
            what = (
                f"This deletes {human_size(item.size_bytes)} from the Hugging Face cache, which "
                "other programs on this computer share."
            )
        else:
            what = f"This deletes {human_size(item.size_bytes)} ({item.path})."
        if not self._confirm(f"Remove {item.name}?", what):
            return
        try:
            self.library.remove(item.name)
        except Exception as exc:
            self._set_progress_text(f"Could not remove {item.name}: {describe_error(exc)}", True)
            return
        self._set_progress_text(f"Removed {item.name}.")
        self.refresh()
        self.modelsChanged.emit()

    # -- the running task -----------------------------------------------------------------
    def _start(self, name: str, work: Callable[[_Task], ModelItem], message: str) -> None:
        task = _Task(name, self)
        task.progress.connect(self._progress)
        self.task = task
        self.progress_bar.setValue(0)
        self.progress_bar.setVisible(True)
        self.cancel_button.setVisible(True)
        self.cancel_button.setEnabled(True)
        self._set_progress_text(message)
        self._show_details()
        self._worker = create_worker(
            work,
            task,
            _connect={
                "returned": lambda item, t=task: self._task_done(t, item),
                "errored": lambda exc, t=task: self._task_failed(t, exc),
            },
        )

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel_event.set()
            self.cancel_button.setEnabled(False)
            self._set_progress_text(f"Cancelling {self.task.name}…")

    def _progress(self, fraction: float, message: str) -> None:
        self._set_progress_text(message)
        self.progress_bar.setValue(int(max(0.0, min(fraction, 1.0)) * 1000))

    def _task_done(self, task: _Task, item: ModelItem) -> None:
        self._end(task)
        self._set_progress_text(f"{item.name} is ready ({human_size(item.size_bytes)}).")
        if item.tool != self.tool:
            self.show_tool(item.tool)
        self.refresh()
        self.select(item.name)
        self.modelsChanged.emit()
        self.taskFinished.emit("done")

    def _task_failed(self, task: _Task, exc: BaseException) -> None:
        self._end(task)
        self.refresh()
        if isinstance(exc, Cancelled):
            self._set_progress_text(f"{task.name}: cancelled.")
            self.taskFinished.emit("cancelled")
            return
        reason = describe_error(exc)
        self._set_progress_text(f"{task.name} failed: {reason}", True)
        self.taskFinished.emit(f"failed: {reason}")

    def _end(self, task: _Task) -> None:
        task.deleteLater()
        self.task = None
        self._worker = None
        self.progress_bar.setVisible(False)
        self.cancel_button.setVisible(False)

    def _set_progress_text(self, text: str, error: bool = False) -> None:
        self.progress_label.setText(text)
        self.progress_label.setStyleSheet("color:#e06060;" if error else "")

    def _confirm(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text)
        return answer == QMessageBox.StandardButton.Yes


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
