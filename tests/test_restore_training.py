"""Training pieces of the restoration VAE: warm starts that change nothing, the raw scan beside
the prefiltered one, the worker processes that age the batches, and the conditional VAE's
recognition network that makes the latent worth reading."""

import argparse
import json
import queue
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from studio.models.device import DeviceError
from studio.models.upscalers import inspect_model
from studio.nn.nlm import denoise_colored
from studio.nn.restore_vae import (
    Recognition,
    RestoreVAE,
    build_from_state,
    gaussian_kl,
    warm_start,
)
from studio.train.photos import VALIDATION_PHOTOS
from studio.train.restore import (
    INPAINT_WEIGHT,
    KL_BALANCE,
    LARGEST_HOLE,
    MSE_SCALE,
    AgedPatches,
    Batch,
    BatchFeed,
    Trainer,
    Validation,
    _turned,
    decode_for_training,
    inpaint_mask,
    losses,
    main,
    make_batch,
    paint_hole,
    parse_args,
    revive_latent,
    share_stem,
)
from studio.train.restore_degrade import DamagedPhoto

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def network(fine: int = 1, seed: int = 0) -> RestoreVAE:
    """A small network whose restored RGB depends on its inputs (a fresh one adds nothing)."""
    torch.manual_seed(seed)
    model = RestoreVAE(width=8, latent=4, blocks=1, fine=fine).eval()
    with torch.no_grad():
        model.head.weight[:3].normal_(0, 0.3)
    return model


def with_posterior(model: RestoreVAE, generator: torch.Generator) -> Recognition:
    """A recognition network for `model` whose posterior no longer equals the prior."""
    recognition = Recognition(model.width, model.latent)
    with torch.no_grad():
        recognition.head.weight.normal_(0, 0.1, generator=generator)
    return recognition


def random_batch(generator: torch.Generator, inpainting: bool = True) -> Batch:
    """Two 16 px crops, the raw scan equal to the prefiltered one, damage where it inpaints."""
    image = torch.rand((2, 3, 16, 16), generator=generator)
    inpaint = (torch.rand((2, 1, 16, 16), generator=generator) > 0.8).float() * inpainting
    target = torch.rand(image.shape, generator=generator)
    return Batch(image, image, inpaint, target, inpaint)


