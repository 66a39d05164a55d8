"""The real main window for the UI tests (on the test's own STUDIO_HOME), and the tiny diffusion
models the Generate and Inpaint tab tests use."""

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


class MainWindows:
    """Opens main windows, each on its own context; whatever is still open is closed at the
    end of the test (a test that restarts Studio closes one and opens another)."""

    def __init__(self, qtbot) -> None:
        self.qtbot = qtbot
        self.open_windows: list[MainWindow] = []

    def open(self) -> MainWindow:
        window = MainWindow(AppContext.open())
        self.qtbot.addWidget(window)
        window.show()
        self.open_windows.append(window)
        return window

    def close(self, window: MainWindow) -> None:
        self.open_windows.remove(window)
        window.close()
        window.ctx.close()

    def close_all(self) -> None:
        errors = []
        for window in list(self.open_windows):
            try:
                self.close(window)
            except Exception as error:  # close the others, then report
                errors.append(error)
        if errors:
            raise errors[0]


@pytest.fixture
def main_windows(qtbot):
    windows = MainWindows(qtbot)
    yield windows
    windows.close_all()


@pytest.fixture
def main_window(main_windows) -> MainWindow:
    return main_windows.open()


@pytest.fixture
def diffusion_window(hf_cache, monkeypatch, one_torch_thread, main_windows) -> MainWindow:
    # main_windows last: set up after, so torn down before, the environment the window ran in
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be downloaded
    return main_windows.open()
