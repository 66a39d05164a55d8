"""Every test runs offscreen, with every user directory in its own temporary folder."""

import os
import sys
from unittest import mock

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest


def pytest_collection_finish(session):
    """colour-science (a test dependency) puts MagicMocks in sys.modules for optional packages it
    lacks (matplotlib, scipy, ...); diffusers then fails to import, as `find_spec` needs real
    module specs. Its own modules keep the mocks they already imported."""
    for name, module in list(sys.modules.items()):
        if isinstance(module, mock.Mock):
            del sys.modules[name]


@pytest.fixture(autouse=True)
def studio_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("studio_home")
    monkeypatch.setenv("STUDIO_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: one thread is as fast, and far faster when other programs share the CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def diffusion_models(tmp_path_factory):
    """Tiny SD pipelines as a diffusers folder, a 9-channel inpainting folder, and single-file
    checkpoints whose family configuration sits in a private Hugging Face cache ("hub")."""
    import tiny_diffusion

    root = tmp_path_factory.mktemp("diffusion-models")
    hub = root / "hub"
    tiny_diffusion.install_family_config(hub)
    tiny_diffusion.install_family_config(hub, inpainting=True)
    return {
        "hub": hub,
        "folder": tiny_diffusion.save_folder(root / "tiny-sd"),
        "inpaint_folder": tiny_diffusion.save_folder(root / "tiny-sd-inpainting", inpainting=True),
        "file": tiny_diffusion.save_single_file(root / "tiny-sd.safetensors"),
        "ckpt": tiny_diffusion.save_single_file(root / "tiny-sd.ckpt", pickle=True),
        "xl_folder": tiny_diffusion.save_folder(root / "tiny-sdxl", xl=True),
    }


@pytest.fixture
def hf_cache(diffusion_models, monkeypatch):
    """The Hugging Face cache holding the tiny families' configuration; nothing else."""
    monkeypatch.setenv("HF_HUB_CACHE", str(diffusion_models["hub"]))
    return diffusion_models["hub"]
