"""Headless commands: every tool runs from a terminal on the same engines and records history.

    studio generate --model M --prompt P [--negative N] [--steps S] [--guidance G] [--seed X]
                    [--size WxH] [--count K] [--scheduler NAME] -o OUT_DIR
    studio inpaint IMAGE --mask MASK --model M --prompt P [--negative N] [--steps S] [--guidance G]
                   [--strength S] [--blur B] [--only-masked PAD] [--seed X] -o OUT_DIR
    studio upscale IN... -o OUT_DIR [--model FILE] [--scale S] [--tile N] [--ensemble 1|2|4|8]
                 [--device D]
    studio restore IN... -o OUT_DIR [--model FILE] [--strength S] [--denoise D] [--scratches]
                 [--mask FILE] [--colour] [--seed X] [--variations N] [--ensemble 1|2|4|8]
                 [--tile N]
    studio grade SRC... (--reference REF | --pair BEFORE AFTER | --lut F.cube | --preset F.json)
                 -o OUT_DIR [--strength S] [--preserve-luminance] [--lut-size N] [--export-lut F]
    studio history list [--json] [--state approved|rejected|pending] [--tool T] [--limit N]
    studio history review ID (--approve | --reject | --pending) [--rating N] [--note TEXT]
    studio history export --approved DIR
    studio models list [--json] [--tool upscale|restore|diffusion]
    studio models download NAME
    studio models import PATH [--copy] [--tool T]
    studio models remove NAME

Failures exit non-zero with a one-line reason; the full trace goes to the log file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from studio.app.context import AppContext, setup_logging
from studio.app.history import Entry
from studio.app.runs import describe_error, execute
from studio.app.settings import DEVICES, OUTPUT_FORMATS, PRECISIONS
from studio.engines.base import ENSEMBLE_SIZES, Cancelled
from studio.errors import UserError
from studio.files import copy_atomically
from studio.models.library import LIBRARY_TOOLS, ModelItem, ModelLibrary, human_size, item_summary

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    ctx = AppContext.open()
    log_file = setup_logging(ctx.dirs.log)
    try:
        return args.handler(ctx, args)
    except UserError as exc:
        print(f"studio: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        log.exception("command failed")
        print(f"studio: {describe_error(exc)} (details in {log_file})", file=sys.stderr)
        return EXIT_FAILED
    finally:
        ctx.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    gen = commands.add_parser("generate", help="generate images from a text prompt (diffusion)")
    _diffusion_arguments(gen)
    gen.add_argument(
        "--size",
        type=_size,
        default=None,
        metavar="WxH",
        help="image size, rounded to multiples of 8 (default: the model's native square)",
    )
    gen.add_argument("--count", type=int, default=1, help="number of images (seeds X, X+1, ...)")
    gen.set_defaults(handler=cmd_generate)

    inp = commands.add_parser("inpaint", help="repaint the masked part of an image (diffusion)")
    inp.add_argument("image", type=Path, metavar="IMAGE")
    inp.add_argument(
        "--mask",
        type=Path,
        required=True,
        metavar="MASK",
        help="same size as IMAGE; white (or opaque) = repaint",
    )
    _diffusion_arguments(inp)
    inp.add_argument(
        "--strength",
        type=float,
        default=None,
        help="0-1 (default 1 for inpainting models, 0.75 for others)",
    )
    inp.add_argument("--blur", type=int, default=4, help="feather the mask's edge, in pixels")
    inp.add_argument(
        "--only-masked",
        type=int,
        default=None,
        metavar="PAD",
        help="inpaint only a crop around the mask plus PAD pixels, at the model's resolution "
        "(full resolution kept; default: the whole image at the model's resolution)",
    )
    inp.set_defaults(handler=cmd_inpaint)

    up = commands.add_parser("upscale", help="upscale images with a super-resolution model")
    up.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="image files or folders")
    up.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR")
    up.add_argument(
        "--model",
        type=Path,
        default=None,
        metavar="FILE",
        help=".pth or .safetensors upscaler (any architecture spandrel reads); default: "
        "Studio's built-in x4 model (x2 for --scale 2 or less)",
    )
    up.add_argument(
        "--scale",
        type=float,
        default=None,
        help="output scale >= 1 (default: the model's own scale)",
    )
    up.add_argument(
        "--tile",
        type=int,
        default=None,
        help="tile size in pixels (default: from settings, 0 = automatic)",
    )
    _ensemble_argument(up)
    _run_arguments(up)
    up.set_defaults(handler=cmd_upscale)

    restore = commands.add_parser("restore", help="restore old, noisy or scratched photos")
    restore.add_argument(
        "inputs", nargs="+", type=Path, metavar="IN", help="image files or folders"
    )
    restore.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR")
    restore.add_argument(
        "--model",
        type=Path,
        default=None,
        metavar="FILE",
        help="a x1 restoration model spandrel reads (SCUNet, NAFNet, FBCNN, DRUNet, ...); "
        "default: Studio's built-in restoration VAE",
    )
    restore.add_argument("--strength", type=float, default=1.0, help="0-1 blend with the original")
    restore.add_argument(
        "--denoise", type=float, default=1.0, help="0-1: how much grain and noise to remove"
    )
    restore.add_argument(
        "--scratches", action="store_true", help="find scratches and dust and fill them"
    )
    restore.add_argument(
        "--mask",
        type=Path,
        metavar="FILE",
        help="with --scratches and one input: fill the white pixels of this mask instead of the "
        "detected damage",
    )
    restore.add_argument(
        "--colour", action="store_true", help="correct fading and colour casts (auto levels)"
    )
    restore.add_argument("--seed", type=int, default=0, help="seed of the variations")
    restore.add_argument(
        "--variations", type=int, default=1, help="pictures: the best guess, then alternatives"
    )
    _ensemble_argument(restore)
    restore.add_argument(
        "--tile",
        type=int,
        default=None,
        help="tile size in pixels (default: from settings, 0 = automatic)",
    )
    _run_arguments(restore)
    restore.set_defaults(handler=cmd_restore)

    grade = commands.add_parser("grade", help="colour-grade images with normalizing flows")
    grade.add_argument("inputs", nargs="+", type=Path, metavar="SRC", help="image files or folders")
    grade.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR")
    source = grade.add_argument_group("what to match (one of)")
    source.add_argument("--reference", type=Path, metavar="REF", help="take this photo's colours")
    source.add_argument(
        "--pair",
        type=Path,
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        help="learn the edit that turned BEFORE into AFTER",
    )
    source.add_argument("--lut", type=Path, metavar="FILE.cube", help="apply a .cube 3D LUT")
    source.add_argument("--preset", type=Path, metavar="FILE.json", help="apply a saved grade")
    grade.add_argument("--strength", type=float, default=1.0, help="0-2 (1 = full grade)")
    grade.add_argument(
        "--preserve-luminance",
        action="store_true",
        help="transfer colour only, keep the source's lightness",
    )
    grade.add_argument("--lut-size", type=int, choices=(17, 33, 65), default=33)
    grade.add_argument(
        "--interpolation",
        choices=("trilinear", "tetrahedral"),
        default="trilinear",
        help="how the LUT is read between its points",
    )
    grade.add_argument(
        "--export-lut", type=Path, metavar="FILE.cube", help="also write the grade as a .cube LUT"
    )
    grade.add_argument("--iterations", type=int, help="flow fitting iterations")
    grade.add_argument("--layers", type=int, help="coupling layers per flow")
    grade.add_argument("--hidden", type=int, help="hidden width of the coupling networks")
    grade.add_argument("--seed", type=int, default=0)
    _run_arguments(grade, precision=False)
    grade.set_defaults(handler=cmd_grade)

    hist = commands.add_parser("history", help="list, review and export the history")
    hist_commands = hist.add_subparsers(dest="history_command", metavar="ACTION", required=True)
    ls = hist_commands.add_parser("list", help="list entries, newest first")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.add_argument("--state", choices=("pending", "approved", "rejected"))
    ls.add_argument("--tool")
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(handler=cmd_history_list)

    review = hist_commands.add_parser("review", help="approve, reject, rate or annotate an entry")
    review.add_argument("entry", type=int)
    state = review.add_mutually_exclusive_group()
    state.add_argument("--approve", action="store_const", const="approved", dest="state")
    state.add_argument("--reject", action="store_const", const="rejected", dest="state")
    state.add_argument("--pending", action="store_const", const="pending", dest="state")
    review.add_argument("--rating", type=int, choices=range(6))
    review.add_argument("--note")
    review.set_defaults(handler=cmd_history_review)

    export = hist_commands.add_parser("export", help="export reviewed images with audit logs")
    export.add_argument(
        "--approved",
        type=Path,
        required=True,
        metavar="DIR",
        help="copy approved outputs plus audit.json and audit.csv here",
    )
    export.set_defaults(handler=cmd_history_export)
    models = commands.add_parser("models", help="list, download, import and remove models")
    model_commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    mls = model_commands.add_parser("list", help="installed and available models per tool")
    mls.add_argument("--json", action="store_true", help="one JSON object per line")
    mls.add_argument("--tool", choices=LIBRARY_TOOLS)
    mls.set_defaults(handler=cmd_models_list)
    fetch = model_commands.add_parser("download", help="download a catalogue model")
    fetch.add_argument("name")
    fetch.set_defaults(handler=cmd_models_download)
    imp = model_commands.add_parser("import", help="add a model file or diffusers folder")
    imp.add_argument("path", type=Path)
    imp.add_argument(
        "--copy",
        action="store_true",
        help="copy it into Studio's models folder (default: use it where it is)",
    )
    imp.add_argument("--tool", choices=LIBRARY_TOOLS, help="refuse the file unless it is for T")
    imp.set_defaults(handler=cmd_models_import)
    rm = model_commands.add_parser("remove", help="remove a model and the files Studio keeps")
    rm.add_argument("name")
    rm.set_defaults(handler=cmd_models_remove)
    return parser


def cmd_upscale(ctx: AppContext, args: argparse.Namespace) -> int:
    from studio.engines.upscale import UpscaleRequest
    from studio.models.shipped import default_upscaler
    from studio.models.upscalers import inspect_model

    files = list(expand_inputs(args.inputs))
    model_path = args.model or default_upscaler(2 if args.scale and args.scale <= 2 else 4)
    model = inspect_model(model_path)  # a bad model file fails once, before any image
    built_in = "" if args.model else ", built in"
    print(f"model: {model.name} ({model.architecture}, x{model.scale}{built_in})", file=sys.stderr)
    settings = ctx.settings

    def request_for(path: Path) -> UpscaleRequest:
        return UpscaleRequest(
            input_path=str(path.resolve()),
            model_path=str(model_path.resolve()),
            scale=args.scale,
            tile=settings.tile_size if args.tile is None else args.tile,
            ensemble=args.ensemble,
            output_format=args.output_format or settings.output_format,
            quality=args.quality or settings.jpeg_quality,
            device=args.device or settings.device,
            precision=args.precision or settings.precision,
        )

    return run_batch(ctx, files, request_for, args.output)


def cmd_restore(ctx: AppContext, args: argparse.Namespace) -> int:
    from studio.engines.restore import RestoreRequest
    from studio.models.shipped import default_restorer
    from studio.models.upscalers import inspect_model

    files = list(expand_inputs(args.inputs))
    if args.mask is not None:
        if not args.scratches:
            raise UserError("--mask says which pixels to fill; it needs --scratches.")
        if len(files) != 1:
            raise UserError("--mask is painted for one photo; give exactly one input with it.")
        if not args.mask.is_file():
            raise UserError(f"mask not found: {args.mask}")
    model_path = args.model or default_restorer()
    model = inspect_model(model_path)  # a bad model file fails once, before any image
    if model.purpose != "restore":
        raise UserError(
            f"{model.name} is a x{model.scale} upscaler; use it with `studio upscale`, or give "
            "a x1 restoration model (or none, for Studio's own)."
        )
    built_in = "" if args.model else ", built in"
    print(f"model: {model.name} ({model.architecture}{built_in})", file=sys.stderr)
    settings = ctx.settings

    def request_for(path: Path) -> RestoreRequest:
        return RestoreRequest(
            input_path=str(path.resolve()),
            model_path=str(Path(model_path).resolve()),
            strength=args.strength,
            denoise=args.denoise,
            fix_scratches=args.scratches,
            mask_path=str(args.mask.resolve()) if args.mask else None,
            colour_correction=args.colour,
            tile=settings.tile_size if args.tile is None else args.tile,
            seed=args.seed,
            variations=args.variations,
            ensemble=args.ensemble,
            output_format=args.output_format or settings.output_format,
            quality=args.quality or settings.jpeg_quality,
            device=args.device or settings.device,
            precision=args.precision or settings.precision,
        )

    def export_extras(entry: Entry, source: Path) -> None:
        """Variations, the uncertainty map and the damage mask beside the restored photo."""
        roles = entry.facts.get("outputs") or []
        for role, output in list(zip(roles, entry.outputs, strict=False))[1:]:
            tag = "_" + role.replace(" ", "-")
            target = args.output / f"{source.stem}{tag}{output.path.suffix}"
            counter = 1
            while target.exists():
                target = args.output / f"{source.stem}{tag}-{counter}{output.path.suffix}"
                counter += 1
            copy_atomically(output.path, target)
            print(f"{role} -> {target}", file=sys.stderr)

    return run_batch(ctx, files, request_for, args.output, after=export_extras)


def cmd_grade(ctx: AppContext, args: argparse.Namespace) -> int:
    from studio.engines.grade import GradeRequest

    files = list(expand_inputs(args.inputs))
    settings = ctx.settings
    modes = {
        "reference": args.reference,
        "pair": args.pair,
        "lut": args.lut,
        "preset": args.preset,
    }
    chosen = [mode for mode, value in modes.items() if value]
    if len(chosen) != 1:
        raise UserError("give exactly one of --reference, --pair, --lut or --preset.")
    mode = chosen[0]
    paths = {
        "reference_path": args.reference,
        "before_path": args.pair[0] if args.pair else None,
        "after_path": args.pair[1] if args.pair else None,
        "lut_path": args.lut,
        "preset_path": args.preset,
    }
    for name, path in paths.items():
        if path is not None and not path.is_file():
            raise UserError(f"{name.removesuffix('_path').replace('_', ' ')} not found: {path}")
    optional = {
        "coupling_layers": args.layers,
        "hidden": args.hidden,
        "iterations": args.iterations,
    }

    def request_for(path: Path) -> GradeRequest:
        return GradeRequest(
            input_path=str(path.resolve()),
            mode=mode,
            **{k: str(v.resolve()) for k, v in paths.items() if v is not None},
            strength=args.strength,
            preserve_luminance=args.preserve_luminance,
            lut_size=args.lut_size,
            interpolation=args.interpolation,
            seed=args.seed,
            output_format=args.output_format or settings.output_format,
            quality=args.quality or settings.jpeg_quality,
            device=args.device or settings.device,
            **{k: v for k, v in optional.items() if v is not None},
        )

    def export_lut(entry: Entry, source: Path) -> None:
        if args.export_lut is None:
            return
        cube = next((o.path for o in entry.outputs if o.path.suffix == ".cube"), None)
        if cube is None:
            raise UserError(f"entry #{entry.id} has no LUT to export.")
        target = args.export_lut
        if len(files) > 1:  # one LUT per source: a reference match depends on the source
            target = target.with_name(f"{target.stem}_{source.stem}{target.suffix or '.cube'}")
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_atomically(cube, target)
        print(f"LUT -> {target}", file=sys.stderr)

    return run_batch(ctx, files, request_for, args.output, after=export_lut)


def _ensemble_argument(parser: argparse.ArgumentParser) -> None:
    """`--ensemble`: the passes a tool's network averages (`tiling.dihedral_mean`)."""
    parser.add_argument(
        "--ensemble",
        type=int,
        choices=ENSEMBLE_SIZES,
        default=1,
        help="also run the model on the picture mirrored and turned, and average: a little "
        "cleaner, 2-8 times slower",
    )


