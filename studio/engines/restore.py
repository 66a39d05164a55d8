"""Restore: old and damaged photos through Studio's restoration VAE, or a user's spandrel model.

With the restoration VAE (`studio.nn.restore_vae`, shipped as `studio-restore-vae`), a picture
goes through the network tile by tile, twice when scratches are fixed:

1. *Restore*: nothing inpainted. The photo comes back denoised, deblurred and free of JPEG
   artefacts with its damage kept, plus the damage head's scratch/dust probability and the
   decoder's per-pixel uncertainty. Before the tiles, a file with a paper branch estimates the
   print's uneven paper and blotchy fading from the whole picture, and the scan is divided by it
   (part of the network's change, so the denoise level scales it too).
2. *Fill*: the damage mask (the user's, or the detected one, grown by `DAMAGE_GROW` px) is painted
   anew by the decoder from the surroundings. Outside the mask the result is pass 1's pixels, so
   editing the mask changes exactly the pixels whose mask changed.

With `ensemble` above 1, each tile also runs mirrored (2), flipped (4) and transposed (8), and
the outputs are averaged (`tiling.dihedral_mean`): the network's own errors partly cancel, at that
many times the cost; for a user's spandrel model too. The latent's noise plane turns with the
tile, but the decoder does not answer it symmetrically, so a variation averages several samples:
variations differ less, and so does the uncertainty map's share from them.

The latent is a Gaussian given the scan: picture 0 decodes its mean, each further variation
decodes a sample drawn from a CPU generator seeded by the request (one noise plane that travels
with the tiles, so tiled and untiled runs draw the same sample). The uncertainty map combines the
decoded Laplace spread with the spread between variations. Then: denoise level (how much of the
network's change outside the mask to keep), colour-cast correction (per-channel levels measured
on the whole result, so it does not depend on tiling) and strength (blend with the original).

With a diffusion inpainting model named in the request, the damage mask is repainted by it
(`studio.engines.diffusion`) on top of the decoder's fill; the pixels outside stay the VAE's.

Any scale-1 model spandrel reads (SCUNet, NAFNet, FBCNN, DRUNet, GFPGAN, RestoreFormer, ...) runs
through the same loading path as the upscalers; detection, filling and variations need the VAE.
A face model (GFPGAN, RestoreFormer) restores each face Studio finds, aligned and pasted back
(`studio.engines.faces`); the rest of the photo stays as it was.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from studio.engines.base import (
    CancelCheck,
    Cancelled,
    EngineError,
    Progress,
    Request,
    RunFacts,
    check_ensemble,
    never_cancelled,
    no_progress,
)
from studio.imaging import ImageError, Picture, load_picture, picture_from_array, save_picture

OUTPUT_FORMATS = ("png", "jpeg", "webp", "tiff")
DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
PRECISION_CHOICES = ("auto", "fp16", "bf16", "fp32")
MAX_VARIATIONS = 8
MAX_SEED = 2**32 - 1
MIN_TILE = 64
VAE_OVERLAP = 64  # the VAE's reach (a latent at 1/4 resolution) needs more context than SR nets
# The damage head's probability above which a pixel is filled, and the margin (px) grown around
# it; chosen on the validation photos aged as the bench ages them (a false alarm costs a filled
# patch of real texture, a miss a visible scratch).
DAMAGE_THRESHOLD = 0.85
DAMAGE_GROW = 0
LEVELS_PERCENTILE = 0.5  # per-channel black and white points of the colour-cast correction
MAX_LEVELS_GAIN = 3.0
UNCERTAINTY_FULL_SCALE = 0.25  # a standard deviation of this (in [0, 1] units) is white in the map


@dataclass(frozen=True)
class RestoreRequest(Request):
    """Everything that determines a restoration. Invalid values raise `EngineError`."""

    input_path: str
    model_path: str | None = None  # None = Studio's restoration VAE
    strength: float = 1.0  # 0 = the original, 1 = fully restored
    # 0 = keep the grain and noise (and the paper's blotches, where the model flattens them),
    # 1 = the network's full cleaning
    denoise: float = 1.0
    fix_scratches: bool = False
    mask_path: str | None = None  # white = fill; None = the detected damage
    colour_correction: bool = False
    # A diffusion inpainting model (Hugging Face repo id, diffusers folder or checkpoint) that
    # repaints the damage mask over the decoder's fill; None = the VAE's decoder alone.
    inpaint_model: str | None = None
    inpaint_prompt: str = "a restored old photograph, natural detail"
    inpaint_steps: int = 25
    tile: int = 0  # 0 = automatic
    # 1, 2, 4 or 8: the network also runs on the photo mirrored and turned, and the answers are
    # averaged (a geometric self-ensemble): a little cleaner, that many times slower
    ensemble: int = 1
    seed: int = 0
    variations: int = 1  # pictures: the latent's mean, then samples
    output_format: str = "png"
    quality: int = 95
    device: str = "auto"
    precision: str = "auto"

    tool: ClassVar[str] = "restore"
    image_fields: ClassVar[tuple[str, ...]] = ("input_path", "mask_path")
    required: ClassVar[tuple[str, ...]] = ("input_path",)

    def __post_init__(self) -> None:
        if not isinstance(self.input_path, str) or not self.input_path:
            raise EngineError("input_path must be a file path.")
        for name in ("model_path", "mask_path"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise EngineError(f"{name} must be a file path or empty.")
        if self.mask_path and not self.fix_scratches:
            raise EngineError("a damage mask is only used to fix scratches; turn that on.")
        if self.inpaint_model is not None:
            if not isinstance(self.inpaint_model, str) or not self.inpaint_model:
                raise EngineError("inpaint_model must be a model name, folder or file, or empty.")
            if not self.fix_scratches:
                raise EngineError("a diffusion model fills scratches; turn fixing them on.")
        _check_whole(self.inpaint_steps, "inpaint_steps", 2, 150)  # x strength 0.75 >= 1 step
        for name in ("strength", "denoise"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= 1:
                raise EngineError(f"{name} must be a number from 0 to 1, not {value!r}.")
        _check_whole(self.tile, "tile", 0, 8192)
        if self.tile and self.tile < MIN_TILE:
            raise EngineError(
                f"tile must be 0 (automatic) or {MIN_TILE}..8192 px, not {self.tile}."
            )
        check_ensemble(self.ensemble)
        _check_whole(self.seed, "seed", 0, MAX_SEED)
        _check_whole(self.variations, "variations", 1, MAX_VARIATIONS)
        _check_whole(self.quality, "quality", 1, 100)
        output_format = str(self.output_format).lower().replace("jpg", "jpeg")
        if output_format not in OUTPUT_FORMATS:
            raise EngineError(
                f"unknown output format {self.output_format!r}; choose {', '.join(OUTPUT_FORMATS)}."
            )
        object.__setattr__(self, "output_format", output_format)
        device = str(self.device).lower()
        if device not in DEVICE_CHOICES and not device.startswith("cuda:"):
            raise EngineError(
                f"unknown device {self.device!r}; choose {', '.join(DEVICE_CHOICES)}."
            )
        if self.precision not in PRECISION_CHOICES:
            raise EngineError(
                f"unknown precision {self.precision!r}; choose {', '.join(PRECISION_CHOICES)}."
            )

    @classmethod
    def _coerce(cls, values: dict[str, Any]) -> dict[str, Any]:
        for name in ("strength", "denoise"):
            if isinstance(values.get(name), int) and not isinstance(values.get(name), bool):
                values[name] = float(values[name])
        return values


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_whole(value: Any, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise EngineError(f"{name} must be a whole number {low}..{high}, not {value!r}.")


@dataclass
class RestoreResult:
    restored: list[Picture]  # the latent's mean first, then the variations
    model_name: str
    model_sha256: str
    architecture: str
    device: str
    dtype: str
    tile: int
    seconds: float
    seed: int
    uncertainty: np.ndarray | None = None  # (H, W) standard deviation, [0, 1] units
    damage_mask: np.ndarray | None = None  # (H, W) bool: the pixels filled
    notes: tuple[str, ...] = ()
    filled_by: str | None = None  # "decoder", or the diffusion model that repainted the mask

    @property
    def pictures(self) -> list[Picture]:
        return self.restored

    def output_roles(self) -> list[str]:
        """What each output file is, in the order they are written."""
        roles = ["restored"] + [f"variation {k}" for k in range(1, len(self.restored))]
        if self.uncertainty is not None:
            roles.append("uncertainty")
        if self.damage_mask is not None:
            roles.append("damage mask")
        return roles

    def write_extras(self, next_output: Callable[[str], Path]) -> None:
        """The uncertainty map and the damage mask, as grey PNGs beside the pictures."""
        if self.uncertainty is not None:
            save_picture(uncertainty_picture(self.uncertainty), next_output(".png"), fmt="png")
        if self.damage_mask is not None:
            mask = picture_from_array(self.damage_mask.astype(np.uint8) * 255)
            save_picture(mask, next_output(".png"), fmt="png")

    @property
    def facts(self) -> RunFacts:
        extra: dict[str, Any] = {
            "architecture": self.architecture,
            "tile": self.tile,
            "seconds": round(self.seconds, 3),
            "outputs": self.output_roles(),
        }
        if self.damage_mask is not None:
            extra["damage_fraction"] = round(float(self.damage_mask.mean()), 5)
            extra["filled_by"] = self.filled_by
        if self.uncertainty is not None:
            extra["mean_uncertainty"] = round(float(self.uncertainty.mean()), 5)
        if self.notes:
            extra["notes"] = list(self.notes)
        return RunFacts(
            model_name=self.model_name,
            model_sha256=self.model_sha256,
            seed=self.seed,
            device=self.device,
            dtype=self.dtype,
            extra=extra,
        )


def uncertainty_picture(uncertainty: np.ndarray) -> Picture:
    """The uncertainty map as a grey picture: black = sure, white = a 0.25 standard deviation."""
    return picture_from_array(np.clip(uncertainty / UNCERTAINTY_FULL_SCALE, 0, 1))


def run(
    request: RestoreRequest,
    *,
    progress: Progress = no_progress,
    cancelled: CancelCheck = never_cancelled,
    cache: Any | None = None,
) -> RestoreResult:
    """Restore `request.input_path`; the caller saves the pictures (and `write_extras`)."""
    from studio.engines.upscale import auto_tile
    from studio.models.device import dtype_name
    from studio.models.upscalers import inspect_model, placement, use_model

    started = time.perf_counter()
    info = inspect_model(request.model_path or _default_model())
    if info.purpose != "restore":
        raise EngineError(
            f"{info.name} is a x{info.scale} upscaler ({info.architecture}); it enlarges rather "
            "than restores. Use it in the Upscale tab, or choose a x1 restoration model."
        )
    _refuse_what_it_cannot_do(info, request)  # before loading: a face model is 350 MB
    picture = load_picture(request.input_path)
    mask = load_mask(request.mask_path, picture) if request.mask_path else None
    device, choice = placement(info, request.device, request.precision)
    progress(0.0, choice.reason or f"Loading {info.name}")
    if cancelled():
        raise Cancelled
    with use_model(info, device, choice.dtype, cache) as model:
        tile = request.tile or max(auto_tile(info, device, choice.dtype), MIN_TILE)
        if info.faces:
            tile = 0  # one aligned crop per face: nothing is tiled
        restorer = _restorer_for(info)
        outcome = restorer(model, info, picture, mask, request, tile, progress, cancelled)
    filled_by = "decoder" if outcome.damage_mask is not None else None
    if request.inpaint_model and outcome.damage_mask is not None and outcome.damage_mask.any():
        outcome.restored = [
            _fill_with_diffusion(
                restored, outcome.damage_mask, request, k, progress, cancelled, cache
            )
            for k, restored in enumerate(outcome.restored)
        ]
        filled_by = request.inpaint_model
    colour, alpha = _split_alpha(picture.pixels)
    finals = []
    levels = colour_levels(outcome.restored[0]) if request.colour_correction else None
    for restored in outcome.restored:
        if levels is not None:
            restored = apply_levels(restored, levels)
        blended = colour + request.strength * (restored - colour)
        finals.append(replace(picture, pixels=_join_alpha(np.clip(blended, 0, 1), alpha)))
    return RestoreResult(
        restored=finals,
        model_name=info.name,
        model_sha256=info.sha256,
        architecture=info.architecture,
        device=str(device),
        dtype=dtype_name(choice.dtype),
        tile=tile,
        seconds=time.perf_counter() - started,
        seed=request.seed,
        uncertainty=outcome.uncertainty,
        damage_mask=outcome.damage_mask,
        notes=outcome.notes,
        filled_by=filled_by,
    )


def _fill_with_diffusion(
    restored: np.ndarray,
    mask: np.ndarray,
    request: RestoreRequest,
    variation: int,
    progress: Progress,
    cancelled: CancelCheck,
    cache: Any | None,
) -> np.ndarray:
    """The damage repainted by a diffusion inpainting model, starting from the decoder's fill;
    every pixel outside the mask stays the VAE's."""
    from studio.engines import diffusion

    def report(fraction: float, message: str, preview: Any | None = None) -> None:
        progress(0.95, f"Diffusion fill · {message}")

    inpaint = diffusion.InpaintRequest(
        image_path=request.input_path,  # what it describes; the pixels come from `restored`
        mask_path=request.mask_path or request.input_path,
        model=str(request.inpaint_model),
        prompt=request.inpaint_prompt,
        steps=request.inpaint_steps,
        mask_blur=0,
        seed=(request.seed + variation) % (MAX_SEED + 1),
        device=request.device,
        precision=request.precision,
    )
    result = diffusion.inpaint_picture(
        picture_from_array(restored),
        mask,
        inpaint,
        progress=report,
        cancelled=cancelled,
        cache=cache,
    )
    filled = result.pictures[0].pixels
    filled = filled[..., :3] if restored.shape[2] == 3 else filled[..., :1]
    return np.where(mask[..., None], filled, restored).astype(np.float32)


