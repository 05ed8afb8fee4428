"""eGeMAPS functionals (openSMILE) per clip: parallel over files, cached per audio content.

:func:`extract_egemaps` returns the 88 eGeMAPSv02 functionals plus the clip ``duration`` for each
file, as a DataFrame indexed by file (opensmile's style). Work is spread over ``num_workers``
processes; every clip's vector goes into the one cache (:class:`smoothclap.cache.ArrayCache`,
``<cache_dir>/egemaps/<feature set>-<version>/``) as soon as it is computed, so an interrupted run
keeps what it finished and a repeat run does not even need openSMILE.

openSMILE is an optional extra (``pip install 'smoothclap[egemaps]'``). It is licensed by
audEERING for research and other non-commercial use only; commercial use needs a licence from
audEERING.
"""
from __future__ import annotations

import json
import logging
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .audio import SAMPLE_RATE, content_hash, read_audio
from .cache import ArrayCache, cache_root
from .errors import BadInputError, SkipLog
from .io import atomic_write_text

log = logging.getLogger("smoothclap")

#: Bump when anything that changes cached feature values changes (reading, resampling, openSMILE
#: configuration). It is part of the cache folder name, so old entries are simply not found.
PREPROC_VERSION = "v1-16k-mono"

DURATION_COLUMN = "duration"

LICENCE_NOTE = ("openSMILE is licensed by audEERING for research / non-commercial use only; "
                "commercial use needs a licence from audEERING.")
_INSTALL_HINT = ("eGeMAPS extraction needs openSMILE: pip install 'smoothclap[egemaps]' (or pip install "
                 "opensmile). Note: " + LICENCE_NOTE)

_SMILES: dict[str, Any] = {}  # per-process openSMILE instances, keyed by feature set name


def _import_opensmile():
    try:
        import opensmile  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(_INSTALL_HINT) from e
    return opensmile


def _get_smile(feature_set: str):
    smile = _SMILES.get(feature_set)
    if smile is None:
        opensmile = _import_opensmile()
        try:
            fs = getattr(opensmile.FeatureSet, feature_set)
        except AttributeError:
            names = [m.name for m in opensmile.FeatureSet]
            raise ValueError(f"unknown openSMILE feature set {feature_set!r}; choose one of {names}") from None
        smile = opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.Functionals)
        _SMILES[feature_set] = smile
    return smile


def egemaps_feature_names(feature_set: str = "eGeMAPSv02") -> list[str]:
    """The openSMILE functional names of ``feature_set`` (88 for eGeMAPSv02). Needs openSMILE."""
    return list(_get_smile(feature_set).feature_names)


def feature_cache(cache_dir, feature_set: str = "eGeMAPSv02") -> ArrayCache:
    """The cache folder of ``feature_set`` (disabled when ``cache_dir`` is None)."""
    root = cache_root(cache_dir)
    return ArrayCache(root / "egemaps" / f"{feature_set}-{PREPROC_VERSION}" if root else None, dtype=np.float64)


def _extract_one(path: str, cache_key: str | None, cache_folder: str | None, feature_set: str):
    """Extract one clip. Returns ``("ok", path, values[n+1], feature_names)`` (last value = duration)
    or ``("bad", path, reason, None)``. Writes the cache entry itself, so finished work survives an
    interrupted run. Runs in pool workers and in-process alike."""
    try:
        wav = read_audio(path)
        smile = _get_smile(feature_set)
        df = smile.process_signal(wav, SAMPLE_RATE)
        values = df.to_numpy(dtype=np.float64).reshape(-1)
        names = list(df.columns)
        bad = [n for n, v in zip(names, values) if not np.isfinite(v)]
        if bad:
            shown = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
            raise BadInputError(path, f"openSMILE returned NaN/inf features ({len(bad)}: {shown})")
        out = np.append(values, len(wav) / SAMPLE_RATE)
    except BadInputError as e:
        return ("bad", path, e.reason, None)
    except ImportError:
        raise
    except Exception as e:  # openSMILE / decoder failure on this one file: report it as bad input
        return ("bad", path, f"feature extraction failed ({e.__class__.__name__}: {e})", None)
    if cache_key is not None:
        ArrayCache(cache_folder, dtype=np.float64).put(cache_key, out)
    return ("ok", path, out, names)


