"""The Grade engine: colour matching and learnt edits with flows, LUT files, presets, requests.

Pictures are procedural: smooth random colour fields with a fine texture, so every test can make
as many different "photos" as it needs, with colours spread through the sRGB cube.
"""

import json
import struct
import warnings
from dataclasses import replace
from io import BytesIO

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms
from safetensors.torch import load_file, save_file

from studio.engines import color
from studio.engines.base import Cancelled, EngineError
from studio.engines.color import (
    delta_e_2000,
    is_srgb_profile,
    oklab_to_srgb_array,
    srgb_profile_bytes,
    srgb_to_cielab,
    srgb_to_oklab_array,
    to_srgb,
)
from studio.engines.grade import (
    FlowGrade,
    FlowSettings,
    Grade,
    GradeRequest,
    fit_grade,
    fit_match,
    fit_pair,
    likelihood_map,
    likelihood_preview,
    preset_file,
    run,
)
from studio.engines.lut import CubeError, CubeLUT, identity_lut, read_cube, write_cube
from studio.imaging import Picture, file_sha256, load_picture, save_picture
from studio.models.cache import ModelCache

with warnings.catch_warnings():  # colour-science warns that optional packages are missing
    warnings.simplefilter("ignore")
    import colour

FAST = FlowSettings(iterations=40)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- Pictures -----------------------------------------------------------------------------------


def photo(seed: int, height: int = 96, width: int = 128) -> np.ndarray:
    """A procedural photo (H, W, 3) in [0, 1]: smooth colour fields plus a fine texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = []
    for _ in range(3):
        field = np.zeros_like(x)
        for _ in range(4):
            fx, fy = rng.uniform(-3, 3, 2)
            field += rng.uniform(0.5, 1) * np.sin(2 * np.pi * (fx * x + fy * y) + rng.uniform(0, 7))
        field += 0.2 * np.sin(2 * np.pi * rng.uniform(15, 25) * (x + y))
        channels.append(field)
    return (1 / (1 + np.exp(-1.3 * np.stack(channels, axis=-1)))).astype(np.float32)


def picture(pixels: np.ndarray, **metadata) -> Picture:
    return Picture(np.ascontiguousarray(pixels, dtype=np.float32), **metadata)


def warm(pixels: np.ndarray) -> np.ndarray:
    """A reference look: warm, contrasty, a little desaturated in the shadows."""
    return np.clip(pixels**1.3 * np.array([1.08, 0.95, 0.7]) + [0.03, 0.02, 0.0], 0, 1)


def synthetic_edit(rgb: np.ndarray) -> np.ndarray:
    """The known grade to learn: an S-curve, a channel mix and +25% saturation."""
    curved = 0.03 + 0.94 * (0.5 * (3 * rgb**2 - 2 * rgb**3) + 0.5 * rgb)
    mix = np.array([[0.9, 0.1, 0.0], [0.05, 0.9, 0.05], [0.0, 0.15, 0.85]], dtype=np.float32)
    mixed = curved @ mix.T
    grey = mixed.mean(-1, keepdims=True)
    return np.clip(grey + 1.25 * (mixed - grey), 0, 1).astype(np.float32)


def mean_delta_e(a: np.ndarray, b: np.ndarray) -> float:
    return float(delta_e_2000(srgb_to_cielab(a), srgb_to_cielab(b)).mean())


def sliced_wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """Sliced Wasserstein-2 distance between the OKLab colours of two pictures."""
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(3, 64))
    directions /= np.linalg.norm(directions, axis=0)
    labs = [
        srgb_to_oklab_array(p.reshape(-1, 3))[rng.integers(0, p.size // 3, 8000)] for p in (a, b)
    ]
    projected = [np.sort(lab @ directions, axis=0) for lab in labs]
    return float(np.sqrt(np.mean((projected[0] - projected[1]) ** 2)))


def adobe_to_srgb(rgb: np.ndarray) -> np.ndarray:
    """colour-science's conversion, clipped to the sRGB gamut as LittleCMS does."""
    converted = colour.RGB_to_RGB(
        rgb, "Adobe RGB (1998)", "sRGB", apply_cctf_decoding=True, apply_cctf_encoding=True
    )
    return np.clip(converted, 0, 1)


