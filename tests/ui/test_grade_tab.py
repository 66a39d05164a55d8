"""The Grade tab on the real window, offscreen: match a reference, learn an edit, apply a LUT,
export and reuse a fitted grade, the likelihood map, and bad input refused with a clear message.

Flows are fitted small (2 layers, 16 wide, 30 steps) on tiny pictures, so each fit takes a second.
"""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from studio.app.context import AppContext
from studio.app.jobs import JobState
from studio.ui.colour_plots import HUE_MARKERS, ChromaPlot, sample_chroma
from studio.ui.grade_tab import NO_LIKELIHOOD, GradeTab
from studio.ui.main_window import MainWindow

HEIGHT, WIDTH = 24, 32


# -- pictures ------------------------------------------------------------------------------------
def save(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


def pixels_of(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def scene(seed: int, cast: tuple[float, float, float]) -> np.ndarray:
    """A textured colourful picture with a colour cast (multipliers for r, g, b)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([xx * 5 + 40, yy * 6 + 50, (xx + yy) * 3 + 60], axis=-1).astype(np.float64)
    base += rng.integers(0, 24, (HEIGHT, WIDTH, 3))
    return base * np.array(cast)


def mean_colour(path: Path) -> np.ndarray:
    return pixels_of(path).reshape(-1, 3).mean(0)


def swap_red_blue_cube(path: Path) -> Path:
    """A 2-point .cube written by hand as other tools write it: red index fastest."""
    rows = [f"{b} {g} {r}" for b in (0, 1) for g in (0, 1) for r in (0, 1)]
    path.write_text('TITLE "swap"\nLUT_3D_SIZE 2\n' + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def cool(tmp_path) -> Path:
    return save(tmp_path / "cool.png", scene(1, (0.6, 0.9, 1.4)))


@pytest.fixture
def warm(tmp_path) -> Path:
    return save(tmp_path / "warm.png", scene(2, (1.5, 1.0, 0.55)))


# -- the window ----------------------------------------------------------------------------------
@pytest.fixture
def window(qtbot):
    def wait_for_plots_and_maps(window: MainWindow) -> None:
        qtbot.waitUntil(lambda: not grade_tab(window).busy(), timeout=30_000)

    window = MainWindow(AppContext.open())
    qtbot.addWidget(window, before_close_func=wait_for_plots_and_maps)
    window.show()
    yield window
    window.close()
    window.ctx.close()


def grade_tab(window: MainWindow) -> GradeTab:
    return window.tool_tabs["grade"]


@pytest.fixture
def tab(window) -> GradeTab:
    tab = grade_tab(window)
    window.tabs.setCurrentWidget(tab)
    tab.layers_spin.setValue(2)
    tab.hidden_spin.setValue(16)
    tab.iterations_spin.setValue(30)
    tab.lut_size.setCurrentIndex(tab.lut_size.findData(17))
    return tab


def run_and_wait(window: MainWindow, qtbot, timeout: int = 60_000):
    """Run the Grade tab and wait for that job (not an earlier one) to finish."""
    submitted = []

    def is_ours(job) -> bool:
        return bool(submitted) and job.id == submitted[0].id

    with qtbot.waitSignal(
        window.jobs.finished, timeout=timeout, check_params_cb=is_ours
    ) as blocker:
        submitted.append(grade_tab(window).run())
        assert submitted[0] is not None, grade_tab(window).status.text()
    return blocker.args[0]


def output(entry, suffix: str) -> Path:
    paths = [o.path for o in entry.outputs if o.path.suffix == suffix]
    assert paths, f"entry #{entry.id} has no {suffix} output: {[o.path for o in entry.outputs]}"
    return paths[0]


def choose_lut(tab: GradeTab, cube: Path) -> None:
    tab.set_mode("lut")
    tab.set_file("lut", cube)


# -- matching a reference ------------------------------------------------------------------------
def test_matching_a_reference_moves_the_colours_toward_it_and_keeps_the_grade(
    window, tab, qtbot, cool, warm
):
    tab.open_image(cool)
    tab.set_file("reference", warm)
    statuses = []
    window.jobs.changed.connect(lambda job: statuses.append(tab.status.text()))
    job = run_and_wait(window, qtbot)
    assert job.state == JobState.DONE, job.message
    entry = job.result
    assert window.ctx.history.get(entry.id).status == "done"
    assert entry.request["mode"] == "reference"
    for suffix in (".png", ".json", ".safetensors", ".cube"):
        assert output(entry, suffix).is_file()

    source, reference, result = (
        mean_colour(cool),
        mean_colour(warm),
        mean_colour(output(entry, ".png")),
    )
    distance_before = np.linalg.norm(source - reference)
    assert np.linalg.norm(result - reference) < 0.25 * distance_before, (source, reference, result)
    assert any("Fitting" in text for text in statuses), statuses
    assert f"entry #{entry.id}" in tab.status.text()

    shown = tab.view.image()
    assert (shown.width(), shown.height()) == (WIDTH, HEIGHT)
    pixel = shown.pixelColor(3, 5)
    assert [pixel.red(), pixel.green(), pixel.blue()] == list(
        pixels_of(output(entry, ".png"))[5, 3]
    )
    qtbot.waitUntil(
        lambda: all(
            p.samples() is not None for p in (tab.source_plot, tab.reference_plot, tab.result_plot)
        ),
        timeout=30_000,
    )
    reddish = tab.result_plot.samples().ab[:, 0].mean()
    assert reddish > tab.source_plot.samples().ab[:, 0].mean()  # OKLab a: toward red
    assert tab.export_lut_button.isEnabled() and tab.batch_button.isEnabled()


def test_the_likelihood_map_marks_source_colours_the_reference_lacks(window, tab, qtbot, tmp_path):
    rng = np.random.default_rng(3)
    orange = np.array([220.0, 130.0, 60.0]) + rng.normal(0, 12, (HEIGHT, WIDTH, 3))
    reference = save(tmp_path / "sunset.png", orange)
    source_pixels = np.array(orange)
    source_pixels[:, : WIDTH // 2] = np.array([40.0, 190.0, 80.0]) + rng.normal(
        0, 6, (HEIGHT, WIDTH // 2, 3)
    )
    source = save(tmp_path / "half-green.png", source_pixels)
    tab.open_image(source)
    tab.set_file("reference", reference)
    assert not tab.likelihood_button.isEnabled()
    job = run_and_wait(window, qtbot)
    assert job.state == JobState.DONE, job.message

    qtbot.waitUntil(tab.likelihood_button.isEnabled, timeout=30_000)
    tab.likelihood_button.click()
    assert tab.showing() == "likelihood"
    assert tab.legend.isVisible() and tab.legend.has_ramp()
    heat = tab.view.image()
    assert (heat.width(), heat.height()) == (WIDTH, HEIGHT)
    brightness = np.array(
        [[heat.pixelColor(x, y).lightness() for x in range(WIDTH)] for y in range(HEIGHT)], float
    )
    green_half, orange_half = brightness[:, : WIDTH // 2].mean(), brightness[:, WIDTH // 2 :].mean()
    assert green_half > orange_half + 100, (green_half, orange_half)

    tab.result_button.click()
    assert tab.showing() == "result"
    assert not tab.legend.isVisible()


def test_cancelling_a_fit_leaves_no_output(window, tab, qtbot, cool, warm):
    tab.open_image(cool)
    tab.set_file("reference", warm)
    tab.iterations_spin.setValue(5000)

    def cancel_once_fitting(job):
        if job.state == JobState.RUNNING and job.fraction > 0:
            window.cancel_action.trigger()

    window.jobs.changed.connect(cancel_once_fitting)
    job = run_and_wait(window, qtbot)
    assert job.state == JobState.CANCELLED
    assert [e.status for e in window.ctx.history.query(tool="grade")] == ["cancelled"]
    assert "no output" in tab.status.text()


# -- reusing a fitted grade ----------------------------------------------------------------------
def test_a_fitted_grade_exports_a_cube_saves_a_preset_and_grades_a_batch_without_refitting(
    window, tab, qtbot, tmp_path, cool, warm
):
    from studio.engines.grade import Grade
    from studio.engines.lut import read_cube

    tab.open_image(cool)
    tab.set_file("reference", warm)
    fitted = run_and_wait(window, qtbot)
    entry = fitted.result

    tab.choose_save_path = lambda caption, suggested, filters: tmp_path / "teal.cube"
    tab.export_lut()
    assert read_cube(tmp_path / "teal.cube").size == 17

    tab.choose_save_path = lambda caption, suggested, filters: tmp_path / "presets" / "teal"
    (tmp_path / "presets").mkdir()
    tab.save_preset()
    assert (tmp_path / "presets" / "teal.safetensors").is_file()
    assert Grade.load(tmp_path / "presets" / "teal.json").kind == "match"
    assert "teal.json" in window.notifications.text()

    other = save(tmp_path / "other.png", scene(7, (0.7, 1.0, 1.2)))
    tab.choose_open_paths = lambda caption, filters: [cool, other]
    finished = []
    window.jobs.finished.connect(lambda job: finished.append(job) if job.id != fitted.id else None)
    tab.apply_to_batch()
    qtbot.waitUntil(lambda: len({job.id for job in finished}) == 2, timeout=60_000)
    assert all(job.state == JobState.DONE for job in finished), [j.message for j in finished]
    batch = {Path(job.result.request["input_path"]).name: job.result for job in finished}
    for graded in batch.values():
        assert graded.request["mode"] == "preset"
        assert graded.request["preset_path"] == str(output(entry, ".json"))
        assert graded.parent_id == entry.id
    again = pixels_of(output(batch["cool.png"], ".png"))
    assert np.array_equal(again, pixels_of(output(entry, ".png"))), "the stored grade changed"
    assert "Batch finished: 2 graded" in tab.status.text()


def test_rerun_from_history_restores_every_setting_and_the_same_pixels(
    window, tab, qtbot, tmp_path, cool
):
    cube = swap_red_blue_cube(tmp_path / "swap.cube")
    tab.open_image(cool)
    choose_lut(tab, cube)
    tab.strength.setValue(70)
    tab.preserve_luminance.setChecked(True)
    tab.seed_spin.setValue(2**40 + 3)
    request = tab.build_request()
    first_job = run_and_wait(window, qtbot)
    first = first_job.result

    tab.strength.setValue(100)
    tab.preserve_luminance.setChecked(False)
    tab.set_mode("reference")
    with qtbot.waitSignal(
        window.jobs.finished, timeout=60_000, check_params_cb=lambda job: job.id != first_job.id
    ) as blocker:
        window.rerun(first.id)
    second = blocker.args[0].result
    assert tab.mode() == "lut" and tab.strength.value() == 70
    assert tab.build_request().seed == request.seed == 2**40 + 3
    assert tab.preserve_luminance.isChecked()
    assert np.array_equal(pixels_of(output(first, ".png")), pixels_of(output(second, ".png")))


# -- learning an edit, applying a LUT ------------------------------------------------------------
def test_a_before_after_edit_is_learnt_and_carried_to_another_photo(window, tab, qtbot, tmp_path):
    def edit(pixels: np.ndarray) -> np.ndarray:  # warmer and a little brighter
        return pixels * np.array([1.12, 1.0, 0.8]) + np.array([14.0, 6.0, 0.0])

    before = scene(4, (1.0, 1.0, 1.0))
    save(tmp_path / "before.png", before)
    save(tmp_path / "after.png", edit(before))
    photo = scene(5, (0.9, 1.0, 1.1))
    source = save(tmp_path / "photo.png", photo)
    tab.open_image(source)
    tab.set_mode("pair")
    tab.set_file("before", tmp_path / "before.png")
    tab.set_file("after", tmp_path / "after.png")
    tab.iterations_spin.setValue(60)
    job = run_and_wait(window, qtbot)
    assert job.state == JobState.DONE, job.message

    result = mean_colour(output(job.result, ".png"))
    wanted = np.clip(edit(photo), 0, 255).reshape(-1, 3).mean(0)
    start = photo.reshape(-1, 3).mean(0)
    assert np.linalg.norm(result - wanted) < 0.25 * np.linalg.norm(start - wanted), (
        start,
        wanted,
        result,
    )
    assert tab.reference_plot.title() == "After"
    assert not tab.likelihood_button.isEnabled()
    assert tab.likelihood_button.toolTip() == NO_LIKELIHOOD


def test_a_cube_lut_made_elsewhere_is_applied(window, tab, qtbot, tmp_path, cool):
    tab.open_image(cool)
    choose_lut(tab, swap_red_blue_cube(tmp_path / "swap.cube"))
    assert not tab.advanced.isEnabled(), "a LUT is not fitted: the flow settings do not apply"
    job = run_and_wait(window, qtbot)
    assert job.state == JobState.DONE, job.message
    graded = pixels_of(output(job.result, ".png"))
    assert np.abs(graded - pixels_of(cool)[..., ::-1]).max() <= 1


def test_strength_zero_leaves_the_photo_as_it_was(window, tab, qtbot, tmp_path, cool):
    assert tab.strength.value() == 100
    tab.open_image(cool)
    choose_lut(tab, swap_red_blue_cube(tmp_path / "swap.cube"))
    tab.strength.setValue(0)
    job = run_and_wait(window, qtbot)
    assert job.state == JobState.DONE, job.message
    assert np.abs(pixels_of(output(job.result, ".png")) - pixels_of(cool)).max() <= 1


# -- bad input -----------------------------------------------------------------------------------
def grey_reference(tab: GradeTab, tmp_path: Path) -> None:
    grey = scene(6, (1.0, 1.0, 1.0)).mean(-1, keepdims=True).repeat(3, -1)
    tab.set_file("reference", save(tmp_path / "grey.png", grey))


def pair_of_different_sizes(tab: GradeTab, tmp_path: Path) -> None:
    tab.set_mode("pair")
    tab.set_file("before", save(tmp_path / "before.png", scene(4, (1, 1, 1))))
    tab.set_file("after", save(tmp_path / "after.png", scene(4, (1, 1, 1))[:, :-8]))


def malformed_cube(tab: GradeTab, tmp_path: Path) -> None:
    broken = tmp_path / "broken.cube"
    broken.write_text("LUT_3D_SIZE 2\n0 0 0\n1 0 banana\n")
    choose_lut(tab, broken)


@pytest.mark.parametrize(
    ("choose_bad_input", "message"),
    [
        (grey_reference, "greyscale"),
        (pair_of_different_sizes, "differ in size"),
        (malformed_cube, "broken.cube"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message_and_the_app_keeps_running(
    window, tab, qtbot, tmp_path, cool, choose_bad_input, message
):
    tab.open_image(cool)
    choose_bad_input(tab, tmp_path)
    tab.run()
    qtbot.waitUntil(lambda: message in window.notifications.text(), timeout=60_000)
    assert not window.ctx.history.query(status="done")

    choose_lut(tab, swap_red_blue_cube(tmp_path / "swap.cube"))
    assert run_and_wait(window, qtbot).state == JobState.DONE


# -- the widgets ---------------------------------------------------------------------------------
def test_the_untouched_widgets_ask_for_the_engines_default_grade(window, cool, warm):
    from studio.engines.grade import LUT_SIZES, GradeRequest

    tab = grade_tab(window)
    tab.open_image(cool)
    tab.set_file("reference", warm)
    assert [tab.lut_size.itemData(i) for i in range(tab.lut_size.count())] == list(LUT_SIZES)
    request = tab.build_request()
    assert request == GradeRequest(
        input_path=str(cool),
        mode="reference",
        reference_path=str(warm),
        output_format=window.ctx.settings.output_format,
        quality=window.ctx.settings.jpeg_quality,
        device=window.ctx.settings.device,
    )


def test_ctrl_enter_on_the_grade_tab_runs_the_grade(window, tab):
    window.run_action.trigger()
    assert "Open an image first" in tab.status.text()


def test_the_seed_is_always_shown_and_the_dice_picks_another(tab):
    tab.advanced.collapse(animate=False)
    assert tab.seed_spin.isVisible()
    seed = tab.seed_spin.value()
    tab.dice_button.click()
    assert tab.seed_spin.value() != seed


def test_dropping_an_image_and_a_cube_on_the_tab(tab, tmp_path, cool):
    def drop(path: Path) -> None:
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(path))])
        event = QDropEvent(
            QPointF(10, 10),
            Qt.DropAction.CopyAction,
            mime,
            Qt.MouseButton.LeftButton,
            Qt.KeyboardModifier.NoModifier,
        )
        tab.dropEvent(event)

    drop(cool)
    assert tab.input_path == cool
    cube = swap_red_blue_cube(tmp_path / "swap.cube")
    drop(cube)
    assert tab.mode() == "lut" and tab.files["lut"] == cube


def test_the_chroma_plot_draws_each_colour_at_its_oklab_hue(qtbot, tmp_path):
    from studio.engines.color import srgb_to_oklab_array

    primaries = np.array([rgb for _, rgb, _, _ in HUE_MARKERS], np.float32) / 255
    expected = srgb_to_oklab_array(primaries)[:, 1:]
    assert np.allclose([(a, b) for *_, a, b in HUE_MARKERS], expected, atol=1e-3)

    red = save(tmp_path / "red.png", np.full((8, 8, 3), (255, 0, 0)))
    samples = sample_chroma(red)
    assert np.allclose(samples.ab, expected[0], atol=1e-3)
    plot = ChromaPlot("Red")
    qtbot.addWidget(plot)
    plot.resize(200, 220)
    plot.set_samples(samples)
    point = plot.plot_position(*samples.ab[0])
    centre = plot.plot_position(0.0, 0.0)
    assert point.x() > centre.x() and point.y() < centre.y()  # +a right, +b up
    drawn = plot.grab().toImage().pixelColor(round(point.x()), round(point.y()))
    assert (drawn.red(), drawn.green(), drawn.blue()) == (255, 0, 0)
