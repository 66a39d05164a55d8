"""A Studio generation against a direct diffusers pipeline call: same pipeline, steps and seed.

    python bench/diffusion.py [--steps 20] [--size 64] [--rounds 5] [--threads 1] [--unet tiny|sd]

The pipeline is tests/tiny_diffusion.py's random-weight SD 1.x pipeline saved as a diffusers folder
(`--unet sd` widens the UNet to SD 1.5's channels (320, 640, 1280, 1280) for a step cost nearer a
real model's; it is slow on a CPU). The reference loads that folder with
`StableDiffusionPipeline.from_pretrained` and calls it with the prompt, steps, size and a CPU
generator seeded alike. Studio runs `studio.engines.diffusion.run` with a warm model cache, i.e.
everything a second click of Generate does: resolve the model, derive the task pipeline, set the
scheduler, count prompt tokens, and a latent preview plus progress report at every step. Rounds
alternate between the two and the best of each is compared (target: ratio <= 1.05). Also printed:
the preview's cost per step against the step's, and whether both produced the same pixels.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import tiny_diffusion  # noqa: E402

from studio.engines.diffusion import GenerateRequest, run  # noqa: E402
from studio.models.cache import ModelCache  # noqa: E402

PROMPT = "a lighthouse on a cliff at dusk, oil painting"


def build_folder(folder: Path, unet: str) -> Path:
    pipe = tiny_diffusion.make_pipeline()
    if unet == "sd":
        from diffusers import UNet2DConditionModel

        torch.manual_seed(0)
        pipe.unet = UNet2DConditionModel(
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            sample_size=32,
            cross_attention_dim=tiny_diffusion.TEXT_HIDDEN,
            attention_head_dim=8,
        )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--unet", choices=("tiny", "sd"), default="tiny")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared CPU)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from diffusers import StableDiffusionPipeline

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(Path(tmp) / f"bench-{args.unet}", args.unet)
        direct = StableDiffusionPipeline.from_pretrained(folder)
        direct.set_progress_bar_config(disable=True)

        def reference() -> np.ndarray:
            with torch.inference_mode():
                return direct(
                    PROMPT,
                    num_inference_steps=args.steps,
                    width=args.size,
                    height=args.size,
                    guidance_scale=7.0,
                    generator=torch.Generator("cpu").manual_seed(1),
                    output_type="np",
                ).images[0]

        cache = ModelCache()
        request = GenerateRequest(
            model=str(folder),
            prompt=PROMPT,
            steps=args.steps,
            guidance=7.0,
            width=args.size,
            height=args.size,
            seed=1,
            scheduler="euler",
            device="cpu",
        )
        facts = {}

        def studio() -> np.ndarray:
            result = run(request, cache=cache)
            facts.update(result.facts.extra)
            return result.pictures[0].pixels

        studio()  # loads the model into the cache: a warm cache is what every later run sees
        reference()
        times = {"studio": [], "diffusers": []}
        previews = []
        for _ in range(args.rounds):
            for name, call in (("diffusers", reference), ("studio", studio)):
                started = time.perf_counter()
                pixels = call()
                times[name].append(time.perf_counter() - started)
                if name == "studio":
                    previews.append(facts["preview_seconds"])
                    studio_pixels = pixels
                else:
                    reference_pixels = pixels

    best = {name: min(values) for name, values in times.items()}
    ratio = best["studio"] / best["diffusers"]
    step = best["diffusers"] / args.steps
    preview = min(previews) / args.steps
    load = os.getloadavg()[0]
    print(
        f"UNet {args.unet}, {args.size}x{args.size}, {args.steps} steps, "
        f"{torch.get_num_threads()} threads, load average {load:.1f}"
    )
    for name, values in times.items():
        print(f"  {name:<9} best {min(values):.3f} s  median {np.median(values):.3f} s")
    print(f"  ratio studio / diffusers: {ratio:.3f}  (target <= 1.05)")
    print(
        f"  preview per step: {preview * 1000:.2f} ms = {100 * preview / step:.2f} % of a step "
        f"({step * 1000:.1f} ms)  (target <= 5 %)"
    )
    same = np.abs(studio_pixels - reference_pixels).max()
    print(f"  largest pixel difference studio vs diffusers: {same * 255:.3f}/255")


if __name__ == "__main__":
    main()
