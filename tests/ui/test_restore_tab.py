"""The Restore tab in the real main window: restore, edit the mask, variations, cancel, re-run."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPointF
from tiny_models import make_compact, make_drunet, make_restore_vae, make_restoreformer

from studio.app.jobs import JobState
from studio.ui.main_window import MainWindow


@pytest.fixture
def photo(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:80, 0:96]
    pixels = np.stack([xx * 2, yy * 3, (xx + yy) * 1], axis=-1) + rng.integers(0, 30, (80, 96, 3))
    path = tmp_path / "grandparents.png"
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def vae(tmp_path) -> Path:
    return make_restore_vae(tmp_path / "tiny-restore-vae.safetensors")


@pytest.fixture
def window(main_window) -> MainWindow:
    return main_window


@pytest.fixture
def tab(window, qtbot, photo, vae):
    tab = window.tool_tabs["restore"]
    window.tabs.setCurrentWidget(tab)
    tab.open_image(photo)
    tab.set_model(vae)
    qtbot.waitUntil(lambda: tab.model_info is not None, timeout=20_000)
    return tab


def run_and_wait(window, qtbot, timeout: int = 60_000):
    with qtbot.waitSignal(window.jobs.finished, timeout=timeout) as blocker:
        window.run_action.trigger()
    return blocker.args[0]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_restoring_shows_the_split_view_variations_uncertainty_and_mask(window, tab, qtbot):
    assert "StudioRestoreVAE" in tab.model_label.text()
    tab.variations_spin.setValue(2)
    tab.seed_spin.setValue(11)
    job = run_and_wait(window, qtbot)
    assert job.state == JobState.DONE, job.message
    entry = job.result
    assert entry.tool == "restore"
    assert entry.facts["outputs"] == ["restored", "variation 1", "uncertainty", "damage mask"]
    assert len(entry.outputs) == 4
    assert entry.seed == 11
    assert tab.view.image().width() == 96
    assert tab.view._before is not None  # the input, left of the split
    assert [tab.variation_combo.itemText(i) for i in range(2)] == ["Best guess", "Variation 1"]
    tab.variation_combo.setCurrentIndex(1)
    shown = tab.view.image().convertToFormat(tab.view.image().Format.Format_RGB888)
    variation = pixels(entry.outputs[1].path)
    shown_pixels = np.frombuffer(shown.constBits(), np.uint8).reshape(80, shown.bytesPerLine())
    np.testing.assert_array_equal(shown_pixels[:, : 96 * 3].reshape(80, 96, 3), variation)
    assert tab.uncertainty_view.image() is not None
    # the mask the run filled is now the editable overlay
    filled = np.asarray(Image.open(entry.outputs[3].path)) > 127
    np.testing.assert_array_equal(tab.mask_canvas.mask() > 0, filled)


def test_painting_the_mask_changes_exactly_the_painted_pixels(window, tab, qtbot):
    tab.mask_canvas.paint_stroke([QPointF(10, 40), QPointF(80, 40)])
    first = run_and_wait(window, qtbot).result
    assert first.request["mask_path"] is not None
    assert len(first.inputs) == 2  # the history keeps its own copy of the painted mask
    before_mask = tab.mask_canvas.mask() > 0
    tab.mask_canvas.paint_stroke([QPointF(48, 5), QPointF(48, 30)])
    after_mask = tab.mask_canvas.mask() > 0
    second = run_and_wait(window, qtbot).result
    changed = (pixels(first.outputs[0].path) != pixels(second.outputs[0].path)).any(axis=2)
    assert changed.any()
    assert not changed[~(before_mask | after_mask)].any()
    added = after_mask & ~before_mask
    assert changed[added].mean() > 0.8


def test_cancelling_a_running_restore_leaves_no_output(window, tab, qtbot, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (320, 320, 3), np.uint8)).save(big)
    tab.open_image(big)
    tab.tile_spin.setValue(64)

    def cancel_once_running(job):
        if job.state == JobState.RUNNING and job.fraction > 0:
            window.cancel_action.trigger()

    window.jobs.changed.connect(cancel_once_running)
    job = run_and_wait(window, qtbot)
    assert job.state == JobState.CANCELLED
    entries = window.ctx.history.query()
    assert [e.status for e in entries] == ["cancelled"]
    assert entries[0].outputs == ()
    assert "no output" in tab.status.text()


def test_rerun_from_history_shows_the_settings_and_gives_the_same_pixels(window, tab, qtbot):
    tab.strength_slider.setValue(0.6)
    tab.denoise_slider.setValue(0.4)
    tab.colour_check.setChecked(True)
    tab.variations_spin.setValue(2)
    tab.seed_spin.setValue(5)
    tab.ensemble_combo.setCurrentIndex(tab.ensemble_combo.findData(4))
    tab.mask_canvas.paint_stroke([QPointF(5, 5), QPointF(60, 70)])
    first = run_and_wait(window, qtbot).result
    assert first.request["ensemble"] == 4
    tab.strength_slider.setValue(1.0)
    tab.colour_check.setChecked(False)
    tab.ensemble_combo.setCurrentIndex(0)
    tab.mask_canvas.clear_mask()
    with qtbot.waitSignal(window.jobs.finished, timeout=60_000) as blocker:
        window.rerun(first.id)
    second = blocker.args[0].result
    assert tab.strength_slider.value() == pytest.approx(0.6)
    assert tab.colour_check.isChecked()
    assert tab.seed_spin.value() == 5
    assert tab.ensemble_combo.currentData() == 4
    assert tab.mask_canvas.has_mask()
    for a, b in zip(first.outputs, second.outputs, strict=True):
        np.testing.assert_array_equal(pixels(a.path), pixels(b.path))


def test_a_result_sent_back_to_restore_records_its_parent(window, tab, qtbot):
    first = run_and_wait(window, qtbot).result
    window.send_to(first.id, "Restore")
    assert tab.parent_id == first.id
    second = run_and_wait(window, qtbot).result
    assert second.parent_id == first.id


def test_an_upscaler_is_refused_with_a_pointer_to_the_upscale_tab(window, tab, qtbot, tmp_path):
    upscaler = make_compact(tmp_path / "x4.safetensors", scale=4)
    tab.set_model(upscaler)
    qtbot.waitUntil(lambda: "Upscale tab" in window.notifications.text(), timeout=20_000)
    assert tab.model_info is None


def test_the_controls_follow_what_the_chosen_model_can_do(window, tab, qtbot, tmp_path, vae):
    tab.ensemble_combo.setCurrentIndex(tab.ensemble_combo.findData(8))
    tab.set_model(make_drunet(tmp_path / "drunet.safetensors"))
    qtbot.waitUntil(lambda: getattr(tab.model_info, "architecture", "") == "DRUNet", timeout=20_000)
    assert not tab.scratches_check.isEnabled() and not tab.variations_spin.isEnabled()
    request = tab.build_request()  # the scratches box is still ticked, but not for this model
    assert request.fix_scratches is False and request.variations == 1 and request.ensemble == 8

    tab.set_model(make_restoreformer(tmp_path / "restoreformer.pth"))
    qtbot.waitUntil(lambda: getattr(tab.model_info, "faces", False), timeout=20_000)
    assert tab.ensemble_combo.currentData() == 2  # upright faces: as they are and mirrored
    offered = [
        tab.ensemble_combo.itemData(row)
        for row in range(tab.ensemble_combo.count())
        if tab.ensemble_combo.model().item(row).isEnabled()
    ]
    assert offered == [1, 2]
    assert not tab.seed_row.isEnabled()  # RestoreFormer draws nothing: the seed changes nothing
    assert not tab.tile_spin.isEnabled()  # each face is restored whole

    tab.set_model(vae)
    qtbot.waitUntil(
        lambda: getattr(tab.model_info, "architecture", "") == "StudioRestoreVAE", timeout=20_000
    )
    assert tab.scratches_check.isEnabled() and tab.build_request().fix_scratches
    assert all(tab.ensemble_combo.model().item(r).isEnabled() for r in range(4))
    assert tab.ensemble_combo.currentData() == 8  # given back: this model can take them
    assert tab.seed_row.isEnabled() and tab.tile_spin.isEnabled()