def _default_model() -> str:
    from studio.models.shipped import default_restorer

    return str(default_restorer())


def load_mask(path: str, picture: Picture) -> np.ndarray:
    """A damage mask file as (H, W) bool: white (or opaque, in a mask with alpha) = fill."""
    mask_picture = load_picture(path)
    if (mask_picture.width, mask_picture.height) != (picture.width, picture.height):
        raise ImageError(
            f"The mask {Path(path).name} is {mask_picture.width}x{mask_picture.height} pixels but "
            f"the photo is {picture.width}x{picture.height}; paint the mask on this photo.",
            path,
        )
    pixels = mask_picture.pixels
    plane = pixels[..., 3] if pixels.shape[2] in (2, 4) else pixels[..., :3].mean(axis=2)
    return plane > 0.5


@dataclass
class _Outcome:
    restored: list[np.ndarray]  # (H, W, C) colour planes (alpha is re-attached later)
    uncertainty: np.ndarray | None = None
    damage_mask: np.ndarray | None = None
    notes: tuple[str, ...] = ()


_Restorer = Callable[..., _Outcome]


def _restorer_for(info: Any) -> _Restorer:
    """Studio's VAE, a face model, or any other restorer spandrel reads (the same test of the
    architecture as `_refuse_what_it_cannot_do`)."""
    from studio.nn.restore_vae import ARCHITECTURE_ID

    if info.architecture == ARCHITECTURE_ID:
        return _restore_with_vae
    return _restore_faces if info.faces else _restore_with_spandrel


