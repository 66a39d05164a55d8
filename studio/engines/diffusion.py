"""Diffusion: text-to-image and inpainting on Stable Diffusion pipelines (diffusers).

Noise comes from a CPU generator seeded by the request, so the same model, request and seed give the
same image on any device (bit-identical on the CPU). Every step reports progress with a preview made
by a 4x3 latent-to-RGB matrix (no VAE decode), and cancelling interrupts the pipeline within a step;
the image diffusers decodes from the partial latents is discarded.

Inpainting keeps every pixel outside the mask bit-identical: the generated region is pasted back
through a mask feathered inwards only. "Only masked" crops around the mask (plus padding), inpaints
the crop at the model's native resolution and pastes it back, so a small fix on a large photo keeps
its full resolution.

Requests are plain data and this module imports torch and diffusers only when a run starts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from studio.engines.base import (
    CancelCheck,
    Cancelled,
    EngineError,
    Progress,
    Request,
    RunFacts,
    never_cancelled,
    no_progress,
)
from studio.imaging import (
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    Picture,
    load_picture,
)

OUTPUT_FORMATS = ("png", "jpeg", "webp", "tiff")
MAX_SEED = 2**32 - 1
MAX_STEPS = 150
MAX_SIDE = 4096
MIN_SIDE = 64
MAX_GUIDANCE = 30.0
# A1111's sampler names, which its readers (and Civitai) understand
SCHEDULER_TITLES = {
    "euler": "Euler",
    "euler_a": "Euler a",
    "dpmpp_2m_karras": "DPM++ 2M Karras",
    "dpmpp_2m": "DPM++ 2M",
    "ddim": "DDIM",
    "unipc": "UniPC",
    "lcm": "LCM",
}
LOAD_SHARE = 0.05  # of the progress bar, for finding and loading the model
DECODE_SHARE = 0.05


def round_to_8(value: int) -> int:
    return max(8, round(value / 8) * 8)


def rounded_size(width: int, height: int) -> tuple[int, int, str | None]:
    """Sizes the UNet accepts (multiples of 8), and a note to show when they differ from the ask."""
    new_width, new_height = round_to_8(width), round_to_8(height)
    if (new_width, new_height) == (width, height):
        return width, height, None
    return (
        new_width,
        new_height,
        f"size {width}x{height} rounded to {new_width}x{new_height} "
        "(the model needs multiples of 8)",
    )


def _check_common(request: Any) -> None:
    if not isinstance(request.model, str) or not request.model.strip():
        raise EngineError("choose a diffusion model.")
    if not isinstance(request.prompt, str) or not isinstance(request.negative_prompt, str):
        raise EngineError("the prompt must be text.")
    if isinstance(request.steps, bool) or not isinstance(request.steps, int):
        raise EngineError("steps must be a whole number.")
    if not 1 <= request.steps <= MAX_STEPS:
        raise EngineError(f"steps must be between 1 and {MAX_STEPS}.")
    if not 0.0 <= float(request.guidance) <= MAX_GUIDANCE:
        raise EngineError(f"guidance must be between 0 and {MAX_GUIDANCE:g}.")
    if isinstance(request.seed, bool) or not isinstance(request.seed, int):
        raise EngineError("the seed must be a whole number.")
    if not 0 <= request.seed <= MAX_SEED:
        raise EngineError(f"the seed must be between 0 and {MAX_SEED}.")
    if request.scheduler not in SCHEDULER_TITLES:
        raise EngineError(
            f"unknown scheduler {request.scheduler!r}; choose one of {', '.join(SCHEDULER_TITLES)}."
        )
    if request.output_format not in OUTPUT_FORMATS:
        raise EngineError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}.")


def _check_side(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EngineError(f"{name} must be a whole number of pixels.")
    if not MIN_SIDE <= value <= MAX_SIDE or value % 8:
        raise EngineError(f"{name} must be a multiple of 8 between {MIN_SIDE} and {MAX_SIDE}.")


@dataclass(frozen=True)
class GenerateRequest(Request):
    """Everything that determines a generated image; the seed is always concrete."""

    model: str  # repo id, diffusers folder or checkpoint file
    prompt: str
    negative_prompt: str = ""
    steps: int = 25
    guidance: float = 7.0
    width: int = 512
    height: int = 512
    seed: int = 0
    scheduler: str = "euler"
    output_format: str = "png"
    quality: int = 95
    device: str = "auto"
    precision: str = "auto"
    memory: str = "auto"  # auto | off | balanced | low

    tool: ClassVar[str] = "generate"
    required: ClassVar[tuple[str, ...]] = ("model", "prompt")

    def __post_init__(self) -> None:
        _check_common(self)
        _check_side("width", self.width)
        _check_side("height", self.height)

    @classmethod
    def _coerce(cls, values: dict[str, Any]) -> dict[str, Any]:
        if "guidance" in values:
            values["guidance"] = float(values["guidance"])
        return values


@dataclass(frozen=True)
class InpaintRequest(Request):
    """Everything that determines an inpainted photo. `mask_path`: white (or opaque) = repaint."""

    image_path: str
    mask_path: str
    model: str
    prompt: str
    negative_prompt: str = ""
    steps: int = 25
    guidance: float = 7.0
    strength: float = 0.75
    mask_blur: int = 4  # feather, in image pixels, inwards from the mask's edge
    only_masked: bool = True
    padding: int = 32  # around the mask, in image pixels, when only_masked
    resolution: int = 0  # side of the square area the model works at; 0 = the model's native one
    seed: int = 0
    scheduler: str = "euler"
    output_format: str = "png"
    quality: int = 95
    device: str = "auto"
    precision: str = "auto"
    memory: str = "auto"

    tool: ClassVar[str] = "inpaint"
    image_fields: ClassVar[tuple[str, ...]] = ("image_path", "mask_path")
    required: ClassVar[tuple[str, ...]] = ("image_path", "mask_path", "model", "prompt")

    def __post_init__(self) -> None:
        for name in ("image_path", "mask_path"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise EngineError(f"{name} must be a file path.")
        _check_common(self)
        if not 0.0 < float(self.strength) <= 1.0:
            raise EngineError("strength must be above 0 and at most 1.")
        if int(self.steps * float(self.strength)) < 1:  # diffusers runs steps x strength of them
            raise EngineError(
                f"{self.steps} steps at strength {float(self.strength):g} run no denoising step "
                "(steps x strength is under 1): raise the steps or the strength."
            )
        for name, top in (("mask_blur", 256), ("padding", 4096)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise EngineError(f"{name} must be a whole number of pixels from 0 to {top}.")
        if self.resolution:
            _check_side("resolution", self.resolution)

    @classmethod
    def _coerce(cls, values: dict[str, Any]) -> dict[str, Any]:
        for name in ("guidance", "strength"):
            if name in values:
                values[name] = float(values[name])
        return values


@dataclass
class DiffusionResult:
    pictures: list[Picture]
    facts: RunFacts
    parameters: list[str]  # A1111 `parameters` text, one per picture
    digital_source_type: str = TRAINED_ALGORITHMIC_MEDIA
    warnings: list[str] = field(default_factory=list)


# --- the run --------------------------------------------------------------------------------------


def run(
    request: GenerateRequest | InpaintRequest,
    *,
    progress: Progress = no_progress,
    cancelled: CancelCheck = never_cancelled,
    cache: Any = None,
) -> DiffusionResult:
    if isinstance(request, InpaintRequest):
        picture = load_picture(request.image_path)
        mask = load_mask(request.mask_path, (picture.width, picture.height))
        return inpaint_picture(
            picture, mask, request, progress=progress, cancelled=cancelled, cache=cache
        )
    return _run(request, None, progress, cancelled, cache)


def inpaint_picture(
    picture: Picture,
    mask: np.ndarray,
    request: InpaintRequest,
    *,
    progress: Progress = no_progress,
    cancelled: CancelCheck = never_cancelled,
    cache: Any = None,
) -> DiffusionResult:
    """Repaint `mask` (bool, True = repaint) of a picture already in memory, with the model and
    settings of `request`, whose image and mask paths are not read: the Restore tab fills the
    damage it detected this way when a diffusion model is installed."""
    if mask.shape != (picture.height, picture.width):
        raise EngineError(
            f"the mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
            f"{picture.width}x{picture.height}."
        )
    if not mask.any():
        raise EngineError("the mask is empty: paint over the area to repaint.")
    return _run(request, (picture, mask), progress, cancelled, cache)


def _run(
    request: GenerateRequest | InpaintRequest,
    inpainting: tuple[Picture, np.ndarray] | None,
    progress: Progress,
    cancelled: CancelCheck,
    cache: Any,
) -> DiffusionResult:
    from studio.models import diffusion as models
    from studio.models.cache import ModelCache

    cache = cache if cache is not None else ModelCache()
    started = time.perf_counter()
    progress(0.0, "Finding the model")
    resolved = models.resolve_model(
        request.model, progress=_scaled(progress, 0.0, LOAD_SHARE * 0.8), cancelled=cancelled
    )
    task = "inpaint" if inpainting is not None else "text2img"
    models.pipeline_class(resolved.family, task)  # refuses an inpainting model for text2img early
    if request.scheduler == "lcm" and not resolved.family.distilled:
        raise EngineError(
            "the LCM scheduler needs a distilled model (LCM, Turbo or Lightning); choose another "
            "scheduler for this model."
        )
    device, dtype = _device_and_dtype(request)
    sha256 = models.model_sha256(resolved)
    if cancelled():
        raise Cancelled
    progress(LOAD_SHARE * 0.8, f"Loading {resolved.name}")
    with models.use_pipeline(resolved, device, dtype, request.memory, cache, sha256) as (
        base,
        mode,
    ):
        pipe = models.for_task(
            base, resolved.family, task, _scheduler(base, request.scheduler, resolved.family)
        )
        warnings = _prompt_warnings(pipe, request)
        for warning in warnings:
            progress(LOAD_SHARE, warning)
        watcher = _StepWatcher(resolved.family, progress, cancelled)
        if task == "text2img":
            picture, size = _generate(pipe, watcher, request)
            source_type = TRAINED_ALGORITHMIC_MEDIA
        else:
            picture, size = _inpaint(pipe, watcher, resolved.family, *inpainting, request)
            source_type = COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    facts = RunFacts(
        model_name=resolved.name,
        model_sha256=sha256,
        seed=request.seed,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        extra={
            "family": resolved.family.title,
            "memory": mode,
            "warnings": warnings,
            "seconds": round(time.perf_counter() - started, 3),
            "preview_seconds": round(watcher.preview_seconds, 5),
        },
    )
    parameters = a1111_parameters(request, resolved.name, sha256, size)
    return DiffusionResult([picture], facts, [parameters], source_type, warnings)


def _scaled(progress: Progress, start: float, share: float) -> Progress:
    def report(fraction: float, message: str, preview: Any | None = None) -> None:
        progress(start + share * fraction, message, preview)

    return report


def _device_and_dtype(request: Any) -> tuple[Any, Any]:
    from studio.models.device import choose_dtype, resolve_device

    device = resolve_device(request.device)
    choice = choose_dtype(device, request.precision, supports_half=True, supports_bf16=True)
    return device, choice.dtype


def _scheduler(pipe: Any, name: str, family: Any) -> Any:
    """The named scheduler, configured from the model's own. Distilled models (Turbo, Lightning,
    LCM) sample the last timesteps ("trailing"), as their authors run them: a single-file
    checkpoint borrows its family's base configuration, which spaces them for 25+ steps."""
    import diffusers

    classes = {
        "euler": (diffusers.EulerDiscreteScheduler, {}),
        "euler_a": (diffusers.EulerAncestralDiscreteScheduler, {}),
        "dpmpp_2m_karras": (
            diffusers.DPMSolverMultistepScheduler,
            {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++"},
        ),
        "dpmpp_2m": (diffusers.DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
        "ddim": (diffusers.DDIMScheduler, {}),
        "unipc": (diffusers.UniPCMultistepScheduler, {}),
        "lcm": (diffusers.LCMScheduler, {}),
    }
    cls, options = classes[name]
    if family.distilled:
        options = {**options, "timestep_spacing": "trailing"}
    return cls.from_config(pipe.scheduler.config, **options)


def _prompt_warnings(pipe: Any, request: Any) -> list[str]:
    """CLIP reads 77 tokens; say so when a prompt is cut, as diffusers only logs it."""
    tokenizer = pipe.tokenizer
    limit = tokenizer.model_max_length
    warnings = []
    for label, text in (("prompt", request.prompt), ("negative prompt", request.negative_prompt)):
        count = len(tokenizer(text, truncation=False).input_ids)
        if count > limit:
            warnings.append(
                f"the {label} is {count - 2} tokens long; the model reads the first {limit - 2} "
                "and ignored the rest."
            )
    return warnings


def _generator(seed: int) -> Any:
    import torch

    return torch.Generator("cpu").manual_seed(seed)


class _StepWatcher:
    """The per-step callback: progress, a cheap preview, and cancellation within one step."""

    def __init__(self, family: Any, progress: Progress, cancelled: CancelCheck) -> None:
        import torch

        factors, bias = family.preview_factors
        self._factors = torch.tensor(factors, dtype=torch.float32)
        self._bias = torch.tensor(bias, dtype=torch.float32)
        self._progress = progress
        self._cancelled = cancelled
        self.interrupted = False
        self.preview_seconds = 0.0

    def __call__(
        self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        started = time.perf_counter()
        total = max(1, int(getattr(pipe, "num_timesteps", 0) or 1))
        preview = latent_preview(tensors["latents"], self._factors, self._bias)
        self.preview_seconds += time.perf_counter() - started
        fraction = LOAD_SHARE + (1 - LOAD_SHARE - DECODE_SHARE) * (step + 1) / total
        self._progress(fraction, f"Step {step + 1}/{total}", preview)
        if self._cancelled():
            self.interrupted = True
            pipe._interrupt = True  # diffusers stops before the next step
        return tensors


def latent_preview(latents: Any, factors: Any, bias: Any) -> np.ndarray:
    """RGB uint8 (h, w, 3) of the first latent at latent resolution: a 4x3 product, no decode."""
    import torch

    with torch.no_grad():
        first = latents[0].detach().to("cpu", torch.float32)  # (4, h, w)
        rgb = torch.einsum("chw,cr->hwr", first, factors) + bias
        return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def _call(pipe: Any, watcher: _StepWatcher, **kwargs: Any) -> np.ndarray:
    import torch

    with torch.inference_mode():
        output = pipe(
            **kwargs,
            output_type="np",
            callback_on_step_end=watcher,
            callback_on_step_end_tensor_inputs=["latents"],
        )
    if watcher.interrupted:
        raise Cancelled  # diffusers still decoded the partial latents: discard them
    return np.asarray(output.images[0], dtype=np.float32)


def _generate(
    pipe: Any, watcher: _StepWatcher, request: GenerateRequest
) -> tuple[Picture, tuple[int, int]]:
    pixels = _call(
        pipe,
        watcher,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt or None,
        num_inference_steps=request.steps,
        guidance_scale=float(request.guidance),
        width=request.width,
        height=request.height,
        generator=_generator(request.seed),
    )
    return Picture(np.clip(pixels, 0.0, 1.0)), (request.width, request.height)


# --- inpainting geometry --------------------------------------------------------------------------


def load_mask(path: str, size: tuple[int, int]) -> np.ndarray:
    """The mask as booleans (True = repaint): its alpha where it has one that varies, else its
    brightness above half. Another size than the image is an error, not a silent resize."""
    picture = load_picture(path)
    if (picture.width, picture.height) != size:
        raise EngineError(
            f"the mask is {picture.width}x{picture.height} but the image is {size[0]}x{size[1]}; "
            "paint or load a mask of the image's size."
        )
    pixels = picture.pixels
    if picture.has_alpha and float(pixels[..., 3].min()) < 1.0:
        return pixels[..., 3] > 0.5
    grey = pixels[..., :3].mean(axis=2) if pixels.shape[2] >= 3 else pixels[..., 0]
    return grey > 0.5


def feathered(mask: np.ndarray, blur: int) -> np.ndarray:
    """Blend weights: 0 outside the mask (those pixels stay exact), 1 from `blur` px inside it."""
    if blur <= 0:
        return mask.astype(np.float32)
    import cv2

    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    return np.clip(inside / float(blur), 0.0, 1.0).astype(np.float32)


def crop_box(mask: np.ndarray, padding: int, only_masked: bool) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the region the model sees."""
    height, width = mask.shape
    if not only_masked:
        return 0, 0, width, height
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    left = max(0, int(cols[0]) - padding)
    right = min(width, int(cols[-1]) + 1 + padding)
    top = max(0, int(rows[0]) - padding)
    bottom = min(height, int(rows[-1]) + 1 + padding)
    # at least 64 px each way: the UNet needs room around a tiny mask
    left, right = _widen(left, right, 64, width)
    top, bottom = _widen(top, bottom, 64, height)
    return left, top, right, bottom


def _widen(low: int, high: int, least: int, limit: int) -> tuple[int, int]:
    short = least - (high - low)
    if short <= 0:
        return low, high
    low = max(0, low - short // 2)
    high = min(limit, low + least)
    return max(0, high - least), high


def work_size(width: int, height: int, native: int) -> tuple[int, int]:
    """The crop scaled to about the model's native pixel count, in multiples of 8."""
    scale = math.sqrt(native * native / float(width * height))
    return round_to_8(max(8, width * scale)), round_to_8(max(8, height * scale))


def _inpaint(
    pipe: Any,
    watcher: _StepWatcher,
    family: Any,
    picture: Picture,
    mask: np.ndarray,
    request: InpaintRequest,
) -> tuple[Picture, tuple[int, int]]:
    import cv2
    from PIL import Image

    from studio.imaging import to_uint8

    weights = feathered(mask, request.mask_blur)
    left, top, right, bottom = crop_box(mask, request.padding, request.only_masked)
    box_w, box_h = right - left, bottom - top
    native = request.resolution or family.native
    work_w, work_h = work_size(box_w, box_h, native)

    pixels = picture.pixels
    rgb = pixels[..., :3] if pixels.shape[2] >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
    crop = to_uint8(rgb[top:bottom, left:right])
    crop_image = Image.fromarray(crop).resize((work_w, work_h), Image.Resampling.LANCZOS)
    crop_mask = mask[top:bottom, left:right].astype(np.uint8) * 255
    work_mask = cv2.resize(crop_mask, (work_w, work_h), interpolation=cv2.INTER_AREA) > 0
    mask_image = Image.fromarray(work_mask.astype(np.uint8) * 255, mode="L")

    generated = _call(
        pipe,
        watcher,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt or None,
        image=crop_image,
        mask_image=mask_image,
        width=work_w,
        height=work_h,
        strength=float(request.strength),
        num_inference_steps=request.steps,
        guidance_scale=float(request.guidance),
        generator=_generator(request.seed),
    )
    generated = cv2.resize(
        np.clip(generated, 0.0, 1.0), (box_w, box_h), interpolation=cv2.INTER_LANCZOS4
    )
    generated = np.clip(generated, 0.0, 1.0)

    channels = 4 if picture.has_alpha else 3
    out = np.empty((picture.height, picture.width, channels), dtype=np.float32)
    out[..., :3] = rgb
    if picture.has_alpha:
        out[..., 3] = pixels[..., 3]
    alpha = weights[top:bottom, left:right, None]
    region = out[top:bottom, left:right]
    region[..., :3] = region[..., :3] * (1.0 - alpha) + generated * alpha
    if picture.has_alpha:  # repainted pixels become opaque
        region[..., 3:] = region[..., 3:] * (1.0 - alpha) + alpha
    result = Picture(
        out, bit_depth=picture.bit_depth, icc_profile=picture.icc_profile, exif=picture.exif
    )
    return result, (work_w, work_h)


# --- Automatic1111 parameters ---------------------------------------------------------------------


def a1111_parameters(request: Any, model_name: str, sha256: str, size: tuple[int, int]) -> str:
    """The `parameters` text Automatic1111 writes, which its readers (and Civitai) parse."""
    lines = [request.prompt]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    fields = [
        f"Steps: {request.steps}",
        f"Sampler: {SCHEDULER_TITLES[request.scheduler]}",
        f"CFG scale: {float(request.guidance):g}",
        f"Seed: {request.seed}",
        f"Size: {size[0]}x{size[1]}",
        f"Model hash: {sha256[:10]}",
        f"Model: {model_name}",
    ]
    if isinstance(request, InpaintRequest):
        fields += [
            f"Denoising strength: {float(request.strength):g}",
            f"Mask blur: {request.mask_blur}",
        ]
    return "\n".join([*lines, ", ".join(fields)])
