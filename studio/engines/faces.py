"""Faces for face-restoration models (GFPGAN, RestoreFormer): found, aligned, restored, put back.

Such a model restores one face at 512x512 px, placed as in FFHQ (the eyes at the template's
points); run over a whole photo tile by tile it would paint a face into every tile. So Studio
finds the faces first with OpenCV's Haar cascades (frontal faces, then the two eyes inside each
box; where the eyes are not found, where they usually sit in such a box), turns and scales each
face with the similarity that puts its eyes on the template's, restores that crop, and adds the
model's change back through the inverse transform under a feathered oval around the face. Every
pixel outside the ovals is the input's. The cascades ship in `studio/assets/faces/` (OpenCV's,
under its licence there).
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
# The face cascade's confidence (level weight) a box needs: any positive one where both eyes are
# found in it, EYELESS_CONFIDENCE where not. `bench/faces.py`: the test portrait resized to
# 160-768 px is kept from 256 px up (a 54 px face box) and missed below (31-46 px boxes, no eyes
# found, confidence 3.2-5.7); on the wallpapers of Debian's mate-backgrounds and lomiri-wallpapers
# packages (no faces) the cascade's 22 boxes reach 5.54, none with eyes, none kept. The threshold
# was chosen on these same pictures.
EYELESS_CONFIDENCE = 6.0
# Where a frontal-face box's eyes sit when the eye cascade does not find them (fractions of the
# box; the test portrait's, as the eye cascade found them: 0.26/0.36 and 0.75/0.38).
BOX_EYES = ((0.27, 0.37), (0.73, 0.37))
FEATHER = FACE_SIZE // 16  # px of the crop over which a pasted face fades into the photo
# The oval that goes back, in the crop: the template's eyes are at y 240, its mouth at 371.
FACE_OVAL_CENTRE = (256, 280)
FACE_OVAL_AXES = (200, 235)
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
    """One of the shipped cascades, read once."""
    classifier = cv2.CascadeClassifier(str(CASCADES / name))
    if classifier.empty():
        raise RuntimeError(f"OpenCV could not read the face cascade {CASCADES / name}")
    return classifier


@dataclass(frozen=True)
class Candidate:
    """A box the face cascade reports, before it is judged a face; in the photo's pixels."""

    box: tuple[int, int, int, int]  # x, y, width, height
    confidence: float  # the cascade's level weight
    eyes: tuple[tuple[float, float], tuple[float, float]]  # found, or guessed from the box
    eyes_found: bool

    @property
    def kept(self) -> bool:
        return self.confidence > 0 and (self.eyes_found or self.confidence >= EYELESS_CONFIDENCE)


def candidates(pixels: np.ndarray) -> list[Candidate]:
    """Every box the face cascade reports in an (H, W, C) float picture in [0, 1], largest
    first (`find_faces` keeps the faces among them; `bench/faces.py` shows them all)."""
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
    found = []
    for (x, y, w, h), confidence in sorted(
        zip(boxes, confidences, strict=True), key=lambda box: -int(box[0][2])
    ):
        eyes = _eyes(small[y : y + h, x : x + w])
        box = (round(x / shrink), round(y / shrink), round(w / shrink), round(h / shrink))
        guess = eyes or _box_eyes(int(w), int(h))
        left, right = ((float(x + ex) / shrink, float(y + ey) / shrink) for ex, ey in guess)
        found.append(Candidate(box, float(confidence), (left, right), eyes is not None))
    return found


def find_faces(pixels: np.ndarray) -> list[Face]:
    """The frontal faces in an (H, W, C) float picture in [0, 1], largest first."""
    return [Face(c.box, c.eyes) for c in candidates(pixels) if c.kept]


def _grey(pixels: np.ndarray) -> np.ndarray:
    """8-bit luma, what the cascades were trained on."""
    colour = pixels[..., :3] if pixels.shape[2] >= 3 else pixels[..., :1]
    grey = colour.mean(axis=2) if colour.shape[2] == 1 else colour @ [0.299, 0.587, 0.114]
    return (np.clip(grey, 0, 1) * 255 + 0.5).astype(np.uint8)


