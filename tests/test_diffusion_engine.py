"""The diffusion engine on tiny random-weight SD pipelines, loaded the way real models are."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.engines import diffusion
from studio.engines.base import Cancelled, EngineError
from studio.engines.diffusion import GenerateRequest, InpaintRequest
from studio.errors import UserError
from studio.imaging import Picture, load_picture, save_picture
from studio.models.cache import ModelCache
from studio.models.diffusion import DiffusionModelError, Family, family_of_folder, resolve_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def models(diffusion_models, hf_cache) -> dict[str, Path]:
    return diffusion_models


def generate(model: Path | str, **overrides) -> GenerateRequest:
    values = dict(model=str(model), prompt="a red cat", steps=2, width=64, height=64, seed=7)
    values.update(overrides)
    return GenerateRequest(**values)


def pixels_of(result) -> np.ndarray:
    return result.pictures[0].pixels


def test_same_request_and_seed_give_identical_pixels(models):
    cache = ModelCache()
    first = diffusion.run(generate(models["folder"]), cache=cache)
    again = diffusion.run(generate(models["folder"]), cache=cache)
    other_seed = diffusion.run(generate(models["folder"], seed=8), cache=cache)
    assert pixels_of(first).shape == (64, 64, 3)
    assert np.array_equal(pixels_of(first), pixels_of(again))
    assert not np.array_equal(pixels_of(first), pixels_of(other_seed))
    assert first.facts.seed == 7 and first.facts.model_name == "tiny-sd"
    assert first.facts.extra["family"] == "SD 1.x"


def test_single_file_checkpoints_load_like_the_folder(models):
    """A .safetensors and a pickled .ckpt (read with weights_only) of the same weights."""
    folder = pixels_of(diffusion.run(generate(models["folder"]), cache=ModelCache()))
    for key in ("file", "ckpt"):
        single = pixels_of(diffusion.run(generate(models[key]), cache=ModelCache()))
        assert np.array_equal(folder, single), key


def test_every_scheduler_runs_and_is_reproducible(models):
    cache = ModelCache()
    for name in ("euler", "euler_a", "dpmpp_2m_karras", "dpmpp_2m", "ddim", "unipc"):
        first = pixels_of(diffusion.run(generate(models["folder"], scheduler=name), cache=cache))
        second = pixels_of(diffusion.run(generate(models["folder"], scheduler=name), cache=cache))
        assert np.array_equal(first, second), name
        assert np.isfinite(first).all()


def test_sdxl_models_generate_and_inpaint(models, tmp_path):
    """The SDXL family: two text encoders, its own pipelines and preview factors."""
    xl = models["xl_folder"]
    assert family_of_folder(xl).name == "sdxl"
    cache = ModelCache()
    first = diffusion.run(generate(xl, scheduler="dpmpp_2m_karras"), cache=cache)
    again = diffusion.run(generate(xl, scheduler="dpmpp_2m_karras"), cache=cache)
    assert first.facts.extra["family"] == "SDXL"
    assert np.array_equal(pixels_of(first), pixels_of(again))
    image = photo(tmp_path / "photo.png", 96, 64)
    mask = mask_file(tmp_path / "mask.png", 96, 64, (40, 20, 60, 40))
    result = diffusion.run(inpaint(image, mask, xl, strength=0.9), cache=cache)
    outside = np.ones((64, 96), bool)
    outside[20:40, 40:60] = False
    assert np.array_equal(pixels_of(result)[outside], load_picture(image).pixels[outside])
    assert len(cache) == 1


def test_memory_savers_follow_the_setting_and_free_memory():
    from studio.models.diffusion import choose_memory_mode

    gib = 1024**3
    assert choose_memory_mode("auto", "cpu", 0, 4 * gib) == "off"
    assert choose_memory_mode("auto", "cuda", 24 * gib, 4 * gib) == "off"
    assert choose_memory_mode("auto", "cuda", 6 * gib, 4 * gib) == "balanced"
    assert choose_memory_mode("auto", "cuda", 3 * gib, 4 * gib) == "low"
    assert choose_memory_mode("auto", "mps", 0, 4 * gib) == "balanced"
    assert choose_memory_mode("low", "cpu", 0, 4 * gib) == "balanced"  # nowhere to offload to
    assert choose_memory_mode("off", "cuda", 1, 4 * gib) == "off"
    with pytest.raises(DiffusionModelError, match="unknown memory mode"):
        choose_memory_mode("tiny", "cuda", 0, 0)


def test_balanced_memory_mode_runs_and_is_recorded(models):
    plain = diffusion.run(generate(models["folder"]), cache=ModelCache())
    saving = diffusion.run(generate(models["folder"], memory="balanced"), cache=ModelCache())
    assert saving.facts.extra["memory"] == "balanced"
    assert np.abs(pixels_of(plain) - pixels_of(saving)).max() <= 2 / 255


def test_rerun_from_the_history_gives_identical_pixels(models, tmp_path):
    from studio.app.context import AppContext
    from studio.app.runs import execute, request_from_entry

    ctx = AppContext.open()
    try:
        image = photo(tmp_path / "photo.png", 80, 64)
        mask = mask_file(tmp_path / "mask.png", 80, 64, (20, 20, 40, 40))
        for request in (generate(models["folder"]), inpaint(image, mask, models["folder"])):
            entry = execute(ctx, request, progress=lambda *a: None, cancelled=lambda: False)
            if request.tool == "inpaint":
                image.unlink()  # re-run reads the history's copies of the inputs
            rerun = execute(
                ctx, request_from_entry(entry), progress=lambda *a: None, cancelled=lambda: False
            )
            first = np.asarray(Image.open(entry.outputs[0].path))
            second = np.asarray(Image.open(rerun.outputs[0].path))
            assert np.array_equal(first, second), request.tool
            assert Image.open(entry.outputs[0].path).text["parameters"].startswith("a ")
    finally:
        ctx.close()


def test_every_step_reports_progress_with_a_preview(models):
    seen = []
    diffusion.run(
        generate(models["folder"], steps=3),
        progress=lambda fraction, message, preview=None: seen.append((fraction, message, preview)),
        cache=ModelCache(),
    )
    steps = [(f, m, p) for f, m, p in seen if m.startswith("Step")]
    assert [m for _, m, _ in steps] == ["Step 1/3", "Step 2/3", "Step 3/3"]
    assert all(p.dtype == np.uint8 and p.shape == (32, 32, 3) for _, _, p in steps)
    fractions = [f for f, _, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] >= 0 and fractions[-1] <= 1


def test_cancel_stops_within_a_step_and_returns_nothing(models):
    steps = []

    def progress(fraction, message, preview=None):
        if message.startswith("Step"):
            steps.append(message)

    with pytest.raises(Cancelled):
        diffusion.run(
            generate(models["folder"], steps=20),
            progress=progress,
            cancelled=lambda: len(steps) >= 2,
            cache=ModelCache(),
        )
    assert len(steps) == 2  # the step that saw the cancel was the last one


def test_a_prompt_longer_than_the_tokenizer_reads_is_reported(models):
    result = diffusion.run(generate(models["folder"], prompt="cat " * 120), cache=ModelCache())
    assert len(result.warnings) == 1
    assert "ignored the rest" in result.warnings[0]
    assert result.facts.extra["warnings"] == result.warnings


def test_sizes_round_to_multiples_of_8_with_a_note():
    assert diffusion.rounded_size(512, 512) == (512, 512, None)
    width, height, note = diffusion.rounded_size(515, 300)
    assert (width, height) == (512, 304)
    assert "515x300" in note and "512x304" in note
    with pytest.raises(EngineError, match="multiple of 8"):
        generate("x/y", width=515)


def test_family_detection_and_what_the_ui_adapts_to(models):
    tiny = family_of_folder(models["folder"])
    assert (tiny.name, tiny.variant, tiny.inpainting, tiny.native) == ("sd1", "base", False, 64)
    assert family_of_folder(models["inpaint_folder"]).inpainting
    turbo = family_of_folder(models["folder"], name_hint="stabilityai/sd-turbo")
    assert turbo.variant == "turbo" and turbo.default_steps == 1 and turbo.default_guidance == 0
    assert "lcm" in turbo.schedulers and "lcm" not in tiny.schedulers
    sdxl = Family("sdxl", native=1024)
    assert (1024, 1024) in sdxl.size_presets
    assert all(w % 64 == 0 and h % 64 == 0 for w, h in sdxl.size_presets)
    assert resolve_model(str(models["file"])).family.name == "sd1"
    assert resolve_model(str(models["file"])).model_type == "v1"


def test_models_studio_cannot_use_are_refused_clearly(models, tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(DiffusionModelError, match=r"no model_index\.json"):
        resolve_model(str(empty))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(models["file"].read_bytes()[:5000])
    with pytest.raises(DiffusionModelError, match="incomplete or damaged"):
        diffusion.run(generate(broken), cache=ModelCache())
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DiffusionModelError, match="not a diffusion checkpoint"):
        resolve_model(str(text))
    import torch
    from safetensors.torch import save_file

    upscaler = tmp_path / "upscaler.safetensors"
    save_file({"conv_first.weight": torch.zeros(8, 3, 3, 3)}, str(upscaler))
    with pytest.raises(DiffusionModelError, match="not a Stable Diffusion checkpoint"):
        resolve_model(str(upscaler))
    with pytest.raises(DiffusionModelError, match="does not exist"):
        resolve_model(str(tmp_path / "missing.safetensors"))
    with pytest.raises(UserError, match="inpainting model"):
        diffusion.run(generate(models["inpaint_folder"]), cache=ModelCache())
    with pytest.raises(EngineError, match="LCM scheduler needs a distilled model"):
        diffusion.run(generate(models["folder"], scheduler="lcm"), cache=ModelCache())


def test_a_pickle_that_runs_code_is_never_executed(models, tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    hostile = tmp_path / "hostile.ckpt"
    hostile.write_bytes(pickle.dumps({"state_dict": Exploit()}))
    with pytest.raises(DiffusionModelError):
        resolve_model(str(hostile))
    assert not marker.exists()


# --- inpainting -----------------------------------------------------------------------------------


def photo(path: Path, width: int, height: int, *, alpha: bool = False) -> Path:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (height, width, 4 if alpha else 3), dtype=np.uint8)
    if alpha:
        pixels[..., 3] = 255
    Image.fromarray(pixels).save(path)
    return path


def mask_file(path: Path, width: int, height: int, box: tuple[int, int, int, int]) -> Path:
    mask = np.zeros((height, width), dtype=np.uint8)
    left, top, right, bottom = box
    mask[top:bottom, left:right] = 255
    Image.fromarray(mask).save(path)
    return path


def inpaint(image: Path, mask: Path, model: Path, **overrides) -> InpaintRequest:
    values = dict(
        image_path=str(image),
        mask_path=str(mask),
        model=str(model),
        prompt="a patch",
        steps=2,
        strength=1.0,
        mask_blur=3,
        padding=8,
        seed=5,
    )
    values.update(overrides)
    return InpaintRequest(**values)


@pytest.mark.parametrize("model_key", ["inpaint_folder", "folder"])
@pytest.mark.parametrize("only_masked", [True, False])
def test_pixels_outside_the_mask_stay_bit_identical(models, tmp_path, model_key, only_masked):
    """Dedicated 9-channel inpainting models and ordinary ones; crop-and-paste and whole image."""
    image = photo(tmp_path / "photo.png", 200, 150)
    box = (120, 40, 150, 80)
    mask = mask_file(tmp_path / "mask.png", 200, 150, box)
    result = diffusion.run(
        inpaint(image, mask, models[model_key], only_masked=only_masked), cache=ModelCache()
    )
    out = pixels_of(result)
    original = load_picture(image).pixels
    assert out.shape == original.shape  # full resolution kept
    outside = np.ones(original.shape[:2], bool)
    left, top, right, bottom = box
    outside[top:bottom, left:right] = False
    assert np.array_equal(out[outside], original[outside])
    assert not np.allclose(out[~outside], original[~outside], atol=2 / 255)
    assert result.digital_source_type.endswith("compositeWithTrainedAlgorithmicMedia")
    # written to a file, the unmasked pixels are still the input's bytes
    saved = save_picture(result.pictures[0], tmp_path / "out.png")
    assert np.array_equal(
        np.asarray(Image.open(saved))[outside], np.asarray(Image.open(image))[outside]
    )


def test_only_masked_works_at_the_model_resolution_on_a_large_photo(models, tmp_path):
    image = photo(tmp_path / "big.png", 640, 480)
    mask = mask_file(tmp_path / "mask.png", 640, 480, (300, 200, 316, 212))
    seen = []
    result = diffusion.run(
        inpaint(image, mask, models["inpaint_folder"], padding=8),
        progress=lambda f, m, p=None: seen.append(p),
        cache=ModelCache(),
    )
    assert result.pictures[0].width == 640 and result.pictures[0].height == 480
    assert "Size: 64x64" in result.parameters[0]  # the crop ran at the native 64 px
    previews = [p for p in seen if p is not None]
    assert previews and previews[0].shape == (32, 32, 3)


def test_inpainting_keeps_alpha_and_sixteen_bits(models, tmp_path):
    pixels = np.random.default_rng(1).random((64, 80, 4)).astype(np.float32)
    pixels[..., 3] = 1.0
    pixels[:10, :10, 3] = 0.25
    image = save_picture(Picture(pixels, bit_depth=16), tmp_path / "deep.png")
    mask = mask_file(tmp_path / "mask.png", 80, 64, (40, 20, 60, 40))
    result = diffusion.run(inpaint(image, mask, models["inpaint_folder"]), cache=ModelCache())
    out = result.pictures[0]
    assert out.bit_depth == 16 and out.has_alpha
    original = load_picture(image).pixels
    assert np.array_equal(out.pixels[:10, :10], original[:10, :10])


def test_inpaint_inputs_that_do_not_fit_are_refused(models, tmp_path):
    image = photo(tmp_path / "photo.png", 120, 90)
    wrong = mask_file(tmp_path / "wrong.png", 60, 45, (1, 1, 10, 10))
    with pytest.raises(EngineError, match="mask is 60x45 but the image is 120x90"):
        diffusion.run(inpaint(image, wrong, models["inpaint_folder"]), cache=ModelCache())
    empty = mask_file(tmp_path / "empty.png", 120, 90, (0, 0, 0, 0))
    with pytest.raises(EngineError, match="mask is empty"):
        diffusion.run(inpaint(image, empty, models["inpaint_folder"]), cache=ModelCache())
    with pytest.raises(EngineError, match="strength"):
        inpaint(image, empty, models["folder"], strength=0.0)
    with pytest.raises(EngineError, match="steps x strength is under 1"):
        inpaint(image, empty, models["folder"], steps=1, strength=0.75)


def test_mask_from_alpha_and_feathering_inwards():
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    weights = diffusion.feathered(mask, 3)
    assert (weights[~mask] == 0).all()
    assert weights[10, 10] == 1.0 and 0 < weights[5, 10] < 1


def test_generate_then_inpaint_with_one_model_loads_it_once(models, tmp_path):
    cache = ModelCache()
    diffusion.run(generate(models["folder"]), cache=cache)
    image = photo(tmp_path / "photo.png", 64, 64)
    mask = mask_file(tmp_path / "mask.png", 64, 64, (10, 10, 30, 30))
    diffusion.run(inpaint(image, mask, models["folder"]), cache=cache)
    assert len(cache) == 1


def test_requests_round_trip_through_json(models, tmp_path):
    request = generate(models["folder"], guidance=7, negative_prompt="blurry")
    assert GenerateRequest.from_dict(request.to_dict()) == request
    image = photo(tmp_path / "p.png", 64, 64)
    mask = mask_file(tmp_path / "m.png", 64, 64, (1, 1, 9, 9))
    inpainting = inpaint(image, mask, models["folder"], strength=1)
    assert InpaintRequest.from_dict(inpainting.to_dict()) == inpainting
    assert inpainting.input_paths() == [str(image), str(mask)]


def test_a1111_parameters_text():
    request = generate("org/model", negative_prompt="blurry", guidance=7.5, scheduler="euler_a")
    text = diffusion.a1111_parameters(request, "model", "ab" * 32, (64, 64))
    assert text == (
        "a red cat\nNegative prompt: blurry\n"
        "Steps: 2, Sampler: Euler a, CFG scale: 7.5, Seed: 7, Size: 64x64, "
        "Model hash: ababababab, Model: model"
    )
    assert "Negative prompt" not in diffusion.a1111_parameters(
        generate("org/model"), "m", "0" * 64, (64, 64)
    )


def test_moved_model_folder_is_a_clear_error(models, tmp_path):
    moved = tmp_path / "copy"
    shutil.copytree(models["folder"], moved)
    (moved / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(DiffusionModelError, match="could not be loaded"):
        diffusion.run(generate(moved), cache=ModelCache())


def test_distilled_models_sample_trailing_timesteps(models, tmp_path):
    turbo = tmp_path / "tiny-sd-turbo"
    shutil.copytree(models["folder"], turbo)
    result = diffusion.run(generate(turbo, steps=1, guidance=0.0), cache=ModelCache())
    assert result.facts.extra["family"] == "SD 1.x Turbo"
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(models["folder"])
    for name in ("euler", "euler_a", "lcm"):
        spacing = diffusion._scheduler(pipe, name, family_of_folder(turbo)).config.timestep_spacing
        assert spacing == "trailing", name
    base = diffusion._scheduler(pipe, "euler", family_of_folder(models["folder"]))
    assert base.config.timestep_spacing == pipe.scheduler.config.timestep_spacing


def test_an_old_format_ckpt_is_read_too(models, tmp_path):
    import torch

    legacy = tmp_path / "legacy.ckpt"
    state = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3)}
    torch.save({"state_dict": state}, legacy, _use_new_zipfile_serialization=False)
    from studio.models.diffusion import checkpoint_layout

    layout = checkpoint_layout(legacy)
    assert layout["model.diffusion_model.input_blocks.0.0.weight"].shape == (32, 4, 3, 3)


def test_pictures_in_memory_can_be_inpainted(models, tmp_path):
    """What the Restore tab uses to fill detected damage with an installed diffusion model."""
    image = photo(tmp_path / "photo.png", 96, 64)
    mask_path = mask_file(tmp_path / "mask.png", 96, 64, (10, 10, 30, 20))
    request = inpaint(image, mask_path, models["inpaint_folder"])
    from_files = diffusion.run(request, cache=ModelCache())
    picture = load_picture(image)
    mask = np.zeros((64, 96), bool)
    mask[10:20, 10:30] = True
    in_memory = diffusion.inpaint_picture(picture, mask, request, cache=ModelCache())
    assert np.array_equal(pixels_of(from_files), pixels_of(in_memory))
    with pytest.raises(EngineError, match="mask is 10x10 but the image is 96x64"):
        diffusion.inpaint_picture(picture, np.ones((10, 10), bool), request)


def test_peeking_at_a_family_downloads_nothing(models, tmp_path, monkeypatch):
    from studio.models.diffusion import peek_family

    family, note = peek_family(str(models["file"]))  # configuration cached: read from it
    assert (family.name, family.native, note) == ("sd1", 64, None)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # any download attempt would fail
    family, note = peek_family(str(models["file"]))  # a guess from the tensor names
    assert (family.name, family.native, family.inpainting) == ("sd1", 512, False)
    assert "download on the first run" in note
    family, note = peek_family("someone/not-downloaded")
    assert family is None and "not downloaded yet" in note
    assert peek_family(str(models["inpaint_folder"]))[0].inpainting


def test_sd2_is_told_by_its_text_width_and_v_prediction_models_by_their_native_size(
    models, tmp_path
):
    """Real SD 2.x folders differ from SD 1.x in configuration only: OpenCLIP's 1024-wide text."""
    import json

    sd2 = tmp_path / "stable-diffusion-2-1"
    shutil.copytree(models["folder"], sd2)
    unet_config = sd2 / "unet" / "config.json"
    config = json.loads(unet_config.read_text())
    unet_config.write_text(json.dumps({**config, "cross_attention_dim": 1024, "sample_size": 96}))
    vae_config = sd2 / "vae" / "config.json"
    vae = json.loads(vae_config.read_text())
    vae_config.write_text(json.dumps({**vae, "block_out_channels": [128, 256, 512, 512]}))
    family = family_of_folder(sd2)
    assert (family.name, family.native, family.title) == ("sd2", 768, "SD 2.x")
    assert (768, 768) in family.size_presets
