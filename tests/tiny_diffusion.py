"""Tiny random-weight Stable Diffusion pipelines, saved the ways real models arrive.

`save_folder` writes a diffusers folder (what `from_pretrained` reads). `save_single_file` writes
the same weights as one original-layout (LDM) checkpoint, the way Civitai and Automatic1111 models
come, and `install_family_config` puts the family's configuration where `from_single_file` looks
for it: the Hugging Face cache, under the repo id diffusers assigns to that family. The tokenizer
is a byte-level CLIP BPE vocabulary written by hand (no downloads).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

TEXT_HIDDEN = 32
LAYERS_PER_BLOCK = 2
TOKENIZER_MAX_LENGTH = 77
SD1_CONFIG_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SD1_INPAINT_CONFIG_REPO = "stable-diffusion-v1-5/stable-diffusion-inpainting"


def _bytes_to_unicode() -> list[str]:
    """CLIP's byte-to-character table: every byte gets a printable character."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def write_tokenizer(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    symbols = _bytes_to_unicode()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    merges = ["t h", "th e</w>", "a n", "an d</w>", "c a", "ca t</w>"]
    for merge in merges:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "model_max_length": TOKENIZER_MAX_LENGTH,
                "tokenizer_class": "CLIPTokenizer",
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
            }
        )
    )
    (folder / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
            }
        )
    )


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=64,
    )


def _text_config(**extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        pad_token_id=1,
        vocab_size=1000,
        max_position_embeddings=TOKENIZER_MAX_LENGTH,
        **extra,
    )


def _tokenizer():
    import tempfile

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp))
        return CLIPTokenizer(
            str(Path(tmp) / "vocab.json"),
            str(Path(tmp) / "merges.txt"),
            model_max_length=TOKENIZER_MAX_LENGTH,
        )


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )


def make_pipeline(*, inpainting: bool = False, seed: int = 0):
    """A tiny SD 1.x pipeline (UNet blocks (32, 64), CLIP hidden 32): 2 steps at 64 px in ~0.2 s."""
    from diffusers import (
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=LAYERS_PER_BLOCK,
        sample_size=32,
        in_channels=9 if inpainting else 4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,
    )
    vae = _vae()
    text_encoder = CLIPTextModel(_text_config())
    tokenizer = _tokenizer()
    scheduler = _scheduler()
    cls = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
    return cls(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def make_sdxl_pipeline(*, inpainting: bool = False, seed: int = 0):
    """A tiny SDXL pipeline: two text encoders, the text-time embedding, linear projections."""
    from diffusers import (
        StableDiffusionXLInpaintPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextModel,
        CLIPTextModelWithProjection,
    )

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=LAYERS_PER_BLOCK,
        sample_size=32,
        in_channels=9 if inpainting else 4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + TEXT_HIDDEN,
        cross_attention_dim=2 * TEXT_HIDDEN,
    )
    vae = _vae()
    config = _text_config(hidden_act="gelu", projection_dim=TEXT_HIDDEN)
    tokenizer, tokenizer_2 = _tokenizer(), _tokenizer()
    scheduler = _scheduler()
    cls = StableDiffusionXLInpaintPipeline if inpainting else StableDiffusionXLPipeline
    return cls(
        vae=vae,
        text_encoder=CLIPTextModel(config),
        text_encoder_2=CLIPTextModelWithProjection(config),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )


def save_folder(folder: Path, *, inpainting: bool = False, seed: int = 0, xl: bool = False) -> Path:
    make = make_sdxl_pipeline if xl else make_pipeline
    pipe = make(inpainting=inpainting, seed=seed)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


# --- the original (LDM) single-file layout --------------------------------------------------------

_RESNET_NAMES = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]


