"""Downloading a model file: resumable, verified, placed atomically, cancellable.

`download(url, dest, sha256=..., progress=..., cancelled=...)` streams into `<dest>.part` beside
the destination and only renames it to `dest` once every byte is there and, where the catalogue
knows it, the SHA-256 matches. So `dest` either does not exist or is the complete, verified file.

What happens to the partial file, by outcome:
- cancelled, connection lost, timeout, server error: the `.part` file is kept, and the next
  `download` of the same destination resumes it with an HTTP `Range` request (a server that ignores
  `Range` and answers 200 makes it start again from zero; one that answers 416 means the part is
  already whole or stale, and it is checked or started again).
- wrong SHA-256 or wrong size: the `.part` file is deleted (its bytes cannot be trusted).
- disk full (ENOSPC): the `.part` file is deleted, so the download leaves the disk as it found it;
  the message says how much space the file needs.

Only `http` and `https` URLs are accepted, redirects included, and at most `MAX_REDIRECTS` of them.
Every socket operation has a timeout, so a server that stops answering fails within about
`timeout` seconds rather than hanging the job.

Cancelling raises `studio.progress.Cancelled`, the same the engines raise, so the job queue treats a
cancelled download like a cancelled run.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from studio.errors import UserError
from studio.progress import CancelCheck, Cancelled, Progress

CHUNK_BYTES = 256 * 1024
MAX_REDIRECTS = 5
ALLOWED_SCHEMES = ("http", "https")
USER_AGENT = "Studio model downloader"


class DownloadError(UserError):
    """A download that failed; the message names the file and says what to do next."""


def partial_path(dest: Path) -> Path:
    """Where the bytes of `dest` collect until it is complete and verified."""
    return dest.with_name(dest.name + ".part")


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    size: int | None = None,
    progress: Progress,
    cancelled: CancelCheck,
    timeout: float = 20.0,
) -> Path:
    """Download `url` to `dest` and return `dest`. See the module docstring for what is kept."""
    dest = Path(dest)
    _check_scheme(url, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    if size is not None and part.exists() and part.stat().st_size > size:
        part.unlink()
    if size is not None and part.exists() and part.stat().st_size == size:
        return _place(part, dest, sha256=sha256, size=size)  # already whole: nothing to fetch
    _fetch(url, dest, part, size=size, progress=progress, cancelled=cancelled, timeout=timeout)
    return _place(part, dest, sha256=sha256, size=size)


def _fetch(
    url: str,
    dest: Path,
    part: Path,
    *,
    size: int | None,
    progress: Progress,
    cancelled: CancelCheck,
    timeout: float,
) -> None:
    """Bring `part` up to the whole file, resuming what is there."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _request(url, offset, dest, timeout)
    except _StalePart:
        part.unlink()  # longer than the file, or otherwise not a prefix of it: start from zero
        offset = 0
        response = _request(url, offset, dest, timeout)
    if response is None:  # the part already holds the whole file; it is checked when placed
        return
    with response:
        if response.status != 206:
            offset = 0  # the server ignored Range: start again from zero
        elif _range_start(response.headers.get("Content-Range")) != offset:
            part.unlink()
            raise DownloadError(
                f"The server sent the wrong part of {dest.name} when resuming; "
                "download it again to start from zero."
            )
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else size
        mode = "ab" if offset else "wb"
        with open(part, mode) as out:
            received = _stream(
                response, out, offset, total, url, dest, progress, cancelled, timeout
            )
            _sync(out, part, dest, total)
    if total is not None and received < total:
        raise DownloadError(
            f"The connection closed after {_mb(received)} of {_mb(total)} MB of {dest.name}; "
            "download it again to resume where it stopped."
        )


def _request(url: str, offset: int, dest: Path, timeout: float) -> http.client.HTTPResponse | None:
    """Open `url` from byte `offset`; None when a 416 says the part already is the whole file."""
    try:
        return _open(url, offset, timeout)
    except urllib.error.HTTPError as error:
        if error.code != 416 or offset == 0:
            raise _http_error(error, url, dest) from error
        whole = _range_total(error.headers.get("Content-Range")) == offset
        error.close()
        if whole:
            return None
        raise _StalePart from error
    except OSError as error:
        raise _network_error(error, url, dest, timeout) from error


class _StalePart(Exception):
    """A 416 answer to a resume whose part file is not the start of the file."""


