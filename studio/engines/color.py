"""Colour science the Grade tool needs: sRGB <-> OKLab, CIEDE2000, and ICC profiles -> sRGB.

Grades are fitted in OKLab (Ottosson 2020), a perceptual space where distances and straight lines
look even, so a flow spends its capacity where eyes see differences. CIELAB and ΔE2000 measure the
result the way colour scientists do. A picture with an embedded non-sRGB profile (Display P3, Adobe
RGB, ProPhoto...) is converted to sRGB on the way in with LittleCMS (Pillow's ImageCms), so every
grade and LUT works on sRGB-encoded values, as `.cube` files for display-referred photos expect.
"""

from __future__ import annotations

import functools
import logging
import struct
from collections.abc import Callable
from dataclasses import replace
from io import BytesIO

import numpy as np
import torch
from PIL import Image, ImageCms
from torch import Tensor

from studio.engines.lut import apply_lut, identity_lut
from studio.imaging import Picture

log = logging.getLogger(__name__)

# Ottosson's OKLab: linear sRGB -> LMS -> cube root -> Lab, and back.
_RGB_TO_LMS = (
    (0.4122214708, 0.5363325363, 0.0514459929),
    (0.2119034982, 0.6806995451, 0.1073969566),
    (0.0883024619, 0.2817188376, 0.6299787005),
)
_LMS_TO_LAB = (
    (0.2104542553, 0.7936177850, -0.0040720468),
    (1.9779984951, -2.4285922050, 0.4505937099),
    (0.0259040371, 0.7827717662, -0.8086757660),
)
_LAB_TO_LMS = (
    (1.0, 0.3963377774, 0.2158037573),
    (1.0, -0.1055613458, -0.0638541728),
    (1.0, -0.0894841775, -1.2914855480),
)
_LMS_TO_RGB = (
    (4.0767416621, -3.3077115913, 0.2309699292),
    (-1.2684380046, 2.6097574011, -0.3413193965),
    (-0.0041960863, -0.7034186147, 1.7076147010),
)
# IEC 61966-2-1 sRGB primaries, D65 white, for CIELAB
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_D65 = np.array([0.95047, 1.0, 1.08883])
# A picture whose channels differ by less than this at the 99th percentile is grey.
GREY_SPREAD = 3.0 / 255.0


def _matmul(x: Tensor, rows: tuple[tuple[float, ...], ...]) -> Tensor:
    matrix = torch.tensor(rows, dtype=x.dtype, device=x.device)
    return x @ matrix.T


def srgb_to_linear(rgb: Tensor) -> Tensor:
    """sRGB-encoded values -> linear light (extended to negatives by symmetry)."""
    magnitude = rgb.abs()
    linear = torch.where(
        magnitude <= 0.04045, magnitude / 12.92, ((magnitude + 0.055) / 1.055) ** 2.4
    )
    return linear.copysign(rgb)


def linear_to_srgb(linear: Tensor) -> Tensor:
    magnitude = linear.abs()
    encoded = torch.where(
        magnitude <= 0.0031308, magnitude * 12.92, 1.055 * magnitude ** (1 / 2.4) - 0.055
    )
    return encoded.copysign(linear)


def srgb_to_oklab(rgb: Tensor) -> Tensor:
    """(..., 3) sRGB-encoded values in [0, 1] -> OKLab (L in [0, 1], a and b about +-0.4)."""
    lms = linear_to_lms(srgb_to_linear(rgb))
    return lms_root_to_oklab(lms.abs().pow(1 / 3).copysign(lms))


def linear_to_lms(linear: Tensor) -> Tensor:
    """The first step of OKLab: linear sRGB -> cone responses (LMS)."""
    return _matmul(linear, _RGB_TO_LMS)


def lms_root_to_oklab(root: Tensor) -> Tensor:
    """The last step of OKLab: cube roots of LMS -> L, a, b."""
    return _matmul(root, _LMS_TO_LAB)


