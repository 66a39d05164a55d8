"""The Restore engine: tiling, seeds and variations, mask editing, bad inputs, user models."""

import io

import numpy as np
import pytest
from PIL import Image
from tiny_models import make_compact, make_drunet, make_restore_vae

from studio.engines.base import Cancelled, EngineError
from studio.engines.restore import RestoreRequest, apply_levels, colour_levels, run
from studio.imaging import ImageError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    return make_restore_vae(tmp_path_factory.mktemp("models") / "tiny-vae.safetensors")


def photo(tmp_path, height=72, width=88, name="photo.png", seed=1):
    """A smooth picture with texture and noise: something for a restorer to work on."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([0.3 + 0.4 * x, 0.5 + 0.3 * np.sin(6 * y), 0.6 - 0.3 * x * y], axis=2)
    pixels = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
    path = tmp_path / name
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(path)
    return path


def mask_file(tmp_path, mask, name="mask.png"):
    path = tmp_path / name
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return path


def scratch_mask(height=72, width=88):
    mask = np.zeros((height, width), bool)
    mask[30:33, 5:80] = True
    mask[10:60, 40:42] = True
    return mask


def restore(path, model, **options):
    return run(RestoreRequest(str(path), str(model), device="cpu", **options))


def test_tiled_restore_matches_untiled_within_2_levels(tmp_path, vae):
    path = photo(tmp_path, 150, 190)
    mask = np.zeros((150, 190), bool)
    mask[70:74, 10:180] = True
    options = dict(fix_scratches=True, mask_path=str(mask_file(tmp_path, mask)), variations=2)
    whole = restore(path, vae, tile=0, **options)
    tiled = restore(path, vae, tile=64, **options)
    assert tiled.tile == 64
    for untiled_picture, tiled_picture in zip(whole.pictures, tiled.pictures, strict=True):
        difference = np.abs(untiled_picture.pixels - tiled_picture.pixels)
        assert difference.max() <= 2 / 255
    assert np.abs(whole.uncertainty - tiled.uncertainty).max() <= 2 / 255


def test_a_prefiltered_vae_still_tiles_invisibly(tmp_path):
    vae = make_restore_vae(tmp_path / "prefiltered.safetensors", prefilter=5.0)
    path = photo(tmp_path, 140, 150)
    plain = restore(path, make_restore_vae(tmp_path / "plain.safetensors"), tile=0)
    whole = restore(path, vae, tile=0)
    tiled = restore(path, vae, tile=64)
    assert np.abs(whole.pictures[0].pixels - tiled.pictures[0].pixels).max() <= 2 / 255
    assert np.abs(whole.pictures[0].pixels - plain.pictures[0].pixels).max() > 2 / 255


def test_same_seed_gives_the_same_pixels_and_variations_differ(tmp_path, vae):
    path = photo(tmp_path)
    first = restore(path, vae, seed=7, variations=3)
    again = restore(path, vae, seed=7, variations=3)
    other = restore(path, vae, seed=8, variations=3)
    assert len(first.pictures) == 3
    for a, b in zip(first.pictures, again.pictures, strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)
    np.testing.assert_array_equal(first.uncertainty, again.uncertainty)
    # picture 0 is the posterior mean whatever the seed; the samples follow the seed
    np.testing.assert_array_equal(first.pictures[0].pixels, other.pictures[0].pixels)
    assert np.abs(first.pictures[1].pixels - first.pictures[2].pixels).max() > 2 / 255
    assert np.abs(first.pictures[1].pixels - other.pictures[1].pixels).max() > 2 / 255
    assert first.facts.seed == 7


def test_editing_the_mask_changes_exactly_the_masked_region(tmp_path, vae):
    path = photo(tmp_path)
    painted = scratch_mask()
    edited = painted.copy()
    edited[50:56, 10:30] = True  # the user paints over one more blemish...
    edited[30:33, 60:80] = False  # ...and erases part of a stroke that was not a scratch
    before = restore(path, vae, fix_scratches=True, mask_path=str(mask_file(tmp_path, painted)))
    after = restore(
        path, vae, fix_scratches=True, mask_path=str(mask_file(tmp_path, edited, "edited.png"))
    )
    unmasked = restore(path, vae)
    changed = np.abs(before.pictures[0].pixels - after.pictures[0].pixels).max(axis=2) > 0
    outside = ~(painted | edited)
    assert not changed[outside].any()
    assert changed[edited & ~painted].mean() > 0.9
    assert changed[painted & ~edited].mean() > 0.9
    # outside the mask, the result is the plain restoration: the mask only decides what is filled
    np.testing.assert_array_equal(
        after.pictures[0].pixels[outside], unmasked.pictures[0].pixels[outside]
    )
    np.testing.assert_array_equal(after.damage_mask, edited)


def test_filled_pixels_do_not_depend_on_what_was_under_the_mask(tmp_path, vae):
    mask = scratch_mask()
    clean = photo(tmp_path)
    pixels = np.asarray(Image.open(clean)).copy()
    pixels[mask] = 255  # a white scratch
    scratched = tmp_path / "scratched.png"
    Image.fromarray(pixels).save(scratched)
    mask_path = str(mask_file(tmp_path, mask))
    from_clean = restore(clean, vae, fix_scratches=True, mask_path=mask_path)
    from_scratched = restore(scratched, vae, fix_scratches=True, mask_path=mask_path)
    inside = mask[..., None].repeat(3, axis=2)
    np.testing.assert_allclose(
        from_clean.pictures[0].pixels[inside], from_scratched.pictures[0].pixels[inside], atol=1e-6
    )


def test_strength_blends_with_the_original_and_zero_gives_it_back(tmp_path, vae):
    path = photo(tmp_path)
    original = np.asarray(Image.open(path), dtype=np.float32) / 255
    none = restore(path, vae, strength=0.0)
    full = restore(path, vae, strength=1.0)
    half = restore(path, vae, strength=0.5)
    np.testing.assert_allclose(none.pictures[0].pixels, original, atol=1e-6)
    expected = (original + full.pictures[0].pixels) / 2
    np.testing.assert_allclose(half.pictures[0].pixels, expected, atol=1e-5)


def test_denoise_zero_keeps_the_grain_but_still_fills_the_mask(tmp_path, vae):
    path = photo(tmp_path)
    original = np.asarray(Image.open(path), dtype=np.float32) / 255
    mask = scratch_mask()
    result = restore(
        path, vae, denoise=0.0, fix_scratches=True, mask_path=str(mask_file(tmp_path, mask))
    )
    pixels = result.pictures[0].pixels
    np.testing.assert_allclose(pixels[~mask], original[~mask], atol=1e-6)
    assert np.abs(pixels[mask] - original[mask]).max() > 0.01


def test_detected_damage_is_returned_and_recorded(tmp_path, vae):
    result = restore(photo(tmp_path), vae, fix_scratches=True)
    assert result.damage_mask is not None and result.damage_mask.shape == (72, 88)
    assert result.uncertainty.shape == (72, 88)
    assert result.facts.extra["outputs"] == ["restored", "uncertainty", "damage mask"]
    assert 0 <= result.facts.extra["damage_fraction"] <= 1


def test_colour_cast_correction_restores_faded_levels():
    rng = np.random.default_rng(0)
    truth = rng.random((64, 64, 3)).astype(np.float32)
    faded = truth * np.array([0.7, 0.6, 0.5], np.float32) + np.array([0.2, 0.25, 0.3], np.float32)
    corrected = apply_levels(faded, colour_levels(faded))
    assert np.abs(corrected - truth).mean() < 0.02
    flat = np.full((16, 16, 3), 0.4, np.float32)
    assert np.isfinite(apply_levels(flat, colour_levels(flat))).all()


def test_colour_correction_runs_in_the_engine(tmp_path, vae):
    rng = np.random.default_rng(2)
    faded = (0.3 + 0.4 * rng.random((40, 48, 3)) * np.array([1.0, 0.9, 0.7])) * 255
    path = tmp_path / "faded.png"
    Image.fromarray(faded.round().astype(np.uint8)).save(path)
    result = restore(path, vae, colour_correction=True)
    pixels = result.pictures[0].pixels
    assert pixels.min() < 0.05 and pixels.max() > 0.95


def test_cancel_before_the_first_tile_raises_cancelled(tmp_path, vae):
    with pytest.raises(Cancelled):
        run(RestoreRequest(str(photo(tmp_path)), str(vae), device="cpu"), cancelled=lambda: True)


def test_a_diffusion_model_can_repaint_the_damage_mask(tmp_path, vae, diffusion_models, hf_cache):
    path = photo(tmp_path, 64, 64)
    mask = np.zeros((64, 64), bool)
    mask[20:30, 10:50] = True
    options = dict(fix_scratches=True, mask_path=str(mask_file(tmp_path, mask)), seed=3)
    decoder = restore(path, vae, **options)
    model = str(diffusion_models["inpaint_folder"])
    repainted = restore(path, vae, inpaint_model=model, inpaint_steps=2, **options)
    assert repainted.facts.extra["filled_by"] == model
    assert decoder.facts.extra["filled_by"] == "decoder"
    a, b = decoder.pictures[0].pixels, repainted.pictures[0].pixels
    np.testing.assert_array_equal(a[~mask], b[~mask])
    assert np.abs(a[mask] - b[mask]).max() > 2 / 255


# -- bad inputs -------------------------------------------------------------------------------


def test_truncated_scan_is_refused_with_a_clear_message(tmp_path, vae):
    data = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(data, "JPEG")
    path = tmp_path / "scan.jpg"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    with pytest.raises(ImageError, match="truncated or damaged"):
        restore(path, vae)


def test_a_1x1_image_gives_a_1x1_result(tmp_path, vae):
    path = tmp_path / "dot.png"
    Image.fromarray(np.array([[[200, 100, 50]]], np.uint8)).save(path)
    result = restore(path, vae, fix_scratches=True, variations=2)
    assert all(p.pixels.shape == (1, 1, 3) for p in result.pictures)


def test_a_cmyk_jpeg_gives_an_rgb_result(tmp_path, vae):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 32), (20, 80, 120, 10)).save(path, "JPEG")
    result = restore(path, vae)
    assert result.pictures[0].pixels.shape == (32, 40, 3)


def test_a_16bit_tiff_stays_16bit(tmp_path, vae):
    import cv2

    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 65536, (36, 44, 3), dtype=np.uint16)
    path = tmp_path / "scan16.tif"
    cv2.imwrite(str(path), pixels[..., ::-1])
    result = restore(path, vae)
    assert result.pictures[0].bit_depth == 16
    assert result.pictures[0].pixels.shape == (36, 44, 3)


def test_grey_stays_grey_and_alpha_is_kept(tmp_path, vae):
    grey = tmp_path / "grey.png"
    Image.fromarray((np.random.default_rng(1).random((30, 34)) * 255).astype(np.uint8)).save(grey)
    assert restore(grey, vae).pictures[0].pixels.shape == (30, 34, 1)
    rgba = np.random.default_rng(2).integers(0, 256, (30, 34, 4), dtype=np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    result = restore(path, vae)
    np.testing.assert_allclose(result.pictures[0].pixels[..., 3], rgba[..., 3] / 255, atol=1e-6)


def test_a_mask_of_another_size_is_refused(tmp_path, vae):
    mask = mask_file(tmp_path, np.ones((10, 10), bool))
    with pytest.raises(ImageError, match="paint the mask on this photo"):
        restore(photo(tmp_path), vae, fix_scratches=True, mask_path=str(mask))


# -- models -----------------------------------------------------------------------------------


def test_a_spandrel_restoration_model_runs_through_the_same_path(tmp_path):
    drunet = make_drunet(tmp_path / "drunet_tiny.safetensors")
    path = photo(tmp_path, 45, 51)
    result = restore(path, drunet)
    assert result.architecture == "DRUNet"
    assert result.pictures[0].pixels.shape == (45, 51, 3)
    assert result.uncertainty is None and result.damage_mask is None
    with pytest.raises(EngineError, match="cannot find or fill scratches"):
        restore(path, drunet, fix_scratches=True)
    with pytest.raises(EngineError, match="variations"):
        restore(path, drunet, variations=2)


def test_cancelling_a_spandrel_restoration_stops_between_its_tiles(tmp_path):
    drunet = make_drunet(tmp_path / "drunet_tiny.safetensors")
    path = photo(tmp_path, 160, 160)
    tiles_done = []

    def progress(fraction, _message, _preview=None):
        if fraction > 0:
            tiles_done.append(fraction)

    request = RestoreRequest(str(path), str(drunet), device="cpu", tile=64)
    with pytest.raises(Cancelled):
        run(request, progress=progress, cancelled=lambda: bool(tiles_done))
    assert len(tiles_done) == 1  # the tile that saw the cancel was the last


@pytest.mark.parametrize("model", ["vae", "drunet"])
def test_an_ensemble_averages_the_model_over_the_mirrored_photo(tmp_path, model, vae):
    """Ensemble 2 = the mean of the photo restored and the mirrored photo restored (mirrored
    back): checked end to end, on a size neither network pads and with nothing prefiltered."""
    network = vae if model == "vae" else make_drunet(tmp_path / "drunet_tiny.safetensors")
    path = photo(tmp_path, 64, 80)
    mirrored = tmp_path / "mirrored.png"
    Image.fromarray(np.asarray(Image.open(path))[:, ::-1]).save(mirrored)
    single = restore(path, network).pictures[0].pixels
    back = restore(mirrored, network).pictures[0].pixels[:, ::-1]
    averaged = restore(path, network, ensemble=2).pictures[0].pixels
    assert np.abs(averaged - (single + back) / 2).max() < 1e-5
    assert np.abs(averaged - single).max() > 2 / 255


def test_an_ensemble_still_tiles_invisibly_and_fills_the_mask(tmp_path, vae):
    path = photo(tmp_path, 150, 190)
    mask = np.zeros((150, 190), bool)
    mask[70:74, 10:180] = True
    options = dict(fix_scratches=True, mask_path=str(mask_file(tmp_path, mask)), ensemble=4)
    whole = restore(path, vae, tile=0, **options)
    tiled = restore(path, vae, tile=64, **options)
    assert np.abs(whole.pictures[0].pixels - tiled.pictures[0].pixels).max() <= 2 / 255
    unfilled = restore(path, vae, tile=64, ensemble=4).pictures[0].pixels
    filled = tiled.pictures[0].pixels
    np.testing.assert_array_equal(filled[~mask], unfilled[~mask])  # the mask changes only itself
    assert np.abs(filled - unfilled)[mask].mean() > 2 / 255
    one_pass = restore(path, vae, tile=64, fix_scratches=True, mask_path=options["mask_path"])
    assert np.abs(filled - one_pass.pictures[0].pixels)[mask].max() > 0  # the fill averaged too


def test_an_upscaler_is_pointed_to_the_upscale_tab(tmp_path):
    upscaler = make_compact(tmp_path / "x4.safetensors", scale=4)
    with pytest.raises(EngineError, match="Upscale tab"):
        restore(photo(tmp_path), upscaler)


def test_request_round_trips_through_its_dict(tmp_path):
    request = RestoreRequest(
        "in.png", "m.safetensors", strength=0.7, fix_scratches=True, mask_path="m.png", seed=3
    )
    data = request.to_dict()
    assert data["tool"] == "restore"
    assert RestoreRequest.from_dict(data) == request
    assert RestoreRequest.from_dict({**data, "strength": 1}).strength == 1.0
    assert request.input_paths() == ["in.png", "m.png"]


@pytest.mark.parametrize(
    "change",
    [
        {"strength": 1.5},
        {"denoise": -0.1},
        {"variations": 0},
        {"variations": 99},
        {"seed": -1},
        {"tile": 10},
        {"ensemble": 3},
        {"ensemble": True},
        {"ensemble": 2.0},  # as a hand-edited JSON file could say
        {"output_format": "gif"},
        {"device": "tpu"},
        {"precision": "fp8"},
        {"mask_path": "m.png"},  # a mask without fixing scratches
        {"inpaint_model": "sd-inpainting"},  # a diffusion fill without fixing scratches
        {"inpaint_steps": 0, "fix_scratches": True},
    ],
)
def test_invalid_requests_are_refused_with_an_engine_error(change):
    with pytest.raises(EngineError):
        RestoreRequest("in.png", **change)