def planes(seed: int, size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand((1, 3, size, size), generator=generator)
    raw = (image + 0.05 * torch.randn(image.shape, generator=generator)).clamp(0, 1)
    mask = (torch.rand((1, 1, size, size), generator=generator) > 0.9).float()
    noise = torch.randn((1, 1, size, size), generator=generator)
    return torch.cat([image, mask, noise, raw], dim=1)


def first_layout(model: RestoreVAE) -> dict[str, torch.Tensor]:
    """`model`'s weights as the first layout stored them: no raw-scan input, no fine blocks."""
    with torch.no_grad():
        model.stem.weight[:, 4:] = 0
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fine.")}
    state["stem.weight"] = state["stem.weight"][:, :4].clone()
    return state


def test_a_warm_start_from_a_network_without_the_raw_input_and_fine_blocks_changes_nothing():
    before = network(fine=0)
    old_state = first_layout(before)
    after = network(fine=2, seed=1)
    fresh = warm_start(after, old_state)

    assert fresh[0] == "stem.weight[:, 4:]"
    assert {name.split(".")[0] for name in fresh[1:]} == {"fine"}
    with torch.no_grad():
        x = planes(1)
        assert torch.allclose(after(x), before(x), atol=1e-6)
        assert not torch.allclose(after(x)[:, :3], x[:, :3], atol=1e-3)  # it does restore
        assert torch.count_nonzero(after.stem.weight[:, 4:]) == 0


def test_a_file_of_the_first_layout_still_loads_and_restores_as_before():
    before = network(fine=0)
    loaded = build_from_state(first_layout(before)).eval()
    with torch.no_grad():
        x = planes(4)
        assert torch.allclose(loaded(x), before(x), atol=1e-6)


def test_sharing_the_stem_keeps_the_output_where_raw_and_prefiltered_agree():
    model = network()
    with torch.no_grad():
        model.stem.weight[:, 4:] = 0  # a network that never learnt the raw scan
    x = planes(3)
    x[:, 5:8] = x[:, :3]
    with torch.no_grad():
        before = model(x)
        share_stem(model)
        assert torch.allclose(model(x), before, atol=1e-6)
    weight = model.stem.weight
    assert torch.equal(weight[:, 0:3], weight[:, 4:7])
    assert weight[:, 4:7].abs().sum() > 0


def test_the_network_listens_to_the_raw_scan_and_plain_rgb_means_both():
    model = network()
    x = planes(2)
    other = x.clone()
    other[:, 5:8] = torch.rand_like(other[:, 5:8])
    with torch.no_grad():
        assert not torch.allclose(model(x)[:, :3], model(other)[:, :3])
        rgb = x[:, :3]
        whole = torch.cat([rgb, torch.zeros_like(x[:, :2]), rgb], dim=1)
        assert torch.equal(model(rgb), model(whole))
        with pytest.raises(ValueError, match="3 or 8 planes"):
            model(x[:, :5])  # the first layout's planes: refused, not misread


def test_batches_carry_the_raw_scan_and_its_prefiltered_copy():
    patches = torch.rand((2, 3, 32, 32))
    plain = make_batch(patches, random.Random(4), strength=0.0)
    assert torch.equal(plain.degraded, plain.raw)
    prefiltered = make_batch(patches, random.Random(4), strength=7.0)
    assert torch.equal(prefiltered.raw, plain.raw)  # the same ageing, drawn from the same seed
    assert not torch.equal(prefiltered.degraded, prefiltered.raw)

    def roughness(batch: torch.Tensor) -> float:  # neighbour-to-neighbour variation
        return float((batch[..., 1:] - batch[..., :-1]).abs().mean())

    assert roughness(prefiltered.degraded) < roughness(prefiltered.raw)  # non-local means smooths


def test_a_replayed_batch_is_turned_as_one_piece():
    degraded = torch.rand((2, 3, 16, 16))
    batch = Batch(degraded, degraded + 1, degraded[:, :1] > 0.5, degraded * 2, degraded[:, :1])
    rng = random.Random(1)
    turned = [_turned(batch, rng) for _ in range(8)]
    assert any(not torch.equal(t.degraded, degraded) for t in turned)
    for t in turned:  # every plane moved the same way: pixels still match their targets
        assert torch.equal(t.raw, t.degraded + 1)
        assert torch.equal(t.target, t.degraded * 2)
        assert torch.equal(t.inpaint, t.degraded[:, :1] > 0.5)
        assert torch.equal(t.damage, t.degraded[:, :1])


def source(photos: list[Path], prefilter_here: bool = True) -> AgedPatches:
    args = argparse.Namespace(seed=0, patch=32, batch=2, prefilter=3.0, flat_keep=1.0)
    return AgedPatches(photos, args, prefilter_here=prefilter_here)


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    paths = []
    for k in range(2):
        rng = np.random.default_rng(k)
        path = tmp_path / f"photo-{k}.png"
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), np.uint8)).save(path)
        paths.append(path)
    return paths


def test_a_worker_process_ages_batches_and_replay_keeps_only_the_last_few(photos):
    with BatchFeed(source(photos), workers=1, replay=2, seed=0) as feed:
        batches = [feed.next() for _ in range(12)]
        assert len(feed.recent) <= 2
        assert feed.fresh + feed.replayed == 12
    assert all(
        b.degraded.shape == (2, 3, 32, 32) and b.raw.shape == (2, 3, 32, 32) for b in batches
    )
    assert not any(process.is_alive() for process in feed.processes)


def test_a_run_without_workers_repeats_exactly(photos):
    first = BatchFeed(source(photos), workers=0, replay=0, seed=0).next()
    again = BatchFeed(source(photos), workers=0, replay=0, seed=0).next()
    assert torch.equal(first.raw, again.raw) and torch.equal(first.target, again.target)


