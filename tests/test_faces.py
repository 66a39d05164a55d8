"""Face models in Restore: faces found, aligned on the template, restored and pasted back; the
rest of the photo untouched."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import make_restoreformer

from studio.engines.base import Cancelled, EngineError
from studio.engines.faces import FACE_SIZE, TEMPLATE_EYES, find_faces, restore_faces
from studio.engines.restore import RestoreRequest, face_network, run
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

    def recorded(crop: np.ndarray) -> np.ndarray:
        crops.append(crop)
        return negative(crop)

    restored, faces = restore_faces(pixels, recorded, lambda *a: None, lambda: False)
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
    assert result.facts.extra["tile"] == 0  # faces are restored whole, never tiled
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
    assert result.notes == ("no faces found",)
    np.testing.assert_array_equal(result.pictures[0].pixels, np.float32(120 / 255))


def two_faces() -> np.ndarray:
    """The portrait's face cut out and set twice side by side, 120 px apart: the two crops
    overlap, the two faces do not."""
    face = portrait()[:, 120:240]
    return np.ascontiguousarray(np.concatenate([face, face], axis=1))


def negative(crop: np.ndarray) -> np.ndarray:  # a "restoration" anyone can see
    return 1 - crop


def test_a_neighbouring_face_does_not_overwrite_one_restored_before_it():
    pixels = two_faces()
    restored, faces = restore_faces(pixels, negative, lambda *a: None, lambda: False)
    assert len(faces) == 2
    for face in faces:
        x, y, w, h = face.box
        centre = (slice(y + h // 3, y + 2 * h // 3), slice(x + w // 3, x + 2 * w // 3))
        # the negative (blurred a little on the way back to a face this small), not overwritten
        assert np.abs(restored[centre] - (1 - pixels[centre])).mean() < 0.05


def test_a_face_larger_than_the_crop_keeps_its_own_detail_where_the_model_changes_nothing():
    large = Image.open(PORTRAIT).resize((1536, 1536), Image.Resampling.LANCZOS)
    pixels = np.asarray(large, np.float32) / 255
    pixels = np.clip(pixels + np.random.default_rng(0).normal(0, 0.03, pixels.shape), 0, 1)
    restored, faces = restore_faces(pixels, lambda crop: crop, lambda *a: None, lambda: False)
    assert len(faces) == 1 and faces[0].box[2] > FACE_SIZE / 2
    np.testing.assert_array_equal(restored, pixels.astype(np.float32))


def test_detail_too_fine_for_a_small_face_does_not_come_back_as_moire():
    pixels = portrait()  # eyes 35 px apart: the crop is 3.7 times larger than the face
    _y, x = np.mgrid[0:FACE_SIZE, 0:FACE_SIZE]
    fine = 0.07 * np.cos(2 * np.pi * x / 3)[..., None].astype(np.float32)  # a 3 px period

    def texture(crop: np.ndarray) -> np.ndarray:
        return crop + fine

    restored, faces = restore_faces(pixels, texture, lambda *a: None, lambda: False)
    fx, fy, w, h = faces[0].box
    inner = (slice(fy + h // 4, fy + 3 * h // 4), slice(fx + w // 4, fx + 3 * w // 4))
    change = (restored - pixels)[inner]
    assert np.abs(change).std() < 0.1 * 0.07  # mostly gone, as it should be at this size
    coarse = 0.07 * np.cos(2 * np.pi * x / 64)[..., None].astype(np.float32)
    restored, _ = restore_faces(pixels, lambda crop: crop + coarse, lambda *a: None, lambda: False)
    assert np.abs(restored - pixels)[inner].std() > 0.3 * 0.07  # while coarse detail survives


def test_a_face_larger_than_the_crop_is_smoothed_before_the_model_sees_it():
    large = Image.open(PORTRAIT).resize((2560, 2560), Image.Resampling.LANCZOS)  # eyes 230 px
    pixels = np.asarray(large, np.float32) / 255
    checks = 0.1 * ((np.indices(pixels.shape[:2]).sum(axis=0) % 2) * 2 - 1)[..., None]
    crops = []

    def seen(crop):
        crops.append(crop)
        return crop

    restore_faces(np.clip(pixels + checks, 0, 1), seen, lambda *a: None, lambda: False)
    restore_faces(pixels, seen, lambda *a: None, lambda: False)
    aliased = crops[0] - crops[1]  # the 2 px checks, as the crop shows them
    # not a false pattern in the face (0.031 measured without the smoothing, 0.015 with it)
    assert np.abs(aliased[128:384, 128:384]).std() < 0.022


def test_cancelling_stops_before_the_next_face():
    crops = []

    def restore(crop):
        crops.append(crop)
        return crop

    with pytest.raises(Cancelled):
        restore_faces(two_faces(), restore, lambda *a: None, lambda: bool(crops))
    assert len(crops) == 1


class FakeGFPGAN:
    """Stands in for spandrel's GFPGAN network: records what it is given, answers mid-grey in
    its own [-1, 1] range."""

    def __init__(self):
        self.seen = []

    def __call__(self, batch, return_rgb):
        self.seen.append(batch)
        return torch.zeros_like(batch), None


def test_gfpgan_is_given_and_read_in_its_own_range_and_is_seeded():
    fake = FakeGFPGAN()
    descriptor = SimpleNamespace(model=fake)
    batch = torch.tensor([0.0, 0.25, 1.0]).reshape(1, 3, 1, 1)
    out = face_network(descriptor, "GFPGAN", seed=3)(batch)
    torch.testing.assert_close(fake.seen[0].flatten(), torch.tensor([-1.0, -0.5, 1.0]))
    torch.testing.assert_close(out, torch.full_like(batch, 0.5))  # its 0 is mid-grey

    class NoisyGFPGAN:  # its decoder draws noise, as GFPGAN's does
        def __call__(self, batch, return_rgb):
            return batch + 0.1 * torch.randn_like(batch), None

    gfpgan = SimpleNamespace(model=NoisyGFPGAN())
    torch.manual_seed(0)
    untouched = torch.rand(1)
    torch.manual_seed(0)
    once = face_network(gfpgan, "GFPGAN", seed=3)(batch)
    assert torch.equal(torch.rand(1), untouched)  # the caller's generator is left as it was
    torch.testing.assert_close(once, face_network(gfpgan, "GFPGAN", seed=3)(batch))
    assert not torch.equal(once, face_network(gfpgan, "GFPGAN", seed=4)(batch))

    def noisy(batch):
        return batch + torch.rand_like(batch)

    first = face_network(noisy, "RestoreFormer", seed=3)(batch)
    torch.testing.assert_close(first, face_network(noisy, "RestoreFormer", seed=3)(batch))
    assert not torch.equal(first, face_network(noisy, "RestoreFormer", seed=4)(batch))
