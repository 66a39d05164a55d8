"""The upscale engine and its tiling, run on tiny real networks and real image files."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageCms
from tiny_models import make_compact, make_esrgan

from studio.engines.base import Cancelled, EngineError, RunFacts
from studio.engines.tiling import auto_tile_size, dihedral_mean, plan_windows, upscale_tiled
from studio.engines.upscale import UpscaleRequest, UpscaleResult, run
from studio.imaging import ImageError
from studio.models.cache import ModelCache
from studio.models.upscalers import inspect_model, load_model

CPU = torch.device("cpu")
LEVEL = 1 / 255


def photo(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth gradients with fine noise: enough structure that every tile sees something."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = [0.5 + 0.4 * np.sin(x / (5 + 3 * c) + y / (7 + 2 * c) + c) for c in range(channels)]
    pixels = np.stack(planes, axis=-1) + rng.normal(0, 0.05, (height, width, channels))
    return np.clip(pixels, 0, 1).astype(np.float32)


def save_png(path, pixels: np.ndarray) -> str:
    data = np.round(pixels * 255).astype(np.uint8)
    Image.fromarray(data[..., 0] if data.shape[2] == 1 else data).save(path)
    return str(path)


def nearest(pixels: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).contiguous()


@pytest.fixture
def identity_x4(tmp_path) -> str:
    """A Compact x4 with no learned residual: exactly nearest-neighbour, so outputs are known."""
    return str(make_compact(tmp_path / "nearest-x4.pth", texture=0.0))


# -- tiling ---------------------------------------------------------------------------------------


TINY_NETWORKS = {
    "esrgan-x4": lambda d: make_esrgan(d / "esrgan-x4.pth", scale=4),
    "esrgan-x2": lambda d: make_esrgan(d / "esrgan-x2.safetensors", scale=2),
    "compact-x4": lambda d: make_compact(d / "compact-x4.pth", num_feat=16, num_conv=8),
}


@pytest.mark.parametrize("network", TINY_NETWORKS)
def test_tiled_upscale_matches_untiled_within_2_levels(tmp_path, network):
    path = TINY_NETWORKS[network](tmp_path)
    info = inspect_model(path)
    model = load_model(path, CPU, torch.float32)
    image = as_tensor(photo(70, 90))
    untiled = model(image)
    tiled = upscale_tiled(
        model, image, scale=info.scale, tile=32, size_rules=info.size_requirements
    )
    assert tiled.shape == untiled.shape == (1, 3, 70 * info.scale, 90 * info.scale)
    assert untiled.std() > 0.05  # the comparison means something: outputs vary
    assert (tiled - untiled).abs().max() <= 2 * LEVEL


def test_tiled_engine_run_matches_untiled_run(tmp_path):
    model = str(make_compact(tmp_path / "compact.pth", num_feat=16, num_conv=8))
    image = save_png(tmp_path / "in.png", photo(64, 80))
    whole = run(UpscaleRequest(image, model, tile=0))
    tiled = run(UpscaleRequest(image, model, tile=32))
    assert tiled.tile == 32
    assert np.abs(tiled.picture.pixels - whole.picture.pixels).max() <= 2 * LEVEL


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap", "step"),
    [(100, 72, 48, 16, 4), (512, 512, 128, 24, 1), (300, 90, 32, 24, 1), (128, 64, 32, 40, 16)],
)
def test_tiles_cover_the_image_evenly_on_the_model_grid(height, width, tile, overlap, step):
    windows = plan_windows(height, width, tile, overlap, step=step)  # sides padded to the grid
    sizes = {(w.height, w.width) for w in windows}
    assert len(sizes) == 1  # one size: batches, and kernels reused
    assert all(w.y % step == 0 and w.x % step == 0 for w in windows)
    covered = np.zeros((height, width), int)
    for w in windows:
        covered[w.y : w.y + w.height, w.x : w.x + w.width] += 1
    assert covered.min() >= 1
    rows = sorted({w.y for w in windows})
    window_height = windows[0].height
    assert all(window_height - (b - a) >= overlap for a, b in itertools.pairwise(rows))
    assert window_height <= max(tile + overlap, overlap + step)


def test_a_tile_is_seen_with_its_overlap_as_real_esrgan_sees_tile_plus_pad():
    windows = plan_windows(512, 512, 128, 24)
    assert len(windows) == 16  # as many tiles as 512 / 128, each 146 px instead of 128 + 2 x 10
    assert {(w.height, w.width) for w in windows} == {(146, 146)}


def test_out_of_memory_halves_the_tile_and_still_matches_untiled(tmp_path):
    path = make_esrgan(tmp_path / "esrgan.pth")
    model = load_model(path, CPU, torch.float32)
    image = as_tensor(photo(72, 80))
    sizes: list[int] = []

    def small_memory(batch: torch.Tensor) -> torch.Tensor:
        sizes.append(int(batch.shape[-1]))
        if batch.shape[-1] > 60:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return model(batch)

    messages: list[str] = []
    out = upscale_tiled(
        small_memory, image, scale=4, tile=64, progress=lambda f, m, p=None: messages.append(m)
    )
    assert sizes[0] == 80  # the whole 72 x 80 image fits one 64 + 24 px tile
    assert len(sizes) > 2 and max(sizes[1:]) <= 60
    assert any("Out of memory" in m and "32 px" in m for m in messages)
    assert (out - model(image)).abs().max() <= 2 * LEVEL


def test_out_of_memory_at_the_smallest_tile_is_an_engine_error():
    def no_memory(batch: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(EngineError, match="Out of memory even with 32 px tiles"):
        upscale_tiled(no_memory, torch.rand(1, 3, 200, 200), scale=2, tile=64)


def test_automatic_tile_size_grows_with_free_memory_and_respects_the_grid():
    small = auto_tile_size(2**30, 3, torch.float16, 16_000_000, scale=4, multiple_of=4)
    large = auto_tile_size(16 * 2**30, 3, torch.float16, 16_000_000, scale=4, multiple_of=4)
    assert 32 <= small < large <= 1024
    assert small % 32 == 0 and large % 32 == 0
    assert auto_tile_size(1, 3, torch.float32, 10, scale=4) == 32  # never below the minimum
    capped = auto_tile_size(2**40, 3, torch.float32, 1_000_000, scale=4, max_work=1.6e10)
    assert capped == 96  # windows of sqrt(1.6e10 / 1e6) = 126 px: 102 px tiles + 24, so 96


def test_each_symmetry_of_the_ensemble_is_undone_before_averaging():
    """A network that treats every pixel alike (here nearest x2) gives the same answer mirrored
    and turned, so its ensemble must equal it exactly, on a tile that is not square."""
    tile = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7) / 210

    def nearest_x2(batch: torch.Tensor) -> torch.Tensor:
        return batch.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3) * 2 + 1

    for count in (1, 2, 4, 8):
        assert torch.allclose(dihedral_mean(nearest_x2, count)(tile), nearest_x2(tile))


def shift_left_and_down(batch: torch.Tensor) -> torch.Tensor:
    """A network with a sense of direction along both axes, and not the same along each."""
    left = torch.cat([batch[..., 1:], batch[..., -1:]], dim=3)
    down = torch.cat([batch[..., :1, :], batch[..., :-1, :]], dim=2)
    return batch + 0.5 * left + 0.25 * down


def square_symmetries(count: int) -> list[tuple[int, bool]]:
    """The square's symmetries an ensemble of `count` should use: (quarter turns, mirrored
    first), written with rot90 rather than the flips and transposes the code uses."""
    mirrors = [(0, False), (0, True)]
    flips = [*mirrors, (2, False), (2, True)]  # a half turn of the mirror image: upside down
    return {1: mirrors[:1], 2: mirrors, 4: flips}.get(
        count, [(k, m) for k in range(4) for m in (False, True)]
    )


def apply(batch: torch.Tensor, turns: int, mirrored: bool) -> torch.Tensor:
    return torch.rot90(batch.flip(3) if mirrored else batch, turns, dims=(2, 3))


def undo(batch: torch.Tensor, turns: int, mirrored: bool) -> torch.Tensor:
    batch = torch.rot90(batch, -turns, dims=(2, 3))
    return batch.flip(3) if mirrored else batch


@pytest.mark.parametrize("count", [2, 4, 8])
def test_the_ensemble_averages_the_network_over_that_many_distinct_symmetries(count):
    tile = torch.rand(1, 3, 6, 9, generator=torch.Generator().manual_seed(0))
    seen = []

    def network(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.clone())
        return shift_left_and_down(batch)

    averaged = dihedral_mean(network, count)(tile)
    symmetries = square_symmetries(count)
    expected = [apply(tile, *g) for g in symmetries]
    assert len(seen) == count
    for version in expected:  # each version of the tile seen exactly once
        matches = [s for s in seen if s.shape == version.shape and torch.equal(s, version)]
        assert len(matches) == 1
    mean = sum(undo(shift_left_and_down(apply(tile, *g)), *g) for g in symmetries) / count
    torch.testing.assert_close(averaged, mean)
    assert not torch.allclose(averaged, shift_left_and_down(tile))
    with pytest.raises(ValueError, match="symmetries"):
        dihedral_mean(network, 3)


def test_cancelling_stops_the_ensemble_between_symmetries():
    calls = []

    def network(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.shape)
        return batch

    with pytest.raises(Cancelled):
        dihedral_mean(network, 8, cancelled=lambda: bool(calls))(torch.zeros(1, 3, 8, 8))
    assert len(calls) == 1


# -- the engine -----------------------------------------------------------------------------------


def test_cancel_after_the_first_tile_raises_cancelled(tmp_path):
    model = str(make_compact(tmp_path / "compact.pth"))
    image = save_png(tmp_path / "in.png", photo(64, 64))
    tiles: list[str] = []

    def progress(fraction: float, message: str, preview=None) -> None:
        if "Tile" in message:
            tiles.append(message)

    with pytest.raises(Cancelled):
        run(UpscaleRequest(image, model, tile=32), progress=progress, cancelled=lambda: bool(tiles))
    assert tiles == ["Tile 1/4"]


def test_an_ensemble_averages_the_upscale_of_the_picture_and_of_its_mirror_image(tmp_path):
    model = str(make_compact(tmp_path / "compact.pth"))
    pixels = photo(24, 30)
    image = save_png(tmp_path / "in.png", pixels)
    mirrored = save_png(tmp_path / "mirrored.png", pixels[:, ::-1])
    single = run(UpscaleRequest(image, model, device="cpu")).picture.pixels
    back = run(UpscaleRequest(mirrored, model, device="cpu")).picture.pixels[:, ::-1]
    averaged = run(UpscaleRequest(image, model, device="cpu", ensemble=2)).picture.pixels
    assert np.abs(averaged - (single + back) / 2).max() < 1e-5
    assert np.abs(averaged - single).max() > LEVEL


def test_progress_counts_tiles_and_sends_previews(tmp_path):
    model = str(make_compact(tmp_path / "compact.pth"))
    image = save_png(tmp_path / "in.png", photo(96, 96))
    reports: list[tuple[float, str, object]] = []
    run(UpscaleRequest(image, model, tile=32), progress=lambda *a: reports.append(a))
    tiles = [r for r in reports if r[1].startswith("Tile")]
    assert tiles[-1][1] == "Tile 9/9"
    fractions = [r[0] for r in reports]
    assert fractions == sorted(fractions) and fractions[-1] <= 1
    previews = [r[2] for r in tiles if len(r) > 2 and r[2] is not None]
    assert 1 <= len(previews) <= 8
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 for p in previews)


def test_alpha_is_kept_and_upscaled(tmp_path, identity_x4):
    pixels = photo(20, 24, channels=4)
    pixels[..., 3] = np.linspace(0, 1, 24)[None, :]  # a transparency gradient
    image = save_png(tmp_path / "rgba.png", pixels)
    result = run(UpscaleRequest(image, identity_x4))
    source = np.asarray(Image.open(image), dtype=np.float32) / 255
    assert result.picture.pixels.shape == (80, 96, 4)
    assert np.abs(result.picture.pixels - nearest(source, 4)).max() < 1e-5


def test_opaque_alpha_stays_exactly_opaque(tmp_path):
    model = str(make_compact(tmp_path / "compact.pth"))
    pixels = photo(16, 16, channels=4)
    pixels[..., 3] = 1.0
    result = run(UpscaleRequest(save_png(tmp_path / "opaque.png", pixels), model))
    assert result.picture.channels == 4
    assert (result.picture.pixels[..., 3] == 1.0).all()


def test_grayscale_stays_grayscale(tmp_path, identity_x4):
    image = save_png(tmp_path / "grey.png", photo(16, 20, channels=1))
    result = run(UpscaleRequest(image, identity_x4))
    source = np.asarray(Image.open(image), dtype=np.float32)[..., None] / 255
    assert result.picture.pixels.shape == (64, 80, 1)
    assert np.abs(result.picture.pixels - nearest(source, 4)).max() < 1e-5


def test_a_grey_network_upscales_colour_channel_by_channel(tmp_path):
    model = str(make_compact(tmp_path / "grey-x2.pth", scale=2, in_channels=1, texture=0.0))
    assert inspect_model(model).input_channels == 1
    image = save_png(tmp_path / "in.png", photo(12, 10))
    result = run(UpscaleRequest(image, model))
    source = np.asarray(Image.open(image), dtype=np.float32) / 255
    assert np.abs(result.picture.pixels - nearest(source, 2)).max() < 1e-5


def test_16bit_input_stays_16bit(tmp_path, identity_x4):
    rng = np.random.default_rng(1)
    source = rng.integers(0, 65536, (12, 14, 3), dtype=np.uint16)
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), source[..., ::-1])  # OpenCV writes BGR
    result = run(UpscaleRequest(str(path), identity_x4))
    assert result.picture.bit_depth == 16
    expected = nearest(source.astype(np.float32) / 65535, 4)
    assert np.abs(result.picture.pixels - expected).max() < 0.5 / 65535


def test_exif_orientation_is_applied_before_upscaling(tmp_path, identity_x4):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "portrait.jpg"
    Image.fromarray(np.round(photo(24, 40) * 255).astype(np.uint8)).save(path, exif=exif.tobytes())
    result = run(UpscaleRequest(str(path), identity_x4))
    assert (result.picture.width, result.picture.height) == (24 * 4, 40 * 4)
    assert result.picture.exif is not None


def test_icc_profile_is_carried_to_the_result(tmp_path, identity_x4):
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path / "tagged.png"
    Image.fromarray(np.round(photo(8, 8) * 255).astype(np.uint8)).save(path, icc_profile=profile)
    assert run(UpscaleRequest(str(path), identity_x4)).picture.icc_profile == profile


@pytest.mark.parametrize(
    ("scale", "network", "size", "expected"),
    [(3.0, 4, (20, 14), (60, 42)), (1.5, 2, (21, 17), (32, 26)), (6, 4, (5, 4), (30, 24))],
)
def test_any_scale_gives_exact_dimensions(tmp_path, scale, network, size, expected):
    model = str(make_compact(tmp_path / f"x{network}.pth", scale=network))
    width, height = size
    image = save_png(tmp_path / "in.png", photo(height, width))
    result = run(UpscaleRequest(image, model, scale=scale))
    assert (result.picture.width, result.picture.height) == expected
    assert result.scale == scale


def test_scale_below_one_is_refused(tmp_path):
    with pytest.raises(EngineError, match="shrink"):
        run(UpscaleRequest(str(tmp_path / "in.png"), str(tmp_path / "m.pth"), scale=0.5))


def test_restoration_model_points_to_the_restore_tab(tmp_path):
    model = str(make_compact(tmp_path / "1x-denoise.pth", scale=1))
    image = save_png(tmp_path / "in.png", photo(8, 8))
    with pytest.raises(EngineError, match="Restore tab"):
        run(UpscaleRequest(image, model))


def test_unreadable_image_raises_image_error(tmp_path):
    model = str(make_compact(tmp_path / "compact.pth"))
    bad = tmp_path / "holiday.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing sensible")
    with pytest.raises(ImageError):
        run(UpscaleRequest(str(bad), model))


def test_result_records_model_device_precision_and_facts(tmp_path, identity_x4):
    image = save_png(tmp_path / "in.png", photo(8, 8))
    cache = ModelCache()
    result = run(UpscaleRequest(image, identity_x4, device="cpu", precision="auto"), cache=cache)
    again = run(UpscaleRequest(image, identity_x4, device="cpu"), cache=cache)
    assert isinstance(result, UpscaleResult)
    assert (result.device, result.dtype, result.model.architecture) == ("cpu", "fp32", "Compact")
    assert len(cache) == 1  # the second run reused the loaded model
    assert np.array_equal(result.picture.pixels, again.picture.pixels)
    facts = result.facts
    assert isinstance(facts, RunFacts)
    assert (facts.model_name, facts.model_sha256) == ("nearest-x4", result.model.sha256)
    assert facts.extra["scale"] == 4 and facts.extra["output_size"] == [32, 32]
    assert result.pictures == [result.picture]


def test_explicit_half_precision_on_the_cpu_is_respected(tmp_path, identity_x4):
    image = save_png(tmp_path / "in.png", photo(8, 8))
    assert run(UpscaleRequest(image, identity_x4, precision="bf16")).dtype == "bf16"


# -- the request ----------------------------------------------------------------------------------


def test_request_round_trips_through_its_dict():
    request = UpscaleRequest("in.png", "4x.pth", scale=3.0, tile=256, output_format="jpg")
    data = request.to_dict()
    assert data["tool"] == "upscale" and data["output_format"] == "jpeg"
    assert UpscaleRequest.from_dict({**data, "added_in_a_later_version": 1}) == request
    assert request.input_paths() == ["in.png"]


@pytest.mark.parametrize(
    "change",
    [
        {"scale": 0.5},
        {"scale": "big"},
        {"tile": 8},
        {"tile": 1.5},
        {"output_format": "gif"},
        {"quality": 0},
        {"device": "tpu"},
        {"precision": "fp8"},
        {"model_path": ""},
        {"ensemble": 16},
        {"ensemble": 2.0},
    ],
)
def test_invalid_requests_are_refused_with_an_engine_error(change):
    with pytest.raises(EngineError):
        UpscaleRequest.from_dict({"input_path": "in.png", "model_path": "m.pth", **change})


def test_request_without_paths_is_refused():
    with pytest.raises(EngineError, match="model_path"):
        UpscaleRequest.from_dict({"input_path": "in.png"})
