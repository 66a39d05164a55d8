"""Studio's flow colour grading on real photos: speed, and quality against classical transfers.

    python bench/grade.py [PHOTO_OR_FOLDER ...] [--pairs 8] [--rounds 3] [--device auto]
                          [--layers N] [--hidden N] [--iterations N]

Defaults to the photos of the `mate-backgrounds` and `lomiri-wallpapers-16.04` packages
(`apt-get install -y mate-backgrounds lomiri-wallpapers-16.04`), under
/usr/share/backgrounds/mate/nature and /usr/share/backgrounds.

Speed, with the default settings: fitting a reference match (two flows) on full-size photos, and
applying a grade (LUT bake + trilinear lookup) to a 12-megapixel picture. Targets on a 2-core CPU:
fit <= 3 s, apply <= 0.5 s. Best and median of the rounds are printed (other programs share the
machine; the best round is the fairest reading).

Quality, on pairs of consecutive photos (source, reference) at about 1 megapixel, computed in the
same run for the flow match and three classical methods:
  Reinhard et al. 2001 (mean and standard deviation in l-alpha-beta),
  MKL, Pitié & Kokaram 2007 (the Monge-Kantorovich linear map of RGB means and covariances),
  IDT, Pitié et al. 2005/2007 (iterative 1-D distribution transfer on random rotations, without
  the regrain post-process).
  - SWD: sliced Wasserstein-2 distance of the result's OKLab colours to the reference's (lower is
    better; target: flow below MKL and Reinhard).
  - SSIM-s: the structure term of SSIM on luma between result and source (target >= 0.98).
A learnt edit is also measured: a synthetic grade (curves, channel mix, saturation) applied to one
photo, learnt from that pair, and checked on the other photos (mean CIEDE2000).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.engines.color import (
    delta_e_2000,
    srgb_to_cielab,
    srgb_to_oklab_array,
)
from studio.engines.grade import (
    DEFAULT_COUPLING_LAYERS,
    DEFAULT_HIDDEN,
    DEFAULT_ITERATIONS,
    FlowGrade,
    FlowSettings,
    fit_match,
    fit_pair,
)
from studio.imaging import Picture, load_picture
from studio.models.device import describe_device, resolve_device

DEFAULT_PHOTOS = [Path("/usr/share/backgrounds/mate/nature"), Path("/usr/share/backgrounds")]
SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"}
WORKING_PIXELS = 1_000_000
MEGAPIXELS_12 = (3000, 4000)
SWD_PROJECTIONS = 128
SWD_SAMPLES = 20_000


# --- Classical transfers (numpy, on sRGB-encoded float pixels (H, W, 3)) ------------------------

_RGB_TO_LMS = np.array(
    [[0.3811, 0.5783, 0.0402], [0.1967, 0.7244, 0.0782], [0.0241, 0.1288, 0.8444]]
)
_LMS_TO_LAB = np.diag([1 / np.sqrt(3), 1 / np.sqrt(6), 1 / np.sqrt(2)]) @ np.array(
    [[1, 1, 1], [1, 1, -2], [1, -1, 0]]
)


def _linear(rgb: np.ndarray) -> np.ndarray:
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def _encoded(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0, 1)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def reinhard(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Reinhard, Ashikhmin, Gooch & Shirley 2001: per-channel mean/std in l-alpha-beta."""

    def to_lab(rgb: np.ndarray) -> np.ndarray:
        lms = np.log10(np.maximum(_linear(rgb.reshape(-1, 3)) @ _RGB_TO_LMS.T, 1e-6))
        return lms @ _LMS_TO_LAB.T

    src, ref = to_lab(source), to_lab(reference)
    out = (src - src.mean(0)) / (src.std(0) + 1e-9) * ref.std(0) + ref.mean(0)
    lms = 10 ** (out @ np.linalg.inv(_LMS_TO_LAB).T)
    rgb = _encoded(lms @ np.linalg.inv(_RGB_TO_LMS).T)
    return rgb.reshape(source.shape).astype(np.float32)


