"""The job queue: one job at a time in submit order, cancellable while queued or running."""

import threading

import pytest

from studio.app.jobs import JobQueue, JobState
from studio.engines.base import Cancelled


@pytest.fixture
def queue():
    q = JobQueue()
    yield q
    q.shutdown()


def test_jobs_run_one_at_a_time_in_submit_order(queue):
    order, running = [], []
    lock = threading.Lock()

    def work(name):
        def run(progress, cancelled):
            with lock:
                running.append(name)
                assert len(running) == 1, "two jobs ran at once"
            order.append(name)
            with lock:
                running.remove(name)
            return name

        return run

    jobs = [queue.submit(f"job {i}", work(i)) for i in range(5)]
    assert queue.wait_idle(timeout=10)
    assert order == [0, 1, 2, 3, 4]
    assert [j.result for j in jobs] == [0, 1, 2, 3, 4]
    assert all(j.state == JobState.DONE for j in jobs)


def test_a_job_can_be_queued_while_another_runs_and_cancelled_before_it_starts(queue):
    release = threading.Event()
    started = threading.Event()

    def blocking(progress, cancelled):
        started.set()
        release.wait(10)
        return "first"

    first = queue.submit("first", blocking)
    assert started.wait(10)
    second = queue.submit("second", lambda p, c: "second")
    assert second.state == JobState.QUEUED
    queue.cancel(second)
    assert second.state == JobState.CANCELLED
    release.set()
    assert queue.wait_idle(timeout=10)
    assert first.state == JobState.DONE
    assert second.result is None


def test_cancelling_a_running_job_reaches_its_cancel_check(queue):
    started = threading.Event()

    def steps(progress, cancelled):
        started.set()
        for step in range(10_000):
            if cancelled():
                raise Cancelled
            progress(step / 10_000, f"step {step}")
            threading.Event().wait(0.001)
        return "finished"

    job = queue.submit("long", steps)
    assert started.wait(10)
    queue.cancel(job)
    assert queue.wait_idle(timeout=10)
    assert job.state == JobState.CANCELLED
    assert job.result is None


def test_progress_and_failures_are_reported_to_listeners(queue):
    seen = []
    queue.subscribe(lambda job: seen.append((job.state, job.fraction, job.message)))

    def failing(progress, cancelled):
        progress(0.5, "half way")
        raise ValueError("the file is broken")

    job = queue.submit("fails", failing)
    assert queue.wait_idle(timeout=10)
    assert (JobState.RUNNING, 0.5, "half way") in seen
    assert job.state == JobState.FAILED
    assert job.message == "the file is broken"
    assert seen[-1][0] == JobState.FAILED


def test_eta_is_extrapolated_from_progress(queue):
    gate = threading.Event()
    observed = []

    def work(progress, cancelled):
        threading.Event().wait(0.05)
        progress(0.5, "half")
        observed.append(job.eta_seconds())
        gate.set()

    job = queue.submit("eta", work)
    assert gate.wait(10)
    queue.wait_idle(timeout=10)
    assert observed[0] is not None and observed[0] > 0
