"""Model downloads against a real HTTP server on 127.0.0.1: resume, verification, failure modes."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from studio.models.downloads import DownloadError, download, partial_path
from studio.progress import Cancelled

PAYLOAD = os.urandom(1_500_000)
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class Behaviour:
    """How the test server answers; tests change it between requests."""

    status: int = 200
    honour_range: bool = True
    stop_after: int | None = None  # close the connection after this many body bytes (once)
    hang_after: int | None = None  # send this many body bytes, then stop answering
    redirect_to: str | None = None
    requests: list[dict[str, str]] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)


class Handler(BaseHTTPRequestHandler):
    behaviour: Behaviour

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        b = self.server.behaviour  # type: ignore[attr-defined]
        b.requests.append(dict(self.headers.items()))
        if b.redirect_to is not None:
            self.send_response(302)
            self.send_header("Location", b.redirect_to)
            self.end_headers()
            return
        if b.status != 200:
            self.send_error(b.status)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and b.honour_range:
            start = int(match.group(1))
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if b.hang_after is not None:
            self.wfile.write(body[: b.hang_after])
            self.wfile.flush()
            b.released.wait(30)
            return
        if b.stop_after is not None:
            self.wfile.write(body[: b.stop_after])
            b.stop_after = None
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    behaviour = Behaviour()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.behaviour = behaviour  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", behaviour
    behaviour.released.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


class Reports:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    def __call__(self, fraction: float, message: str, preview: object = None) -> None:
        self.calls.append((fraction, message))


def never() -> bool:
    return False


def fetch(url: str, dest: Path, **kwargs: object) -> Path:
    options: dict[str, object] = {"sha256": PAYLOAD_SHA256, "progress": Reports()}
    options |= {"cancelled": never, **kwargs}
    return download(url, dest, **options)  # type: ignore[arg-type]


def test_full_download_reports_progress_and_places_the_verified_file(server, tmp_path):
    url, _ = server
    reports = Reports()
    dest = tmp_path / "models" / "model.pth"

    assert fetch(f"{url}/model.pth", dest, progress=reports, size=len(PAYLOAD)) == dest

    assert dest.read_bytes() == PAYLOAD
    assert not partial_path(dest).exists()
    fractions = [fraction for fraction, _ in reports.calls]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert re.fullmatch(r"1\.5 of 1\.5 MB · [\d.]+ MB/s · ETA 0:00", reports.calls[-1][1])


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    url, behaviour = server
    dest = tmp_path / "model.pth"
    behaviour.stop_after = 400_000

    with pytest.raises(DownloadError, match="download it again to resume"):
        fetch(f"{url}/model.pth", dest)
    assert not dest.exists()
    assert partial_path(dest).stat().st_size == 400_000

    fetch(f"{url}/model.pth", dest)

    assert behaviour.requests[1]["Range"] == "bytes=400000-"
    assert dest.read_bytes() == PAYLOAD
    assert not partial_path(dest).exists()


def test_a_server_that_ignores_range_makes_the_download_restart_from_zero(server, tmp_path):
    url, behaviour = server
    dest = tmp_path / "model.pth"
    partial_path(dest).write_bytes(b"stale bytes that are not the file")
    behaviour.honour_range = False

    fetch(f"{url}/model.pth", dest)

    assert behaviour.requests[0]["Range"] == "bytes=33-"
    assert dest.read_bytes() == PAYLOAD


def test_a_complete_part_answered_416_is_verified_and_placed(server, tmp_path):
    url, behaviour = server
    dest = tmp_path / "model.pth"
    partial_path(dest).write_bytes(PAYLOAD)

    fetch(f"{url}/model.pth", dest)

    assert behaviour.requests[0]["Range"] == f"bytes={len(PAYLOAD)}-"
    assert dest.read_bytes() == PAYLOAD


def test_a_corrupted_download_is_rejected_by_sha256_and_nothing_is_left(server, tmp_path):
    url, _ = server
    dest = tmp_path / "model.pth"
    wrong = "0" * 64

    with pytest.raises(DownloadError) as failure:
        fetch(f"{url}/model.pth", dest, sha256=wrong)

    message = str(failure.value)
    assert "model.pth" in message and wrong in message and PAYLOAD_SHA256 in message
    assert not dest.exists()
    assert not partial_path(dest).exists()


def test_a_server_that_stops_answering_times_out_quickly(server, tmp_path):
    url, behaviour = server
    dest = tmp_path / "model.pth"
    behaviour.hang_after = 1000

    started = time.monotonic()
    with pytest.raises(DownloadError, match="stopped answering"):
        fetch(f"{url}/model.pth", dest, timeout=0.5)

    assert time.monotonic() - started < 5
    assert not dest.exists()


def test_cancelling_mid_download_raises_cancelled_and_keeps_only_the_part(server, tmp_path):
    url, _ = server
    dest = tmp_path / "model.pth"
    reports = Reports()

    with pytest.raises(Cancelled):
        fetch(f"{url}/model.pth", dest, progress=reports, cancelled=lambda: bool(reports.calls))

    assert not dest.exists()
    assert 0 < partial_path(dest).stat().st_size < len(PAYLOAD)


def test_not_found_is_a_clear_error(server, tmp_path):
    url, behaviour = server
    behaviour.status = 404

    with pytest.raises(DownloadError, match=r"model\.pth: the server answered 404 Not Found"):
        fetch(f"{url}/model.pth", tmp_path / "model.pth")


def test_only_http_and_https_addresses_are_downloaded(tmp_path):
    with pytest.raises(DownloadError, match="only http and https"):
        fetch(f"file://{tmp_path}/model.pth", tmp_path / "model.pth")


def test_endless_redirects_are_refused(server, tmp_path):
    url, behaviour = server
    behaviour.redirect_to = f"{url}/again"

    with pytest.raises(DownloadError, match="redirected too often"):
        fetch(f"{url}/model.pth", tmp_path / "model.pth")
    assert len(behaviour.requests) <= 6


def test_a_redirect_to_a_local_file_is_refused(server, tmp_path):
    url, behaviour = server
    behaviour.redirect_to = "file:///etc/passwd"

    with pytest.raises(DownloadError, match="refused"):
        fetch(f"{url}/model.pth", tmp_path / "model.pth")


def test_a_full_disk_is_a_clear_error_and_removes_the_part(server, tmp_path, monkeypatch):
    url, _ = server
    dest = tmp_path / "model.pth"

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(DownloadError, match="is full"):
        fetch(f"{url}/model.pth", dest)

    assert not dest.exists()
    assert not partial_path(dest).exists()


def test_an_unreachable_server_says_so(tmp_path):
    with pytest.raises(DownloadError, match=r"Could not reach 127\.0\.0\.1"):
        fetch("http://127.0.0.1:9/model.pth", tmp_path / "model.pth", timeout=2)
