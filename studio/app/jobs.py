"""One queue for every tool's work: a single worker thread owns the compute device.

Jobs run one at a time in submit order; more can be queued while one runs; queued and running jobs
can be cancelled. Listeners are plain callables invoked from whichever thread changed the job, so
the UI marshals them onto its own thread and the CLI can print directly.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from studio.engines.base import CancelCheck, Cancelled, Progress

log = logging.getLogger(__name__)

Work = Callable[[Progress, CancelCheck], Any]


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass(eq=False)
class Job:
    id: int
    title: str
    work: Work = field(repr=False)
    state: JobState = JobState.QUEUED
    fraction: float = 0.0
    message: str = "Waiting"
    preview: Any = field(default=None, repr=False)
    result: Any = field(default=None, repr=False)
    error: BaseException | None = None
    submitted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    finished_at: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def snapshot(self) -> JobSnapshot:
        """The job as it is now: what a listener on another thread shows, even if it lags."""
        return JobSnapshot(
            id=self.id,
            title=self.title,
            state=self.state,
            fraction=self.fraction,
            message=self.message,
            preview=self.preview,
            result=self.result,
            error=self.error,
            eta_s=self.eta_seconds(),
        )

    def eta_seconds(self) -> float | None:
        """Remaining time extrapolated from the progress so far; None until there is a basis."""
        if self.started_at is None or self.fraction <= 0.02 or self.state.finished:
            return None
        elapsed = time.monotonic() - self.started_at
        return max(0.0, elapsed * (1.0 - self.fraction) / self.fraction)


@dataclass(frozen=True)
class JobSnapshot:
    id: int
    title: str
    state: JobState
    fraction: float
    message: str
    preview: Any = field(default=None, repr=False)
    result: Any = field(default=None, repr=False)
    error: BaseException | None = None
    eta_s: float | None = None


Listener = Callable[[Job], None]


class JobQueue:
    def __init__(self) -> None:
        self._pending: deque[Job] = deque()
        self._running: Job | None = None
        self._listeners: list[Listener] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="studio-jobs", daemon=True)
        self._thread.start()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(job)` on every change of any job; returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(listener)
        return lambda: self._unsubscribe(listener)

    def submit(self, title: str, work: Work) -> Job:
        job = Job(id=next(self._ids), title=title, work=work)
        with self._lock:
            if self._closed:
                raise RuntimeError("the job queue is shut down")
            self._pending.append(job)
            self._wake.notify()
        self._emit(job)
        return job

    def cancel(self, job: Job) -> None:
        """A queued job is dropped at once; a running one stops at its next step or tile."""
        with self._lock:
            job._cancel.set()
            queued = job in self._pending
            if queued:
                self._pending.remove(job)
                job.state = JobState.CANCELLED
                job.message = "Cancelled before it started"
                job.finished_at = time.monotonic()
        if queued:
            self._emit(job)

    def cancel_all(self) -> None:
        for job in self.active():
            self.cancel(job)

    def active(self) -> list[Job]:
        """The running job first, then the queued ones in the order they will run."""
        with self._lock:
            return ([self._running] if self._running else []) + list(self._pending)

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._running or self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._wake.wait(remaining)
        return True

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel everything and stop the worker; waits for the running job to notice."""
        self.cancel_all()
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(timeout)

    def _unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _emit(self, job: Job) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(job)
            except Exception:
                log.exception("job listener failed")

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed and not self._pending:
                    return
                job = self._pending.popleft()
                self._running = job
                job.state = JobState.RUNNING
                job.started_at = time.monotonic()
                job.message = "Starting"
            self._emit(job)
            self._run(job)
            with self._lock:
                self._running = None
                self._wake.notify_all()
            self._emit(job)

    def _run(self, job: Job) -> None:
        def progress(fraction: float, message: str, preview: Any | None = None) -> None:
            job.fraction = min(max(float(fraction), 0.0), 1.0)
            job.message = message
            if preview is not None:
                job.preview = preview
            self._emit(job)

        try:
            job.result = job.work(progress, job._cancel.is_set)
        except Cancelled:
            job.state = JobState.CANCELLED
            job.message = "Cancelled"
        except Exception as exc:
            log.exception("job %r failed", job.title)
            job.state = JobState.FAILED
            job.error = exc
            job.message = str(exc) or type(exc).__name__
        else:
            job.state = JobState.DONE
            job.fraction = 1.0
            job.message = "Done"
        job.finished_at = time.monotonic()
