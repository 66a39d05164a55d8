"""The real main window, driven offscreen: open, upscale, review, reopen; cancel; errors; re-run."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDropEvent
from tiny_models import make_compact

from studio.app.jobs import JobState
from studio.ui.main_window import MainWindow
from studio.ui.output_widgets import choose_passes


@pytest.fixture
def photo(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:80, 0:96]
    pixels = np.stack([xx * 2, yy * 3, (xx + yy) * 1], axis=-1) + rng.integers(0, 20, (80, 96, 3))
    path = tmp_path / "product.png"
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def model(tmp_path) -> Path:
    return make_compact(tmp_path / "tiny-compact-x4.pth", scale=4)


@pytest.fixture
def window(main_window) -> MainWindow:
    return main_window


def choose(window: MainWindow, qtbot, photo: Path, model: Path):
    tab = window.tool_tabs["upscale"]
    window.tabs.setCurrentWidget(tab)
    tab.open_image(photo)
    tab.set_model(model)
    qtbot.waitUntil(lambda: tab.model_info is not None, timeout=20_000)
    return tab


def run_and_wait(window: MainWindow, qtbot, timeout: int = 60_000):
    with qtbot.waitSignal(window.jobs.finished, timeout=timeout) as blocker:
        window.run_action.trigger()
    return blocker.args[0]


def test_upscale_is_reviewed_and_the_review_survives_a_restart(qtbot, main_windows, photo, model):
    window = main_windows.open()
    tab = choose(window, qtbot, photo, model)
    assert "Compact" in tab.model_label.text() or "SRVGG" in tab.model_label.text()
    tab.tile_spin.setValue(32)  # several tiles, so there is progress between start and end
    progress = []
    window.jobs.changed.connect(lambda job: progress.append(job.fraction))
    job = run_and_wait(window, qtbot)
    assert job.state == JobState.DONE, job.message
    entry = job.result
    assert any(0 < f < 1 for f in progress), f"no intermediate progress was shown: {progress}"
    output = entry.outputs[0]
    assert (output.width, output.height) == (96 * 4, 80 * 4)
    assert tab.view.image().size().width() == 96 * 4
    panel = window.history_panel
    qtbot.waitUntil(lambda: panel.current_id() == entry.id)
    panel.approve_selected()
    assert window.ctx.history.get(entry.id).review == "approved"
    main_windows.close(window)

    reopened = main_windows.open()
    stored = reopened.ctx.history.get(entry.id)
    assert stored.review == "approved"
    assert stored.outputs[0].path.is_file()
    assert reopened.history_panel.model.rowCount() == 1


def test_cancelling_a_running_upscale_leaves_no_output(window, qtbot, tmp_path, model):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), np.uint8)).save(big)
    tab = choose(window, qtbot, big, model)
    tab.tile_spin.setValue(32)

    def cancel_once_running(job):
        if job.state == JobState.RUNNING and job.fraction > 0:
            window.cancel_action.trigger()

    window.jobs.changed.connect(cancel_once_running)
    job = run_and_wait(window, qtbot)
    assert job.state == JobState.CANCELLED
    entries = window.ctx.history.query()
    assert [e.status for e in entries] == ["cancelled"]
    assert entries[0].outputs == ()
    outputs = window.ctx.dirs.data / "outputs"
    assert not [p for p in outputs.rglob("*") if p.is_file()]
    assert "no output" in tab.status.text()


def test_the_window_repaints_while_a_job_runs(window, qtbot, tmp_path, model):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (192, 192, 3), np.uint8)).save(big)
    tab = choose(window, qtbot, big, model)
    tab.tile_spin.setValue(32)
    ticks = []
    timer = QTimer(interval=5, timeout=lambda: ticks.append(window.jobs.queue.active()))
    timer.start()
    job = run_and_wait(window, qtbot)
    timer.stop()
    assert job.state == JobState.DONE
    assert sum(1 for active in ticks if active) >= 2, "the GUI thread was blocked by the job"


def test_a_bad_model_file_is_refused_with_a_readable_message(window, qtbot, tmp_path, photo):
    bogus = tmp_path / "notes.pth"
    bogus.write_text("this is not a model")
    tab = window.tool_tabs["upscale"]
    tab.open_image(photo)
    tab.set_model(bogus)
    qtbot.waitUntil(lambda: window.notifications.text() != "", timeout=20_000)
    assert "notes.pth" in window.notifications.text()
    assert tab.model_info is None


def test_a_broken_image_is_refused_and_the_app_keeps_running(window, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    tab = window.tool_tabs["upscale"]
    tab.open_image(broken)
    assert "broken.png" in window.notifications.text()
    assert tab.input_path is None


def test_dropping_an_image_on_the_tab_opens_it(window, photo):
    tab = window.tool_tabs["upscale"]
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(photo))])
    event = QDropEvent(
        QPointF(10, 10),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    tab.dropEvent(event)
    assert tab.input_path == photo
    assert tab.view.image().width() == 96


def test_rerun_from_history_reproduces_the_same_pixels(window, qtbot, photo, model):
    tab = choose(window, qtbot, photo, model)
    choose_passes(tab.ensemble_combo, 2)
    first = run_and_wait(window, qtbot).result
    assert first.request["ensemble"] == 2
    choose_passes(tab.ensemble_combo, 1)
    with qtbot.waitSignal(window.jobs.finished, timeout=60_000) as blocker:
        window.rerun(first.id)
    second = blocker.args[0].result
    assert second.id != first.id
    assert second.request["model_path"] == first.request["model_path"]
    assert second.request["ensemble"] == 2 and tab.ensemble_combo.currentData() == 2
    a = np.asarray(Image.open(first.outputs[0].path))
    b = np.asarray(Image.open(second.outputs[0].path))
    assert np.array_equal(a, b)


def test_shortcuts_for_run_cancel_approve_and_reject(window):
    shortcuts = {
        window.run_action.shortcut().toString(),
        window.cancel_action.shortcut().toString(),
        window.approve_action.shortcut().toString(),
        window.reject_action.shortcut().toString(),
    }
    assert shortcuts == {"Ctrl+Return", "Esc", "Ctrl+Shift+A", "Ctrl+Shift+R"}


def test_status_bar_names_the_compute_device(window, qtbot):
    qtbot.waitUntil(lambda: "detecting" not in window.device_label.text(), timeout=30_000)
    assert "CPU" in window.device_label.text() or "CUDA" in window.device_label.text()


def test_the_built_in_upscaler_is_chosen_on_a_fresh_install(window, qtbot, photo):
    tab = window.tool_tabs["upscale"]
    window.tabs.setCurrentWidget(tab)
    assert "built in" in tab.model_combo.currentText()
    qtbot.waitUntil(lambda: tab.model_info is not None, timeout=20_000)
    tab.open_image(photo)
    job = run_and_wait(window, qtbot)
    assert job.state == JobState.DONE, job.message
    assert job.result.model_name == "studio-compact-x4"


def test_rerun_uses_the_stored_input_even_when_the_original_is_gone(window, qtbot, tmp_path, model):
    original = tmp_path / "moved-away.png"
    Image.fromarray(np.random.default_rng(7).integers(0, 255, (30, 30, 3), np.uint8)).save(original)
    choose(window, qtbot, original, model)
    first = run_and_wait(window, qtbot).result
    original.unlink()
    other = tmp_path / "other.png"
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(other)
    window.tool_tabs["upscale"].open_image(other)  # a different image open in the tab
    with qtbot.waitSignal(window.jobs.finished, timeout=60_000) as blocker:
        window.rerun(first.id)
    second = blocker.args[0].result
    assert second.inputs[0].sha256 == first.inputs[0].sha256
    a = np.asarray(Image.open(first.outputs[0].path))
    assert np.array_equal(a, np.asarray(Image.open(second.outputs[0].path)))


def test_rerun_refuses_when_the_stored_input_is_missing(window, qtbot, photo, model):
    choose(window, qtbot, photo, model)
    first = run_and_wait(window, qtbot).result
    first.inputs[0].path.unlink()
    window.rerun(first.id)
    assert "is missing" in window.notifications.text()
    assert window.ctx.jobs.active() == []
    assert window.ctx.history.count() == 1


def test_comparing_models_opens_their_results_side_by_side(window, qtbot, tmp_path, photo):
    from tiny_models import make_esrgan

    models = [make_compact(tmp_path / "a-compact.pth"), make_esrgan(tmp_path / "b-esrgan.pth")]
    tab = window.tool_tabs["upscale"]
    tab.open_image(photo)
    finished = []
    window.jobs.finished.connect(finished.append)
    tab.compare(models)
    qtbot.waitUntil(lambda: len(finished) == 2, timeout=60_000)
    assert all(job.state == JobState.DONE for job in finished)
    qtbot.waitUntil(lambda: bool(window.viewers), timeout=5_000)
    viewer = window.viewers[-1]
    viewer.show_side_by_side(True)
    assert len(viewer.sibling_views) == 2
    names = {job.result.model_name for job in finished}
    assert names == {"a-compact", "b-esrgan"}