def _extract_batch(items, cache_folder, feature_set: str):
    return [_extract_one(p, k, cache_folder, feature_set) for p, k in items]


def _worker_init(feature_set: str) -> None:
    # Threads inside workers would only oversubscribe the cores we parallelise over.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _get_smile(feature_set)


def _column_list(cache: ArrayCache, feature_set: str) -> list[str] | None:
    """The feature names stored beside the entries (written from openSMILE when missing, so entries
    of a run that ended before writing the list are still found); None without either."""
    if not cache.enabled:
        return None
    f = cache.dir / "columns.json"
    try:
        names = json.loads(f.read_text())
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return names
    except (FileNotFoundError, ValueError, OSError):
        pass
    names = _names_or_empty(feature_set) or None
    if names is not None:
        atomic_write_text(f, json.dumps(names))
    return names


def extract_egemaps(
    files: Iterable[str | os.PathLike],
    *,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 2,
    skip: SkipLog | None = None,
    progress: bool = True,
    feature_set: str = "eGeMAPSv02",
    mp_context: str | None = None,
) -> pd.DataFrame:
    """eGeMAPS functionals (openSMILE) for each file, plus the clip duration.

    Every file is read with :func:`smoothclap.audio.read_audio` (any format/rate/channels ->
    16 kHz mono, validated) and passed to ``opensmile.Smile(feature_set, Functionals).process_signal``.

    Args:
        files: audio paths, or container references (``wds://...``, ``hf://...``: clips inside
            WebDataset shards or Hugging Face datasets, :mod:`smoothclap.sources`), whose decoded
            waveform goes to ``process_signal`` like a file's and whose cache key is the sha1 of
            their bytes, as a file's. Duplicates are processed once (one row per distinct path).
        cache_dir: when given, each clip's vector is cached (see :func:`feature_cache`) keyed by the
            sha1 of the file's bytes; entries are written atomically by whichever process computed
            them, so a repeat run reads them (no openSMILE call, openSMILE not even needed) and an
            interrupted run keeps what it finished. Renamed/copied files hit the same entry.
        num_workers: processes used for the files not in the cache (``<= 1``: in this process).
        skip: a :class:`~smoothclap.errors.SkipLog`. With ``skip.skip`` true, bad files (missing,
            unreadable, empty, silent, too short, NaN features) are logged, counted in it and left
            out of the result; otherwise (default) the first bad file raises
            :class:`~smoothclap.errors.BadInputError` naming it. Work finished before stays cached.
        progress: show a tqdm bar over the files being extracted.
        feature_set: name of an ``opensmile.FeatureSet`` member (``"eGeMAPSv02"``: 88 features;
            ``"ComParE_2016"`` also works).
        mp_context: multiprocessing start method for the pool; None = the platform default
            ("fork" on Linux before Python 3.14, as torch's DataLoader). ``"spawn"`` /
            ``"forkserver"`` start slower and need the ``if __name__ == "__main__":`` guard in scripts.

    Returns:
        DataFrame indexed by the file path as given (``str``; index name ``"file"``), in input
        order, with the openSMILE feature columns (88 for eGeMAPSv02, float64) followed by
        ``duration`` (clip seconds after reading at 16 kHz).

    Licence: see :data:`LICENCE_NOTE`. ImportError with the install hint when openSMILE is missing.
    """
    skip = SkipLog() if skip is None else skip
    paths = list(dict.fromkeys(str(os.fspath(f)) for f in files))
    cache = feature_cache(cache_dir, feature_set)
    names = _column_list(cache, feature_set)
    results, todo = _look_up(paths, cache, names, skip)
    collected = _Collected(results, names, skip, cache)
    if todo:
        _import_opensmile()  # fail early, with the install hint, before starting workers
        _compute(todo, collected, cache, feature_set, num_workers=num_workers, mp_context=mp_context,
                 progress=progress)
    return _table(paths, results, collected.names, feature_set)


