"""Crash-test helper: a Studio process that writes to a history store until it is killed.

    python tests/history_writer.py DATA_DIR WORK_DIR          loop forever: run, review, delete
    python tests/history_writer.py DATA_DIR WORK_DIR hold     start one run, write its output, wait

It prints one line per step ("<phase> <entry_id>"), flushed, so the test can kill it right after
a chosen step instead of after a guessed sleep. WORK_DIR holds shared-<k>.png inputs (made by the
test) and receives fresh inputs.
"""

from __future__ import annotations

import io
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from studio.app.history import HistoryStore
from studio.app.history_files import temp_path_for


def say(phase: str, entry_id: int) -> None:
    print(f"{phase} {entry_id}", flush=True)


def png_bytes(rng: random.Random) -> bytes:
    pixels = np.frombuffer(rng.randbytes(24 * 16 * 3), dtype=np.uint8).reshape(16, 24, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_output(store: HistoryStore, entry_id: int, rng: random.Random) -> Path:
    path = store.output_path(entry_id, 0, ".png")
    temp = temp_path_for(path)
    temp.write_bytes(png_bytes(rng))
    os.replace(temp, path)
    return path


def hold(store: HistoryStore, work: Path) -> None:
    entry_id = store.start("hold", {"wait": True}, [work / "shared-0.png"])
    write_output(store, entry_id, random.Random(0))
    say("holding", entry_id)
    while True:
        time.sleep(60)


def loop(store: HistoryStore, work: Path) -> None:
    rng = random.Random(os.getpid())
    shared = sorted(work.glob("shared-*.png"))
    previous: int | None = None
    previous_output: Path | None = None
    for i in range(10**9):
        if i % 5 == 1 and previous_output is not None and previous_output.exists():
            source = previous_output  # an upscale of the last result: lineage
        elif i % 2 == 0:
            source = shared[i % len(shared)]  # the same bytes again: deduplication
        else:
            source = work / f"fresh-{os.getpid()}-{i}.png"
            source.write_bytes(png_bytes(rng))
        entry_id = store.start("writer", {"i": i, "prompt": "crash test"}, [source])
        say("started", entry_id)
        output = write_output(store, entry_id, rng)
        say("written", entry_id)
        if i % 7 == 3:
            store.cancel(entry_id)
            say("cancelled", entry_id)
        elif i % 7 == 5:
            store.fail(entry_id, "synthetic failure", device="cpu")
            say("failed", entry_id)
        else:
            store.complete(entry_id, [output], model_name="writer-model", seed=i, device="cpu")
            say("completed", entry_id)
            store.set_review(entry_id, "approved" if i % 3 else "rejected")
            store.set_rating(entry_id, i % 6)
            store.set_note(entry_id, f"note {i}")
            say("reviewed", entry_id)
            previous_output = output
        if i % 4 == 2 and previous is not None:
            store.delete(previous)
            say("deleted", previous)
            previous_output = None
        previous = entry_id


def main() -> None:
    data_dir, work = Path(sys.argv[1]), Path(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "loop"
    store = HistoryStore(data_dir)
    (hold if mode == "hold" else loop)(store, work)


if __name__ == "__main__":
    main()
