"""Image I/O and conversions: safe decoding of untrusted files, and writing outputs with provenance.

Every tool hands images around as a `Picture`: float32 pixels in [0, 1] plus what must survive an
edit (bit depth, ICC profile, EXIF). Files come from anywhere, so loading refuses empty, damaged,
truncated and oversized files with a message a person can act on, and never lets a decoder guess.
Outputs are written atomically and say where they came from: the run's JSON, the Automatic1111
`parameters` text and an IPTC `DigitalSourceType` in XMP, so the AI disclosure travels with it.

Pillow decodes and encodes 8-bit images; OpenCV handles 16-bit colour PNG and TIFF pixels, which
Pillow would truncate to 8 bits. The metadata of every PNG and TIFF is written by this module (a
small PNG chunk writer and a TIFF directory built with Pillow), so both bit depths carry the same.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path
from typing import BinaryIO
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import cv2
import numpy as np
from PIL import Image, ImageCms, TiffImagePlugin, TiffTags, UnidentifiedImageError

from studio.errors import UserError

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
)
IPTC_DIGITAL_SOURCE_TYPE_BASE = "http://cv.iptc.org/newscodes/digitalsourcetype/"
IPTC_EXT_NAMESPACE = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
STUDIO_XMP_NAMESPACE = "urn:studio:xmp:1.0/"

DEFAULT_MAX_PIXELS = 200_000_000
READABLE_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")  # JPEG covers MPO
WRITABLE_FORMATS = ("png", "jpeg", "webp", "tiff")

_SUPPORTED_TEXT = "PNG, JPEG, WebP, TIFF, BMP or GIF"
_FORMAT_ALIASES = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}
_FORMAT_ALIASES |= {"tif": "tiff", "tiff": "tiff"}
_EXIF_PREFIX = b"Exif\x00\x00"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ORIENTATION_TAG = 0x0112
_CHUNK_BYTES = 1 << 20


class ImageError(UserError):
    """A picture could not be read or written; the message says what, where and what to do.

    It is the one error the UI and CLI show as-is, so messages are whole sentences.
    """

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


@dataclass
class Picture:
    """Pixels plus what an edit must carry through to the output file.

    `pixels` is float32, shape (H, W, C), values in [0, 1]; C is 1 (grey), 3 (RGB) or 4 (RGBA with
    straight alpha). `bit_depth` (8 or 16) is the precision of the source, which outputs keep.
    `exif` has its orientation already applied to the pixels and reset to 1; it is stored the way
    Pillow reports JPEG EXIF, starting with b"Exif\\0\\0".
    """

    pixels: np.ndarray
    bit_depth: int = 8
    icc_profile: bytes | None = None
    exif: bytes | None = None

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[2])

    @property
    def has_alpha(self) -> bool:
        return self.channels == 4


# --- Conversions --------------------------------------------------------------------------------


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Quantise [0, 1] floats to 8 bits, rounding to nearest; NaN becomes 0, out-of-range clips."""
    return _quantise(pixels, 255).astype(np.uint8)


def to_uint16(pixels: np.ndarray) -> np.ndarray:
    """Quantise [0, 1] floats to 16 bits, rounding to nearest; exact for 16-bit sources."""
    return _quantise(pixels, 65535).astype(np.uint16)


