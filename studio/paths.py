"""Where Studio keeps its files. `STUDIO_HOME` relocates every user directory (tests rely on it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "Studio"


@dataclass(frozen=True)
class UserDirs:
    config: Path
    data: Path
    cache: Path
    log: Path

    def ensure(self) -> UserDirs:
        for path in (self.config, self.data, self.cache, self.log):
            path.mkdir(parents=True, exist_ok=True)
        return self


def user_dirs() -> UserDirs:
    home = os.environ.get("STUDIO_HOME")
    if home:
        root = Path(home).expanduser()
        return UserDirs(root / "config", root / "data", root / "cache", root / "log")
    return UserDirs(
        Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
        Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
        Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
        Path(platformdirs.user_log_dir(APP_NAME, appauthor=False)),
    )
