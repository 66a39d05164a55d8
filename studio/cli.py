"""Headless commands: every tool runs from a terminal on the same engines and records history.

    studio upscale IN... -o OUT_DIR --model FILE [--scale S] [--tile N] [--device D]
    studio history list [--json] [--state approved|rejected|pending] [--tool T] [--limit N]
    studio history review ID (--approve | --reject | --pending) [--rating N] [--note TEXT]
    studio history export --approved DIR

Failures exit non-zero with a one-line reason; the full trace goes to the log file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from studio.app.context import AppContext, setup_logging
from studio.app.history import Entry
from studio.app.runs import describe_error, execute
from studio.app.settings import DEVICES, OUTPUT_FORMATS, PRECISIONS
from studio.engines.base import Cancelled
from studio.errors import UserError

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
        import logging

        logging.getLogger(__name__).exception("command failed")
        print(f"studio: {describe_error(exc)} (details in {log_file})", file=sys.stderr)
        return EXIT_FAILED
    finally:
        ctx.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    up = commands.add_parser("upscale", help="upscale images with a super-resolution model")
    up.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="image files or folders")
    up.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR")
    up.add_argument(
        "--model",
        type=Path,
        required=True,
        metavar="FILE",
        help=".pth or .safetensors upscaler (any architecture spandrel reads)",
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
    up.add_argument("--device", choices=DEVICES, default=None)
    up.add_argument("--precision", choices=PRECISIONS, default=None)
    up.add_argument("--format", choices=OUTPUT_FORMATS, default=None, dest="output_format")
    up.add_argument("--quality", type=int, default=None, help="JPEG/WebP quality 1-100")
    up.set_defaults(handler=cmd_upscale)

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
    return parser


def cmd_upscale(ctx: AppContext, args: argparse.Namespace) -> int:
    from studio.engines.upscale import UpscaleRequest
    from studio.models.upscalers import inspect_model

    files = list(expand_inputs(args.inputs))
    model = inspect_model(args.model)  # a bad model file fails once, before any image
    print(f"model: {model.name} ({model.architecture}, x{model.scale})", file=sys.stderr)
    args.output.mkdir(parents=True, exist_ok=True)
    settings = ctx.settings
    failures = 0
    with cancel_on_interrupt() as cancel:
        for index, path in enumerate(files, 1):
            request = UpscaleRequest(
                input_path=str(path.resolve()),
                model_path=str(args.model.resolve()),
                scale=args.scale,
                tile=settings.tile_size if args.tile is None else args.tile,
                output_format=args.output_format or settings.output_format,
                quality=args.quality or settings.jpeg_quality,
                device=args.device or settings.device,
                precision=args.precision or settings.precision,
            )
            bar = ProgressBar(f"[{index}/{len(files)}] {path.name}", sys.stderr)
            try:
                entry = execute(ctx, request, progress=bar, cancelled=cancel.is_set)
            except Cancelled:
                bar.close("cancelled")
                return EXIT_CANCELLED
            except UserError as exc:
                bar.close("failed")
                print(f"studio: {path}: {exc}", file=sys.stderr)
                failures += 1
                continue
            written = export_output(entry, path, args.output)
            bar.close(f"-> {written}  ({entry.model_name}, {entry.duration_s:.1f} s, #{entry.id})")
    if failures:
        print(f"studio: {failures} of {len(files)} images failed", file=sys.stderr)
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


def export_output(entry: Entry, source: Path, out_dir: Path) -> Path:
    """Copy the entry's output next to the others, never overwriting a file that is there."""
    output = entry.outputs[0].path
    scale = entry.request.get("scale") or entry.facts.get("scale")
    tag = f"_x{scale:g}" if isinstance(scale, (int, float)) else f"_{entry.tool}"
    target = out_dir / f"{source.stem}{tag}{output.suffix}"
    counter = 1
    while target.exists():
        target = out_dir / f"{source.stem}{tag}-{counter}{output.suffix}"
        counter += 1
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(output, tmp)
    os.replace(tmp, target)
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
