"""The Generate tab on the real window with tiny random-weight SD pipelines: prompt to image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt

from studio.app.jobs import JobState
from studio.engines.diffusion import SCHEDULER_TITLES
from studio.ui.convert import load_qimage
from studio.ui.generate_tab import GenerateTab
from studio.ui.main_window import MainWindow


@pytest.fixture
def window(diffusion_window) -> MainWindow:
    return diffusion_window


@pytest.fixture
def tab(window) -> GenerateTab:
    tab = window.tool_tabs["generate"]
    window.tabs.setCurrentWidget(tab)
    return tab


def choose_model(tab: GenerateTab, qtbot, model: Path) -> None:
    tab.controls.picker.choose(str(model))
    qtbot.waitUntil(lambda: tab.controls.family is not None, timeout=30_000)


def ready(tab: GenerateTab, qtbot, model: Path, *, steps: int = 2, seed: int | None = 11) -> None:
    choose_model(tab, qtbot, model)
    tab.controls.prompt.setPlainText("a red cat")
    tab.controls.steps.setValue(steps)
    if seed is not None:
        tab.controls.seed.setValue(seed)
        tab.controls.seed_lock.setChecked(True)


def run_and_wait(window: MainWindow, qtbot, count: int = 1) -> list:
    finished = []
    window.jobs.finished.connect(finished.append)
    window.run_action.trigger()  # Ctrl+Return
    qtbot.waitUntil(lambda: len(finished) == count, timeout=120_000)
    return finished


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def scheduler_names(tab: GenerateTab) -> list[str]:
    combo = tab.controls.scheduler
    return [combo.itemData(i) for i in range(combo.count())]


def test_generate_is_the_first_tab_and_inpaint_upscale_restore_grade_follow(window):
    titles = [window.tabs.tabText(i) for i in range(window.tabs.count())]
    assert titles == ["Generate", "Inpaint", "Upscale", "Restore", "Grade"]
    assert window.tabs.currentWidget() is window.tool_tabs["generate"]


def test_an_image_opened_on_generate_goes_to_inpaint_and_history_sends_skip_generate(
    window, tab, tmp_path
):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(photo)
    tab.open_image(photo)
    assert window.tabs.currentWidget() is window.tool_tabs["inpaint"]
    assert window.tool_tabs["inpaint"].input_path == photo
    targets = [action.text() for action in window.history_panel.send_menu.actions()]
    assert targets == ["Inpaint", "Upscale", "Restore", "Grade"]


def test_without_a_model_the_tab_says_what_to_do_instead_of_failing(window, tab):
    assert "No model yet" in tab.controls.picker.info.text()
    assert "repo id" in tab.controls.picker.info.text()
    tab.controls.prompt.setPlainText("a red cat")
    window.run_action.trigger()
    assert "Choose a model first" in tab.status.text()
    assert window.ctx.jobs.active() == []
    assert window.ctx.history.count() == 0


def test_the_controls_adapt_to_the_model_family(tab, qtbot, diffusion_models):
    choose_model(tab, qtbot, diffusion_models["folder"])
    assert "SD 1.x · native 64 px" in tab.controls.picker.info.text()
    presets = [tab.preset_combo.itemData(i) for i in range(tab.preset_combo.count())]
    assert presets[0] == (64, 64) and all(w * h <= 72 * 72 for w, h in presets)
    assert (tab.width_spin.value(), tab.height_spin.value()) == (64, 64)
    assert tab.preset_combo.currentText() == "64 × 64"
    assert (tab.controls.steps.value(), tab.controls.guidance.value()) == (25, 7.0)
    assert tab.controls.scheduler.currentData() == "dpmpp_2m_karras"
    assert "lcm" not in scheduler_names(tab)

    choose_model(tab, qtbot, diffusion_models["turbo"])
    assert "SD 1.x Turbo" in tab.controls.picker.info.text()
    assert (tab.controls.steps.value(), tab.controls.guidance.value()) == (1, 0.0)
    assert tab.controls.scheduler.currentData() == "euler"
    assert "lcm" in scheduler_names(tab)
    assert set(scheduler_names(tab)) == set(SCHEDULER_TITLES)


def test_the_chosen_model_is_remembered_among_the_recent_ones(window, tab, qtbot, diffusion_models):
    choose_model(tab, qtbot, diffusion_models["folder"])
    assert window.ctx.settings.diffusion_model == str(diffusion_models["folder"])
    assert str(diffusion_models["folder"]) in window.ctx.settings.recent_diffusion_models
    assert tab.controls.picker.combo.findData(str(diffusion_models["folder"])) >= 0


def test_a_folder_that_is_not_a_model_is_refused_clearly(window, tab, qtbot, diffusion_models):
    tab.controls.picker.choose(str(diffusion_models["not_a_model"]))
    qtbot.waitUntil(lambda: window.notifications.text() != "", timeout=30_000)
    assert "not a diffusers model folder" in window.notifications.text()
    assert "cannot be used" in tab.controls.picker.info.text()
    assert tab.controls.family is None


def test_an_inpainting_model_is_sent_to_the_inpaint_tab(window, tab, qtbot, diffusion_models):
    choose_model(tab, qtbot, diffusion_models["inpaint_folder"])
    assert "Inpaint tab" in tab.controls.picker.info.text()
    window.run_action.trigger()
    assert "inpainting model" in tab.status.text()
    assert window.ctx.jobs.active() == []


def test_generate_previews_every_step_then_shows_the_image_and_its_seed(
    window, tab, qtbot, diffusion_models
):
    ready(tab, qtbot, diffusion_models["folder"], steps=3, seed=None)
    assert not tab.controls.seed_lock.isChecked()  # random by default
    messages, previews, bars = [], [], []

    def watch(job):
        if job.state == JobState.RUNNING:
            messages.append(job.message)
            bars.append(tab.progress.value())
            if job.preview is not None:
                previews.append(job.preview.shape)

    window.jobs.changed.connect(watch)
    [job] = run_and_wait(window, qtbot)
    assert job.state == JobState.DONE, job.message
    entry = job.result
    assert [m for m in messages if m.startswith("Step")] == ["Step 1/3", "Step 2/3", "Step 3/3"]
    assert previews and all(shape == (32, 32, 3) for shape in previews)  # latent resolution
    assert any(0 < bar < 1000 for bar in bars), bars
    assert tab.view.image().size().toTuple() == (64, 64)
    assert entry.seed == tab.controls.seed.value()
    assert f"seed {entry.seed}" in tab.status.text()
    assert entry.request["prompt"] == "a red cat"
    assert pixels(entry.outputs[0].path).shape == (64, 64, 3)
    assert tab.send_buttons["Inpaint"].isEnabled()


def test_an_unlocked_seed_changes_each_run_and_a_locked_one_does_not(tab):
    seeds = {tab.controls.seed_for_run() for _ in range(3)}
    assert len(seeds) == 3
    tab.controls.seed_lock.setChecked(True)
    assert tab.controls.seed_for_run() == tab.controls.seed_for_run()


def test_several_images_are_separate_entries_with_consecutive_seeds(
    window, tab, qtbot, diffusion_models
):
    ready(tab, qtbot, diffusion_models["folder"], steps=1, seed=100)
    tab.count_spin.setValue(2)
    jobs = run_and_wait(window, qtbot, count=2)
    assert [job.state for job in jobs] == [JobState.DONE, JobState.DONE]
    assert sorted(job.result.seed for job in jobs) == [100, 101]
    assert window.ctx.history.count() == 2
    first, second = (pixels(job.result.outputs[0].path) for job in jobs)
    assert not np.array_equal(first, second)


def test_the_results_strip_shows_and_sends_the_picked_image(window, tab, qtbot, diffusion_models):
    ready(tab, qtbot, diffusion_models["folder"], steps=1, seed=200)
    tab.count_spin.setValue(3)
    jobs = run_and_wait(window, qtbot, count=3)
    entries = {job.result.seed: job.result for job in jobs}

    strip = tab.results
    assert strip.isVisible() and strip.count() == 3
    assert strip.entry_ids()[0] == jobs[-1].result.id  # newest first, and shown
    oldest = entries[200]
    strip.setCurrentRow(strip.entry_ids().index(oldest.id))
    shown = tab.view.image()
    assert (shown.width(), shown.height()) == (64, 64)
    assert shown == load_qimage(oldest.outputs[0].path)
    assert "seed 200" in strip.currentItem().toolTip()

    tab.count_spin.setValue(1)  # another run finishing keeps the older pick on show
    newest = run_and_wait(window, qtbot)[0].result
    assert strip.count() == 4 and strip.entry_ids()[0] == newest.id
    assert strip.currentItem().toolTip().startswith("seed 200")
    assert tab.view.image() == load_qimage(oldest.outputs[0].path)

    tab.send_buttons["Upscale"].click()
    upscale = window.tool_tabs["upscale"]
    assert window.tabs.currentWidget() is upscale
    assert (upscale.input_path, upscale.parent_id) == (oldest.outputs[0].path, oldest.id)


def test_cancelling_mid_run_writes_nothing_and_marks_the_entry(
    window, tab, qtbot, diffusion_models
):
    ready(tab, qtbot, diffusion_models["folder"], steps=50)

    def cancel_after_first_preview(job):
        if job.state == JobState.RUNNING and job.preview is not None:
            tab.cancel_button.click()

    window.jobs.changed.connect(cancel_after_first_preview)
    [job] = run_and_wait(window, qtbot)
    assert job.state == JobState.CANCELLED
    [entry] = window.ctx.history.query()
    assert entry.status == "cancelled" and entry.outputs == ()
    outputs = window.ctx.dirs.data / "outputs"
    assert not [p for p in outputs.rglob("*") if p.is_file()]
    assert "no output" in tab.status.text()
    assert tab.view.image() is None  # the partial preview is not left on show


def test_rerun_from_history_gives_identical_pixels(window, tab, qtbot, diffusion_models):
    ready(tab, qtbot, diffusion_models["folder"])
    [first] = run_and_wait(window, qtbot)
    tab.controls.prompt.setPlainText("something else")
    tab.controls.seed_lock.setChecked(False)
    with qtbot.waitSignal(window.jobs.finished, timeout=120_000) as blocker:
        window.rerun(first.result.id)
    second = blocker.args[0].result
    assert second.id != first.result.id
    assert np.array_equal(pixels(first.result.outputs[0].path), pixels(second.outputs[0].path))
    assert tab.controls.prompt.toPlainText() == "a red cat"  # the widgets show what ran
    assert tab.controls.seed.value() == 11 and tab.controls.seed_lock.isChecked()


def test_a_size_that_is_not_a_multiple_of_8_is_rounded_and_told(tab, qtbot, diffusion_models):
    ready(tab, qtbot, diffusion_models["folder"])
    tab.width_spin.setValue(102)
    assert tab.size_note.isVisible()
    assert "will be rounded to 104x64" in tab.size_note.text()
    [request] = tab.build_requests()
    assert (request.width, request.height) == (104, 64)
    assert tab.width_spin.value() == 104
    assert "102x64 rounded to 104x64" in tab.size_note.text() and tab.size_note.isVisible()


def test_a_prompt_longer_than_the_model_reads_shows_a_warning(window, tab, qtbot, diffusion_models):
    ready(tab, qtbot, diffusion_models["folder"], steps=1)
    tab.controls.prompt.setPlainText("a red cat " * 40)
    [job] = run_and_wait(window, qtbot)
    assert job.state == JobState.DONE, job.message
    assert tab.warning.isVisible()
    assert "ignored the rest" in tab.warning.text()


def test_the_memory_mode_chosen_in_settings_reaches_the_request(
    window, tab, qtbot, diffusion_models
):
    from studio.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(window.ctx.settings, window)
    assert "offload" in dialog.diffusion_memory.toolTip()
    dialog.diffusion_memory.setCurrentText("balanced")
    dialog.output_format.setCurrentText("webp")
    window.ctx.update_settings(dialog.settings())
    ready(tab, qtbot, diffusion_models["folder"])
    [request] = tab.build_requests()
    assert (request.memory, request.output_format) == ("balanced", "webp")
    assert (request.device, request.precision) == ("auto", "auto")


def test_a_single_file_checkpoint_is_read_without_loading_or_downloading(
    tab, qtbot, diffusion_models, tmp_path, monkeypatch
):
    choose_model(tab, qtbot, diffusion_models["file"])
    assert "SD 1.x · native 64 px" in tab.controls.picker.info.text()
    # without its family's configuration in the cache: told, guessed from the tensors, no download
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    choose_model(tab, qtbot, diffusion_models["ckpt"])
    assert "SD 1.x" in tab.controls.picker.info.text()
    assert "download on the first run" in tab.controls.picker.info.text()
    assert not (tmp_path / "empty-cache").exists() or not any((tmp_path / "empty-cache").iterdir())


def test_a_repo_id_is_not_downloaded_by_the_picker(window, tab, qtbot):
    line = tab.controls.picker.combo.lineEdit()
    line.clear()
    qtbot.keyClicks(line, "stabilityai/sd-turbo")
    qtbot.keyClick(line, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: "not downloaded yet" in tab.controls.picker.info.text(), timeout=30_000)
    assert tab.controls.family is None
    assert window.ctx.settings.diffusion_model == "stabilityai/sd-turbo"


def test_ctrl_return_while_typing_the_prompt_generates(window, tab, qtbot, diffusion_models):
    ready(tab, qtbot, diffusion_models["folder"], steps=1)
    tab.controls.prompt.setFocus()
    qtbot.waitUntil(tab.controls.prompt.hasFocus)
    with qtbot.waitSignal(window.jobs.finished, timeout=120_000) as blocker:
        qtbot.keyClick(tab.controls.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert blocker.args[0].state == JobState.DONE
    assert tab.controls.prompt.toPlainText() == "a red cat"  # no line break was typed


def test_get_models_opens_the_models_dialog_and_installed_models_are_listed(
    window, tab, diffusion_models
):
    tab.controls.picker.get_models_button.click()
    assert window.models_dialog.isVisible() and window.models_dialog.tool == "diffusion"
    window.models_dialog.close()
    item = window.models.import_path(diffusion_models["turbo"], copy=False, tool="diffusion")
    window.modelsChanged.emit()
    combo = tab.controls.picker.combo
    index = combo.findData(item.location)
    assert index >= 0 and combo.itemText(index) == item.name
