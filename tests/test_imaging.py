"""Specifications for image I/O: safe decoding, orientation, 16 bits, ICC/EXIF and provenance.

Every test image is built here, small, from numpy arrays; nothing binary is committed.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import struct
import time
import warnings
import zlib
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps, PngImagePlugin

from studio.imaging import (
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    ImageError,
    Picture,
    file_sha256,
    insert_png_chunks,
    load_picture,
    picture_from_array,
    picture_to_pil_8bit,
    png_chunk,
    read_provenance,
    resize_picture,
    save_picture,
    to_uint8,
    to_uint16,
    xmp_packet,
)

RNG = np.random.default_rng(1234)
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
TRICKY_JSON = '{"prompt": "a <cat> & \\"dog\\" in the rain", "note": "猫 — é", "seed": 7}'
PARAMETERS = (
    "a cat in the rain\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, "
    "Seed: 7, Size: 24x16, Model hash: abc123, Model: tiny"
)


# --- builders -----------------------------------------------------------------------------------


def random_u8(height: int, width: int, channels: int) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, channels), dtype=np.uint8)


def random_u16(height: int, width: int, channels: int) -> np.ndarray:
    """Values that are not multiples of 257, so any 8-bit round trip shows."""
    return RNG.integers(0, 65536, (height, width, channels), dtype=np.uint16)


def pil_bytes(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def to_bgr(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's channel order: BGR(A), and plain (H, W) for grey."""
    if rgb.shape[2] == 1:
        return rgb[..., 0]
    order = [2, 1, 0, 3][: rgb.shape[2]]
    return np.ascontiguousarray(rgb[..., order])


def cv2_png(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", to_bgr(rgb))
    assert ok
    return encoded.tobytes()


def exif_bytes(orientation: int = 1, make: str = "TestCam") -> bytes:
    exif = Image.Exif()
    exif[0x010F] = make
    exif[0x0112] = orientation
    return exif.tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose pixel data stops almost at once."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)[:16]
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Walk a PNG independently of the code under test, checking every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, position = [], 8
    while position < len(data):
        (length,) = struct.unpack_from(">I", data, position)
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack_from(">I", data, position + 8 + length)
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        position += 12 + length
    return chunks


def set_tiff_short(data: bytes, tag: int, value: int) -> bytes:
    """Rewrite a one-SHORT entry (e.g. Orientation) in a little-endian TIFF's first directory."""
    out = bytearray(data)
    assert out[:4] == b"II*\x00"
    (ifd,) = struct.unpack_from("<I", out, 4)
    (count,) = struct.unpack_from("<H", out, ifd)
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        if struct.unpack_from("<H", out, entry)[0] == tag:
            struct.pack_into("<H", out, entry + 8, value)
            return bytes(out)
    raise AssertionError(f"no tag {tag} to rewrite")


def expected_upright(array: np.ndarray, orientation: int) -> np.ndarray:
    """Pillow's own transposition of each channel: the reference for EXIF orientation."""
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    if method is None:
        return array
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(array[..., c])).transpose(method))
        for c in range(array.shape[2])
    ]
    return np.stack(planes, axis=-1)


# --- refusing bad files -------------------------------------------------------------------------


def test_missing_file_is_refused_with_clear_message(tmp_path):
    path = tmp_path / "nowhere.png"
    with pytest.raises(ImageError, match="does not exist") as caught:
        load_picture(path)
    assert str(path) in str(caught.value)
    assert caught.value.path == path


