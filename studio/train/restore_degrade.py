"""Synthetic old-photo damage: a clean photo -> the scanned print a family archive holds.

The order follows a print's life: the camera and enlarger blur it (and a small original is
enlarged), film grain is exposed into it, the dyes fade and shift colour, the paper's texture
shows, it is scratched, dusty and creased, and at last it is scanned (sensor noise) and saved as
JPEG. Every step has its probability, so some patches are only lightly damaged.

Besides the degraded picture, the function returns what the restoration VAE learns towards: the
clean photo with the same global fade and cast (`toned`: the network restores locally and leaves
global colour to the colour-cast correction), the same with the physical damage drawn on it
(`damaged`: what the network keeps where it is not asked to inpaint), the damage mask and the
paper texture's gain (what the restorer's paper branch learns to estimate).
Images are float32 (H, W, 3) numpy arrays in [0, 1]; the mask is (H, W) in {0, 1}.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import cv2
import numpy as np

DAMAGE_ALPHA = 0.25  # damage drawn at least this opaque is in the mask


@dataclass(frozen=True)
class OldPhotoDamage:
    """How often each step happens, and how strongly."""

    blur: float = 0.6
    blur_sigma: tuple[float, float] = (0.4, 1.8)
    enlarge: float = 0.3  # a small original, enlarged by a factor of...
    enlarge_factor: tuple[float, float] = (1.3, 2.5)
    grain: float = 0.75
    grain_sigma: tuple[float, float] = (3.0, 14.0)  # 8-bit levels, at mid-grey
    fade: float = 0.5
    fade_amount: tuple[float, float] = (0.05, 0.35)
    cast: float = 0.5
    paper: float = 0.4
    scratches: float = 0.6
    scratch_count: tuple[int, int] = (1, 6)
    dust: float = 0.6
    dust_count: tuple[int, int] = (3, 40)  # per 256x256 pixels
    crease: float = 0.15
    scan_noise: float = 0.5
    scan_sigma: tuple[float, float] = (1.0, 4.0)
    jpeg: float = 0.6
    jpeg_quality: tuple[int, int] = (35, 92)


# A typical scanned family print: always some blur, grain, fading, scratches, dust, scan noise and
# JPEG (the bench's mix; training draws half its patches from it, half from the wide default).
SCANNED_PRINT = OldPhotoDamage(
    blur=1.0,
    blur_sigma=(0.4, 1.2),
    enlarge=0.0,
    grain=1.0,
    grain_sigma=(4.0, 12.0),
    fade=1.0,
    fade_amount=(0.05, 0.25),
    cast=0.5,
    paper=0.5,
    scratches=1.0,
    scratch_count=(2, 6),
    dust=1.0,
    dust_count=(5, 25),
    crease=0.3,
    scan_noise=1.0,
    scan_sigma=(1.0, 3.0),
    jpeg=1.0,
    jpeg_quality=(70, 92),
)


@dataclass
class DamagedPhoto:
    degraded: np.ndarray
    clean: np.ndarray
    toned: np.ndarray
    damaged: np.ndarray
    damage: np.ndarray
    paper: np.ndarray  # (H, W): the paper texture's gain on the print (ones where there is none)


def degrade_old_photo(
    clean: np.ndarray, rng: random.Random, setting: OldPhotoDamage = OldPhotoDamage()
) -> DamagedPhoto:
    """Age one photo (or patch). Deterministic for a given `rng` state."""
    noise = np.random.default_rng(rng.getrandbits(63))
    height, width = clean.shape[:2]
    image = clean.astype(np.float32)
    if rng.random() < setting.blur:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(*setting.blur_sigma))
    if rng.random() < setting.enlarge:
        factor = rng.uniform(*setting.enlarge_factor)
        small = (max(1, round(width / factor)), max(1, round(height / factor)))
        image = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
    if rng.random() < setting.grain:
        image = film_grain(image, rng.uniform(*setting.grain_sigma) / 255, rng, noise)
    tone = random_tone(rng, setting)
    image = apply_tone(image, tone)
    toned = apply_tone(clean.astype(np.float32), tone)
    paper = np.ones((height, width), np.float32)
    if rng.random() < setting.paper:
        paper = paper_texture(height, width, rng, noise)
        image = image * paper[..., None]
    alpha, colour = draw_damage(height, width, rng, noise, setting)
    image = image * (1 - alpha) + colour * alpha
    damaged = toned * (1 - alpha) + colour * alpha
    if rng.random() < setting.scan_noise:
        sigma = rng.uniform(*setting.scan_sigma) / 255
        image = image + noise.normal(0, sigma, image.shape).astype(np.float32)
    image = quantise(image)
    if rng.random() < setting.jpeg:
        image = jpeg(image, rng.randint(*setting.jpeg_quality))
    return DamagedPhoto(
        degraded=image,
        clean=clean.astype(np.float32),
        toned=np.clip(toned, 0, 1),
        damaged=np.clip(damaged, 0, 1),
        damage=(alpha[..., 0] >= DAMAGE_ALPHA).astype(np.float32),
        paper=paper,
    )


def film_grain(
    image: np.ndarray, sigma: float, rng: random.Random, noise: np.random.Generator
) -> np.ndarray:
    """Clumped, mostly monochrome grain, strongest in the mid-tones."""
    height, width = image.shape[:2]
    mono = noise.normal(0, 1, (height, width, 1)).astype(np.float32)
    colour = noise.normal(0, 1, (height, width, 3)).astype(np.float32)
    mix = rng.uniform(0.0, 0.4)
    grain = (1 - mix) * mono + mix * colour
    clump = rng.uniform(0.0, 1.0)
    if clump > 0.3:
        grain = cv2.GaussianBlur(grain, (0, 0), clump)
        grain = grain / max(float(grain.std()), 1e-6)
        grain = grain.reshape(height, width, -1)
    midtones = 4 * image * (1 - image) * 0.7 + 0.3
    return image + grain * sigma * midtones


@dataclass(frozen=True)
class Tone:
    """A global fade towards a paper colour and a per-channel cast: x * gain + offset."""

    gain: tuple[float, float, float]
    offset: tuple[float, float, float]


def random_tone(rng: random.Random, setting: OldPhotoDamage) -> Tone:
    gain = np.ones(3)
    offset = np.zeros(3)
    if rng.random() < setting.fade:
        amount = rng.uniform(*setting.fade_amount)
        paper = np.array([1.0, rng.uniform(0.85, 0.98), rng.uniform(0.6, 0.9)])
        paper *= rng.uniform(0.75, 1.0)
        gain *= 1 - amount
        offset = offset * (1 - amount) + amount * paper
    if rng.random() < setting.cast:
        cast = np.array([rng.uniform(0.85, 1.12) for _ in range(3)])
        gain *= cast
        offset *= cast
    return Tone(tuple(float(g) for g in gain), tuple(float(o) for o in offset))


def apply_tone(image: np.ndarray, tone: Tone) -> np.ndarray:
    gain = np.asarray(tone.gain, dtype=np.float32)
    offset = np.asarray(tone.offset, dtype=np.float32)
    return image * gain + offset


def paper_texture(
    height: int, width: int, rng: random.Random, noise: np.random.Generator
) -> np.ndarray:
    """Blotchy unevenness and fine fibres: an (H, W) gain the print is multiplied by."""
    blotch = cv2.GaussianBlur(
        noise.normal(0, 1, (height, width)).astype(np.float32), (0, 0), rng.uniform(6, 20)
    )
    blotch = blotch / max(float(blotch.std()), 1e-6) * rng.uniform(0.01, 0.05)
    fibre = cv2.GaussianBlur(
        noise.normal(0, 1, (height, width)).astype(np.float32), (0, 0), rng.uniform(0.6, 1.2)
    )
    fibre = fibre / max(float(fibre.std()), 1e-6) * rng.uniform(0.005, 0.02)
    return (1 + blotch + fibre).astype(np.float32)


def draw_damage(
    height: int,
    width: int,
    rng: random.Random,
    noise: np.random.Generator,
    setting: OldPhotoDamage,
) -> tuple[np.ndarray, np.ndarray]:
    """Scratches, dust and creases as an opacity (H, W, 1) and the colour they show (H, W, 3)."""
    alpha = np.zeros((height, width), np.float32)
    shade = np.zeros((height, width), np.float32)  # the damage's brightness where drawn
    area = height * width / (256 * 256)
    if rng.random() < setting.scratches:
        for _ in range(rng.randint(*setting.scratch_count)):
            _draw_scratch(alpha, shade, rng)
    if rng.random() < setting.dust:
        count = max(1, round(rng.randint(*setting.dust_count) * area))
        for _ in range(count):
            _draw_speck(alpha, shade, rng)
    if rng.random() < setting.crease:
        _draw_crease(alpha, shade, rng, noise)
    colour = np.repeat(shade[..., None], 3, axis=2)
    tint = np.array([1.0, rng.uniform(0.95, 1.0), rng.uniform(0.85, 1.0)], np.float32)
    return alpha[..., None], np.clip(colour * tint, 0, 1)


def _stamp(
    alpha: np.ndarray, shade: np.ndarray, layer: np.ndarray, opacity: float, bright: float
) -> None:
    layer = layer * opacity
    over = layer > alpha
    alpha[over] = layer[over]
    shade[over] = bright


def _damage_shade(rng: random.Random) -> float:
    """Mostly white (emulsion scraped off, as it scans), sometimes dark (dirt, ink)."""
    return rng.uniform(0.82, 1.0) if rng.random() < 0.7 else rng.uniform(0.0, 0.25)


def _draw_scratch(alpha: np.ndarray, shade: np.ndarray, rng: random.Random) -> None:
    height, width = alpha.shape
    layer = np.zeros_like(alpha)
    length = rng.uniform(0.3, 1.5) * max(height, width)
    angle = rng.uniform(0, math.pi)
    x, y = rng.uniform(0, width), rng.uniform(0, height)
    bend = rng.uniform(-0.004, 0.004)
    points = []
    steps = 24
    for _ in range(steps + 1):
        points.append((x, y))
        angle += bend * length / steps + rng.gauss(0, 0.03)
        x += math.cos(angle) * length / steps
        y += math.sin(angle) * length / steps
    shift = 4  # sub-pixel precision for anti-aliased lines
    pts = np.array([[round(px * 16), round(py * 16)] for px, py in points], np.int32)
    thickness = rng.choice((1, 1, 1, 2, 2, 3))
    cv2.polylines(layer, [pts], False, 1.0, thickness, cv2.LINE_AA, shift)
    _stamp(alpha, shade, layer, rng.uniform(0.5, 1.0), _damage_shade(rng))


def _draw_speck(alpha: np.ndarray, shade: np.ndarray, rng: random.Random) -> None:
    height, width = alpha.shape
    layer = np.zeros_like(alpha)
    centre = (round(rng.uniform(0, width) * 16), round(rng.uniform(0, height) * 16))
    radius = rng.uniform(0.6, 3.5)
    if rng.random() < 0.7:
        cv2.circle(layer, centre, max(1, round(radius * 16)), 1.0, -1, cv2.LINE_AA, 4)
    else:  # a hair or fibre
        axes = (max(1, round(radius * 16 * rng.uniform(2, 6))), 8)
        angle = rng.uniform(0, 180)
        cv2.ellipse(layer, centre, axes, angle, 0, rng.uniform(90, 300), 1.0, 1, cv2.LINE_AA, 4)
    _stamp(alpha, shade, layer, rng.uniform(0.6, 1.0), _damage_shade(rng))


def _draw_crease(
    alpha: np.ndarray, shade: np.ndarray, rng: random.Random, noise: np.random.Generator
) -> None:
    """A fold: a wide, broken light line where the emulsion cracked."""
    height, width = alpha.shape
    layer = np.zeros_like(alpha)
    angle = rng.uniform(0, math.pi)
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    reach = 2 * max(height, width)
    start = (round((cx - math.cos(angle) * reach) * 16), round((cy - math.sin(angle) * reach) * 16))
    end = (round((cx + math.cos(angle) * reach) * 16), round((cy + math.sin(angle) * reach) * 16))
    cv2.line(layer, start, end, 1.0, rng.randint(2, 5), cv2.LINE_AA, 4)
    broken = noise.random((height, width)).astype(np.float32)
    broken = cv2.GaussianBlur(broken, (0, 0), 2.0)
    layer *= (broken > np.median(broken) - 0.02).astype(np.float32)
    _stamp(alpha, shade, layer, rng.uniform(0.5, 0.9), rng.uniform(0.8, 1.0))


def quantise(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255).round().astype(np.float32) / 255


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Save as JPEG at `quality` (4:2:0) and decode: blocks and ringing."""
    rgb = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    ok, data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255
