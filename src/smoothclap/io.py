"""The one atomic writer: nothing half-written survives an interrupted run.

Every file the project writes (cache entries, checkpoints, models, reports) goes through
:func:`atomic_save`: the content is written to a temporary file in the same folder and moved into
place with ``os.replace``, so a reader sees the old file or the new one, never a torn one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_save(path: str | Path, save_fn: Callable[[str], None]) -> Path:
    """Call ``save_fn(tmp_path)`` then move the finished file into place (same folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_save(path, lambda t: Path(t).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_save(path, lambda t: Path(t).write_text(text))


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str))
