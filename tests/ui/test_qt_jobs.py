"""The Qt side of the job queue: every change arrives on the GUI thread, each end exactly once."""

import threading

import pytest
from PySide6.QtWidgets import QWidget

from studio.app.jobs import JobQueue, JobState
from studio.ui.jobs import JobsWidget, QtJobs


@pytest.fixture
def jobs(qtbot):
    owner = QWidget()  # as in the main window: the bridge belongs to a widget Qt deletes
    qtbot.addWidget(owner)
    queue = JobQueue()
    bridge = QtJobs(queue, owner)
    yield bridge
    bridge.detach()
    queue.shutdown()


def test_a_job_finishes_once_and_progress_arrives_in_order(jobs, qtbot):
    finished, fractions, threads = [], [], set()
    jobs.finished.connect(finished.append)
    jobs.changed.connect(
        lambda snap: (fractions.append(snap.fraction), threads.add(threading.current_thread().name))
    )
    callbacks = []

    def work(progress, cancelled):
        for step in range(1, 51):
            progress(step / 50, f"step {step}")
        return "result"

    with qtbot.waitSignal(jobs.finished, timeout=10_000):
        jobs.submit("fifty steps", work, callbacks.append)
    qtbot.wait(50)  # any stray deliveries still queued would arrive now
    assert len(finished) == 1 and len(callbacks) == 1
    assert callbacks[0].state == JobState.DONE and callbacks[0].result == "result"
    progress = [f for f in fractions if 0 < f < 1]
    assert progress == sorted(progress) and len(progress) >= 40
    assert threads == {threading.main_thread().name}


def test_the_status_widget_shows_running_queued_and_cancels(jobs, qtbot):
    widget = JobsWidget(jobs)
    qtbot.addWidget(widget)
    gate, started = threading.Event(), threading.Event()

    def blocking(progress, cancelled):
        started.set()
        progress(0.25, "a quarter")
        while not cancelled():
            gate.wait(0.01)
        from studio.progress import Cancelled

        raise Cancelled

    first = jobs.submit("first", blocking)
    jobs.submit("second", lambda p, c: None)
    qtbot.waitUntil(lambda: widget.message.text() == "a quarter", timeout=10_000)
    assert widget.queued.text() == "1 queued"
    assert widget.title.text() == "first"
    with qtbot.waitSignal(jobs.finished, timeout=10_000):
        widget.cancel_button.click()
    assert first.state == JobState.CANCELLED
