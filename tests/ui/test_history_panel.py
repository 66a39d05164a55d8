"""The history panel and entry viewer on a real HistoryStore with real (tiny) PNG outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QModelIndex, QPoint, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication

from studio.app.history import EntryNotFound, HistoryStore
from studio.ui.history_panel import HistoryPanel

RED, BLUE = (220, 30, 30), (30, 30, 220)
SHA = "ab" * 32


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path):
    with HistoryStore(data_dir) as store:
        yield store


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.new("RGB", (16, 12), RED).save(path)
    return path


def run(
    store: HistoryStore,
    inputs: tuple[Path, ...] = (),
    *,
    model: str = "RealESRGAN_x2",
    scale: int = 2,
    colour: tuple[int, int, int] = BLUE,
    request: dict | None = None,
) -> int:
    """One finished run whose output is a `scale` x 16x12 PNG of one colour."""
    entry_id = store.start("upscale", request or {"model": model, "scale": scale}, list(inputs))
    path = store.output_path(entry_id, 0, ".png")
    Image.new("RGB", (16 * scale, 12 * scale), colour).save(path)
    store.complete(
        entry_id, [path], model_name=model, model_sha256=SHA, seed=7, device="cpu", dtype="float32"
    )
    return entry_id


def cancelled_runs(store: HistoryStore, count: int) -> list[int]:
    """Runs without files, in one transaction: cheap rows for paging through a long history."""
    with store.transaction():
        ids = [store.start("upscale", {"n": n}) for n in range(count)]
        for entry_id in ids:
            store.cancel(entry_id)
    return ids


def open_panel(qtbot, store: HistoryStore) -> HistoryPanel:
    panel = HistoryPanel(store)
    qtbot.addWidget(panel)
    panel.resize(700, 800)
    panel.show()
    panel.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is panel)
    return panel


def shown_ids(panel: HistoryPanel) -> list[int]:
    return [panel.model.entry_at(row).id for row in range(panel.model.rowCount())]


def focus_list(qtbot, panel: HistoryPanel) -> None:
    panel.list_view.setFocus()
    qtbot.waitUntil(panel.list_view.hasFocus)


def near(colour: QColor, rgb: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour.getRgb()[:3], rgb, strict=True))


def test_lists_entries_newest_first_with_thumbnails(qtbot, store, photo):
    ids = [run(store, (photo,)) for _ in range(3)]
    panel = open_panel(qtbot, store)
    assert shown_ids(panel) == ids[::-1]
    assert panel.page_label.text() == "1–3 of 3"
    thumbnail = panel.model.index(0).data(Qt.ItemDataRole.DecorationRole)
    assert thumbnail is not None and not thumbnail.isNull()
    assert panel.current_id() == ids[-1]


def test_approved_tile_is_framed_green_and_rejected_red(qtbot, store):
    approved, rejected = run(store), run(store)
    store.set_review(approved, "approved")
    store.set_review(rejected, "rejected")
    panel = open_panel(qtbot, store)
    panel.list_view.setCurrentIndex(QModelIndex())  # no selection highlight under the frames
    pixels = panel.list_view.viewport().grab().toImage()
    for entry_id, colour in ((approved, (46, 160, 67)), (rejected, (218, 54, 51))):
        rect = panel.list_view.visualRect(panel.model.index(panel.model.row_of(entry_id)))
        assert near(pixels.pixelColor(QPoint(rect.left() + 3, rect.center().y())), colour)


def test_failed_run_shows_its_error_in_the_details(qtbot, store):
    entry_id = store.start("upscale", {"model": "broken"})
    store.fail(entry_id, "Out of memory. Choose a smaller tile size in Settings.")
    panel = open_panel(qtbot, store)
    assert panel.current_id() == entry_id
    assert "Out of memory" in panel.details.text()
    assert not panel.review_bar.review_actions["approved"].isEnabled()


def test_review_filter_shows_only_that_state(qtbot, store):
    approved, rejected, pending = run(store), run(store), run(store)
    store.set_review(approved, "approved")
    store.set_review(rejected, "rejected")
    panel = open_panel(qtbot, store)
    panel.review_filter.setCurrentIndex(panel.review_filter.findText("Approved"))
    assert shown_ids(panel) == [approved]
    panel.review_filter.setCurrentIndex(panel.review_filter.findText("Pending"))
    assert shown_ids(panel) == [pending]
    assert panel.page_label.text() == "1–1 of 1"


def test_text_search_filters_after_typing_pauses(qtbot, store):
    barn = run(store, request={"prompt": "a red barn"})
    run(store, request={"prompt": "a blue sky"})
    panel = open_panel(qtbot, store)
    qtbot.keyClicks(panel.search, "BARN")
    qtbot.waitUntil(lambda: shown_ids(panel) == [barn])
    panel.search.clear()
    qtbot.waitUntil(lambda: panel.model.rowCount() == 2)


def test_pages_of_sixty_over_150_entries(qtbot, store):
    ids = cancelled_runs(store, 150)
    panel = open_panel(qtbot, store)
    assert panel.page_label.text() == "1–60 of 150"
    assert not panel.prev_button.isEnabled()
    qtbot.mouseClick(panel.next_button, Qt.MouseButton.LeftButton)
    assert panel.page_label.text() == "61–120 of 150"
    assert shown_ids(panel)[0] == ids[-61]
    qtbot.mouseClick(panel.next_button, Qt.MouseButton.LeftButton)
    assert panel.page_label.text() == "121–150 of 150"
    assert not panel.next_button.isEnabled()
    qtbot.mouseClick(panel.prev_button, Qt.MouseButton.LeftButton)
    assert panel.page_label.text() == "61–120 of 150"


def test_select_entry_turns_to_its_page(qtbot, store):
    ids = cancelled_runs(store, 150)
    panel = open_panel(qtbot, store)
    assert panel.select_entry(ids[4])
    assert panel.current_id() == ids[4]
    assert panel.page_label.text() == "121–150 of 150"


def test_keyboard_review_persists_and_moves_to_the_next(qtbot, store, data_dir):
    older, newer = run(store), run(store)
    panel = open_panel(qtbot, store)
    focus_list(qtbot, panel)
    with qtbot.waitSignal(panel.reviewChanged) as changed:
        qtbot.keyClick(panel.list_view, Qt.Key.Key_A)
    assert changed.args == [newer]
    assert panel.current_id() == older
    qtbot.keyClick(panel.list_view, Qt.Key.Key_X)
    qtbot.keyClick(panel.list_view, Qt.Key.Key_4)
    with HistoryStore(data_dir) as reopened:
        assert reopened.get(newer).review == "approved"
        assert reopened.get(older).review == "rejected"
        assert reopened.get(older).rating == 4
    qtbot.keyClick(panel.list_view, Qt.Key.Key_U)
    assert store.get(older).review == "pending"


def test_note_is_saved_when_editing_finishes(qtbot, store, data_dir):
    entry_id = run(store)
    panel = open_panel(qtbot, store)
    qtbot.keyClicks(panel.review_bar.note, "client wants it warmer")
    qtbot.keyClick(panel.review_bar.note, Qt.Key.Key_Return)
    with HistoryStore(data_dir) as reopened:
        assert reopened.get(entry_id).note == "client wants it warmer"


def test_delete_asks_then_removes_the_entry_and_its_file(qtbot, store):
    keep, doomed = run(store), run(store)
    output = store.get(doomed).outputs[0].path
    panel = open_panel(qtbot, store)
    questions: list[str] = []
    panel.confirm = lambda question: questions.append(question) or False
    panel.delete_selected()
    assert output.exists() and shown_ids(panel) == [doomed, keep]
    panel.confirm = lambda question: True
    panel.delete_selected()
    assert f"#{doomed}" in questions[0]
    assert shown_ids(panel) == [keep] and panel.current_id() == keep
    assert not output.exists()
    with pytest.raises(EntryNotFound):
        store.get(doomed)


def test_rerun_and_send_to_emit_the_selected_id(qtbot, store):
    entry_id = run(store)
    panel = open_panel(qtbot, store)
    with qtbot.waitSignal(panel.rerunRequested) as rerun:
        panel.rerun_action.trigger()
    assert rerun.args == [entry_id]
    panel.set_send_targets(["Upscale", "Restore"])
    restore = next(a for a in panel.send_menu.actions() if a.text() == "Restore")
    with qtbot.waitSignal(panel.sendRequested) as send:
        restore.trigger()
    assert send.args == [entry_id, "Restore"]


def test_reveal_opens_the_output_folder(qtbot, store):
    entry_id = run(store)
    panel = open_panel(qtbot, store)
    opened = []
    panel.open_url = opened.append
    panel.reveal_action.trigger()
    assert Path(opened[0].toLocalFile()) == store.get(entry_id).outputs[0].path.parent


def test_export_approved_copies_files_and_summarises(qtbot, store, tmp_path):
    store.set_review(run(store), "approved")
    run(store)
    panel = open_panel(qtbot, store)
    messages = []
    panel.choose_folder = lambda: str(tmp_path / "delivery")
    panel.inform = lambda title, text: messages.append(text)
    panel.export_action.trigger()
    assert len(list((tmp_path / "delivery").glob("*.png"))) == 1
    assert "Exported 1 file(s) from 1 entries" in messages[0]


def test_parent_link_selects_the_parent(qtbot, store, photo):
    parent = run(store, (photo,))
    child = run(store, (store.get(parent).outputs[0].path,))
    panel = open_panel(qtbot, store)
    assert panel.current_id() == child
    assert f'href="entry:{parent}"' in panel.details.text()
    panel.details.linkActivated.emit(f"entry:{parent}")
    assert panel.current_id() == parent


def test_viewer_compares_output_with_its_input(qtbot, store, photo):
    entry_id = run(store, (photo,), scale=2, colour=BLUE)
    panel = open_panel(qtbot, store)
    with qtbot.waitSignal(panel.entryActivated) as activated:
        viewer = panel.open_selected()
    assert activated.args == [entry_id]
    qtbot.addWidget(viewer)
    qtbot.waitExposed(viewer)
    view = viewer.compare_view
    assert view.image().size().toTuple() == (32, 24)
    assert not viewer.side_by_side.isVisibleTo(viewer)
    pixels = view.grab().toImage()
    centre = view.rect().center()
    assert near(pixels.pixelColor(centre + QPoint(-40, 0)), RED)  # before: the input
    assert near(pixels.pixelColor(centre + QPoint(40, 0)), BLUE)  # after: the output


def test_viewer_puts_sibling_models_side_by_side_with_synced_zoom(qtbot, store, photo):
    x2 = run(store, (photo,), model="RealESRGAN_x2", scale=2)
    x4 = run(store, (photo,), model="RealESRGAN_x4", scale=4)
    failed = store.start("upscale", {"model": "broken"}, [photo])
    store.fail(failed, "no")
    panel = open_panel(qtbot, store)
    panel.select_entry(x4)
    viewer = panel.open_selected()
    qtbot.addWidget(viewer)
    viewer.show_side_by_side(True)
    assert [v.property("entry_id") for v in viewer.sibling_views] == [x4, x2]
    assert viewer.sibling_buttons[x4].text().startswith("RealESRGAN_x4")
    assert viewer.sibling_buttons[x2].text().startswith("RealESRGAN_x2")
    viewer.sibling_views[1].set_zoom(2.0)  # the x2 result at 200 %
    assert viewer.sibling_views[0].zoom() == pytest.approx(1.0)  # the x4 one as large on screen


def test_review_in_the_viewer_reaches_the_store_and_the_panel(qtbot, store, photo):
    x2 = run(store, (photo,), model="RealESRGAN_x2", scale=2)
    x4 = run(store, (photo,), model="RealESRGAN_x4", scale=4)
    panel = open_panel(qtbot, store)
    viewer = panel.open_selected()
    qtbot.addWidget(viewer)
    viewer.show_side_by_side(True)
    viewer.sibling_buttons[x2].click()
    with qtbot.waitSignal(panel.reviewChanged) as changed:
        viewer.review_bar.review_actions["approved"].trigger()
    assert changed.args == [x2]
    assert store.get(x2).review == "approved" and store.get(x4).review == "pending"
    assert panel.model.entry_at(panel.model.row_of(x2)).review == "approved"