def _look_up(paths: list[str], cache: ArrayCache, names: list[str] | None,
             skip: SkipLog) -> tuple[dict[str, np.ndarray], list[tuple[str, str | None]]]:
    """Stage 1: (the vectors found in the cache by path, the ``(path, cache key)`` still to compute).
    Files whose bytes cannot be hashed go to ``skip``; without a column list nothing is looked up."""
    results: dict[str, np.ndarray] = {}
    todo: list[tuple[str, str | None]] = []
    for p in paths:
        key = None
        if cache.enabled:
            key = content_hash(p, skip)
            if key is None:
                continue
            if names is not None:
                arr = cache.get(key, len(names) + 1)
                if arr is not None:
                    results[p] = arr
                    continue
        todo.append((p, key))
    return results, todo


class _Collected:
    """Stage 2's results as they arrive (:func:`_extract_one`'s tuples): a good vector into
    ``results``, a bad file into ``skip``; the first vector's feature names become the column list
    (stored beside the cache entries)."""

    def __init__(self, results: dict[str, np.ndarray], names: list[str] | None, skip: SkipLog, cache: ArrayCache):
        self.results, self.names, self.skip, self.cache = results, names, skip, cache

    def __call__(self, res) -> None:
        status, path, payload, got_names = res
        if status == "bad":
            self.skip.handle(BadInputError(path, payload))
            return
        if self.names is None:
            self.names = got_names
            if self.cache.enabled:
                atomic_write_text(self.cache.dir / "columns.json", json.dumps(self.names))
        self.results[path] = payload


def _compute(todo: list[tuple[str, str | None]], handle: _Collected, cache: ArrayCache, feature_set: str, *,
             num_workers: int, mp_context: str | None, progress: bool) -> None:
    """Stage 2: openSMILE over ``todo``, in this process (``num_workers <= 1`` or one file) or in a
    process pool; each result to ``handle`` as it comes, a progress bar over the files."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    folder = str(cache.dir) if cache.enabled else None
    bar = tqdm(total=len(todo), desc=f"{feature_set}", unit="clip", disable=not progress)
    try:
        workers = min(int(num_workers), len(todo))
        if workers <= 1:
            for p, key in todo:
                handle(_extract_one(p, key, folder, feature_set))
                bar.update(1)
        else:
            _compute_in_pool(todo, handle, bar, folder, feature_set, workers, mp_context)
    finally:
        bar.close()


def _compute_in_pool(todo, handle, bar, folder: str | None, feature_set: str, workers: int,
                     mp_context: str | None) -> None:
    import multiprocessing as mp  # noqa: PLC0415

    # Small batches amortise the IPC cost while keeping the workers balanced.
    size = max(1, min(16, len(todo) // (workers * 8)))
    batches = [todo[i : i + size] for i in range(0, len(todo), size)]
    ctx = mp.get_context(mp_context) if mp_context else None
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(feature_set,)
    ) as pool:
        pending = {pool.submit(_extract_batch, b, folder, feature_set) for b in batches}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    batch = fut.result()
                    for res in batch:
                        handle(res)
                    bar.update(len(batch))
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def _table(paths: list[str], results: dict[str, np.ndarray], names: list[str] | None,
           feature_set: str) -> pd.DataFrame:
    """Stage 3: the result table, one row per path with a vector, in input order."""
    kept = [p for p in paths if p in results]
    if names is None:  # nothing extracted and no column list: only possible when all were bad
        names = _names_or_empty(feature_set)
    cols = list(names) + [DURATION_COLUMN]
    mat = np.stack([results[p] for p in kept]) if kept else np.zeros((0, len(cols)))
    return pd.DataFrame(mat, index=pd.Index(kept, name="file", dtype=object), columns=cols)


def _names_or_empty(feature_set: str) -> list[str]:
    try:
        return egemaps_feature_names(feature_set)
    except ImportError:
        return []
