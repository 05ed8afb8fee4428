"""Atomic file writes: nothing half-written survives an interrupted run."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable


def _atomic(path: str | Path, write: Callable[[str], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return _atomic(path, lambda t: Path(t).write_text(text))


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str))


def atomic_save(path: str | Path, save_fn: Callable[[str], None]) -> Path:
    """Call ``save_fn(tmp_path)`` then move the finished file into place."""
    return _atomic(path, save_fn)