def _unet_to_ldm(state: dict[str, torch.Tensor], lpb: int) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    up_has_attention = {
        int(key.split(".")[1])
        for key in state
        if key.startswith("up_blocks.") and ".attentions." in key
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if key in top:
            new = top[key]
        elif parts[0] == "down_blocks":
            block, kind = int(parts[1]), parts[2]
            if kind == "downsamplers":
                new = f"input_blocks.{1 + block * (lpb + 1) + lpb}.0.op." + ".".join(parts[5:])
            else:
                index = 1 + block * (lpb + 1) + int(parts[3])
                rest = ".".join(parts[4:])
                if kind == "resnets":
                    new = f"input_blocks.{index}.0.{_rename(rest, _RESNET_NAMES)}"
                else:
                    new = f"input_blocks.{index}.1.{rest}"
        elif parts[0] == "mid_block":
            index = 2 * int(parts[2]) if parts[1] == "resnets" else 1
            rest = ".".join(parts[3:])
            rest = _rename(rest, _RESNET_NAMES) if parts[1] == "resnets" else rest
            new = f"middle_block.{index}.{rest}"
        elif parts[0] == "up_blocks":
            block, kind = int(parts[1]), parts[2]
            if kind == "upsamplers":
                slot = 2 if block in up_has_attention else 1
                new = f"output_blocks.{block * (lpb + 1) + lpb}.{slot}." + ".".join(parts[4:])
            else:
                index = block * (lpb + 1) + int(parts[3])
                rest = ".".join(parts[4:])
                if kind == "resnets":
                    new = f"output_blocks.{index}.0.{_rename(rest, _RESNET_NAMES)}"
                else:
                    new = f"output_blocks.{index}.1.{rest}"
        else:
            raise KeyError(f"no LDM name for UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


def _vae_to_ldm(state: dict[str, torch.Tensor], blocks: int) -> dict[str, torch.Tensor]:
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top = DIFFUSERS_TO_LDM_MAPPING["vae"]
    attention = [
        ("group_norm.", "norm."),
        ("to_q.", "q."),
        ("to_k.", "k."),
        ("to_v.", "v."),
        ("to_out.0.", "proj_out."),
    ]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in top:
            out["first_stage_model." + top[key]] = value
            continue
        coder, *parts = key.split(".")
        if parts[0] == "down_blocks":
            block = parts[1]
            if parts[2] == "downsamplers":
                new = f"down.{block}.downsample." + ".".join(parts[4:])
            else:
                new = f"down.{block}.block.{parts[3]}." + ".".join(parts[4:])
        elif parts[0] == "up_blocks":
            block = blocks - 1 - int(parts[1])
            if parts[2] == "upsamplers":
                new = f"up.{block}.upsample." + ".".join(parts[4:])
            else:
                new = f"up.{block}.block.{parts[3]}." + ".".join(parts[4:])
        elif parts[0] == "mid_block" and parts[1] == "resnets":
            new = f"mid.block_{int(parts[2]) + 1}." + ".".join(parts[3:])
        elif parts[0] == "mid_block":
            new = "mid.attn_1." + _rename(".".join(parts[3:]), attention)
            if value.ndim == 2:  # the original stores these as 1x1 convolutions
                value = value[:, :, None, None]
        else:
            raise KeyError(f"no LDM name for VAE key {key}")
        out[f"first_stage_model.{coder}.{new.replace('conv_shortcut', 'nin_shortcut')}"] = value
    return out


def _rename(name: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def ldm_state_dict(pipe) -> dict[str, torch.Tensor]:
    state = _unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config.layers_per_block)
    state.update(_vae_to_ldm(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels)))
    for key, value in pipe.text_encoder.state_dict().items():
        if not key.startswith("text_model."):  # transformers >= 5.6 flattened CLIPTextModel
            key = "text_model." + key
        state["cond_stage_model.transformer." + key] = value
    return {key: value.contiguous() for key, value in state.items()}


def save_single_file(
    path: Path, *, inpainting: bool = False, seed: int = 0, pickle: bool = False
) -> Path:
    """The pipeline `make_pipeline(inpainting, seed)` builds, as one original-layout checkpoint."""
    state = ldm_state_dict(make_pipeline(inpainting=inpainting, seed=seed))
    if pickle:
        torch.save({"state_dict": state}, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    return path


def install_family_config(hub_cache: Path, *, inpainting: bool = False) -> Path:
    """Put the tiny family's configuration (no weights) in the HF cache under diffusers' repo id.

    This is where `from_single_file` finds a family's configuration offline, after any tool has
    fetched it once; the cache layout is huggingface_hub's (refs/main -> snapshots/<commit>).
    """
    repo = SD1_INPAINT_CONFIG_REPO if inpainting else SD1_CONFIG_REPO
    commit = "0" * 40
    root = hub_cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / commit
    pipe = make_pipeline(inpainting=inpainting)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        for file in Path(tmp).rglob("*"):
            if file.is_file() and file.suffix in (".json", ".txt"):
                target = snapshot / file.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(file, target)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot
