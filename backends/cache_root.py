"""Where graphc's on-disk caches live (the pipeline's schedules, the LLVM backend's libraries
and runtime objects): one root for all of them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

CACHE_ENV = "GRAPHC_CACHE_DIR"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache root: `override`, else $GRAPHC_CACHE_DIR, else ~/.cache/graphc."""
    if override is not None:
        return Path(override)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "graphc"


def atomic_write(path: Path, data: bytes) -> None:
    """`data` into `path` through a temporary file in the same folder renamed into place: a
    reader sees the old file or the whole new one, and two writers both succeed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