def test_a_failing_worker_stops_the_run_with_its_error_instead_of_hanging(photos, tmp_path):
    broken = tmp_path / "truncated.png"
    broken.write_bytes(photos[0].read_bytes()[:100])
    with (
        BatchFeed(source([broken]), workers=1, replay=0, seed=0) as feed,
        pytest.raises(RuntimeError, match="ageing a batch failed in worker 0"),
    ):
        feed.next()


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """Two training photos and the validation photos, by name."""
    folder = tmp_path / "photos"
    folder.mkdir()
    names = ["a.png", "b.png", *VALIDATION_PHOTOS]
    for k, name in enumerate(names):
        rng = np.random.default_rng(k)
        base = rng.integers(0, 255, (16, 16, 3), np.uint8)
        Image.fromarray(base).resize((224, 224), Image.Resampling.BICUBIC).save(folder / name)
    return folder


# A network and a feed small enough for a run of a few steps in a test, on one thread.
TINY_RUN = ["--width", "8", "--latent", "4", "--blocks", "1", "--fine", "1", "--patch", "32"]
TINY_RUN += ["--batch", "2", "--workers", "0", "--threads", "1"]


@pytest.mark.parametrize("prefilter_on", ["auto", "device"])
def test_a_short_run_saves_a_restorer_the_app_accepts(photo_folder, tmp_path, prefilter_on):
    out = tmp_path / "vae.safetensors"
    argv = ["--data", str(photo_folder), "--out", str(out), "--steps", "3", "--eval-every", "0"]
    assert main([*argv, *TINY_RUN, "--device", "cpu", "--prefilter-on", prefilter_on]) == 0

    info = inspect_model(out)
    assert info.purpose == "restore" and info.architecture == "StudioRestoreVAE"
    with safe_open(str(out), "pt") as handle:
        metadata = handle.metadata()
    assert metadata["run_steps"] == "3" and 1 <= int(metadata["steps"]) <= 3  # never the start
    assert json.loads(metadata["training_photos"]) == ["a.png", "b.png"]


def test_a_resumed_run_goes_on_with_the_recognition_network_saved_beside_the_weights(
    photo_folder, tmp_path
):
    out = tmp_path / "vae.safetensors"
    argv = ["--data", str(photo_folder), "--eval-every", "0", "--device", "cpu", "--seed", "3"]
    argv += TINY_RUN
    assert main([*argv, "--out", str(out), "--steps", "3"]) == 0
    saved = load_file(str(tmp_path / "vae.recognition.safetensors"))
    assert saved["head.weight"].abs().sum() > 0  # it learnt: q is no longer p

    more = [*argv, "--out", str(tmp_path / "more.safetensors"), "--steps", "1"]
    resumed = Trainer(parse_args([*more, "--resume", str(out)]))
    for name, value in resumed.recognition.state_dict().items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0)

    wrong = Recognition(resumed.model.width + 2, resumed.model.latent)  # another VAE's
    save_file(wrong.state_dict(), str(tmp_path / "vae.recognition.safetensors"))
    with pytest.raises(SystemExit, match=r"not the recognition network of .*move it away"):
        Trainer(parse_args([*more, "--resume", str(out)]))

    (tmp_path / "vae.recognition.safetensors").unlink()
    afresh = Trainer(parse_args([*more, "--resume", str(out)]))
    assert not afresh.recognition.head.weight.any()  # none beside: q starts as p again


