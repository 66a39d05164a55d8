"""Every test runs offscreen, with every user directory in its own temporary folder."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest


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
