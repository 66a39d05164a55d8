"""`studio grade` on the command line: reference match, learnt pair, .cube LUTs, presets, errors."""

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from studio.cli import main
from studio.engines.lut import read_cube
from studio.imaging import file_sha256

FAST = ["--iterations", "30", "--layers", "2", "--hidden", "16"]


def photo(path, tint, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:40]
    base = np.stack([xx / 40, yy / 32, (xx + yy) / 72], axis=-1) * 0.6 + 0.2
    pixels = np.clip(base * np.array(tint) + rng.normal(0, 0.03, base.shape), 0, 1)
    Image.fromarray((pixels * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def images(tmp_path):
    return {
        "source": photo(tmp_path / "source.png", (1.0, 1.0, 1.0), 0),
        "warm": photo(tmp_path / "warm.png", (1.3, 0.95, 0.6), 1),
    }


def mean_colour(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(0)


def test_matching_a_reference_moves_colours_and_exports_the_lut(tmp_path, images):
    out, cube = tmp_path / "out", tmp_path / "look.cube"
    args = ["grade", str(images["source"]), "--reference", str(images["warm"]), "-o", str(out)]
    assert main([*args, "--export-lut", str(cube), "--lut-size", "17", *FAST]) == 0
    graded = out / "source_grade.png"
    before, after, target = (mean_colour(p) for p in (images["source"], graded, images["warm"]))
    assert np.abs(after - target).sum() < np.abs(before - target).sum()
    assert read_cube(cube).size == 17


def test_a_learnt_pair_and_a_lut_apply_to_other_photos(tmp_path, images):
    before = images["source"]
    after = tmp_path / "after.png"
    edited = np.asarray(Image.open(before), dtype=np.float64) * [1.0, 0.9, 0.7]
    Image.fromarray(edited.astype(np.uint8)).save(after)
    other = photo(tmp_path / "other.png", (0.9, 1.0, 1.1), 5)
    out = tmp_path / "out"
    assert (
        main(["grade", str(other), "--pair", str(before), str(after), "-o", str(out), *FAST]) == 0
    )
    graded = mean_colour(out / "other_grade.png")
    original = mean_colour(other)
    assert graded[2] < original[2] - 10, "the learnt edit (less blue) was not carried over"
    cube = tmp_path / "identity.cube"
    grid = np.linspace(0, 1, 5)
    b, g, r = np.meshgrid(grid, grid, grid, indexing="ij")
    rows = "\n".join(
        f"{rv:.6f} {gv:.6f} {bv:.6f}"
        for rv, gv, bv in zip(r.ravel(), g.ravel(), b.ravel(), strict=True)
    )
    cube.write_text(f"LUT_3D_SIZE 5\n{rows}\n")
    assert main(["grade", str(other), "--lut", str(cube), "-o", str(tmp_path / "lut")]) == 0
    assert np.allclose(mean_colour(tmp_path / "lut" / "other_grade.png"), original, atol=1.5)


def test_the_grade_is_stored_with_the_entry_and_applies_as_a_preset(tmp_path, images, capsys):
    out = tmp_path / "out"
    args = ["grade", str(images["source"]), "--reference", str(images["warm"]), "-o", str(out)]
    assert main([*args, *FAST]) == 0
    capsys.readouterr()
    main(["history", "list", "--json"])
    entry = json.loads(capsys.readouterr().out.splitlines()[0])
    suffixes = sorted(p.rsplit(".", 1)[1] for p in entry["outputs"])
    assert suffixes == ["cube", "json", "png", "safetensors"]
    preset = next(p for p in entry["outputs"] if p.endswith(".json"))
    again = tmp_path / "again"
    assert main(["grade", str(images["source"]), "--preset", preset, "-o", str(again)]) == 0
    first = np.asarray(Image.open(out / "source_grade.png"))
    second = np.asarray(Image.open(again / "source_grade.png"))
    assert np.array_equal(first, second)


def test_bad_inputs_fail_with_one_line_reasons(tmp_path, images, capsys):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((32, 40), 128, np.uint8)).save(grey)
    src = str(images["source"])
    out = str(tmp_path / "out")
    assert main(["grade", src, "--reference", str(grey), "-o", out, *FAST]) == 1
    assert "colour reference is needed" in capsys.readouterr().err
    small = tmp_path / "small.png"
    Image.new("RGB", (8, 8)).save(small)
    assert main(["grade", src, "--pair", src, str(small), "-o", out]) == 1
    err = capsys.readouterr().err
    assert "size" in err.lower()
    broken = tmp_path / "broken.cube"
    broken.write_text("LUT_3D_SIZE 3\n0 0 0\n")
    assert main(["grade", src, "--lut", str(broken), "-o", out]) == 1
    assert "broken.cube" in capsys.readouterr().err
    assert main(["grade", src, "-o", out]) == 1
    assert "exactly one of" in capsys.readouterr().err


def test_rerun_of_a_fitted_grade_applies_the_stored_fit_and_reproduces_it(tmp_path, images):
    from studio.app.context import AppContext
    from studio.app.runs import execute, request_from_entry
    from studio.engines.grade import GradeRequest
    from studio.progress import never_cancelled, no_progress

    ctx = AppContext.open()
    try:
        request = GradeRequest(
            input_path=str(images["source"]),
            mode="reference",
            reference_path=str(images["warm"]),
            iterations=30,
            coupling_layers=2,
            hidden=16,
        )
        first = execute(ctx, request, progress=no_progress, cancelled=never_cancelled)
        rerun = request_from_entry(first)
        assert rerun.mode == "preset" and rerun.preset_path.endswith(".json")
        assert rerun.input_path == str(first.inputs[0].path)
        second = execute(ctx, rerun, progress=no_progress, cancelled=never_cancelled)
    finally:
        ctx.close()
    a = np.asarray(Image.open(first.outputs[0].path))
    assert np.array_equal(a, np.asarray(Image.open(second.outputs[0].path)))


@pytest.fixture
def context():
    from studio.app.context import AppContext

    ctx = AppContext.open()
    yield ctx
    ctx.close()


def executed(ctx, request, parent_id=None):
    from studio.app.runs import execute
    from studio.progress import never_cancelled, no_progress

    return execute(
        ctx, request, progress=no_progress, cancelled=never_cancelled, parent_id=parent_id
    )


def pixels(entry):
    return np.asarray(Image.open(entry.outputs[0].path))


def test_a_preset_and_a_lut_are_stored_with_the_entry_and_rerun_without_the_originals(
    tmp_path, images, context
):
    from studio.app.runs import request_from_entry
    from studio.engines.grade import GradeRequest, fit_match
    from studio.imaging import load_picture

    look = fit_match(load_picture(images["source"]), load_picture(images["warm"]))
    preset_files = look.save(tmp_path / "look")
    cube = look.export_cube(tmp_path / "look.cube", size=9)
    with_preset = executed(
        context,
        GradeRequest(str(images["source"]), "preset", preset_path=str(preset_files[1])),
    )
    with_lut = executed(context, GradeRequest(str(images["source"]), "lut", lut_path=str(cube)))
    assert [item.original_name for item in with_preset.inputs] == ["source.png", "look.safetensors"]
    assert [item.original_name for item in with_lut.inputs] == ["source.png", "look.cube"]
    for path in (*preset_files, cube):
        path.unlink()

    for first in (with_preset, with_lut):
        again = executed(context, request_from_entry(first))
        assert np.array_equal(pixels(again), pixels(first))
        assert again.model_name == first.model_name


def test_a_batch_child_reruns_after_the_grade_it_used_is_deleted(tmp_path, images, context):
    from studio.app.runs import request_from_entry
    from studio.engines.grade import GradeRequest

    fitted = executed(
        context,
        GradeRequest(
            str(images["source"]),
            "reference",
            reference_path=str(images["warm"]),
            iterations=30,
            coupling_layers=2,
            hidden=16,
        ),
    )
    preset = next(p.path for p in fitted.outputs if p.path.suffix == ".json")
    other = photo(tmp_path / "other.png", (0.9, 1.0, 1.1), 5)
    request = replace(
        GradeRequest.from_dict(fitted.request),
        input_path=str(other),
        mode="preset",
        preset_path=str(preset),
        reference_path=None,
    )
    child = executed(context, request, parent_id=fitted.id)  # as "Apply to a batch" queues it
    context.history.delete(fitted.id)
    assert not preset.exists()

    again = executed(context, request_from_entry(context.history.get(child.id)))
    assert np.array_equal(pixels(again), pixels(child))


def as_first_saved(document):
    """Rewrite a preset as the first version saved it: weights without the description."""
    described = json.loads(document.read_text())
    weights = document.with_name(described["weights"])
    save_file(load_file(weights), weights)
    described["weights_sha256"] = file_sha256(weights)
    document.write_text(json.dumps(described))


def test_a_preset_that_was_not_stored_reruns_from_where_it_is(tmp_path, images, context):
    from studio.app.runs import request_from_entry
    from studio.engines.grade import GradeRequest, fit_match
    from studio.imaging import load_picture

    look = fit_match(load_picture(images["source"]), load_picture(images["warm"]))
    _, document = look.save(tmp_path / "look")
    request = GradeRequest(str(images["source"]), "preset", preset_path=str(document))
    direct = executed(context, request)
    # an entry recorded before presets were stored: only its image was kept
    recorded = context.history.start("grade", request.to_dict(), [images["source"]])
    _, older = look.save(tmp_path / "older")
    as_first_saved(older)  # a two-file preset cannot be stored as one file
    with_older = executed(context, replace(request, preset_path=str(older)))
    assert [item.original_name for item in with_older.inputs] == ["source.png"]

    for entry, preset in ((context.history.get(recorded), document), (with_older, older)):
        rerun = request_from_entry(entry)
        assert rerun.preset_path == str(preset)
        assert rerun.input_path == str(entry.inputs[0].path)  # the stored copy
        assert np.array_equal(pixels(executed(context, rerun)), pixels(direct))