def test_asking_to_train_on_a_gpu_this_machine_lacks_is_a_clear_error(photo_folder, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv = ["--data", str(photo_folder), "--out", str(tmp_path / "x"), "--steps", "1"]
    argv += ["--threads", "1"]  # main sets torch's threads, for the tests after this one too
    with pytest.raises(DeviceError, match="CUDA"):
        main([*argv, "--device", "cuda", "--workers", "0"])


def test_a_share_outside_0_to_1_or_a_budget_too_short_for_one_step_is_a_clear_error(
    photo_folder, tmp_path, capsys
):
    out = tmp_path / "vae.safetensors"
    argv = ["--data", str(photo_folder), "--out", str(out), *TINY_RUN]
    with pytest.raises(SystemExit):
        main([*argv, "--steps", "1", "--mean-share", "1.5"])
    assert "--mean-share is a share of the batch, 0 to 1" in capsys.readouterr().err

    with pytest.raises(SystemExit, match="no step finished within --minutes"):
        main([*argv, "--minutes", "1e-6", "--eval-every", "0"])
    assert not out.exists()


def test_the_pixel_loss_is_l1_or_scaled_squared_error_weighted_up_inside_the_inpaint_mask():
    model = network()
    batch = random_batch(torch.Generator().manual_seed(0))
    inpaint, target = batch.inpaint, batch.target

    recognition = Recognition(model.width, model.latent)
    l1 = losses(model, recognition, batch, torch.Generator().manual_seed(1), "l1")
    mse = losses(model, recognition, batch, torch.Generator().manual_seed(1), "mse")

    epsilon = torch.randn((2, model.latent, 4, 4), generator=torch.Generator().manual_seed(1))
    error = decode_for_training(model, recognition, batch, epsilon)["restored"] - target
    for term, per_pixel in ((l1["l1"], error.abs()), (mse["mse"], MSE_SCALE * error.pow(2))):
        inside = (per_pixel * inpaint).sum() / (3 * inpaint.sum() + 1)
        assert torch.allclose(term, per_pixel.mean() + INPAINT_WEIGHT * inside)
    assert torch.equal(l1["bce"], mse["bce"]) and torch.equal(l1["kl"], mse["kl"])


def test_batches_and_their_replays_come_out_on_the_trainers_device(photos):
    device = torch.device("meta")  # stands in for a GPU: only where the tensors live is checked
    with BatchFeed(source(photos), workers=1, replay=2, seed=0, device=device) as feed:
        batches = [feed.next() for _ in range(6)]
    assert all(getattr(b, f).device == device for b in batches for f in ("degraded", "target"))


def test_a_worker_feeding_a_device_prefilter_gets_every_batch_filtered_exactly_once(photos):
    feed = BatchFeed(source(photos, prefilter_here=False), workers=1, replay=2, seed=0)
    with feed:
        batches = [feed.next() for _ in range(4)]

        class Behind:  # the worker has nothing ready: the feed replays
            def get_nowait(self):
                raise queue.Empty

        feed.queue = Behind()
        batches += [feed.next() for _ in range(4)]
    assert feed.replayed == 4
    for batch in batches:  # fresh or turned, each one filtered once
        assert torch.equal(batch.degraded, denoise_colored(batch.raw, 3.0))


def test_prefiltering_on_the_device_gives_the_batches_the_workers_would_have(photos):
    """On a GPU the workers only age and the trainer prefilters: the network must see the same."""
    in_workers = BatchFeed(source(photos), workers=0, replay=0, seed=0).next()
    on_device = BatchFeed(source(photos, False), workers=0, replay=0, seed=0).next()

    assert torch.equal(on_device.raw, in_workers.raw)
    assert torch.equal(on_device.degraded, in_workers.degraded)
    assert not torch.equal(on_device.degraded, on_device.raw)


def test_the_recognition_network_starts_as_the_prior_and_the_kl_is_that_of_two_gaussians():
    generator = torch.Generator().manual_seed(0)
    prior_mean, prior_logvar = torch.randn((2, 2, 4, 4, 4), generator=generator)
    clean, image, raw = torch.rand((3, 2, 3, 16, 16), generator=generator)
    inpaint = torch.zeros((2, 1, 16, 16))
    mean, logvar = Recognition(8, 4)(clean, image, raw, inpaint, prior_mean, prior_logvar)
    assert torch.equal(mean, prior_mean) and torch.equal(logvar, prior_logvar)

    other_mean, other_logvar = torch.randn((2, 2, 4, 4, 4), generator=generator)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(other_mean, torch.exp(0.5 * other_logvar)),
        torch.distributions.Normal(prior_mean, torch.exp(0.5 * prior_logvar)),
    )
    kl = gaussian_kl(other_mean, other_logvar, prior_mean, prior_logvar)
    assert torch.allclose(kl, expected, atol=1e-5)
    assert torch.equal(gaussian_kl(prior_mean, prior_logvar, prior_mean, prior_logvar), 0 * kl)