def adobe_rgb_profile() -> bytes:
    """A minimal ICC v2 matrix/TRC profile for Adobe RGB (1998): D50 colorants, gamma 563/256."""

    def xyz(values: tuple[float, float, float]) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(struct.pack(">i", round(v * 65536)) for v in values)

    description = b"Adobe RGB (1998) test profile\0"
    tags = {
        b"desc": b"desc\0\0\0\0"
        + struct.pack(">I", len(description))
        + description
        + b"\0" * 8
        + b"\0\0\0"
        + b"\0" * 67,
        b"cprt": b"text\0\0\0\0no copyright\0",
        b"wtpt": xyz((0.9642, 1.0, 0.8249)),
        b"rXYZ": xyz((0.60974, 0.31111, 0.01947)),
        b"gXYZ": xyz((0.20528, 0.62567, 0.06087)),
        b"bXYZ": xyz((0.14919, 0.06322, 0.74457)),
        b"rTRC": b"curv\0\0\0\0" + struct.pack(">IH", 1, 563) + b"\0\0",
    }
    tags[b"gTRC"] = tags[b"bTRC"] = tags[b"rTRC"]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags.items():
        body += b"\0" * (-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = struct.pack(">I4sI4s4s4s", size, b"lcms", 0x02100000, b"mntr", b"RGB ", b"XYZ ")
    header += b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0)
    header += b"".join(struct.pack(">i", round(v * 65536)) for v in (0.9642, 1.0, 0.8249))
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + data


# --- Fitted grades shared by several tests ------------------------------------------------------


@pytest.fixture(scope="module")
def match(one_torch_thread) -> FlowGrade:
    """The colours of photo 1 matched to a warm reference made from photo 2."""
    return fit_match(picture(photo(1)), picture(warm(photo(2))), FlowSettings(iterations=150))


@pytest.fixture(scope="module")
def pair(one_torch_thread) -> FlowGrade:
    """The synthetic edit, learnt from photo 10 and its edited version (default settings)."""
    before = photo(10, 128, 128)
    return fit_pair(picture(before), picture(synthetic_edit(before)))


# --- Colour science -----------------------------------------------------------------------------


def test_oklab_matches_published_values_and_colour_science():
    rgb = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    expected = [
        [1.0, 0.0, 0.0],
        [0.62796, 0.22486, 0.12585],
        [0.86644, -0.23389, 0.17950],
        [0.45201, -0.03246, -0.31153],
    ]
    assert np.allclose(srgb_to_oklab_array(rgb), expected, atol=2e-4)
    samples = np.random.default_rng(0).random((500, 3)).astype(np.float32)
    theirs = colour.convert(samples, "sRGB", "Oklab")
    assert np.abs(srgb_to_oklab_array(samples) - theirs).max() < 1e-3
    assert np.abs(oklab_to_srgb_array(srgb_to_oklab_array(samples)) - samples).max() < 1e-4


def test_delta_e_2000_matches_sharma_test_data_and_colour_science():
    pairs = [  # Sharma, Wu & Dalal (2005), table 1
        ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
        ((50.0, 3.1571, -77.2803), (50.0, 0.0, -82.7485), 2.8615),
        ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
        ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0009), 7.1792),
        ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
        ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
        ((2.0776, 0.0795, -1.135), (0.9033, -0.0636, -0.5514), 0.9082),
    ]
    for first, second, expected in pairs:
        assert delta_e_2000(np.array(first), np.array(second)) == pytest.approx(expected, abs=1e-4)
    rng = np.random.default_rng(1)
    a = rng.uniform([0, -80, -80], [100, 80, 80], (1000, 3))
    b = a + rng.normal(0, 5, (1000, 3))
    assert np.allclose(delta_e_2000(a, b), colour.delta_E(a, b, method="CIE 2000"), atol=1e-6)


def test_an_embedded_adobe_rgb_profile_is_converted_to_srgb():
    rgb = np.random.default_rng(2).random((32, 32, 3)).astype(np.float32)
    rgb = (np.rint(rgb * 255) / 255).astype(np.float32)
    expected = adobe_to_srgb(rgb)
    for bit_depth in (8, 16):
        converted = to_srgb(picture(rgb, bit_depth=bit_depth, icc_profile=adobe_rgb_profile()))
        assert is_srgb_profile(converted.icc_profile)
        assert np.abs(converted.pixels - expected).max() < 1.5 / 255
    untouched = picture(rgb, icc_profile=srgb_profile_bytes())
    assert to_srgb(untouched) is untouched