def _run_arguments(parser: argparse.ArgumentParser, *, precision: bool = True) -> None:
    """Where a tool runs and how it writes its images; unset means the user's settings."""
    parser.add_argument("--device", choices=DEVICES, default=None)
    if precision:
        parser.add_argument("--precision", choices=PRECISIONS, default=None)
    parser.add_argument("--format", choices=OUTPUT_FORMATS, default=None, dest="output_format")
    parser.add_argument("--quality", type=int, default=None, help="JPEG/WebP quality 1-100")


def _diffusion_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        metavar="M",
        help="Hugging Face repo id (downloaded once into the Hugging Face cache), diffusers "
        "folder, or .safetensors/.ckpt checkpoint",
    )
    parser.add_argument("--prompt", required=True, metavar="P")
    parser.add_argument("--negative", default="", metavar="N", help="negative prompt")
    parser.add_argument("--steps", type=int, default=None, help="default: the model family's")
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale")
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="NAME",
        help="euler, euler_a, dpmpp_2m_karras, dpmpp_2m, ddim, unipc, lcm (distilled models)",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR")
    _run_arguments(parser)


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x768, not {text!r}") from None
    return width, height


def _diffusion_common(ctx: AppContext, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """Find the model (downloading a repo on first use, with a progress bar) and the defaults of
    its family for what the command line left out."""
    import random

    from studio.models.diffusion import resolve_model

    with cancel_on_interrupt() as cancel:
        bar = ProgressBar(f"model {args.model}", sys.stderr)
        model = resolve_model(args.model, progress=bar, cancelled=cancel.is_set)
        bar.close(f"{model.family.title}")
    family = model.family
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    if args.seed is None:
        print(f"seed: {seed}", file=sys.stderr)
    settings = ctx.settings
    common = dict(
        model=args.model,
        prompt=args.prompt,
        negative_prompt=args.negative,
        steps=args.steps if args.steps is not None else family.default_steps,
        guidance=args.guidance if args.guidance is not None else family.default_guidance,
        seed=seed,
        scheduler=args.scheduler or family.default_scheduler,
        output_format=args.output_format or settings.output_format,
        quality=args.quality or settings.jpeg_quality,
        device=args.device or settings.device,
        precision=args.precision or settings.precision,
        memory=settings.diffusion_memory,
    )
    return model, common


def cmd_generate(ctx: AppContext, args: argparse.Namespace) -> int:
    from studio.engines.diffusion import MAX_SEED, GenerateRequest, rounded_size

    if args.count < 1:
        raise UserError("--count must be at least 1.")
    model, common = _diffusion_common(ctx, args)
    width, height = args.size or (model.family.native, model.family.native)
    width, height, note = rounded_size(width, height)
    if note:
        print(f"studio: {note}", file=sys.stderr)
    stem = _slug(args.prompt)
    items = []
    for index in range(args.count):
        seed = (common["seed"] + index) % (MAX_SEED + 1)
        request = GenerateRequest(**{**common, "seed": seed}, width=width, height=height)
        items.append(
            BatchItem(f"seed {seed}", lambda r=request: r, lambda _e, name=f"{stem}_{seed}": name)
        )
    return run_requests(ctx, items, args.output, after=_print_warnings)


def cmd_inpaint(ctx: AppContext, args: argparse.Namespace) -> int:
    from studio.engines.diffusion import InpaintRequest

    for name, path in (("image", args.image), ("mask", args.mask)):
        if not path.is_file():
            raise UserError(f"{name} not found: {path}")
    model, common = _diffusion_common(ctx, args)
    strength = args.strength
    if strength is None:
        strength = 1.0 if model.family.inpainting else 0.75
    request = InpaintRequest(
        image_path=str(args.image.resolve()),
        mask_path=str(args.mask.resolve()),
        **common,
        strength=strength,
        mask_blur=args.blur,
        only_masked=args.only_masked is not None,
        padding=args.only_masked or 0,
    )
    item = BatchItem(args.image.name, lambda: request, lambda _e: f"{args.image.stem}_inpaint")
    return run_requests(ctx, [item], args.output, after=_print_warnings)


def _print_warnings(entry: Entry, _key: Any) -> None:
    for warning in entry.facts.get("warnings", []):
        print(f"studio: warning: {warning}", file=sys.stderr)


def _slug(text: str, limit: int = 40) -> str:
    words = "".join(c if c.isalnum() else " " for c in text.lower()).split()
    return "-".join(words)[:limit].strip("-") or "image"


@dataclass(frozen=True)
class BatchItem:
    """One run of a batch: what the progress bar says, how to build the request (building it may
    fail, e.g. on a bad file, without stopping the batch), and the name of the exported image."""

    label: str
    make_request: Callable[[], Any]
    stem: Callable[[Entry], str]
    key: Any = None  # handed to `after` on success


def run_batch(
    ctx: AppContext,
    files: Sequence[Path],
    request_for: Callable[[Path], Any],
    out_dir: Path,
    after: Callable[[Entry, Any], None] | None = None,
) -> int:
    """Run one request per file, each its own history entry; a bad file does not stop the rest."""
    items = [
        BatchItem(
            path.name,
            lambda path=path: request_for(path),
            lambda entry, path=path: f"{path.stem}{_tag(entry)}",
            path,
        )
        for path in files
    ]
    return run_requests(ctx, items, out_dir, after=after)


def run_requests(
    ctx: AppContext,
    items: Sequence[BatchItem],
    out_dir: Path,
    after: Callable[[Entry, Any], None] | None = None,
) -> int:
    """Run each item as its own history entry and copy its image to `out_dir`; a failure does not
    stop the rest, Ctrl-C does."""
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    with cancel_on_interrupt() as cancel:
        for index, item in enumerate(items, 1):
            if cancel.is_set():  # Ctrl-C between two items: stop before the next one starts
                return EXIT_CANCELLED
            bar = ProgressBar(f"[{index}/{len(items)}] {item.label}", sys.stderr)
            try:
                entry = execute(ctx, item.make_request(), progress=bar, cancelled=cancel.is_set)
            except Cancelled:
                bar.close("cancelled")
                return EXIT_CANCELLED
            except Exception as exc:  # one bad input must not stop the batch
                if not isinstance(exc, UserError):
                    log.exception("%s failed", item.label)
                bar.close("failed")
                print(f"studio: {item.label}: {describe_error(exc)}", file=sys.stderr)
                failures += 1
                continue
            written = export_output(entry, item.stem(entry), out_dir)
            bar.close(f"-> {written}  ({entry.model_name}, {entry.duration_s:.1f} s, #{entry.id})")
            if after is not None:
                after(entry, item.key)
    if failures:
        print(f"studio: {failures} of {len(items)} failed", file=sys.stderr)
    return EXIT_FAILED if failures else 0


def cmd_history_list(ctx: AppContext, args: argparse.Namespace) -> int:
    entries = ctx.history.query(tool=args.tool, review=args.state, limit=args.limit)
    for entry in entries:
        if args.json:
            print(json.dumps(entry_summary(entry), sort_keys=True))
        else:
            outputs = ", ".join(str(o.path) for o in entry.outputs) or "-"
            stars = "*" * (entry.rating or 0)
            print(
                f"#{entry.id:<5} {entry.created_at:%Y-%m-%d %H:%M}  {entry.tool:<8} "
                f"{entry.status.value:<9} {entry.review.value:<8} {stars:<5} "
                f"{entry.model_name or '-'}  {outputs}"
            )
    return 0


def cmd_history_review(ctx: AppContext, args: argparse.Namespace) -> int:
    entry = ctx.history.get(args.entry)
    if args.state:
        ctx.history.set_review(entry.id, args.state)
    if args.rating is not None:
        ctx.history.set_rating(entry.id, args.rating)
    if args.note is not None:
        ctx.history.set_note(entry.id, args.note)
    print(json.dumps(entry_summary(ctx.history.get(entry.id)), sort_keys=True))
    return 0


def cmd_history_export(ctx: AppContext, args: argparse.Namespace) -> int:
    report = ctx.history.export_approved(args.approved)
    print(
        f"exported {len(report.files)} files of {len(report.entry_ids)} approved entries "
        f"to {report.dest_dir} (with {report.audit_json.name} and {report.audit_csv.name})"
    )
    return 0


def cmd_models_list(ctx: AppContext, args: argparse.Namespace) -> int:
    library = ModelLibrary(ctx.dirs)
    items = library.items(args.tool)
    if args.json:
        for item in items:
            print(json.dumps(item_summary(item), sort_keys=True))
        return 0
    for tool in LIBRARY_TOOLS:
        rows = [item for item in items if item.tool == tool]
        if rows:
            print(f"{tool}:")
            for item in rows:
                print("  " + model_line(item))
    print(f"disk use of installed models: {human_size(library.disk_use(args.tool))}")
    return 0


def model_line(item: ModelItem) -> str:
    state = "installed" if item.installed else "available"
    size = human_size(item.size_bytes)
    size = f"~{size}" if not item.installed and item.kind == "hf_repo" else size
    licence = item.licence or "licence unknown"
    if item.non_commercial:
        licence = f"NON-COMMERCIAL: {licence}"
    return f"{item.name:<30} {state:<10} {item.origin:<9} {size:>9}  {item.family} · {licence}"


def cmd_models_download(ctx: AppContext, args: argparse.Namespace) -> int:
    library = ModelLibrary(ctx.dirs)
    item = library.find(args.name)
    if not item.installed:
        size = human_size(library.download_size(item.name))
        print(f"{item.name}: {item.family}, {size} to download", file=sys.stderr)
        print(f"licence: {item.licence or 'unknown'}", file=sys.stderr)
        if item.non_commercial:
            print("note: this licence does not allow commercial use", file=sys.stderr)
    with cancel_on_interrupt() as cancel:
        bar = ProgressBar(f"download {item.name}", sys.stderr)
        try:
            item = library.download(item.name, progress=bar, cancelled=cancel.is_set)
        except Cancelled:
            bar.close("cancelled")
            return EXIT_CANCELLED
        except Exception:
            bar.close("failed")
            raise
    bar.close(f"-> {item.path} ({human_size(item.size_bytes)})")
    return 0


def cmd_models_import(ctx: AppContext, args: argparse.Namespace) -> int:
    library = ModelLibrary(ctx.dirs)
    with cancel_on_interrupt() as cancel:
        bar = ProgressBar(f"import {args.path.name}", sys.stderr)
        try:
            item = library.import_path(
                args.path, copy=args.copy, tool=args.tool, progress=bar, cancelled=cancel.is_set
            )
        except Cancelled:
            bar.close("cancelled")
            return EXIT_CANCELLED
        except Exception:
            bar.close("failed")
            raise
    where = "copied to" if args.copy else "used in place at"
    bar.close(f"{item.name}: {item.family} for {item.tool}, {where} {item.path}")
    return 0


def cmd_models_remove(ctx: AppContext, args: argparse.Namespace) -> int:
    library = ModelLibrary(ctx.dirs)
    item = library.find(args.name)
    freed = library.remove(item.name)
    if item.in_place:
        print(f"removed {item.name} from the library; {item.path} was left where it is")
    elif item.kind == "hf_repo":
        print(f"removed {item.name} from the Hugging Face cache ({human_size(freed)} freed)")
    else:
        print(f"removed {item.name} ({human_size(freed)} freed)")
    return 0


def entry_summary(entry: Entry) -> dict:
    return {
        "id": entry.id,
        "tool": entry.tool,
        "status": entry.status.value,
        "review": entry.review.value,
        "rating": entry.rating,
        "note": entry.note,
        "model": entry.model_name,
        "model_sha256": entry.model_sha256,
        "seed": entry.seed,
        "device": entry.device,
        "dtype": entry.dtype,
        "duration_s": entry.duration_s,
        "created_at": entry.created_at.isoformat(),
        "parent": entry.parent_id,
        "request": entry.request,
        "inputs": [str(i.path) for i in entry.inputs],
        "outputs": [str(o.path) for o in entry.outputs],
        "error": entry.error,
    }


def expand_inputs(paths: Sequence[Path]) -> Iterator[Path]:
    """Files as given, folders as their images (sorted, not recursive)."""
    for path in paths:
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise UserError(f"no images in folder {path}")
            yield from images
        elif path.is_file():
            yield path
        else:
            raise UserError(f"input not found: {path}")


def _tag(entry: Entry) -> str:
    scale = entry.request.get("scale") or entry.facts.get("scale")
    return f"_x{scale:g}" if isinstance(scale, (int, float)) else f"_{entry.tool}"


def export_output(entry: Entry, stem: str, out_dir: Path) -> Path:
    """Copy the entry's image next to the others, never overwriting a file that is there."""
    output = entry.outputs[0].path
    target = out_dir / f"{stem}{output.suffix}"
    counter = 1
    while target.exists():
        target = out_dir / f"{stem}-{counter}{output.suffix}"
        counter += 1
    copy_atomically(output, target)
    return target


@contextlib.contextmanager
def cancel_on_interrupt() -> Iterator[threading.Event]:
    """Ctrl-C asks the running engine to stop at its next tile; a second Ctrl-C is the usual one."""
    event = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if event.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        event.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)


class ProgressBar:
    """A one-line progress bar with ETA; plain lines when the stream is not a terminal."""

    def __init__(self, label: str, stream: TextIO, width: int = 28) -> None:
        self.label = label
        self.stream = stream
        self.width = width
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self._last_percent = -1

    def __call__(self, fraction: float, message: str, preview: object = None) -> None:
        percent = int(fraction * 100)
        if not self.tty and percent // 10 == self._last_percent // 10:
            return
        self._last_percent = percent
        filled = int(self.width * fraction)
        elapsed = time.monotonic() - self.started
        eta = f"ETA {elapsed * (1 - fraction) / fraction:4.0f}s" if fraction > 0.02 else ""
        bar = "#" * filled + "." * (self.width - filled)
        line = f"{self.label} [{bar}] {percent:3d}% {message} {eta}"
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(160))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self, outcome: str) -> None:
        end = "\r" if self.tty else ""
        self.stream.write(f"{end}{self.label} {outcome}".ljust(160 if self.tty else 0) + "\n")
        self.stream.flush()
