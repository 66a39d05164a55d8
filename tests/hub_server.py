"""A local stand-in for the Hugging Face Hub, serving one tiny diffusers-layout repository.

It answers the requests huggingface_hub 2.x makes for `model_info(files_metadata=True)` and
`hf_hub_download`, the way huggingface.co does:
- `GET /api/models/{repo}/revision/{rev}?blobs=True`: the commit (`sha`) and `siblings` with sizes,
  blob ids and, for LFS files, `lfs.sha256`; an unknown repository is a 404 with
  `X-Error-Code: RepoNotFound`;
- `HEAD|GET /{repo}/resolve/{rev}/{path}`: small (git) files straight away, with `ETag` (the git
  blob id), `X-Repo-Commit` and `Content-Length`; LFS files (weights) as a 302 to a second server,
  the "CDN", with `X-Linked-Etag` (their SHA-256) and `X-Linked-Size`, so huggingface_hub takes the
  metadata from the redirect and downloads from the other origin, as from huggingface.co's CDN;
- the CDN serves `GET /{sha256}` with `Range` support.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO_ID = "studio-tests/tiny-diffusers"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _json(value: object) -> bytes:
    return json.dumps(value, indent=1).encode()


def tiny_repo() -> dict[str, bytes]:
    """The repository's files: a diffusers layout with the duplicates real repositories carry."""
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": [None, None],
    }
    return {
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        "README.md": b"---\nlicense: openrail\n---\n# tiny\n",
        "model_index.json": _json(index),
        "scheduler/scheduler_config.json": _json({"_class_name": "EulerDiscreteScheduler"}),
        "unet/config.json": _json({"_class_name": "UNet2DConditionModel"}),
        "unet/diffusion_pytorch_model.fp16.safetensors": os.urandom(700_000),
        "unet/diffusion_pytorch_model.safetensors": os.urandom(1_400_000),
        "unet/diffusion_pytorch_model.bin": os.urandom(1_400_000),
        "vae/config.json": _json({"_class_name": "AutoencoderKL"}),
        "vae/diffusion_pytorch_model.fp16.safetensors": os.urandom(300_000),
        "vae/diffusion_pytorch_model.safetensors": os.urandom(600_000),
        "tiny-single-file.safetensors": os.urandom(900_000),
        "tiny-single-file.ckpt": os.urandom(900_000),
    }


def is_lfs(path: str) -> bool:
    return path.endswith((".safetensors", ".bin", ".ckpt"))


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Hub:
    files: dict[str, bytes] = field(default_factory=tiny_repo)
    url: str = ""
    cdn_url: str = ""
    requests: list[str] = field(default_factory=list)  # "METHOD path"

    @property
    def by_sha256(self) -> dict[str, bytes]:
        return {hashlib.sha256(body).hexdigest(): body for body in self.files.values()}

    def siblings(self) -> list[dict[str, object]]:
        siblings = []
        for path, body in self.files.items():
            sibling: dict[str, object] = {
                "rfilename": path,
                "size": len(body),
                "blobId": git_blob_id(body),
            }
            if is_lfs(path):
                sha = hashlib.sha256(body).hexdigest()
                sibling["lfs"] = {"sha256": sha, "size": len(body), "pointerSize": 134}
            siblings.append(sibling)
        return siblings


class _HubHandler(BaseHTTPRequestHandler):
    hub: Hub

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        hub = self.server.hub  # type: ignore[attr-defined]
        hub.requests.append(f"{self.command} {self.path}")
        path = self.path.split("?", 1)[0]
        info = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
        if info:
            return self._model_info(hub, info.group(1), info.group(2), body)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if resolve:
            return self._resolve(hub, *resolve.groups(), body)
        self._send(404, b"", {})

    def _model_info(self, hub: Hub, repo: str, revision: str, body: bool) -> None:
        if repo != REPO_ID:
            self._send(404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"})
            return
        if revision not in ("main", COMMIT):
            headers = {"X-Error-Code": "RevisionNotFound"}
            self._send(404, b'{"error":"Invalid rev id"}', headers)
            return
        info = {"_id": "0", "id": REPO_ID, "sha": COMMIT, "siblings": hub.siblings()}
        self._send(200, _json(info), {"Content-Type": "application/json"}, body)

    def _resolve(self, hub: Hub, repo: str, revision: str, file: str, body: bool) -> None:
        content = hub.files.get(file)
        if repo != REPO_ID or revision not in ("main", COMMIT) or content is None:
            headers = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}
            self._send(404, b"", headers)
            return
        headers = {"X-Repo-Commit": COMMIT, "Accept-Ranges": "bytes"}
        if is_lfs(file):
            sha = hashlib.sha256(content).hexdigest()
            headers |= {
                "Location": f"{hub.cdn_url}/{sha}",
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(content)),
                "ETag": f'"{git_blob_id(content)}"',
            }
            self._send(302, b"", headers)
            return
        headers["ETag"] = f'"{git_blob_id(content)}"'
        self._send(200, content, headers, body)

    def _send(self, status: int, content: bytes, headers: dict[str, str], body: bool = True):
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if body:
            self.wfile.write(content)


class _CdnHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        hub = self.server.hub  # type: ignore[attr-defined]
        hub.requests.append(f"CDN {self.path}")
        content = hub.by_sha256.get(self.path.strip("/"))
        if content is None:
            self.send_error(404)
            return
        start = start_reply(self, content, {"ETag": f'"{hashlib.sha256(content).hexdigest()}"'})
        self.wfile.write(content[start:])


def start_reply(handler: BaseHTTPRequestHandler, body: bytes, headers: dict[str, str]) -> int:
    """Status and headers for `body`, honouring an open-ended `Range` (what resumed downloads
    send); returns the offset the body is to be written from."""
    start = 0
    match = re.fullmatch(r"bytes=(\d+)-", handler.headers.get("Range", ""))
    if match:
        start = int(match.group(1))
        handler.send_response(206)
        handler.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
    else:
        handler.send_response(200)
    handler.send_header("Content-Length", str(len(body) - start))
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    return start


@contextmanager
def running_hub(files: dict[str, bytes] | None = None) -> Iterator[Hub]:
    """The hub and its CDN on two ports of 127.0.0.1 (two origins, as huggingface.co has),
    serving `files` (default: `tiny_repo()`) as its one repository."""
    hub = Hub(files) if files is not None else Hub()
    servers = []
    for handler in (_HubHandler, _CdnHandler):
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        httpd.hub = hub  # type: ignore[attr-defined]
        thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        servers.append((httpd, thread))
    hub.url = f"http://127.0.0.1:{servers[0][0].server_address[1]}"
    hub.cdn_url = f"http://127.0.0.1:{servers[1][0].server_address[1]}"
    try:
        yield hub
    finally:
        for httpd, thread in servers:
            httpd.shutdown()
            httpd.server_close()
            thread.join(5)
