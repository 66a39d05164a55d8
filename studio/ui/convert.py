"""Pixels between numpy and Qt, and image files into QImages through Studio's safe decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtGui import QImage

from studio.imaging import load_picture, to_uint8


def qimage_from_array(array: np.ndarray) -> QImage:
    """A QImage that owns a copy of `array` (uint8 HxW, HxWx1, HxWx3 or HxWx4)."""
    if array.dtype != np.uint8:
        array = to_uint8(array)
    if array.ndim == 2:
        array = array[:, :, None]
    height, width, channels = array.shape
    formats = {1: QImage.Format.Format_Grayscale8, 3: QImage.Format.Format_RGB888}
    fmt = formats.get(channels, QImage.Format.Format_RGBA8888)
    data = np.ascontiguousarray(array)
    image = QImage(data.data, width, height, data.strides[0], fmt)
    return image.copy()


def load_qimage(path: str | Path) -> QImage:
    """Decode with the engines' checks: a hostile file fails here with a clear error."""
    return qimage_from_array(to_uint8(load_picture(path).pixels))
