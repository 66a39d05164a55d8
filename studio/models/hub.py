"""Hugging Face models: fetched through huggingface_hub into the standard Hugging Face cache.

The cache is the one every other tool uses (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
`~/.cache/huggingface/hub`), so a model downloaded by diffusers, ComfyUI or `hf download` is reused
here and the other way round. `HF_ENDPOINT` points at a mirror (tests point it at 127.0.0.1).

- `plan_repo` asks the Hub (one request, with a timeout) which files a download would fetch and
  their sizes; `repo_download_size` is its total, shown before a download starts.
- `fetch_repo` downloads the planned files one by one with `hf_hub_download` (ETag-checked
  blobs, atomic placement), reporting Studio progress (bytes, speed, ETA) and polling
  `cancelled()` between chunks. huggingface_hub writes each file to a uniquely named `.incomplete`
  file and deletes it when the download fails or is cancelled, so the cache never holds a half
  file; the files already fetched stay and a later `fetch_repo` only fetches the rest.
- `cached_repo` answers from the disk alone whether a complete snapshot is there.
- `select_files` keeps a diffusers repository to one copy of each component's weights: the precision
  `variant` (fp16) where published, safetensors before pickles, no single-file checkpoints, ONNX,
  Flax or OpenVINO duplicates. A Stable Diffusion repository holds many GB of these.

Over Hugging Face's Xet storage (hf_xet installed, a real Hub) progress comes from hf_xet's reports
and cancelling takes effect at its next report.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.errors import UserError
from studio.progress import CancelCheck, Cancelled, Progress

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_TIMEOUT = 20.0  # seconds without an answer before a request fails
DEFAULT_VARIANT = "fp16"

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# `name[.variant][-00001-of-00002].ext` of diffusers and transformers weight files.
_WEIGHTS = re.compile(
    r"^(?P<base>[^.]+?)(?:\.(?P<variant>[A-Za-z0-9_]+))?(?P<shard>-\d{5}-of-\d{5})?"
    r"\.(?P<ext>safetensors|bin)$"
)
# `name.ext.index[.variant].json`: the map of a sharded weight file.
_INDEX = re.compile(
    r"^(?P<base>[^.]+?)\.(?P<ext>safetensors|bin)\.index(?:\.(?P<variant>[A-Za-z0-9_]+))?\.json$"
)
_UNUSED_SUFFIXES = (".ckpt", ".pt", ".pth", ".onnx", ".onnx_data", ".pb", ".msgpack", ".h5", ".ot")
_UNUSED_FOLDERS = ("onnx", "openvino", "flax")


class HubError(UserError):
    """A Hugging Face download that failed; the message says why and what to do."""


@dataclass(frozen=True)
class RepoFile:
    path: str  # relative to the repository root, "/"-separated
    size: int | None  # bytes, where the Hub reports it


@dataclass(frozen=True)
class RepoPlan:
    """What `fetch_repo` would fetch: one commit of a repository, the selected files."""

    repo_id: str
    revision: str  # the branch or tag asked for ("main" by default)
    commit: str
    files: tuple[RepoFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(file.size or 0 for file in self.files)


def hub_endpoint() -> str:
    """The Hub's address: `HF_ENDPOINT` (a mirror, or a test server), else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, found the way huggingface_hub finds it, read at each call."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "huggingface"
    )
    return Path(hf_home).expanduser() / "hub"


def repo_cache_folder(repo_id: str) -> Path:
    """The folder that holds every cached revision of a model repository."""
    return hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"


# --- Asking the Hub ----------------------------------------------------------------------------


