"""`studio restore` on the command line: outputs, extras, history, and clear refusals."""

import json

import numpy as np
import pytest
from PIL import Image
from tiny_models import make_restore_vae

from studio.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def scans(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for name in ("grandma.png", "wedding.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 52, 3), np.uint8)).save(folder / name)
    return folder


@pytest.fixture
def vae(tmp_path):
    return make_restore_vae(tmp_path / "my-vae.safetensors")


def test_restore_a_folder_writes_photos_maps_and_history(tmp_path, scans, vae, capsys):
    out = tmp_path / "out"
    args = ["restore", str(scans), "-o", str(out), "--model", str(vae), "--scratches"]
    options = ["--variations", "2", "--seed", "5", "--strength", "0.8", "--ensemble", "2"]
    assert main([*args, *options]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(
        f"{stem}_{role}.png"
        for stem in ("grandma", "wedding")
        for role in ("restore", "variation-1", "uncertainty", "damage-mask")
    )
    assert Image.open(out / "grandma_restore.png").size == (52, 40)
    assert Image.open(out / "grandma_uncertainty.png").mode == "L"
    capsys.readouterr()
    assert main(["history", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["tool"] for r in rows] == ["restore", "restore"]
    assert rows[0]["request"]["seed"] == 5
    assert rows[0]["request"]["strength"] == 0.8
    assert rows[0]["request"]["fix_scratches"] is True
    assert rows[0]["request"]["ensemble"] == 2


def test_an_ensemble_of_three_is_a_usage_error(tmp_path, scans, vae, capsys):
    args = ["restore", str(scans), "-o", str(tmp_path / "out"), "--model", str(vae)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--ensemble", "3"])
    assert exit_info.value.code == 2
    assert "invalid choice: 3" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_painted_mask_is_used_and_stored_with_the_entry(tmp_path, scans, vae, capsys):
    mask = np.zeros((40, 52), np.uint8)
    mask[10:14, :] = 255
    mask_path = tmp_path / "mask.png"
    Image.fromarray(mask).save(mask_path)
    out = tmp_path / "out"
    photo = scans / "grandma.png"
    args = ["restore", str(photo), "-o", str(out), "--model", str(vae), "--scratches"]
    assert main([*args, "--mask", str(mask_path)]) == 0
    used = np.asarray(Image.open(out / "grandma_damage-mask.png"))
    np.testing.assert_array_equal(used > 127, mask > 127)
    capsys.readouterr()
    assert main(["history", "list", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["request"]["mask_path"] == str(mask_path.resolve())


def test_a_mask_needs_scratches_and_one_input(tmp_path, scans, vae, capsys):
    mask = tmp_path / "mask.png"
    Image.fromarray(np.zeros((40, 52), np.uint8)).save(mask)
    out = str(tmp_path / "out")
    assert main(["restore", str(scans), "-o", out, "--model", str(vae), "--mask", str(mask)]) == 1
    assert "needs --scratches" in capsys.readouterr().err
    args = ["restore", str(scans), "-o", out, "--model", str(vae), "--scratches"]
    assert main([*args, "--mask", str(mask)]) == 1
    assert "exactly one input" in capsys.readouterr().err


def test_an_upscaler_as_restorer_fails_with_a_one_line_reason(tmp_path, scans, capsys):
    from tiny_models import make_compact

    upscaler = make_compact(tmp_path / "x4.safetensors", scale=4)
    out = str(tmp_path / "out")
    assert main(["restore", str(scans), "-o", out, "--model", str(upscaler)]) == 1
    err = capsys.readouterr().err
    assert "studio upscale" in err and err.count("\n") == 1
