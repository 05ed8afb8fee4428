"""On-disk cache of frozen-tower embeddings.

One ``.npy`` per item under ``<root>/emb/<tower>/<key[:2]>/<key>.npy``; the key hashes the audio
content (or the text) together with the preprocessing, and the tower folder is named from the
tower's spec, so changing the tower, the file or the preprocessing never reuses a stale entry.
Writes are atomic, so an interrupted run keeps everything it finished and nothing half-written.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from .io import atomic_save


def _save(path: str, vec: np.ndarray) -> None:
    with open(path, "wb") as f:  # closed before the atomic rename
        np.save(f, vec)


def default_cache_dir() -> Path:
    return Path(os.environ.get("SMOOTHCLAP_CACHE", "~/.cache/smoothclap")).expanduser()


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def audio_key(content_hash: str, preprocessing: str) -> str:
    return hashlib.sha1(f"{content_hash}|{preprocessing}".encode()).hexdigest()


def _slug(spec: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", spec)[-60:]
    return f"{readable}-{hashlib.sha1(spec.encode()).hexdigest()[:8]}"


class EmbeddingCache:
    """Key -> vector store for one tower. ``root=None`` disables caching (everything recomputes)."""

    def __init__(self, root: str | Path | None, tower_key: str):
        self.enabled = root is not None
        self.dir = Path(root).expanduser() / "emb" / _slug(tower_key) if root is not None else None

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        if not self.enabled:
            return None
        try:  # one open() instead of exists() + open(): warm runs touch every entry
            return np.load(self._path(key))
        except FileNotFoundError:
            return None
        except (ValueError, OSError, EOFError):
            return None  # a corrupt entry is recomputed, never trusted

    def put(self, key: str, vec: np.ndarray) -> None:
        if not self.enabled:
            return
        vec = np.ascontiguousarray(vec, dtype=np.float32)
        atomic_save(self._path(key), lambda t: _save(t, vec))

    def __contains__(self, key: str) -> bool:
        return self.enabled and self._path(key).exists()
