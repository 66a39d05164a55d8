"""The main window: a tab per tool, the History dock, the job queue and the compute device."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QThreadPool, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import create_worker

from studio.app.context import AppContext
from studio.app.history import EntryNotFound
from studio.app.jobs import Job, JobSnapshot
from studio.app.runs import TOOLS, execute, request_from_entry
from studio.errors import UserError
from studio.models.library import ModelLibrary
from studio.ui.entry_viewer import EntryViewer
from studio.ui.generate_tab import GenerateTab
from studio.ui.grade_tab import GradeTab
from studio.ui.history_panel import HistoryPanel
from studio.ui.inpaint_tab import InpaintTab
from studio.ui.jobs import JobsWidget, QtJobs
from studio.ui.models_dialog import ModelsDialog
from studio.ui.notifications import NotificationBar
from studio.ui.restore_tab import RestoreTab
from studio.ui.settings_dialog import SettingsDialog
from studio.ui.tool_tab import IMAGE_SUFFIXES, ToolTab
from studio.ui.upscale_tab import UpscaleTab

log = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    # A model was downloaded, imported or removed: tabs refresh their model pickers.
    modelsChanged = Signal()

    def __init__(self, ctx: AppContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.models = ModelLibrary(ctx.dirs)
        self.models_dialog: ModelsDialog | None = None
        self.setWindowTitle("Studio")
        self.resize(1400, 880)
        self.jobs = QtJobs(ctx.jobs, self)
        self.notifications = NotificationBar()
        self.tool_tabs: dict[str, ToolTab] = {
            tab.tool: tab
            for tab in (
                GenerateTab(self),
                InpaintTab(self),
                UpscaleTab(self),
                RestoreTab(self),
                GradeTab(self),
            )
        }
        self.tabs = QTabWidget()
        for tab in self.tool_tabs.values():
            self.tabs.addTab(tab, tab.title)
        central = QWidget()
        column = QVBoxLayout(central)
        column.setContentsMargins(4, 0, 4, 4)
        column.addWidget(self.notifications)
        column.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

        self.history_panel = HistoryPanel(ctx.history)
        self.history_panel.set_send_targets(
            [tab.title for tab in self.tool_tabs.values() if tab.accepts_images]
        )
        self.history_panel.rerunRequested.connect(self.rerun)
        self.history_panel.sendRequested.connect(self.send_to)
        self.history_dock = QDockWidget("History", self)
        self.history_dock.setObjectName("history")
        self.history_dock.setWidget(self.history_panel)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.history_dock)
        self.viewers: list[EntryViewer] = []

        self.device_label = QLabel("Device: detecting…")
        self.jobs_widget = JobsWidget(self.jobs)
        self.statusBar().addWidget(self.jobs_widget, 1)
        self.statusBar().addPermanentWidget(self.device_label)
        self.jobs.changed.connect(self._job_changed)
        self.jobs.finished.connect(self._job_finished)
        self._build_menus()
        self.refresh_device()

    # -- menus and shortcuts --------------------------------------------------------------
    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self._action(file_menu, "&Open image…", QKeySequence.StandardKey.Open, self.open_image)
        self._action(file_menu, "&Settings…", QKeySequence("Ctrl+,"), self.edit_settings)
        self.models_action = self._action(
            file_menu, "&Models…", QKeySequence("Ctrl+Shift+M"), self.open_models
        )
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", QKeySequence.StandardKey.Quit, self.close)
        run_menu = self.menuBar().addMenu("&Run")
        self.run_action = self._action(run_menu, "&Run", QKeySequence("Ctrl+Return"), self.run)
        self.cancel_action = self._action(run_menu, "&Cancel", QKeySequence("Escape"), self.cancel)
        history_menu = self.menuBar().addMenu("&History")
        self.approve_action = self._action(
            history_menu,
            "&Approve",
            QKeySequence("Ctrl+Shift+A"),
            self.history_panel.approve_selected,
        )
        self.reject_action = self._action(
            history_menu,
            "&Reject",
            QKeySequence("Ctrl+Shift+R"),
            self.history_panel.reject_selected,
        )
        self._action(history_menu, "&Export approved…", None, self.history_panel.export_approved)
        view_menu = self.menuBar().addMenu("&View")
        view_menu.addAction(self.history_dock.toggleViewAction())

    def _action(self, menu, text: str, shortcut, slot) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(shortcut)
        action.triggered.connect(slot)
        menu.addAction(action)
        self.addAction(action)
        return action

    # -- actions --------------------------------------------------------------------------
    def current_tab(self) -> ToolTab:
        return self.tabs.currentWidget()

    def run(self) -> None:
        self.current_tab().run()

    def cancel(self) -> None:
        job = self.jobs.cancel_current()
        if job is not None:
            self.notifications.info(f"Cancelling {job.title}…")

    def open_image(self) -> None:
        filters = "Images (" + " ".join(f"*{s}" for s in IMAGE_SUFFIXES) + ");;All files (*)"
        path, _ = QFileDialog.getOpenFileName(self, "Open an image", "", filters)
        if path:
            self.current_tab().open_image(Path(path))

    def edit_settings(self) -> None:
        dialog = SettingsDialog(self.ctx.settings, self)
        if dialog.exec():
            self.ctx.update_settings(dialog.settings())
            self.refresh_device()

    def open_models(self, tool: str | None = None) -> ModelsDialog:
        """Show the Models dialog (one per window, kept while downloads run), on `tool`."""
        if self.models_dialog is None:
            self.models_dialog = ModelsDialog(self.models, self)
            self.models_dialog.modelsChanged.connect(self.modelsChanged)
        if tool:
            self.models_dialog.show_tool(tool)
        self.models_dialog.refresh()
        self.models_dialog.show()
        self.models_dialog.raise_()
        return self.models_dialog

    def submit(
        self, request: Any, *, title: str, parent_id: int | None = None, on_finished=None
    ) -> Job:
        """Queue `request`; the job records its history entry and returns it as the result."""
        ctx = self.ctx

        def work(progress, cancelled):
            return execute(
                ctx, request, progress=progress, cancelled=cancelled, parent_id=parent_id
            )

        return self.jobs.submit(title, work, on_finished)

    def rerun(self, entry_id: int) -> None:
        """Run an entry's request again in its tab, with the same parameters."""
        try:
            entry = self.ctx.history.get(entry_id)
        except LookupError:
            self.notifications.error(f"Entry #{entry_id} no longer exists.")
            return
        tab = self.tool_tabs.get(entry.tool)
        if tab is None or entry.tool not in TOOLS:
            self.notifications.error(
                f"Entry #{entry_id} was made by '{entry.tool}', not available."
            )
            return
        try:
            request = request_from_entry(entry)
        except (UserError, TypeError, ValueError) as exc:
            self.notifications.error(f"Entry #{entry_id} cannot be re-run: {exc}")
            return
        missing = [path for path in request.input_paths() if not Path(path).is_file()]
        if missing:
            self.notifications.error(
                f"Entry #{entry_id} cannot be re-run: its input {missing[0]} is missing."
            )
            return
        self.tabs.setCurrentWidget(tab)
        tab.load_request(request)  # shows what runs; the stored request runs as it was
        tab.submit(request)

    def send_to(self, entry_id: int, tab_title: str) -> None:
        try:
            entry = self.ctx.history.get(entry_id)
        except EntryNotFound:
            self.notifications.error(f"Entry #{entry_id} is no longer in the history.")
            return
        if not entry.outputs:
            self.notifications.error(f"Entry #{entry_id} has no output to send.")
            return
        for tab in self.tool_tabs.values():
            if tab.title == tab_title:
                self.tabs.setCurrentWidget(tab)
                tab.open_image(entry.outputs[0].path, parent_id=entry.id)
                return

    def open_entry(self, entry_id: int) -> EntryViewer:
        viewer = EntryViewer(self.ctx.history, entry_id, self)
        viewer.reviewChanged.connect(lambda _id: self.history_panel.refresh())
        viewer.show()
        self.viewers.append(viewer)
        return viewer

    def refresh_device(self) -> None:
        """Describe the compute device off the GUI thread: it is the first thing to import torch."""
        self._device_worker = create_worker(
            _describe_device,
            self.ctx.settings.device,
            _connect={
                "returned": self.device_label.setText,
                "errored": lambda exc: self.device_label.setText(f"Device: {exc}"),
            },
        )

    def _job_changed(self, job: JobSnapshot) -> None:
        for tab in self.tool_tabs.values():
            handler = getattr(tab, "job_changed", None)
            if handler is not None:
                handler(job)

    def _job_finished(self, job: JobSnapshot) -> None:
        self.history_panel.refresh()
        entry = getattr(job.result, "id", None)
        if entry is not None:
            self.history_panel.show_new_entry(entry)
        self.refresh_device()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.ctx.jobs.cancel_all()
        if self.models_dialog is not None:
            self.models_dialog.cancel()  # a download stops at its next chunk
        self.ctx.jobs.wait_idle(timeout=30)
        self.jobs.detach()
        # Background readers (model info, colour samples, heat maps) signal this window when
        # they finish: let them finish while it still exists.
        QThreadPool.globalInstance().waitForDone(10_000)
        for viewer in self.viewers:
            viewer.close()
        super().closeEvent(event)


def _describe_device(preference: str) -> str:
    """Runs on a worker thread at start-up; it also imports the engines' heavy libraries there,
    so that the first click on Run does not freeze the window while they load (spandrel
    alone takes about a second)."""
    from studio.models.device import describe_device, resolve_device

    try:
        description = describe_device(resolve_device(preference))
    except Exception as exc:  # an unavailable explicit choice: say so, runs will fail clearly
        return f"{preference}: {exc}"
    import studio.engines.grade
    import studio.engines.upscale  # noqa: F401

    return description
