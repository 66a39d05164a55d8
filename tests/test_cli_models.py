"""`studio models ...`: list, download (from 127.0.0.1) with a progress bar, import, remove."""

from __future__ import annotations

import json

import pytest
from hub_server import REPO_ID, running_hub
from model_fixtures import file_server, hub_entry, url_entry, use_catalogue
from tiny_models import make_compact

from studio.cli import main
from studio.models import hub
from studio.models.library import human_size

TINY_REPO_SELECTION = (  # what a download of the tiny repository fetches: one copy of each weight
    "model_index.json",
    "scheduler/scheduler_config.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
)


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def listed(capsys, *args: str) -> dict[str, dict]:
    capsys.readouterr()
    assert main(["models", "list", "--json", *args]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return {row["name"]: row for row in rows}


def test_list_shows_each_tool_with_licences_and_disk_use(capsys):
    assert main(["models", "list"]) == 0

    out = capsys.readouterr().out
    assert out.splitlines()[0] == "upscale:"
    assert "restore:" in out and "diffusion:" in out
    sd_turbo = next(line for line in out.splitlines() if line.strip().startswith("sd-turbo "))
    assert "available" in sd_turbo and "~2.6 GB" in sd_turbo and "NON-COMMERCIAL" in sd_turbo
    compact = next(line for line in out.splitlines() if "studio-compact-x4 " in line)
    assert "installed" in compact and "shipped" in compact
    assert out.splitlines()[-1].startswith("disk use of installed models: ")


def test_list_json_filters_by_tool(capsys):
    rows = listed(capsys, "--tool", "diffusion")

    assert set(rows) == {
        "sd-turbo",
        "sdxl-turbo",
        "stable-diffusion-v1-5",
        "stable-diffusion-xl-base-1.0",
        "stable-diffusion-inpainting",
    }
    assert rows["sdxl-turbo"]["non_commercial"] is True
    assert rows["sdxl-turbo"]["location"] == "stabilityai/sdxl-turbo"
    assert not any(row["installed"] for row in rows.values())


def test_download_shows_the_licence_then_a_progress_bar_and_installs(tmp_path, monkeypatch, capsys):
    payload = make_compact(tmp_path / "served.pth", scale=2).read_bytes()
    with file_server({"tiny-x2.pth": payload}) as url:
        entry = url_entry("tiny-x2", "upscale", f"{url}/tiny-x2.pth", payload)
        use_catalogue(monkeypatch, tmp_path, [entry])

        assert main(["models", "download", "tiny-x2"]) == 0

    err = capsys.readouterr().err
    assert f"tiny-x2: ESRGAN (RRDBNet), {human_size(len(payload))} to download" in err
    assert "licence: BSD-3-Clause" in err
    assert "download tiny-x2 [" in err and "100%" in err
    row = listed(capsys, "--tool", "upscale")["tiny-x2"]
    assert row["installed"] and row["size_bytes"] == len(payload)


def test_download_of_a_hugging_face_model_goes_to_the_hf_cache(tmp_path, monkeypatch, capsys):
    use_catalogue(monkeypatch, tmp_path, [hub_entry()])
    with running_hub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        assert main(["models", "download", "tiny-diffusers"]) == 0

    err = capsys.readouterr().err
    expected = sum(len(server.files[name]) for name in TINY_REPO_SELECTION)
    assert f"tiny-diffusers: Stable Diffusion (tiny), {human_size(expected)} to download" in err
    assert "this licence does not allow commercial use" in err
    assert str(hub.cached_repo(REPO_ID)) in err
    assert main(["models", "remove", "tiny-diffusers"]) == 0
    assert "from the Hugging Face cache" in capsys.readouterr().out
    assert hub.cached_repo(REPO_ID) is None


def test_download_fails_in_one_line_when_offline(tmp_path, monkeypatch, capsys):
    use_catalogue(monkeypatch, tmp_path, [hub_entry()])
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens

    assert main(["models", "download", "tiny-diffusers"]) == 1

    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("studio: Cannot reach http://127.0.0.1:9")


def test_import_in_place_then_remove_keeps_the_file(tmp_path, capsys):
    model = make_compact(tmp_path / "my-compact.safetensors", scale=4)

    assert main(["models", "import", str(model), "--tool", "upscale"]) == 0
    assert f"used in place at {model}" in capsys.readouterr().err
    row = listed(capsys, "--tool", "upscale")["my-compact"]
    assert row["installed"] and row["in_place"] and row["origin"] == "imported"

    assert main(["models", "remove", "my-compact"]) == 0
    assert "was left where it is" in capsys.readouterr().out
    assert model.is_file()
    assert "my-compact" not in listed(capsys)


def test_import_copy_and_a_refused_file(tmp_path, capsys):
    model = make_compact(tmp_path / "denoise.pth", scale=1)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")

    assert main(["models", "import", str(model), "--copy"]) == 0
    row = listed(capsys, "--tool", "restore")["denoise"]
    assert not row["in_place"] and row["path"] != str(model)

    assert main(["models", "import", str(junk)]) == 1
    assert "junk.pth is not a PyTorch checkpoint" in capsys.readouterr().err


def test_removing_a_shipped_or_unknown_model_is_refused(capsys):
    assert main(["models", "remove", "studio-compact-x4"]) == 1
    assert "built into Studio" in capsys.readouterr().err
    assert main(["models", "download", "no-such-model"]) == 1
    assert "No model called 'no-such-model'" in capsys.readouterr().err