def _stream(
    response: http.client.HTTPResponse,
    out: BinaryIO,
    offset: int,
    total: int | None,
    url: str,
    dest: Path,
    progress: Progress,
    cancelled: CancelCheck,
    timeout: float,
) -> int:
    """Copy the body into `out`, reporting progress; return the bytes the part file now holds."""
    received, started = offset, time.monotonic()
    while True:
        if cancelled():
            raise Cancelled(f"Download of {dest.name} cancelled; its partial file is kept.")
        try:
            chunk = response.read(CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as error:
            out.flush()
            raise _network_error(error, url, dest, timeout) from error
        if not chunk:
            return received
        _write(out, chunk, dest, total, received)
        received += len(chunk)
        fraction = received / total if total else 0.0
        progress(min(fraction, 1.0), _progress_text(received, total, received - offset, started))


def _write(out: BinaryIO, chunk: bytes, dest: Path, total: int | None, received: int) -> None:
    try:
        out.write(chunk)
    except OSError as error:
        _raise_disk_error(error, out, dest, total, received)


def _sync(out: BinaryIO, part: Path, dest: Path, total: int | None) -> None:
    try:
        out.flush()
        os.fsync(out.fileno())
    except OSError as error:
        _raise_disk_error(error, out, dest, total, part.stat().st_size)


def _raise_disk_error(
    error: OSError, out: BinaryIO, dest: Path, total: int | None, received: int
) -> None:
    if error.errno != errno.ENOSPC:
        raise DownloadError(f"Could not write {dest.name} in {dest.parent}: {error}.") from error
    out.close()
    partial_path(dest).unlink(missing_ok=True)
    needed = f" ({_mb(total)} MB in all)" if total else ""
    raise DownloadError(
        f"The disk holding {dest.parent} is full; {dest.name} needs more space{needed}. "
        f"The partial download ({_mb(received)} MB) was removed. "
        "Free some space and download again."
    ) from error


def _place(part: Path, dest: Path, *, sha256: str | None, size: int | None) -> Path:
    """Check the complete part file and rename it to `dest` atomically."""
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        part.unlink()
        raise DownloadError(
            f"{dest.name} is {actual_size} bytes, not the expected {size}; the download was "
            "deleted. Download it again; if it fails the same way, the source has changed."
        )
    if sha256 is not None:
        actual = _file_sha256(part)
        if actual != sha256.lower():
            part.unlink()
            raise DownloadError(
                f"{dest.name} failed its checksum: "
                f"expected SHA-256 {sha256.lower()}, got {actual}. "
                "The download was deleted; download it again, and if it fails the same way, the "
                "source has changed or something between you and it alters files."
            )
    os.replace(part, dest)
    _sync_folder(dest.parent)
    return dest


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX; Windows has no directory handles to sync)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- HTTP --------------------------------------------------------------------------------------


class _LimitedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow at most `MAX_REDIRECTS` redirects, and only to http(s)."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise urllib.error.HTTPError(
                newurl, code, f"redirect to a {scheme or 'schemeless'} URL refused", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_opener = urllib.request.build_opener(_LimitedRedirects)


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return _opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)


def _check_scheme(url: str, dest: Path) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise DownloadError(
            f"Cannot download {dest.name} from {url!r}: only http and https addresses are allowed."
        )


def _range_start(content_range: str | None) -> int | None:
    """The first byte of `Content-Range: bytes START-END/TOTAL`, or None."""
    try:
        return int(content_range.split()[1].split("-")[0])  # type: ignore[union-attr]
    except (AttributeError, IndexError, ValueError):
        return None


def _range_total(content_range: str | None) -> int | None:
    """The total of `Content-Range: bytes */TOTAL` (or `START-END/TOTAL`), or None."""
    try:
        return int(content_range.rsplit("/", 1)[1])  # type: ignore[union-attr]
    except (AttributeError, IndexError, ValueError):
        return None


def _http_error(error: urllib.error.HTTPError, url: str, dest: Path) -> DownloadError:
    if error.code in (301, 302, 303, 307, 308):
        return DownloadError(
            f"Could not download {dest.name}: {url} redirected too often or to a refused "
            f"address ({error.reason}). The catalogue entry may be out of date."
        )
    return DownloadError(
        f"Could not download {dest.name}: the server answered {error.code} {error.reason} "
        f"for {url}. The catalogue entry may be out of date; try again later or report it."
    )


def _network_error(error: BaseException, url: str, dest: Path, timeout: float) -> DownloadError:
    host = urlsplit(url).hostname or url
    reason = getattr(error, "reason", error)
    if isinstance(error, http.client.HTTPException):
        reason = "the connection broke"
    if isinstance(error, TimeoutError | socket.timeout) or isinstance(reason, TimeoutError):
        return DownloadError(
            f"{host} stopped answering for {timeout:g} s while downloading {dest.name}. "
            "Check the internet connection and download again; it resumes where it stopped."
        )
    return DownloadError(
        f"Could not reach {host} to download {dest.name} ({reason}). Are you offline? "
        "Check the connection and download again; it resumes where it stopped."
    )


# --- Progress text -----------------------------------------------------------------------------


def _mb(count: int) -> str:
    return f"{count / 1e6:.1f}"


def _progress_text(received: int, total: int | None, fresh: int, started: float) -> str:
    """`12.3 of 64.0 MB · 4.1 MB/s · ETA 0:13` (without total and ETA when the size is unknown)."""
    elapsed = max(time.monotonic() - started, 1e-6)
    rate = fresh / elapsed
    if not total:
        return f"{_mb(received)} MB · {rate / 1e6:.1f} MB/s"
    text = f"{_mb(received)} of {_mb(total)} MB · {rate / 1e6:.1f} MB/s"
    if rate <= 0:
        return text
    return f"{text} · ETA {_clock((total - received) / rate)}"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(max(round(seconds), 0), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