def test_16_bit_pictures_with_table_profiles_convert_through_cielab():
    """The path of profiles that are not matrix/TRC: LittleCMS to CIELAB on a grid, then float."""
    rgb = np.random.default_rng(3).random((32, 32, 3)).astype(np.float32)
    profile = ImageCms.ImageCmsProfile(BytesIO(adobe_rgb_profile()))
    error = np.abs(color._transform_through_table(profile, rgb) - adobe_to_srgb(rgb))
    assert error.mean() < 0.5 / 255 and np.quantile(error, 0.99) < 3 / 255


# --- Matching a reference -----------------------------------------------------------------------


def test_grading_a_photo_to_itself_is_near_identity():
    source = picture(photo(3))
    grade = fit_match(source, source, FlowSettings(iterations=100))
    assert mean_delta_e(grade.apply(source).pixels, source.pixels) < 1.0


def test_matching_brings_the_colours_to_the_reference(match):
    source, reference = photo(1), warm(photo(2))
    graded = match.apply(picture(source)).pixels
    before = sliced_wasserstein(source, reference)
    assert sliced_wasserstein(graded, reference) < 0.35 * before


def test_strength_interpolates_from_identity_and_extrapolates_beyond(match):
    identity = identity_lut(17)
    assert np.array_equal(match.bake_lut(17, strength=0.0), identity)
    distances = [np.abs(match.bake_lut(17, strength=s) - identity).mean() for s in (0.5, 1, 1.5)]
    assert 0 < distances[0] < distances[1] < distances[2]


def test_preserve_luminance_keeps_the_oklab_lightness(match):
    source = picture(photo(4))
    graded = match.apply(source, preserve_luminance=True).pixels
    lightness = [srgb_to_oklab_array(p.reshape(-1, 3))[:, 0] for p in (source.pixels, graded)]
    assert np.median(np.abs(lightness[0] - lightness[1])) < 0.005
    changed = match.apply(source).pixels
    assert np.abs(srgb_to_oklab_array(changed.reshape(-1, 3))[:, 0] - lightness[0]).mean() > 0.02


def test_likelihood_map_flags_colours_the_reference_lacks(match):
    source = photo(1)
    source[:, 64:] = [0.1, 0.2, 0.9]  # a saturated blue the warm reference never shows
    log_density = likelihood_map(picture(source), match)
    assert log_density.shape == source.shape[:2] and log_density.dtype == np.float32
    assert np.median(log_density[:, :64]) > np.median(log_density[:, 64:]) + 5
    preview = likelihood_preview(log_density, match)
    assert preview.shape == (*source.shape[:2], 3) and preview.dtype == np.uint8
    assert preview[:, 64:].mean() > preview[:, :64].mean() + 50  # brighter where colours are new


def test_same_seed_and_settings_give_a_bit_identical_grade():
    source, reference = picture(photo(5)), picture(warm(photo(6)))
    first = fit_match(source, reference, FlowSettings(iterations=20, seed=3))
    second = fit_match(source, reference, FlowSettings(iterations=20, seed=3))
    other = fit_match(source, reference, FlowSettings(iterations=20, seed=4))
    assert np.array_equal(first.bake_lut(17), second.bake_lut(17))
    for key, value in first.flow.state_dict().items():
        assert torch.equal(value, second.flow.state_dict()[key])
    assert not np.array_equal(first.bake_lut(17), other.bake_lut(17))


# --- Learning an edit from a before/after pair --------------------------------------------------


def test_synthetic_grade_is_recovered_from_one_pair_with_delta_e_below_2(pair):
    for seed in (11, 12, 13):
        other = photo(seed)
        learnt = pair.apply(picture(other)).pixels
        assert mean_delta_e(learnt, synthetic_edit(other)) < 2.0


def test_the_inverse_of_a_learnt_edit_undoes_it(pair):
    lab = torch.from_numpy(srgb_to_oklab_array(photo(14).reshape(-1, 3))).double()
    with torch.no_grad():
        edited = pair.graded_oklab(lab)
        undone = pair.inverted().graded_oklab(edited)
    assert (edited - lab).abs().max() > 0.02
    assert (undone - lab).abs().max() < 1e-4
    other = picture(photo(14))
    round_trip = pair.inverted().apply(pair.apply(other), lut_size=65).pixels
    assert mean_delta_e(round_trip, other.pixels) < 0.5


