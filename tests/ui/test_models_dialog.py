"""The Models dialog on the real main window: catalogue listed with licences, a download from
127.0.0.1 with a progress bar that the Upscale tab's picker then offers, cancel, import, remove."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from model_fixtures import file_server, page_entry, url_entry, use_catalogue
from PySide6.QtWidgets import QFileDialog, QMessageBox
from tiny_models import make_compact

from studio.app.context import AppContext
from studio.ui.main_window import MainWindow
from studio.ui.model_picker import GET_MORE
from studio.ui.models_dialog import ModelsDialog


@pytest.fixture
def served_model(tmp_path) -> bytes:
    """An x2 upscaler of about 1.2 MB: several chunks, so a download reports progress."""
    model = make_compact(tmp_path / "served.pth", scale=2, num_feat=64, num_conv=8)
    return model.read_bytes()


@pytest.fixture
def catalogue(tmp_path, monkeypatch, served_model):
    """A catalogue with one downloadable upscaler (served by the test) and a non-commercial one."""

    def install(url: str) -> None:
        entries = [
            url_entry("tiny-x2", "upscale", f"{url}/tiny-x2.pth", served_model),
            url_entry(
                "tiny-nc",
                "upscale",
                f"{url}/tiny-nc.pth",
                served_model + b"x",
                licence="CC BY-NC-SA 4.0",
                non_commercial=True,
            ),
            page_entry("NAFNet-SIDD-width64", "NAFNet-SIDD-width64.pth"),
        ]
        use_catalogue(monkeypatch, tmp_path, entries)

    return install


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    ctx = AppContext.open()
    window = MainWindow(ctx)
    qtbot.addWidget(window)
    window.show()
    yield window
    window.close()
    ctx.close()


def rows(dialog: ModelsDialog) -> dict[str, list[str]]:
    table = dialog.table
    return {
        table.topLevelItem(i).text(0): [table.topLevelItem(i).text(c) for c in range(5)]
        for i in range(table.topLevelItemCount())
    }


def picker_paths(window: MainWindow) -> list[str]:
    combo = window.tool_tabs["upscale"].model_combo
    return [combo.itemData(i) for i in range(combo.count())]


def yes(monkeypatch) -> list[str]:
    """Answer Yes to every confirmation; returns the questions asked."""
    asked: list[str] = []

    def question(parent, title, text, *args, **kwargs):
        asked.append(f"{title}\n{text}")
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", question)
    return asked


def test_the_dialog_lists_the_catalogue_with_licences_sizes_and_disk_use(
    window, catalogue, served_model
):
    catalogue("http://127.0.0.1:9")
    dialog = window.open_models("upscale")

    listed = rows(dialog)
    assert listed["studio-compact-x4"][1] == "Built in"
    size = f"{len(served_model) / 1e6:.1f} MB"
    assert listed["tiny-x2"][1:4] == ["Available", size, "BSD-3-Clause"]
    assert listed["tiny-nc"][3] == "Non-commercial: CC BY-NC-SA 4.0"
    assert "Installed upscale models use" in dialog.disk_use.text()
    dialog.select("tiny-x2")
    assert dialog.download_button.isEnabled() and not dialog.remove_button.isEnabled()
    assert "Licence: BSD-3-Clause" in dialog.details.text()
    dialog.show_tool("restore")
    assert "NAFNet-SIDD-width64" in rows(dialog)
    dialog.select("NAFNet-SIDD-width64")
    assert not dialog.download_button.isEnabled()
    assert "Import file" in dialog.details.text()


def test_download_shows_progress_and_the_upscale_picker_then_offers_the_model(
    window, catalogue, served_model, qtbot
):
    with file_server({"tiny-x2.pth": served_model}) as url:
        catalogue(url)
        dialog = window.open_models("upscale")
        dialog.select("tiny-x2")
        shown: list[tuple[int, str]] = []  # the bar's value and the text beside it
        dialog.progress_bar.valueChanged.connect(
            lambda value: shown.append((value, dialog.progress_label.text()))
        )
        with qtbot.waitSignal(window.modelsChanged, timeout=30_000):
            dialog.download_button.click()
            assert dialog.progress_bar.isVisible() and dialog.cancel_button.isVisible()

    values = [value for value, _ in shown]
    assert values[-1] == 1000 and values == sorted(values) and len(values) > 2
    assert any(0 < value < 1000 and "MB/s" in text and "ETA" in text for value, text in shown)
    assert rows(dialog)["tiny-x2"][1] == "Installed"
    assert not dialog.progress_bar.isVisible()
    downloaded = str(window.models.find("tiny-x2").path)
    assert downloaded in picker_paths(window)
    assert picker_paths(window)[-1] == GET_MORE
    tab = window.tool_tabs["upscale"]
    tab.model_combo.setCurrentIndex(tab.model_combo.findData(downloaded))
    tab.model_combo.activated.emit(tab.model_combo.currentIndex())
    qtbot.waitUntil(lambda: tab.model_info is not None, timeout=20_000)
    assert tab.model_info.scale == 2


def test_a_non_commercial_model_asks_before_downloading(window, catalogue, monkeypatch):
    catalogue("http://127.0.0.1:9")
    asked: list[str] = []

    def refuse(parent, title, text, *args, **kwargs):
        asked.append(text)
        return QMessageBox.StandardButton.No

    monkeypatch.setattr(QMessageBox, "question", refuse)
    dialog = window.open_models("upscale")
    dialog.select("tiny-nc")

    dialog.download_button.click()

    assert "does not allow commercial use" in asked[0] and "CC BY-NC-SA 4.0" in asked[0]
    assert dialog.task is None


def test_cancel_stops_a_download_and_nothing_is_installed(window, catalogue, served_model, qtbot):
    gate = threading.Event()
    with file_server({"tiny-x2.pth": served_model}, gate=gate) as url:
        catalogue(url)
        dialog = window.open_models("upscale")
        dialog.select("tiny-x2")
        dialog.download_button.click()
        qtbot.waitUntil(lambda: dialog.progress_bar.value() > 0, timeout=20_000)
        with qtbot.waitSignal(dialog.taskFinished, timeout=30_000) as finished:
            dialog.cancel_button.click()
            gate.set()

    assert finished.args == ["cancelled"]
    assert "cancelled" in dialog.progress_label.text()
    assert rows(dialog)["tiny-x2"][1] == "Available"
    assert not (window.models.models_dir / "tiny-x2.pth").exists()
    assert dialog.download_button.isEnabled()


def test_a_failed_download_says_why_in_the_dialog(window, catalogue, qtbot):
    catalogue("http://127.0.0.1:9")
    dialog = window.open_models("upscale")
    dialog.select("tiny-x2")

    with qtbot.waitSignal(dialog.taskFinished, timeout=30_000) as finished:
        dialog.download_button.click()

    assert finished.args[0].startswith("failed: ")
    assert "tiny-x2" in dialog.progress_label.text()
    assert rows(dialog)["tiny-x2"][1] == "Available"


def test_import_in_place_then_remove_refreshes_the_picker(
    window, catalogue, tmp_path, qtbot, monkeypatch
):
    catalogue("http://127.0.0.1:9")
    model = make_compact(tmp_path / "my-own-x4.safetensors", scale=4)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(model), ""))
    dialog = window.open_models("upscale")
    monkeypatch.setattr(dialog, "_ask_copy", lambda path: False)

    with qtbot.waitSignal(window.modelsChanged, timeout=30_000):
        dialog.import_file_button.click()

    assert rows(dialog)["my-own-x4"][1] == "Installed (in place)"
    assert str(model) in picker_paths(window)
    asked = yes(monkeypatch)
    dialog.select("my-own-x4")
    with qtbot.waitSignal(window.modelsChanged, timeout=5_000):
        dialog.remove_button.click()

    assert "stays where it is" in asked[0]
    assert "my-own-x4" not in rows(dialog)
    assert model.is_file()
    assert str(model) not in picker_paths(window)


@pytest.mark.parametrize(("tab_name", "other"), [("upscale", "restore"), ("restore", "upscale")])
def test_get_more_in_the_picker_opens_the_dialog_on_its_tool(window, catalogue, tab_name, other):
    catalogue("http://127.0.0.1:9")
    tab = window.tool_tabs[tab_name]
    chosen = tab.model_combo.currentData()
    window.open_models(other).close()

    index = tab.model_combo.findData(GET_MORE)
    tab.model_combo.setCurrentIndex(index)
    tab.model_combo.activated.emit(index)

    assert window.models_dialog.isVisible()
    assert window.models_dialog.tool == tab_name
    assert tab.model_combo.currentData() == chosen  # the picker keeps the chosen model
    assert Path(chosen).is_file()
