"""Tiny random-weight upscalers and restorers, saved the way real releases are, for tests.

The networks are built with spandrel's own architecture classes, so the files go through exactly
the detection and loading path a user's download does. Random weights are calibrated so that the
output varies with the input over most of [0, 1] instead of clipping to a constant, which would make
pixel comparisons (tiled against untiled) meaningless.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from spandrel.architectures.Compact import Compact
from spandrel.architectures.DRUNet import DRUNet
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.RestoreFormer import RestoreFormer

# spandrel 0.4.2 builds RRDB blocks with 32 growth channels whatever the file says, so a tiny ESRGAN
# keeps that width and is made small through num_feat and num_block instead.
ESRGAN_GROWTH_CHANNELS = 32

# Real-ESRGAN's releases: x4 works on pixels; x2 (and x1) run the same x4 network on a
# pixel-unshuffled input, which is how spandrel recognises them.
_ESRGAN_SHUFFLE = {4: None, 2: 2, 1: 4}


def make_esrgan(
    path: str | Path,
    scale: int = 4,
    num_feat: int = 8,
    num_block: int = 1,
    seed: int = 0,
    *,
    params_ema: bool = False,
) -> Path:
    """Save an RRDBNet in Real-ESRGAN's key layout (conv_first, body.N.rdbM, conv_up1, ...)."""
    if scale not in _ESRGAN_SHUFFLE:
        raise ValueError(f"Real-ESRGAN RRDBNet releases come as x4, x2 or x1, not x{scale}")
    shuffle = _ESRGAN_SHUFFLE[scale]
    torch.manual_seed(seed)
    model = ESRGAN(
        in_nc=3 * (shuffle or 1) ** 2,
        out_nc=3,
        num_filters=num_feat,
        num_blocks=num_block,
        scale=4,
        shuffle_factor=shuffle,
    ).eval()
    _calibrate(model, model.model[-1], channels=3, target=0.2, centre=0.5, seed=seed)
    state = _real_esrgan_keys(model.state_dict(), num_block)
    return _save(path, state, params_ema=params_ema)


def make_compact(
    path: str | Path,
    scale: int = 4,
    num_feat: int = 8,
    num_conv: int = 2,
    seed: int = 0,
    *,
    params_ema: bool = False,
    in_channels: int = 3,
    texture: float = 0.08,
) -> Path:
    """Save an SRVGGNetCompact in the layout of realesr-general-x4v3 (body.N, PReLU between).

    The network adds a learned residual to a nearest-neighbour enlargement; `texture` is the
    residual's spread. With `texture=0` the model is exactly a nearest-neighbour upscaler, which
    lets tests predict every output pixel.
    """
    torch.manual_seed(seed)
    model = Compact(
        num_in_ch=in_channels,
        num_out_ch=in_channels,
        num_feat=num_feat,
        num_conv=num_conv,
        upscale=scale,
    ).eval()
    _calibrate(model, model.body[-1], channels=in_channels, target=texture, seed=seed)
    return _save(path, model.state_dict(), params_ema=params_ema)


def make_restore_vae(
    path: str | Path,
    width: int = 6,
    latent: int = 4,
    blocks: int = 1,
    seed: int = 0,
    *,
    texture: float = 0.05,
    prefilter: float = 0.0,
    fine: int = 1,
    paper: int = 0,
) -> Path:
    """Save a tiny random-weight restoration VAE, as `studio.train.restore` saves the real one.

    The residual spreads by `texture`; the latent is made to matter (variations differ) and the
    damage head is biased towards "no damage", as a trained one mostly says. A paper branch
    (`paper` features) gets a head that varies its gain by a few percent over the picture."""
    from studio.nn.restore_vae import PaperField, RestoreVAE

    torch.manual_seed(seed)
    model = RestoreVAE(width, latent, blocks, prefilter, fine).eval()
    with torch.no_grad():
        for block in model.fine:  # trained blocks are not the no-ops they start as
            block.conv2.weight.normal_(0, 0.2)
        model.head.weight[:3].normal_(0, 0.5)
        model.from_latent.weight.mul_(4)
        model.posterior.bias[latent:].fill_(-1.0)  # posterior std ~0.6: samples differ
    _calibrate(model, model.head, channels=8, target=texture, seed=seed, planes=3)
    with torch.no_grad():
        model.head.bias[4] = -3.0
        if paper:  # added last: the same seed gives the same VAE with or without it
            model.paper = PaperField(paper).eval()
            model.paper.head.weight.normal_(0, 0.05)
    return _save(path, model.state_dict(), params_ema=False)


def make_drunet(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny DRUNet (a x1 denoiser spandrel reads) in KAIR's key layout."""
    torch.manual_seed(seed)
    model = DRUNet(in_nc=4, out_nc=3, nc=[8, 8, 8, 8], nb=2).eval()
    return _save(path, model.state_dict(), params_ema=False)


def make_restoreformer(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny RestoreFormer (a face model spandrel reads: 512 px aligned faces)."""
    torch.manual_seed(seed)
    model = RestoreFormer(
        n_embed=16, embed_dim=8, ch=32, ch_mult=(1,) * 6, num_res_blocks=1, z_channels=8
    ).eval()
    return _save(path, model.state_dict(), params_ema=False)


def _calibrate(
    model: torch.nn.Module,
    last: torch.nn.Module,
    *,
    channels: int,
    target: float,
    seed: int,
    centre: float = 0.0,
    planes: int | None = None,
) -> None:
    """Rescale the last convolution so its outputs spread by `target` around `centre`
    (only its first `planes` outputs, when given)."""
    generator = torch.Generator().manual_seed(seed + 1)
    probe = torch.rand(1, channels, 24, 24, generator=generator)
    with torch.no_grad():
        features: list[torch.Tensor] = []
        hook = last.register_forward_hook(lambda _m, _i, out: features.append(out))
        model(probe)
        hook.remove()
        out = features[0][:, :planes]
        gain = target / out.std(dim=(0, 2, 3)).clamp_min(1e-6)
        count = out.shape[1]
        last.weight[:count].mul_(gain.view(-1, 1, 1, 1))
        last.bias[:count].mul_(gain).sub_(out.mean(dim=(0, 2, 3)) * gain).add_(centre)


def _real_esrgan_keys(state: dict[str, torch.Tensor], num_block: int) -> dict[str, torch.Tensor]:
    """spandrel's old ESRGAN keys (model.N...) -> the keys of Real-ESRGAN's RRDBNet releases."""
    fixed = {
        "model.0.": "conv_first.",
        f"model.1.sub.{num_block}.": "conv_body.",
        "model.3.": "conv_up1.",
        "model.6.": "conv_up2.",
        "model.8.": "conv_hr.",
        "model.10.": "conv_last.",
    }
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        block = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", key)
        if block:
            i, j, k, kind = block.groups()
            renamed[f"body.{i}.rdb{j}.conv{k}.{kind}"] = value
            continue
        prefix = next(p for p in fixed if key.startswith(p))
        renamed[fixed[prefix] + key[len(prefix) :]] = value
    return renamed


def _save(path: str | Path, state: dict[str, torch.Tensor], *, params_ema: bool) -> Path:
    path = Path(path)
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"params_ema": state} if params_ema else state, path)
    return path
