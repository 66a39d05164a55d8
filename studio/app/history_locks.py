"""Which Studio processes using a history store are still alive.

Each open store holds an exclusive lock on `locks/<owner>.lock`, where `owner` is its pid plus a
random token (a pid alone can be reused by a later process). The operating system drops the lock
when the process dies, even by SIGKILL, so "can I take this lock?" answers "is the owner gone?"
without trusting pids. The lock is an `flock` (POSIX) or `msvcrt.locking` (Windows) lock: both
belong to the open file, not the process, so two stores opened in one process see each other too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def new_owner_id() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


class OwnerLock:
    """Held for as long as one store is open; marks its running entries as belonging to a live
    process."""

    def __init__(self, locks_dir: Path, owner: str) -> None:
        locks_dir.mkdir(parents=True, exist_ok=True)
        self.owner = owner
        self.path = locks_dir / f"{owner}.lock"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(self._fd):
            os.close(self._fd)
            raise RuntimeError(f"{self.path} is already locked; owner ids must be unique")
        os.write(self._fd, f"pid {os.getpid()}\n".encode())

    def release(self) -> None:
        """Remove the file while still holding the lock, then let go: a process probing it in
        between finds it either locked (alive) or gone (finished), never free and present."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def owner_alive(locks_dir: Path, owner: str) -> bool:
    """False once the owner's process has exited or closed its store."""
    try:
        fd = os.open(locks_dir / f"{owner}.lock", os.O_RDWR)
    except FileNotFoundError:
        return False
    except PermissionError:  # Windows: a file held open by a live process
        return True
    try:
        return not _try_lock(fd)
    finally:
        os.close(fd)


def remove_stale_locks(locks_dir: Path, own: str) -> None:
    """Delete lock files whose process is gone (they are only debris; liveness never needs them)."""
    for path in locks_dir.glob("*.lock"):
        owner = path.stem
        if owner != own and not owner_alive(locks_dir, owner):
            with contextlib.suppress(OSError):
                path.unlink()
