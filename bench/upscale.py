"""Studio's tiled upscaler against a plain Real-ESRGAN tile loop: same model, same tile size.

    python bench/upscale.py [--size 512] [--tile 128] [--rounds 3] [--device auto]

The model is a realesr-general-x4v3-sized SRVGGNetCompact (64 features, 32 convolutions) with
random weights, saved to a temporary .pth and read back through Studio's loader. The reference is
Real-ESRGAN's `RealESRGANer.enhance` + `tile_process` (tile_pad=10, pre_pad=0 as its CLI runs it):
numpy in, tiles cropped with padding, run one by one under `torch.no_grad`, pasted without
blending, numpy out. Studio runs `upscale_pixels`, the engine's own path (numpy in and out, blended
overlapping tiles). Rounds alternate between the two; the best round of each is compared, which
is the fairest reading on a machine other programs share. Also printed: how far each tiled result
is from an untiled run of the network (its seams), and peak memory.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import math
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch
from spandrel.architectures.Compact import Compact

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.engines.tiling import DEFAULT_OVERLAP
from studio.engines.upscale import upscale_pixels
from studio.models.device import (
    describe_device,
    dtype_name,
    resolve_device,
    resolve_dtype,
)
from studio.models.upscalers import inspect_model, load_model

FEATURES, CONVS, SCALE = 64, 32, 4


def build_compact(path: Path) -> Path:
    """Random weights that keep the signal alive through all 32 layers (He initialisation), with
    a residual of a trained model's size: a fair, even pessimistic, subject for seam errors."""
    torch.manual_seed(0)
    model = Compact(num_in_ch=3, num_out_ch=3, num_feat=FEATURES, num_conv=CONVS, upscale=SCALE)
    convs = [m for m in model.body if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for conv in convs:
            torch.nn.init.kaiming_normal_(conv.weight, a=0.25, nonlinearity="leaky_relu")
            conv.bias.zero_()
        residual = []
        hook = convs[-1].register_forward_hook(lambda _m, _i, out: residual.append(out))
        model(torch.from_numpy(test_picture(64)).permute(2, 0, 1).unsqueeze(0))
        hook.remove()
        convs[-1].weight.mul_(0.1 / residual[0].std())
    torch.save({"params": model.state_dict()}, path)  # the layout of the official release
    return path


def reference_model(path: Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The network as Real-ESRGAN builds it: a plain module, NCHW, no Studio preparation."""
    model = Compact(num_in_ch=3, num_out_ch=3, num_feat=FEATURES, num_conv=CONVS, upscale=SCALE)
    model.load_state_dict(torch.load(path, weights_only=True)["params"])
    return model.eval().to(device=device, dtype=dtype)


def realesrgan_enhance(
    model: torch.nn.Module,
    pixels: np.ndarray,
    *,
    scale: int,
    tile_size: int,
    tile_pad: int = 10,
) -> np.ndarray:
    """RealESRGANer.enhance for an RGB float image: pre_process, tile_process, post_process."""
    parameter = next(model.parameters())
    img = torch.from_numpy(np.transpose(pixels, (2, 0, 1))).float().unsqueeze(0)
    img = img.to(parameter.device, parameter.dtype)
    batch, channel, height, width = img.shape
    output = img.new_zeros((batch, channel, height * scale, width * scale))
    tiles_x = math.ceil(width / tile_size)
    tiles_y = math.ceil(height / tile_size)
    for y in range(tiles_y):
        for x in range(tiles_x):
            ofs_x, ofs_y = x * tile_size, y * tile_size
            in_x0, in_x1 = ofs_x, min(ofs_x + tile_size, width)
            in_y0, in_y1 = ofs_y, min(ofs_y + tile_size, height)
            pad_x0, pad_x1 = max(in_x0 - tile_pad, 0), min(in_x1 + tile_pad, width)
            pad_y0, pad_y1 = max(in_y0 - tile_pad, 0), min(in_y1 + tile_pad, height)
            input_tile = img[:, :, pad_y0:pad_y1, pad_x0:pad_x1]
            with torch.no_grad():
                output_tile = model(input_tile)
            out_x0, out_y0 = (in_x0 - pad_x0) * scale, (in_y0 - pad_y0) * scale
            out_w, out_h = (in_x1 - in_x0) * scale, (in_y1 - in_y0) * scale
            output[:, :, in_y0 * scale : in_y1 * scale, in_x0 * scale : in_x1 * scale] = (
                output_tile[:, :, out_y0 : out_y0 + out_h, out_x0 : out_x0 + out_w]
            )
    result = output.data.squeeze().float().cpu().clamp_(0, 1).numpy()
    return np.transpose(result, (1, 2, 0))


class PeakMemory:
    """Peak memory of one call: CUDA allocations, or process RSS sampled every few ms."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def measure(self, work: Callable[[], np.ndarray]) -> tuple[np.ndarray, float, int]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            started = time.perf_counter()
            result = work()
            torch.cuda.synchronize(self.device)
            seconds = time.perf_counter() - started
            return result, seconds, torch.cuda.max_memory_allocated(self.device) - base
        _release_freed_memory()
        process = psutil.Process()
        base = process.memory_info().rss
        peak = [base]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.005):
                peak[0] = max(peak[0], process.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        return result, seconds, max(peak[0], process.memory_info().rss) - base


def _release_freed_memory() -> None:
    """Return freed heap pages to the OS first, so each RSS peak starts from the same floor."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: a little less comparable
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def test_picture(size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    planes = [0.5 + 0.4 * np.sin(x / (9 + 4 * c) + y / (13 + 3 * c)) for c in range(3)]
    pixels = np.stack(planes, axis=-1) + rng.normal(0, 0.04, (size, size, 3))
    return np.clip(pixels, 0, 1).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="input side in pixels")
    parser.add_argument("--tile", type=int, default=128, help="tile side for both (input px)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds")
    parser.add_argument("--device", default="auto", help="auto | cuda | mps | cpu")
    parser.add_argument(
        "--precision",
        default="auto",
        help="Studio's precision (auto | fp16 | bf16 | fp32); the reference keeps auto's",
    )
    parser.add_argument("--batch", type=int, default=None, help="Studio's tiles per pass")
    parser.add_argument("--no-seams", action="store_true", help="skip the untiled comparison")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        path = build_compact(Path(folder) / "realesr-general-x4v3-random.pth")
        info = inspect_model(path)
        dtype = resolve_dtype(device, supports_half=True, supports_bf16=True)
        studio_dtype = resolve_dtype(device, args.precision, supports_half=True, supports_bf16=True)
        studio = load_model(path, device, studio_dtype)
        reference = reference_model(path, device, dtype)
    pixels = test_picture(args.size)
    memory = PeakMemory(device)
    megapixels = (args.size * SCALE) ** 2 / 1e6

    def run_studio() -> np.ndarray:
        return upscale_pixels(studio, info, pixels, tile=args.tile, batch=args.batch)

    def run_reference() -> np.ndarray:
        return realesrgan_enhance(reference, pixels, scale=SCALE, tile_size=args.tile)

    precision = dtype_name(dtype)
    if studio_dtype != dtype:
        precision = f"Studio {dtype_name(studio_dtype)}, Real-ESRGAN loop {precision}"
    print(f"{describe_device(device)} · {precision} · torch {torch.__version__}")
    print(
        f"model: Compact {FEATURES}nf {CONVS}nc x{SCALE} ({info.parameters / 1e6:.2f} M params)"
        f" · input {args.size}x{args.size} · tile {args.tile} · Studio overlap {DEFAULT_OVERLAP}"
        " · Real-ESRGAN tile_pad 10"
    )
    timings: dict[str, list[float]] = {"studio": [], "reference": []}
    peaks: dict[str, int] = {"studio": 0, "reference": 0}
    outputs: dict[str, np.ndarray] = {}
    for index in range(args.rounds):
        for name, work in (("studio", run_studio), ("reference", run_reference)):
            outputs[name], seconds, peak = memory.measure(work)
            timings[name].append(seconds)
            peaks[name] = max(peaks[name], peak)
        print(
            f"  round {index + 1}: Studio {timings['studio'][-1]:.2f} s"
            f" · Real-ESRGAN loop {timings['reference'][-1]:.2f} s",
            flush=True,
        )

    best = {name: min(values) for name, values in timings.items()}
    print()
    print(f"{'':<18}{'best s':>9}{'out MP/s':>10}{'peak MiB':>10}{'max seam err':>14}")
    untiled = None  # the network on the whole picture at once, in the reference's precision
    if not args.no_seams:
        untiled = realesrgan_enhance(reference, pixels, scale=SCALE, tile_size=args.size)
    for name, label in (("studio", "Studio"), ("reference", "Real-ESRGAN loop")):
        seam = "-" if untiled is None else f"{np.abs(outputs[name] - untiled).max() * 255:.2f}/255"
        print(
            f"{label:<18}{best[name]:>9.2f}{megapixels / best[name]:>10.2f}"
            f"{peaks[name] / 2**20:>10.0f}{seam:>14}"
        )
    ratio = best["reference"] / best["studio"]
    print(f"\nStudio is {ratio:.2f}x the speed of the Real-ESRGAN loop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
