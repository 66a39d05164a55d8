"""The review history store: what it records, what it keeps on disk, how it survives crashes."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.app.history import (
    INTERRUPTED,
    EntryNotFound,
    EntryNotRunning,
    HistoryError,
    HistoryStore,
    Review,
    Status,
)
from studio.app.history_files import temp_path_for
from studio.app.history_schema import MIGRATIONS, SchemaTooNew, migrate, schema_version

REPO = Path(__file__).resolve().parent.parent
WRITER = Path(__file__).resolve().parent / "history_writer.py"


@pytest.fixture
def store():
    history = HistoryStore.open_default()
    yield history
    history.close()


def make_image(path: Path, size=(32, 24), color=(200, 30, 30), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def write_output(store: HistoryStore, entry_id: int, image: Image.Image, n: int = 0) -> Path:
    """What an engine does: write atomically at the place the history chose."""
    path = store.output_path(entry_id, n, ".png")
    temp = temp_path_for(path)
    image.save(temp, format="PNG")
    os.replace(temp, path)
    return path


def run_once(store: HistoryStore, tool="upscale", request=None, inputs=(), size=(40, 30), **facts):
    entry_id = store.start(tool, request or {"scale": 2}, inputs)
    output = write_output(store, entry_id, Image.new("RGB", size, (10, entry_id % 250, 90)))
    return store.complete(entry_id, [output], **facts)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


# -- inputs and lineage ---------------------------------------------------------------------------


def test_the_same_input_bytes_are_stored_once(store, tmp_path):
    photo = make_image(tmp_path / "photo.png")
    copy = tmp_path / "elsewhere" / "same-photo.png"
    copy.parent.mkdir()
    copy.write_bytes(photo.read_bytes())

    first = store.get(store.start("upscale", {}, [photo]))
    second = store.get(store.start("restore", {}, [copy]))

    assert first.inputs[0].path == second.inputs[0].path
    assert first.inputs[0].sha256 == sha256(photo)
    assert second.inputs[0].original_name == "same-photo.png"
    assert len(files_under(store.data_dir / "inputs")) == 1
    blob = first.inputs[0].path
    assert blob.relative_to(store.data_dir).as_posix() == (
        f"inputs/{sha256(photo)[:2]}/{sha256(photo)}.png"
    )


def test_an_input_that_is_an_earlier_output_makes_that_run_its_parent(store, tmp_path):
    generated = run_once(store, tool="generate")
    upscale = store.get(store.start("upscale", {}, [generated.outputs[0].path]))
    unrelated = store.get(store.start("upscale", {}, [make_image(tmp_path / "photo.png")]))
    chosen = store.get(store.start("restore", {}, [], parent_id=unrelated.id))

    assert upscale.parent_id == generated.id
    assert unrelated.parent_id is None
    assert chosen.parent_id == unrelated.id
    with pytest.raises(EntryNotFound):
        store.start("restore", {}, [], parent_id=999)


def test_deleting_a_parent_keeps_the_child_without_the_link(store):
    parent = run_once(store, tool="generate")
    child = run_once(store, inputs=[parent.outputs[0].path])
    assert child.parent_id == parent.id

    store.delete(parent.id)

    assert store.get(child.id).parent_id is None
    assert child.inputs[0].path.is_file()


def test_siblings_are_the_runs_on_the_same_first_input(store, tmp_path):
    photo = make_image(tmp_path / "photo.png")
    other = make_image(tmp_path / "other.png", color=(0, 0, 255))
    model_a = store.start("upscale", {"model": "a"}, [photo])
    model_b = store.start("upscale", {"model": "b"}, [photo, other])
    store.start("upscale", {"model": "a"}, [other, photo])
    text_only = store.start("generate", {"prompt": "cat"})

    assert [entry.id for entry in store.siblings(model_a)] == [model_b, model_a]
    assert store.siblings(text_only) == []


# -- completing, failing, cancelling --------------------------------------------------------------


def test_complete_records_hash_size_dimensions_and_thumbnail(store, tmp_path):
    entry_id = store.start("upscale", {"scale": 4}, [make_image(tmp_path / "in.png")])
    output = write_output(store, entry_id, Image.new("RGB", (1024, 512), (0, 128, 255)))

    entry = store.complete(
        entry_id,
        [output],
        model_name="RealESRGAN_x4plus",
        model_sha256="ab" * 32,
        seed=7,
        device="cuda",
        dtype="float16",
        duration_s=1.5,
        facts={"tiles": 4},
    )

    assert entry.status is Status.DONE
    assert (entry.model_name, entry.seed, entry.device, entry.dtype) == (
        "RealESRGAN_x4plus",
        7,
        "cuda",
        "float16",
    )
    assert entry.duration_s == 1.5 and entry.facts == {"tiles": 4}
    assert entry.finished_at >= entry.created_at
    (recorded,) = entry.outputs
    assert recorded.path == output
    assert recorded.path.relative_to(store.data_dir).parts[:2] == (
        "outputs",
        entry.created_at.strftime("%Y-%m"),
    )
    assert (recorded.sha256, recorded.size) == (sha256(output), output.stat().st_size)
    assert (recorded.width, recorded.height) == (1024, 512)
    assert recorded.thumb == store.data_dir / "thumbs" / f"{entry_id}-0.jpg"
    with Image.open(recorded.thumb) as thumb:
        assert (thumb.format, thumb.size, thumb.mode) == ("JPEG", (256, 128), "RGB")
        assert thumb.getpixel((128, 64)) == pytest.approx((0, 128, 255), abs=6)


def test_thumbnails_of_16_bit_and_transparent_outputs_are_viewable(store):
    entry_id = store.start("restore", {})
    gray = Image.fromarray(np.full((300, 200), 40000, dtype=np.uint16))
    assert gray.mode == "I;16"
    deep = write_output(store, entry_id, gray, 0)
    clear = write_output(store, entry_id, Image.new("RGBA", (64, 64), (255, 0, 0, 0)), 1)

    deep_out, clear_out = store.complete(entry_id, [deep, clear]).outputs

    with Image.open(deep_out.thumb) as thumb:
        assert thumb.size == (171, 256)
        assert thumb.getpixel((80, 120)) == pytest.approx((156, 156, 156), abs=3)  # 40000 / 257
    with Image.open(clear_out.thumb) as thumb:
        colours = {thumb.getpixel((x, y)) for x in range(0, 64, 4) for y in range(0, 64, 4)}
        assert all(abs(r - g) < 8 and abs(g - b) < 8 and r > 120 for r, g, b in colours)
        assert len({r // 20 for r, _, _ in colours}) == 2  # a checkerboard, not the hidden red


def test_an_output_that_is_not_an_image_gets_no_dimensions_or_thumbnail(store):
    entry_id = store.start("grade", {"strength": 1.0})
    lut = store.output_path(entry_id, 0, ".cube")
    lut.write_text("LUT_3D_SIZE 2\n" + "0 0 0\n" * 8)

    (output,) = store.complete(entry_id, [lut]).outputs

    assert (output.width, output.height, output.thumb) == (None, None, None)
    assert output.sha256 == sha256(lut)


def test_complete_refuses_outputs_not_written_where_the_history_said(store, tmp_path):
    entry_id = store.start("upscale", {})
    stray = make_image(tmp_path / "stray.png")
    with pytest.raises(ValueError, match="output_path"):
        store.complete(entry_id, [stray])
    with pytest.raises(FileNotFoundError):
        store.complete(entry_id, [store.output_path(entry_id, 0, ".png")])

    assert store.get(entry_id).status is Status.RUNNING
    assert store.get(entry_id).outputs == ()
    assert files_under(store.data_dir / "thumbs") == set()


def test_cancel_and_fail_leave_no_output_files(store):
    cancelled = store.start("upscale", {})
    written = write_output(store, cancelled, Image.new("RGB", (8, 8)))
    half_written = temp_path_for(store.output_path(cancelled, 1, ".png"))
    half_written.write_bytes(b"\x89PNG half")
    failed = store.start("upscale", {})
    write_output(store, failed, Image.new("RGB", (8, 8)))

    store.cancel(cancelled)
    store.fail(failed, "CUDA out of memory; try smaller tiles", device="cuda", tiles=8)

    assert store.get(cancelled).status is Status.CANCELLED
    entry = store.get(failed)
    assert (entry.status, entry.error, entry.device) == (
        Status.FAILED,
        "CUDA out of memory; try smaller tiles",
        "cuda",
    )
    assert entry.facts == {"tiles": 8} and entry.duration_s is not None
    assert not written.exists() and not half_written.exists()
    assert files_under(store.data_dir / "outputs") == set()
    with pytest.raises(EntryNotRunning):
        store.cancel(cancelled)
    with pytest.raises(EntryNotRunning):
        store.complete(failed, [])


def test_closing_the_store_fails_its_unfinished_runs(tmp_path):
    history = HistoryStore(tmp_path / "data")
    entry_id = history.start("upscale", {})
    output = write_output(history, entry_id, Image.new("RGB", (8, 8)))
    history.close()

    with HistoryStore(tmp_path / "data") as reopened:
        entry = reopened.get(entry_id)
    assert (entry.status, entry.error) == (Status.FAILED, INTERRUPTED)
    assert not output.exists()
    with pytest.raises(HistoryError, match="closed"):
        history.get(entry_id)


# -- reading --------------------------------------------------------------------------------------


def test_query_filters_searches_and_pages_newest_first(store):
    cat = run_once(store, tool="generate", request={"prompt": "A Café cat"}, model_name="SD 1.5")
    dog = run_once(store, tool="generate", request={"prompt": "a dog"}, model_name="SDXL")
    big = run_once(store, tool="upscale", request={"scale": 4}, model_name="RealESRGAN")
    failed = store.start("restore", {"strength": 0.5})
    store.fail(failed, "broken")
    store.set_review(dog.id, Review.APPROVED)
    store.set_note(big.id, "Client liked this one")

    def ids(**filters):
        return [entry.id for entry in store.query(**filters)]

    assert ids() == [failed, big.id, dog.id, cat.id]
    assert ids(tool="generate") == [dog.id, cat.id]
    assert ids(review="approved") == [dog.id]
    assert ids(review=Review.PENDING, status=Status.DONE) == [big.id, cat.id]
    assert ids(status="failed") == [failed]
    assert ids(text="CAFÉ") == [cat.id]  # parameters, Unicode case folding
    assert ids(text="sdxl") == [dog.id]  # model name
    assert ids(text="client LIKED") == [big.id]  # note
    assert ids(text="restore") == [failed]  # tool
    assert ids(text="nothing like it") == []
    assert ids(offset=1, limit=2) == [big.id, dog.id]
    assert store.count() == 4 and store.count(tool="generate", text="dog") == 1
    page = store.query(limit=1)[0]
    assert page.inputs == () and page.request == {"strength": 0.5}
    with pytest.raises(ValueError):
        store.query(review="maybe")


def test_a_10000_entry_history_pages_correctly_and_quickly(store):
    with store.transaction():  # one commit for the lot, through the public API
        for i in range(10_000):
            entry_id = store.start("generate" if i % 2 else "upscale", {"i": i, "tag": f"t{i}"})
            if i % 10 == 0:
                store.set_review(entry_id, Review.REJECTED)
    newest = store.query(limit=1)[0].id

    seen: list[int] = []
    for offset in range(0, 10_000, 500):
        seen.extend(entry.id for entry in store.query(offset=offset, limit=500))
    assert seen == list(range(newest, newest - 10_000, -1))

    started = time.perf_counter()
    last_page = store.query(offset=9_940, limit=60)
    rejected = store.query(review="rejected", offset=10, limit=3)
    upscales = store.count(tool="upscale")
    found = store.query(text="T9999")
    elapsed = time.perf_counter() - started

    assert [entry.request["i"] for entry in last_page] == list(range(59, -1, -1))
    assert [entry.request["i"] for entry in rejected] == [9890, 9880, 9870]
    assert store.count(review="rejected") == 1000 and upscales == 5000
    assert [entry.request["i"] for entry in found] == [9999]
    assert elapsed < 1.0, f"four queries on a 10,000-entry history took {elapsed:.2f} s"


def test_review_rating_and_note_persist_across_reopening(tmp_path):
    with HistoryStore(tmp_path / "data") as history:
        entry = run_once(history)
        history.set_review(entry.id, "approved")
        history.set_rating(entry.id, 4)
        history.set_note(entry.id, "keep — the sky is right")

    with HistoryStore(tmp_path / "data") as history:
        again = history.get(entry.id)
    assert (again.review, again.rating, again.note) == (
        Review.APPROVED,
        4,
        "keep — the sky is right",
    )
    assert again.outputs == entry.outputs and again.inputs == entry.inputs


@pytest.mark.parametrize("stars", [-1, 6, 2.5, True, "3"])
def test_a_rating_outside_0_to_5_stars_is_rejected(store, stars):
    entry = run_once(store)
    with pytest.raises(ValueError, match="0 to 5"):
        store.set_rating(entry.id, stars)
    assert store.get(entry.id).rating == 0


def test_only_a_finished_run_can_be_approved(store):
    running = store.start("upscale", {})
    with pytest.raises(HistoryError, match="only a finished run"):
        store.set_review(running, "approved")
    store.set_review(running, "rejected")
    with pytest.raises(EntryNotFound):
        store.set_note(12345, "gone")


# -- deleting -------------------------------------------------------------------------------------


def test_delete_removes_outputs_thumbnails_and_input_copies_no_one_else_uses(store, tmp_path):
    shared = make_image(tmp_path / "shared.png")
    own = make_image(tmp_path / "own.png", color=(0, 255, 0))
    doomed = run_once(store, inputs=[shared, own])
    keeper = run_once(store, inputs=[shared])
    shared_blob, own_blob = (item.path for item in doomed.inputs)

    store.delete(doomed.id)

    with pytest.raises(EntryNotFound):
        store.get(doomed.id)
    assert not doomed.outputs[0].path.exists() and not doomed.outputs[0].thumb.exists()
    assert not own_blob.exists()
    assert shared_blob.exists() and keeper.inputs[0].path == shared_blob
    assert keeper.outputs[0].path.exists()
    with pytest.raises(EntryNotRunning):
        store.delete(store.start("upscale", {}))


def test_a_rolled_back_transaction_keeps_rows_and_files(store, tmp_path):
    entry = run_once(store, inputs=[make_image(tmp_path / "in.png")])
    with pytest.raises(RuntimeError), store.transaction():
        store.delete(entry.id)
        store.start("upscale", {"never": "recorded"})
        raise RuntimeError("changed my mind")

    store.set_note(entry.id, "still here")  # a later commit must not run the dropped cleanup
    assert store.count() == 1
    assert store.get(entry.id).outputs[0].path.exists()
    assert store.get(entry.id).inputs == entry.inputs and entry.inputs[0].path.exists()


# -- schema ---------------------------------------------------------------------------------------


def test_a_new_store_is_at_the_latest_schema_and_reopening_changes_nothing(tmp_path):
    HistoryStore(tmp_path / "data").close()
    database = tmp_path / "data" / "history.sqlite"
    with sqlite3.connect(database) as db:
        schema = db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
        assert schema_version(db) == len(MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()

    HistoryStore(tmp_path / "data").close()
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema
        assert schema_version(db) == len(MIGRATIONS)
    db.close()


def test_an_older_store_is_migrated_and_keeps_its_data(tmp_path):
    with HistoryStore(tmp_path / "data") as history:
        entry = run_once(history)
    later = "ALTER TABLE entries ADD COLUMN colour_space TEXT NOT NULL DEFAULT 'sRGB';"
    db = sqlite3.connect(tmp_path / "data" / "history.sqlite", isolation_level=None)

    found = migrate(db, (*MIGRATIONS, later))

    assert found == len(MIGRATIONS) and schema_version(db) == len(MIGRATIONS) + 1
    row = db.execute("SELECT id, colour_space FROM entries").fetchone()
    assert row == (entry.id, "sRGB")
    assert migrate(db, (*MIGRATIONS, later)) == len(MIGRATIONS) + 1  # applied once
    db.close()


def test_a_failing_migration_leaves_the_previous_version_intact(tmp_path):
    HistoryStore(tmp_path / "data").close()
    db = sqlite3.connect(tmp_path / "data" / "history.sqlite", isolation_level=None)
    broken = "CREATE TABLE half_done (x INTEGER);\nINSERT INTO no_such_table VALUES (1);"

    with pytest.raises(sqlite3.OperationalError):
        migrate(db, (*MIGRATIONS, broken))

    assert schema_version(db) == len(MIGRATIONS)
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert "half_done" not in tables
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    db.close()
    with pytest.raises(SchemaTooNew, match="update Studio"):
        HistoryStore(tmp_path / "data")


# -- export ---------------------------------------------------------------------------------------


def test_export_approved_writes_the_images_and_an_audit_of_only_approved_runs(store, tmp_path):
    photo = make_image(tmp_path / "photo.png")
    approved = run_once(store, request={"scale": 4}, inputs=[photo], model_name="x4", seed=11)
    rejected = run_once(store)
    pending = run_once(store)
    store.set_review(approved.id, "approved")
    store.set_review(rejected.id, "rejected")
    store.set_note(approved.id, 'for the "spring" campaign, 2 variants')

    report = store.export_approved(tmp_path / "out")

    name = f"{approved.id}-upscale-0.png"
    assert report.entry_ids == (approved.id,)
    assert report.files == (tmp_path / "out" / name,)
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(
        [name, "audit.json", "audit.csv"]
    )
    assert (tmp_path / "out" / name).read_bytes() == approved.outputs[0].path.read_bytes()
    (row,) = json.loads(report.audit_json.read_text())["rows"]
    assert row["entry_id"] == approved.id and row["output_file"] == name
    assert row["output_sha256"] == approved.outputs[0].sha256
    assert row["parameters"] == {"scale": 4} and row["model_name"] == "x4" and row["seed"] == 11
    assert row["input_names"] == ["photo.png"] and row["input_sha256"] == [sha256(photo)]
    assert row["review"] == "approved" and row["status"] == "done"
    with report.audit_csv.open(newline="") as file:
        (csv_row,) = list(csv.DictReader(file))
    assert csv_row["note"] == 'for the "spring" campaign, 2 variants'
    assert json.loads(csv_row["parameters"]) == {"scale": 4}
    assert csv_row["output_sha256"] == approved.outputs[0].sha256
    assert csv_row["finished_at"] == approved.finished_at.isoformat()

    subset = store.export_approved(tmp_path / "subset", ids=[pending.id, approved.id])
    assert (subset.entry_ids, subset.skipped) == ((approved.id,), (pending.id,))
    assert not list(tmp_path.glob("**/*.tmp"))


def test_export_refuses_an_output_that_changed_since_it_was_recorded(store, tmp_path):
    entry = run_once(store)
    store.set_review(entry.id, "approved")
    entry.outputs[0].path.write_bytes(b"tampered")

    with pytest.raises(OSError, match="changed since it was recorded"):
        store.export_approved(tmp_path / "out")
    assert not (tmp_path / "out" / "audit.json").exists()


# -- recovery and crashes -------------------------------------------------------------------------


def test_opening_removes_leftover_files_no_row_names(tmp_path):
    with HistoryStore(tmp_path / "data") as history:
        kept = run_once(history, inputs=[make_image(tmp_path / "in.png")])
    data = tmp_path / "data"
    leftovers = [
        data / "outputs" / "2020-01" / "999-0.png",
        data / "outputs" / kept.created_at.strftime("%Y-%m") / f".{kept.id}-1.png.abcd.tmp",
        data / "thumbs" / "999-0.jpg",
        data / "inputs" / "ab" / ("ab" * 32 + ".png"),
        data / "inputs" / "ab" / ".photo.png.1234.tmp",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"left behind")
    kept_files = files_under(data / "outputs") | files_under(data / "thumbs")
    kept_files |= files_under(data / "inputs")

    HistoryStore(data).close()

    assert not any(path.exists() for path in leftovers)
    assert kept_files - set(leftovers) == (
        files_under(data / "outputs") | files_under(data / "thumbs") | files_under(data / "inputs")
    )


def test_two_stores_in_one_process_leave_each_others_runs_alone(tmp_path):
    with HistoryStore(tmp_path / "data") as gui:
        entry_id = gui.start("upscale", {})
        output = write_output(gui, entry_id, Image.new("RGB", (8, 8)))
        with HistoryStore(tmp_path / "data") as cli:
            assert cli.get(entry_id).status is Status.RUNNING
        assert output.exists()
        assert gui.complete(entry_id, [output]).status is Status.DONE


def own_lock_only(data: Path) -> bool:
    """Only the store open in this test process holds a lock; the killed writers' are gone."""
    locks = [path.name for path in (data / "locks").iterdir()]
    return len(locks) == 1 and locks[0].startswith(f"{os.getpid()}-")


