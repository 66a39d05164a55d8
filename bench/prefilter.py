"""The restorer's training prefilter: batched non-local means on a device against OpenCV.

    python bench/prefilter.py [--device cuda] [--batch 16] [--patch 128] [--workers 14]
                              [--rounds 5] [--chunk N]

Training ages batches of patches; each patch is then denoised by OpenCV's
`fastNlMeansDenoisingColored` (h = 5), one core per ageing worker. `studio.nn.nlm` computes the
same thing for a whole batch on the training device. This prints, for one batch of random-noise
patches (NLM's cost does not depend on the content):

- OpenCV on one core, per batch (best of `--rounds`, after a warm-up), and what `--workers`
  cores would deliver per second;
- the batched copy on `--device`, per batch (best of `--rounds`, after a warm-up);
- the device's rate against one core's and against `--workers` cores';
- whether the results were identical, level for level.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.models.device import resolve_device
from studio.nn.nlm import denoise_colored
from studio.nn.restore_vae import prefilter

STRENGTH = 5.0
T = TypeVar("T")


def best_of(rounds: int, run: Callable[[], T]) -> tuple[float, T]:
    """The fastest of `rounds` runs after one warm-up (set-up, tables, kernels), and a result."""
    result = run()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=14, help="cores the trainer would age on")
    parser.add_argument("--rounds", type=int, default=5, help="best of (at least 1)")
    parser.add_argument(
        "--chunk", type=int, default=None, help="window offsets per pass (of 441; default: nlm's)"
    )
    args = parser.parse_args(argv)
    args.rounds = max(1, args.rounds)
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    patches = rng.random((args.batch, args.patch, args.patch, 3), dtype=np.float32)

    cv2.setNumThreads(1)
    opencv, expected = best_of(
        args.rounds, lambda: np.stack([prefilter(patch, STRENGTH) for patch in patches])
    )
    batch = torch.from_numpy(patches).permute(0, 3, 1, 2).to(device)
    # .cpu() waits for the device
    batched, result = best_of(
        args.rounds, lambda: denoise_colored(batch, STRENGTH, args.chunk).cpu()
    )
    same = np.array_equal(result.permute(0, 2, 3, 1).numpy(), expected)

    size = f"{args.batch} patches of {args.patch} px"
    print(f"one batch of {size}, h = {STRENGTH:g}")
    print(f"  OpenCV, one core:     {opencv * 1000:8.1f} ms per batch")
    print(f"  OpenCV, {args.workers} cores:    {args.workers / opencv:8.1f} batches/s")
    print(f"  batched on {device.type + ':':11s}{batched * 1000:8.1f} ms per batch")
    print(f"  device / one core:    {opencv / batched:8.2f}x the batches per second")
    print(f"  device / {args.workers} cores:    {opencv / (batched * args.workers):8.2f}x")
    print(f"  identical to OpenCV: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