def _refuse_what_it_cannot_do(info: Any, request: RestoreRequest) -> None:
    """Clear errors for what only Studio's VAE does, and for passes a face model cannot use."""
    from studio.nn.restore_vae import ARCHITECTURE_ID

    if info.architecture == ARCHITECTURE_ID:
        return
    if info.faces and request.ensemble > 2:
        raise EngineError(
            f"{info.name} ({info.architecture}) restores upright faces: 1 pass, or 2 (mirrored "
            "too); turned upside down or on their side they are not faces to it."
        )
    if request.fix_scratches:
        raise EngineError(
            f"{info.name} ({info.architecture}) cannot find or fill scratches; Studio's "
            "restoration VAE does that. Turn off fixing scratches, or choose studio-restore-vae."
        )
    if request.variations > 1:
        raise EngineError(
            f"{info.name} ({info.architecture}) gives one answer per photo; variations are drawn "
            "from the restoration VAE's latent. Set variations to 1."
        )


def _restore_faces(
    model: Any,
    info: Any,
    picture: Picture,
    mask: np.ndarray | None,
    request: RestoreRequest,
    tile: int,
    progress: Progress,
    cancelled: CancelCheck,
) -> _Outcome:
    import torch

    from studio.engines.faces import restore_faces
    from studio.engines.tiling import dihedral_mean

    colour, rgb = _colour_and_rgb(picture)

    network = face_network(model, info.architecture, request.seed)
    net = dihedral_mean(network, request.ensemble, cancelled)

    def restore_crop(crop: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).unsqueeze(0)
        out = net(batch.to(device=model.device, dtype=model.dtype))
        return out[0].float().permute(1, 2, 0).cpu().numpy()

    restored, faces = restore_faces(rgb, restore_crop, _share(progress, 0, 1), cancelled)
    restored = rgb + request.denoise * (restored - rgb)
    if colour.shape[2] == 1:
        restored = restored.mean(axis=2, keepdims=True)
    found = f"{len(faces)} face{'s' if len(faces) != 1 else ''} restored"
    return _Outcome([restored], notes=(found if faces else "no faces found",))


