"""sha256 of model files, computed once per file version: a 7 GB checkpoint takes seconds."""

from __future__ import annotations

import threading
from pathlib import Path

from studio.imaging import file_sha256


class FileHashes:
    """Hashes remembered by (path, size, modification time): a changed file is hashed again."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._known:
                return self._known[key]
        digest = file_sha256(path)
        with self._lock:
            self._known[key] = digest
        return digest


_HASHES = FileHashes()


def sha256_of(path: Path) -> str:
    return _HASHES.sha256(path)
