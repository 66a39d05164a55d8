"""Tiny diffusion models for the Generate and Inpaint tab tests, built once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import tiny_diffusion

from studio.app.context import AppContext
from studio.ui.main_window import MainWindow


@pytest.fixture(scope="session")
def diffusion_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ui-diffusion-models")
    hub = root / "hub"
    tiny_diffusion.install_family_config(hub)
    folder = tiny_diffusion.save_folder(root / "tiny-sd")
    turbo = root / "tiny-sd-turbo"
    shutil.copytree(folder, turbo)  # the same weights: the name says it is distilled
    not_a_model = root / "holiday-photos"
    not_a_model.mkdir()
    (not_a_model / "beach.txt").write_text("not a model")
    return {
        "hub": hub,
        "folder": folder,
        "turbo": turbo,
        "inpaint_folder": tiny_diffusion.save_folder(root / "tiny-sd-inpainting", inpainting=True),
        "not_a_model": not_a_model,
    }


@pytest.fixture
def offline_hub(diffusion_models, monkeypatch) -> None:
    """Single files find their family's configuration in this cache; nothing is downloaded."""
    monkeypatch.setenv("HF_HUB_CACHE", str(diffusion_models["hub"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def diffusion_window(qtbot, offline_hub, one_torch_thread):
    window = MainWindow(AppContext.open())
    qtbot.addWidget(window)
    window.show()
    yield window
    window.close()
    window.ctx.close()
