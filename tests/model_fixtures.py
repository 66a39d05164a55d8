"""Test catalogues whose downloads come from 127.0.0.1, and small model files and folders."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from hub_server import REPO_ID, start_reply
from safetensors.numpy import save_file

from studio.models import catalogue

GATED_AFTER = 512 * 1024  # bytes a gated answer sends before it waits


class _FileHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        files: dict[str, bytes] = self.server.files  # type: ignore[attr-defined]
        body = files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        start = start_reply(self, body, {})
        chunk = 64 * 1024  # several writes, so progress is reported along the way
        gate: threading.Event | None = self.server.gate  # type: ignore[attr-defined]
        for offset in range(start, len(body), chunk):
            self.wfile.write(body[offset : offset + chunk])
            if gate is not None and offset - start == GATED_AFTER - chunk:
                self.wfile.flush()
                gate.wait(30)  # hold the rest back until the test opens the gate


@contextmanager
def file_server(files: dict[str, bytes], gate: threading.Event | None = None) -> Iterator[str]:
    """Serve `files` (name -> bytes) on 127.0.0.1; yields the base URL. With a `gate`, each
    answer sends its first `GATED_AFTER` bytes, then waits for the gate to open."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FileHandler)
    httpd.daemon_threads = True
    httpd.files = files  # type: ignore[attr-defined]
    httpd.gate = gate  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        if gate is not None:
            gate.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def url_entry(name: str, tool: str, url: str, payload: bytes, **extra: object) -> dict:
    return {
        "name": name,
        "tool": tool,
        "family": "ESRGAN (RRDBNet)",
        "source": {"url": url},
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "licence": "BSD-3-Clause",
        "non_commercial": False,
        "description": f"{name} for tests.",
        **extra,
    }


def hub_entry(name: str = "tiny-diffusers", **extra: object) -> dict:
    return {
        "name": name,
        "tool": "generate",
        "family": "Stable Diffusion (tiny)",
        "source": {
            "hf_repo": REPO_ID,
            "files": ["model_index.json", "scheduler/*", "unet/*", "vae/*"],
        },
        "size": 1_000_000,
        "sha256": None,
        "licence": "sai-nc-community (non-commercial research)",
        "non_commercial": True,
        "description": "A tiny diffusers repository on the local test Hub.",
        **extra,
    }


def page_entry(name: str, file: str) -> dict:
    return {
        "name": name,
        "tool": "restore",
        "family": "NAFNet",
        "source": {"page": "https://example.org/nafnet", "file": file},
        "size": None,
        "sha256": None,
        "licence": "MIT",
        "non_commercial": False,
        "description": "Published on a web page only.",
    }


def use_catalogue(monkeypatch: pytest.MonkeyPatch, folder: Path, models: list[dict]) -> Path:
    """Make every catalogue reader in Studio read `models` instead of the package's file."""
    path = folder / "test-catalogue.json"
    path.write_text(json.dumps({"version": 1, "models": models}), encoding="utf-8")
    monkeypatch.setattr(catalogue, "catalogue_path", lambda: path)
    return path


def diffusers_folder(folder: Path, *, with_vae_weights: bool = True) -> Path:
    """A small folder in the diffusers layout (the weights are tiny safetensors files)."""
    index = {
        "_class_name": "StableDiffusionPipeline",
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps(index))
    for component in ("scheduler", "unet", "vae"):
        (folder / component).mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text("{}")
    (folder / "unet" / "config.json").write_text("{}")
    (folder / "vae" / "config.json").write_text("{}")
    weights = {"conv_in.weight": np.ones((4, 4), dtype="float32")}
    save_file(weights, str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    if with_vae_weights:
        save_file(weights, str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    return folder


def single_file_checkpoint(path: Path, prefixes: list[str]) -> Path:
    """A .safetensors file whose tensor names are those of a single-file diffusion checkpoint."""

    save_file(
        {f"{prefix}weight": np.zeros((2,), dtype="float32") for prefix in prefixes}, str(path)
    )
    return path
