"""The models Studio knows, per tool: where each comes from, its size, hash and licence.

The known downloads live in `studio/assets/catalogue.json` (data, not code, so a release can
update it); the upscalers shipped inside the package are added to it as always installed.
`load_catalogue` validates the file and says which entry and field is wrong when it is not.

A source is one of:
- `{"url": ...}`: one direct file, fetched with `studio.models.downloads.download` into the models
  folder under the URL's file name and checked against `size` and `sha256` where they are known;
- `{"hf_repo": ..., "files": [patterns]}`: a Hugging Face repository (diffusers layout), kept in
  the standard Hugging Face cache that other tools share; `files` are the patterns to fetch;
- `{"page": ..., "file": ...}`: weights the authors publish only on a web page; the person downloads
  `file` by hand and imports it;
- `{"shipped": ...}`: a file inside the package (`studio.models.shipped`).

`sha256` is null wherever no fixed file hash is known for sure; `non_commercial` marks licences
that forbid commercial use, which the UI shows before a download.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from studio.errors import UserError
from studio.models.hub import cached_repo
from studio.models.shipped import shipped_restorers, shipped_upscalers

TOOLS = ("upscale", "restore", "generate", "inpaint")
SOURCE_KINDS = ("url", "hf_repo", "page", "shipped")
_FIELDS = ("name", "tool", "family", "source", "size", "sha256", "licence", "non_commercial")


class CatalogueError(UserError):
    """The catalogue file is not what Studio expects; the message names the entry and field."""


@dataclass(frozen=True)
class Source:
    """Where a model comes from; `kind` says which of the other fields apply."""

    kind: str  # "url" | "hf_repo" | "page" | "shipped"
    location: str  # the URL, the repository id, the web page, or the shipped file's path
    files: tuple[str, ...] = ()  # hf_repo: patterns to fetch; page: the file to import

    @property
    def file_name(self) -> str | None:
        """The single file this source yields, where it yields one."""
        if self.kind == "url":
            return unquote(urlsplit(self.location).path.rsplit("/", 1)[-1]) or None
        if self.kind == "shipped":
            return Path(self.location).name
        if self.kind == "page":
            return self.files[0]
        return None


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    tool: str  # one of TOOLS
    family: str
    source: Source
    size: int | None  # bytes
    sha256: str | None
    licence: str | None
    non_commercial: bool
    description: str

    @property
    def shipped(self) -> bool:
        return self.source.kind == "shipped"


def catalogue_path() -> Path:
    return Path(str(resources.files("studio") / "assets" / "catalogue.json"))


def load_catalogue(path: Path | None = None) -> list[CatalogueEntry]:
    """The shipped upscalers, then every entry of the catalogue file (default: the package's)."""
    file = path or catalogue_path()
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as error:
        raise CatalogueError(f"Cannot read the model catalogue {file}: {error}.") from error
    except json.JSONDecodeError as error:
        raise CatalogueError(
            f"The model catalogue {file} is not valid JSON ({error}); reinstall Studio."
        ) from error
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise CatalogueError(f'The model catalogue {file} has no "models" list; reinstall Studio.')
    entries = [*_shipped_entries(), *(_entry(raw, i, file) for i, raw in enumerate(data["models"]))]
    names = [entry.name for entry in entries]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise CatalogueError(f"The model catalogue {file} lists {', '.join(duplicates)} twice.")
    return entries


def entries_for(tool: str, entries: list[CatalogueEntry] | None = None) -> list[CatalogueEntry]:
    """The catalogue's models for one tool, shipped ones first."""
    if tool not in TOOLS:
        raise ValueError(f"unknown tool {tool!r}; expected one of {', '.join(TOOLS)}")
    return [entry for entry in entries or load_catalogue() if entry.tool == tool]


def find(name: str, entries: list[CatalogueEntry] | None = None) -> CatalogueEntry | None:
    """The entry called `name` (case-insensitive), or None."""
    wanted = name.casefold()
    return next((e for e in entries or load_catalogue() if e.name.casefold() == wanted), None)


def is_installed(entry: CatalogueEntry, models_dir: Path) -> bool:
    """Whether the model is on this machine: its file in `models_dir` (of the catalogued size,
    where known), a complete snapshot in the Hugging Face cache, or a file shipped with Studio."""
    source = entry.source
    if source.kind == "shipped":
        return Path(source.location).is_file()
    if source.kind == "hf_repo":
        return cached_repo(source.location, allow_patterns=source.files) is not None
    file = Path(models_dir) / (source.file_name or "")
    if not file.is_file():
        return False
    return entry.size is None or file.stat().st_size == entry.size


# --- Reading -----------------------------------------------------------------------------------


@cache
def _shipped_entry(path: Path, size: int, mtime_ns: int) -> CatalogueEntry:
    scale = "x2" if "x2" in path.stem else "x4"
    return CatalogueEntry(
        name=path.stem,
        tool="upscale",
        family="Real-ESRGAN Compact (SRVGGNetCompact)",
        source=Source("shipped", str(path)),
        size=size,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        licence=f"Studio's own; data and licences in its model card ({path.stem}.md)",
        non_commercial=False,
        description=f"Studio's built-in {scale} upscaler: small and fast, no download needed.",
    )


@cache
def _shipped_restorer_entry(path: Path, size: int, mtime_ns: int) -> CatalogueEntry:
    return CatalogueEntry(
        name=path.stem,
        tool="restore",
        family="Studio restoration VAE",
        source=Source("shipped", str(path)),
        size=size,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        licence=f"Studio's own; data and licences in its model card ({path.stem}.md)",
        non_commercial=False,
        description="Studio's built-in old-photo restorer: grain, scratches, dust; no download.",
    )


def _shipped_entries() -> list[CatalogueEntry]:
    entries = []
    for path in shipped_upscalers():
        stat = path.stat()
        entries.append(_shipped_entry(path, stat.st_size, stat.st_mtime_ns))
    for path in shipped_restorers():
        stat = path.stat()
        entries.append(_shipped_restorer_entry(path, stat.st_size, stat.st_mtime_ns))
    return entries


def _entry(raw: Any, index: int, file: Path) -> CatalogueEntry:
    where = f"entry {index + 1}"
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        where = f"entry {index + 1} ({raw['name']})"

    def wrong(message: str) -> CatalogueError:
        return CatalogueError(f"The model catalogue {file}, {where}: {message}; reinstall Studio.")

    if not isinstance(raw, dict):
        raise wrong("is not an object")
    missing = [key for key in (*_FIELDS, "description") if key not in raw]
    if missing:
        raise wrong(f"lacks {', '.join(missing)}")
    for key in ("name", "family", "description"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise wrong(f"{key} must be a non-empty string")
    if raw["tool"] not in TOOLS:
        raise wrong(f"tool is {raw['tool']!r}, not one of {', '.join(TOOLS)}")
    size = raw["size"]
    if size is not None and (type(size) is not int or size <= 0):
        raise wrong(f"size must be a positive number of bytes or null, not {size!r}")
    sha256 = raw["sha256"]
    if sha256 is not None and not _is_sha256(sha256):
        raise wrong("sha256 must be 64 hexadecimal digits or null")
    if raw["licence"] is not None and not isinstance(raw["licence"], str):
        raise wrong("licence must be a string or null")
    if not isinstance(raw["non_commercial"], bool):
        raise wrong("non_commercial must be true or false")
    return CatalogueEntry(
        name=raw["name"],
        tool=raw["tool"],
        family=raw["family"],
        source=_source(raw["source"], wrong),
        size=size,
        sha256=sha256.lower() if sha256 else None,
        licence=raw["licence"],
        non_commercial=raw["non_commercial"],
        description=raw["description"],
    )


def _source(raw: Any, wrong: Any) -> Source:
    kinds = [kind for kind in SOURCE_KINDS if isinstance(raw, dict) and kind in raw]
    if len(kinds) != 1 or kinds[0] == "shipped":
        raise wrong('source must have exactly one of "url", "hf_repo" or "page"')
    kind = kinds[0]
    location = raw[kind]
    if not isinstance(location, str) or not location:
        raise wrong(f"source {kind} must be a non-empty string")
    if kind in ("url", "page") and urlsplit(location).scheme not in ("http", "https"):
        raise wrong(f"source {kind} must be an http(s) address, not {location!r}")
    if kind == "url":
        name = Source(kind, location).file_name
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise wrong("source url must end in a plain file name")
        return Source(kind, location)
    if kind == "page":
        name = raw.get("file")
        if not isinstance(name, str) or not name or "/" in name or "\\" in name:
            raise wrong('a source page needs the file name to import, as "file"')
        return Source(kind, location, (name,))
    files = raw.get("files")
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise wrong("source files must be a non-empty list of file patterns")
    if location.count("/") != 1:
        raise wrong(f'source hf_repo must be "owner/name", not {location!r}')
    return Source(kind, location, tuple(files))


def _is_sha256(value: Any) -> bool:
    return (
        isinstance(value, str)
        and len(value) == 64
        and all(c in "0123456789abcdef" for c in value.lower())
    )
