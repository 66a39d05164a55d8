"""A Hugging Face repo id as a diffusion model: downloaded on first use into the shared cache
(from a local stand-in for the Hub, tests/hub_server.py), then used offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hub_server import REPO_ID, running_hub

from studio.engines import diffusion
from studio.engines.diffusion import GenerateRequest
from studio.models.cache import ModelCache
from studio.models.diffusion import resolve_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def repo_files(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file()
    }


def test_a_repo_id_downloads_once_with_progress_then_runs_offline(
    diffusion_models, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    request = GenerateRequest(model=REPO_ID, prompt="a cat", steps=2, width=64, height=64, seed=3)
    reports = []
    with running_hub(repo_files(diffusion_models["folder"])) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        first = diffusion.run(
            request,
            progress=lambda f, m, p=None: reports.append((f, m)),
            cache=ModelCache(),
        )
    downloads = [message for _, message in reports if "MB" in message]
    assert downloads, "the download reported its progress"
    fractions = [fraction for fraction, _ in reports]
    assert fractions == sorted(fractions)
    assert (tmp_path / "hf-cache" / "models--studio-tests--tiny-diffusers").is_dir()

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the hub is gone: offline
    again = diffusion.run(request, cache=ModelCache())
    assert np.array_equal(first.pictures[0].pixels, again.pictures[0].pixels)
    assert first.facts.model_name == REPO_ID
    # the same weights from the folder give the same pixels: the download is the model
    local = diffusion.run(
        GenerateRequest(
            model=str(diffusion_models["folder"]),
            prompt="a cat",
            steps=2,
            width=64,
            height=64,
            seed=3,
        ),
        cache=ModelCache(),
    )
    assert np.array_equal(first.pictures[0].pixels, local.pictures[0].pixels)


def test_an_unknown_repo_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(Exception, match="Cannot reach") as failure:
        resolve_model("someone/some-model")
    assert "Traceback" not in str(failure.value)
