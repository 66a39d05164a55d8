"""The restorer's paper branch: the ageing's paper gain it learns from, the branch itself, the
engine dividing the scan by it before the tiles, and its trainer."""

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny_models import make_restore_vae

from studio.engines.restore import RestoreRequest, run
from studio.models.upscalers import inspect_model
from studio.nn.restore_vae import PAPER_LOG_LIMIT, RestoreVAE, build_from_state, paper_input
from studio.train import restore as train_vae
from studio.train.photos import VALIDATION_PHOTOS
from studio.train.restore_degrade import OldPhotoDamage, degrade_old_photo
from studio.train.restore_paper import (
    PaperBatch,
    PaperTrainer,
    flattening_error,
    main,
    paper_batch,
    parse_args,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ONLY_PAPER = OldPhotoDamage(
    blur=0, enlarge=0, grain=0, fade=0, cast=0, paper=1, scratches=0, dust=0, crease=0,
    scan_noise=0, jpeg=0,
)  # fmt: skip


def smooth_photo(height: int = 96, width: int = 128) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    return np.stack([0.3 + 0.4 * x, 0.5 + 0.2 * y, 0.6 - 0.3 * x * y], axis=2).astype(np.float32)


def test_ageing_reports_the_paper_gain_it_multiplied_the_print_by():
    clean = smooth_photo()
    aged = degrade_old_photo(clean, random.Random(4), ONLY_PAPER)
    assert aged.paper.shape == clean.shape[:2]
    assert np.abs(aged.degraded - clean * aged.paper[..., None]).max() <= 0.5 / 255 + 1e-6
    assert 0.01 < aged.paper.std() < 0.08  # blotches of 1-5 % and fibres
    assert np.array_equal(aged.toned, clean)  # the truth has no paper in it

    without = degrade_old_photo(clean, random.Random(4), OldPhotoDamage(paper=0))
    assert np.array_equal(without.paper, np.ones(clean.shape[:2], np.float32))


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (33, 50), (64, 64)])
def test_a_new_branch_changes_nothing_and_any_size_gets_a_gain_of_its_own_size(size):
    torch.manual_seed(0)
    model = RestoreVAE(width=4, latent=2, blocks=1, fine=0, paper=4)
    picture = torch.rand(1, 3, *size)
    assert torch.equal(model.paper_gain(picture), torch.ones(1, 1, *size))

    with torch.no_grad():
        model.paper.head.weight.normal_(0, 5.0)  # a wild head
        gain = model.paper_gain(picture)
    assert gain.shape == (1, 1, *size)
    limit = float(np.exp(PAPER_LOG_LIMIT))
    assert 1 / limit - 1e-6 <= float(gain.min()) and float(gain.max()) <= limit + 1e-6


def test_a_file_with_a_paper_branch_builds_the_same_branch_and_one_without_builds_none():
    torch.manual_seed(0)
    model = RestoreVAE(width=4, latent=2, blocks=1, fine=0, paper=6)
    with torch.no_grad():
        model.paper.head.weight.normal_(0, 0.1)
    built = build_from_state(model.state_dict())
    assert built.config() == model.config() and built.config()["paper"] == 6
    picture = torch.rand(1, 3, 40, 56)
    assert torch.equal(built.paper_gain(picture), model.paper_gain(picture))

    plain = RestoreVAE(width=4, latent=2, blocks=1, fine=0)
    assert build_from_state(plain.state_dict()).paper is None


def test_the_branch_reads_the_picture_averaged_over_4x4_blocks_with_its_edges_repeated():
    picture = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    small, padded = paper_input(picture)
    assert padded == (16, 16) and small.shape == (2, 3, 4, 4)
    assert torch.allclose(small[:, :, 0, 0], picture[:, :, :4, :4].mean(dim=(2, 3)))
    assert torch.equal(small[:, :, 3, 3], picture[:, :, 4, 5])  # all of it the corner pixel


def test_the_loss_is_zero_for_the_true_gain_and_counts_light_areas_more():
    torch.manual_seed(0)
    light = PaperBatch(torch.full((1, 3, 8, 8), 0.9), torch.randn(1, 1, 8, 8) * 0.03)
    dark = PaperBatch(torch.full((1, 3, 8, 8), 0.2), light.log_gain)
    assert float(flattening_error(light.log_gain, light)) < 1e-12
    wrong = torch.zeros_like(light.log_gain)
    assert float(flattening_error(wrong, light)) > 10 * float(flattening_error(wrong, dark))


