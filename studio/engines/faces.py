"""Faces for face-restoration models (GFPGAN, RestoreFormer): found, aligned, restored, put back.

Such a model restores one face at 512x512 px, placed as in FFHQ (the eyes at the template's
points); run over a whole photo tile by tile it would paint a face into every tile. So Studio
finds the faces first with OpenCV's Haar cascades (frontal faces, then the two eyes inside each
box; where the eyes are not found, where they usually sit in such a box), turns and scales each
face with the similarity that puts its eyes on the template's, restores that crop, and pastes it
back through the inverse transform under a feathered mask. Every pixel outside the faces is the
input's. The cascades ship in `studio/assets/faces/` (OpenCV's, under its licence there).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from studio.engines.base import CancelCheck, Cancelled, Progress

FACE_SIZE = 512
# Where FFHQ's alignment puts the eyes in a 512 px face (facexlib's template, used by GFPGAN).
TEMPLATE_EYES = np.array([[192.98, 239.95], [318.90, 240.19]], np.float32)
DETECT_SIDE = 1024  # faces are searched for on the photo shrunk to this long side at most
MIN_FACE = 24  # px on that picture: smaller boxes are texture more often than faces
# The face cascade's confidence (level weight) a box needs: any, where both eyes are found in it;
# EYELESS_CONFIDENCE where not. On 4 sizes of a portrait and 42 landscapes, boxes with no face
# in them scored at most 5.4 (window blinds, a sunlit path) and never had eyes; the portrait's
# face, too small for the eye cascade at 256 px, scored 7.2.
EYELESS_CONFIDENCE = 6.0
# Where a frontal-face box's eyes sit when the eye cascade does not find them (fractions of the
# box; the test portrait's, as the eye cascade found them: 0.26/0.36 and 0.75/0.38).
BOX_EYES = ((0.27, 0.37), (0.73, 0.37))
FEATHER = FACE_SIZE // 16  # px of the crop over which a pasted face fades into the photo
CASCADES = Path(__file__).resolve().parent.parent / "assets" / "faces"


@dataclass(frozen=True)
class Face:
    """A face found in a photo: its box and its eyes (x, y), in the photo's pixels."""

    box: tuple[int, int, int, int]  # x, y, width, height
    eyes: tuple[tuple[float, float], tuple[float, float]]  # the photo's left one first

    def alignment(self) -> np.ndarray:
        """The 2x3 similarity taking the photo onto the 512 px template (eyes on its eyes)."""
        return similarity(np.array(self.eyes, np.float32), TEMPLATE_EYES)


@cache
def _cascade(name: str) -> cv2.CascadeClassifier:
    classifier = cv2.CascadeClassifier(str(CASCADES / name))
    if classifier.empty():
        raise RuntimeError(f"OpenCV could not read the face cascade {CASCADES / name}")
    return classifier