def _eyes(face: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The centres of the two eyes the eye cascade finds in the upper 60 % of a face box, if it
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
    """Where a level face's eyes usually sit in its box: the guess when the eyes are not found."""
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
    face -> the same, restored); the faces, as found.

    Only the model's change goes back, warped onto the photo: where the model changes nothing,
    a face larger than the crop keeps all its own detail. It goes back under a feathered oval
    around the face (not the crop's square), so the next face pasted does not overwrite this
    one with its view of it as background."""
    result = pixels.astype(np.float32)  # a copy: the input is never written to
    faces = find_faces(result)
    oval = _face_oval()
    for k, face in enumerate(faces):
        if cancelled():
            raise Cancelled
        progress(k / len(faces), f"Face {k + 1}/{len(faces)}")
        forward = face.alignment()
        crop = _aligned_crop(result, forward)
        change = np.clip(restore_crop(crop), 0, 1).astype(np.float32) - crop
        shrink = _scale(forward)  # crop pixels per photo pixel
        if shrink > 1:  # detail finer than the photo's pixels would come back as moiré
            change = cv2.GaussianBlur(change, (0, 0), _antialias_sigma(shrink))
        x0, y0, x1, y1 = _footprint(forward, result.shape[:2])
        back = cv2.invertAffineTransform(forward)
        back[:, 2] -= (x0, y0)  # onto the footprint's own pixels
        size = (x1 - x0, y1 - y0)
        delta = cv2.warpAffine(change, back, size, flags=cv2.INTER_CUBIC)
        weight = cv2.warpAffine(oval, back, size, flags=cv2.INTER_LINEAR)[..., None]
        result[y0:y1, x0:x1] += weight * delta
    return np.clip(result, 0, 1, out=result), faces


def _aligned_crop(pixels: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """The 512 px crop `forward` maps the photo onto, from the photo smoothed first where the
    crop shrinks it (a face larger than the crop would alias otherwise)."""
    scale = _scale(forward)
    sigma = _antialias_sigma(1 / scale) if scale < 1 else 0.0
    x0, y0, x1, y1 = _footprint(forward, pixels.shape[:2], margin=4 + math.ceil(3 * sigma))
    region = pixels[y0:y1, x0:x1]
    if sigma > 0:
        region = cv2.GaussianBlur(region, (0, 0), sigma)
    shifted = forward.copy()
    shifted[:, 2] += forward[:, :2] @ np.array([x0, y0], np.float32)
    crop = cv2.warpAffine(
        region, shifted, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REFLECT_101,
    )  # fmt: skip
    return np.clip(crop, 0, 1)


def _scale(forward: np.ndarray) -> float:
    """How many crop pixels one photo pixel becomes."""
    return math.sqrt(abs(float(np.linalg.det(forward[:, :2]))))


def _antialias_sigma(shrink: float) -> float:
    """The Gaussian blur (in the larger picture's pixels) that leaves about half a pixel of
    blur after shrinking `shrink` times: what keeps finer detail from aliasing."""
    return 0.5 * math.sqrt(shrink**2 - 1)


def _footprint(
    forward: np.ndarray, shape: tuple[int, int], margin: int = 4
) -> tuple[int, int, int, int]:
    """The photo's pixels the crop covers (x0, y0, x1, y1), with a `margin` for interpolation
    (and smoothing) and cut to the photo: only these are warped, however large the photo."""
    back = cv2.invertAffineTransform(forward)
    corners = np.array([[0, 0], [FACE_SIZE, 0], [0, FACE_SIZE], [FACE_SIZE, FACE_SIZE]], np.float32)
    points = corners @ back[:, :2].T + back[:, 2]
    (left, top), (right, bottom) = points.min(axis=0), points.max(axis=0)
    height, width = shape
    x0, y0 = max(0, math.floor(left) - margin), max(0, math.floor(top) - margin)
    return x0, y0, min(width, math.ceil(right) + margin), min(height, math.ceil(bottom) + margin)


def _face_oval() -> np.ndarray:
    """Where a restored face goes back, in the crop: an oval over the template's face and hair,
    its edge feathered over about FEATHER px, zero along the crop's border."""
    oval = np.zeros((FACE_SIZE, FACE_SIZE), np.float32)
    cv2.ellipse(oval, FACE_OVAL_CENTRE, FACE_OVAL_AXES, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    oval = cv2.GaussianBlur(oval, (0, 0), FEATHER / 3)
    ramp = np.minimum(np.arange(FACE_SIZE), np.arange(FACE_SIZE)[::-1]).astype(np.float32)
    ramp = np.clip(ramp / FEATHER, 0, 1)
    return (oval * np.outer(ramp, ramp)).astype(np.float32)