def _quantise(pixels: np.ndarray, top: int) -> np.ndarray:
    values = np.nan_to_num(np.asarray(pixels, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.floor(np.clip(values, 0.0, 1.0) * top + 0.5)


def picture_from_array(
    array: np.ndarray,
    *,
    bit_depth: int | None = None,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> Picture:
    """Wrap an (H, W) or (H, W, C) array as a Picture, so engines need not know the pixel contract.

    uint8 and uint16 are scaled to [0, 1] and set the bit depth (8, 16); float arrays are clipped
    and default to 8 bits unless `bit_depth` says otherwise.
    """
    data = np.asarray(array)
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3 or data.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W) or (H, W, 1|3|4) array, got shape {data.shape}")
    pixels, natural_depth = _unit_float(data)
    depth = natural_depth if bit_depth is None else bit_depth
    if depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {depth}")
    return Picture(pixels, bit_depth=depth, icc_profile=icc_profile, exif=exif)


def _unit_float(data: np.ndarray) -> tuple[np.ndarray, int]:
    """Scale integer samples to [0, 1] float32; return them with the bit depth they imply."""
    if data.dtype == np.uint8:
        return data.astype(np.float32) / np.float32(255), 8
    if data.dtype == np.uint16:
        return data.astype(np.float32) / np.float32(65535), 16
    if data.dtype == np.bool_:
        return data.astype(np.float32), 8
    if np.issubdtype(data.dtype, np.integer):
        # Pillow's "I" mode and OpenCV's 32-bit TIFFs: treat as 16-bit samples, like other tools.
        return np.clip(data.astype(np.float32) / np.float32(65535), 0.0, 1.0), 16
    if np.issubdtype(data.dtype, np.floating):
        values = np.nan_to_num(data.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(values, 0.0, 1.0), 8
    raise TypeError(f"cannot make a picture from {data.dtype} samples")


def picture_to_pil_8bit(picture: Picture) -> Image.Image:
    """An 8-bit Pillow image (L, RGB or RGBA) for thumbnails and previews, never for outputs."""
    data = np.ascontiguousarray(to_uint8(picture.pixels))
    if picture.channels == 1:
        return Image.fromarray(data[..., 0])
    return Image.fromarray(data)


def resize_picture(picture: Picture, width: int, height: int) -> Picture:
    """Resample with Lanczos on float data, so 16-bit sources keep their precision.

    Each channel is filtered by Pillow in 32-bit float ("F" mode, which antialiases when
    shrinking). Colour is premultiplied by alpha first, so fully transparent pixels cannot bleed
    their hidden colour into the edges. Lanczos overshoot is clipped to [0, 1].
    """
    if width < 1 or height < 1:
        raise ValueError(f"cannot resize to {width}x{height}")
    pixels = picture.pixels.astype(np.float32, copy=True)
    if picture.has_alpha:
        pixels[..., :3] *= pixels[..., 3:4]
    channels = [_resize_plane(pixels[..., i], width, height) for i in range(picture.channels)]
    resized = np.clip(np.stack(channels, axis=-1), 0.0, 1.0)
    if picture.has_alpha:
        resized = _unpremultiply(resized)
    return replace(picture, pixels=resized.astype(np.float32))


def _unpremultiply(pixels: np.ndarray) -> np.ndarray:
    """Straight alpha from premultiplied RGBA; invisible pixels get black colour."""
    alpha = pixels[..., 3:4]
    visible = alpha > 1e-6
    colour = np.clip(pixels[..., :3] / np.where(visible, alpha, 1.0), 0.0, 1.0)
    return np.concatenate([np.where(visible, colour, 0.0), alpha], axis=-1).astype(np.float32)


def _resize_plane(plane: np.ndarray, width: int, height: int) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
    return np.array(image.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks so model files never sit whole in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# --- Loading ------------------------------------------------------------------------------------


def load_picture(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """Decode an untrusted file completely into a Picture, or raise ImageError saying why not.

    The pixel count is checked from the header before any pixel is decoded, then the whole image is
    decoded so a truncated file is refused rather than padded with grey (this relies on Pillow's
    `ImageFile.LOAD_TRUNCATED_IMAGES` staying False, its default). Pillow's own ceiling
    (`Image.MAX_IMAGE_PIXELS` x 2) also applies. EXIF orientation is applied to the pixels and reset
    to 1; the ICC profile is kept when it describes the colour space of the result.
    """
    path = Path(path)
    with _open_for_reading(path) as fh, _open_image(fh, path, max_pixels) as image:
        _decode_fully(image, path, max_pixels)
        if _needs_16bit_decoder(image, fh):
            pixels, bit_depth = _decode_with_opencv(fh, path, image.size)
            if pixels.shape[2] == 4 and _has_associated_alpha(image):
                pixels = _unpremultiply(pixels)
            icc_profile = image.info.get("icc_profile")
        else:
            pixels, bit_depth, icc_profile = _pixels_from_pillow(image, path)
        orientation = _orientation(image)
        exif = _normalised_exif(image.info.get("exif"))
    pixels = _apply_orientation(pixels, orientation)
    if not _icc_fits(icc_profile, pixels.shape[2]):
        icc_profile = None
    return Picture(np.ascontiguousarray(pixels), bit_depth, icc_profile or None, exif)


def _open_for_reading(path: Path) -> BinaryIO:
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not an image file. Choose an image inside it.", path)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - handed to the caller's `with`
    except FileNotFoundError:
        raise ImageError(
            f"{path} does not exist. Check the name, or whether it was moved or deleted.", path
        ) from None
    except IsADirectoryError:
        raise ImageError(
            f"{path} is a folder, not an image file. Choose an image inside it.", path
        ) from None
    except PermissionError:
        raise ImageError(
            f"{path} cannot be opened: permission denied. Check the file's permissions.", path
        ) from None
    except OSError as exc:
        raise ImageError(f"{path} cannot be opened: {exc.strerror or exc}.", path) from exc
    if os.fstat(fh.fileno()).st_size == 0:
        fh.close()
        raise ImageError(
            f"{path} is empty (0 bytes). It may still be downloading or copying; "
            "try again once it is complete.",
            path,
        )
    return fh


def _open_image(fh: BinaryIO, path: Path, max_pixels: int) -> Image.Image:
    """Read only the header, and refuse an image with more pixels than we are willing to decode."""
    try:
        image = Image.open(fh, formats=READABLE_FORMATS)
    except UnidentifiedImageError:
        raise ImageError(
            f"{path} is not an image Studio can read. Use a {_SUPPORTED_TEXT} file.", path
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(path, None, max_pixels) from exc
    except Exception as exc:  # a decoder failing on hostile input is a damaged file, whatever it is
        raise _damaged(path, exc) from exc
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise _too_large(path, (width, height), max_pixels)
    return image


def _too_large(path: Path, size: tuple[int, int] | None, max_pixels: int) -> ImageError:
    stated = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels" if size else "too many pixels"
    return ImageError(
        f"{path} is too large to open safely ({stated}; the limit is {max_pixels:,} pixels). "
        "It may be a decompression bomb; if you trust it, shrink it in another program first.",
        path,
    )


def _damaged(path: Path, exc: BaseException) -> ImageError:
    return ImageError(
        f"{path} is truncated or damaged and cannot be decoded ({exc}). It may have been cut short "
        "while downloading or copying; get a fresh copy of the file.",
        path,
    )


def _decode_fully(image: Image.Image, path: Path, max_pixels: int) -> None:
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(path, None, max_pixels) from exc
    except MemoryError as exc:
        raise ImageError(
            f"{path} needs more memory to decode than is free. Close other programs and retry.",
            path,
        ) from exc
    except Exception as exc:  # see _open_image: any decoder failure means a damaged file
        raise _damaged(path, exc) from exc


def _needs_16bit_decoder(image: Image.Image, fh: BinaryIO) -> bool:
    """Pillow reduces 16-bit colour PNG and TIFF to 8 bits; those go through OpenCV instead."""
    if image.format == "PNG":
        fh.seek(0)
        header = fh.read(26)
        return header[:8] == _PNG_SIGNATURE and header[12:16] == b"IHDR" and header[24] == 16
    if image.format == "TIFF":
        bits = image.tag_v2.get(TiffImagePlugin.BITSPERSAMPLE, 8)
        return max(bits if isinstance(bits, tuple) else (bits,)) > 8
    return False


def _decode_with_opencv(fh: BinaryIO, path: Path, size: tuple[int, int]) -> tuple[np.ndarray, int]:
    fh.seek(0)
    encoded = np.frombuffer(fh.read(), dtype=np.uint8)
    # IMREAD_UNCHANGED keeps 16 bits and alpha, and ignores EXIF orientation (applied by us).
    array = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    if array is None or array.shape[:2] != (size[1], size[0]):
        raise ImageError(
            f"{path} could not be decoded at full precision; it may be damaged or use an unusual "
            "16-bit layout. Re-export it as a standard 16-bit PNG or TIFF.",
            path,
        )
    if array.ndim == 3 and array.shape[2] > 4:
        raise ImageError(
            f"{path} has {array.shape[2]} channels; Studio reads grey, RGB and RGBA images. "
            "Re-export it without extra channels.",
            path,
        )
    pixels, _ = _unit_float(_rgb_order(array))
    return pixels, 8 if array.dtype == np.uint8 else 16


def _rgb_order(array: np.ndarray) -> np.ndarray:
    """OpenCV returns BGR(A); Picture is RGB(A). Grey+alpha becomes RGBA."""
    if array.ndim == 2:
        return array[..., None]
    channels = array.shape[2]
    if channels == 2:
        return array[..., [0, 0, 0, 1]]
    if channels == 3:
        return array[..., ::-1]
    return array[..., [2, 1, 0, 3]]


def _has_associated_alpha(image: Image.Image) -> bool:
    """TIFF ExtraSamples = 1 means premultiplied alpha, which OpenCV hands over unchanged."""
    if image.format != "TIFF":
        return False
    extra = image.tag_v2.get(TiffImagePlugin.EXTRASAMPLES)
    return (extra[0] if isinstance(extra, tuple) and extra else extra) == 1


_GREY_MODES = ("1", "L")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_SIXTEEN_BIT_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _pixels_from_pillow(image: Image.Image, path: Path) -> tuple[np.ndarray, int, bytes | None]:
    icc_profile = image.info.get("icc_profile")
    if image.mode in _SIXTEEN_BIT_GREY_MODES:
        pixels, _ = _unit_float(np.asarray(image))
        return pixels[..., None], 16, icc_profile
    if image.mode == "CMYK":
        return _unit_float(np.asarray(_cmyk_to_rgb(image, icc_profile)))[0], 8, None
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    target = "RGBA" if has_alpha else "L" if image.mode in _GREY_MODES else "RGB"
    try:
        converted = image if image.mode == target else image.convert(target)
    except ValueError as exc:
        raise ImageError(
            f"{path} uses a colour mode Studio cannot convert ({image.mode}). "
            "Re-export it as RGB or greyscale.",
            path,
        ) from exc
    pixels, _ = _unit_float(np.asarray(converted))
    return pixels.reshape(converted.height, converted.width, -1), 8, icc_profile


def _cmyk_to_rgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """Use the file's CMYK profile when there is one; the result is sRGB either way."""
    if icc_profile:
        with contextlib.suppress(ImageCms.PyCMSError, OSError, ValueError):
            source = ImageCms.ImageCmsProfile(BytesIO(icc_profile))
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(image, source, srgb, outputMode="RGB")
            if converted is not None:
                return converted
    return image.convert("RGB")


def _icc_fits(icc_profile: bytes | None, channels: int) -> bool:
    """A grey profile on RGB pixels (or CMYK on anything we hold) would mislead every reader."""
    if not icc_profile or len(icc_profile) < 20:
        return False
    space = icc_profile[16:20]
    return space == (b"GRAY" if channels == 1 else b"RGB ")


def _orientation(image: Image.Image) -> int:
    try:
        value = int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # unreadable EXIF: show the pixels as stored
        return 1
    return value if 1 <= value <= 8 else 1


def _apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels upright as EXIF orientation 1..8 asks, like ImageOps.exif_transpose."""
    transforms: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }
    return transforms[orientation](pixels)


def _normalised_exif(exif: bytes | None) -> bytes | None:
    if not exif:
        return None
    if not exif.startswith(_EXIF_PREFIX):
        exif = _EXIF_PREFIX + exif
    return _exif_upright(exif)


def _exif_upright(exif: bytes) -> bytes | None:
    """Set the orientation to 1 in place, leaving every other byte (maker notes too) untouched.

    Returns None for EXIF too malformed to parse, rather than carrying it into outputs.
    """
    tiff = bytearray(exif[len(_EXIF_PREFIX) :] if exif.startswith(_EXIF_PREFIX) else exif)
    order = {b"II": "<", b"MM": ">"}.get(bytes(tiff[:2]))
    if order is None or len(tiff) < 8:
        return None
    try:
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
            tag, kind = struct.unpack_from(order + "HH", tiff, entry)
            if tag == _ORIENTATION_TAG and kind == 3:  # SHORT, stored inline
                struct.pack_into(order + "H", tiff, entry + 8, 1)
    except struct.error:
        return None
    return _EXIF_PREFIX + bytes(tiff)


# --- Saving -------------------------------------------------------------------------------------


def save_picture(
    picture: Picture,
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    quality: int = 95,
    provenance: str | None = None,
    parameters: str | None = None,
    digital_source_type: str | None = None,
) -> Path:
    """Write `picture` atomically, with its ICC profile, EXIF and provenance; return the path.

    The format comes from `fmt` or the suffix (png, jpeg/jpg, webp, tiff/tif). PNG and TIFF keep 16
    bits; JPEG and WebP are 8-bit, and JPEG has no alpha, so RGBA is composited on white.
    `provenance` (the run's JSON) goes into a PNG `studio` text chunk and, in every format, into the
    XMP packet with `parameters` and `digital_source_type` (an IPTC URI or its short code). The
    file is written under a temporary name, synced and renamed, so a failure leaves the previous
    file as it was and no partial file behind.
    """
    path = Path(path)
    kind = _format_for(path, fmt)
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1..100, got {quality}")
    metadata = _Metadata(
        icc_profile=picture.icc_profile,
        exif=_exif_upright(picture.exif) if picture.exif else None,
        xmp=_xmp_if_any(digital_source_type, provenance, parameters),
        provenance=provenance,
        parameters=parameters,
    )
    try:
        data = _ENCODERS[kind](picture, metadata, quality)
    except (ValueError, OSError, cv2.error) as exc:
        raise ImageError(
            f"Could not encode {path} as {kind.upper()}: {exc}. Try another format.", path
        ) from exc
    _write_atomically(path, data)
    return path


@dataclass(frozen=True)
class _Metadata:
    icc_profile: bytes | None
    exif: bytes | None
    xmp: bytes | None
    provenance: str | None
    parameters: str | None

    def icc_for(self, channels: int) -> bytes | None:
        return self.icc_profile if _icc_fits(self.icc_profile, channels) else None


def _format_for(path: Path, fmt: str | None) -> str:
    name = (fmt or path.suffix.lstrip(".")).lower()
    if name not in _FORMAT_ALIASES:
        raise ImageError(
            f"Cannot save {path}: unknown image format {name!r}. Use .png, .jpg, .webp or .tiff.",
            path,
        )
    return _FORMAT_ALIASES[name]


def _encode_png(picture: Picture, metadata: _Metadata, quality: int) -> bytes:
    """Encode pixels (OpenCV at 16 bits, Pillow at 8), then add our own metadata chunks."""
    if picture.bit_depth == 16:
        samples = _bgr_order(to_uint16(picture.pixels))
        ok, encoded = cv2.imencode(".png", samples, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        if not ok:
            raise ValueError("OpenCV could not encode the 16-bit PNG")
        png = encoded.tobytes()
    else:
        buffer = BytesIO()
        picture_to_pil_8bit(picture).save(buffer, "PNG", compress_level=6)
        png = buffer.getvalue()
    return insert_png_chunks(png, _png_metadata_chunks(metadata, picture.channels))


def _bgr_order(samples: np.ndarray) -> np.ndarray:
    if samples.shape[2] == 1:
        return samples[..., 0]
    if samples.shape[2] == 3:
        return np.ascontiguousarray(samples[..., ::-1])
    return np.ascontiguousarray(samples[..., [2, 1, 0, 3]])


def _png_metadata_chunks(metadata: _Metadata, channels: int) -> list[bytes]:
    chunks = []
    if icc := metadata.icc_for(channels):
        chunks.append(png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if metadata.exif:
        chunks.append(png_chunk(b"eXIf", metadata.exif[len(_EXIF_PREFIX) :]))
    if metadata.provenance is not None:
        chunks.append(_png_text_chunk("studio", metadata.provenance))
    if metadata.parameters is not None:
        chunks.append(_png_text_chunk("parameters", metadata.parameters))
    if metadata.xmp:
        chunks.append(png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + metadata.xmp))
    return chunks


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC of type + data."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png_text_chunk(keyword: str, text: str) -> bytes:
    """tEXt when the text is Latin-1 (what most readers expect), else UTF-8 iTXt."""
    try:
        return png_chunk(b"tEXt", keyword.encode("latin-1") + b"\x00" + text.encode("latin-1"))
    except UnicodeEncodeError:
        header = keyword.encode("latin-1") + b"\x00\x00\x00\x00\x00"
        return png_chunk(b"iTXt", header + text.encode("utf-8", "surrogatepass"))


def insert_png_chunks(png: bytes, chunks: list[bytes]) -> bytes:
    """Insert ready-made chunks just before the first IDAT, where iCCP and eXIf must be."""
    if not png.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG byte stream")
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(png):
        length, kind = struct.unpack_from(">I4s", png, position)
        if kind == b"IDAT":
            return png[:position] + b"".join(chunks) + png[position:]
        position += 12 + length
    raise ValueError("PNG byte stream has no IDAT chunk")


def _encode_jpeg(picture: Picture, metadata: _Metadata, quality: int) -> bytes:
    image = picture_to_pil_8bit(_on_white(picture) if picture.has_alpha else picture)
    return _pillow_bytes(image, "JPEG", metadata, quality=quality)


def _on_white(picture: Picture) -> Picture:
    """JPEG has no alpha: composite straight-alpha colour over white, as viewers show it."""
    colour, alpha = picture.pixels[..., :3], picture.pixels[..., 3:4]
    return replace(picture, pixels=(colour * alpha + (1.0 - alpha)).astype(np.float32))


def _encode_webp(picture: Picture, metadata: _Metadata, quality: int) -> bytes:
    if picture.channels == 1:  # WebP stores colour only
        picture = replace(picture, pixels=np.repeat(picture.pixels, 3, axis=2))
    return _pillow_bytes(picture_to_pil_8bit(picture), "WEBP", metadata, quality=quality)


def _pillow_bytes(image: Image.Image, fmt: str, metadata: _Metadata, **options: object) -> bytes:
    extra: dict[str, object] = {}
    if icc := metadata.icc_for(len(image.getbands())):
        extra["icc_profile"] = icc
    exif = _with_user_comment(metadata.exif, metadata.parameters)
    if exif:
        extra["exif"] = exif
    if metadata.xmp:
        extra["xmp"] = metadata.xmp
    buffer = BytesIO()
    image.save(buffer, fmt, **options, **extra)
    return buffer.getvalue()


_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286


def _with_user_comment(exif: bytes | None, parameters: str | None) -> bytes | None:
    """EXIF carrying `parameters` as its UserComment, where Automatic1111 puts them in JPEG and
    WebP files (UCS-2 text after the "UNICODE" code, as piexif writes it), so its readers and
    Civitai's find the prompt and seed there too."""
    if parameters is None:
        return exif
    container = Image.Exif()
    if exif:
        container.load(exif.removeprefix(_EXIF_PREFIX))
    ifd = container.get_ifd(_EXIF_IFD)
    ifd[_USER_COMMENT] = b"UNICODE\x00" + parameters.encode("utf-16-be")
    return container.tobytes()


_TIFF_STRUCTURE_TAGS = frozenset(
    {256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 338, 339, 513, 514, 700, 34675}
)
_TIFF_TYPES = {
    256: TiffTags.LONG,  # ImageWidth
    257: TiffTags.LONG,  # ImageLength
    258: TiffTags.SHORT,  # BitsPerSample
    259: TiffTags.SHORT,  # Compression
    262: TiffTags.SHORT,  # PhotometricInterpretation
    273: TiffTags.LONG,  # StripOffsets
    277: TiffTags.SHORT,  # SamplesPerPixel
    278: TiffTags.LONG,  # RowsPerStrip
    279: TiffTags.LONG,  # StripByteCounts
    284: TiffTags.SHORT,  # PlanarConfiguration
    317: TiffTags.SHORT,  # Predictor
    338: TiffTags.SHORT,  # ExtraSamples
    339: TiffTags.SHORT,  # SampleFormat
    700: TiffTags.BYTE,  # XMP
    34675: TiffTags.UNDEFINED,  # ICC profile
}


def _encode_tiff(picture: Picture, metadata: _Metadata, quality: int) -> bytes:
    """A deflate-compressed TIFF (horizontal predictor, one strip per ~256 KiB) at 8 or 16 bits.

    Written here rather than by Pillow or OpenCV because neither writes 16-bit colour TIFF with its
    ICC profile, EXIF and XMP. EXIF tags join the main directory (sub-directories as such), the
    way Pillow stores EXIF in a TIFF.
    """
    samples = to_uint16(picture.pixels) if picture.bit_depth == 16 else to_uint8(picture.pixels)
    height, width, channels = samples.shape
    row_bytes = width * channels * samples.itemsize
    rows_per_strip = max(1, (256 * 1024) // row_bytes)
    strips = [
        _deflate_strip(samples[top : top + rows_per_strip])
        for top in range(0, height, rows_per_strip)
    ]
    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    _add_exif_tags(ifd, metadata.exif)
    tags: dict[int, object] = {
        256: width,
        257: height,
        258: (samples.itemsize * 8,) * channels,
        259: 8,  # Adobe deflate
        262: 1 if channels == 1 else 2,  # BlackIsZero or RGB
        # Relative to the end of the directory: Pillow's writer adds that offset on output.
        273: tuple(int(sum(len(s) for s in strips[:i])) for i in range(len(strips))),
        277: channels,
        278: rows_per_strip,
        279: tuple(len(s) for s in strips),
        284: 1,  # contiguous samples
        317: 2,  # horizontal differencing
        339: (1,) * channels,  # unsigned integers
    }
    if channels == 4:
        tags[338] = 2  # unassociated (straight) alpha
    if metadata.xmp:
        tags[700] = metadata.xmp
    if icc := metadata.icc_for(channels):
        tags[34675] = icc
    for tag, value in tags.items():
        ifd.tagtype[tag] = _TIFF_TYPES[tag]
        ifd[tag] = value
    header = b"II*\x00" + struct.pack("<I", 8)
    return header + ifd.tobytes(8) + b"".join(strips)


def _deflate_strip(rows: np.ndarray) -> bytes:
    differences = rows.copy()
    differences[:, 1:] -= rows[:, :-1]  # unsigned wrap-around is what the TIFF predictor expects
    little_endian = differences.astype(differences.dtype.newbyteorder("<"), copy=False)
    return zlib.compress(little_endian.tobytes(), 6)


def _add_exif_tags(ifd: TiffImagePlugin.ImageFileDirectory_v2, exif: bytes | None) -> None:
    if not exif:
        return
    parsed = Image.Exif()
    try:
        parsed.load(exif)
    except Exception:  # unreadable EXIF is left out rather than failing the save
        return
    for tag in parsed:
        if tag in _TIFF_STRUCTURE_TAGS:
            continue
        if tag in TiffTags.TAGS_V2_GROUPS:
            ifd.tagtype[tag] = TiffTags.LONG
            ifd[tag] = parsed.get_ifd(tag)
        else:
            ifd[tag] = parsed[tag]


_ENCODERS: dict[str, Callable[[Picture, _Metadata, int], bytes]] = {
    "png": _encode_png,
    "jpeg": _encode_jpeg,
    "webp": _encode_webp,
    "tiff": _encode_tiff,
}


def _write_atomically(path: Path, data: bytes) -> None:
    """Temp file in the same folder, flush + fsync, then os.replace: readers see old or new only."""
    temp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(temp, flags, 0o666)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        with os.fdopen(descriptor, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)
    except BaseException as exc:  # also on KeyboardInterrupt: never leave the temp file behind
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from exc
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable where the platform allows it (POSIX)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _write_error(path: Path, exc: OSError) -> ImageError:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        advice = f"Disk full while writing {path}. Free some space or choose another folder."
    elif exc.errno in (errno.EACCES, errno.EPERM):
        advice = f"Permission denied writing {path}. Choose a folder you can write to."
    elif exc.errno == errno.ENOENT:
        advice = f"Cannot write {path}: the folder {path.parent} does not exist. Create it first."
    elif exc.errno == errno.EROFS:
        advice = f"Cannot write {path}: the disk is read-only. Choose another folder."
    elif exc.errno == errno.EISDIR or path.is_dir():
        advice = f"Cannot write {path}: a folder has that name. Choose another file name."
    else:
        advice = f"Could not write {path}: {exc.strerror or exc}."
    return ImageError(advice, path)


# --- Provenance ---------------------------------------------------------------------------------

_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xmp_packet(
    digital_source_type: str | None,
    provenance: str | None,
    *,
    parameters: str | None = None,
) -> bytes:
    """An XMP packet with the IPTC DigitalSourceType and Studio's own provenance properties.

    `digital_source_type` is an IPTC URI (see TRAINED_ALGORITHMIC_MEDIA) or its short code. The run
    JSON and parameters text go into `studio:Provenance` / `studio:Parameters`, XML-escaped, so
    JPEG, WebP and TIFF outputs carry them too. Characters XML cannot hold become U+FFFD.
    """
    properties = []
    if digital_source_type:
        uri = _xml_text(_iptc_uri(digital_source_type))
        properties.append(f"<Iptc4xmpExt:DigitalSourceType>{uri}</Iptc4xmpExt:DigitalSourceType>")
    if provenance is not None:
        properties.append(f"<studio:Provenance>{_xml_text(provenance)}</studio:Provenance>")
    if parameters is not None:
        properties.append(f"<studio:Parameters>{_xml_text(parameters)}</studio:Parameters>")
    body = "\n    ".join(properties)
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        f'    xmlns:Iptc4xmpExt="{IPTC_EXT_NAMESPACE}"\n'
        f'    xmlns:studio="{STUDIO_XMP_NAMESPACE}">\n'
        f"    {body}\n"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )
    return packet.encode("utf-8")


def _xmp_if_any(
    digital_source_type: str | None, provenance: str | None, parameters: str | None
) -> bytes | None:
    if digital_source_type is None and provenance is None and parameters is None:
        return None
    return xmp_packet(digital_source_type, provenance, parameters=parameters)


def _iptc_uri(value: str) -> str:
    return value if "://" in value else IPTC_DIGITAL_SOURCE_TYPE_BASE + value


def _xml_text(text: str) -> str:
    # &#13; keeps carriage returns, which XML parsers would otherwise turn into newlines.
    return escape(_XML_ILLEGAL.sub("\ufffd", text), {"\r": "&#13;"})


_XMP_FIELDS = {
    f"{{{IPTC_EXT_NAMESPACE}}}DigitalSourceType": "digital_source_type",
    f"{{{STUDIO_XMP_NAMESPACE}}}Provenance": "studio",
    f"{{{STUDIO_XMP_NAMESPACE}}}Parameters": "parameters",
}


def read_provenance(path: str | os.PathLike[str]) -> dict[str, str | None]:
    """What a file says about its origin: {"studio", "parameters", "digital_source_type"}.

    Reads PNG text chunks (ours, and Automatic1111's `parameters`) and the XMP packet of any
    format; missing entries are None. Pixels are not decoded, and only metadata placed before the
    image data of a PNG is seen (where Studio and Automatic1111 put it).
    """
    path = Path(path)
    with _open_for_reading(path) as fh, _open_image(fh, path, max_pixels=2**62) as image:
        info = dict(image.info)
    xmp = _parse_xmp(info.get("xmp"))
    return {
        "studio": _text_or_none(info.get("studio")) or xmp.get("studio"),
        "parameters": _text_or_none(info.get("parameters")) or xmp.get("parameters"),
        "digital_source_type": xmp.get("digital_source_type"),
    }


def _text_or_none(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _parse_xmp(packet: bytes | str | None) -> dict[str, str]:
    """Our three properties, written as elements or as attributes; {} for unreadable XMP."""
    if not packet:
        return {}
    data = packet.encode("utf-8") if isinstance(packet, str) else packet
    try:
        root = ElementTree.fromstring(data.strip(b"\x00 \t\r\n"))
    except ElementTree.ParseError:
        return {}
    found: dict[str, str] = {}
    for element in root.iter():
        key = _XMP_FIELDS.get(element.tag)
        if key and element.text is not None:
            found.setdefault(key, element.text)
        for name, value in element.attrib.items():
            if name in _XMP_FIELDS:
                found.setdefault(_XMP_FIELDS[name], value)
    return found
