"""The shipped restoration VAE on photos it never saw, against a classical pipeline.

    python bench/restore.py [--long-side 1024] [--model FILE] [--seed 0] [--photos validation]
                            [--device cpu] [--scan 12] [--holes] [--ensemble 8]

Ground truth: each held-out test photo (`studio.train.photos.TEST_PHOTOS`, never trained on and
never used to choose a checkpoint) resized to `--long-side` px on its long side. The bench ages
each one with the old-photo mix below (`studio.train.restore_degrade`, seeded per photo): every
photo is blurred a little, grainy, faded, scratched and dusty, scanned with sensor noise and
saved as JPEG; some also get a colour cast, paper texture and a crease.

Methods, all on the same aged photo:
- *degraded*: the aged photo itself;
- *classical*: OpenCV's Telea inpainting of the damage mask, then non-local-means denoising
  (`fastNlMeansDenoisingColored`; its strength `h` is chosen on the validation photos, aged the
  same way, from a grid: the best it can do here);
- *studio*: `studio.engines.restore.run` with scratches fixed, fully automatic: the VAE detects
  the damage itself. The classical pipeline is given that same detected mask (and, in a second
  table, both get the true damage mask).

Table A measures restoration alone, against the photo with its fading kept (no method corrects
colour). Table B measures against the original photo, each method followed by the same auto
levels (Studio's colour-cast correction). PSNR and SSIM on the luma, border 4 px, means over the
photos. Speed: seconds per megapixel of the engine (restore only, and with scratch filling) and of
the classical pipeline, on this machine, best of `--rounds`; `--scan 12` also times one 12 MP
scan (the first test photo enlarged and aged), after a warm-up. `--device cuda` runs Studio
on the GPU (the prefilter and the classical pipeline stay on the CPU, as in the app).
`--ensemble N` runs Studio with that many passes per tile (the photo mirrored and turned, averaged).

`--holes` measures filling instead, as a person paints over a damaged print before fixing it:
on each aged photo the true damage grown by 2 px, three 9 px strokes and a 48 px disc in the
middle (wider than any scratch) are given to Studio as a painted mask and to the classical
pipeline (Telea fills them, radius 3 as above, not tuned). It prints PSNR-Y of the whole
picture (border cropped) and of the painted pixels alone (all of them, border included), against
the photo with its damage kept where nothing was painted, and how far Studio's variations (three,
seeded) differ from picture 1 where it filled and in the disc, in 8-bit levels. It times nothing.

`--photos validation` measures on the validation photos instead (aged as when choosing `h`): for
choosing checkpoints and thresholds without looking at the test photos. There the classical
pipeline's `h` is tuned on the very photos it is measured on, which flatters it a little.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.engines.restore import RestoreRequest, apply_levels, colour_levels, run
from studio.models.cache import ModelCache
from studio.models.device import resolve_device
from studio.models.shipped import default_restorer
from studio.train.data import load_photo
from studio.train.metrics import luma, psnr_y, ssim_y
from studio.train.photos import TEST_PHOTOS, VALIDATION_PHOTOS, named_photos
from studio.train.restore_degrade import SCANNED_PRINT, DamagedPhoto, degrade_old_photo

PHOTO_FOLDERS = ("/usr/share/backgrounds", "/usr/share/backgrounds/mate/nature")
BORDER = 4
NLM_STRENGTHS = (3, 5, 7, 9, 12, 15)
TELEA_RADIUS = 3
HOLE_GROWTH = 2  # px the true damage is grown by, as a person paints generously
HOLE_STROKES = 3
HOLE_STROKE_WIDTH = 9
HOLE_DISC = 48  # px across: wider than any scratch, so the fill must invent, not interpolate
VARIATIONS = 3


@dataclass
class Aged:
    name: str
    photo: DamagedPhoto
    path: Path  # the aged photo as an 8-bit PNG, what the engine reads


def age(photos: list[Path], long_side: int, seed: int, folder: Path) -> list[Aged]:
    aged = []
    for index, path in enumerate(photos):
        clean = load_photo(path, long_side).astype(np.float32) / 255
        photo = degrade_old_photo(clean, random.Random(seed * 1000 + index), SCANNED_PRINT)
        file = folder / f"{path.stem}-aged.png"
        Image.fromarray(to_uint8(photo.degraded)).save(file)
        aged.append(Aged(path.name, photo, file))
    return aged


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    return (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)


def classical(degraded: np.ndarray, mask: np.ndarray, strength: float) -> np.ndarray:
    """Telea inpainting of `mask`, then non-local means (the usual OpenCV restoration)."""
    bgr = to_uint8(degraded)[..., ::-1].copy()
    inpainted = cv2.inpaint(bgr, mask.astype(np.uint8) * 255, TELEA_RADIUS, cv2.INPAINT_TELEA)
    denoised = cv2.fastNlMeansDenoisingColored(inpainted, None, strength, strength, 7, 21)
    return denoised[..., ::-1].astype(np.float32) / 255


def studio(
    aged: Aged,
    model: Path,
    cache: ModelCache,
    folder: Path,
    mask: np.ndarray | None = None,
    device: str = "cpu",
    ensemble: int = 1,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The engine's restoration (no colour correction), the mask it filled, and its seconds."""
    mask_path = None
    if mask is not None:
        mask_path = str(folder / f"{Path(aged.name).stem}-mask.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
    request = RestoreRequest(
        input_path=str(aged.path),
        model_path=str(model),
        fix_scratches=True,
        mask_path=mask_path,
        device=device,
        ensemble=ensemble,
    )
    started = time.perf_counter()
    result = run(request, cache=cache)
    seconds = time.perf_counter() - started
    assert result.damage_mask is not None
    return result.pictures[0].pixels, result.damage_mask, seconds


def tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).unsqueeze(0)


