"""Face models in Restore: faces found, aligned on the template, restored and pasted back; the
rest of the photo untouched."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import make_restoreformer

from studio.engines.base import Cancelled, EngineError
from studio.engines.faces import FACE_SIZE, TEMPLATE_EYES, find_faces, restore_faces
from studio.engines.restore import RestoreRequest, run
from studio.models.upscalers import inspect_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PORTRAIT = Path(__file__).parent / "data" / "portrait.jpg"
# The portrait's eyes, marked by hand on the 384 px photo (the photo's left one first).
EYES = ((151.0, 75.5), (185.5, 76.5))


def portrait() -> np.ndarray:
    return np.asarray(Image.open(PORTRAIT).convert("RGB"), np.float32) / 255


@pytest.fixture(scope="module")
def face_model(tmp_path_factory):
    return make_restoreformer(tmp_path_factory.mktemp("models") / "restoreformer-tiny.pth")


def test_the_portraits_face_is_found_with_its_eyes_and_nothing_else():
    faces = find_faces(portrait())
    assert len(faces) == 1
    for found, marked in zip(faces[0].eyes, EYES, strict=True):
        assert np.hypot(found[0] - marked[0], found[1] - marked[1]) < 4


def test_alignment_puts_the_eyes_on_the_templates():
    face = find_faces(portrait())[0]
    forward = face.alignment()
    for eye, target in zip(face.eyes, TEMPLATE_EYES, strict=True):
        np.testing.assert_allclose(
            forward[:, :2] @ np.array(eye) + forward[:, 2], target, atol=1e-3
        )


def test_a_landscape_has_no_faces_and_comes_back_unchanged():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:200, 0:300] / 300
    landscape = np.stack([x, 0.5 + 0.3 * np.sin(9 * y), 1 - x * y], axis=2).astype(np.float32)
    landscape = np.clip(landscape + rng.normal(0, 0.03, landscape.shape), 0, 1)
    landscape = landscape.astype(np.float32)
    restored, faces = restore_faces(
        landscape, lambda crop: 1 - crop, lambda *a: None, lambda: False
    )
    assert faces == []
    np.testing.assert_array_equal(restored, landscape)


def test_only_the_face_is_replaced_and_the_crop_goes_back_where_it_came_from():
    pixels = portrait()
    crops = []

    def negative(crop: np.ndarray) -> np.ndarray:  # a "restoration" anyone can see
        crops.append(crop)
        return 1 - crop

    restored, faces = restore_faces(pixels, negative, lambda *a: None, lambda: False)
    assert len(crops) == 1 and crops[0].shape == (FACE_SIZE, FACE_SIZE, 3)
    x, y, w, h = faces[0].box
    changed = np.abs(restored - pixels).max(axis=2) > 1 / 255
    assert changed[y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4].all()  # the face
    np.testing.assert_allclose(  # the negative, pasted back in place
        restored[y + h // 2, x + w // 2], 1 - pixels[y + h // 2, x + w // 2], atol=0.08
    )
    assert not changed[:, : max(0, x - w)].any()  # far from the face, nothing moves
    assert not changed[min(384, y + 3 * h) :].any()


def test_a_face_model_restores_the_face_through_the_engine(tmp_path, face_model):
    info = inspect_model(face_model)
    assert info.faces and info.purpose == "restore" and info.architecture == "RestoreFormer"
    result = run(RestoreRequest(str(PORTRAIT), str(face_model), device="cpu"))
    assert result.notes == ("1 face restored",)
    after = result.pictures[0].pixels
    before = portrait()
    x, y, w, h = find_faces(before)[0].box
    changed = np.abs(after - before).max(axis=2) > 2 / 255
    assert changed[y : y + h, x : x + w].mean() > 0.9
    assert not changed[:, : max(0, x - w)].any()

    mirrored = run(RestoreRequest(str(PORTRAIT), str(face_model), device="cpu", ensemble=2))
    assert np.abs(mirrored.pictures[0].pixels - after)[y : y + h, x : x + w].max() > 1 / 255
    with pytest.raises(EngineError, match="upright faces"):
        run(RestoreRequest(str(PORTRAIT), str(face_model), device="cpu", ensemble=4))


def test_a_face_model_on_a_photo_without_faces_says_so(tmp_path, face_model):
    path = tmp_path / "field.png"
    Image.fromarray(np.full((64, 96, 3), 120, np.uint8)).save(path)
    result = run(RestoreRequest(str(path), str(face_model), device="cpu"))
    assert result.notes == ("no faces found; photo unchanged",)
    np.testing.assert_array_equal(result.pictures[0].pixels, np.float32(120 / 255))


def test_cancelling_stops_before_the_next_face():
    calls = []
    with pytest.raises(Cancelled):
        restore_faces(
            portrait(), lambda crop: calls.append(1) or crop, lambda *a: None, lambda: True
        )
    assert calls == []
