"""The models each tool can use, in one list: shipped, catalogued (installed or not) and imported.

`ModelLibrary(dirs)` answers "what can the Upscale tab offer?" (`installed("upscale")`), "what
could be downloaded for it?" (`available("upscale")`), and does the three things a person does with
models: `download` a catalogue entry, `import_path` a file or folder from disk, `remove` a model.

Where things are:
- catalogue files (direct URLs) download into `<data>/models/`, checked against size and SHA-256;
- Hugging Face repositories live in the standard Hugging Face cache (`studio.models.hub`), shared
  with other tools;
- imports are either referenced in place (Studio never deletes or moves them) or copied into
  `<data>/models/imported/`; either way they are recorded, with their SHA-256, in
  `<data>/models/library.json`, written atomically under a lock file, so that a window and a
  command line changing it at once both keep their records.

An imported file is detected without running anything from it: a diffusers folder by its
`model_index.json`, a single-file diffusion checkpoint by its tensor names (safetensors header, or
`torch.load(weights_only=True)` for pickles), anything else through spandrel, which names the
architecture and scale (an upscaler when the scale is above 1, a restorer otherwise). A file that
is the published file of a catalogue entry (same SHA-256, or the file a "download by hand" entry
names) installs that entry.

Tools: "upscale", "restore" and "diffusion" (Generate and Inpaint share the diffusion models).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from studio.errors import UserError
from studio.models import hub
from studio.models.catalogue import CatalogueEntry, is_installed, load_catalogue
from studio.models.downloads import download, partial_path
from studio.paths import UserDirs
from studio.progress import CancelCheck, Cancelled, Progress, never_cancelled, no_progress

LIBRARY_TOOLS = ("upscale", "restore", "diffusion")
REGISTRY_VERSION = 1
REGISTRY_LOCK_SECONDS = 30  # how long a change waits for another Studio's
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pth", ".pt", ".bin")

# Catalogue tools -> library tools: the Generate and Inpaint tabs share diffusion models.
_TOOL_OF = {"upscale": "upscale", "restore": "restore", "generate": "diffusion"}
_TOOL_OF["inpaint"] = "diffusion"

# Tensor-name prefixes of single-file diffusion checkpoints, with the family they reveal (most
# specific first), and of adapters for them, which are not models on their own.
_CHECKPOINT_FAMILIES = (
    ("double_blocks.0.img_attn.", "Flux"),
    ("model.diffusion_model.double_blocks.", "Flux"),
    ("model.diffusion_model.joint_blocks.", "Stable Diffusion 3"),
    ("joint_blocks.0.", "Stable Diffusion 3"),
    ("conditioner.embedders.1.", "Stable Diffusion XL"),
    ("cond_stage_model.model.", "Stable Diffusion 2"),
    ("cond_stage_model.transformer.", "Stable Diffusion 1"),
    ("model.diffusion_model.", "Stable Diffusion"),
)
_ADAPTER_MARKERS = ("lora_unet_", "lora_te_", "lora_te1_", ".lora_down.", ".lora_A.", ".lora_B.")


class LibraryError(UserError):
    """A library operation that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class ModelItem:
    """One model a tool can use (installed) or could get (not installed)."""

    name: str
    tool: str  # "upscale" | "restore" | "diffusion"
    location: str  # the file or folder path, or the Hugging Face repository id
    kind: str  # "file" (spandrel) | "checkpoint" (single-file diffusion) | "diffusers" | "hf_repo"
    family: str  # architecture or model family
    size_bytes: int | None  # on disk when installed, else the (approximate) download size
    licence: str | None
    non_commercial: bool = False
    installed: bool = False
    origin: str = "catalogue"  # "shipped" | "catalogue" | "imported"
    description: str = ""
    sha256: str | None = None  # of the file; of the folder's file list and hashes for folders
    path: Path | None = None  # where it is on disk when installed (an HF snapshot folder too)
    in_place: bool = False  # an import referenced where the person keeps it
    source_kind: str = ""  # catalogue source: "url" | "hf_repo" | "page" | "shipped"; "" imports
    page: str | None = None  # a "download by hand" entry's web page

    @property
    def removable(self) -> bool:
        return self.installed and self.origin != "shipped"

    @property
    def downloadable(self) -> bool:
        return not self.installed and self.source_kind in ("url", "hf_repo")


