r"""Train Studio's restoration VAE (`studio.nn.restore_vae`) on photos aged by `restore_degrade`.

    python -m studio.train.restore --data /usr/share/backgrounds \
        --data /usr/share/backgrounds/mate/nature --minutes 50 --out restore-vae.safetensors

(The model card studio/assets/models/studio-restore-vae.md gives the shipped file's exact commands.)

Each step cuts random patches from the training photos (the upscalers' split: validation and test
photos are never trained on), ages them on the fly (half by the wide mix, half as a typical scanned
print), gives the network the raw scan and its prefiltered copy, and asks it, for half, to inpaint
the damage mask (dilated a little, sometimes with random brush strokes or a patch up to 48 px
across added, as a person paints); for the other half nothing is inpainted and the damage must be
kept while the photo is denoised. Losses: L1 to the target (the photo with its global tone kept;
inside the inpaint mask weighted up), the Laplace negative log-likelihood of the decoded scale (on
a detached mean, so it only teaches the uncertainty), binary cross-entropy of the damage head
(outside the inpaint mask: inside, it cannot see), and the KL between the latent's posterior given
the clean photo (a recognition network, for training only) and the network's own Gaussian given the
scan (the prior, which inference samples), free up to `--kl-free` nats per element and balanced so
that the prior always follows: a conditional VAE, so that the decoder reads the latent and sampled
variations differ.

An exponential moving average of the weights is measured on fixed aged crops of the validation
photos every `--eval-every` seconds (also how far a sampled variation differs from the latent's
mean where it inpaints); the weights with the best PSNR are kept, or with `--keep last` the last,
never the ones it started from. Seeded throughout; on the CPU, `--steps` with at most one worker
and no `--replay` repeats exactly (GPU kernels need not); `--minutes` sets the schedule by the
clock.
`--resume FILE` continues from saved weights, and from the recognition network saved beside
them (`NAME.recognition.safetensors` beside `NAME.safetensors`; where there is none it starts
afresh, the posterior equal to the prior, and the variations shrink until it has learnt again);
`--init FILE` starts a network of another shape from them where they fit (new inputs and blocks
start as no-ops). Batches are aged in `--workers` background processes. The non-local-means
prefilter is most of the ageing's cost (ten times the rest): on a CUDA GPU the trainer runs it
there (`studio.nn.nlm`, level for level OpenCV's), so the workers only age; `--replay` keeps the
GPU busy if they still fall behind.
`--device` picks CUDA, then Apple MPS, then the CPU. Weights are saved as fp32 safetensors with
the facts in metadata.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import queue
import random
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from studio.models.device import DEVICE_CHOICES, resolve_device
from studio.nn.nlm import denoise_colored
from studio.nn.restore_vae import (
    ARCHITECTURE_ID,
    Recognition,
    RestoreVAE,
    build_from_state,
    gaussian_kl,
    infer_config,
    prefilter,
    warm_start,
)
from studio.train.data import PatchPool, eval_crops
from studio.train.metrics import psnr_y
from studio.train.photos import VALIDATION_PHOTOS, named_photos, training_photos
from studio.train.restore_degrade import (
    SCANNED_PRINT,
    DamagedPhoto,
    OldPhotoDamage,
    degrade_old_photo,
)

INPAINT_WEIGHT = 0.5  # extra pixel-loss weight inside the inpaint mask (a small share of pixels)
MSE_SCALE = 16.0  # --loss mse: squared error x this about matches L1's pull at a 0.03 error
SCALE_WEIGHT = 0.02
MASK_WEIGHT = 0.1
MASK_POS_WEIGHT = 4.0  # damage is rare; positives count this much more
LARGEST_HOLE = 48  # px across: the largest patch painted over in training
KL_WEIGHT = 0.05  # on the KL above the free nats: more than the pixels gain from one more nat
KL_FREE = 0.1  # nats per latent element
KL_BALANCE = 0.8  # the KL's share that moves the posterior; the rest moves the prior


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m studio.train.restore",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", action="append", required=True, metavar="DIR")
    parser.add_argument("--out", type=Path, required=True)
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float, help="wall-clock budget, evaluations included")
    budget.add_argument("--steps", type=int, help="exact number of steps (repeatable runs)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", type=Path, help="continue from these weights")
    start.add_argument(
        "--init", type=Path, help="start from these weights where they fit the new network"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help=f"{', '.join(DEVICE_CHOICES)} or cuda:N")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--latent", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--fine", type=int, default=2, help="residual blocks at full resolution")
    parser.add_argument(
        "--share-stem",
        action="store_true",
        help="start with the first layer's weights split equally between the prefiltered and raw "
        "scans (a network started from one without the raw input otherwise barely learns it)",
    )
    parser.add_argument(
        "--prefilter",
        type=float,
        default=5.0,
        metavar="H",
        help="non-local-means strength in front of the network (0 = none)",
    )
    parser.add_argument(
        "--prefilter-on",
        choices=("auto", "workers", "device"),
        default="auto",
        help="where the prefilter runs: in the ageing workers (OpenCV), or batched on the "
        "training device; auto: the device when it is a CUDA GPU",
    )
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--flat-keep",
        type=float,
        default=0.5,
        help="share of flat patches kept (grain shows most on them)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes ageing patches")
    parser.add_argument(
        "--replay",
        type=int,
        default=0,
        metavar="N",
        help="reuse one of the last N batches (turned) instead of waiting for the workers; they "
        "are kept on the device (N=256 at batch 16: about 3 GB)",
    )
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument(
        "--loss",
        choices=("l1", "mse"),
        default="l1",
        help="pixel loss; mse for a last phase when PSNR is what counts",
    )
    parser.add_argument(
        "--kl-weight",
        type=float,
        default=KL_WEIGHT,
        help="weight of the KL (the posterior's part only above --kl-free)",
    )
    parser.add_argument(
        "--kl-free",
        type=float,
        default=KL_FREE,
        metavar="NATS",
        help="KL per latent element the posterior may spend for free: how much the latent "
        "carries, so how far variations differ",
    )
    parser.add_argument(
        "--mean-share",
        type=float,
        default=0.0,
        metavar="F",
        help="share of each batch decoded from the latent's mean, as picture 1 is: trains the "
        "best single answer directly (its effect on the variations is unmeasured)",
    )
    parser.add_argument(
        "--revive-latent",
        action="store_true",
        help="restart the decoder's weights on the latent at a fresh layer's scale: a network "
        "whose latent collapsed to the prior ignores it, and the gradient alone barely revives it",
    )
    parser.add_argument(
        "--keep",
        choices=("best", "last"),
        default="best",
        help="save the evaluated weights with the best validation PSNR, or the last ones",
    )
    parser.add_argument("--eval-every", type=float, default=60.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    budget = args.steps if args.minutes is None else args.minutes
    if budget <= 0:
        parser.error("train for at least one step")
    if not 0 <= args.mean_share <= 1:
        parser.error("--mean-share is a share of the batch, 0 to 1")
    if args.share_stem and not args.init:
        parser.error("--share-stem goes with --init (a resumed run keeps its weights)")
    return args


@dataclass
class Batch:
    degraded: torch.Tensor  # (N, 3, H, W): the aged patch after the prefilter
    raw: torch.Tensor  # (N, 3, H, W): the aged patch as scanned
    inpaint: torch.Tensor  # (N, 1, H, W): where the network paints anew
    target: torch.Tensor  # (N, 3, H, W)
    damage: torch.Tensor  # (N, 1, H, W)

    def to(self, device: torch.device) -> Batch:
        # not non_blocking: the source is pageable memory freed right after (unsafe on MPS)
        return Batch(*(getattr(self, f.name).to(device) for f in fields(self)))


TRAINING_MIXES = (OldPhotoDamage(), SCANNED_PRINT)  # wide, for robustness; and the typical print


def make_batch(
    patches: torch.Tensor,
    rng: random.Random,
    strength: float,
    inpaint_share: float = 0.5,
    mixes: Sequence[OldPhotoDamage] = TRAINING_MIXES,
) -> Batch:
    """Age `patches` (N, 3, H, W), each by one of `mixes`, prefilter them at `strength` as the
    engine does, and choose what each one inpaints."""
    samples = []
    for patch in patches:
        mix = mixes[rng.randrange(len(mixes))] if len(mixes) > 1 else mixes[0]
        aged = degrade_old_photo(patch.permute(1, 2, 0).numpy(), rng, mix)
        inpaint = inpaint_mask(aged, rng) if rng.random() < inpaint_share else None
        samples.append(_sample(aged, prefilter(aged.degraded, strength), inpaint))
    return Batch(*(torch.stack(parts) for parts in zip(*samples, strict=True)))


def inpaint_mask(aged: DamagedPhoto, rng: random.Random) -> np.ndarray:
    """The damage mask as a person would leave it: dilated a little, sometimes with strokes,
    sometimes with a large patch painted over (a tear, a stain): where the latent decides."""
    mask = aged.damage.copy()
    grow = rng.randint(0, 2)
    if grow:
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=grow)
    height, width = mask.shape
    if rng.random() < 0.2:
        for _ in range(rng.randint(1, 3)):
            start = (rng.randrange(width), rng.randrange(height))
            end = (rng.randrange(width), rng.randrange(height))
            cv2.line(mask, start, end, 1.0, rng.randint(3, 11))
    if rng.random() < 0.2:
        paint_hole(mask, rng)
    return mask


def paint_hole(mask: np.ndarray, rng: random.Random) -> None:
    """Paint a filled ellipse 8 to LARGEST_HOLE px across, turned at random, into `mask`."""
    height, width = mask.shape
    centre = (rng.randrange(width), rng.randrange(height))
    axes = (rng.randint(4, LARGEST_HOLE // 2), rng.randint(4, LARGEST_HOLE // 2))
    cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 1.0, -1)


def _sample(
    aged: DamagedPhoto, prefiltered: np.ndarray, inpaint: np.ndarray | None
) -> tuple[torch.Tensor, ...]:
    def planes(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)

    mask = np.zeros_like(aged.damage) if inpaint is None else inpaint
    target = aged.toned * mask[..., None] + aged.damaged * (1 - mask[..., None])
    return (
        planes(prefiltered),
        planes(aged.degraded),
        planes(mask[..., None]),
        planes(target),
        planes(aged.damage[..., None]),
    )


def decode_for_training(
    model: RestoreVAE,
    recognition: Recognition,
    batch: Batch,
    epsilon: torch.Tensor,
    mean_share: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Decode a sample of the recognition network's posterior (so the decoder learns to read the
    latent), and its KL to the network's own Gaussian twice: with the prior held fixed (to train
    the posterior) and with the posterior held fixed (to train the prior). The first `mean_share`
    of the batch decodes the prior's mean instead, as picture 1 does (no KL there)."""
    prior_mean, prior_logvar, skips = model.encode(batch.degraded, batch.raw, batch.inpaint)
    first = int(mean_share * batch.degraded.shape[0])
    mean, logvar = recognition(
        batch.target[first:],
        batch.degraded[first:],
        batch.raw[first:],
        batch.inpaint[first:],
        prior_mean[first:],
        prior_logvar[first:],
    )
    z = torch.cat([prior_mean[:first], mean + torch.exp(0.5 * logvar) * epsilon[first:]])
    residual, log_scale, damage = model.decode(z, skips)
    prior_mean, prior_logvar = prior_mean[first:], prior_logvar[first:]
    return {
        "restored": batch.degraded * (1 - batch.inpaint) + residual,
        "log_scale": log_scale,
        "damage_logit": damage,
        "kl_posterior": gaussian_kl(mean, logvar, prior_mean.detach(), prior_logvar.detach()),
        "kl_prior": gaussian_kl(mean.detach(), logvar.detach(), prior_mean, prior_logvar),
    }


