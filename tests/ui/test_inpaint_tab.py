"""The Inpaint tab on the real window with tiny SD pipelines: paint a mask, repaint only that."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPointF

from studio.app.jobs import JobState
from studio.ui.inpaint_tab import InpaintTab
from studio.ui.main_window import MainWindow


@pytest.fixture
def window(diffusion_window) -> MainWindow:
    return diffusion_window


@pytest.fixture
def tab(window) -> InpaintTab:
    tab = window.tool_tabs["inpaint"]
    window.tabs.setCurrentWidget(tab)
    return tab


@pytest.fixture
def photo(tmp_path) -> Path:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:80, 0:96]
    pixels = np.stack([xx * 2, yy * 3, xx + yy], axis=-1) + rng.integers(0, 30, (80, 96, 3))
    path = tmp_path / "product.png"
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)
    return path


def ready(tab: InpaintTab, qtbot, model: Path, photo: Path) -> None:
    tab.controls.picker.choose(str(model))
    qtbot.waitUntil(lambda: tab.controls.family is not None, timeout=30_000)
    tab.open_image(photo)
    tab.controls.prompt.setPlainText("a blue button")
    tab.controls.steps.setValue(2)
    tab.controls.seed.setValue(5)
    tab.controls.seed_lock.setChecked(True)


def paint(tab: InpaintTab) -> np.ndarray:
    tab.canvas.set_brush_size(12)
    tab.canvas.paint_stroke([QPointF(30, 30), QPointF(50, 40)])
    return tab.canvas.mask() > 0


def run_and_wait(window: MainWindow, qtbot):
    with qtbot.waitSignal(window.jobs.finished, timeout=120_000) as blocker:
        window.run_action.trigger()  # Ctrl+Return
    return blocker.args[0]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("model", ["folder", "inpaint_folder"])
def test_painted_area_is_repainted_and_every_other_pixel_is_unchanged(
    window, tab, qtbot, diffusion_models, photo, model
):
    ready(tab, qtbot, diffusion_models[model], photo)
    masked = paint(tab)
    assert 0 < masked.sum() < masked.size // 4
    job = run_and_wait(window, qtbot)
    assert job.state == JobState.DONE, job.message
    entry = job.result
    before, after = pixels(photo), pixels(entry.outputs[0].path)
    assert after.shape == before.shape
    assert np.array_equal(after[~masked], before[~masked])
    assert not np.array_equal(after[masked], before[masked])
    assert len(entry.inputs) == 2  # the photo and the painted mask, both kept by the history
    assert np.array_equal(pixels(entry.inputs[1].path)[..., 0] > 127, masked)
    assert not list((window.ctx.dirs.cache / "masks").iterdir())  # the temporary mask is gone
    assert tab.pages.currentWidget() is tab.view
    assert tab.view.image().size().toTuple() == (96, 80)


def test_the_default_strength_follows_the_kind_of_model(tab, qtbot, diffusion_models):
    for model, strength in (("inpaint_folder", 1.0), ("folder", 0.75)):
        tab.controls.picker.choose(str(diffusion_models[model]))
        qtbot.waitUntil(lambda: tab.controls.family is not None, timeout=30_000)
        assert tab.strength.value() == strength, model


def test_without_an_image_or_a_mask_the_tab_says_what_to_do(
    window, tab, qtbot, diffusion_models, photo
):
    window.run_action.trigger()
    assert "Choose a model first" in tab.status.text()
    tab.controls.picker.choose(str(diffusion_models["folder"]))
    window.run_action.trigger()
    assert "Open an image first" in tab.status.text()
    tab.open_image(photo)
    window.run_action.trigger()
    assert "mask is empty" in tab.status.text()
    paint(tab)
    tab.controls.steps.setValue(1)
    tab.strength.setValue(0.75)
    window.run_action.trigger()
    assert "no denoising step" in tab.status.text()
    assert window.ctx.history.count() == 0


def test_rerun_from_history_gives_identical_pixels_and_shows_the_mask(
    window, tab, qtbot, diffusion_models, photo
):
    ready(tab, qtbot, diffusion_models["folder"], photo)
    masked = paint(tab)
    first = run_and_wait(window, qtbot).result
    tab.canvas.clear_mask()
    with qtbot.waitSignal(window.jobs.finished, timeout=120_000) as blocker:
        window.rerun(first.id)
    second = blocker.args[0].result
    assert second.id != first.id
    assert np.array_equal(pixels(first.outputs[0].path), pixels(second.outputs[0].path))
    assert np.array_equal(tab.canvas.mask() > 0, masked)


def test_a_generated_image_sent_to_inpaint_keeps_its_lineage(window, tab, qtbot, diffusion_models):
    generate = window.tool_tabs["generate"]
    window.tabs.setCurrentWidget(generate)
    generate.controls.picker.choose(str(diffusion_models["folder"]))
    qtbot.waitUntil(lambda: generate.controls.family is not None, timeout=30_000)
    generate.controls.prompt.setPlainText("a mug")
    generate.controls.steps.setValue(1)
    made = run_and_wait(window, qtbot).result
    generate.send_buttons["Inpaint"].click()
    assert window.tabs.currentWidget() is tab
    assert tab.input_path == made.outputs[0].path and tab.parent_id == made.id
    # the model chosen in Generate is the one Inpaint starts with
    qtbot.waitUntil(lambda: tab.controls.family is not None, timeout=30_000)
    assert tab.controls.picker.reference == str(diffusion_models["folder"])
    tab.controls.prompt.setPlainText("a handle")
    tab.controls.steps.setValue(2)
    paint(tab)
    fixed = run_and_wait(window, qtbot).result
    assert fixed.parent_id == made.id


def test_the_transparent_part_of_a_photo_can_be_the_mask(
    window, tab, qtbot, diffusion_models, tmp_path
):
    rgba = np.zeros((64, 72, 4), np.uint8)
    rgba[..., :3] = np.random.default_rng(4).integers(0, 255, (64, 72, 3), np.uint8)
    rgba[..., 3] = 255
    rgba[20:36, 24:44, 3] = 0  # a hole cut out of the product photo
    photo = tmp_path / "cut-out.png"
    Image.fromarray(rgba).save(photo)
    ready(tab, qtbot, diffusion_models["inpaint_folder"], photo)
    assert "From alpha" in tab.status.text()
    assert tab.canvas.mask_from_alpha()
    hole = rgba[..., 3] == 0
    assert np.array_equal(tab.canvas.mask() > 0, hole)
    job = run_and_wait(window, qtbot)
    assert job.state == JobState.DONE, job.message
    out = np.asarray(Image.open(job.result.outputs[0].path))
    assert out.shape == (64, 72, 4)
    assert np.array_equal(out[~hole], rgba[~hole])
    assert (out[hole][:, 3] > 0).all()  # the repainted hole is no longer transparent


def test_the_working_resolution_reaches_the_request_and_comes_back_on_rerun(
    window, tab, qtbot, diffusion_models, photo
):
    ready(tab, qtbot, diffusion_models["folder"], photo)
    masked = paint(tab)
    assert tab.working_resolution() == 0  # the model's own, by default
    assert not tab.resolution.isEnabled()
    assert tab.resolution.value() == tab.controls.family.native  # a custom one starts there
    tab.native_resolution.setChecked(False)
    tab.resolution.setValue(100)
    assert tab.working_resolution() == 96  # a multiple of 8, as the model needs
    job = run_and_wait(window, qtbot)
    assert job.state == JobState.DONE, job.message
    after = pixels(job.result.outputs[0].path)
    assert np.array_equal(after[~masked], pixels(photo)[~masked])
    assert window.ctx.history.get(job.result.id).request["resolution"] == 96

    tab.native_resolution.setChecked(True)
    with qtbot.waitSignal(window.jobs.finished, timeout=120_000):
        window.rerun(job.result.id)
    assert not tab.native_resolution.isChecked()
    assert tab.working_resolution() == 96
