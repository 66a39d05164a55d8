"""The model catalogue: the shipped file validates, lists what each tool needs, and bad files fail
with a message that names the entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.models.catalogue import (
    CatalogueError,
    catalogue_path,
    entries_for,
    find,
    is_installed,
    load_catalogue,
)
from studio.models.shipped import shipped_upscalers

REQUIRED = {
    "sd-turbo": "generate",
    "sdxl-turbo": "generate",
    "stable-diffusion-v1-5": "generate",
    "stable-diffusion-xl-base-1.0": "generate",
    "stable-diffusion-inpainting": "inpaint",
    "RealESRGAN_x4plus": "upscale",
    "RealESRGAN_x2plus": "upscale",
    "realesr-general-x4v3": "upscale",
    "realesr-general-wdn-x4v3": "upscale",
    "RealESRGAN_x4plus_anime_6B": "upscale",
    "scunet_color_real_psnr": "restore",
    "NAFNet-SIDD-width64": "restore",
    "fbcnn_color": "restore",
    "GFPGANv1.4": "restore",
}


def write_catalogue(tmp_path: Path, models: object) -> Path:
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({"version": 1, "models": models}), encoding="utf-8")
    return path


def package_models() -> list[dict]:
    return json.loads(catalogue_path().read_text(encoding="utf-8"))["models"]


def test_the_shipped_catalogue_validates_and_holds_every_required_model():
    entries = load_catalogue()

    for name, tool in REQUIRED.items():
        entry = find(name, entries)
        assert entry is not None, name
        assert entry.tool == tool
    assert {e.name for e in entries_for("inpaint", entries)} == {"stable-diffusion-inpainting"}


def test_direct_files_on_github_releases_carry_size_and_hash():
    for entry in load_catalogue():
        if entry.source.kind == "url":
            assert entry.source.location.startswith("https://github.com/")
            assert "/releases/download/" in entry.source.location
            assert entry.size and entry.sha256, entry.name


def test_non_commercial_licences_are_marked():
    assert find("sdxl-turbo").non_commercial
    assert find("sd-turbo").non_commercial
    assert not find("stable-diffusion-v1-5").non_commercial
    assert find("scunet_color_real_psnr").licence == "Apache-2.0"
    assert find("NAFNet-SIDD-width64").licence == "MIT"


def test_shipped_upscalers_are_listed_first_and_installed(tmp_path):
    upscalers = entries_for("upscale")
    shipped = [e for e in upscalers if e.shipped]

    assert [e.name for e in shipped] == [path.stem for path in shipped_upscalers()]
    assert upscalers[: len(shipped)] == shipped
    assert all(is_installed(e, tmp_path) for e in shipped)


def test_a_downloaded_file_counts_as_installed_only_when_complete(tmp_path):
    entry = find("realesr-general-x4v3")
    assert not is_installed(entry, tmp_path)

    (tmp_path / "realesr-general-x4v3.pth").write_bytes(b"partial")
    assert not is_installed(entry, tmp_path)

    (tmp_path / "realesr-general-x4v3.pth").write_bytes(bytes(entry.size))
    assert is_installed(entry, tmp_path)


def test_a_hugging_face_model_is_installed_when_its_snapshot_is_complete(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    entry = find("sd-turbo")
    assert not is_installed(entry, tmp_path)

    repo = tmp_path / "hub" / "models--stabilityai--sd-turbo"
    commit = "a" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text('{"unet": ["diffusers", "UNet2DConditionModel"]}')
    (snapshot / "unet").mkdir()
    (snapshot / "unet" / "config.json").write_text("{}")
    assert not is_installed(entry, tmp_path)  # the UNet's weights are missing

    (snapshot / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"weights")
    assert is_installed(entry, tmp_path)


def test_a_file_that_is_not_json_is_a_clear_error(tmp_path):
    path = tmp_path / "catalogue.json"
    path.write_text("{ not json", encoding="utf-8")

    with pytest.raises(CatalogueError, match="is not valid JSON"):
        load_catalogue(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tool": "colourise"}, r"entry 3 \(RealESRGAN_x4plus\): tool is 'colourise'"),
        ({"sha256": "abc"}, r"RealESRGAN_x4plus\): sha256 must be 64 hexadecimal digits"),
        ({"size": -1}, "size must be a positive number of bytes"),
        ({"source": {"url": "ftp://example.org/x.pth"}}, "must be an http"),
        ({"source": {"url": "https://x.org/a.pth", "hf_repo": "a/b"}}, "exactly one of"),
        ({"non_commercial": "no"}, "non_commercial must be true or false"),
    ],
)
def test_a_malformed_entry_names_itself_and_the_field(tmp_path, change, message):
    models = package_models()
    index = next(i for i, m in enumerate(models) if m["name"] == "RealESRGAN_x4plus")
    models = [models[0], models[1], {**models[index], **change}]

    with pytest.raises(CatalogueError, match=message):
        load_catalogue(write_catalogue(tmp_path, models))


def test_a_missing_field_is_named(tmp_path):
    entry = dict(package_models()[0])
    del entry["licence"]

    with pytest.raises(CatalogueError, match=r"entry 1 \(sd-turbo\): lacks licence"):
        load_catalogue(write_catalogue(tmp_path, [entry]))


def test_duplicate_names_are_refused(tmp_path):
    entry = package_models()[0]

    with pytest.raises(CatalogueError, match="lists sd-turbo twice"):
        load_catalogue(write_catalogue(tmp_path, [entry, entry]))