def test_directory_is_refused_as_a_folder(tmp_path):
    with pytest.raises(ImageError, match="is a folder") as caught:
        load_picture(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_zero_byte_file_is_refused_as_empty(tmp_path):
    path = write(tmp_path / "empty.png", b"")
    with pytest.raises(ImageError, match=r"empty \(0 bytes\)") as caught:
        load_picture(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "content",
    [b"just some notes, not a picture\n" * 4, bytes(RNG.integers(0, 256, 4096, dtype=np.uint8))],
    ids=["text", "random-bytes"],
)
def test_non_image_is_refused_as_not_an_image(tmp_path, content):
    path = write(tmp_path / "fake.png", content)
    with pytest.raises(ImageError, match="is not an image Studio can read") as caught:
        load_picture(path)
    assert str(path) in str(caught.value)


def test_unsupported_format_is_refused_as_not_an_image(tmp_path):
    path = write(tmp_path / "icon.ico", pil_bytes(Image.new("RGB", (16, 16)), "ICO"))
    with pytest.raises(ImageError, match="is not an image Studio can read"):
        load_picture(path)


def test_truncated_png_is_refused_with_clear_message(tmp_path):
    data = pil_bytes(Image.fromarray(random_u8(64, 64, 3)), "PNG")
    path = write(tmp_path / "cut.png", data[: len(data) * 2 // 3])
    with pytest.raises(ImageError, match="truncated or damaged") as caught:
        load_picture(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "TIFF", "BMP"])
def test_truncated_files_of_every_format_are_refused(tmp_path, fmt):
    data = pil_bytes(Image.fromarray(random_u8(64, 64, 3)), fmt)
    path = write(tmp_path / f"cut.{fmt.lower()}", data[: len(data) * 2 // 3])
    with pytest.raises(ImageError, match="truncated or damaged"):
        load_picture(path)


def test_truncated_16bit_png_is_refused(tmp_path):
    data = cv2_png(random_u16(48, 48, 3))
    path = write(tmp_path / "cut16.png", data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or damaged"):
        load_picture(path)


def test_corrupted_png_data_is_refused(tmp_path):
    data = bytearray(pil_bytes(Image.fromarray(random_u8(32, 32, 3)), "PNG"))
    data[len(data) // 2] ^= 0xFF  # breaks the IDAT CRC / deflate stream
    path = write(tmp_path / "flipped.png", bytes(data))
    with pytest.raises(ImageError, match="truncated or damaged"):
        load_picture(path)


def test_decompression_bomb_refused_without_decoding(tmp_path):
    # The header claims 100x100 but the pixel data is cut short: decoding would report truncation,
    # so a "too large" message proves the size was refused from the header alone.
    path = write(tmp_path / "bomb.png", png_header_only(100, 100))
    with pytest.raises(ImageError, match="too large to open safely") as caught:
        load_picture(path, max_pixels=5_000)
    assert "100x100" in str(caught.value)
    assert str(path) in str(caught.value)
    with pytest.raises(ImageError, match="truncated or damaged"):
        load_picture(path, max_pixels=1_000_000)


def test_header_claiming_ten_gigapixels_is_refused_at_once(tmp_path):
    path = write(tmp_path / "huge.png", png_header_only(100_000, 100_000))
    started = time.perf_counter()
    with pytest.raises(ImageError, match="too large to open safely"):
        load_picture(path)
    assert time.perf_counter() - started < 1.0


def test_pillow_bomb_error_is_reported_as_too_large(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    path = write(tmp_path / "bomb.png", png_header_only(50, 50))  # over twice Pillow's limit
    with pytest.raises(ImageError, match="too large to open safely"):
        load_picture(path)


def test_pillow_bomb_warning_raised_as_error_is_reported_as_too_large(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    path = write(tmp_path / "bomb.png", png_header_only(40, 40))  # over Pillow's warning limit
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match="too large to open safely"):
            load_picture(path)


def test_every_failure_has_its_own_message(tmp_path):
    data = pil_bytes(Image.fromarray(random_u8(32, 32, 3)), "PNG")
    cases = {
        "missing": tmp_path / "missing.png",
        "folder": tmp_path,
        "empty": write(tmp_path / "empty.png", b""),
        "text": write(tmp_path / "notes.png", b"hello\n" * 10),
        "truncated": write(tmp_path / "cut.png", data[: len(data) // 2]),
        "bomb": write(tmp_path / "bomb.png", png_header_only(100, 100)),
    }
    messages = {}
    for name, path in cases.items():
        with pytest.raises(ImageError) as caught:
            load_picture(path, max_pixels=5_000)
        messages[name] = str(caught.value).replace(str(path), "FILE")
    assert len(set(messages.values())) == len(cases)


# --- reading every format -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP", "WEBP"])
def test_lossless_8bit_rgb_loads_exactly(tmp_path, fmt):
    array = random_u8(12, 9, 3)
    options = {"lossless": True} if fmt == "WEBP" else {}
    path = write(tmp_path / f"x.{fmt.lower()}", pil_bytes(Image.fromarray(array), fmt, **options))
    picture = load_picture(path)
    assert picture.pixels.dtype == np.float32
    assert picture.bit_depth == 8
    np.testing.assert_array_equal(to_uint8(picture.pixels), array)


def test_rgba_png_keeps_straight_alpha(tmp_path):
    array = random_u8(8, 10, 4)
    path = write(tmp_path / "a.png", pil_bytes(Image.fromarray(array), "PNG"))
    picture = load_picture(path)
    assert picture.channels == 4
    np.testing.assert_array_equal(to_uint8(picture.pixels), array)


def test_grayscale_jpeg_loads_as_one_channel(tmp_path):
    grey = np.full((16, 16), 200, dtype=np.uint8)
    path = write(tmp_path / "g.jpg", pil_bytes(Image.fromarray(grey), "JPEG", quality=95))
    picture = load_picture(path)
    assert picture.channels == 1
    assert abs(float(picture.pixels.mean()) - 200 / 255) < 2 / 255


def test_cmyk_jpeg_loads_as_rgb(tmp_path):
    cmyk_red = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    path = write(tmp_path / "cmyk.jpg", pil_bytes(cmyk_red, "JPEG", quality=95))
    picture = load_picture(path)
    assert picture.channels == 3
    np.testing.assert_allclose(picture.pixels[8, 8], [1.0, 0.0, 0.0], atol=0.03)


def test_palette_png_loads_as_rgb(tmp_path):
    image = Image.fromarray(random_u8(8, 8, 3)).convert("P", palette=Image.Palette.ADAPTIVE)
    path = write(tmp_path / "p.png", pil_bytes(image, "PNG"))
    picture = load_picture(path)
    assert picture.channels == 3
    np.testing.assert_array_equal(to_uint8(picture.pixels), np.asarray(image.convert("RGB")))


def test_palette_png_with_transparency_loads_as_rgba(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((1, 1), 1)
    path = write(tmp_path / "pt.png", pil_bytes(image, "PNG", transparency=0))
    picture = load_picture(path)
    assert picture.channels == 4
    assert picture.pixels[0, 0, 3] == 0.0
    np.testing.assert_array_equal(picture.pixels[1, 1], [0, 0, 1, 1])


def test_grey_alpha_png_loads_as_rgba(tmp_path):
    grey_alpha = np.stack([np.full((4, 4), 100, np.uint8), np.full((4, 4), 50, np.uint8)], -1)
    path = write(tmp_path / "la.png", pil_bytes(Image.fromarray(grey_alpha, "LA"), "PNG"))
    picture = load_picture(path)
    assert picture.channels == 4
    np.testing.assert_array_equal(to_uint8(picture.pixels[0, 0]), [100, 100, 100, 50])


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_greyscale_loads_with_full_precision(tmp_path, fmt):
    grey = random_u16(10, 7, 1)[..., 0]
    path = write(tmp_path / f"g16.{fmt.lower()}", pil_bytes(Image.fromarray(grey), fmt))
    picture = load_picture(path)
    assert (picture.channels, picture.bit_depth) == (1, 16)
    np.testing.assert_array_equal(to_uint16(picture.pixels)[..., 0], grey)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_16bit_colour_from_other_tools_loads_with_full_precision_in_rgb_order(
    tmp_path, channels, ext
):
    array = random_u16(9, 11, channels)
    ok, encoded = cv2.imencode(ext, to_bgr(array))
    assert ok
    picture = load_picture(write(tmp_path / f"c16{ext}", encoded.tobytes()))
    assert (picture.channels, picture.bit_depth) == (channels, 16)
    np.testing.assert_array_equal(to_uint16(picture.pixels), array)


def test_premultiplied_16bit_tiff_alpha_is_made_straight(tmp_path):
    straight = np.zeros((2, 2, 4), np.float32)
    straight[...] = [0.8, 0.4, 0.2, 0.5]
    straight[1, 1] = [0.3, 0.3, 0.3, 0.0]
    premultiplied = straight.copy()
    premultiplied[..., :3] *= premultiplied[..., 3:]
    written = save_picture(Picture(premultiplied, bit_depth=16), tmp_path / "s.tiff").read_bytes()
    path = write(tmp_path / "p.tiff", set_tiff_short(written, 338, 1))  # ExtraSamples: associated
    pixels = load_picture(path).pixels
    np.testing.assert_allclose(pixels[0, 0], straight[0, 0], atol=1e-4)
    np.testing.assert_array_equal(pixels[1, 1], [0, 0, 0, 0])


def test_icc_profile_is_kept_on_load(tmp_path):
    image = Image.fromarray(random_u8(8, 8, 3))
    path = write(tmp_path / "icc.jpg", pil_bytes(image, "JPEG", icc_profile=SRGB_ICC))
    assert load_picture(path).icc_profile == SRGB_ICC


def test_grey_profile_is_dropped_when_grey_alpha_becomes_rgba(tmp_path):
    grey_icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    grey_icc = grey_icc[:16] + b"GRAY" + grey_icc[20:]  # only the colour-space field matters here
    image = Image.new("LA", (4, 4), (90, 255))
    path = write(tmp_path / "la.png", pil_bytes(image, "PNG", icc_profile=grey_icc))
    assert Image.open(path).info["icc_profile"] == grey_icc
    assert load_picture(path).icc_profile is None


# --- EXIF orientation ---------------------------------------------------------------------------


def test_exif_orientation_6_is_applied_and_reset(tmp_path):
    array = random_u8(4, 6, 3)  # stored 6 wide, 4 high; orientation 6 means "rotate 90° clockwise"
    data = pil_bytes(Image.fromarray(array), "PNG", exif=exif_bytes(orientation=6))
    picture = load_picture(write(tmp_path / "o6.png", data))
    assert (picture.width, picture.height) == (4, 6)
    np.testing.assert_array_equal(to_uint8(picture.pixels), np.rot90(array, -1))
    exif = Image.Exif()
    exif.load(picture.exif)
    assert exif[0x0112] == 1
    assert exif[0x010F] == "TestCam"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_exif_orientations_match_pillow(tmp_path, orientation):
    array = random_u8(3, 5, 3)
    data = pil_bytes(Image.fromarray(array), "JPEG", exif=exif_bytes(orientation), quality=100)
    path = write(tmp_path / "o.jpg", data)
    reference = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    np.testing.assert_array_equal(to_uint8(load_picture(path).pixels), reference)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_to_16bit_png(tmp_path, orientation):
    array = random_u16(3, 5, 3)
    exif_chunk = png_chunk(b"eXIf", exif_bytes(orientation)[6:])
    data = insert_png_chunks(cv2_png(array), [exif_chunk])
    picture = load_picture(write(tmp_path / "o16.png", data))
    assert picture.bit_depth == 16
    np.testing.assert_array_equal(to_uint16(picture.pixels), expected_upright(array, orientation))
    assert struct.unpack_from(">H", picture.exif, picture.exif.index(b"\x01\x12") + 8)[0] == 1


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_to_16bit_tiff(tmp_path, orientation):
    array = random_u16(3, 5, 4)
    written = save_picture(
        picture_from_array(array, exif=exif_bytes()), tmp_path / "plain.tiff"
    ).read_bytes()
    path = write(tmp_path / "o16.tiff", set_tiff_short(written, 0x0112, orientation))
    assert Image.open(path).getexif()[0x0112] == orientation
    picture = load_picture(path)
    np.testing.assert_array_equal(to_uint16(picture.pixels), expected_upright(array, orientation))


def test_save_resets_a_stale_orientation(tmp_path):
    picture = picture_from_array(random_u8(4, 6, 3), exif=exif_bytes(orientation=8))
    path = save_picture(picture, tmp_path / "stale.jpg")
    assert Image.open(path).getexif()[0x0112] == 1


# --- saving -------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16bit_rgb_png_round_trips_losslessly(tmp_path, channels):
    array = random_u16(13, 17, channels)
    path = save_picture(picture_from_array(array), tmp_path / "deep.png")
    picture = load_picture(path)
    assert picture.bit_depth == 16
    np.testing.assert_array_equal(to_uint16(picture.pixels), array)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("bits", [8, 16])
def test_tiff_round_trips_losslessly_and_other_readers_agree(tmp_path, channels, bits):
    array = random_u16(300, 7, channels) if bits == 16 else random_u8(300, 7, channels)
    path = save_picture(picture_from_array(array), tmp_path / "deep.tif")  # several strips
    picture = load_picture(path)
    assert picture.bit_depth == bits
    as_ints = to_uint16(picture.pixels) if bits == 16 else to_uint8(picture.pixels)
    np.testing.assert_array_equal(as_ints, array)
    if bits == 8 and channels == 4:
        return  # OpenCV reads 8-bit TIFF through libtiff's RGBA interface, which premultiplies
    by_opencv = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).reshape(array.shape)
    np.testing.assert_array_equal(by_opencv, to_bgr(array).reshape(array.shape))


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_8bit_png_round_trips_exactly(tmp_path, channels):
    array = random_u8(5, 6, channels)
    picture = load_picture(save_picture(picture_from_array(array), tmp_path / "x.png"))
    assert picture.bit_depth == 8
    np.testing.assert_array_equal(to_uint8(picture.pixels), array)


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_16bit_picture_saves_as_8bit_jpeg_and_webp(tmp_path, suffix):
    flat = np.full((8, 8, 3), 0.5, dtype=np.float32)
    path = save_picture(Picture(flat, bit_depth=16), tmp_path / f"x{suffix}")
    picture = load_picture(path)
    assert picture.bit_depth == 8
    assert np.abs(to_uint8(picture.pixels).astype(int) - 128).max() <= 1  # 127.5 rounds to 128


def test_rgba_to_jpeg_is_composited_on_white(tmp_path):
    pixels = np.zeros((8, 8, 4), dtype=np.float32)
    pixels[..., 0] = 1.0  # red...
    pixels[:, 4:, 3] = 1.0  # ...opaque on the right, fully transparent on the left
    path = save_picture(Picture(pixels), tmp_path / "x.jpg")
    loaded = load_picture(path)
    assert loaded.channels == 3
    np.testing.assert_allclose(loaded.pixels[4, 1], [1, 1, 1], atol=0.03)
    np.testing.assert_allclose(loaded.pixels[4, 6], [1, 0, 0], atol=0.03)


@pytest.mark.parametrize("bits", [8, 16])
def test_png_carries_studio_json_parameters_and_xmp_source_type(tmp_path, bits):
    array = random_u16(6, 5, 3) if bits == 16 else random_u8(6, 5, 3)
    path = save_picture(
        picture_from_array(array),
        tmp_path / "gen.png",
        provenance=TRICKY_JSON,
        parameters=PARAMETERS,
        digital_source_type=TRAINED_ALGORITHMIC_MEDIA,
    )
    info = Image.open(path).info  # as other tools (Automatic1111 readers, exiftool) see it
    assert info["studio"] == TRICKY_JSON
    assert info["parameters"] == PARAMETERS
    assert TRAINED_ALGORITHMIC_MEDIA.encode() in info["xmp"]
    assert b"Iptc4xmpExt:DigitalSourceType" in info["xmp"]
    assert read_provenance(path) == {
        "studio": TRICKY_JSON,
        "parameters": PARAMETERS,
        "digital_source_type": TRAINED_ALGORITHMIC_MEDIA,
    }


def test_16bit_png_metadata_chunks_are_valid_and_before_the_pixels(tmp_path):
    picture = picture_from_array(random_u16(4, 4, 3), icc_profile=SRGB_ICC, exif=exif_bytes())
    path = save_picture(
        picture, tmp_path / "x.png", provenance="{}", digital_source_type=TRAINED_ALGORITHMIC_MEDIA
    )
    kinds = [kind for kind, _ in png_chunks(path.read_bytes())]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    first_idat = kinds.index(b"IDAT")
    for kind in (b"iCCP", b"eXIf", b"tEXt", b"iTXt"):
        assert kind in kinds[:first_idat]
    assert Image.open(path).info["icc_profile"] == SRGB_ICC


@pytest.mark.parametrize("suffix", [".jpg", ".webp", ".tiff"])
@pytest.mark.parametrize("bits", [8, 16])
def test_every_format_carries_provenance_in_xmp(tmp_path, suffix, bits):
    array = random_u16(6, 5, 3) if bits == 16 else random_u8(6, 5, 3)
    path = save_picture(
        picture_from_array(array),
        tmp_path / f"edit{suffix}",
        provenance=TRICKY_JSON,
        parameters=PARAMETERS,
        digital_source_type=COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    )
    assert b"studio:Provenance" in Image.open(path).info["xmp"]
    assert read_provenance(path) == {
        "studio": TRICKY_JSON,
        "parameters": PARAMETERS,
        "digital_source_type": COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    }


def test_read_provenance_of_an_automatic1111_png(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", PARAMETERS)
    image = Image.fromarray(random_u8(4, 4, 3))
    path = write(tmp_path / "a1111.png", pil_bytes(image, "PNG", pnginfo=info))
    assert read_provenance(path) == {
        "studio": None,
        "parameters": PARAMETERS,
        "digital_source_type": None,
    }


def test_read_provenance_of_a_plain_photo_is_empty(tmp_path):
    path = write(tmp_path / "photo.jpg", pil_bytes(Image.fromarray(random_u8(4, 4, 3)), "JPEG"))
    assert read_provenance(path) == {
        "studio": None,
        "parameters": None,
        "digital_source_type": None,
    }


def test_xmp_packet_is_well_formed_and_escapes_markup():
    packet = xmp_packet("trainedAlgorithmicMedia", "<b>&\r\n</b>", parameters="x\x00y")
    root = ElementTree.fromstring(packet)
    texts = {element.tag.split("}")[1]: element.text for element in root.iter()}
    assert texts["DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert texts["Provenance"] == "<b>&\r\n</b>"
    assert texts["Parameters"] == "x\ufffdy"


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tiff"])
@pytest.mark.parametrize("bits", [8, 16])
def test_icc_profile_survives_save(tmp_path, suffix, bits):
    array = random_u16(6, 5, 3) if bits == 16 else random_u8(6, 5, 3)
    picture = picture_from_array(array, icc_profile=SRGB_ICC)
    path = save_picture(picture, tmp_path / f"icc{suffix}")
    assert Image.open(path).info.get("icc_profile") == SRGB_ICC
    assert load_picture(path).icc_profile == SRGB_ICC


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tiff"])
@pytest.mark.parametrize("bits", [8, 16])
def test_exif_survives_save(tmp_path, suffix, bits):
    array = random_u16(6, 5, 3) if bits == 16 else random_u8(6, 5, 3)
    path = save_picture(picture_from_array(array, exif=exif_bytes()), tmp_path / f"e{suffix}")
    exif = Image.open(path).getexif()
    assert exif[0x010F] == "TestCam"
    assert exif[0x0112] == 1


def test_format_argument_overrides_the_suffix(tmp_path):
    path = save_picture(picture_from_array(random_u8(4, 4, 3)), tmp_path / "out.img", fmt="JPG")
    assert Image.open(path).format == "JPEG"


def test_unknown_format_is_refused_before_writing(tmp_path):
    with pytest.raises(ImageError, match="unknown image format"):
        save_picture(picture_from_array(random_u8(4, 4, 3)), tmp_path / "out.gif")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_temp_file_and_keeps_old_output(tmp_path, monkeypatch):
    target = tmp_path / "result.png"
    save_picture(picture_from_array(random_u8(4, 4, 3)), target)
    old_bytes = target.read_bytes()

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(ImageError, match="Disk full while writing") as caught:
        save_picture(picture_from_array(random_u8(8, 8, 3)), target)
    assert str(target) in str(caught.value)
    assert list(tmp_path.iterdir()) == [target]
    assert target.read_bytes() == old_bytes


def test_saving_into_a_missing_folder_names_the_folder(tmp_path):
    target = tmp_path / "not-yet" / "x.png"
    with pytest.raises(ImageError, match="does not exist") as caught:
        save_picture(picture_from_array(random_u8(4, 4, 3)), target)
    assert str(target.parent) in str(caught.value)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_saved_file_gets_ordinary_permissions_not_private_temp_ones(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = save_picture(picture_from_array(random_u8(4, 4, 3)), tmp_path / "x.png")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


# --- conversions --------------------------------------------------------------------------------


def test_to_uint8_rounds_to_nearest_and_clips():
    values = np.array([-0.5, 0.4 / 255, 0.6 / 255, 127.5 / 255, 1.0, 2.0, np.nan], np.float32)
    np.testing.assert_array_equal(to_uint8(values), [0, 0, 1, 128, 255, 255, 0])


def test_to_uint16_rounds_to_nearest_and_is_exact_for_16bit_levels():
    levels = np.arange(65536, dtype=np.uint16)
    np.testing.assert_array_equal(to_uint16(levels.astype(np.float32) / 65535), levels)
    values = np.array([-1.0, 0.4 / 65535, 0.6 / 65535, 3.0], np.float32)
    np.testing.assert_array_equal(to_uint16(values), [0, 0, 1, 65535])


def test_picture_from_array_understands_uint8_uint16_float_and_2d():
    assert picture_from_array(np.full((2, 3), 255, np.uint8)).pixels.shape == (2, 3, 1)
    eight = picture_from_array(np.full((2, 2, 3), 51, np.uint8))
    assert eight.bit_depth == 8 and eight.pixels.dtype == np.float32
    np.testing.assert_allclose(eight.pixels, 0.2)
    sixteen = picture_from_array(np.full((2, 2, 4), 65535, np.uint16))
    assert sixteen.bit_depth == 16
    np.testing.assert_array_equal(sixteen.pixels, 1.0)
    floats = picture_from_array(np.array([[[-1.0, 0.5, 9.0]]]), bit_depth=16)
    assert floats.bit_depth == 16
    np.testing.assert_array_equal(floats.pixels, [[[0.0, 0.5, 1.0]]])


def test_picture_from_array_refuses_unusable_shapes_and_depths():
    with pytest.raises(ValueError, match="shape"):
        picture_from_array(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="bit_depth"):
        picture_from_array(np.zeros((2, 2, 3), np.uint8), bit_depth=12)


@pytest.mark.parametrize(("channels", "mode"), [(1, "L"), (3, "RGB"), (4, "RGBA")])
def test_picture_to_pil_8bit_gives_the_matching_mode(channels, mode):
    array = random_u8(3, 4, channels)
    image = picture_to_pil_8bit(picture_from_array(array))
    assert (image.mode, image.size) == (mode, (4, 3))
    np.testing.assert_array_equal(np.asarray(image).reshape(array.shape), array)


def test_resize_keeps_16bit_precision():
    level = 1000 / 65535  # an 8-bit round trip would turn it into 4/255 = 1028/65535
    picture = Picture(np.full((20, 30, 3), level, np.float32), bit_depth=16, icc_profile=SRGB_ICC)
    resized = resize_picture(picture, 12, 7)
    assert (resized.width, resized.height) == (12, 7)
    assert (resized.bit_depth, resized.icc_profile) == (16, SRGB_ICC)
    np.testing.assert_array_equal(to_uint16(resized.pixels), 1000)


def test_resize_matches_pillow_lanczos():
    array = random_u8(40, 30, 1)[..., 0]
    expected = np.asarray(Image.fromarray(array).resize((13, 17), Image.Resampling.LANCZOS))
    resized = resize_picture(picture_from_array(array), 13, 17)
    difference = np.abs(to_uint8(resized.pixels)[..., 0].astype(int) - expected.astype(int))
    assert difference.max() <= 1


def test_resize_does_not_bleed_colour_out_of_transparent_pixels():
    pixels = np.zeros((16, 16, 4), np.float32)
    pixels[:, :8] = [1.0, 0.0, 0.0, 0.0]  # invisible red
    pixels[:, 8:] = [0.0, 0.0, 1.0, 1.0]  # opaque blue
    resized = resize_picture(Picture(pixels), 5, 5)
    visible = resized.pixels[..., 3] > 0.01
    assert visible.any()
    assert resized.pixels[..., 0][visible].max() < 0.01


def test_file_sha256_matches_hashlib_across_chunks(tmp_path):
    data = bytes(RNG.integers(0, 256, 2_500_000, dtype=np.uint8))
    path = write(tmp_path / "model.bin", data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_parameters_go_to_the_exif_user_comment_where_a1111_puts_them(tmp_path, fmt):
    exif = Image.Exif()
    exif[0x010F] = "Studio Camera"  # Make: the photo's own EXIF stays
    picture = Picture(
        np.full((8, 8, 3), 0.5, np.float32), exif=b"Exif\x00\x00" + exif.tobytes()[6:]
    )
    text = "a cat, ünïcode\nSteps: 2, Sampler: Euler, Seed: 5"
    path = save_picture(picture, tmp_path / f"out.{fmt}", fmt=fmt, parameters=text)
    written = Image.open(path).getexif()
    comment = written.get_ifd(0x8769)[0x9286]
    assert comment[:8] == b"UNICODE\x00"
    assert comment[8:].decode("utf-16-be") == text
    assert written[0x010F] == "Studio Camera"
