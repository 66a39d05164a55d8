r"""Train a compact upscaler (SRVGGNetCompact, the architecture of realesr-general-x4v3).

    python -m studio.train.upscale --data /usr/share/backgrounds \
        --data /usr/share/backgrounds/mate/nature --scale 4 --stage fidelity --minutes 16 \
        --out x4-fidelity.safetensors
    python -m studio.train.upscale --data ... --scale 4 --stage gan \
        --init x4-fidelity.safetensors --minutes 9 --out x4-gan.safetensors

(The model cards in studio/assets/models give each shipped file's exact command.)

Real-ESRGAN's recipe on a CPU budget. The fidelity stage learns with L1 from a linear warm start
(the best 3x3 linear upscaler of the training patches, written into the network so it starts
near bicubic quality). The GAN stage continues from those weights with L1 plus edge, frequency and
random-feature losses against a mildly sharpened target (Real-ESRGAN's unsharp mask) and a small
adversarial term from a spectrally normalised patch discriminator. Inputs are degraded on the fly
(`degrade`).

An exponential moving average of the weights is measured on the validation photos every
`--eval-every` seconds: the fidelity stage keeps the best PSNR; the GAN stage keeps the latest
average whose PSNR is still `--psnr-margin` dB above bicubic. Everything is seeded. A `--minutes`
budget sets the learning-rate schedule by the clock and ends at a step count that depends on the
machine; with `--steps` the training itself repeats exactly (the moments it is evaluated, and so
the checkpoint kept, still follow the clock). The file is saved in fp16 safetensors in spandrel's
Compact key layout (`body.N.weight`), with the training facts in its metadata.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from spandrel.architectures.Compact import Compact

from studio.train import gan
from studio.train.data import Budget, PatchPool, bicubic_input, eval_crops, jpeg_input
from studio.train.degrade import degrade_batch
from studio.train.metrics import psnr_y, sharpness_ratio
from studio.train.photos import VALIDATION_PHOTOS, named_photos, training_photos

# Defaults sized for two CPU cores: (features, convolutions, HR patch, batch) per scale.
SIZES = {4: (48, 12, 160, 12), 2: (32, 12, 96, 12)}


@dataclass
class Checkpoint:
    state: dict[str, torch.Tensor]
    step: int
    psnr: float
    sharpness: float


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m studio.train.upscale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", action="append", required=True, metavar="DIR")
    parser.add_argument("--scale", type=int, choices=(2, 4), default=4)
    parser.add_argument("--stage", choices=("fidelity", "gan"), default="fidelity")
    parser.add_argument("--init", type=Path, help="start from these weights (the GAN stage needs)")
    parser.add_argument("--out", type=Path, required=True)
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float, help="wall-clock budget, evaluations included")
    budget.add_argument("--steps", type=int, help="exact number of steps (repeatable runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--features", type=int, help="default: 48 at x4, 32 at x2")
    parser.add_argument("--convs", type=int, help="default: 12")
    parser.add_argument("--patch", type=int, help="HR patch side; default: 160 at x4, 96 at x2")
    parser.add_argument("--batch", type=int, help="default: 12")
    parser.add_argument("--lr", type=float, help="default: 5e-4 fidelity, 1e-4 GAN")
    parser.add_argument("--eval-every", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--psnr-margin", type=float, default=0.3, metavar="DB")
    parser.add_argument("--adv-weight", type=float, default=0.02)
    parser.add_argument("--usm", type=float, default=0.3, help="target sharpening (GAN stage)")
    args = parser.parse_args(argv)
    if args.stage == "gan" and args.init is None:
        parser.error("the GAN stage starts from the fidelity weights: give --init FILE")
    features, convs, patch, batch = SIZES[args.scale]
    args.features = args.features or features
    args.convs = args.convs or convs
    args.patch = args.patch or patch
    args.batch = args.batch or batch
    args.lr = args.lr or (5e-4 if args.stage == "fidelity" else 1e-4)
    return args


class Validation:
    """Fixed crops of the validation photos, from a bicubic and from a JPEG input."""

    def __init__(self, photos: Sequence[Path], scale: int) -> None:
        self.scale = scale
        self.truth = eval_crops(photos, 192, per_photo=8)
        self.inputs = [bicubic_input(self.truth, scale), jpeg_input(self.truth, scale)]
        self.bicubic_psnr = sum(psnr_y(bicubic(x, scale), self.truth, scale) for x in self.inputs)
        self.bicubic_psnr /= len(self.inputs)

    @torch.no_grad()
    def measure(self, model: torch.nn.Module) -> tuple[float, float]:
        """Mean Y-PSNR and sharpness ratio over both inputs."""
        outputs = [model(x).clamp(0, 1) for x in self.inputs]
        psnr = sum(psnr_y(y, self.truth, self.scale) for y in outputs) / len(outputs)
        sharp = sum(sharpness_ratio(y, self.truth, self.scale) for y in outputs) / len(outputs)
        return psnr, sharp


def bicubic(image: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(image, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)


def build_model(args: argparse.Namespace) -> Compact:
    return Compact(
        num_in_ch=3, num_out_ch=3, num_feat=args.features, num_conv=args.convs, upscale=args.scale
    )


def load_weights(path: Path, scale: int) -> Compact:
    state = {key: value.float() for key, value in load_file(str(path)).items()}
    last = max(int(key.split(".")[1]) for key in state)
    model = Compact(
        num_in_ch=3,
        num_out_ch=3,
        num_feat=state["body.0.weight"].shape[0],
        num_conv=(last - 2) // 2,
        upscale=scale,
    )
    model.load_state_dict(state)
    return model


def linear_warm_start(model: Compact, pool: PatchPool, scale: int, rng: random.Random) -> float:
    """Make `model` compute the best linear 3x3 upscaler of the training patches; returns its
    mean absolute error. Channels 0-2 carry the input through every layer unchanged (identity
    kernels, PReLU slope 1); the last layer maps them to the sub-pixels' residuals over the
    nearest-neighbour enlargement the architecture adds. The other channels start at zero weight
    into the output, so the network starts as that linear upscaler and learns the rest."""
    hr = pool.batch(256)
    lr = degrade_batch(hr, scale, rng)
    base = F.interpolate(lr, scale_factor=scale, mode="nearest")
    n, c, h, w = lr.shape
    neighbours = F.unfold(lr.reshape(n * c, 1, h, w), 3, padding=1)  # (n*c, 9, h*w)
    residual = F.pixel_unshuffle((hr - base).reshape(n * c, 1, h * scale, w * scale), scale)
    x = neighbours.permute(0, 2, 1).reshape(-1, 9).double()
    y = residual.reshape(n * c, scale * scale, h * w).permute(0, 2, 1).reshape(-1, scale**2)
    filters = torch.linalg.lstsq(x, y.double()).solution.t().float()  # (scale^2, 9)
    error = float((x.float() @ filters.t() - y).abs().mean())
    convs = [m for m in model.body if isinstance(m, torch.nn.Conv2d)]
    prelus = [m for m in model.body if isinstance(m, torch.nn.PReLU)]
    identity = torch.zeros(3, 3, 3, 3)
    for channel in range(3):
        identity[channel, channel, 1, 1] = 1
    with torch.no_grad():
        for conv in convs[:-1]:
            conv.weight[:3] = 0
            conv.weight[:3, :3] = identity[:, : conv.weight.shape[1]]
            conv.bias[:3] = 0
        for prelu in prelus:
            prelu.weight[:3] = 1
        last = convs[-1]
        last.weight.zero_()
        last.bias.zero_()
        for channel in range(3):
            rows = slice(channel * scale**2, (channel + 1) * scale**2)
            last.weight[rows, channel] = filters.view(scale**2, 3, 3)
    return error


class Trainer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        torch.manual_seed(args.seed)
        photos = training_photos(args.data)
        validation = named_photos(args.data, VALIDATION_PHOTOS)
        if not photos or not validation:
            raise SystemExit(f"no training or validation photos found in {args.data}")
        self.photos = photos
        self.validation_photos = validation
        log(f"training photos ({len(photos)}): {', '.join(p.name for p in photos)}")
        log(f"validation photos: {', '.join(p.name for p in validation)}")
        self.pool = PatchPool(photos, args.patch, self.rng)
        self.validation = Validation(validation, args.scale)
        log(f"validation bicubic PSNR {self.validation.bicubic_psnr:.3f} dB")
        if args.init:
            self.model = load_weights(args.init, args.scale)
        else:
            self.model = build_model(args)
            error = linear_warm_start(self.model, self.pool, args.scale, self.rng)
            log(f"linear warm start, mean absolute error {error * 255:.2f} levels")
        self.model = self.model.to(memory_format=torch.channels_last)
        self.average = copy.deepcopy(self.model).requires_grad_(False)
        self.optimiser = torch.optim.Adam(self.model.parameters(), args.lr, betas=(0.9, 0.99))
        self.step = 0

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        hr = self.pool.batch(self.args.batch)
        lr = degrade_batch(hr, self.args.scale, self.rng)
        return lr.contiguous(memory_format=torch.channels_last), hr

    def learning_rate(self, fraction: float) -> float:
        warmup = min(1.0, (self.step + 1) / 30)
        return self.args.lr * warmup * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * fraction)))

    def update_average(self) -> None:
        decay = min(0.995, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for mine, live in zip(self.average.parameters(), self.model.parameters(), strict=True):
                mine.lerp_(live, 1 - decay)

    def run(self, step_fn: Callable[[], dict[str, float]], keep: Callable[[Checkpoint], bool]):
        budget = Budget(self.args.minutes, self.args.steps)
        best: Checkpoint | None = self.evaluate()
        log(f"start: val PSNR {best.psnr:.3f} dB, sharpness {best.sharpness:.3f}")
        if not keep(best):
            best = None
        next_eval = self.args.eval_every
        losses: dict[str, float] = {}
        while budget.fraction(self.step) < 1:
            for group in self.optimiser.param_groups:
                group["lr"] = self.learning_rate(budget.fraction(self.step))
            for name, value in step_fn().items():
                losses[name] = 0.9 * losses.get(name, value) + 0.1 * value
            self.step += 1
            self.update_average()
            if budget.elapsed() >= next_eval or budget.fraction(self.step) >= 1:
                next_eval = budget.elapsed() + self.args.eval_every
                checkpoint = self.evaluate()
                kept = keep(checkpoint) and (best is None or self.better(checkpoint, best))
                best = checkpoint if kept else best
                shown = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
                log(
                    f"step {self.step} {budget.elapsed():.0f}s {shown} | val PSNR "
                    f"{checkpoint.psnr:.3f} sharpness {checkpoint.sharpness:.3f}"
                    + (" *" if kept else "")
                )
        return best

    def better(self, new: Checkpoint, old: Checkpoint) -> bool:
        return new.psnr > old.psnr if self.args.stage == "fidelity" else True

    def evaluate(self) -> Checkpoint:
        psnr, sharp = self.validation.measure(self.average.eval())
        state = {k: v.detach().clone() for k, v in self.average.state_dict().items()}
        return Checkpoint(state, self.step, psnr, sharp)


def train_fidelity(trainer: Trainer) -> Checkpoint | None:
    def step() -> dict[str, float]:
        lr, hr = trainer.batch()
        loss = F.l1_loss(trainer.model(lr), hr)
        trainer.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimiser.step()
        return {"l1": loss.item()}

    return trainer.run(step, keep=lambda _checkpoint: True)


def train_gan(trainer: Trainer) -> Checkpoint | None:
    args = trainer.args
    critic = gan.PatchDiscriminator().to(memory_format=torch.channels_last)
    critic_optimiser = torch.optim.Adam(critic.parameters(), args.lr, betas=(0.9, 0.99))
    features = gan.RandomFeatures()
    floor = trainer.validation.bicubic_psnr + args.psnr_margin

    def step() -> dict[str, float]:
        lr, hr = trainer.batch()
        fake = trainer.model(lr)
        target = gan.unsharp_mask(hr, args.usm)
        l1 = F.l1_loss(fake, target)
        edge = gan.edge_loss(fake, target)
        frequency = gan.frequency_loss(fake, target)
        feature = features.loss(fake, target)
        critic.requires_grad_(False)
        adversarial = gan.adversarial_loss(critic(fake))
        critic.requires_grad_(True)
        loss = l1 + 0.5 * edge + 0.1 * frequency + 0.3 * feature + args.adv_weight * adversarial
        trainer.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimiser.step()
        critic_loss = gan.discriminator_loss(critic(hr), critic(fake.detach()))
        critic_optimiser.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_optimiser.step()
        return {
            "l1": l1.item(),
            "edge": edge.item(),
            "adv": adversarial.item(),
            "d": critic_loss.item(),
        }

    return trainer.run(step, keep=lambda checkpoint: checkpoint.psnr >= floor)


def save(checkpoint: Checkpoint, trainer: Trainer, out: Path) -> None:
    args = trainer.args
    state = {k: v.to(torch.float16).contiguous() for k, v in checkpoint.state.items()}
    metadata = {
        "architecture": "SRVGGNetCompact (spandrel Compact)",
        "scale": str(args.scale),
        "stage": args.stage,
        "seed": str(args.seed),
        "steps": str(checkpoint.step),
        "total_steps": str(trainer.step),
        "validation_psnr_y": f"{checkpoint.psnr:.3f}",
        "validation_bicubic_psnr_y": f"{trainer.validation.bicubic_psnr:.3f}",
        "validation_sharpness": f"{checkpoint.sharpness:.3f}",
        "training_photos": json.dumps([p.name for p in trainer.photos]),
        "validation_photos": json.dumps([p.name for p in trainer.validation_photos]),
        "command": " ".join(["python -m studio.train.upscale", *sys.argv[1:]]),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata=metadata)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    trainer = Trainer(args)
    log(
        f"x{args.scale} {args.stage}: {args.features} features, {args.convs} convolutions, "
        f"{sum(p.numel() for p in trainer.model.parameters())} parameters"
    )
    best = (train_fidelity if args.stage == "fidelity" else train_gan)(trainer)
    if best is None:
        log("no checkpoint stayed above the PSNR floor; nothing saved")
        return 1
    save(best, trainer, args.out)
    log(
        f"saved step {best.step} (val PSNR {best.psnr:.3f}, sharpness {best.sharpness:.3f}) "
        f"to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