def plan_repo(
    repo_id: str,
    *,
    allow_patterns: Iterable[str] | None = None,
    variant: str | None = DEFAULT_VARIANT,
    revision: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> RepoPlan:
    """Ask the Hub which files of `repo_id` a download fetches (see `select_files`), with sizes."""
    from huggingface_hub import HfApi

    revision = revision or "main"
    api = HfApi(endpoint=hub_endpoint())
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=timeout)
    except Exception as error:
        raise _hub_error(error, repo_id, revision) from error
    if not info.sha:
        raise HubError(
            f"{hub_endpoint()} sent no commit for {repo_id}; it is not a Hugging Face Hub."
        )
    sizes = {sibling.rfilename: sibling.size for sibling in info.siblings or ()}
    chosen = select_files(sizes, allow_patterns=allow_patterns, variant=variant)
    if not chosen:
        raise HubError(
            f"{repo_id} has no files matching {', '.join(allow_patterns or ['*'])}; "
            "the repository has changed. Update Studio's catalogue or choose another model."
        )
    files = tuple(RepoFile(path, sizes[path]) for path in chosen)
    return RepoPlan(repo_id=repo_id, revision=revision, commit=info.sha, files=files)


def repo_download_size(
    repo_id: str,
    allow_patterns: Iterable[str] | None = None,
    *,
    variant: str | None = DEFAULT_VARIANT,
    revision: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> int:
    """Bytes of the files a download of `repo_id` fetches (asks the Hub)."""
    plan = plan_repo(
        repo_id, allow_patterns=allow_patterns, variant=variant, revision=revision, timeout=timeout
    )
    return plan.total_bytes


# --- Downloading -------------------------------------------------------------------------------


def fetch_repo(
    repo_id: str,
    *,
    allow_patterns: Iterable[str] | None = None,
    variant: str | None = DEFAULT_VARIANT,
    revision: str | None = None,
    progress: Progress,
    cancelled: CancelCheck,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """The snapshot folder of `repo_id` in the Hugging Face cache, downloading what is missing.

    A complete snapshot already in the cache is returned without asking the network.
    """
    cached = cached_repo(repo_id, allow_patterns=allow_patterns, revision=revision)
    if cached is not None:
        progress(1.0, f"{repo_id} is already downloaded.")
        return cached
    progress(0.0, f"Asking {hub_endpoint()} for {repo_id}…")
    plan = plan_repo(
        repo_id, allow_patterns=allow_patterns, variant=variant, revision=revision, timeout=timeout
    )
    snapshot = repo_cache_folder(repo_id) / "snapshots" / plan.commit
    missing = [file for file in plan.files if not (snapshot / file.path).is_file()]
    meter = _Meter(repo_id, sum(file.size or 0 for file in missing), progress, cancelled)
    progress(0.0, f"{repo_id}: {len(missing)} files, {_mb(meter.total)} MB to download…")
    for file in missing:
        if cancelled():
            raise Cancelled(f"Download of {repo_id} cancelled; the files already fetched are kept.")
        _fetch_file(plan, file, meter, timeout)
    _write_ref(repo_cache_folder(repo_id), plan.revision, plan.commit)
    progress(1.0, f"Downloaded {repo_id} ({_mb(plan.total_bytes)} MB).")
    return snapshot


def _fetch_file(plan: RepoPlan, file: RepoFile, meter: _Meter, timeout: float) -> None:
    from huggingface_hub import hf_hub_download

    meter.start_file(file)
    try:
        hf_hub_download(
            plan.repo_id,
            file.path,
            revision=plan.commit,
            cache_dir=hub_cache_dir(),
            endpoint=hub_endpoint(),
            etag_timeout=timeout,
            tqdm_class=meter.bar_class(),  # type: ignore[arg-type]
        )
    except Cancelled:
        raise
    except Exception as error:
        if meter.cancelled():  # hf_xet reports a callback's Cancelled as its own error
            raise Cancelled(
                f"Download of {plan.repo_id} cancelled; the files already fetched are kept."
            ) from error
        raise _hub_error(error, plan.repo_id, plan.revision, file.path) from error
    meter.finish_file(file)


class _Meter:
    """Turns huggingface_hub's per-file byte counts into Studio progress over the whole download,
    and raises `Cancelled` from inside its download loop."""

    def __init__(self, repo_id: str, total: int, progress: Progress, cancelled: CancelCheck):
        self.repo_id, self.total = repo_id, total
        self.progress, self.cancelled = progress, cancelled
        self.done = 0  # bytes of finished files
        self.current = 0  # bytes of the file in flight
        self.started = time.monotonic()
        self.file_name = ""

    def start_file(self, file: RepoFile) -> None:
        self.current, self.file_name = 0, file.path

    def finish_file(self, file: RepoFile) -> None:
        self.done += max(self.current, file.size or 0)
        self.current = 0
        self.report()

    def advance(self, count: float) -> None:
        if self.cancelled():
            raise Cancelled(
                f"Download of {self.repo_id} cancelled; the files already fetched are kept."
            )
        self.current += int(count)
        self.report()

    def report(self) -> None:
        received = self.done + self.current
        fraction = min(received / self.total, 1.0) if self.total else 0.0
        elapsed = max(time.monotonic() - self.started, 1e-6)
        speed = received / elapsed
        text = f"{self.repo_id}: {_mb(received)} of {_mb(self.total)} MB"
        if received:
            eta = (self.total - received) / speed if speed > 0 else 0.0
            text += f", {speed / 1e6:.1f} MB/s, {_clock(eta)} left"
        self.progress(fraction, f"{text} ({self.file_name})")

    def bar_class(self) -> type:
        """A tqdm stand-in bound to this meter; huggingface_hub builds one per file.

        Its `update_transfer` makes huggingface_hub treat it as one aggregated bar: over HTTP and
        over Xet, written bytes arrive through `update` and network bytes (not counted again)
        through `update_transfer`."""
        meter = self

        class Bar:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                pass

            def __enter__(self) -> Bar:
                return self

            def __exit__(self, *exc: object) -> None:
                pass

            def update(self, count: float | None = 1) -> None:
                meter.advance(count or 0)

            def update_transfer(self, count: float | None = 1) -> None:
                pass

            def set_transfer_postfix_str(self, *args: Any, **kwargs: Any) -> None:
                pass

            def close(self) -> None:
                pass

            def refresh(self) -> None:
                pass

            def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
                pass

            def set_description(self, *args: Any, **kwargs: Any) -> None:
                pass

        return Bar


def _write_ref(storage: Path, revision: str, commit: str) -> None:
    """Record which commit `revision` names, as huggingface_hub does, so offline lookups of
    `revision` (diffusers' `from_pretrained(repo_id)`, `cached_repo`) find this snapshot."""
    if _COMMIT.match(revision):
        return
    ref = storage / "refs" / revision
    if ref.is_file() and ref.read_text(encoding="utf-8").strip() == commit:
        return
    ref.parent.mkdir(parents=True, exist_ok=True)
    temporary = ref.with_name(ref.name + ".studio-tmp")
    temporary.write_text(commit, encoding="utf-8")
    os.replace(temporary, ref)


# --- The cache, without the network ------------------------------------------------------------


def cached_repo(
    repo_id: str,
    *,
    allow_patterns: Iterable[str] | None = None,
    revision: str | None = None,
) -> Path | None:
    """The complete cached snapshot of `repo_id` at `revision` (default: main), or None.

    Complete means, for a diffusers repository, that every component `model_index.json` lists
    (among `allow_patterns`) has its folder, and every model component its weights (every shard);
    for other repositories, that each of `allow_patterns` matches a file.
    """
    storage = repo_cache_folder(repo_id)
    revision = revision or "main"
    commit = revision if _COMMIT.match(revision) else _read_ref(storage, revision)
    if commit is None:
        return None
    snapshot = storage / "snapshots" / commit
    if not snapshot.is_dir():
        return None
    patterns = list(allow_patterns) if allow_patterns is not None else None
    if (snapshot / "model_index.json").is_file():
        return snapshot if diffusers_folder_complete(snapshot, patterns) else None
    files = [path.relative_to(snapshot).as_posix() for path in _files(snapshot)]
    if not files:
        return None
    if patterns and not all(any(fnmatch.fnmatch(f, p) for f in files) for p in patterns):
        return None
    return snapshot


def cached_size(repo_id: str) -> int:
    """Bytes the repository's files take in the cache (every revision; each blob once)."""
    blobs = repo_cache_folder(repo_id) / "blobs"
    if not blobs.is_dir():
        return 0
    return sum(path.stat().st_size for path in blobs.iterdir() if path.is_file())


def delete_cached_repo(repo_id: str) -> int:
    """Delete every cached revision of `repo_id` with huggingface_hub's cache API; bytes freed."""
    from huggingface_hub import scan_cache_dir

    cache = hub_cache_dir()
    if not repo_cache_folder(repo_id).is_dir():
        return 0
    try:
        info = scan_cache_dir(cache)
    except Exception as error:
        raise HubError(f"Cannot read the Hugging Face cache {cache}: {error}.") from error
    revisions = [
        revision.commit_hash
        for repo in info.repos
        if repo.repo_id == repo_id and repo.repo_type == "model"
        for revision in repo.revisions
    ]
    if not revisions:
        return 0
    strategy = info.delete_revisions(*revisions)
    strategy.execute()
    return strategy.expected_freed_size


def weights_variant(folder: Path) -> str | None:
    """The precision variant ("fp16") of a diffusers folder's weights, for diffusers'
    `from_pretrained(folder, variant=...)`; None when its weights carry no variant."""
    for path in folder.glob("*/*"):
        match = _WEIGHTS.match(path.name) or _INDEX.match(path.name)
        if match and match["variant"]:
            return match["variant"]
    return None


def _read_ref(storage: Path, revision: str) -> str | None:
    ref = storage / "refs" / revision
    if not ref.is_file():
        return None
    commit = ref.read_text(encoding="utf-8").strip()
    return commit if _COMMIT.match(commit) else None


def _files(folder: Path) -> list[Path]:
    """Files under `folder` whose links resolve (a snapshot links into the blobs)."""
    return [path for path in folder.rglob("*") if path.is_file()]


def diffusers_folder_complete(folder: Path, allow_patterns: Iterable[str] | None = None) -> bool:
    """Whether every component `model_index.json` lists (among `allow_patterns`) is in `folder`,
    with its weights (every shard) where it is a model."""
    patterns = list(allow_patterns) if allow_patterns is not None else None
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or None in value:
            continue
        if patterns is not None and not any(fnmatch.fnmatch(f"{name}/x", p) for p in patterns):
            continue
        if not _component_complete(folder / name):
            return False
    return True


def _component_complete(folder: Path) -> bool:
    if not folder.is_dir() or not any(path.is_file() for path in folder.iterdir()):
        return False
    if not (folder / "config.json").is_file():
        return True  # a scheduler, tokenizer or feature extractor: configuration only
    for index in (path for path in folder.iterdir() if _INDEX.match(path.name)):
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            return False
        if all((folder / shard).is_file() for shard in shards):
            return True
    return any(
        (match := _WEIGHTS.match(path.name)) and not match["shard"] and path.is_file()
        for path in folder.iterdir()
    )


# --- Choosing the files ------------------------------------------------------------------------


def select_files(
    files: Iterable[str],
    *,
    allow_patterns: Iterable[str] | None = None,
    variant: str | None = DEFAULT_VARIANT,
) -> list[str]:
    """The files of a repository listing worth downloading, sorted.

    `allow_patterns` (fnmatch, as huggingface_hub applies them) filter first. In a diffusers
    repository (one with `model_index.json`) each component keeps one copy of its weights: `variant`
    in safetensors, else plain safetensors, else `variant` in `.bin`, else plain `.bin`, else
    whatever variant there is (with all their shards and index); the top-level single-file
    checkpoints and ONNX / Flax / OpenVINO / `.ckpt` copies are dropped.
    Other repositories are taken as the patterns select them.
    """
    from huggingface_hub.utils import filter_repo_objects

    patterns = list(allow_patterns) if allow_patterns is not None else None
    chosen = sorted(filter_repo_objects(list(files), allow_patterns=patterns))
    if "model_index.json" not in chosen:
        return chosen
    kept = [path for path in chosen if not _diffusers_duplicate(path)]
    folders: dict[str, list[str]] = {}
    for path in kept:
        folder, _, name = path.rpartition("/")
        folders.setdefault(folder, []).append(name)
    result = []
    for folder, names in folders.items():
        prefix = f"{folder}/" if folder else ""
        result += [prefix + name for name in _one_copy_of_weights(names, variant)]
    return sorted(result)


def _diffusers_duplicate(path: str) -> bool:
    folder, _, name = path.rpartition("/")
    if folder.split("/", 1)[0] in _UNUSED_FOLDERS or name.lower().endswith(_UNUSED_SUFFIXES):
        return True
    is_weights = bool(_WEIGHTS.match(name) or _INDEX.match(name))
    return not folder and is_weights  # top-level single-file checkpoints of the same pipeline


def _one_copy_of_weights(names: list[str], variant: str | None) -> list[str]:
    """Within one component folder (one model): the weights in the best (variant, format) on
    offer, whatever each format names its file (`model.safetensors`, `pytorch_model.bin`)."""
    offers = set()
    for name in names:
        match = _WEIGHTS.match(name) or _INDEX.match(name)
        if match:
            offers.add((match["variant"], match["ext"]))
    preference = [(variant, "safetensors"), (None, "safetensors"), (variant, "bin"), (None, "bin")]
    preference += sorted(offers, key=lambda kind: (kind[1] != "safetensors", kind[0] or ""))
    best = next((kind for kind in preference if kind in offers), None)
    kept = []
    for name in names:
        match = _WEIGHTS.match(name) or _INDEX.match(name)
        if match is None or (match["variant"], match["ext"]) == best:
            kept.append(name)
    return kept


# --- Errors ------------------------------------------------------------------------------------


def _hub_error(error: Exception, repo_id: str, revision: str, file: str | None = None) -> HubError:
    """A message for the person: what failed and what to do, from huggingface_hub's errors."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = f"{repo_id}/{file}" if file else repo_id
    endpoint = hub_endpoint()
    if isinstance(error, OfflineModeIsEnabled) or (
        isinstance(error, LocalEntryNotFoundError)
        and isinstance(error.__cause__, OfflineModeIsEnabled)
    ):
        return HubError(
            f"Cannot download {what}: Hugging Face offline mode is on (HF_HUB_OFFLINE). "
            "Unset it to download; models already downloaded keep working."
        )
    if isinstance(error, GatedRepoError):
        return HubError(
            f"{repo_id} is gated: accept its licence at https://huggingface.co/{repo_id} and "
            "log in (`hf auth login`), then download again."
        )
    if isinstance(error, RepositoryNotFoundError):
        return HubError(
            f"{repo_id} was not found on {endpoint} (or it is private: log in with "
            "`hf auth login`). Check the name."
        )
    if isinstance(error, RevisionNotFoundError):
        return HubError(f"{repo_id} has no revision {revision!r} on {endpoint}.")
    if isinstance(error, RemoteEntryNotFoundError):
        return HubError(f"{what} is no longer on {endpoint}; the repository has changed.")
    timed_out = isinstance(error, httpx2.TimeoutException) or isinstance(
        error.__cause__, httpx2.TimeoutException
    )
    unreachable = isinstance(error, (httpx2.TransportError, LocalEntryNotFoundError))
    if timed_out or unreachable:
        reason = "it did not answer in time" if timed_out else "no connection"
        return HubError(
            f"Cannot reach {endpoint} to download {what} ({reason}). Check the internet connection "
            "(and any proxy) and try again; models already downloaded keep working offline."
        )
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else "an error"
        return HubError(f"{endpoint} answered {status} for {what}; try again later.")
    if isinstance(error, OSError):
        return HubError(f"Could not write {what} into {hub_cache_dir()}: {error}.")
    return HubError(f"Downloading {what} failed: {type(error).__name__}: {error}.")


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f}"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(max(round(seconds), 0), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
