"""The upscalers Studio ships: real model files that load like downloads and beat bicubic.

The sample is a crop of a photo held out of training (assets/samples/README.md), so "better than
bicubic" here is a small honest check that the shipped weights are not garbage.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open

from studio.engines.upscale import UpscaleRequest, run, upscale_pixels
from studio.models.shipped import (
    MissingShippedModel,
    default_upscaler,
    models_folder,
    shipped_upscalers,
)
from studio.models.upscalers import inspect_model, load_model
from studio.train.data import bicubic_input
from studio.train.metrics import psnr_y

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "samples" / "dandelion-128.png"
SHIPPED = shipped_upscalers()
CPU = torch.device("cpu")


def scale_of(path: Path) -> int:
    return 4 if "-x4" in path.stem else 2


@pytest.fixture(scope="module")
def truth() -> torch.Tensor:
    pixels = np.asarray(Image.open(SAMPLE).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)


def low_resolution(truth: torch.Tensor, scale: int) -> np.ndarray:
    return bicubic_input(truth, scale)[0].permute(1, 2, 0).numpy().copy()


def test_studio_ships_an_x4_and_an_x2_default_upscaler():
    assert default_upscaler(4) in SHIPPED
    assert default_upscaler(2) in SHIPPED
    assert SHIPPED[:2] == [default_upscaler(4), default_upscaler(2)]
    assert all(path.parent == models_folder() for path in SHIPPED)


def test_asking_for_a_scale_studio_does_not_ship_names_the_shipped_ones():
    with pytest.raises(MissingShippedModel, match="x2, x4"):
        default_upscaler(3)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_file_is_a_few_mb_of_fp16_safetensors_with_a_model_card(path: Path):
    assert path.suffix == ".safetensors"
    assert 100_000 < path.stat().st_size < 8_000_000
    with safe_open(str(path), framework="pt") as archive:
        assert {archive.get_tensor(key).dtype for key in archive.keys()} == {torch.float16}  # noqa: SIM118
    assert path.with_suffix(".md").is_file()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_file_loads_as_spandrels_realesrgan_compact(path: Path):
    info = inspect_model(path)
    assert info.architecture == "Compact"  # spandrel's "RealESRGAN Compact" (SRVGGNetCompact)
    assert info.purpose == "upscale"
    assert info.scale == scale_of(path)
    assert (info.input_channels, info.output_channels) == (3, 3)
    model = load_model(path, CPU, torch.float32)
    assert model.architecture.name == "RealESRGAN Compact"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_upscaler_gives_the_same_pixels_twice(path: Path, truth: torch.Tensor):
    info = inspect_model(path)
    pixels = low_resolution(truth, info.scale)
    first = upscale_pixels(load_model(path, CPU, torch.float32), info, pixels, tile=0)
    second = upscale_pixels(load_model(path, CPU, torch.float32), info, pixels, tile=0)
    assert first.shape == (128, 128, 3)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_upscaler_beats_bicubic_on_a_held_out_photo(
    path: Path, truth: torch.Tensor, tmp_path: Path
):
    scale = scale_of(path)
    small = low_resolution(truth, scale)
    Image.fromarray((small * 255).round().astype(np.uint8)).save(tmp_path / "small.png")
    result = run(UpscaleRequest(str(tmp_path / "small.png"), str(path), device="cpu"))
    upscaled = torch.from_numpy(result.picture.pixels).permute(2, 0, 1).unsqueeze(0)
    small_tensor = torch.from_numpy(small).permute(2, 0, 1).unsqueeze(0)
    bicubic = F.interpolate(small_tensor, scale_factor=scale, mode="bicubic").clamp(0, 1)
    assert psnr_y(upscaled, truth, scale) > psnr_y(bicubic, truth, scale) + 0.2
