"""The shipped upscalers on photos they never saw: quality against bicubic, speed against RRDB.

    python bench/upscale_quality.py [--long-side 1024] [--speed-size 96] [--models FILE ...]
                                    [--ensemble 8]

Ground truth: each held-out test photo (`studio.train.photos.TEST_PHOTOS`) whole, resized to
`--long-side` px on its long side (Lanczos) and cut to a multiple of 4. Each is shrunk x4 and x2
(antialiased bicubic, 8-bit), and also saved as JPEG at quality 75 (a web photo), then enlarged
back by bicubic interpolation and by every shipped model of that scale, through Studio's engine
(`studio.engines.upscale.run` on an `UpscaleRequest`, fp32 on the CPU): what is measured is what
ships. Reported per scale and input, averaged over the photos: PSNR and SSIM on the luma with a
border of `scale` pixels cropped, and sharpness (mean gradient magnitude of the result over the
ground truth's: 1 = as crisp, below 1 = blurrier). `--ensemble N` adds a row per model run with N
passes (the picture mirrored and turned, averaged: the request's `ensemble`).

Speed: megapixels of output per second of the default x4 model against a Real-ESRGAN-sized RRDB
network (spandrel's ESRGAN, 23 blocks, 64 features, random weights) on the same input, both through
`upscale_pixels` with the engine's automatic tile, best of `--rounds` after a warm-up run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from spandrel.architectures.ESRGAN import ESRGAN

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.engines.upscale import UpscaleRequest, auto_tile, run, upscale_pixels
from studio.models.shipped import default_upscaler, shipped_upscalers
from studio.models.upscalers import inspect_model, load_model
from studio.train.data import bicubic_input, jpeg_input, load_photo
from studio.train.metrics import psnr_y, sharpness_ratio, ssim_y
from studio.train.photos import TEST_PHOTOS, named_photos

PHOTO_FOLDERS = ("/usr/share/backgrounds", "/usr/share/backgrounds/mate/nature")
INPUTS = {"bicubic-downscaled": bicubic_input, "JPEG q75": jpeg_input}


def to_png(image: torch.Tensor, path: Path) -> Path:
    pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def engine_upscale(
    model: Path, image: torch.Tensor, folder: Path, ensemble: int = 1
) -> torch.Tensor:
    """One (3, h, w) input through `studio.engines.upscale.run` with `model`, on the CPU."""
    request = UpscaleRequest(
        input_path=str(to_png(image, folder / "input.png")),
        model_path=str(model),
        device="cpu",
        ensemble=ensemble,
    )
    return torch.from_numpy(run(request).picture.pixels).permute(2, 0, 1)


def bicubic(inputs: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(inputs, scale_factor=scale, mode="bicubic", align_corners=False).clamp(
        0, 1
    )


def measure(result: torch.Tensor, truth: torch.Tensor, scale: int) -> tuple[float, float, float]:
    return (
        psnr_y(result, truth, scale),
        ssim_y(result, truth, scale),
        sharpness_ratio(result, truth, scale),
    )


def quality(
    photos: list[torch.Tensor], models: list[Path], folder: Path, ensemble: int
) -> list[tuple]:
    """(scale, input, method, PSNR, SSIM, sharpness, PSNR gain over bicubic), photo means."""
    rows = []
    passes = sorted({1, ensemble})
    for scale in (4, 2):
        methods: list[str | tuple[Path, int]] = ["bicubic"]
        methods += [(m, n) for m in models if inspect_model(m).scale == scale for n in passes]
        for input_name, make_input in INPUTS.items():
            scores = {method: [] for method in methods}
            for truth in photos:
                small = make_input(truth[None], scale)
                for method in methods:
                    if isinstance(method, str):
                        result = bicubic(small, scale)
                    else:
                        result = engine_upscale(method[0], small[0], folder, method[1])[None]
                    scores[method].append(measure(result, truth[None], scale))
            reference = np.mean(scores["bicubic"], axis=0)
            for method in methods:
                mean = np.mean(scores[method], axis=0)
                if isinstance(method, str):
                    name = method
                else:
                    name = method[0].stem + (f", {method[1]} passes" if method[1] > 1 else "")
                rows.append((scale, input_name, name, *mean, mean[0] - reference[0]))
    return rows


def ground_truth(path: Path, long_side: int) -> torch.Tensor:
    pixels = load_photo(path, long_side)
    height, width = (side // 4 * 4 for side in pixels.shape[:2])
    pixels = pixels[:height, :width].astype(np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def rrdb_file(folder: Path) -> Path:
    torch.manual_seed(0)
    network = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)
    state = {k: v.contiguous() for k, v in network.state_dict().items()}
    path = folder / "rrdb-23x64-random.safetensors"
    save_file(state, str(path))
    return path


def megapixels_per_second(model: Path, pixels: np.ndarray, rounds: int) -> tuple[float, str]:
    info = inspect_model(model)
    device, dtype = torch.device("cpu"), torch.float32
    network = load_model(model, device, dtype)
    tile = auto_tile(info, device, dtype)
    upscale_pixels(network, info, pixels, tile=tile)  # warm-up: oneDNN builds its kernels
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        out = upscale_pixels(network, info, pixels, tile=tile)
        best = min(best, time.perf_counter() - started)
    return out.shape[0] * out.shape[1] / best / 1e6, f"{info.architecture}, {info.parameters:,} p"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", help="folders holding the test photos")
    parser.add_argument("--long-side", type=int, default=1024, help="test photo size (px)")
    parser.add_argument("--speed-size", type=int, default=96, help="speed input side (px)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (best kept)")
    parser.add_argument("--models", nargs="*", type=Path, help="default: every shipped upscaler")
    parser.add_argument(
        "--ensemble", type=int, choices=(1, 2, 4, 8), default=1, help="also with N passes"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    photos = named_photos(args.data or PHOTO_FOLDERS, TEST_PHOTOS)
    if len(photos) < len(TEST_PHOTOS):
        found = {p.name for p in photos}
        missing = [name for name in TEST_PHOTOS if name not in found]
        print(
            f"test photos missing: {', '.join(missing)} (install mate-backgrounds and "
            "lomiri-wallpapers-16.04, or pass --data)",
            file=sys.stderr,
        )
        return 1
    models = args.models or shipped_upscalers()
    truth = [ground_truth(path, args.long_side) for path in photos]
    print(
        f"{len(photos)} held-out photos at {args.long_side} px on the long side: "
        f"{', '.join(p.name for p in photos)}; {torch.get_num_threads()} CPU threads\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = quality(truth, models, folder, args.ensemble)
        print("| scale | input | method | PSNR-Y dB | SSIM-Y | sharpness | vs bicubic dB |")
        print("|---|---|---|---|---|---|---|")
        for scale, input_name, method, psnr, ssim, sharp, gain in rows:
            print(
                f"| x{scale} | {input_name} | {method} | {psnr:.2f} | {ssim:.4f} | "
                f"{sharp:.3f} | {gain:+.2f} |"
            )
        sample = truth[0][:, : args.speed_size * 4, : args.speed_size * 4]
        pixels = bicubic_input(sample[None], 4)[0].permute(1, 2, 0).numpy().copy()
        compact = megapixels_per_second(default_upscaler(4), pixels, args.rounds)
        rrdb = megapixels_per_second(rrdb_file(folder), pixels, args.rounds)
    size = f"{args.speed_size}x{args.speed_size} -> {args.speed_size * 4}x{args.speed_size * 4}"
    print(f"\nspeed, x4, {size}, fp32 CPU:")
    print(f"  {default_upscaler(4).stem} ({compact[1]}): {compact[0]:.3f} MP/s")
    print(f"  RRDB 23 blocks x 64 features ({rrdb[1]}): {rrdb[0]:.4f} MP/s")
    print(f"  ratio: {compact[0] / rrdb[0]:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