class Writer:
    """tests/history_writer.py in its own process, with its progress lines read in a thread."""

    def __init__(self, data_dir: Path, work: Path, *mode: str) -> None:
        paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        self.errors = work / f"writer-{time.monotonic_ns()}.err"
        with self.errors.open("w") as errors:
            self.process = subprocess.Popen(
                [sys.executable, str(WRITER), str(data_dir), str(work), *mode],
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
            )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put("")

    def wait_for(self, phase: str, times: int = 1, timeout: float = 30.0) -> int:
        """The entry id of the `times`-th line starting with `phase`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the writer printed no {phase!r} in {timeout} s") from None
            if not line:
                raise AssertionError(f"the writer exited: {self.errors.read_text()}")
            if line.split()[0] == phase:
                times -= 1
                if times == 0:
                    return int(line.split()[1])

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.reader.join(timeout=10)  # sees end of file now that the process is gone
        self.process.stdout.close()


@pytest.fixture
def work(tmp_path):
    folder = tmp_path / "work"
    for k, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        make_image(folder / f"shared-{k}.png", color=colour)
    return folder


def test_sigkill_at_any_moment_leaves_a_consistent_store(tmp_path, work):
    data = tmp_path / "data"
    # Kill right after a different step each time; the next writer's open recovers the last one.
    for round_, phase in enumerate(["started", "written", "completed", "reviewed", "deleted"]):
        writer = Writer(data, work)
        try:
            writer.wait_for(phase, times=2 + round_)
        finally:
            writer.kill()

    with HistoryStore(data) as history:
        db = sqlite3.connect(data / "history.sqlite")
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        db.close()
        entries = history.query(limit=10_000)
        assert history.count(status="running") == 0
        assert history.count(status="done") >= 5
        assert any(entry.parent_id for entry in entries), "no lineage was exercised"
        named: set[Path] = set()
        for entry in entries:
            for output in entry.outputs:
                assert output.path.stat().st_size == output.size
                assert sha256(output.path) == output.sha256
                assert output.thumb.is_file()
                named |= {output.path, output.thumb}
            for item in entry.inputs:
                assert sha256(item.path) == item.sha256
                named.add(item.path)
        on_disk = set()
        for folder in ("outputs", "thumbs", "inputs"):
            on_disk |= files_under(data / folder)
        assert on_disk == named, "files that no entry names were left behind"
        assert own_lock_only(data)


def test_recovery_leaves_a_live_process_runs_alone_and_fails_them_once_it_is_gone(tmp_path, work):
    data = tmp_path / "data"
    writer = Writer(data, work, "hold")
    try:
        entry_id = writer.wait_for("holding")
        with HistoryStore(data) as history:
            live = history.get(entry_id)
            output = history.data_dir / "outputs" / live.created_at.strftime("%Y-%m")
            output = output / f"{entry_id}-0.png"
            assert live.status is Status.RUNNING
            assert output.exists()
    finally:
        writer.kill()

    with HistoryStore(data) as history:
        dead = history.get(entry_id)
        assert (dead.status, dead.error) == (Status.FAILED, INTERRUPTED)
        assert not output.exists()
        assert own_lock_only(data)


def test_copying_an_input_does_not_hold_the_store(store, tmp_path, monkeypatch):
    """A large input is copied before the write lock: another process's writes go on meanwhile."""
    import studio.app.history as history_module

    photo = make_image(tmp_path / "big.png")
    other = HistoryStore.open_default()  # a second writer, as the CLI beside the window
    wrote_during_copy = []
    real_copy = history_module.copy_hashing

    def copy_while_another_writes(source, folder):
        other_id = other.start("upscale", {"during": "copy"})
        other.cancel(other_id)
        wrote_during_copy.append(other_id)
        return real_copy(source, folder)

    monkeypatch.setattr(history_module, "copy_hashing", copy_while_another_writes)
    try:
        entry_id = store.start("upscale", {"input": str(photo)}, [photo])
    finally:
        other.close()
    assert wrote_during_copy
    stored = store.get(entry_id).inputs[0]
    assert stored.path.read_bytes() == photo.read_bytes()
    leftovers = [p for p in (store.data_dir / "inputs").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_an_input_already_stored_is_not_copied_again(store, tmp_path, monkeypatch):
    import studio.app.history as history_module

    photo = make_image(tmp_path / "photo.png")
    store.start("upscale", {}, [photo])
    copies = []
    real_copy = history_module.copy_hashing
    monkeypatch.setattr(
        history_module, "copy_hashing", lambda s, f: copies.append(s) or real_copy(s, f)
    )
    second = store.start("upscale", {}, [photo])
    assert copies == []
    assert store.get(second).inputs[0].path.is_file()
