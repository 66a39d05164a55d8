"""The restoration VAE Studio ships: a small file, loaded like a user's, that restores held-out
photos it never saw."""

import random
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from studio.engines.restore import RestoreRequest, run
from studio.imaging import file_sha256
from studio.models.shipped import default_restorer, shipped_restorers, shipped_upscalers
from studio.models.upscalers import inspect_model, load_model
from studio.nn.restore_vae import RestoreVAE
from studio.train.metrics import psnr_y
from studio.train.restore_degrade import OldPhotoDamage, degrade_old_photo

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A crop of seeding_by_Clements_Engelhardt.jpg, a test photo: never trained on.
SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "samples" / "dandelion-128.png"
GRAINY_AND_SCRATCHED = OldPhotoDamage(
    blur=0.0,
    enlarge=0.0,
    grain=1.0,
    grain_sigma=(10.0, 10.0),
    fade=0.0,
    cast=0.0,
    paper=0.0,
    scratches=1.0,
    scratch_count=(3, 3),
    dust=1.0,
    crease=0.0,
    scan_noise=0.0,
    jpeg=0.0,
)


def tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).unsqueeze(0)


def test_the_shipped_restorer_is_a_few_mb_of_safetensors_with_a_model_card():
    path = default_restorer()
    assert shipped_restorers() == [path]
    assert path.suffix == ".safetensors"
    assert 100_000 < path.stat().st_size < 8_000_000
    with safe_open(str(path), framework="pt") as archive:
        assert archive.metadata()["architecture"] == "StudioRestoreVAE"
    assert path.with_suffix(".md").is_file()
    assert path not in shipped_upscalers()  # the Upscale tab does not offer it


def test_the_model_card_describes_the_file_that_ships():
    path = default_restorer()
    card = path.with_suffix(".md").read_text(encoding="utf-8")
    assert f"`{file_sha256(path)}`" in card
    assert f"{path.stat().st_size:,} bytes" in card


def test_the_shipped_weights_load_through_the_same_path_as_a_user_file(tmp_path):
    shipped = default_restorer()
    user_copy = Path(shutil.copy(shipped, tmp_path / "my-restorer.safetensors"))
    info, user_info = inspect_model(shipped), inspect_model(user_copy)
    assert info.architecture == user_info.architecture == "StudioRestoreVAE"
    assert info.purpose == "restore" and info.sha256 == user_info.sha256
    assert isinstance(load_model(user_copy, torch.device("cpu"), torch.float32).model, RestoreVAE)
    built_in = run(RestoreRequest(str(SAMPLE), device="cpu"))
    from_user_file = run(RestoreRequest(str(SAMPLE), str(user_copy), device="cpu"))
    assert built_in.model_name == "studio-restore-vae"
    np.testing.assert_array_equal(built_in.pictures[0].pixels, from_user_file.pictures[0].pixels)


def test_the_shipped_restorer_cleans_grain_and_scratches_on_a_held_out_photo(tmp_path):
    clean = np.asarray(Image.open(SAMPLE).convert("RGB"), dtype=np.float32) / 255
    aged = degrade_old_photo(clean, random.Random(3), GRAINY_AND_SCRATCHED)
    path = tmp_path / "aged.png"
    Image.fromarray((aged.degraded * 255).round().astype(np.uint8)).save(path)
    result = run(RestoreRequest(str(path), fix_scratches=True, device="cpu"))
    restored = result.pictures[0].pixels
    before = psnr_y(tensor(aged.degraded), tensor(aged.toned), 4)
    after = psnr_y(tensor(restored), tensor(aged.toned), 4)
    assert after > before + 1.0
    truth = aged.damage > 0
    found = result.damage_mask
    assert (found & truth).sum() / truth.sum() > 0.5  # most of the damage is found...
    assert found.mean() < 4 * truth.mean()  # ...a mask of the damage, not the whole picture


def test_the_shipped_restorers_variations_differ_most_where_it_paints_a_large_patch(tmp_path):
    """A person painting over a stain asks for alternatives: the latent must decide there."""
    disc = np.zeros((128, 128), np.uint8)
    cv2.circle(disc, (64, 64), 20, 255, -1)  # 41 px across, wider than any scratch
    mask_path = tmp_path / "stain.png"
    Image.fromarray(disc).save(mask_path)
    request = RestoreRequest(
        str(SAMPLE),
        fix_scratches=True,
        mask_path=str(mask_path),
        variations=8,
        seed=5,
        device="cpu",
    )
    pictures = [p.pixels[..., :3] * 255 for p in run(request).pictures]
    # One sample can land near the mean; seven on average cannot (a collapsed latent: 0.3).
    difference = np.mean([np.abs(p - pictures[0]).mean(axis=2) for p in pictures[1:]], axis=0)
    inside = disc > 0
    assert difference[inside].mean() > 1.0  # levels: visibly other fills
    assert difference[inside].mean() > 3 * difference[~inside].mean()
