"""Running one request as one unit: the engine call, its output files and its history entry.

The GUI's jobs, the CLI and re-run from the history all go through `execute`, so every result is
recorded the same way. Engines are imported when a run starts, never when Studio starts.
"""

from __future__ import annotations

import errno
import importlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from studio import __version__
from studio.app.context import AppContext
from studio.app.history import Entry
from studio.engines.base import CancelCheck, Cancelled, Progress, RunFacts
from studio.errors import UserError
from studio.imaging import (
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    save_picture,
)


@dataclass(frozen=True)
class Tool:
    name: str
    title: str
    engine_module: str
    request_class: str
    digital_source_type: str

    def engine(self) -> Any:
        return importlib.import_module(self.engine_module)

    def request_type(self) -> type:
        return getattr(self.engine(), self.request_class)


TOOLS: dict[str, Tool] = {
    "upscale": Tool(
        name="upscale",
        title="Upscale",
        engine_module="studio.engines.upscale",
        request_class="UpscaleRequest",
        digital_source_type=COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    ),
    "restore": Tool(
        name="restore",
        title="Restore",
        engine_module="studio.engines.restore",
        request_class="RestoreRequest",
        digital_source_type=COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    ),
    "generate": Tool(
        name="generate",
        title="Generate",
        engine_module="studio.engines.diffusion",
        request_class="GenerateRequest",
        digital_source_type=TRAINED_ALGORITHMIC_MEDIA,
    ),
    "inpaint": Tool(
        name="inpaint",
        title="Inpaint",
        engine_module="studio.engines.diffusion",
        request_class="InpaintRequest",
        digital_source_type=COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    ),
    "grade": Tool(
        name="grade",
        title="Grade",
        engine_module="studio.engines.grade",
        request_class="GradeRequest",
        digital_source_type=COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    ),
}

SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tif"}


def request_from_entry(entry: Entry) -> Any:
    """Rebuild the request an entry ran with, reading the history's copies of its files.

    The stored copies are what ran: the originals may since have moved, changed or gone.
    """
    request = TOOLS[entry.tool].request_type().from_dict(entry.request)
    names = request.input_fields()
    images = [name for name in names if name in request.image_fields]
    if len(names) != len(entry.inputs) and len(images) == len(entry.inputs):
        # its other files were not stored (recorded before they were, or an older preset that
        # is two files): they are read where they are
        names = images
    if len(names) != len(entry.inputs):
        raise UserError(
            f"entry #{entry.id} stored {len(entry.inputs)} input files where its request "
            f"reads {len(names)}; it cannot be re-run exactly."
        )
    stored = {name: str(stored.path) for name, stored in zip(names, entry.inputs, strict=True)}
    request = replace(request, **stored)
    reuse = getattr(request, "reusing_outputs", None)  # e.g. a grade applies its stored fit
    return reuse([output.path for output in entry.outputs]) if reuse else request


def execute(
    ctx: AppContext,
    request: Any,
    *,
    progress: Progress,
    cancelled: CancelCheck,
    parent_id: int | None = None,
) -> Entry:
    """Run `request`, write its outputs into the history store and return the finished entry.

    Cancellation and failure leave no output file; the entry records which of the two happened.
    """
    tool = TOOLS[request.tool]
    history = ctx.history
    entry_id = history.start(tool.name, request.to_dict(), request.input_paths(), parent_id)
    started = time.perf_counter()
    try:
        result = tool.engine().run(request, progress=progress, cancelled=cancelled, cache=ctx.cache)
        if cancelled():
            raise Cancelled
        facts: RunFacts = result.facts
        progress(1.0, "Saving")
        outputs: list[Path] = []

        def next_output(suffix: str) -> Path:
            path = history.output_path(entry_id, len(outputs), suffix)
            outputs.append(path)
            return path

        provenance = _provenance(entry_id, tool, request, facts)
        parameters = getattr(result, "parameters", None) or [None] * len(result.pictures)
        for picture, picture_parameters in zip(result.pictures, parameters, strict=True):
            save_picture(
                picture,
                next_output(SUFFIXES[request.output_format]),
                fmt=request.output_format,
                quality=request.quality,
                provenance=provenance,
                parameters=picture_parameters,
                digital_source_type=getattr(
                    result, "digital_source_type", tool.digital_source_type
                ),
            )
        write_extras = getattr(result, "write_extras", None)
        if write_extras is not None:  # files beside the images, e.g. a fitted grade and its LUT
            write_extras(next_output)
        return history.complete(
            entry_id,
            outputs,
            model_name=facts.model_name,
            model_sha256=facts.model_sha256,
            seed=facts.seed,
            device=facts.device,
            dtype=facts.dtype,
            duration_s=time.perf_counter() - started,
            facts=facts.extra,
        )
    except Cancelled:
        history.cancel(entry_id)
        raise
    except BaseException as exc:
        history.fail(entry_id, describe_error(exc))
        raise


def describe_error(exc: BaseException) -> str:
    """One line a person can act on: what failed and, where we know it, what to do."""
    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return "Out of memory. Choose a smaller tile size in Settings, or close other programs."
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"The disk is full ({exc.filename or 'output folder'}). Free some space and re-run."
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or exc} : {exc.filename}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _provenance(entry_id: int, tool: Tool, request: Any, facts: RunFacts) -> str:
    return json.dumps(
        {
            "software": f"Studio {__version__}",
            "entry": entry_id,
            "tool": tool.name,
            "request": request.to_dict(),
            "model": {"name": facts.model_name, "sha256": facts.model_sha256},
            "seed": facts.seed,
            "device": facts.device,
            "dtype": facts.dtype,
            "facts": facts.extra,
        },
        sort_keys=True,
    )
