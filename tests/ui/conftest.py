"""The main window with the tiny diffusion models, for the Generate and Inpaint tab tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from studio.app.context import AppContext
from studio.ui.main_window import MainWindow


@pytest.fixture(scope="session")
def diffusion_models(diffusion_models, tmp_path_factory) -> dict[str, Path]:
    """The shared tiny models, plus a copy named like a Turbo model and a folder of no model."""
    root = tmp_path_factory.mktemp("ui-diffusion-models")
    turbo = root / "tiny-sd-turbo"
    shutil.copytree(diffusion_models["folder"], turbo)  # same weights: the name says distilled
    not_a_model = root / "holiday-photos"
    not_a_model.mkdir()
    (not_a_model / "beach.txt").write_text("not a model")
    return {**diffusion_models, "turbo": turbo, "not_a_model": not_a_model}


@pytest.fixture
def diffusion_window(qtbot, hf_cache, monkeypatch, one_torch_thread):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be downloaded
    window = MainWindow(AppContext.open())
    qtbot.addWidget(window)
    window.show()
    yield window
    window.close()
    window.ctx.close()