def losses(
    model: RestoreVAE,
    recognition: Recognition,
    batch: Batch,
    generator: torch.Generator,
    pixel_loss: str = "l1",
    kl_weight: float = KL_WEIGHT,
    kl_free: float = KL_FREE,
    mean_share: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Each term, and the total the step minimises."""
    n, _, height, width = batch.degraded.shape
    shape = (n, model.latent, height // 4, width // 4)
    epsilon = torch.randn(shape, generator=generator, device=generator.device)
    out = decode_for_training(model, recognition, batch, epsilon, mean_share)
    error = (out["restored"] - batch.target).abs()
    per_pixel = error if pixel_loss == "l1" else MSE_SCALE * error.pow(2)
    inside = (per_pixel * batch.inpaint).sum() / (3 * batch.inpaint.sum() + 1)
    pixel = per_pixel.mean() + INPAINT_WEIGHT * inside
    pixel_error = error.detach().mean(dim=1, keepdim=True)
    scale_nll = (pixel_error * torch.exp(-out["log_scale"]) + out["log_scale"]).mean()
    bce = F.binary_cross_entropy_with_logits(  # not where it inpaints: it cannot see there
        out["damage_logit"],
        batch.damage,
        weight=1 - batch.inpaint,
        pos_weight=torch.tensor(MASK_POS_WEIGHT, device=batch.damage.device),
    )
    # Per latent element of the sampled items (0 when all of the batch decoded the mean), then
    # weighed by their share, as the pixel loss weighs them.
    elements = max(out["kl_prior"].numel(), 1)
    kl_posterior, kl_prior = out["kl_posterior"].sum() / elements, out["kl_prior"].sum() / elements
    sampled = out["kl_prior"].shape[0] / n
    # Free below `kl_free`: the latent may carry that much. Balanced (as in DreamerV2): the prior
    # always moves towards the posterior, so that what inference samples is what the decoder read.
    kl = sampled * (KL_BALANCE * kl_posterior.clamp(min=kl_free) + (1 - KL_BALANCE) * kl_prior)
    total = pixel + SCALE_WEIGHT * scale_nll + MASK_WEIGHT * bce + kl_weight * kl
    return {pixel_loss: pixel, "nll": scale_nll, "bce": bce, "kl": kl_prior, "total": total}


class Validation:
    """Crops of the validation photos aged like a typical scanned print, fixed by seed: half
    inpaint their damage mask."""

    def __init__(
        self, photos: Sequence[Path], seed: int, strength: float, device: torch.device
    ) -> None:
        truth = eval_crops(photos, 192, per_photo=6)
        rng = random.Random(seed + 1000)
        batch = make_batch(truth, rng, strength, mixes=(SCANNED_PRINT,))
        self.input_psnr = psnr_y(batch.degraded, batch.target, 4)
        self.batch = batch.to(device)
        noise = torch.randn(batch.inpaint.shape, generator=torch.Generator().manual_seed(seed))
        self.noise = noise.to(device)

    @torch.no_grad()
    def measure(self, model: RestoreVAE) -> tuple[float, float, float]:
        """PSNR (Y) of the restoration from the latent's mean, the damage head's IoU at 0.5 on the
        crops that inpaint nothing (as the engine detects), and how far a sampled variation
        differs from the mean where it inpaints (mean, in 8-bit levels)."""
        out = model(self._planes(torch.zeros_like(self.batch.inpaint)))
        psnr = psnr_y(out[:, :3].clamp(0, 1).cpu(), self.batch.target.cpu(), 4)
        seen = self.batch.inpaint.amax(dim=(1, 2, 3), keepdim=True) == 0
        predicted = (out[:, 3:4] > 0.5) & seen
        truth = (self.batch.damage > 0.5) & seen
        iou = float((predicted & truth).sum() / max(int((predicted | truth).sum()), 1))
        sampled = model(self._planes(self.noise))
        change = (sampled[:, :3] - out[:, :3]).abs().mean(dim=1, keepdim=True) * self.batch.inpaint
        spread = float(255 * change.sum() / self.batch.inpaint.sum().clamp(min=1))
        return psnr, iou, spread

    def _planes(self, noise: torch.Tensor) -> torch.Tensor:
        batch = self.batch
        return torch.cat([batch.degraded, batch.inpaint, noise, batch.raw], dim=1)


class Trainer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = resolve_device(args.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one patch size throughout
        torch.manual_seed(args.seed)
        self.generator = torch.Generator(self.device).manual_seed(args.seed)
        self.photos = training_photos(args.data)
        self.validation_photos = named_photos(args.data, VALIDATION_PHOTOS)
        if not self.photos or not self.validation_photos:
            raise SystemExit(f"no training or validation photos found in {args.data}")
        log(f"training photos ({len(self.photos)}): {', '.join(p.name for p in self.photos)}")
        log(f"validation photos: {', '.join(p.name for p in self.validation_photos)}")
        self.validation = Validation(self.validation_photos, args.seed, args.prefilter, self.device)
        log(f"validation input PSNR {self.validation.input_psnr:.3f} dB")
        self.resumed_steps = 0
        if args.resume:
            state = {k: v.float() for k, v in load_file(str(args.resume)).items()}
            self.model = build_from_state(state)
            with open(args.resume, "rb") as handle:
                self.resumed_steps = _metadata_steps(handle.read())
            log(f"resumed from {args.resume} ({self.resumed_steps} steps)")
            self.model.prefilter_strength.fill_(args.prefilter)
        else:
            state = (
                {k: v.float() for k, v in load_file(str(args.init)).items()} if args.init else {}
            )
            paper = int(infer_config(state)["paper"]) if state else 0  # a paper branch is kept
            self.model = RestoreVAE(
                args.width, args.latent, args.blocks, args.prefilter, args.fine, paper
            )
            if args.init:
                fresh = warm_start(self.model, state)
                self.model.prefilter_strength.fill_(args.prefilter)  # what it trains behind now
                log(f"started from {args.init}; new: {', '.join(fresh) or 'nothing'}")
            if args.share_stem:
                share_stem(self.model)
        self.branch_facts = self._paper_facts(args.resume or args.init)
        if args.revive_latent:
            revive_latent(self.model)
        self.model.to(self.device)
        log(f"training on {self.device}")
        on_device = args.prefilter_on == "device" or (
            args.prefilter_on == "auto" and self.device.type == "cuda"
        )
        if args.prefilter <= 0:
            log("prefilter: none")
        else:
            log(f"prefilter: {f'batched on {self.device}' if on_device else 'OpenCV, as aged'}")
        self.feed = BatchFeed(
            AgedPatches(self.photos, args, prefilter_here=not on_device),
            args.workers,
            args.replay,
            args.seed,
            self.device,
        )
        # Training only: its last layer starts at zero, so a fresh one starts as q = p.
        self.recognition = Recognition(self.model.width, self.model.latent)
        beside = recognition_path(args.resume) if args.resume else None
        if beside is not None and beside.is_file():
            try:
                self.recognition.load_state_dict(load_file(str(beside)))
            except RuntimeError as error:  # torch's wall of mismatched shapes
                raise SystemExit(
                    f"{beside} is not the recognition network of {args.resume} (width "
                    f"{self.model.width}, latent {self.model.latent}); move it away to start "
                    "the recognition network afresh"
                ) from error
            log(f"recognition network from {beside}")
        self.recognition.to(self.device)
        self.trained = [*self.model.parameters(), *self.recognition.parameters()]
        self.average = copy.deepcopy(self.model).requires_grad_(False)
        self.optimiser = torch.optim.Adam(self.trained, args.lr, betas=(0.9, 0.99))
        self.step = 0
        self.best: Kept | None = None
        self.started = time.perf_counter()

    def fraction(self) -> float:
        if self.args.steps is not None:
            return self.step / self.args.steps
        return self.elapsed() / (60 * self.args.minutes)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def learning_rate(self, fraction: float) -> float:
        warmup = min(1.0, (self.step + 1) / 50)
        return self.args.lr * warmup * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * fraction)))

    def train(self) -> None:
        self.evaluate()
        next_eval = self.args.eval_every
        shown: dict[str, torch.Tensor] = {}  # running means, read only when shown (no GPU sync)
        while self.fraction() < 1:
            for group in self.optimiser.param_groups:
                group["lr"] = self.learning_rate(self.fraction())
            batch = self.feed.next()
            parts = losses(
                self.model,
                self.recognition,
                batch,
                self.generator,
                self.args.loss,
                self.args.kl_weight,
                self.args.kl_free,
                self.args.mean_share,
            )
            self.optimiser.zero_grad(set_to_none=True)
            parts["total"].backward()
            torch.nn.utils.clip_grad_norm_(self.trained, 1.0)
            self.optimiser.step()
            self.step += 1
            self._update_average()
            for name, value in parts.items():
                value = value.detach()
                shown[name] = 0.95 * shown[name] + 0.05 * value if name in shown else value
            if self.elapsed() >= next_eval or self.fraction() >= 1:
                next_eval = self.elapsed() + self.args.eval_every
                text = " ".join(f"{k} {v.item():.4f}" for k, v in shown.items())
                if self.args.replay:
                    text += f" replayed {self.feed.replayed}/{self.step}"
                self.evaluate(f"step {self.step} {self.elapsed():.0f}s {text}")

    def _update_average(self) -> None:
        decay = min(0.999, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for mine, live in zip(self.average.parameters(), self.model.parameters(), strict=True):
                mine.lerp_(live, 1 - decay)

    def evaluate(self, prefix: str = "start") -> None:
        psnr, iou, spread = self.validation.measure(self.average.eval())
        kept = self.step > 0 and (
            self.best is None or psnr > self.best.psnr or self.args.keep == "last"
        )
        if kept:
            self.best = Kept(
                cpu_copy(self.average), cpu_copy(self.recognition), self.step, psnr, iou
            )
            self.save(self.args.out, quiet=True)  # a run stopped early still leaves its best
        log(
            f"{prefix} | val PSNR {psnr:.3f} damage IoU {iou:.3f}, a variation differs by "
            f"{spread:.2f} levels where inpainted" + (" *" if kept else "")
        )

    def _paper_facts(self, source: Path | None) -> dict[str, str]:
        """How the paper branch this run keeps (untrained) was trained, as its file says."""
        if source is None or self.model.paper is None:
            return {}
        with safe_open(str(source), "pt") as handle:
            facts = handle.metadata() or {}
        return {k: v for k, v in facts.items() if k.startswith("paper_")}

    def save(self, out: Path, *, quiet: bool = False) -> None:
        assert self.best is not None
        step, psnr, iou = self.best.step, self.best.psnr, self.best.iou
        metadata = {
            **self.branch_facts,
            "architecture": ARCHITECTURE_ID,
            "config": json.dumps(self.model.config()),
            "seed": str(self.args.seed),
            "steps": str(self.resumed_steps + step),
            "run_steps": str(self.step),
            "minutes": f"{self.elapsed() / 60:.1f}",
            "validation_psnr_y": f"{psnr:.3f}",
            "validation_input_psnr_y": f"{self.validation.input_psnr:.3f}",
            "validation_damage_iou": f"{iou:.3f}",
            "training_photos": json.dumps([p.name for p in self.photos]),
            "validation_photos": json.dumps([p.name for p in self.validation_photos]),
            "command": " ".join(["python -m studio.train.restore", *sys.argv[1:]]),
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file(self.best.state, str(out), metadata=metadata)
        # What a --resume needs to go on drawing informative latents; never shipped.
        save_file(self.best.recognition, str(recognition_path(out)))
        if not quiet:
            log(f"saved step {step} (val PSNR {psnr:.3f}, damage IoU {iou:.3f}) to {out}")


@dataclass
class Kept:
    """The evaluated weights a run saves: the averaged network's, the recognition network's."""

    state: dict[str, torch.Tensor]
    recognition: dict[str, torch.Tensor]
    step: int
    psnr: float
    iou: float


def cpu_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


def recognition_path(weights: Path) -> Path:
    """Where the training-only recognition network is kept beside `weights`."""
    return weights.with_name(f"{weights.stem}.recognition.safetensors")


class BatchSource(Protocol):
    """What `BatchFeed` draws from: `AgedPatches`, or the paper branch's `PaperCrops`."""

    prefilter_here: bool  # False: the feed prefilters each fresh batch's `raw` at `strength`
    strength: float

    def batches(self, worker: int) -> Iterator[Any]: ...


class AgedPatches:
    """An endless stream of aged training batches; worker `k` draws its own, seeded by the
    run's seed and `k`."""

    def __init__(
        self, photos: Sequence[Path], args: argparse.Namespace, prefilter_here: bool = True
    ) -> None:
        self.photos = list(photos)
        self.seed, self.patch, self.size = args.seed, args.patch, args.batch
        self.strength = args.prefilter  # the prefilter the network trains behind
        self.prefilter_here = prefilter_here  # False: the feed prefilters on its device
        self.flat_keep = args.flat_keep

    def batches(self, worker: int) -> Iterator[Batch]:
        rng = random.Random(f"restore-batches/{self.seed}/{worker}")
        pool = PatchPool(self.photos, self.patch, rng, flat_keep=self.flat_keep)
        strength = self.strength if self.prefilter_here else 0.0
        while True:
            yield make_batch(pool.batch(self.size), rng, strength)


@dataclass
class WorkerFailure:
    worker: int
    text: str  # the traceback, shown by the trainer


def _produce(source: BatchSource, worker: int, batches: Any) -> None:
    cv2.setNumThreads(1)  # one core per worker; the trainer has the others
    torch.set_num_threads(1)
    try:
        for batch in source.batches(worker):
            batches.put(batch)
    except BaseException:  # reported by the trainer, which would otherwise wait forever
        batches.put(WorkerFailure(worker, traceback.format_exc()))


class BatchFeed:
    """Batches aged by `workers` processes (0: in this one). With `replay`, when the workers
    fall behind the trainer (ageing a batch costs more than a step on a GPU), one
    of the last `replay` batches is used again, turned or mirrored, rather than waiting. Without
    replay, and with at most one worker, the batches repeat exactly; several workers
    fill one queue in the order they finish. Batches come out on `device` (and are turned there);
    a source that leaves the prefilter to the feed has each fresh batch prefiltered there."""

    def __init__(
        self,
        source: BatchSource,
        workers: int,
        replay: int,
        seed: int,
        device: torch.device | None = None,
    ) -> None:
        self.replay, self.rng = replay, random.Random(f"restore-replay/{seed}")
        self.device = device or torch.device("cpu")
        self.prefilter = 0.0 if source.prefilter_here else source.strength
        self.recent: list[Any] = []
        self.fresh = self.replayed = 0
        self.local = source.batches(0) if workers == 0 else None
        # spawned, not forked: forked after OpenCV's thread pool started, a worker hangs in cv2
        context = torch.multiprocessing.get_context("spawn")
        self.queue = context.Queue(maxsize=2 * max(workers, 1))
        self.processes = [
            context.Process(target=_produce, args=(source, k, self.queue), daemon=True)
            for k in range(workers)
        ]

    def __enter__(self) -> BatchFeed:
        for process in self.processes:
            process.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        for process in self.processes:
            process.kill()
            process.join()

    def next(self) -> Any:
        if self.local is not None:
            return self._arrived(next(self.local))
        if self.replay and len(self.recent) >= self.replay:
            try:
                batch = self._checked(self.queue.get_nowait())
            except queue.Empty:
                self.replayed += 1
                return _turned(self.rng.choice(self.recent), self.rng)
        else:
            batch = self._wait()
        self.fresh += 1
        if self.replay:
            self.recent = [*self.recent, batch][-self.replay :]
        return batch

    def _wait(self) -> Any:
        while True:
            try:
                return self._checked(self.queue.get(timeout=10))
            except queue.Empty:
                dead = [p.exitcode for p in self.processes if p.exitcode is not None]
                if dead:
                    raise RuntimeError(f"a batch worker died (exit code {dead[0]})") from None

    def _checked(self, item: Any) -> Any:
        if isinstance(item, WorkerFailure):
            raise RuntimeError(f"ageing a batch failed in worker {item.worker}:\n{item.text}")
        return self._arrived(item)

    def _arrived(self, batch: Any) -> Any:
        batch = batch.to(self.device)
        if self.prefilter > 0:
            degraded = denoise_colored(batch.raw, self.prefilter)
            batch = replace(batch, degraded=degraded)
        return batch


def _turned(batch: Any, rng: random.Random) -> Any:
    """A dataclass of (N, C, H, W) planes, all turned and mirrored alike."""
    turns, mirror = rng.randrange(4), rng.random() < 0.5

    def move(planes: torch.Tensor) -> torch.Tensor:
        planes = torch.rot90(planes, turns, dims=(2, 3))
        return planes.flip(3) if mirror else planes

    return type(batch)(*(move(getattr(batch, field.name)) for field in fields(batch)))


def share_stem(model: RestoreVAE) -> None:
    """Split the first layer's weights equally between the prefiltered and the raw scan: the
    same network where the two are equal, and the raw scan's detail within reach of the
    gradient (zero-started raw weights grew to 7 % of the others in 45 minutes)."""
    with torch.no_grad():
        weight = model.stem.weight
        total = weight[:, 0:3] + weight[:, 4:7]
        weight[:, 0:3] = total / 2
        weight[:, 4:7] = total / 2


def revive_latent(model: RestoreVAE) -> None:
    """Give the decoder's weights on the latent a fresh layer's scale (its other inputs keep
    theirs): after the latent collapsed to N(0, 1) they had shrunk to 7 % of the rest."""
    fresh = torch.nn.Conv2d(*model.from_latent.weight.shape[:2][::-1], 3, padding=1)
    with torch.no_grad():
        model.from_latent.weight[:, : model.latent] = fresh.weight[:, : model.latent]


def _metadata_steps(data: bytes) -> int:
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    return int(header.get("__metadata__", {}).get("steps", 0))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    trainer = Trainer(args)
    parameters = sum(p.numel() for p in trainer.model.parameters())
    log(f"restoration VAE {trainer.model.config()}: {parameters} parameters")
    return train_and_save(trainer, args)


def train_and_save(trainer: Any, args: argparse.Namespace) -> int:
    """Run a trainer on its feed and save its best weights to `--out` (this one's or the paper
    branch's): a budget too short for one step is an error, not an empty file."""
    with trainer.feed:
        trainer.train()
    if trainer.best is None:
        raise SystemExit(f"no step finished within --minutes {args.minutes}; nothing saved")
    trainer.save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
