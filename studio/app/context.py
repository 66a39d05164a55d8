"""The application's services in one object, passed explicitly: no hidden globals.

The GUI and the CLI each build one; tests build one on a temporary STUDIO_HOME.
"""

from __future__ import annotations

import logging
import logging.handlers
from dataclasses import dataclass, field
from pathlib import Path

from studio.app.history import HistoryStore
from studio.app.jobs import JobQueue
from studio.app.settings import Settings, load_settings, save_settings
from studio.paths import UserDirs, user_dirs


@dataclass
class AppContext:
    dirs: UserDirs
    settings: Settings
    history: HistoryStore
    jobs: JobQueue = field(default_factory=JobQueue)
    _cache: object | None = field(default=None, repr=False)

    @classmethod
    def open(cls) -> AppContext:
        dirs = user_dirs().ensure()
        return cls(dirs=dirs, settings=load_settings(), history=HistoryStore(dirs.data))

    @property
    def cache(self):
        """The loaded-model cache, created on first use so that torch loads only when needed."""
        if self._cache is None:
            from studio.models.cache import ModelCache

            self._cache = ModelCache()
        return self._cache

    def update_settings(self, settings: Settings) -> None:
        self.settings = settings.validated()
        save_settings(self.settings)

    def close(self) -> None:
        self.jobs.shutdown()
        if self._cache is not None:
            self._cache.clear()
        self.history.close()


def setup_logging(log_dir: Path, *, verbose: bool = False) -> Path:
    """Log to a rotating file under the user log dir; the path is shown to the user with errors."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / "studio.log"
    handler = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=2_000_000, backupCount=3, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    if not any(getattr(h, "baseFilename", None) == str(log_file) for h in root.handlers):
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return log_file
