r"""Train the restorer's paper branch (`studio.nn.restore_vae.PaperField`) into a restorer file.

    python -m studio.train.restore_paper --data /usr/share/backgrounds \
        --data /usr/share/backgrounds/mate/nature --init studio-restore-vae.safetensors \
        --minutes 30 --out restore-vae-paper.safetensors

A print's uneven paper and blotchy fading (`restore_degrade.paper_texture`: a gain on the print,
smooth over tens of pixels) is the damage the tiled VAE cannot see: too wide for a tile and too
faint to tell from the photo's own shading in a small window. The branch reads the whole picture at
a quarter of its size and estimates that gain; the engine divides the scan by it before the
prefilter and the tiles.

Each step cuts random crops (`--crop` px) from the training photos, ages them (half by the wide
mix, half as a typical scanned print; about half of them get paper texture), and teaches the branch
the log of the true gain at 1/4 size. The loss is the squared error of the flattened picture's luma
against the picture divided by the true gain (so a mistake counts as much as it shows: more on light
areas than on dark ones). Only the branch learns: the VAE's weights are copied from `--init`
unchanged, and a branch already there is trained further. An exponential moving average of the
branch is measured every `--eval-every` seconds on fixed aged crops of the validation photos (half
of them with paper texture, so a branch that flattens a photo's own shading loses) and the best is
kept (a branch trained further is kept as it came unless it improves). Batches are aged in
`--workers` processes; `--replay` reuses recent batches, turned, when they fall behind (ageing
a crop costs more than a step).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from studio.models.device import DEVICE_CHOICES, resolve_device
from studio.nn.restore_vae import ARCHITECTURE_ID, PaperField, build_from_state, paper_input
from studio.train.data import Budget, PatchPool, eval_crops
from studio.train.photos import VALIDATION_PHOTOS, named_photos, training_photos
from studio.train.restore import TRAINING_MIXES, BatchFeed, cpu_copy, log, train_and_save
from studio.train.restore_degrade import SCANNED_PRINT, OldPhotoDamage, degrade_old_photo

PAPER_KEY = "paper."


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m studio.train.restore_paper",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", action="append", required=True, metavar="DIR")
    parser.add_argument(
        "--init", type=Path, required=True, help="the restorer file the branch joins"
    )
    parser.add_argument("--out", type=Path, required=True)
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float, help="wall-clock budget, evaluations included")
    budget.add_argument("--steps", type=int, help="exact number of steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help=f"{', '.join(DEVICE_CHOICES)} or cuda:N")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width", type=int, default=16, help="a new branch's features")
    parser.add_argument("--crop", type=int, default=384, help="px, a multiple of 16")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="processes ageing crops")
    parser.add_argument(
        "--replay", type=int, default=64, metavar="N", help="reuse one of the last N batches"
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=float, default=60.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    budget = args.steps if args.minutes is None else args.minutes
    if budget <= 0:
        parser.error("train for at least one step")
    if args.crop < 16 or args.crop % 16:
        parser.error("--crop is a multiple of 16 px")
    return args


@dataclass
class PaperBatch:
    small: torch.Tensor  # (N, 3, h, w): the aged crop as the branch reads it (1/4 size)
    log_gain: torch.Tensor  # (N, 1, h, w): the log of the paper's true gain there

    def to(self, device: torch.device) -> PaperBatch:
        return PaperBatch(*(getattr(self, f.name).to(device) for f in fields(self)))


def paper_batch(
    crops: torch.Tensor, rng: random.Random, mixes: Sequence[OldPhotoDamage] = TRAINING_MIXES
) -> PaperBatch:
    """Age `crops` (N, 3, H, W), each by one of `mixes`; what the branch reads and must find."""
    smalls, gains = [], []
    for crop in crops:
        aged = degrade_old_photo(
            crop.permute(1, 2, 0).numpy(), rng, mixes[rng.randrange(len(mixes))]
        )
        degraded = torch.from_numpy(aged.degraded).permute(2, 0, 1)[None]
        smalls.append(paper_input(degraded)[0][0])
        gains.append(paper_input(torch.from_numpy(aged.paper)[None, None])[0][0].log())
    return PaperBatch(torch.stack(smalls), torch.stack(gains))


def flattening_error(log_gain: torch.Tensor, batch: PaperBatch) -> torch.Tensor:
    """Per crop: the mean squared error of the flattened luma against the picture divided by
    the true gain."""
    luma = batch.small.mean(dim=1, keepdim=True)
    error = luma * (torch.exp(-log_gain) - torch.exp(-batch.log_gain))
    return error.pow(2).mean(dim=(1, 2, 3))


def flattening_psnr(log_gain: torch.Tensor, batch: PaperBatch) -> float:
    """The flattening error over all the crops as a PSNR (dB): higher is better. (Pooled, not
    a mean of per-crop PSNRs, which the crops without paper, flawless uncorrected, would rule.)"""
    mse = float(flattening_error(log_gain, batch).mean())
    return 10 * math.log10(1 / max(mse, 1e-10))


class PaperCrops:
    """An endless stream of aged crops for `BatchFeed`; worker `k` draws its own."""

    prefilter_here = True  # the branch reads the scan itself: nothing for the feed to prefilter
    strength = 0.0

    def __init__(self, photos: Sequence[Path], args: argparse.Namespace) -> None:
        self.photos = list(photos)
        self.seed, self.crop, self.size = args.seed, args.crop, args.batch

    def batches(self, worker: int) -> Iterator[PaperBatch]:
        rng = random.Random(f"paper-batches/{self.seed}/{worker}")
        pool = PatchPool(self.photos, self.crop, rng, flat_keep=0.5)
        while True:
            yield paper_batch(pool.batch(self.size), rng)


class PaperTrainer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = resolve_device(args.device)
        torch.manual_seed(args.seed)
        self.photos = training_photos(args.data)
        validation_photos = named_photos(args.data, VALIDATION_PHOTOS)
        if not self.photos or not validation_photos:
            raise SystemExit(f"no training or validation photos found in {args.data}")
        log(
            f"training photos ({len(self.photos)}); validation: "
            f"{', '.join(p.name for p in validation_photos)}"
        )
        crops = eval_crops(validation_photos, args.crop, per_photo=8)
        self.validation = paper_batch(crops, random.Random(args.seed + 2000), (SCANNED_PRINT,)).to(
            self.device
        )
        self.uncorrected = flattening_psnr(
            torch.zeros_like(self.validation.log_gain), self.validation
        )
        log(f"validation: {len(crops)} crops, uncorrected {self.uncorrected:.3f} dB")
        with safe_open(str(args.init), "pt") as handle:  # read once: weights and facts
            self.init_metadata = handle.metadata() or {}
            state = {k: handle.get_tensor(k).float() for k in handle.keys()}  # noqa: SIM118
        self.restorer = build_from_state(state)
        # A branch trained on must never be saved worse than it came: its start is a candidate.
        self.continuing = self.restorer.paper is not None
        if self.restorer.paper is None:
            self.restorer.paper = PaperField(args.width)
            log(f"a new paper branch, {args.width} features")
        else:
            log(f"training the paper branch of {args.init} further")
        self.branch = self.restorer.paper.to(self.device)
        self.average = copy.deepcopy(self.branch).requires_grad_(False)
        self.optimiser = torch.optim.Adam(self.branch.parameters(), args.lr)
        self.feed = BatchFeed(
            PaperCrops(self.photos, args), args.workers, args.replay, args.seed, self.device
        )
        self.step = 0
        self.best: tuple[dict[str, torch.Tensor], int, float] | None = None
        self.budget = Budget(args.minutes, args.steps)

    def train(self) -> None:
        self.evaluate()
        last_eval = time.perf_counter()
        while self.budget.fraction(self.step) < 1:
            batch = self.feed.next()
            rate = self.args.lr * (
                0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * self.budget.fraction(self.step)))
            )
            for group in self.optimiser.param_groups:
                group["lr"] = rate
            loss = flattening_error(self.branch(batch.small), batch).mean() * 1e3
            self.optimiser.zero_grad(set_to_none=True)
            loss.backward()
            self.optimiser.step()
            self.step += 1
            with torch.no_grad():
                for mine, live in zip(
                    self.average.parameters(), self.branch.parameters(), strict=True
                ):
                    mine.lerp_(live, 0.002 if self.step > 500 else 0.02)
            if time.perf_counter() - last_eval > self.args.eval_every:
                self.evaluate(f"step {self.step} loss {float(loss.detach()):.4f}")
                last_eval = time.perf_counter()
        self.evaluate(f"step {self.step} (end)")
        log(f"batches: {self.feed.fresh} aged, {self.feed.replayed} replayed")

    @torch.no_grad()
    def evaluate(self, prefix: str = "start") -> None:
        psnr = flattening_psnr(self.average(self.validation.small), self.validation)
        kept = (self.step > 0 or self.continuing) and (self.best is None or psnr > self.best[2])
        if kept:
            self.best = (cpu_copy(self.average), self.step, psnr)
            self.save(self.args.out, quiet=True)  # a run stopped early still leaves its best
        log(
            f"{prefix} | flattening PSNR {psnr:.3f} dB (uncorrected {self.uncorrected:.3f})"
            + (" *" if kept else "")
        )

    def save(self, out: Path, *, quiet: bool = False) -> None:
        assert self.best is not None
        state, step, psnr = self.best
        weights = {  # the VAE as it came, and the best averaged branch (not the live one)
            k: v.detach().cpu().contiguous()
            for k, v in self.restorer.state_dict().items()
            if not k.startswith(PAPER_KEY)
        }
        weights.update({PAPER_KEY + k: v.contiguous() for k, v in state.items()})
        metadata = {
            **self.init_metadata,
            "architecture": ARCHITECTURE_ID,
            "config": json.dumps(self.restorer.config()),
            "paper_steps": str(step),
            "paper_run_steps": str(self.step),
            "paper_minutes": f"{self.budget.elapsed() / 60:.1f}",
            "paper_validation_psnr": f"{psnr:.3f}",
            "paper_validation_uncorrected_psnr": f"{self.uncorrected:.3f}",
            "paper_command": " ".join(["python -m studio.train.restore_paper", *sys.argv[1:]]),
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file(weights, str(out), metadata=metadata)
        if not quiet:
            log(f"saved step {step} (flattening PSNR {psnr:.3f} dB) to {out}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    trainer = PaperTrainer(args)
    log(
        f"paper branch: {sum(p.numel() for p in trainer.branch.parameters())} parameters, "
        f"on {trainer.device}"
    )
    return train_and_save(trainer, args)


if __name__ == "__main__":
    sys.exit(main())