def test_training_crops_carry_the_log_of_the_paper_gain_at_a_quarter_size():
    crops = torch.from_numpy(smooth_photo(64, 64)).permute(2, 0, 1)[None].repeat(4, 1, 1, 1)
    batch = paper_batch(crops, random.Random(1), (ONLY_PAPER,))
    assert batch.small.shape == (4, 3, 16, 16) and batch.log_gain.shape == (4, 1, 16, 16)
    flattened = batch.small / torch.exp(batch.log_gain)
    expected = paper_input(crops)[0]
    # flattening by the true gain gives back the clean crop (up to the 4x4 averages' rounding)
    assert float((flattened - expected).abs().max()) < 0.01
    assert float(batch.log_gain.std()) > 0.005


def restore(path, model, **options):
    return run(RestoreRequest(str(path), str(model), device="cpu", **options))


def save_photo(tmp_path, pixels, name="photo.png"):
    path = tmp_path / name
    Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return path


def test_the_engine_restores_the_scan_divided_by_the_branchs_gain(tmp_path):
    with_branch = make_restore_vae(tmp_path / "paper.safetensors", paper=4)
    plain = make_restore_vae(tmp_path / "plain.safetensors")  # the same VAE, no branch
    rng = np.random.default_rng(2)
    scan = np.clip(smooth_photo(80, 96) + rng.normal(0, 0.03, (80, 96, 3)), 0, 1)
    path = save_photo(tmp_path, scan)
    pixels = np.asarray(Image.open(path), dtype=np.float32) / 255

    model = build_from_state(load_file(str(with_branch)))
    whole = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    with torch.no_grad():
        gain = model.paper_gain(whole)[0, 0].numpy()
    assert gain.std() > 0.005  # the branch does change the picture
    flat = save_photo(tmp_path, pixels / gain[..., None], "flat.png")

    restored = restore(path, with_branch).pictures[0].pixels
    expected = restore(flat, plain).pictures[0].pixels
    assert np.abs(restored - expected).max() <= 2 / 255
    assert np.abs(restored - restore(path, plain).pictures[0].pixels).max() > 2 / 255
    # denoise 0 keeps the scan as it is, paper and all
    kept = restore(path, with_branch, denoise=0.0).pictures[0].pixels
    assert np.abs(kept - pixels).max() <= 1e-6


def test_a_paper_branch_still_tiles_invisibly(tmp_path):
    vae = make_restore_vae(tmp_path / "paper.safetensors", paper=4)
    rng = np.random.default_rng(3)
    path = save_photo(tmp_path, smooth_photo(150, 170) + rng.normal(0, 0.03, (150, 170, 3)))
    whole = restore(path, vae, tile=0, fix_scratches=True).pictures[0].pixels
    tiled = restore(path, vae, tile=64, fix_scratches=True).pictures[0].pixels
    assert np.abs(whole - tiled).max() <= 2 / 255


@pytest.fixture
def photo_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for k, name in enumerate(["a.png", "b.png", *VALIDATION_PHOTOS]):
        rng = np.random.default_rng(k)
        base = rng.integers(0, 255, (8, 8, 3), np.uint8)
        Image.fromarray(base).resize((224, 224), Image.Resampling.BICUBIC).save(folder / name)
    return folder


TINY_PAPER_RUN = ["--crop", "64", "--batch", "2", "--workers", "0", "--replay", "0"]
TINY_PAPER_RUN += ["--threads", "1", "--width", "4", "--device", "cpu", "--eval-every", "0"]


