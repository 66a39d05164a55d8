"""Writing files so that a crash, a full disk or a second writer never leaves half a file."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path


def copy_atomically(source: Path, target: Path) -> Path:
    """Copy to a unique temporary name beside `target`, then rename: a complete file or none."""
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        shutil.copyfile(source, temporary)
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)
    return target