def test_mismatched_pair_sizes_are_refused():
    with pytest.raises(EngineError, match="differ in size"):
        fit_pair(picture(photo(1, 64, 64)), picture(photo(1, 64, 80)), FAST)


def test_a_pair_of_different_photos_is_refused():
    with pytest.raises(EngineError, match="same photo"):
        fit_pair(picture(photo(1)), picture(photo(2)), FAST)


def test_a_grey_reference_is_refused_asking_for_a_colour_one():
    grey = photo(2).mean(-1, keepdims=True)
    for reference in (grey, np.repeat(grey, 3, axis=-1)):
        with pytest.raises(EngineError, match="colour reference is needed"):
            fit_match(picture(photo(1)), picture(reference), FAST)


# --- Presets ------------------------------------------------------------------------------------


def test_a_saved_grade_bakes_the_same_lut(match, pair, tmp_path):
    for grade in (match, pair, pair.inverted()):
        weights, document = grade.save(tmp_path / grade.kind)
        assert weights.suffix == ".safetensors" and document.suffix == ".json"
        loaded = Grade.load(document)
        assert loaded.name == grade.name
        assert np.array_equal(loaded.bake_lut(17, 0.7), grade.bake_lut(17, 0.7))
        assert np.array_equal(Grade.load(weights).bake_lut(9), grade.bake_lut(9))


def test_an_exported_cube_is_read_by_colour_science_as_the_same_grade(match, tmp_path):
    path = match.export_cube(tmp_path / "look.cube", size=17, strength=0.8)
    theirs = colour.read_LUT(str(path))
    assert theirs.size == 17 and "flow match" in theirs.name
    assert np.abs(theirs.table - match.bake_lut(17, 0.8)).max() < 1e-6


def test_a_run_keeps_its_lut_and_a_preset_that_regrades_without_fitting(files, tmp_path):
    result = run(pair_request(files, iterations=20))
    entry_folder = tmp_path / "outputs"
    entry_folder.mkdir()
    written: list = []

    def next_output(suffix: str):
        written.append(entry_folder / f"7-{len(written) + 1}{suffix}")
        return written[-1]

    result.write_extras(next_output)
    assert [p.suffix for p in written] == [".cube", ".safetensors", ".json"]
    assert np.abs(read_cube(written[0]).table - result.lut).max() < 1e-6
    again = run(GradeRequest(files["input"], "preset", preset_path=str(written[2])))
    assert np.array_equal(again.picture.pixels, result.picture.pixels)
    assert sorted(entry_folder.iterdir()) == sorted(written)  # no temporary files left


def test_damaged_or_missing_presets_are_refused(match, tmp_path):
    weights, document = match.save(tmp_path / "look")
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(EngineError, match="does not match"):
        Grade.load(document)
    with pytest.raises(EngineError, match="no saved grade"):
        Grade.load(tmp_path / "absent.json")
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(EngineError, match="not a Studio grade"):
        Grade.load(tmp_path / "other.json")


def test_hostile_presets_are_refused_with_a_reason(match, tmp_path):
    weights, document = match.save(tmp_path / "look")
    described = json.loads(document.read_text())
    for bad in ({"weights": ""}, {"weights": "../look.safetensors"}, {"weights": "."}):
        document.write_text(json.dumps({**described, **bad}))
        with pytest.raises(EngineError, match="weights file beside it"):
            Grade.load(document)
    document.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(EngineError, match="not a readable saved grade"):
        Grade.load(document)

    tensors = load_file(weights)
    huge = {**described, "flow": {**described["flow"], "hidden": 1_000_000}}
    alone = tmp_path / "huge.safetensors"
    save_file(tensors, alone, metadata={"studio_grade": json.dumps(huge)})
    with pytest.raises(EngineError, match="hidden 1000000 is outside"):
        Grade.load(alone)
    odd = tmp_path / "odd.safetensors"
    save_file(tensors, odd, metadata={"studio_grade": json.dumps({**described, "version": "1"})})
    with pytest.raises(EngineError, match="its version is '1'"):
        Grade.load(odd)
    nested = tmp_path / "nested.safetensors"
    save_file(tensors, nested, metadata={"studio_grade": "[" * 100_000 + "]" * 100_000})
    with pytest.raises(EngineError, match="no saved grade"):  # not a whole preset, and no .json
        Grade.load(nested)