def test_training_decodes_a_posterior_sample_and_each_kl_trains_one_side():
    model = network()
    generator = torch.Generator().manual_seed(0)
    recognition = with_posterior(model, generator)
    batch = random_batch(generator)
    image, inpaint, target = batch.degraded, batch.inpaint, batch.target
    epsilon = torch.randn((2, 4, 4, 4), generator=generator)

    out = decode_for_training(model, recognition, batch, epsilon)
    prior_mean, prior_logvar, skips = model.encode(image, image, inpaint)
    mean, logvar = recognition(target, image, image, inpaint, prior_mean, prior_logvar)
    residual = model.decode(mean + torch.exp(0.5 * logvar) * epsilon, skips)[0]
    assert torch.allclose(out["restored"], image * (1 - inpaint) + residual, atol=1e-6)
    assert torch.allclose(out["kl_posterior"], out["kl_prior"]) and out["kl_prior"].mean() > 0

    def touched(term: torch.Tensor) -> set[str]:
        model.zero_grad()
        recognition.zero_grad()
        term.mean().backward(retain_graph=True)
        heads = {"posterior": model.posterior, "recognition": recognition.head}
        return {
            n
            for n, layer in heads.items()
            if layer.weight.grad is not None and layer.weight.grad.any()
        }

    assert touched(out["kl_prior"]) == {"posterior"}
    assert "recognition" in touched(out["kl_posterior"])
    assert touched(out["restored"]) == {"posterior", "recognition"}


def test_reviving_the_latent_gives_only_the_decoders_weights_on_it_a_fresh_scale():
    model = network()
    with torch.no_grad():
        model.from_latent.weight[:, : model.latent] *= 0.01
    before = model.from_latent.weight.detach().clone()
    revive_latent(model)
    after = model.from_latent.weight.detach()
    assert torch.equal(after[:, model.latent :], before[:, model.latent :])
    fresh_scale = torch.nn.Conv2d(after.shape[1], after.shape[0], 3).weight.abs().mean()
    assert after[:, : model.latent].abs().mean() > 0.5 * fresh_scale


def test_inpaint_masks_keep_the_damage_and_sometimes_paint_over_a_large_patch():
    damage = np.zeros((128, 128), np.float32)
    damage[60:62, 10:100] = 1  # a scratch
    flat = np.zeros((128, 128, 3), np.float32)
    aged = DamagedPhoto(flat, flat, flat, flat, damage, np.ones_like(damage))
    rng = random.Random(0)
    masks = [inpaint_mask(aged, rng) for _ in range(200)]

    assert all(mask[damage > 0].all() for mask in masks)  # grown, never shrunk
    widest = []
    for mask in masks:
        eroded = cv2.erode(mask, np.ones((13, 13), np.uint8))  # strokes: at most 11 px wide
        widest.append(bool(eroded.any()))
    assert 0.08 < np.mean(widest) < 0.3  # a fifth have a hole (8 to 48 px across)


def test_a_painted_hole_is_8_to_48_px_across():
    rng = random.Random(0)
    widths = []
    for _ in range(300):
        hole = np.zeros((128, 128), np.float32)
        paint_hole(hole, rng)
        # twice the distance from the hole's middle to the first pixel outside: its short axis
        inside = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        widths.append(2 * inside.max())
    assert min(widths) >= 6 and max(widths) <= LARGEST_HOLE + 4
    assert max(widths) > 0.75 * LARGEST_HOLE  # the large ones come too


