"""Reading upscaler files: what spandrel detects, and every file Studio refuses, safely."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file
from spandrel import ImageModelDescriptor
from tiny_models import make_compact, make_esrgan

from studio.imaging import file_sha256
from studio.models.cache import ModelCache
from studio.models.upscalers import ModelFileError, SizeRules, inspect_model, load_model

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("maker", "scale", "suffix", "architecture", "rules"),
    [
        (make_esrgan, 4, ".pth", "ESRGAN", SizeRules(minimum=2)),
        (make_esrgan, 2, ".safetensors", "ESRGAN", SizeRules(minimum=4, multiple_of=4)),
        (make_compact, 4, ".pth", "Compact", SizeRules()),
        (make_compact, 4, ".safetensors", "Compact", SizeRules()),
        (make_compact, 2, ".pth", "Compact", SizeRules()),
    ],
)
def test_inspect_reports_architecture_scale_and_parameters(
    tmp_path, maker, scale, suffix, architecture, rules
):
    path = maker(tmp_path / f"tiny-x{scale}{suffix}", scale=scale)
    info = inspect_model(path)
    descriptor = load_model(path, CPU, torch.float32)
    assert info.architecture == architecture
    assert info.scale == scale
    assert info.parameters == sum(p.numel() for p in descriptor.model.parameters())
    assert info.parameters > 1000
    assert (info.input_channels, info.output_channels) == (3, 3)
    assert info.size_requirements == rules
    assert info.supports_half and info.supports_bf16
    assert info.purpose == "upscale"
    assert info.name == f"tiny-x{scale}"
    assert info.sha256 == file_sha256(path)


def test_real_esrgan_release_wrapped_in_params_ema_loads(tmp_path):
    path = make_esrgan(tmp_path / "RealESRGAN_x4plus.pth", params_ema=True)
    assert inspect_model(path).scale == 4


def test_scale_one_models_are_restorers(tmp_path):
    assert inspect_model(make_compact(tmp_path / "denoise.pth", scale=1)).purpose == "restore"


def test_loaded_model_is_ready_on_the_device_in_eval_mode(tmp_path):
    path = make_compact(tmp_path / "compact.pth")
    model = load_model(path, CPU, torch.bfloat16)
    assert isinstance(model, ImageModelDescriptor)
    assert not model.model.training
    assert model.dtype == torch.bfloat16
    assert model.device == CPU
    out = model(torch.rand(1, 3, 8, 8, dtype=torch.bfloat16))
    assert out.shape == (1, 3, 32, 32)


def test_load_through_the_cache_reuses_the_model(tmp_path):
    path = make_compact(tmp_path / "compact.pth")
    cache = ModelCache()
    first = load_model(path, CPU, torch.float32, cache)
    assert load_model(path, CPU, torch.float32, cache) is first
    assert len(cache) == 1


# -- refusals -------------------------------------------------------------------------------------


def refused(path) -> str:
    with pytest.raises(ModelFileError) as caught:
        inspect_model(path)
    message = str(caught.value)
    assert os.path.basename(path) in message  # the person learns which file it was
    return message


def test_missing_file_is_refused(tmp_path):
    assert "not found" in refused(tmp_path / "nowhere.pth")


def test_zero_byte_file_is_refused(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    assert "empty (0 bytes)" in refused(path)


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(os.urandom(4096))
    assert "noise.pth" in refused(path)
    noise = tmp_path / "noise.safetensors"
    noise.write_bytes(os.urandom(4096))
    assert "not a valid .safetensors file" in refused(noise)


def test_text_file_is_refused(tmp_path):
    path = tmp_path / "readme.pth"
    path.write_text("Download the model from the releases page.\n" * 20)
    assert "not a PyTorch checkpoint" in refused(path)


def test_unknown_suffix_is_refused(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x01")
    assert ".safetensors" in refused(path)


def test_stable_diffusion_checkpoint_points_to_the_generate_tab(tmp_path):
    path = tmp_path / "v1-5-pruned.safetensors"
    tensors = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
        "first_stage_model.decoder.conv_in.weight": torch.zeros(4, 4, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.zeros(1, 77),
    }
    save_file(tensors, str(path))
    message = refused(path)
    assert "diffusion checkpoint" in message
    assert "Generate tab" in message


def test_sdxl_checkpoint_in_a_pickle_points_to_the_generate_tab(tmp_path):
    path = tmp_path / "sdxl.ckpt"
    torch.save({"state_dict": {"conditioner.embedders.0.transformer.x": torch.zeros(2)}}, path)
    assert "diffusion checkpoint" in refused(path)


def test_lora_is_refused_as_a_lora(tmp_path):
    path = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 4)}, str(path))
    assert "LoRA" in refused(path)


def test_unsupported_architecture_is_refused(tmp_path):
    path = tmp_path / "classifier.pth"
    torch.save({"fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}, path)
    assert "does not recognise this model's architecture" in refused(path)


def test_weights_that_do_not_fit_the_detected_architecture_are_refused(tmp_path):
    path = tmp_path / "broken.pth"
    torch.save({"body.0.weight": torch.zeros(8, 3, 3, 3), "body.1.weight": torch.zeros(8)}, path)
    assert "do not match" in refused(path)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, still in the wild
def test_torchscript_program_is_refused(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 3, 3)), str(path))
    assert "TorchScript" in refused(path)


class RunsCode:
    """A pickle payload that runs a shell command when unpickled by an unrestricted loader."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("packaging", ["torch.save", "plain pickle"])
def test_malicious_pickle_runs_nothing_and_is_refused(tmp_path, packaging):
    marker = tmp_path / "pwned"
    path = tmp_path / "4x_Totally_Real.pth"
    payload = {"params_ema": {"conv_first.weight": RunsCode(marker)}}
    if packaging == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    message = refused(path)
    assert not marker.exists()
    assert "run code" in message
    assert "system" in message