def test_a_presets_safetensors_alone_is_the_whole_grade(match, tmp_path):
    weights, document = match.save(tmp_path / "look")
    copy = tmp_path / "elsewhere" / "3f9a.safetensors"  # as the history stores it: renamed, alone
    copy.parent.mkdir()
    copy.write_bytes(weights.read_bytes())
    document.unlink()
    weights.unlink()
    assert preset_file(copy) == copy
    assert np.array_equal(Grade.load(copy).bake_lut(9), match.bake_lut(9))
    stem = copy.with_suffix("")
    assert np.array_equal(Grade.load(stem).bake_lut(9), match.bake_lut(9))
    upper = copy.rename(copy.with_name("LOOK.SAFETENSORS"))
    assert np.array_equal(Grade.load(upper).bake_lut(9), match.bake_lut(9))


def test_a_preset_saved_before_its_weights_carried_the_description_still_loads(match, tmp_path):
    weights, document = match.save(tmp_path / "old")
    save_file(load_file(weights), weights)  # the weights as the first version wrote them
    described = json.loads(document.read_text())
    described["weights_sha256"] = file_sha256(weights)
    document.write_text(json.dumps(described))
    assert preset_file(document) == document and preset_file(weights) == document
    assert np.array_equal(Grade.load(weights).bake_lut(9), match.bake_lut(9))
    document.unlink()
    with pytest.raises(EngineError, match="no saved grade"):
        Grade.load(weights)


# --- Requests and runs --------------------------------------------------------------------------


def test_request_round_trips_through_its_dict():
    request = GradeRequest("in.png", "pair", before_path="b.png", after_path="a.png", seed=4)
    data = request.to_dict()
    assert data["tool"] == "grade"
    assert GradeRequest.from_dict({**data, "from_the_future": 1}) == request
    assert request.input_paths() == ["in.png", "b.png", "a.png"]
    assert [getattr(request, name) for name in request.image_fields if getattr(request, name)] == [
        "in.png",
        "b.png",
        "a.png",
    ]
    assert GradeRequest.from_dict({"input_path": "x.png", "mode": "lut", "lut_path": "l.cube"})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "paint"}, "unknown grade mode"),
        ({"mode": "reference"}, "needs reference path"),
        ({"mode": "pair", "before_path": "b.png"}, "needs after path"),
        ({"strength": 2.5}, "strength must be between 0 and 2"),
        ({"strength": "strong"}, "strength must be a number"),
        ({"lut_size": 20}, "lut_size must be one of 17, 33, 65"),
        ({"iterations": 0}, "iterations must be between"),
        ({"hidden": True}, "hidden must be a whole number"),
        ({"seed": -1}, "seed must be between"),
        ({"device": "tpu"}, "unknown device"),
        ({"interpolation": "cubic"}, "unknown interpolation"),
        ({"output_format": "gif"}, "unknown output format"),
    ],
)
def test_invalid_requests_say_what_is_wrong(values, message):
    data = {"input_path": "in.png", "mode": "lut", "lut_path": "l.cube", **values}
    with pytest.raises(EngineError, match=message):
        GradeRequest.from_dict(data)


@pytest.fixture
def files(tmp_path):
    """Input, reference, before and after pictures on disk."""
    paths = {}
    for name, pixels in {
        "input": photo(20),
        "reference": warm(photo(21)),
        "before": photo(22),
        "after": synthetic_edit(photo(22)),
    }.items():
        paths[name] = str(save_picture(picture(pixels), tmp_path / f"{name}.png"))
    return paths


def pair_request(files: dict[str, str], **values) -> GradeRequest:
    return GradeRequest(
        files["input"], "pair", before_path=files["before"], after_path=files["after"], **values
    )


def test_run_matches_a_reference_reporting_progress_and_facts(files):
    reports = []
    request = GradeRequest(
        files["input"], "reference", reference_path=files["reference"], iterations=40, seed=2
    )
    result = run(request, progress=lambda f, m, preview=None: reports.append((f, m)))
    assert result.picture.pixels.shape == (96, 128, 3)
    assert result.lut.shape == (33, 33, 33, 3)
    assert ("Fitting source and reference flows 10/40") in [m for _, m in reports]
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] < 1
    facts = result.facts
    assert (facts.model_name, facts.seed, facts.device, facts.dtype) == (
        "flow match",
        2,
        "cpu",
        "fp32",
    )
    assert {"seconds_fit", "seconds_apply", "lut_size", "reference_nll"} <= facts.extra.keys()
    assert result.pictures == [result.picture]