def face_network(model: Any, architecture: str, seed: int) -> Callable[[Any], Any]:
    """A face model as a function of a [0, 1] batch, seeded (GFPGAN's decoder draws noise).

    spandrel 0.4's GFPGAN passes [0, 1] straight into a network trained on [-1, 1] and clips its
    [-1, 1] output to [0, 1], losing everything below mid-grey, so GFPGAN is called directly and
    scaled both ways, as GFPGAN's own inference does (RestoreFormer's spandrel wrapper scales)."""
    import torch

    def network(batch: torch.Tensor) -> torch.Tensor:
        kind = batch.device.type  # the generator of the device it runs on is restored after
        devices = [] if kind == "cpu" else [batch.device]
        rng = torch.random.fork_rng(devices=devices, device_type="cuda" if kind == "cpu" else kind)
        with rng, torch.inference_mode():
            torch.manual_seed(seed)
            if architecture == "GFPGAN":
                out = model.model(batch * 2 - 1, return_rgb=False)[0]
                return ((out + 1) / 2).clamp(0, 1)
            return model(batch)

    return network


def _restore_with_spandrel(
    model: Any,
    info: Any,
    picture: Picture,
    mask: np.ndarray | None,
    request: RestoreRequest,
    tile: int,
    progress: Progress,
    cancelled: CancelCheck,
) -> _Outcome:
    from studio.engines.upscale import upscale_pixels

    colour, _alpha = _split_alpha(picture.pixels)
    restored = upscale_pixels(
        model,
        info,
        colour,
        tile=tile,
        ensemble=request.ensemble,
        progress=_share(progress, 0, 1),
        cancelled=cancelled,
    )
    if restored.shape != colour.shape:
        raise EngineError(
            f"{info.name} returned a {restored.shape[1]}x{restored.shape[0]} picture for a "
            f"{colour.shape[1]}x{colour.shape[0]} one; it is not a restoration model."
        )
    restored = colour + request.denoise * (restored - colour)
    return _Outcome([restored])


