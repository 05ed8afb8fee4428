"""Run frozen towers over a corpus once, with caching, length batching and progress bars.

``embed_audio_files`` streams the corpus in chunks (never the whole corpus in memory), sorts each
chunk by length to cut padding, and caches every clip's embedding by content hash.
``embed_texts`` embeds each distinct string once.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .audio import SAMPLE_RATE, file_hash, read_audio
from .cache import EmbeddingCache, audio_key, text_key
from .errors import BadInputError, SkipLog

log = logging.getLogger("smoothclap")


def preprocessing_key(sample_rate: int = SAMPLE_RATE, loudness: str | None = None) -> str:
    """What was done to the waveform before the tower; part of every audio cache key."""
    return f"sr={sample_rate}|loud={loudness or 'none'}"


def embed_audio_files(
    tower,
    files: Sequence[str],
    *,
    cache_dir=None,
    batch_size: int = 16,
    chunk_size: int = 256,
    skip: SkipLog | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed audio files with ``tower``.

    Returns ``(emb, ok)``: emb ``[N, tower.dim]`` float32 (rows of skipped files are NaN) and
    ok ``[N]`` bool. Bad files raise BadInputError unless ``skip.skip``.
    """
    skip = skip if skip is not None else SkipLog(skip=False)
    if hasattr(tower, "embed_files"):  # e.g. openSMILE: its own parallel, cached extractor
        return tower.embed_files(files, cache_dir=cache_dir, skip=skip, progress=progress)
    cache = EmbeddingCache(cache_dir, tower.cache_key)
    pre = preprocessing_key(tower.sample_rate)
    n = len(files)
    out = np.full((n, tower.dim), np.nan, dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    keys: list[str | None] = [None] * n
    todo: list[int] = []
    for i, f in enumerate(files):
        try:
            keys[i] = audio_key(file_hash(f), pre)
        except FileNotFoundError:
            skip.handle(BadInputError(f, "file not found"))
            continue
        except OSError as e:
            skip.handle(BadInputError(f, f"unreadable ({e})"))
            continue
        v = cache.get(keys[i])
        if v is not None and v.shape == (tower.dim,):
            out[i], ok[i] = v, True
        else:
            todo.append(i)
    bar = tqdm(total=len(todo), desc=desc or f"embed {tower.spec}", unit="clip", disable=not progress or not todo)
    for c0 in range(0, len(todo), chunk_size):
        chunk = todo[c0 : c0 + chunk_size]
        waves: dict[int, np.ndarray] = {}
        for i in chunk:
            try:
                waves[i] = read_audio(files[i], sample_rate=tower.sample_rate)
            except BadInputError as e:
                skip.handle(e)
                bar.update(1)
        order = sorted(waves, key=lambda i: len(waves[i]))
        for b0 in range(0, len(order), batch_size):
            idx = order[b0 : b0 + batch_size]
            emb = tower.embed([waves[i] for i in idx]).numpy()
            for i, v in zip(idx, emb):
                if not np.all(np.isfinite(v)):
                    skip.handle(BadInputError(files[i], f"{tower.spec} produced non-finite features"))
                    continue
                out[i], ok[i] = v, True
                cache.put(keys[i], v)
            bar.update(len(idx))
    bar.close()
    return out, ok


def embed_texts(tower, texts: Sequence[str], *, cache_dir=None, batch_size: int = 64,
                progress: bool = True, desc: str | None = None) -> np.ndarray:
    """Embed strings (each distinct string once). Returns ``[N, tower.dim]`` float32 in input order."""
    cache = EmbeddingCache(cache_dir, tower.cache_key)
    uniq = list(dict.fromkeys(texts))
    table: dict[str, np.ndarray] = {}
    todo = []
    for t in uniq:
        v = cache.get(text_key(t))
        if v is not None and v.shape == (tower.dim,):
            table[t] = v
        else:
            todo.append(t)
    # Sorting by length cuts padding inside each batch.
    todo.sort(key=len)
    bar = tqdm(total=len(todo), desc=desc or f"embed {tower.spec}", unit="text", disable=not progress or not todo)
    for b0 in range(0, len(todo), batch_size):
        batch = todo[b0 : b0 + batch_size]
        emb = tower.embed(batch).numpy()
        for t, v in zip(batch, emb):
            table[t] = v
            cache.put(text_key(t), v)
        bar.update(len(batch))
    bar.close()
    if not texts:
        return np.zeros((0, tower.dim), dtype=np.float32)
    return np.stack([table[t] for t in texts]).astype(np.float32)


def to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
