"""The one on-disk cache: frozen-tower embeddings and eGeMAPS functionals, one ``.npy`` per item.

Layout under the cache root (default :data:`DEFAULT_CACHE_DIR`, ``cache_dir`` in every config and
``--cache-dir`` on every command)::

    <root>/emb/<tower slug>/<key[:2]>/<key>.npy            tower embeddings (EmbeddingCache)
    <root>/egemaps/<feature set>-<version>/<h[:2]>/<h>.npy  openSMILE functionals (smoothclap.egemaps)

An audio key hashes the file's bytes together with the preprocessing (sample rate, loudness
normalisation); a text key hashes the string; the tower folder is named from the tower's
``cache_key``, so changing the tower, the file or the preprocessing never reuses a stale entry.
Entries are written with the one atomic writer (:mod:`smoothclap.io`) and verified when read (a
torn or wrongly shaped entry counts as missing and is recomputed); loading never unpickles.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from .io import atomic_save

#: Where caches live unless a config / command says otherwise (``cache_dir``, ``--cache-dir``).
DEFAULT_CACHE_DIR = "~/.cache/smoothclap"


def cache_root(cache_dir: str | Path | None) -> Path | None:
    """``cache_dir`` as an expanded Path (``"~"`` never becomes a folder); None = caching off."""
    return None if cache_dir in (None, "") else Path(cache_dir).expanduser()


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def audio_key(content_hash: str, preprocessing: str) -> str:
    return hashlib.sha1(f"{content_hash}|{preprocessing}".encode()).hexdigest()


def _slug(spec: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", spec)[-60:]
    return f"{readable}-{hashlib.sha1(spec.encode()).hexdigest()[:8]}"


def _save(path: str, vec: np.ndarray) -> None:
    with open(path, "wb") as f:  # closed before the atomic rename
        np.save(f, vec, allow_pickle=False)


class ArrayCache:
    """Key -> 1-d float array, one ``<dir>/<key[:2]>/<key>.npy`` each. ``folder=None`` disables it."""

    def __init__(self, folder: str | Path | None, dtype=np.float32):
        self.dir = Path(folder).expanduser() if folder is not None else None
        self.dtype = dtype

    @property
    def enabled(self) -> bool:
        return self.dir is not None

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def get(self, key: str, length: int | None = None) -> np.ndarray | None:
        """The entry, or None when absent, unreadable, not 1-d or not ``length`` long."""
        if not self.enabled:
            return None
        try:  # one open() instead of exists() + open(): warm runs touch every entry
            arr = np.load(self._path(key), allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError, EOFError):
            return None  # a missing or corrupt entry is recomputed, never trusted
        if arr.ndim != 1 or (length is not None and arr.shape[0] != length):
            return None
        return arr

    def put(self, key: str, vec: np.ndarray) -> None:
        if not self.enabled:
            return
        vec = np.ascontiguousarray(vec, dtype=self.dtype)
        atomic_save(self._path(key), lambda t: _save(t, vec))

    def __contains__(self, key: str) -> bool:
        return self.enabled and self._path(key).exists()


class EmbeddingCache(ArrayCache):
    """Embeddings of one tower under ``<root>/emb/<slug of tower_key>``. ``root=None``: disabled."""

    def __init__(self, root: str | Path | None, tower_key: str):
        super().__init__(Path(root).expanduser() / "emb" / _slug(tower_key) if root is not None else None)
