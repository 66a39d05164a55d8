"""The model library: what each tool can use, downloads, imports (detected, hashed, in place or
copied) and removal, on a temporary STUDIO_HOME and Hugging Face cache."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
from pathlib import Path

import pytest
from hub_server import REPO_ID, running_hub
from model_fixtures import (
    diffusers_folder,
    file_server,
    hub_entry,
    page_entry,
    single_file_checkpoint,
    url_entry,
    use_catalogue,
)
from tiny_models import make_compact, make_esrgan

from studio.models import hub
from studio.models.library import LibraryError, ModelLibrary
from studio.models.shipped import shipped_restorers, shipped_upscalers
from studio.paths import user_dirs


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def library(hf_cache) -> ModelLibrary:
    return ModelLibrary(user_dirs())


@pytest.fixture
def upscaler_file(tmp_path) -> Path:
    (tmp_path / "mine").mkdir()
    return make_esrgan(tmp_path / "mine" / "my-esrgan-x4.pth", scale=4)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_fresh_library_lists_shipped_models_as_installed_and_the_catalogue_as_available(library):
    installed = library.installed("upscale")
    shipped = shipped_upscalers()

    assert [item.name for item in installed] == [path.stem for path in shipped]
    assert all(item.origin == "shipped" and not item.removable for item in installed)
    assert [item.size_bytes for item in installed] == [p.stat().st_size for p in shipped]
    assert installed[0].path == shipped[0] and installed[0].kind == "file"
    available = {item.name: item for item in library.available("upscale")}
    assert "RealESRGAN_x4plus" in available and available["RealESRGAN_x4plus"].downloadable
    assert available["RealESRGAN_x4plus"].size_bytes == 67040989
    assert library.installed("diffusion") == []
    diffusion = {item.name: item for item in library.available("diffusion")}
    assert {"sd-turbo", "sdxl-turbo", "stable-diffusion-inpainting"} <= set(diffusion)
    assert diffusion["sd-turbo"].non_commercial and diffusion["sd-turbo"].kind == "hf_repo"
    assert diffusion["sd-turbo"].location == "stabilityai/sd-turbo"
    restorers = shipped_restorers()
    assert [item.name for item in library.installed("restore")] == [p.stem for p in restorers]
    assert library.disk_use() == sum(path.stat().st_size for path in [*shipped, *restorers])


def test_importing_in_place_records_the_file_and_removing_it_keeps_the_file(library, upscaler_file):
    item = library.import_path(upscaler_file, copy=False)

    assert (item.name, item.tool, item.kind, item.origin) == (
        "my-esrgan-x4",
        "upscale",
        "file",
        "imported",
    )
    assert item.family == "ESRGAN x4"
    assert item.sha256 == sha256(upscaler_file)
    assert item.path == upscaler_file and item.in_place
    assert item.size_bytes == upscaler_file.stat().st_size
    assert item in library.installed("upscale")
    registry = json.loads(library.registry_path.read_text())
    assert registry["models"][0]["location"] == str(upscaler_file)

    assert library.remove("my-esrgan-x4") == 0

    assert upscaler_file.is_file()
    assert "my-esrgan-x4" not in [i.name for i in library.installed("upscale")]


def test_importing_a_copy_places_it_in_the_library_and_removing_it_deletes_only_the_copy(
    library, upscaler_file
):
    item = library.import_path(upscaler_file, copy=True)

    assert item.path.parent == library.imports_dir and not item.in_place
    assert item.path.read_bytes() == upscaler_file.read_bytes()
    assert not [p for p in library.imports_dir.iterdir() if p.name.endswith(".tmp")]

    assert library.remove(item.name) == upscaler_file.stat().st_size

    assert not item.path.exists() and upscaler_file.is_file()


def test_a_same_size_model_is_imported_as_a_restorer(library, tmp_path):
    item = library.import_path(make_compact(tmp_path / "denoise.safetensors", scale=1), copy=False)

    assert item.tool == "restore"
    assert item in library.installed("restore") and item not in library.installed("upscale")


def test_a_diffusers_folder_is_imported_for_diffusion_and_copied_whole(library, tmp_path):
    folder = diffusers_folder(tmp_path / "my-pipeline")

    item = library.import_path(folder, copy=True)

    assert (item.tool, item.kind, item.family) == (
        "diffusion",
        "diffusers",
        "StableDiffusionPipeline",
    )
    assert (item.path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert item.size_bytes == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert library.installed("diffusion") == [item]
    assert library.remove(item.name) == item.size_bytes
    assert not item.path.exists() and folder.is_dir()


def test_an_incomplete_diffusers_folder_is_refused(library, tmp_path):
    folder = diffusers_folder(tmp_path / "broken", with_vae_weights=False)

    with pytest.raises(LibraryError, match="incomplete diffusers folder"):
        library.import_path(folder, copy=False)


@pytest.mark.parametrize(
    ("prefixes", "family"),
    [
        (
            ["model.diffusion_model.input_blocks.0.", "conditioner.embedders.1.model."],
            "Stable Diffusion XL",
        ),
        (
            ["model.diffusion_model.input_blocks.0.", "cond_stage_model.transformer.x."],
            "Stable Diffusion 1",
        ),
    ],
)
def test_single_file_checkpoints_are_detected_from_their_tensor_names(
    library, tmp_path, prefixes, family
):
    path = single_file_checkpoint(tmp_path / "checkpoint.safetensors", prefixes)

    item = library.import_path(path, copy=False, tool="diffusion")

    assert (item.tool, item.kind) == ("diffusion", "checkpoint")
    assert item.family == f"{family} (single-file checkpoint)"


def test_files_that_are_not_models_are_refused_with_a_reason(library, tmp_path):
    lora = single_file_checkpoint(tmp_path / "style.safetensors", ["lora_unet_down.0.lora_down."])
    noise = tmp_path / "noise.pth"
    # random bytes, not starting with 0x80 (which reads as a pickle's header: another refusal)
    noise.write_bytes(b"\x00" + random.Random(0).randbytes(4095))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    folder = tmp_path / "photos"
    folder.mkdir()

    with pytest.raises(LibraryError, match="is a LoRA"):
        library.import_path(lora, copy=False)
    with pytest.raises(LibraryError, match="not a PyTorch checkpoint"):
        library.import_path(noise, copy=False)
    with pytest.raises(LibraryError, match="not a model file"):
        library.import_path(text, copy=False)
    with pytest.raises(LibraryError, match=r"without model_index\.json"):
        library.import_path(folder, copy=False)
    assert not library.registry_path.exists()  # nothing recorded


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(library, tmp_path):
    marker = tmp_path / "this-must-not-exist"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"weight": _Payload(marker)}, protocol=2))

    with pytest.raises(LibraryError, match="would run code"):
        library.import_path(evil, copy=True)

    assert not marker.exists()
    assert not library.imports_dir.exists()


def test_a_model_imported_twice_is_refused(library, upscaler_file):
    library.import_path(upscaler_file, copy=False)

    with pytest.raises(LibraryError, match="already in the library as my-esrgan-x4"):
        library.import_path(upscaler_file, copy=True)


def test_a_tool_that_does_not_match_the_file_is_refused(library, upscaler_file):
    with pytest.raises(LibraryError, match="model for upscale, not diffusion"):
        library.import_path(upscaler_file, copy=False, tool="diffusion")


def test_downloading_a_catalogue_file_installs_it_and_removing_deletes_it(
    library, tmp_path, monkeypatch
):
    model = make_compact(tmp_path / "served.pth", scale=2)
    payload = model.read_bytes()
    with file_server({"tiny-x2.pth": payload}) as url:
        use_catalogue(
            monkeypatch, tmp_path, [url_entry("tiny-x2", "upscale", f"{url}/tiny-x2.pth", payload)]
        )
        assert [i.name for i in library.available("upscale")] == ["tiny-x2"]

        item = library.download("tiny-x2")

    assert item.installed and item.path == library.models_dir / "tiny-x2.pth"
    assert item.path.read_bytes() == payload
    assert item.size_bytes == len(payload)
    assert library.available("upscale") == []
    assert library.remove("tiny-x2") == len(payload)
    assert not item.path.exists()
    assert [i.name for i in library.available("upscale")] == ["tiny-x2"]


def test_a_hugging_face_model_downloads_into_the_hf_cache_and_is_removed_from_it(
    library, tmp_path, monkeypatch, hf_cache
):
    use_catalogue(monkeypatch, tmp_path, [hub_entry()])
    with running_hub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        item = library.download("tiny-diffusers")

    assert item.installed and item.tool == "diffusion" and item.kind == "hf_repo"
    assert item.location == REPO_ID
    assert item.path == hub.cached_repo(REPO_ID) and (item.path / "model_index.json").is_file()
    assert item.size_bytes == hub.cached_size(REPO_ID) > 0
    assert item.non_commercial
    assert library.disk_use("diffusion") == item.size_bytes

    assert library.remove("tiny-diffusers") == item.size_bytes

    assert hub.cached_repo(REPO_ID) is None
    assert not library.installed("diffusion")


def test_importing_the_published_file_of_a_catalogue_entry_installs_that_entry(
    library, tmp_path, monkeypatch
):
    model = make_compact(tmp_path / "downloaded-elsewhere.pth", scale=4)
    payload = model.read_bytes()
    nafnet = make_compact(tmp_path / "NAFNet-SIDD-width64.pth", scale=1, seed=3)
    use_catalogue(
        monkeypatch,
        tmp_path,
        [
            url_entry("tiny-x4", "upscale", "https://example.org/tiny-x4.pth", payload),
            page_entry("NAFNet-SIDD-width64", "NAFNet-SIDD-width64.pth"),
        ],
    )
    with pytest.raises(LibraryError, match=r"download NAFNet-SIDD-width64\.pth there by hand"):
        library.download("NAFNet-SIDD-width64")

    by_hash = library.import_path(model, copy=False)
    by_hand = library.import_path(nafnet, copy=True)

    assert by_hash.name == "tiny-x4" and by_hash.origin == "catalogue" and by_hash.installed
    assert by_hash.licence == "BSD-3-Clause" and by_hash.path == model
    assert by_hand.name == "NAFNet-SIDD-width64" and by_hand.licence == "MIT"
    assert by_hand.path.parent == library.imports_dir
    assert library.available() == []
    library.remove("NAFNet-SIDD-width64")
    assert not by_hand.path.exists() and nafnet.is_file()
    assert [item.name for item in library.available()] == ["NAFNet-SIDD-width64"]


def test_shipped_models_cannot_be_removed(library):
    with pytest.raises(LibraryError, match="built into Studio"):
        library.remove(shipped_upscalers()[0].stem)


def test_an_unknown_name_lists_the_known_ones(library):
    with pytest.raises(LibraryError, match=r"No model called 'nope'\. Known models: studio"):
        library.find("nope")


def test_a_damaged_registry_is_a_clear_error(library):
    library.models_dir.mkdir(parents=True)
    library.registry_path.write_text("{ not json")

    with pytest.raises(LibraryError, match=r"cannot be read .* move it aside"):
        library.installed("upscale")


def test_two_studios_importing_at_once_both_keep_their_record(library, tmp_path, monkeypatch):
    """A window copies a big file while `studio models import` records another: neither
    record is lost when the window writes the registry afterwards."""
    other_library = ModelLibrary(user_dirs())
    (tmp_path / "mine").mkdir()
    other_file = make_compact(tmp_path / "mine" / "other-x2.safetensors", scale=2)
    copy_in = ModelLibrary._copy_in

    def slow_copy(self, source, progress, cancelled):
        if self is library:  # the other Studio records its import during this one's copy
            other_library.import_path(other_file, copy=False)
        return copy_in(self, source, progress, cancelled)

    monkeypatch.setattr(ModelLibrary, "_copy_in", slow_copy)
    library.import_path(make_esrgan(tmp_path / "mine" / "big-x4.pth", scale=4), copy=True)

    names = {item.name for item in ModelLibrary(user_dirs()).installed("upscale")}
    assert {"big-x4", "other-x2"} <= names


def test_two_studios_copying_files_of_one_name_keep_both_files(library, tmp_path, monkeypatch):
    other_library = ModelLibrary(user_dirs())
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    first = make_esrgan(tmp_path / "a" / "portrait.pth", scale=4)
    second = make_compact(tmp_path / "b" / "portrait.pth", scale=2)
    copy_in = ModelLibrary._copy_in

    def slow_copy(self, source, progress, cancelled):
        if self is library:  # the other Studio copies and records a namesake meanwhile
            other_library.import_path(second, copy=True)
        return copy_in(self, source, progress, cancelled)

    monkeypatch.setattr(ModelLibrary, "_copy_in", slow_copy)
    library.import_path(first, copy=True)

    items = {item.name: item for item in ModelLibrary(user_dirs()).installed("upscale")}
    assert {"portrait", "portrait-2"} <= set(items)
    copies = {sha256(Path(items[name].location)) for name in ("portrait", "portrait-2")}
    assert copies == {sha256(first), sha256(second)}  # each record points at its own bytes


def test_a_library_held_by_another_studio_is_a_clear_error(library, upscaler_file, monkeypatch):
    from filelock import FileLock

    import studio.models.library as library_module

    monkeypatch.setattr(library_module, "REGISTRY_LOCK_SECONDS", 0.2)
    library.models_dir.mkdir(parents=True, exist_ok=True)
    held = FileLock(library.registry_path.with_name("library.json.lock"))
    with held, pytest.raises(LibraryError, match="Another Studio has been changing"):
        library.import_path(upscaler_file, copy=True)
    assert not list(library.imports_dir.glob("*"))  # the copy was taken back
    assert upscaler_file.stem not in {item.name for item in library.installed("upscale")}