class ModelLibrary:
    """What each tool can use; see the module docstring. Cheap to create: reads on each call."""

    def __init__(self, dirs: UserDirs) -> None:
        self.dirs = dirs
        self.models_dir = dirs.data / "models"
        self.imports_dir = self.models_dir / "imported"
        self.registry_path = self.models_dir / "library.json"

    # --- Listing -------------------------------------------------------------------------------

    def items(self, tool: str | None = None) -> list[ModelItem]:
        """Every model, installed or not: shipped first, then the catalogue, then imports."""
        if tool is not None and tool not in LIBRARY_TOOLS:
            raise ValueError(f"unknown tool {tool!r}; expected one of {', '.join(LIBRARY_TOOLS)}")
        records = self._records()
        claimed = {r["catalogue"]: r for r in records if r.get("catalogue")}
        items = [self._catalogue_item(e, claimed.get(e.name)) for e in self._catalogue()]
        items += [_imported_item(r) for r in records if not r.get("catalogue")]
        return [item for item in items if tool is None or item.tool == tool]

    def installed(self, tool: str | None = None) -> list[ModelItem]:
        return [item for item in self.items(tool) if item.installed]

    def available(self, tool: str | None = None) -> list[ModelItem]:
        """Catalogue models not on this machine yet."""
        return [item for item in self.items(tool) if not item.installed]

    def find(self, name: str) -> ModelItem:
        """The model called `name` (case-insensitive); `LibraryError` naming the choices if none."""
        items = self.items()
        wanted = name.casefold()
        for item in items:
            if item.name.casefold() == wanted:
                return item
        names = ", ".join(item.name for item in items)
        raise LibraryError(f"No model called {name!r}. Known models: {names}.")

    def disk_use(self, tool: str | None = None) -> int:
        """Bytes the installed models take (shipped and referenced-in-place files included)."""
        return sum(item.size_bytes or 0 for item in self.installed(tool))

    # --- Downloading ---------------------------------------------------------------------------

    def download_size(self, name: str) -> int | None:
        """Bytes a download of `name` fetches: the catalogue's for a file, the Hub's answer for a
        Hugging Face repository (asks the network); None where unknown."""
        entry = self._entry(self.find(name).name)
        if entry.source.kind != "hf_repo":
            return entry.size
        return hub.repo_download_size(entry.source.location, entry.source.files)

    def download(
        self,
        name: str,
        *,
        progress: Progress = no_progress,
        cancelled: CancelCheck = never_cancelled,
    ) -> ModelItem:
        """Fetch a catalogue model (a verified file, or a Hugging Face repository)."""
        item = self.find(name)
        if item.installed:
            progress(1.0, f"{item.name} is already installed.")
            return item
        entry = self._entry(item.name)
        source = entry.source
        if source.kind == "page":
            raise LibraryError(
                f"{entry.name} is published only on {source.location}: download "
                f"{source.files[0]} there by hand, then import it (Models → Import…, or "
                f"`studio models import {source.files[0]}`)."
            )
        if source.kind == "hf_repo":
            hub.fetch_repo(
                source.location,
                allow_patterns=source.files,
                progress=progress,
                cancelled=cancelled,
            )
        else:
            download(
                source.location,
                self.models_dir / (source.file_name or entry.name),
                sha256=entry.sha256,
                size=entry.size,
                progress=progress,
                cancelled=cancelled,
            )
        return self.find(entry.name)

    # --- Importing -----------------------------------------------------------------------------

    def import_path(
        self,
        path: Path,
        *,
        copy: bool,
        tool: str | None = None,
        progress: Progress = no_progress,
        cancelled: CancelCheck = never_cancelled,
    ) -> ModelItem:
        """Detect, hash and record a model file or diffusers folder; copy it when `copy`."""
        source = Path(path).expanduser().absolute()
        if tool is not None and tool not in LIBRARY_TOOLS:
            raise LibraryError(f"Unknown tool {tool!r}; choose one of {', '.join(LIBRARY_TOOLS)}.")
        detected = detect_model(source)
        if tool is not None and tool != detected.tool:
            raise LibraryError(
                f"{source.name} is a {detected.family} model for {detected.tool}, not {tool}."
            )
        sha256 = _hash(source, progress, cancelled)
        _refuse_duplicate(self._records(), source, sha256)  # before a long copy
        entry = self._matching_entry(source, sha256, detected.tool)
        stem = source.stem if source.is_file() else source.name
        copied = self._copy_in(source, progress, cancelled) if copy else None
        record: dict[str, Any] = {}

        def add(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            # Under the lock: another Studio may have imported meanwhile. The name is chosen and
            # the copy renamed into place here, so two imports never claim one name or file.
            _refuse_duplicate(records, source, sha256)
            name = entry.name if entry else self._free_name(stem)
            location = source
            if copied is not None:
                location = self.imports_dir / (name + source.suffix if source.is_file() else name)
                try:
                    os.replace(copied, location)
                except OSError as error:
                    raise LibraryError(
                        f"Could not place {source.name} in {self.imports_dir}: {error}."
                    ) from error
            record.update(
                name=name,
                tool=detected.tool,
                kind=detected.kind,
                family=detected.family,
                location=str(location),
                in_place=not copy,
                sha256=sha256,
                size_bytes=_disk_size(location),
                catalogue=entry.name if entry else None,
                added=time.strftime("%Y-%m-%dT%H:%M:%S"),
            )
            return [*records, record]

        try:
            self._change_records(add)
        finally:
            if copied is not None and copied.exists():  # refused: only this import's copy goes
                _delete(copied)
        progress(1.0, f"Imported {record['name']}.")
        return self.find(record["name"])

    def _copy_in(self, source: Path, progress: Progress, cancelled: CancelCheck) -> Path:
        """A complete copy under a temporary name in the imports folder (all or nothing); the
        import renames it once the registry takes it."""
        self.imports_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.imports_dir / f".{source.name}.{secrets.token_hex(4)}.tmp"
        try:
            if source.is_dir():
                progress(0.0, f"Copying {source.name}…")
                shutil.copytree(source, temporary, symlinks=False)
            else:
                _copy_file(source, temporary, progress, cancelled)
            if cancelled():
                raise Cancelled(f"Import of {source.name} cancelled; nothing was copied.")
        except BaseException as error:
            _delete(temporary)
            if isinstance(error, OSError):
                raise LibraryError(
                    f"Could not copy {source.name} into {self.imports_dir}: {error}."
                ) from error
            raise
        return temporary

    # --- Removing ------------------------------------------------------------------------------

    def remove(self, name: str) -> int:
        """Remove a model and the files Studio owns for it; bytes freed.

        Shipped models stay; a file referenced in place is forgotten but never deleted; a Hugging
        Face repository is deleted from the shared cache (other tools lose it too).
        """
        item = self.find(name)
        if item.origin == "shipped":
            raise LibraryError(f"{item.name} is built into Studio and cannot be removed.")
        if not item.installed:
            raise LibraryError(f"{item.name} is not installed.")
        record = next((r for r in self._records() if r["name"] == item.name), None)
        if record is not None:
            self._change_records(lambda records: [r for r in records if r["name"] != item.name])
            if record["in_place"]:
                return 0
            return _delete(Path(record["location"]))
        if item.kind == "hf_repo":
            return hub.delete_cached_repo(item.location)
        freed = _delete(Path(item.location))
        partial_path(Path(item.location)).unlink(missing_ok=True)
        return freed

    # --- Internals -----------------------------------------------------------------------------

    def _catalogue(self) -> list[CatalogueEntry]:
        return load_catalogue()

    def _entry(self, name: str) -> CatalogueEntry:
        entry = next((e for e in self._catalogue() if e.name == name), None)
        if entry is None:
            raise LibraryError(f"{name} was imported; it has nothing to download.")
        return entry

    def _catalogue_item(self, entry: CatalogueEntry, record: dict | None) -> ModelItem:
        source = entry.source
        item = ModelItem(
            name=entry.name,
            tool=_TOOL_OF[entry.tool],
            location=source.location,
            kind="hf_repo" if source.kind == "hf_repo" else "file",
            family=entry.family,
            size_bytes=entry.size,
            licence=entry.licence,
            non_commercial=entry.non_commercial,
            origin="shipped" if entry.shipped else "catalogue",
            description=entry.description,
            sha256=entry.sha256,
            source_kind=source.kind,
            page=source.location if source.kind == "page" else None,
        )
        if record is not None:  # installed by importing its published file
            path = Path(record["location"])
            return replace(
                item,
                location=str(path),
                installed=path.exists(),
                size_bytes=record["size_bytes"],
                sha256=record["sha256"],
                path=path,
                in_place=record["in_place"],
            )
        if source.kind == "hf_repo":
            snapshot = hub.cached_repo(source.location, allow_patterns=source.files)
            if snapshot is None:
                return item
            return replace(
                item, installed=True, path=snapshot, size_bytes=hub.cached_size(source.location)
            )
        if source.kind == "shipped":
            path = Path(source.location)
        else:
            path = self.models_dir / (source.file_name or "")
        if not is_installed(entry, self.models_dir):
            return item
        return replace(
            item, installed=True, location=str(path), path=path, size_bytes=path.stat().st_size
        )

    def _matching_entry(self, source: Path, sha256: str, tool: str) -> CatalogueEntry | None:
        """The catalogue entry whose published file this is, if any and not installed yet."""
        for entry in self._catalogue():
            if entry.shipped or _TOOL_OF[entry.tool] != tool:
                continue
            same_hash = entry.sha256 is not None and entry.sha256 == sha256
            by_hand = entry.source.kind == "page" and entry.source.files[0] == source.name
            if same_hash or by_hand:
                if is_installed(entry, self.models_dir):
                    raise LibraryError(f"{source.name} is {entry.name}, which is installed.")
                return entry
        return None

    def _free_name(self, stem: str) -> str:
        taken = {item.name.casefold() for item in self.items()}
        name, counter = stem, 2
        while name.casefold() in taken:
            name, counter = f"{stem}-{counter}", counter + 1
        return name

    def _records(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.registry_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as error:
            raise LibraryError(
                f"The model library {self.registry_path} cannot be read ({error}); "
                "move it aside and import the models again."
            ) from error
        records = data.get("models") if isinstance(data, dict) else None
        if not isinstance(records, list) or not all(_valid_record(r) for r in records):
            raise LibraryError(
                f"The model library {self.registry_path} is damaged; "
                "move it aside and import the models again."
            )
        return records

    def _change_records(
        self, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
    ) -> None:
        """Read, change and write the registry while holding its lock file: a Studio window and
        a `studio models` command changing it at the same moment each keep their record."""
        from filelock import FileLock, Timeout

        self.models_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.registry_path.with_name("library.json.lock"))
        try:
            with lock.acquire(timeout=REGISTRY_LOCK_SECONDS):
                self._save_records(change(self._records()))
        except Timeout as error:
            raise LibraryError(
                f"Another Studio has been changing the model library ({self.registry_path}) "
                f"for over {REGISTRY_LOCK_SECONDS} s; try again when it is done."
            ) from error

    def _save_records(self, records: list[dict[str, Any]]) -> None:
        text = json.dumps({"version": REGISTRY_VERSION, "models": records}, indent=1)
        temporary = self.registry_path.with_name(f".library.{secrets.token_hex(4)}.tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.registry_path)
        finally:
            temporary.unlink(missing_ok=True)


# --- Detection ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detected:
    tool: str
    kind: str
    family: str


def detect_model(path: Path) -> Detected:
    """What a file or folder is, without running anything from it; `LibraryError` if no model."""
    if path.is_dir():
        return _detect_folder(path)
    if not path.is_file():
        raise LibraryError(f"{path} does not exist.")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise LibraryError(
            f"{path.name} is not a model file; Studio imports {', '.join(WEIGHT_SUFFIXES)} files "
            "and diffusers folders (with model_index.json)."
        )
    keys = _tensor_names(path)
    if any(marker in key for key in keys for marker in _ADAPTER_MARKERS):
        raise LibraryError(
            f"{path.name} is a LoRA (an adapter for a diffusion model), not a model on its own; "
            "Studio does not use LoRAs yet."
        )
    for prefix, family in _CHECKPOINT_FAMILIES:
        if any(key.startswith(prefix) for key in keys):
            return Detected("diffusion", "checkpoint", f"{family} (single-file checkpoint)")
    from studio.models.upscalers import ModelFileError, inspect_model

    try:
        info = inspect_model(path)
    except ModelFileError as error:
        raise LibraryError(str(error)) from error
    tool = "upscale" if info.purpose == "upscale" else "restore"
    scale = f" x{info.scale}" if info.scale > 1 else ""
    return Detected(tool, "file", f"{info.architecture}{scale}")


def _detect_folder(folder: Path) -> Detected:
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise LibraryError(
            f"{folder.name} is a folder without model_index.json: not a diffusers model. Import "
            "a diffusers folder, or a model file (.safetensors, .pth, .ckpt)."
        )
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        family = str(index["_class_name"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise LibraryError(f"{index_file} is damaged ({error}).") from error
    if not hub.diffusers_folder_complete(folder):
        raise LibraryError(
            f"{folder.name} is an incomplete diffusers folder: a component it lists has no "
            "weights. Copy the whole folder again."
        )
    return Detected("diffusion", "diffusers", family)


def _tensor_names(path: Path) -> list[str]:
    if path.suffix.lower() == ".safetensors":
        return _safetensors_names(path)
    return _pickle_names(path)


def _safetensors_names(path: Path) -> list[str]:
    """The tensor names from a safetensors header, without reading the tensors."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error) as error:
        raise LibraryError(
            f"{path.name} is not a valid .safetensors file (damaged, or only partly downloaded)."
        ) from error
    return [key for key in header if key != "__metadata__"]


def _pickle_names(path: Path) -> list[str]:
    """Tensor names of a PyTorch pickle, read with `weights_only=True`: nothing in it runs."""
    from studio.models.upscalers import ModelFileError, _read_pickle

    try:
        data = _read_pickle(path)
    except ModelFileError as error:
        raise LibraryError(str(error)) from error
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise LibraryError(f"{path.name} holds no model weights (but a {type(data).__name__}).")
    return [str(key) for key in data]


# --- Files -------------------------------------------------------------------------------------


def _hash(path: Path, progress: Progress, cancelled: CancelCheck) -> str:
    """SHA-256 of a file; of a folder, the SHA-256 of its sorted file list and their hashes."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    total = sum(file.stat().st_size for file in files) or 1
    done = 0
    lines = []
    for file in files:
        relative = file.relative_to(path).as_posix() if path.is_dir() else ""
        digest = hashlib.sha256()
        with open(file, "rb") as handle:
            while block := handle.read(4 * 1024 * 1024):
                if cancelled():
                    raise Cancelled(f"Import of {path.name} cancelled.")
                digest.update(block)
                done += len(block)
                progress(0.5 * done / total, f"Checking {path.name}: {done / 1e6:.0f} MB")
        lines.append(f"{relative} {digest.hexdigest()}")
    if not path.is_dir():
        return lines[0].split()[-1]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _copy_file(source: Path, target: Path, progress: Progress, cancelled: CancelCheck) -> None:
    total = source.stat().st_size or 1
    done = 0
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while block := reader.read(4 * 1024 * 1024):
            if cancelled():
                raise Cancelled(f"Import of {source.name} cancelled; nothing was copied.")
            writer.write(block)
            done += len(block)
            progress(0.5 + 0.5 * done / total, f"Copying {source.name}: {done / 1e6:.0f} MB")
        writer.flush()
        os.fsync(writer.fileno())


def _disk_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _delete(path: Path) -> int:
    if not path.exists():
        return 0
    freed = _disk_size(path)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    return freed


def _imported_item(record: dict[str, Any]) -> ModelItem:
    path = Path(record["location"])
    return ModelItem(
        name=record["name"],
        tool=record["tool"],
        location=str(path),
        kind=record["kind"],
        family=record["family"],
        size_bytes=record["size_bytes"],
        licence=None,
        installed=path.exists(),
        origin="imported",
        description=f"Imported from {path}" if record["in_place"] else "Imported (copied)",
        sha256=record["sha256"],
        path=path,
        in_place=record["in_place"],
    )


_RECORD_FIELDS = {"name": str, "tool": str, "kind": str, "family": str, "location": str}
_RECORD_FIELDS |= {"in_place": bool, "sha256": str, "size_bytes": int}


def _refuse_duplicate(records: list[dict[str, Any]], source: Path, sha256: str) -> None:
    for record in records:
        if record["sha256"] == sha256:
            raise LibraryError(
                f"{source.name} is already in the library as {record['name']} "
                f"({record['location']})."
            )


def _valid_record(record: Any) -> bool:
    return isinstance(record, dict) and all(
        isinstance(record.get(key), kind) for key, kind in _RECORD_FIELDS.items()
    )


def item_summary(item: ModelItem) -> dict[str, Any]:
    """A model as plain JSON values (for `studio models list --json`)."""
    values = asdict(item)
    values["path"] = str(item.path) if item.path else None
    return values


def human_size(size: int | None) -> str:
    """'1.4 GB', '67.0 MB', '—' when unknown."""
    if size is None:
        return "—"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