def scores(result: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    return psnr_y(tensor(result), tensor(truth), BORDER), ssim_y(
        tensor(result), tensor(truth), BORDER
    )


def levelled(pixels: np.ndarray) -> np.ndarray:
    return apply_levels(pixels, colour_levels(pixels))


def choose_nlm_strength(validation: list[Aged]) -> float:
    """The NLM strength with the best mean PSNR (against the faded truth) on validation photos."""
    best = max(
        NLM_STRENGTHS,
        key=lambda h: np.mean(
            [
                scores(classical(a.photo.degraded, a.photo.damage > 0, h), a.photo.toned)[0]
                for a in validation
            ]
        ),
    )
    return float(best)


def print_table(title: str, rows: dict[str, list[tuple[float, float]]]) -> None:
    print(f"\n{title}")
    print("| method | PSNR-Y dB | SSIM-Y | vs classical dB |")
    print("|---|---|---|---|")
    reference = np.mean([r[0] for r in rows["classical"]])
    for method, values in rows.items():
        psnr = np.mean([v[0] for v in values])
        ssim = np.mean([v[1] for v in values])
        print(f"| {method} | {psnr:.2f} | {ssim:.4f} | {psnr - reference:+.2f} |")


def speed(
    aged: list[Aged],
    model: Path,
    cache: ModelCache,
    strength: float,
    rounds: int,
    device: str,
    ensemble: int,
) -> None:
    megapixels = sum(a.photo.degraded.shape[0] * a.photo.degraded.shape[1] for a in aged) / 1e6

    def best(run_all: Callable[[], None]) -> float:
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            run_all()
            times.append(time.perf_counter() - started)
        return min(times) / megapixels

    def engine(fix: bool) -> Callable[[], None]:
        def go() -> None:
            for a in aged:
                request = RestoreRequest(
                    str(a.path), str(model), fix_scratches=fix, device=device, ensemble=ensemble
                )
                run(request, cache=cache)

        return go

    def opencv() -> None:
        for a in aged:
            classical(a.photo.degraded, a.photo.damage > 0, strength)

    print(f"\nspeed on {megapixels:.2f} MP, {describe(device)}, {torch.get_num_threads()} threads:")
    print(f"  studio, restore only:        {best(engine(False)):.2f} s/MP")
    print(f"  studio, with scratch filling: {best(engine(True)):.2f} s/MP")
    print(f"  classical (Telea + NLM):     {best(opencv):.2f} s/MP")


def scan_speed(
    photo: Path,
    megapixels: float,
    model: Path,
    cache: ModelCache,
    folder: Path,
    device: str,
    ensemble: int,
) -> None:
    """Seconds for one large scan, as a person restores a flatbed scan (after a warm-up)."""
    height = round((megapixels * 1e6 * 3 / 4) ** 0.5)
    width = height * 4 // 3
    clean = np.asarray(
        Image.open(photo).convert("RGB").resize((width, height), Image.Resampling.LANCZOS),
        dtype=np.float32,
    )
    aged = degrade_old_photo(clean / 255, random.Random(7), SCANNED_PRINT)
    path = folder / "scan.png"
    Image.fromarray(to_uint8(aged.degraded)).save(path)
    Image.fromarray(to_uint8(aged.degraded[:512, :512])).save(folder / "warm.png")
    for fix in (False, True):  # loading, and the first kernels of both passes
        warm = RestoreRequest(
            str(folder / "warm.png"),
            str(model),
            fix_scratches=fix,
            device=device,
            ensemble=ensemble,
        )
        run(warm, cache=cache)
    print(f"\none {width}x{height} scan ({width * height / 1e6:.1f} MP), {describe(device)}:")
    for fix in (False, True):
        started = time.perf_counter()
        result = run(
            RestoreRequest(
                str(path), str(model), fix_scratches=fix, device=device, ensemble=ensemble
            ),
            cache=cache,
        )
        seconds = time.perf_counter() - started
        what = "with scratch filling" if fix else "restore only"
        print(
            f"  {what}: {seconds:.1f} s, {seconds / (width * height / 1e6):.2f} s/MP "
            f"({result.dtype}, tiles of {result.tile} px)"
        )


def painted_holes(damage: np.ndarray, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """A mask as a person paints it over a print (damage grown, strokes, a disc); and the disc."""
    height, width = damage.shape
    size = 2 * HOLE_GROWTH + 1
    mask = cv2.dilate((damage > 0).astype(np.uint8), np.ones((size, size), np.uint8))
    for _ in range(HOLE_STROKES):
        start = (rng.randrange(width), rng.randrange(height))
        end = (rng.randrange(width), rng.randrange(height))
        cv2.line(mask, start, end, 1, HOLE_STROKE_WIDTH)
    disc = np.zeros_like(mask)
    cv2.circle(disc, (width // 2, height // 2), HOLE_DISC // 2, 1, -1)
    return (mask | disc) > 0, disc > 0


def masked_psnr_y(result: np.ndarray, truth: np.ndarray, where: np.ndarray) -> float:
    """PSNR of the luma over the pixels `where` only (8-bit-rounded result, as psnr_y)."""
    error = luma(tensor(to_uint8(result).astype(np.float32) / 255)) - luma(tensor(truth))
    mse = float(error[0, 0][torch.from_numpy(where)].pow(2).mean())
    return 10 * np.log10(255**2 / max(mse, 1e-10))


def holes(
    aged: list[Aged],
    model: Path,
    cache: ModelCache,
    folder: Path,
    strength: float,
    seed: int,
    device: str,
    ensemble: int,
) -> None:
    """Painted holes filled by Studio's decoder and by Telea; how far Studio's variations differ."""
    rows: dict[str, list[tuple[float, float]]] = {"classical": [], "studio": []}
    spread, disc_spread = [], []
    for index, a in enumerate(aged):
        mask, disc = painted_holes(a.photo.damage, random.Random(seed * 1000 + 500 + index))
        mask_path = folder / f"{Path(a.name).stem}-painted.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
        request = RestoreRequest(
            str(a.path),
            str(model),
            fix_scratches=True,
            mask_path=str(mask_path),
            variations=1 + VARIATIONS,
            seed=3,
            device=device,
            ensemble=ensemble,
        )
        pictures = [p.pixels[..., :3] for p in run(request, cache=cache).pictures]
        # Where nothing was painted the engine keeps the damage it was not asked to fill.
        truth = np.where(mask[..., None], a.photo.toned, a.photo.damaged)
        opencv = classical(a.photo.degraded, mask, strength)
        for method, pixels in (("classical", opencv), ("studio", pictures[0])):
            rows[method].append((scores(pixels, truth)[0], masked_psnr_y(pixels, truth, mask)))
        differences = [255 * np.abs(p - pictures[0]).mean(axis=2) for p in pictures[1:]]
        spread.append(np.mean([d[mask].mean() for d in differences]))
        disc_spread.append(np.mean([d[disc].mean() for d in differences]))
        print(
            f"  {a.name}: painted {mask.mean():.1%}; in the holes studio "
            f"{rows['studio'][-1][1]:.2f} dB, classical {rows['classical'][-1][1]:.2f} dB; "
            f"variations differ by {spread[-1]:.2f} levels ({disc_spread[-1]:.2f} in the disc)"
        )
    print("\nC. painted holes filled (truth: the faded photo, its damage kept where not painted)")
    print("| method | PSNR-Y dB | PSNR-Y in the holes dB | vs classical in the holes dB |")
    print("|---|---|---|---|")
    reference = np.mean([r[1] for r in rows["classical"]])
    for method, values in rows.items():
        whole, inside = np.mean([v[0] for v in values]), np.mean([v[1] for v in values])
        print(f"| {method} | {whole:.2f} | {inside:.2f} | {inside - reference:+.2f} |")
    print(
        f"studio's variations differ from picture 1 by {np.mean(spread):.2f} levels in the holes, "
        f"{np.mean(disc_spread):.2f} in the {HOLE_DISC} px disc"
    )


def describe(device: str) -> str:
    """Where Studio ran (the precision is the engine's choice there, printed with each time)."""
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        return f"{torch.cuda.get_device_name(resolved)} (CUDA)"
    return "Apple MPS" if resolved.type == "mps" else "CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", action="append", help="photo folders (default: Debian's)")
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped VAE")
    parser.add_argument("--long-side", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2, help="speed runs (0: no speed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where Studio runs (auto, cuda, mps, cpu)")
    parser.add_argument(
        "--scan", type=float, default=0, metavar="MP", help="also time one scan of MP megapixels"
    )
    parser.add_argument(
        "--photos", choices=("test", "validation"), default="test", help="which photos to measure"
    )
    parser.add_argument("--holes", action="store_true", help="measure filling painted holes")
    parser.add_argument(
        "--ensemble", type=int, choices=(1, 2, 4, 8), default=1, help="Studio's passes per tile"
    )
    args = parser.parse_args(argv)
    if args.holes and args.scan:
        parser.error("--holes measures filling and times nothing; run --scan on its own")
    torch.set_num_threads(args.threads)
    folders = args.data or PHOTO_FOLDERS
    model = args.model or default_restorer()
    tests = named_photos(folders, TEST_PHOTOS)
    validation_photos = named_photos(folders, VALIDATION_PHOTOS)
    if not tests or not validation_photos:
        print("bench/restore.py: the test and validation photos were not found", file=sys.stderr)
        return 1
    cache = ModelCache()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        validation = age(validation_photos, args.long_side, args.seed + 1, folder)
        strength = choose_nlm_strength(validation)
        aged = (
            validation
            if args.photos == "validation"
            else age(tests, args.long_side, args.seed, folder)
        )
        print(
            f"model {model.name}; {len(aged)} {args.photos} photos at {args.long_side} px; "
            f"NLM h={strength:g}; studio ensemble {args.ensemble}"
        )
        if args.holes:  # filling only: tables A-B and the speed runs are another bench run
            holes(aged, model, cache, folder, strength, args.seed, args.device, args.ensemble)
            return 0
        detected: dict[str, list[tuple[float, float]]] = {
            "degraded": [],
            "classical": [],
            "studio": [],
        }
        oracle: dict[str, list[tuple[float, float]]] = {"classical": [], "studio": []}
        levels: dict[str, list[tuple[float, float]]] = {
            "degraded": [],
            "classical": [],
            "studio": [],
        }
        for a in aged:
            restored, mask, _seconds = studio(
                a, model, cache, folder, device=args.device, ensemble=args.ensemble
            )
            opencv = classical(a.photo.degraded, mask, strength)
            truth = a.photo.toned
            detected["degraded"].append(scores(a.photo.degraded, truth))
            detected["classical"].append(scores(opencv, truth))
            detected["studio"].append(scores(restored, truth))
            for method, pixels in (
                ("degraded", a.photo.degraded),
                ("classical", opencv),
                ("studio", restored),
            ):
                levels[method].append(scores(levelled(pixels), a.photo.clean))
            true_mask = a.photo.damage > 0
            restored_true, _, _ = studio(
                a, model, cache, folder, true_mask, args.device, args.ensemble
            )
            oracle["classical"].append(
                scores(classical(a.photo.degraded, true_mask, strength), truth)
            )
            oracle["studio"].append(scores(restored_true, truth))
            iou = float((mask & true_mask).sum() / max((mask | true_mask).sum(), 1))
            print(
                f"  {a.name}: studio {detected['studio'][-1][0]:.2f} dB, classical "
                f"{detected['classical'][-1][0]:.2f} dB, degraded {detected['degraded'][-1][0]:.2f}"
                f" dB; detected mask IoU {iou:.2f}"
            )
        print_table("A. restoration, damage detected by Studio (truth: the faded photo)", detected)
        print_table("A'. restoration, the true damage mask given to both", oracle)
        print_table("B. restoration then auto levels (truth: the original photo)", levels)
        if args.rounds > 0:
            speed(aged, model, cache, strength, args.rounds, args.device, args.ensemble)
        if args.scan > 0:
            scan_speed(tests[0], args.scan, model, cache, folder, args.device, args.ensemble)
    return 0


if __name__ == "__main__":
    sys.exit(main())
