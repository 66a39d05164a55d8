"""The files behind the history: hashing, atomic copies and renames, image facts and thumbnails.

Every file the history points to is written under a temporary name, flushed to disk and renamed,
so a crash leaves either the complete file or a `*.tmp` leftover that recovery removes.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

THUMB_SIZE = 256
TEMP_SUFFIX = ".tmp"
_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def temp_path_for(path: Path) -> Path:
    """A unique hidden sibling ending in `.tmp`: the rename stays on one filesystem and two
    writers never share a temporary file. Pass `format=` when saving with Pillow."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def fsync_path(path: Path) -> None:
    """Flush a file's data before a database row points at it, or a directory after a rename in
    it. POSIX only: Windows cannot fsync read-only or directory handles."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_hashing(source: Path, dest_dir: Path) -> tuple[Path, str]:
    """Copy `source` to a flushed temporary file in `dest_dir`, hashing the bytes actually copied
    (the source may change under us; the blob's name must match its content)."""
    temp = temp_path_for(dest_dir / source.name)
    digest = hashlib.sha256()
    try:
        with source.open("rb") as src, temp.open("wb") as dst:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp, digest.hexdigest()


def copy_verified(source: Path, dest: Path, expected_sha256: str) -> None:
    """Copy atomically and refuse a source whose bytes no longer match what the history recorded:
    an export must never certify a file it did not check."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp, sha = copy_hashing(source, dest.parent)
    if sha != expected_sha256:
        temp.unlink(missing_ok=True)
        raise OSError(
            f"{source} changed since it was recorded (sha256 {sha[:12]}…, expected "
            f"{expected_sha256[:12]}…); the history copy is damaged, so it was not exported"
        )
    os.replace(temp, dest)


def write_atomically(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(dest)
    try:
        with temp.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, dest)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_path(dest.parent)


@dataclass(frozen=True)
class FileFacts:
    sha256: str
    size: int
    width: int | None
    height: int | None


def file_facts(path: Path) -> FileFacts:
    """Hash, size and (for images) pixel dimensions. Not every output is an image: the grade tool
    writes `.cube` LUTs, which get no dimensions and no thumbnail."""
    size = path.stat().st_size
    sha = sha256_of(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except (UnidentifiedImageError, Image.DecompressionBombError):
        width = height = None
    return FileFacts(sha, size, width, height)


def write_thumbnail(source: Path, dest: Path) -> bool:
    """A JPEG no larger than THUMB_SIZE on its longest side, for the history panel. Returns False
    for files Pillow cannot read (LUTs) or images too large to decode safely."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                image.draft("RGB", (THUMB_SIZE * 2, THUMB_SIZE * 2))
                thumb = _thumbnail_rgb(ImageOps.exif_transpose(image))
    except (UnidentifiedImageError, Image.DecompressionBombError):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(dest)
    try:
        thumb.save(temp, format="JPEG", quality=85)
        fsync_path(temp)
        os.replace(temp, dest)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return True


def _thumbnail_rgb(image: Image.Image) -> Image.Image:
    """Reduce to 8-bit RGB (16-bit and float scaled down, transparency shown over a checkerboard)
    and to the thumbnail size."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _to_8bit_gray(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    image = image.convert("RGBA" if has_alpha else "RGB")
    image.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
    if not has_alpha:
        return image
    background = _checkerboard(image.size)
    background.paste(image, mask=image.getchannel("A"))
    return background


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float32)
    if image.mode == "F" and values.size and float(values.max()) <= 1.0:
        values = values * 255.0
    elif image.mode != "F":
        values = values / 257.0  # 16-bit range (also mode "I", which 16-bit files decode to)
    return Image.fromarray(np.clip(values + 0.5, 0, 255).astype(np.uint8))


def _checkerboard(size: tuple[int, int], cell: int = 8) -> Image.Image:
    width, height = size
    ys, xs = np.indices((height, width))
    light = ((ys // cell + xs // cell) % 2).astype(bool)
    pixels = np.where(light[..., None], 204, 153).astype(np.uint8).repeat(3, axis=2)
    return Image.fromarray(pixels)


def remove_quietly(path: Path) -> None:
    """Delete a file the history no longer needs; one already gone (removed by another Studio
    process sharing the store) is fine."""
    path.unlink(missing_ok=True)
