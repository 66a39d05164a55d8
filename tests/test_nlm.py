"""The trainer's batched non-local means must give the network exactly what the engine's OpenCV
prefilter gives it."""

import cv2
import numpy as np
import pytest
import torch

from studio.nn.nlm import denoise_colored, denoise_levels
from studio.nn.restore_vae import prefilter
from studio.progress import Cancelled


def noisy_picture(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth picture with grain: the case the prefilter is for."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, 0.5 + 0.4 * np.sin(x / 5 + y / 7)], axis=-1)
    return np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1).astype(np.float32)


def as_batch(*pictures: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2)


@pytest.mark.parametrize(("height", "width", "strength"), [(40, 56, 5.0), (33, 20, 12.0)])
def test_a_batch_is_denoised_level_for_level_as_opencv_denoises_each_picture(
    height, width, strength
):
    pictures = [noisy_picture(seed, height, width) for seed in range(3)]
    pictures[2] = np.random.default_rng(9).random((height, width, 3), dtype=np.float32)

    denoised = denoise_colored(as_batch(*pictures), strength).permute(0, 2, 3, 1).numpy()

    for ours, picture in zip(denoised, pictures, strict=True):
        np.testing.assert_array_equal(ours, prefilter(picture, strength))
    assert not np.array_equal(denoised[0], pictures[0])


def test_blown_highlights_and_crushed_shadows_stay_white_and_black():
    """A flat white area is where OpenCV's fixed-point sums come closest to overflowing."""
    picture = noisy_picture(2, 40, 40)
    picture[:20] = 1.0
    picture[30:, :10] = 0.0
    ours = denoise_colored(as_batch(picture), 5.0)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(ours, prefilter(picture, 5.0))
    assert (ours[:10] >= 254 / 255).all()  # OpenCV's Lab round trip itself gives 254


def test_pictures_smaller_than_the_search_window_are_reflected_as_opencv_reflects_them():
    picture = noisy_picture(1, 6, 9)
    ours = denoise_colored(as_batch(picture), 5.0)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(ours, prefilter(picture, 5.0))


@pytest.mark.parametrize("planes", [1, 2])
def test_one_and_two_plane_denoising_is_opencvs(planes):
    levels = (noisy_picture(4, 24, 31)[..., :planes] * 255).round().astype(np.uint8)
    expected = cv2.fastNlMeansDenoising(np.ascontiguousarray(levels), None, 7, 7, 21)

    ours = denoise_levels(torch.from_numpy(levels).permute(2, 0, 1)[None].int(), 7.0)

    np.testing.assert_array_equal(ours[0].permute(1, 2, 0).numpy(), expected.reshape(levels.shape))


def test_a_fractional_strength_weighs_patches_as_opencvs_float_does():
    """OpenCV squares h in single precision; in double, h = 30.7 moves one weight by one."""
    rng = np.random.default_rng(1117)
    levels = np.zeros((24, 24), np.uint8)
    count = rng.integers(2, 6)
    ys, xs = rng.integers(0, 24, count), rng.integers(0, 24, count)
    levels[ys, xs] = rng.choice([200, 90, 60, 150, 219, 30, 120], count)
    levels = (levels + rng.integers(0, 3, levels.shape)).astype(np.uint8)

    ours = denoise_levels(torch.from_numpy(levels).int()[None, None], 30.7)

    expected = cv2.fastNlMeansDenoising(levels, None, 30.7, 7, 21)
    np.testing.assert_array_equal(ours[0, 0].numpy(), expected)


@pytest.mark.parametrize(("height", "width"), [(1, 9), (9, 1), (1, 1), (2, 2)])
def test_single_rows_and_columns_are_denoised_as_opencv_denoises_them(height, width):
    levels = np.random.default_rng(3).integers(0, 256, (height, width), dtype=np.uint8)
    ours = denoise_levels(torch.from_numpy(levels).int()[None, None], 40.0)
    expected = cv2.fastNlMeansDenoising(levels, None, 40.0, 7, 21).reshape(height, width)
    np.testing.assert_array_equal(ours[0, 0].numpy(), expected)


def test_strength_zero_keeps_the_planes_as_opencv_does():
    levels = np.random.default_rng(5).integers(0, 256, (12, 12), dtype=np.uint8)
    ours = denoise_levels(torch.from_numpy(levels).int()[None, None], 0.0)
    np.testing.assert_array_equal(ours[0, 0].numpy(), cv2.fastNlMeansDenoising(levels, None, 0.0))
    np.testing.assert_array_equal(ours[0, 0].numpy(), levels)


def test_three_planes_at_once_are_refused():
    with pytest.raises(ValueError, match="one or two planes"):
        denoise_levels(torch.zeros((1, 3, 8, 8), dtype=torch.int32), 5.0)


def test_strength_zero_is_no_prefilter():
    batch = as_batch(noisy_picture(0, 8, 8))
    assert denoise_colored(batch, 0.0) is batch


def test_the_prefilter_in_bands_is_the_whole_pictures_exactly_and_can_be_cancelled():
    picture = noisy_picture(3, 120, 70)
    whole = prefilter(picture, 5.0, band=1000)
    for band in (16, 45):  # bands thinner than NLM's reach, and a last band that is short
        np.testing.assert_array_equal(prefilter(picture, 5.0, band=band), whole)
    bands = []

    def cancel_after_two() -> bool:
        bands.append(1)
        return len(bands) > 2

    with pytest.raises(Cancelled):
        prefilter(picture, 5.0, cancel_after_two, band=16)
    assert len(bands) == 3