def mkl(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Pitié & Kokaram 2007: the linear Monge-Kantorovich map between the RGB Gaussians."""
    src, ref = source.reshape(-1, 3).astype(np.float64), reference.reshape(-1, 3).astype(np.float64)
    cov_s, cov_r = np.cov(src.T) + 1e-7 * np.eye(3), np.cov(ref.T) + 1e-7 * np.eye(3)

    def sqrt_and_inverse(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values, vectors = np.linalg.eigh(matrix)
        values = np.maximum(values, 1e-12)
        return (vectors * np.sqrt(values)) @ vectors.T, (vectors / np.sqrt(values)) @ vectors.T

    root_s, inv_root_s = sqrt_and_inverse(cov_s)
    middle, _ = sqrt_and_inverse(root_s @ cov_r @ root_s)
    transform = inv_root_s @ middle @ inv_root_s
    out = (src - src.mean(0)) @ transform + ref.mean(0)
    return np.clip(out, 0, 1).reshape(source.shape).astype(np.float32)


def idt(source: np.ndarray, reference: np.ndarray, iterations: int = 20, seed: int = 0):
    """Pitié, Kokaram & Dahyot 2005: match 1-D marginals along random rotations, repeatedly."""
    rng = np.random.default_rng(seed)
    src = source.reshape(-1, 3).astype(np.float64)
    ref = reference.reshape(-1, 3).astype(np.float64)
    levels = np.linspace(0, 1, 1025)
    for _ in range(iterations):
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        projected_src, projected_ref = src @ rotation, ref @ rotation
        moved = np.empty_like(projected_src)
        some_src = rng.integers(0, len(src), 200_000)  # quantiles from a sample: same result,
        some_ref = rng.integers(0, len(ref), 200_000)  # a fraction of the sorting
        for axis in range(3):
            src_q = np.quantile(projected_src[some_src, axis], levels)
            ref_q = np.quantile(projected_ref[some_ref, axis], levels)
            moved[:, axis] = np.interp(projected_src[:, axis], src_q, ref_q)
        src = src + (moved - projected_src) @ rotation.T
    return np.clip(src, 0, 1).reshape(source.shape).astype(np.float32)


# --- Metrics ------------------------------------------------------------------------------------


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance between two colour sets (N, 3) in OKLab."""
    rng = np.random.default_rng(seed)
    a = a[rng.integers(0, len(a), SWD_SAMPLES)]
    b = b[rng.integers(0, len(b), SWD_SAMPLES)]
    directions = rng.normal(size=(3, SWD_PROJECTIONS))
    directions /= np.linalg.norm(directions, axis=0)
    projected_a = np.sort(a @ directions, axis=0)
    projected_b = np.sort(b @ directions, axis=0)
    return float(np.sqrt(np.mean((projected_a - projected_b) ** 2)))


def ssim_structure(result: np.ndarray, source: np.ndarray) -> float:
    """Mean SSIM structure term (sigma_xy + C3) / (sigma_x sigma_y + C3) on luma, 11x11 Gaussian."""
    weights = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    x, y = (np.ascontiguousarray(image @ weights) for image in (result, source))
    c3 = (0.03**2) / 2

    def blur(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (11, 11), 1.5)

    mean_x, mean_y = blur(x), blur(y)
    var_x = np.maximum(blur(x * x) - mean_x**2, 0)
    var_y = np.maximum(blur(y * y) - mean_y**2, 0)
    covariance = blur(x * y) - mean_x * mean_y
    return float(np.mean((covariance + c3) / (np.sqrt(var_x * var_y) + c3)))


# --- The run ------------------------------------------------------------------------------------


def find_photos(arguments: list[Path]) -> list[Path]:
    photos: list[Path] = []
    for path in arguments:
        if path.is_dir():
            photos += sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
        elif path.is_file():
            photos.append(path)
    return photos


def working_size(picture: Picture) -> Picture:
    scale = min(1.0, (WORKING_PIXELS / (picture.width * picture.height)) ** 0.5)
    size = (round(picture.width * scale), round(picture.height * scale))
    pixels = cv2.resize(picture.pixels[..., :3], size, interpolation=cv2.INTER_AREA)
    return replace(picture, pixels=pixels)


@dataclass(frozen=True, order=True)
class Seconds:
    wall: float
    cpu: float  # this process's CPU time: less sensitive to other programs on the machine


def timed(function: Callable[[], object]) -> tuple[Seconds, object]:
    started, cpu = time.perf_counter(), time.process_time()
    value = function()
    return Seconds(time.perf_counter() - started, time.process_time() - cpu), value


def synthetic_edit(rgb: np.ndarray) -> np.ndarray:
    """A known grade: an S-curve with lifted blacks, a channel mix, +30% saturation."""
    curved = 0.04 + 0.92 * (3 * rgb**2 - 2 * rgb**3) * 0.6 + 0.92 * rgb * 0.4
    mix = np.array([[0.9, 0.1, 0.0], [0.05, 0.9, 0.05], [0.0, 0.15, 0.85]], dtype=np.float32)
    mixed = curved @ mix.T
    grey = mixed.mean(-1, keepdims=True)
    return np.clip(grey + 1.3 * (mixed - grey), 0, 1).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("photos", nargs="*", type=Path, help="photo files or folders")
    parser.add_argument("--pairs", type=int, default=8, help="(source, reference) pairs to score")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--layers", type=int, default=DEFAULT_COUPLING_LAYERS)
    parser.add_argument("--hidden", type=int, default=DEFAULT_HIDDEN)
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    args = parser.parse_args()

    photos = find_photos(args.photos or DEFAULT_PHOTOS)
    if len(photos) < 3:
        where = ", ".join(str(p) for p in (args.photos or DEFAULT_PHOTOS))
        print(
            f"bench/grade.py: found {len(photos)} photos in {where}; it needs at least 3.\n"
            "Install the default ones with: apt-get update && "
            "apt-get install -y mate-backgrounds lomiri-wallpapers-16.04\n"
            "or pass photo files or folders.",
            file=sys.stderr,
        )
        return 2
    device = resolve_device(args.device)
    settings = FlowSettings(
        coupling_layers=args.layers, hidden=args.hidden, iterations=args.iterations
    )
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"device: {describe_device(device)}; torch threads: {torch.get_num_threads()}; "
        f"load average {load} (other programs slow every timing below)"
    )
    print(
        f"settings: {settings.coupling_layers} coupling layers, hidden {settings.hidden}, "
        f"{settings.iterations} iterations, batch {settings.batch}; {len(photos)} photos"
    )
    count = min(args.pairs, len(photos) - 1)
    pictures = [load_picture(path) for path in photos[: count + 1]]

    # --- speed
    fit_times, grades = [], []
    for index in range(count):
        seconds, grade = timed(
            lambda i=index: fit_match(pictures[i], pictures[i + 1], settings, device=device)
        )
        fit_times.append(seconds)
        grades.append(grade)
    big = cv2.resize(pictures[0].pixels, MEGAPIXELS_12[::-1], interpolation=cv2.INTER_LINEAR)
    big_picture = replace(pictures[0], pixels=big)
    bake_times, apply_times = [], []
    for _ in range(args.rounds):
        bake_times.append(timed(lambda: grades[0].bake_lut(33))[0])
        apply_times.append(timed(lambda: grades[0].apply(big_picture, device=device))[0])
    print(
        f"\nfit (reference match, full-size photos): best {min(fit_times).wall:.2f} s, median "
        f"{statistics.median(t.wall for t in fit_times):.2f} s over {len(fit_times)} pairs "
        f"(target <= 3 s); CPU time best {min(t.cpu for t in fit_times):.2f} s"
    )
    print(
        f"apply to 12 MP (bake 33-point LUT + lookup): best {min(apply_times).wall:.3f} s, median "
        f"{statistics.median(t.wall for t in apply_times):.3f} s (target <= 0.5 s), of which the "
        f"bake is {min(t.wall for t in bake_times):.3f} s"
    )

    # --- quality
    methods: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
        "Reinhard": reinhard,
        "MKL": mkl,
        "IDT": idt,
    }
    scores: dict[str, list[tuple[float, float]]] = {"flow": [], **{name: [] for name in methods}}
    print(f"\n{'source -> reference':44s} " + " ".join(f"{n:>17s}" for n in scores))
    print(f"{'':44s} " + " ".join(f"{'SWD  SSIM-s':>17s}" for _ in scores))
    for index in range(count):
        source, reference = working_size(pictures[index]), working_size(pictures[index + 1])
        reference_lab = srgb_to_oklab_array(reference.pixels.reshape(-1, 3))
        results = {"flow": grades[index].apply(source, device=device).pixels}
        for name, method in methods.items():
            results[name] = method(source.pixels, reference.pixels)
        row = []
        for name, result in results.items():
            swd = sliced_wasserstein(srgb_to_oklab_array(result.reshape(-1, 3)), reference_lab)
            structure = ssim_structure(result, source.pixels)
            scores[name].append((swd, structure))
            row.append(f"{swd:8.4f} {structure:7.4f} ")
        label = f"{photos[index].stem[:20]} -> {photos[index + 1].stem[:20]}"
        print(f"{label:44s} " + " ".join(row))
    means = {name: np.mean(values, axis=0) for name, values in scores.items()}
    print(f"{'mean':44s} " + " ".join(f"{m[0]:8.4f} {m[1]:7.4f} " for m in means.values()))
    flow_swd, flow_structure = means["flow"]
    print(
        f"\nflow SWD / MKL {flow_swd / means['MKL'][0]:.2f}, / Reinhard "
        f"{flow_swd / means['Reinhard'][0]:.2f}, / IDT {flow_swd / means['IDT'][0]:.2f} "
        f"(target: below 1 against MKL and Reinhard); flow SSIM structure {flow_structure:.4f} "
        "(target >= 0.98)"
    )

    # --- a learnt edit
    before = working_size(pictures[0])
    after = replace(before, pixels=synthetic_edit(before.pixels))
    seconds, pair = timed(lambda: fit_pair(before, after, settings, device=device))
    assert isinstance(pair, FlowGrade)
    errors = []
    for picture in pictures[1 : count + 1]:
        other = working_size(picture)
        learnt = pair.apply(other, device=device).pixels
        expected = synthetic_edit(other.pixels)
        errors.append(float(delta_e_2000(srgb_to_cielab(learnt), srgb_to_cielab(expected)).mean()))
    print(
        f"\nlearnt edit (before/after fit {seconds.wall:.2f} s): mean CIEDE2000 on "
        f"{len(errors)} other photos {np.mean(errors):.2f} (worst photo {max(errors):.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