def _restore_with_vae(
    model: Any,
    info: Any,
    picture: Picture,
    mask: np.ndarray | None,
    request: RestoreRequest,
    tile: int,
    progress: Progress,
    cancelled: CancelCheck,
) -> _Outcome:
    colour, rgb = _colour_and_rgb(picture)
    passes = request.variations * (2 if request.fix_scratches else 1)
    network = _VAEPasses(model, rgb, tile, request.ensemble, cancelled)
    done = 0
    fill_mask = mask
    restored, spreads = [], []
    notes: list[str] = []
    for k in range(request.variations):
        noise = None if k == 0 else _latent_noise(request.seed, k, rgb.shape[:2])
        label = "Restoring" if k == 0 else f"Variation {k}"
        out = network.run(None, noise, _share(progress, done, passes, f"{label} · "))
        done += 1
        base, damage, spread = out[..., :3], out[..., 3], out[..., 4]
        result = rgb + request.denoise * (base - rgb)
        if request.fix_scratches:
            if fill_mask is None:
                fill_mask = detected_mask(damage)
                if k == 0 and not fill_mask.any():
                    notes.append("no scratches or dust detected")
            if fill_mask.any():
                share = _share(progress, done, passes, f"{label} · filling · ")
                filled = network.run(fill_mask, noise, share)
                inside = fill_mask[..., None]
                result = np.where(inside, filled[..., :3], result)
                spread = np.where(fill_mask, filled[..., 4], spread)
            done += 1
        restored.append(np.clip(result, 0, 1))
        spreads.append(spread)
    uncertainty = np.sqrt(np.mean(np.square(spreads), axis=0))
    if len(restored) > 1:
        between = np.stack(restored).var(axis=0).mean(axis=2)
        uncertainty = np.sqrt(np.square(uncertainty) + between)
    if colour.shape[2] == 1:
        restored = [r.mean(axis=2, keepdims=True) for r in restored]
    return _Outcome(
        restored=restored,
        uncertainty=uncertainty.astype(np.float32),
        damage_mask=fill_mask if request.fix_scratches else None,
        notes=tuple(notes),
    )


