"""The job queue seen from Qt: job changes arrive as signals on the GUI thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from studio.app.jobs import Job, JobQueue, JobSnapshot, JobState, Work
from studio.app.runs import describe_error


class QtJobs(QObject):
    """Re-emits every job change of a Qt-free JobQueue on the thread that owns this object."""

    changed = Signal(object)  # JobSnapshot
    finished = Signal(object)  # JobSnapshot, once it is done, failed or cancelled
    _relay = Signal(object)

    def __init__(self, queue: JobQueue, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.queue = queue
        self._relay.connect(self._deliver, Qt.ConnectionType.QueuedConnection)
        # A snapshot, taken on the worker thread: the job itself changes before Qt delivers it.
        self._unsubscribe = queue.subscribe(lambda job: self._relay.emit(job.snapshot()))
        self._callbacks: dict[int, Callable[[JobSnapshot], None]] = {}

    def submit(
        self, title: str, work: Work, on_finished: Callable[[JobSnapshot], None] | None = None
    ) -> Job:
        """Queue `work`; `on_finished` runs once, on this thread, with the job's final snapshot.

        It is registered before any of the job's changes can be delivered: they are queued to
        this thread, which is busy here.
        """
        job = self.queue.submit(title, work)
        if on_finished is not None:
            self._callbacks[job.id] = on_finished
        return job

    def cancel(self, job: Job) -> None:
        self.queue.cancel(job)

    def cancel_current(self) -> Job | None:
        active = self.queue.active()
        if active:
            self.queue.cancel(active[0])
            return active[0]
        return None

    def detach(self) -> None:
        self._unsubscribe()

    def _deliver(self, job: JobSnapshot) -> None:
        self.changed.emit(job)
        if job.state.finished:
            callback = self._callbacks.pop(job.id, None)
            self.finished.emit(job)
            if callback is not None:
                callback(job)


class JobsWidget(QWidget):
    """Progress, message, ETA and Cancel for the running job, and how many wait behind it."""

    def __init__(self, jobs: QtJobs, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.title = QLabel("Ready")
        self.message = QLabel("")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setFixedWidth(200)
        self.progress.setTextVisible(False)
        self.eta = QLabel("")
        self.queued = QLabel("")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Cancel the running job (Esc)")
        self.cancel_button.clicked.connect(self.jobs.cancel_current)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.title, self.progress, self.message, self.eta, self.queued):
            layout.addWidget(widget)
        layout.addWidget(self.cancel_button)
        jobs.changed.connect(self._show)
        self._show(None)

    def _show(self, job: Any) -> None:
        active = self.jobs.queue.active()
        running = active[0] if active and active[0].state == JobState.RUNNING else None
        waiting = len(active) - (1 if running else 0)
        self.queued.setText(f"{waiting} queued" if waiting else "")
        self.cancel_button.setEnabled(bool(active))
        if running is None:
            self.progress.setValue(0)
            self.progress.setVisible(False)
            self.eta.setText("")
            if job is not None and job.state.finished:
                self.title.setText(job.title)
                self.message.setText(_outcome(job))
            elif not active:
                self.title.setText("Ready")
                self.message.setText("")
            return
        self.progress.setVisible(True)
        self.title.setText(running.title)
        self.message.setText(running.message)
        self.progress.setValue(int(running.fraction * 1000))
        eta = running.eta_seconds()  # the live job, not the snapshot: ETA keeps moving
        self.eta.setText(f"ETA {_duration(eta)}" if eta is not None else "")


def failure_text(job: JobSnapshot) -> str:
    """Why a job failed, in the words the history and the CLI use."""
    return describe_error(job.error) if job.error is not None else job.message


def _outcome(job: JobSnapshot) -> str:
    if job.state == JobState.DONE:
        return "done"
    if job.state == JobState.CANCELLED:
        return "cancelled"
    return f"failed: {failure_text(job)}"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"