def test_validation_scores_detection_only_where_the_engine_detects_and_spread_where_it_fills():
    """The engine detects damage on a pass that inpaints nothing: crops that inpaint do not count
    for the IoU (the head is not trained there). The spread is in 8-bit levels inside the mask."""
    damage = torch.zeros((2, 1, 8, 8))
    damage[:, :, 2, :] = 1
    inpaint = torch.zeros((2, 1, 8, 8))
    inpaint[1, :, 2:4, :] = 1  # crop 1 inpaints its damage
    image = torch.full((2, 3, 8, 8), 0.5)
    validation = Validation.__new__(Validation)
    validation.batch = Batch(image, image, inpaint, image, damage)
    validation.noise = torch.ones_like(inpaint)

    class Answer(torch.nn.Module):  # sees damage only on crop 0; a sample moves 2 levels
        def forward(self, planes: torch.Tensor) -> torch.Tensor:
            found = damage * torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)
            shift = planes[:, 4:5] * 2 / 255
            return torch.cat([planes[:, :3] + shift, found, torch.zeros_like(found)], dim=1)

    _psnr, iou, spread = validation.measure(Answer())
    assert iou == 1.0
    assert spread == pytest.approx(2.0)


@pytest.mark.parametrize("share", [0.5, 1.0])
def test_a_share_of_the_batch_decodes_the_latents_mean_as_picture_1_does(share):
    model = network()
    generator = torch.Generator().manual_seed(0)
    recognition = with_posterior(model, generator)
    batch = random_batch(generator)
    image, inpaint = batch.degraded, batch.inpaint

    decoded = [
        decode_for_training(model, recognition, batch, torch.randn((2, 4, 4, 4)), share)
        for _ in range(2)
    ]

    planes = torch.cat([image, inpaint, torch.zeros_like(inpaint), image], dim=1)
    picture_1 = model(planes)[:, :3]
    first = round(2 * share)
    assert torch.allclose(decoded[0]["restored"][:first], picture_1[:first], atol=1e-6)
    if first < 2:  # the rest decode samples
        assert not torch.allclose(decoded[0]["restored"][first:], decoded[1]["restored"][first:])
    assert decoded[0]["kl_prior"].shape[0] == 2 - first
    assert torch.isfinite(losses(model, recognition, batch, generator, mean_share=share)["total"])


@pytest.mark.parametrize("kl_free", [0.0, 1e3])
def test_the_posteriors_kl_is_free_up_to_its_allowance_and_the_priors_never(kl_free):
    model = network()
    generator = torch.Generator().manual_seed(0)
    recognition = with_posterior(model, generator)
    batch = random_batch(generator, inpainting=False)

    def total(kl_weight: float) -> torch.Tensor:
        noise = torch.Generator().manual_seed(1)
        return losses(model, recognition, batch, noise, kl_weight=kl_weight, kl_free=kl_free)

    parts = total(1.0)
    kl_only = parts["total"] - total(0.0)["total"]  # the same sample: the KL term alone
    kl = parts["kl"]
    expected = KL_BALANCE * max(float(kl.detach()), kl_free) + (1 - KL_BALANCE) * kl
    assert torch.allclose(kl_only, expected, atol=1e-6)

    model.zero_grad()
    recognition.zero_grad()
    kl_only.backward()
    grad = recognition.head.weight.grad
    moves_posterior = grad is not None and bool(grad.any())
    assert model.posterior.weight.grad.any()  # the prior always follows
    assert moves_posterior == (kl_free == 0.0)  # within the allowance, the posterior is free


def test_the_damage_head_is_not_taught_where_it_inpaints():
    model = network()
    recognition = Recognition(model.width, model.latent)
    generator = torch.Generator().manual_seed(0)
    image = torch.rand((2, 3, 16, 16), generator=generator)
    damage = (torch.rand((2, 1, 16, 16), generator=generator) > 0.7).float()
    inpaint = torch.zeros_like(damage)
    inpaint[0] = damage[0]  # crop 0 inpaints its damage: the head cannot see it there
    batch = Batch(image, image, inpaint, image, damage)

    parts = losses(model, recognition, batch, torch.Generator().manual_seed(1))
    epsilon = torch.randn((2, 4, 4, 4), generator=torch.Generator().manual_seed(1))
    logit = decode_for_training(model, recognition, batch, epsilon)["damage_logit"]
    per_pixel = torch.nn.functional.binary_cross_entropy_with_logits(
        logit, damage, pos_weight=torch.tensor(4.0), reduction="none"
    )
    assert torch.allclose(parts["bce"], (per_pixel * (1 - inpaint)).mean())