def test_a_short_run_adds_a_branch_and_leaves_the_vae_as_it_was(photo_folder, tmp_path):
    init = make_restore_vae(tmp_path / "vae.safetensors")
    out = tmp_path / "with-paper.safetensors"
    argv = ["--data", str(photo_folder), "--init", str(init), "--out", str(out)]
    assert main([*argv, "--steps", "3", *TINY_PAPER_RUN]) == 0

    before, after = load_file(str(init)), load_file(str(out))
    assert {k for k in after if not k.startswith("paper.")} == set(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(float(v.abs().sum()) > 0 for k, v in after.items() if k.startswith("paper.head"))
    info = inspect_model(out)
    assert info.purpose == "restore" and info.architecture == "StudioRestoreVAE"
    with safe_open(str(out), "pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["config"])["paper"] == 4
    assert metadata["paper_run_steps"] == "3" and 1 <= int(metadata["paper_steps"]) <= 3

    # A file with a branch trains that branch on; with nothing learnt, it comes back as it was.
    again = tmp_path / "further.safetensors"
    assert main(["--data", str(photo_folder), "--init", str(out), "--out", str(again),
                 "--steps", "2", "--lr", "0", *TINY_PAPER_RUN]) == 0  # fmt: skip
    further = load_file(str(again))
    assert all(torch.equal(after[k], further[k]) for k in after if k.startswith("paper."))


def test_saving_keeps_the_best_averaged_branch_and_leaves_the_live_one_training(
    photo_folder, tmp_path
):
    init = make_restore_vae(tmp_path / "vae.safetensors")
    out = tmp_path / "with-paper.safetensors"
    argv = ["--data", str(photo_folder), "--init", str(init), "--out", str(out), "--steps", "4"]
    trainer = PaperTrainer(parse_args([*argv, *TINY_PAPER_RUN]))
    with trainer.feed:
        trainer.train()
    assert out.is_file()  # saved at each kept evaluation: a run stopped early leaves its best
    live = {k: v.clone() for k, v in trainer.branch.state_dict().items()}
    trainer.save(out)
    assert all(torch.equal(v, trainer.branch.state_dict()[k]) for k, v in live.items())
    saved = load_file(str(out))
    best = trainer.best[0]
    assert all(torch.equal(saved["paper." + k], v) for k, v in best.items())
    assert any(not torch.equal(best[k], live[k]) for k in best)  # the average, not the live one


def test_a_crop_the_branch_cannot_halve_twice_is_a_clear_error(photo_folder, tmp_path, capsys):
    init = make_restore_vae(tmp_path / "vae.safetensors")
    argv = ["--data", str(photo_folder), "--init", str(init), "--out", str(tmp_path / "x")]
    with pytest.raises(SystemExit):
        main([*argv, "--steps", "1", "--crop", "72"])
    assert "multiple of 16" in capsys.readouterr().err


def test_training_the_vae_from_a_file_with_a_branch_keeps_the_branch(photo_folder, tmp_path):
    init = make_restore_vae(tmp_path / "vae.safetensors", width=8, paper=4)
    branch_facts = {"paper_steps": "7", "paper_command": "python -m studio.train.restore_paper"}
    save_file(load_file(str(init)), str(init), metadata=branch_facts)  # as the paper trainer does
    out = tmp_path / "vae-trained.safetensors"
    argv = ["--data", str(photo_folder), "--init", str(init), "--out", str(out), "--steps", "2"]
    argv += ["--width", "8", "--latent", "4", "--blocks", "1", "--fine", "1", "--patch", "32"]
    argv += ["--batch", "2", "--workers", "0", "--threads", "1", "--eval-every", "0"]
    assert train_vae.main([*argv, "--device", "cpu"]) == 0
    before, after = load_file(str(init)), load_file(str(out))
    branch = [k for k in before if k.startswith("paper.")]
    assert branch and all(torch.equal(before[k], after[k]) for k in branch)
    with safe_open(str(out), "pt") as handle:  # and says how that branch was trained
        metadata = handle.metadata()
    assert {k: metadata[k] for k in branch_facts} == branch_facts
    assert metadata["command"].startswith("python -m studio.train.restore ")


def test_a_branch_trained_further_starts_as_the_best_and_a_new_one_never_does(
    photo_folder, tmp_path
):
    plain = make_restore_vae(tmp_path / "vae.safetensors")
    with_branch = make_restore_vae(tmp_path / "paper.safetensors", paper=4)
    for init, continuing in ((plain, False), (with_branch, True)):
        argv = ["--data", str(photo_folder), "--init", str(init), "--steps", "1"]
        out = tmp_path / f"out-{continuing}.safetensors"
        trainer = PaperTrainer(parse_args([*argv, "--out", str(out), *TINY_PAPER_RUN]))
        trainer.evaluate()  # before any step
        assert (trainer.best is not None) == continuing == out.is_file()
    saved = load_file(str(out))
    assert all(torch.equal(saved[k], v) for k, v in load_file(str(with_branch)).items())