class _VAEPasses:
    """One picture through the restoration VAE: a pass is one tiled run of its eight planes."""

    def __init__(
        self, model: Any, rgb: np.ndarray, tile: int, ensemble: int, cancelled: CancelCheck
    ) -> None:
        import torch

        from studio.nn.restore_vae import prefilter

        self.model = model
        self.net = model.model

        def planes(pixels: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).unsqueeze(0)

        self.cancelled = cancelled
        flat = self._flattened(rgb)
        self.rgb = planes(prefilter(flat, float(self.net.prefilter_strength), cancelled))
        self.raw = planes(flat)
        self.tile = tile
        self.ensemble = ensemble

    def _flattened(self, rgb: np.ndarray) -> np.ndarray:
        """The scan divided by the paper branch's gain, estimated from the whole picture before
        tiling (so tiles do not change it); the scan itself where the file has no branch."""
        import torch

        if self.net.paper is None:
            return rgb
        if self.cancelled():
            raise Cancelled
        whole = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0)
        with torch.inference_mode():
            gain = self.net.paper_gain(whole.to(device=self.model.device, dtype=self.model.dtype))
        gain = gain[0, 0].float().cpu().numpy()
        return np.clip(rgb / gain[..., None], 0, 1).astype(np.float32)

    def run(self, fill: np.ndarray | None, noise: np.ndarray | None, progress: Progress):
        """(H, W, 5): RGB, damage probability, uncertainty. Tiles with nothing to fill are
        skipped in a fill pass (their pixels are not used)."""
        import torch

        from studio.engines.tiling import dihedral_mean, upscale_tiled
        from studio.models.upscalers import SizeRules
        from studio.nn.restore_vae import MULTIPLE_OF

        height, width = self.rgb.shape[2:]
        mask = torch.zeros(1, 1, height, width)
        if fill is not None:
            mask = torch.from_numpy(fill.astype(np.float32))[None, None]
        latent = torch.zeros(1, 1, height, width)
        if noise is not None:
            latent = torch.from_numpy(noise)[None, None]
        planes = torch.cat([self.rgb, mask, latent, self.raw], dim=1)
        planes = planes.to(device=self.model.device, dtype=self.model.dtype)
        net = dihedral_mean(self._network, self.ensemble, self.cancelled)

        def forward(batch: torch.Tensor) -> torch.Tensor:
            if fill is not None and not bool((batch[:, 3] > 0).any()):
                shape = (batch.shape[0], 5, *batch.shape[2:])
                return torch.zeros(shape, dtype=batch.dtype, device=batch.device)
            return net(batch)

        out = upscale_tiled(
            forward,
            planes,
            scale=1,
            tile=self.tile,
            overlap=VAE_OVERLAP,
            size_rules=SizeRules(multiple_of=MULTIPLE_OF),
            progress=progress,
            cancelled=self.cancelled,
            min_tile=MIN_TILE,
        )
        return np.ascontiguousarray(out[0].permute(1, 2, 0).numpy())

    def _network(self, batch: Any) -> Any:
        """The bare network on a batch of planes: what the passes average."""
        import torch

        with torch.inference_mode():
            return self.net(batch)