def find_faces(pixels: np.ndarray) -> list[Face]:
    """The frontal faces in an (H, W, C) float picture in [0, 1], largest first."""
    grey = _grey(pixels)
    height, width = grey.shape
    shrink = min(1.0, DETECT_SIDE / max(height, width))
    small = cv2.resize(grey, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    small = cv2.equalizeHist(small)
    boxes, _levels, confidences = _cascade(
        "haarcascade_frontalface_default.xml"
    ).detectMultiScale3(
        small, scaleFactor=1.1, minNeighbors=5, minSize=(MIN_FACE, MIN_FACE),
        outputRejectLevels=True,
    )  # fmt: skip
    faces = []
    for (x, y, w, h), confidence in sorted(
        zip(boxes, confidences, strict=True), key=lambda found: -int(found[0][2])
    ):
        eyes = _eyes(small[y : y + h, x : x + w])
        if (eyes is None and confidence < EYELESS_CONFIDENCE) or confidence <= 0:
            continue
        eyes = eyes or _box_eyes(int(w), int(h))
        box = (round(x / shrink), round(y / shrink), round(w / shrink), round(h / shrink))
        left, right = ((float(x + ex) / shrink, float(y + ey) / shrink) for ex, ey in eyes)
        faces.append(Face(box, (left, right)))
    return faces


def _grey(pixels: np.ndarray) -> np.ndarray:
    colour = pixels[..., :3] if pixels.shape[2] >= 3 else pixels[..., :1]
    grey = colour.mean(axis=2) if colour.shape[2] == 1 else colour @ [0.299, 0.587, 0.114]
    return (np.clip(grey, 0, 1) * 255 + 0.5).astype(np.uint8)


def _eyes(face: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The centres of the two eyes the eye cascade finds in the upper half of a face box, if it
    finds one on each side; None otherwise."""
    h, w = face.shape
    found = _cascade("haarcascade_eye.xml").detectMultiScale(
        face[: h * 6 // 10], scaleFactor=1.1, minNeighbors=4, minSize=(w // 10, w // 10)
    )
    left = [(x + ew / 2, y + eh / 2) for x, y, ew, eh in found if x + ew / 2 < w / 2]
    right = [(x + ew / 2, y + eh / 2) for x, y, ew, eh in found if x + ew / 2 >= w / 2]
    if len(left) != 1 or len(right) != 1:
        return None
    (lx, ly), (rx, ry) = left[0], right[0]
    if not w * 0.2 < rx - lx < w * 0.7 or abs(ry - ly) > 0.2 * (rx - lx):
        return None  # not a pair of eyes: too close, too far apart or too tilted
    return (float(lx), float(ly)), (float(rx), float(ry))


def _box_eyes(w: int, h: int) -> tuple[tuple[float, float], tuple[float, float]]:
    (lx, ly), (rx, ry) = BOX_EYES
    return (lx * w, ly * h), (rx * w, ry * h)


def similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 rotation, uniform scale and shift taking two source points onto two targets."""
    source_step, target_step = source[1] - source[0], target[1] - target[0]
    scale = float(np.hypot(*target_step) / max(np.hypot(*source_step), 1e-6))
    angle = math.atan2(target_step[1], target_step[0]) - math.atan2(source_step[1], source_step[0])
    rotation = scale * np.array(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], np.float32
    )
    shift = target[0] - rotation @ source[0]
    return np.hstack([rotation, shift[:, None]]).astype(np.float32)


def restore_faces(
    pixels: np.ndarray,
    restore_crop: Callable[[np.ndarray], np.ndarray],
    progress: Progress,
    cancelled: CancelCheck,
) -> tuple[np.ndarray, list[Face]]:
    """Every face in an (H, W, 3) float picture restored by `restore_crop` (a 512x512x3 aligned
    face -> the same, restored) and pasted back; the faces, as found."""
    faces = find_faces(pixels)
    result = pixels.astype(np.float32)  # a copy: the input is never written to
    height, width = pixels.shape[:2]
    feather = _feather_mask()
    for k, face in enumerate(faces):
        if cancelled():
            raise Cancelled
        progress(k / len(faces), f"Face {k + 1}/{len(faces)}")
        forward = face.alignment()
        crop = cv2.warpAffine(
            pixels, forward, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_CUBIC,
            borderMode=cv2.BORDER_REFLECT_101,
        )  # fmt: skip
        restored = np.clip(restore_crop(np.clip(crop, 0, 1)), 0, 1)
        back = cv2.invertAffineTransform(forward)
        face_pixels = cv2.warpAffine(
            restored, back, (width, height), flags=cv2.INTER_CUBIC,
            borderMode=cv2.BORDER_REFLECT_101,
        )  # fmt: skip
        weight = cv2.warpAffine(feather, back, (width, height), flags=cv2.INTER_LINEAR)[..., None]
        result = result + weight * (face_pixels - result)
    return np.clip(result, 0, 1, out=result), faces


def _feather_mask() -> np.ndarray:
    """1 over the crop, falling to 0 over FEATHER px at its edges (a raised cosine)."""
    ramp = np.minimum(np.arange(FACE_SIZE), np.arange(FACE_SIZE)[::-1]).astype(np.float32)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.clip(ramp / FEATHER, 0, 1))
    return np.outer(ramp, ramp).astype(np.float32)
