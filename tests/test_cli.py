"""`studio` on the command line: batch upscaling with history, review and export, clear failures."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tiny_models import make_compact

from studio.cli import main


@pytest.fixture
def shoot(tmp_path):
    folder = tmp_path / "shoot"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    return folder


@pytest.fixture
def model(tmp_path):
    return make_compact(tmp_path / "compact-x4.safetensors", scale=4)


def test_upscale_a_folder_records_history_and_writes_every_output(tmp_path, shoot, model, capsys):
    out = tmp_path / "out"
    assert main(["upscale", str(shoot), "-o", str(out), "--model", str(model)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["a_x4.png", "b_x4.png"]
    assert Image.open(out / "a_x4.png").size == (96, 80)
    capsys.readouterr()
    assert main(["history", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["status"] for r in rows] == ["done", "done"]
    assert rows[0]["model"] == "compact-x4"
    assert rows[0]["request"]["model_path"] == str(model.resolve())


def test_custom_scale_format_and_passes(tmp_path, shoot, model, capsys):
    out = tmp_path / "out"
    args = ["upscale", str(shoot / "a.png"), "-o", str(out), "--model", str(model)]
    options = ["--scale", "2", "--format", "jpeg", "--quality", "80", "--ensemble", "4"]
    assert main([*args, *options]) == 0
    assert Image.open(out / "a_x2.jpg").size == (48, 40)
    capsys.readouterr()
    assert main(["history", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["request"]["ensemble"] == 4


def test_outputs_never_overwrite_existing_files(tmp_path, shoot, model):
    out = tmp_path / "out"
    args = ["upscale", str(shoot / "a.png"), "-o", str(out), "--model", str(model)]
    assert main(args) == 0
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_x4-1.png", "a_x4.png"]


def test_a_bad_model_fails_once_with_a_one_line_reason(tmp_path, shoot, capsys):
    bogus = tmp_path / "random.pth"
    bogus.write_bytes(np.random.default_rng(0).bytes(4096))
    code = main(["upscale", str(shoot), "-o", str(tmp_path / "out"), "--model", str(bogus)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("studio: ") and "random.pth" in err[0]


def test_a_broken_image_fails_but_the_rest_of_the_batch_runs(tmp_path, shoot, model, capsys):
    (shoot / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    out = tmp_path / "out"
    code = main(["upscale", str(shoot), "-o", str(out), "--model", str(model)])
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a_x4.png", "b_x4.png"]
    assert "c.png" in capsys.readouterr().err
    capsys.readouterr()
    main(["history", "list", "--json"])
    statuses = sorted(json.loads(line)["status"] for line in capsys.readouterr().out.splitlines())
    assert statuses == ["done", "done", "failed"]


def test_missing_input_is_reported(tmp_path, model, capsys):
    code = main(["upscale", str(tmp_path / "nope.png"), "-o", str(tmp_path), "--model", str(model)])
    assert code == 1
    assert "nope.png" in capsys.readouterr().err


def test_review_and_export_approved(tmp_path, shoot, model, capsys):
    main(["upscale", str(shoot), "-o", str(tmp_path / "out"), "--model", str(model)])
    capsys.readouterr()
    main(["history", "list", "--json"])
    first = json.loads(capsys.readouterr().out.splitlines()[0])["id"]
    assert (
        main(["history", "review", str(first), "--approve", "--rating", "4", "--note", "ok"]) == 0
    )
    capsys.readouterr()
    assert main(["history", "list", "--json", "--state", "approved"]) == 0
    approved = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(a["id"], a["rating"], a["note"]) for a in approved] == [(first, 4, "ok")]
    export = tmp_path / "export"
    assert main(["history", "export", "--approved", str(export)]) == 0
    names = sorted(p.name for p in export.iterdir())
    assert "audit.json" in names and "audit.csv" in names
    assert len([n for n in names if n.endswith(".png")]) == 1


def test_the_installed_command_runs_headless(tmp_path, shoot, model):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "studio",
            "upscale",
            str(shoot / "a.png"),
            "-o",
            str(tmp_path / "o"),
            "--model",
            str(model),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o" / "a_x4.png").is_file()
    assert "compact-x4" in result.stderr


def test_without_a_model_the_built_in_upscaler_runs_and_is_named(tmp_path, shoot, capsys):
    out = tmp_path / "out"
    assert main(["upscale", str(shoot / "a.png"), "-o", str(out)]) == 0
    assert Image.open(out / "a_x4.png").size == (96, 80)
    assert "studio-compact-x4" in capsys.readouterr().err
    assert main(["upscale", str(shoot / "a.png"), "-o", str(out), "--scale", "2"]) == 0
    assert "studio-compact-x2" in capsys.readouterr().err
    assert Image.open(out / "a_x2.png").size == (48, 40)