def _latent_noise(seed: int, variation: int, size: tuple[int, int]) -> np.ndarray:
    """The standard-normal plane that draws variation `variation`'s latent sample."""
    import torch

    generator = torch.Generator().manual_seed(seed * MAX_VARIATIONS + variation)
    return torch.randn(size, generator=generator).numpy()


def detected_mask(damage: np.ndarray) -> np.ndarray:
    """The damage head's probability -> the pixels to fill (thresholded, grown by DAMAGE_GROW)."""
    import cv2

    mask = (damage > DAMAGE_THRESHOLD).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * DAMAGE_GROW + 1,) * 2)
    return cv2.dilate(mask, kernel).astype(bool)


def colour_levels(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel black and white points of a picture (on at most ~1 MP of it)."""
    step = max(1, int(math.sqrt(pixels.shape[0] * pixels.shape[1] / 1e6)))
    sample = pixels[::step, ::step].reshape(-1, pixels.shape[2])
    low = np.percentile(sample, LEVELS_PERCENTILE, axis=0)
    high = np.percentile(sample, 100 - LEVELS_PERCENTILE, axis=0)
    return low.astype(np.float32), high.astype(np.float32)


def apply_levels(pixels: np.ndarray, levels: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Stretch each channel's black and white points to 0 and 1: fading undone, cast balanced.

    A channel whose range is narrow (a flat or deliberately tinted picture) is stretched at most
    MAX_LEVELS_GAIN times, about its middle."""
    low, high = levels
    span = np.maximum(high - low, 1 / MAX_LEVELS_GAIN)
    middle = (low + high) / 2
    low = np.where(high - low < 1 / MAX_LEVELS_GAIN, middle - span / 2, low)
    return np.clip((pixels - low) / span, 0, 1).astype(np.float32)


def _colour_and_rgb(picture: Picture) -> tuple[np.ndarray, np.ndarray]:
    """The picture's colour planes, and the same as RGB (grey repeated) for an RGB network."""
    colour, _alpha = _split_alpha(picture.pixels)
    return colour, np.repeat(colour, 3, axis=2) if colour.shape[2] == 1 else colour


def _split_alpha(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    if pixels.shape[2] == 4:
        return pixels[..., :3], pixels[..., 3:]
    return pixels, None


def _join_alpha(colour: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    pixels = colour if alpha is None else np.concatenate([colour, alpha], axis=2)
    return np.ascontiguousarray(pixels, dtype=np.float32)


def _share(progress: Progress, index: int, count: int, label: str = "") -> Progress:
    """Progress of pass `index` of `count` as a share of the run; previews of the first only."""
    span = 0.95 / count

    def report(fraction: float, message: str, preview: Any | None = None) -> None:
        progress(span * (index + fraction), label + message, preview if index == 0 else None)

    return report
