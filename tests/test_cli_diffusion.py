"""`studio generate` and `studio inpaint` on tiny pipelines: files, history, metadata, failures."""

import json

import numpy as np
import pytest
from PIL import Image

from studio.cli import main
from studio.imaging import read_provenance

pytestmark = pytest.mark.usefixtures("one_torch_thread", "hf_cache")


def history_rows(capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["history", "list", "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_generate_writes_one_entry_per_image_with_a1111_parameters(
    tmp_path, diffusion_models, capsys
):
    out = tmp_path / "out"
    args = ["generate", "--model", str(diffusion_models["folder"]), "--prompt", "a red cat"]
    args += ["--negative", "blurry", "--steps", "2", "--seed", "41", "--count", "2"]
    args += ["--scheduler", "euler_a", "-o", str(out)]
    assert main(args) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a-red-cat_41.png", "a-red-cat_42.png"]
    assert Image.open(out / names[0]).size == (64, 64)  # the tiny family's native size
    rows = history_rows(capsys)
    assert sorted(r["seed"] for r in rows) == [41, 42]
    assert all(r["tool"] == "generate" and r["status"] == "done" for r in rows)
    text = Image.open(out / "a-red-cat_41.png").text["parameters"]
    assert text.startswith("a red cat\nNegative prompt: blurry\nSteps: 2, Sampler: Euler a, ")
    assert "Seed: 41, Size: 64x64, Model hash: " in text and "Model: tiny-sd" in text
    provenance = read_provenance(out / "a-red-cat_41.png")
    assert provenance["digital_source_type"].endswith("/trainedAlgorithmicMedia")


def test_generate_reproduces_with_the_same_seed(tmp_path, diffusion_models):
    base = ["generate", "--model", str(diffusion_models["file"]), "--prompt", "hills"]
    base += ["--steps", "2", "--seed", "9"]
    assert main([*base, "-o", str(tmp_path / "a")]) == 0
    assert main([*base, "-o", str(tmp_path / "b")]) == 0
    first = np.asarray(Image.open(tmp_path / "a" / "hills_9.png"))
    second = np.asarray(Image.open(tmp_path / "b" / "hills_9.png"))
    assert np.array_equal(first, second)


def test_generate_rounds_sizes_and_warns_about_long_prompts(tmp_path, diffusion_models, capsys):
    args = ["generate", "--model", str(diffusion_models["folder"]), "--prompt", "cat " * 100]
    args += ["--steps", "1", "--size", "70x60", "--seed", "1", "-o", str(tmp_path / "o")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "size 70x60 rounded to 72x64" in err
    assert "warning: the prompt is" in err and "ignored the rest" in err
    (image,) = (tmp_path / "o").iterdir()
    assert Image.open(image).size == (72, 64)


def test_inpaint_keeps_unmasked_pixels_and_records_both_inputs(tmp_path, diffusion_models, capsys):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    mask = np.zeros((90, 120), np.uint8)
    mask[30:50, 60:90] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    args = ["inpaint", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png")]
    args += ["--model", str(diffusion_models["inpaint_folder"]), "--prompt", "a patch"]
    args += ["--steps", "2", "--seed", "3", "--only-masked", "16", "-o", str(tmp_path / "out")]
    assert main(args) == 0
    out = np.asarray(Image.open(tmp_path / "out" / "photo_inpaint.png"))
    assert out.shape == photo.shape
    assert np.array_equal(out[mask == 0], photo[mask == 0])
    (row,) = history_rows(capsys)
    assert row["tool"] == "inpaint" and len(row["inputs"]) == 2
    assert row["request"]["strength"] == 1.0  # a dedicated inpainting model repaints fully
    provenance = read_provenance(tmp_path / "out" / "photo_inpaint.png")
    assert provenance["digital_source_type"].endswith("/compositeWithTrainedAlgorithmicMedia")


def test_diffusion_failures_are_one_line_reasons(tmp_path, diffusion_models, capsys):
    not_a_model = tmp_path / "folder"
    not_a_model.mkdir()
    args = ["generate", "--model", str(not_a_model), "--prompt", "x", "-o", str(tmp_path / "o")]
    assert main(args) == 1
    assert "is not a diffusers model folder" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 100)
    args = ["generate", "--model", str(corrupt), "--prompt", "x", "-o", str(tmp_path / "o")]
    assert main(args) == 1
    assert "incomplete or damaged" in capsys.readouterr().err
    Image.new("RGB", (40, 30)).save(tmp_path / "photo.png")
    Image.new("L", (20, 30)).save(tmp_path / "mask.png")
    args = ["inpaint", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png")]
    args += ["--model", str(diffusion_models["folder"]), "--prompt", "x", "--steps", "2"]
    assert main([*args, "-o", str(tmp_path / "o")]) == 1
    assert "the mask is 20x30 but the image is 40x30" in capsys.readouterr().err