def oklab_to_linear(lab: Tensor) -> Tensor:
    """OKLab -> linear sRGB, not clipped (colours outside the sRGB gamut leave [0, 1])."""
    return _matmul(_matmul(lab, _LAB_TO_LMS).pow(3), _LMS_TO_RGB)


def oklab_to_srgb(lab: Tensor) -> Tensor:
    """OKLab -> sRGB-encoded values, clipped to the gamut in linear light."""
    return linear_to_srgb(oklab_to_linear(lab).clamp(0.0, 1.0))


def oklab_to_srgb_unclipped(lab: Tensor) -> Tensor:
    """OKLab -> sRGB-encoded values, extended beyond [0, 1] for colours outside the gamut."""
    return linear_to_srgb(oklab_to_linear(lab))


def srgb_to_oklab_array(rgb: np.ndarray) -> np.ndarray:
    """NumPy convenience for `srgb_to_oklab` (float32 in, float32 out)."""
    tensor = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))
    return srgb_to_oklab(tensor).numpy()


def oklab_to_srgb_array(lab: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(lab, dtype=np.float32))
    return oklab_to_srgb(tensor).numpy()


def srgb_to_cielab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB-encoded values -> CIE 1976 L*a*b* under D65 (float64)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((np.abs(rgb) + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _D65
    epsilon, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > epsilon, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


def delta_e_2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference between CIELAB colours (Sharma, Wu & Dalal 2005), kL=kC=kH=1."""
    lab1 = np.asarray(lab1, dtype=np.float64)
    lab2 = np.asarray(lab2, dtype=np.float64)
    l1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    l2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    c_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_mean**7 / (c_mean**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    chroma_product = c1p * c2p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(chroma_product == 0, 0.0, dh)
    d_l = l2 - l1
    d_c = c2p - c1p
    d_h = 2 * np.sqrt(chroma_product) * np.sin(np.radians(dh / 2))

    l_mean = (l1 + l2) / 2
    cp_mean = (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_mean = np.where(
        np.abs(h1p - h2p) <= 180,
        h_sum / 2,
        np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2),
    )
    h_mean = np.where(chroma_product == 0, h_sum, h_mean)
    t = (
        1
        - 0.17 * np.cos(np.radians(h_mean - 30))
        + 0.24 * np.cos(np.radians(2 * h_mean))
        + 0.32 * np.cos(np.radians(3 * h_mean + 6))
        - 0.20 * np.cos(np.radians(4 * h_mean - 63))
    )
    d_theta = 30 * np.exp(-(((h_mean - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(cp_mean**7 / (cp_mean**7 + 25.0**7))
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c = 1 + 0.045 * cp_mean
    s_h = 1 + 0.015 * cp_mean * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    return np.sqrt(
        (d_l / s_l) ** 2 + (d_c / s_c) ** 2 + (d_h / s_h) ** 2 + r_t * (d_c / s_c) * (d_h / s_h)
    )


def is_grey(pixels: np.ndarray, *, max_samples: int = 200_000) -> bool:
    """Whether a picture has no colour to speak of: one channel, or RGB channels (nearly) equal."""
    if pixels.shape[-1] < 3:
        return True
    flat = pixels.reshape(-1, pixels.shape[-1])
    step = max(1, flat.shape[0] // max_samples)
    rgb = flat[::step, :3]
    spread = rgb.max(axis=1) - rgb.min(axis=1)
    return bool(np.quantile(spread, 0.99) < GREY_SPREAD)


@functools.cache
def srgb_profile_bytes() -> bytes:
    """An sRGB ICC profile (LittleCMS's built-in), embedded in outputs converted to sRGB."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def is_srgb_profile(icc_profile: bytes | None) -> bool:
    """True for no profile (sRGB is assumed) and for profiles that describe sRGB."""
    if not icc_profile:
        return True
    try:
        profile = ImageCms.ImageCmsProfile(BytesIO(icc_profile))
        description = ImageCms.getProfileDescription(profile) or ""
    except (ImageCms.PyCMSError, OSError, ValueError):
        return True  # unreadable: nothing to convert with; treat the pixels as sRGB
    return "srgb" in description.lower().replace(" ", "").replace("-", "")


def to_srgb(picture: Picture) -> Picture:
    """The picture converted to sRGB if its embedded profile is another RGB space.

    The result carries an sRGB profile (see `srgb_profile_bytes`) in place of the original, so
    outputs say what their numbers mean. 8-bit pixels go through LittleCMS directly. 16-bit pixels
    keep their precision: a matrix/TRC profile (Adobe RGB, Display P3, ProPhoto...) is applied in
    float from its own tags; any other through a 52-point LittleCMS table (via CIELAB, so nothing
    clips before interpolation), within about one 8-bit step. Grey pictures and sRGB or missing
    profiles come back unchanged.
    """
    if picture.channels < 3 or is_srgb_profile(picture.icc_profile):
        return picture
    rgb = picture.pixels[..., :3]
    try:
        profile = ImageCms.ImageCmsProfile(BytesIO(picture.icc_profile))
        if picture.bit_depth <= 8:
            transform = ImageCms.buildTransform(
                profile, ImageCms.createProfile("sRGB"), "RGB", "RGB"
            )
            converted = _transform_8bit(transform, rgb)
        elif (matrix_and_curves := _matrix_and_curves(picture.icc_profile)) is not None:
            converted = _convert_in_float(rgb, *matrix_and_curves)
        else:
            converted = _transform_through_table(profile, rgb)
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        log.warning("ignoring an unusable ICC profile: %s", exc)
        return picture
    pixels = np.concatenate([converted, picture.pixels[..., 3:]], axis=-1).astype(np.float32)
    return replace(picture, pixels=pixels, icc_profile=srgb_profile_bytes())


def _transform_8bit(transform: ImageCms.ImageCmsTransform, rgb: np.ndarray) -> np.ndarray:
    codes = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    image = ImageCms.applyTransform(Image.fromarray(np.ascontiguousarray(codes)), transform)
    return np.asarray(image, dtype=np.float32) / np.float32(255)


_ICC_TABLE_POINTS = 52  # 0, 5, 10, ... 255: every grid point is an exact 8-bit code


def _transform_through_table(profile: ImageCms.ImageCmsProfile, rgb: np.ndarray) -> np.ndarray:
    """16-bit pixels through a LittleCMS table: a grid of the profile's colours converted to CIELAB
    (which never clips, unlike 8-bit sRGB), then to linear sRGB, interpolated, clipped, encoded."""
    transform = ImageCms.buildTransform(profile, ImageCms.createProfile("LAB"), "RGB", "LAB")
    grid = identity_lut(_ICC_TABLE_POINTS)
    codes = np.clip(np.rint(grid.reshape(-1, 1, 3) * 255), 0, 255).astype(np.uint8)
    lab = np.asarray(ImageCms.applyTransform(Image.fromarray(codes), transform))
    lab = lab.reshape(-1, 3).astype(np.float64)
    lab[:, 0] *= 100 / 255
    lab[:, 1:] = lab[:, 1:].astype(np.uint8).view(np.int8)  # a and b are signed bytes
    linear = _lab_d50_to_linear_srgb(lab).reshape(grid.shape).astype(np.float32)
    interpolated = torch.from_numpy(apply_lut(rgb, linear, device=torch.device("cpu")))
    return linear_to_srgb(interpolated.clamp(0.0, 1.0)).numpy()


def _matrix_and_curves(icc: bytes) -> tuple[np.ndarray, list[Callable]] | None:
    """The colorant matrix (linear RGB -> D50 XYZ) and the three tone curves of a matrix/TRC
    profile (Adobe RGB, Display P3, ProPhoto...), read from its tags; None for other profiles."""
    try:
        tags = {
            icc[at : at + 4]: icc[offset : offset + size]
            for at in range(132, 132 + 12 * struct.unpack(">I", icc[128:132])[0], 12)
            for offset, size in [struct.unpack(">II", icc[at + 4 : at + 12])]
        }
        columns = [_xyz(tags[name]) for name in (b"rXYZ", b"gXYZ", b"bXYZ")]
        curves = [_curve(tags[name]) for name in (b"rTRC", b"gTRC", b"bTRC")]
    except (KeyError, struct.error, ValueError):
        return None
    return np.array(columns).T, curves


def _xyz(tag: bytes) -> list[float]:
    if tag[:4] != b"XYZ ":
        raise ValueError("not an XYZ tag")
    return [v / 65536 for v in struct.unpack(">3i", tag[8:20])]


def _curve(tag: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """An ICC tone curve ('curv' gamma or table, 'para' parametric) as a function on [0, 1]."""
    if tag[:4] == b"curv":
        count = struct.unpack(">I", tag[8:12])[0]
        if count == 0:
            return lambda x: x
        if count == 1:
            gamma = struct.unpack(">H", tag[12:14])[0] / 256
            return lambda x: np.power(np.clip(x, 0, 1), gamma)
        table = np.array(struct.unpack(f">{count}H", tag[12 : 12 + 2 * count])) / 65535
        return lambda x: np.interp(x, np.linspace(0, 1, count), table)
    if tag[:4] == b"para":
        kind = struct.unpack(">H", tag[8:10])[0]
        count = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}[kind]
        values = [v / 65536 for v in struct.unpack(f">{count}i", tag[12 : 12 + 4 * count])]
        g, a, b, c, d, e, f = _parametric(kind, values)
        return lambda x: np.where(x >= d, np.power(np.clip(a * x + b, 0, None), g) + e, c * x + f)
    raise ValueError("unknown curve type")


def _parametric(kind: int, p: list[float]) -> tuple[float, ...]:
    """ICC parametric curve parameters as the general form (g, a, b, c, d, e, f):
    y = (a x + b)^g + e for x >= d, else c x + f."""
    if kind == 0:
        return (p[0], 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    if kind == 1:
        return (*p, 0.0, -p[2] / p[1], 0.0, 0.0)
    if kind == 2:
        return (*p[:3], 0.0, -p[2] / p[1], p[3], p[3])
    if kind == 3:
        return (*p, 0.0, 0.0)
    return tuple(p)


def _convert_in_float(
    rgb: np.ndarray, colorants: np.ndarray, curves: list[Callable[[np.ndarray], np.ndarray]]
) -> np.ndarray:
    linear = np.stack([curve(rgb[..., i].astype(np.float64)) for i, curve in enumerate(curves)], -1)
    srgb_linear = linear @ (_XYZ_D50_TO_LINEAR_SRGB @ colorants).T
    encoded = linear_to_srgb(torch.from_numpy(np.clip(srgb_linear, 0.0, 1.0)))
    return encoded.numpy().astype(np.float32)


# ICC's connection space is CIELAB under D50; linear sRGB from D50 XYZ is Bradford-adapted.
_D50 = np.array([0.9642, 1.0, 0.8249])
_XYZ_D50_TO_LINEAR_SRGB = np.array(
    [
        [3.1338561, -1.6168667, -0.4906146],
        [-0.9787684, 1.9161415, 0.0334540],
        [0.0719453, -0.2289914, 1.4052427],
    ]
)


def _lab_d50_to_linear_srgb(lab: np.ndarray) -> np.ndarray:
    fy = (lab[:, 0] + 16) / 116
    f = np.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], axis=-1)
    delta = 6 / 29
    xyz = np.where(f > delta, f**3, 3 * delta**2 * (f - 4 / 29)) * _D50
    return xyz @ _XYZ_D50_TO_LINEAR_SRGB.T