def test_a_cached_grade_is_not_fitted_again(files):
    cache = ModelCache()
    request = pair_request(files, iterations=30)
    first = run(request, cache=cache)
    reports = []
    again = run(
        replace(request, strength=0.5), cache=cache, progress=lambda f, m, p=None: reports.append(m)
    )
    assert again.grade is first.grade
    assert not any(m.startswith("Fitting") for m in reports)


def test_run_keeps_alpha_16_bits_and_exif(tmp_path, pair):
    rgba = np.concatenate([photo(30), np.linspace(0, 1, 96 * 128).reshape(96, 128, 1)], axis=-1)
    exif = Image.Exif()
    exif[0x010F] = "Studio test camera"
    path = save_picture(
        picture(rgba, bit_depth=16, exif=b"Exif\0\0" + exif.tobytes()), tmp_path / "in.png"
    )
    _, preset = pair.save(tmp_path / "edit")
    result = run(GradeRequest(str(path), "preset", preset_path=str(preset)))
    out = result.picture
    original = load_picture(path)
    assert out.bit_depth == 16 and out.channels == 4
    assert np.array_equal(out.pixels[..., 3], original.pixels[..., 3])
    assert out.exif == original.exif
    expected = pair.apply(original).pixels
    assert np.abs(out.pixels - expected).max() < 1e-6
    assert np.abs(out.pixels[..., :3] - original.pixels[..., :3]).mean() > 0.02


def test_run_converts_a_non_srgb_input_and_says_so(tmp_path):
    rgb = photo(31)
    path = save_picture(picture(rgb, icc_profile=adobe_rgb_profile()), tmp_path / "adobe.png")
    cube = write_cube(tmp_path / "id.cube", CubeLUT(identity_lut(33)))
    out = run(GradeRequest(str(path), "lut", lut_path=str(cube))).picture
    assert is_srgb_profile(out.icc_profile) and out.icc_profile != adobe_rgb_profile()
    expected = adobe_to_srgb(load_picture(path).pixels)
    assert np.abs(out.pixels - expected).max() < 2.5 / 255


def test_a_cube_file_is_applied_and_a_malformed_one_refused(files, tmp_path):
    table = identity_lut(17)[..., ::-1].copy()  # swap red and blue
    cube = write_cube(tmp_path / "swap.cube", CubeLUT(table, title="Swap red and blue"))
    source = load_picture(files["input"]).pixels
    for interpolation in ("trilinear", "tetrahedral"):
        request = GradeRequest(
            files["input"], "lut", lut_path=str(cube), interpolation=interpolation
        )
        result = run(request)
        assert np.abs(result.picture.pixels - source[..., ::-1]).max() < 1e-5
    assert result.facts.model_name == "Swap red and blue" and result.facts.model_sha256
    broken = tmp_path / "broken.cube"
    broken.write_text("LUT_3D_SIZE 17\n0 0 0\n")
    with pytest.raises(CubeError, match="needs 4913 table lines, found 1"):
        run(GradeRequest(files["input"], "lut", lut_path=str(broken)))


def test_run_refuses_a_grey_reference(files, tmp_path):
    grey = save_picture(picture(photo(40).mean(-1, keepdims=True)), tmp_path / "grey.png")
    request = GradeRequest(files["input"], "reference", reference_path=str(grey), iterations=10)
    with pytest.raises(EngineError, match="colour reference is needed"):
        run(request)


def test_cancelling_stops_the_fit(files):
    request = GradeRequest(files["input"], "reference", reference_path=files["reference"])
    with pytest.raises(Cancelled):
        run(request, cancelled=lambda: True)


def test_fit_grade_returns_the_grade_of_each_mode(files, tmp_path, match):
    assert fit_grade(pair_request(files, iterations=10)).kind == "pair"
    _, preset = match.save(tmp_path / "m")
    assert (
        fit_grade(GradeRequest(files["input"], "preset", preset_path=str(preset))).kind == "match"
    )
    cube = write_cube(tmp_path / "id.cube", CubeLUT(identity_lut(5)))
    assert fit_grade(GradeRequest(files["input"], "lut", lut_path=str(cube))).kind == "cube"
