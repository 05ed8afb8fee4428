"""Standardisation of embeddings, globally or per group (corpus, speaker).

Used by the model for cross-corpus feature normalisation (``model.feature_norm_group``, see
:meth:`smoothclap.model.SmoothClapModel.normalize_audio_features`) and by the soft targets
(``loss.target_standardize``). Statistics always come from the rows given (training rows when
fitting, the clips being scored at test time; never labels).
"""
from __future__ import annotations

import numpy as np

EPS = 1e-6


def standardize(x: np.ndarray, mode: str, groups: np.ndarray | None = None, eps: float = EPS) -> np.ndarray:
    """Standardise rows of ``x`` ``[N, k]`` with statistics of ``x`` itself, per group when
    ``groups`` ``[N]`` is given. mode: none | center | zscore | whiten. Returns ``[N, k]`` float32
    (computed in float64)."""
    if mode == "none":
        return x
    x = np.asarray(x, dtype=np.float64)
    if groups is None:
        groups = np.zeros(len(x), dtype=int)
    out = np.empty_like(x)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        xs = x[idx]
        mu = xs.mean(0)
        xc = xs - mu
        if mode == "center":
            out[idx] = xc
        elif mode == "zscore":
            out[idx] = xc / np.maximum(xs.std(0), eps)
        elif mode == "whiten":
            # PCA whitening with shrinkage: tiny groups stay well-conditioned.
            cov = xc.T @ xc / max(len(xs) - 1, 1)
            shrink = 1e-3 * np.trace(cov) / cov.shape[0] + eps
            w, v = np.linalg.eigh(cov + shrink * np.eye(cov.shape[0]))
            out[idx] = xc @ v / np.sqrt(w)
        else:
            raise ValueError(f"unknown standardisation {mode!r}")
    return out.astype(np.float32)


def normalize_groups(x: np.ndarray, groups, min_clips: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Feature normalisation at test time, ``[N, k]`` -> ``[N, k]`` float32: clips of each group in
    ``groups`` (``[N]``) z-scored with that group's own statistics; groups of fewer than ``min_clips``
    clips (a single clip has no statistics of its own), and all clips when ``groups`` is None, with
    the training statistics ``mean`` / ``std`` ``[k]``."""
    x = np.asarray(x, dtype=np.float32)
    mean, std = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    if groups is None:
        return (x - mean) / std
    g = np.asarray([str(v) for v in groups], dtype=object)
    if len(g) != len(x):
        raise ValueError(f"{len(g)} group ids for {len(x)} clips")
    out = np.empty_like(x)
    names, counts = np.unique(g, return_counts=True)
    small = set(names[counts < max(2, min_clips)])
    mask = np.array([v in small for v in g], dtype=bool)
    big = np.flatnonzero(~mask)
    if len(big):
        out[big] = standardize(x[big], "zscore", g[big])
    if mask.any():
        out[mask] = (x[mask] - mean) / std
    return out


def group_ids(table, column: str | None) -> np.ndarray | None:
    """``[N]`` group of each row of ``table`` by ``column``, as text; rows whose value is missing
    (:func:`smoothclap.values.is_missing`: None, NaN, empty) form one group ``"?"``
    (:data:`~smoothclap.values.MISSING_GROUP`). None when ``column`` is None or the table has no
    such column."""
    from .values import MISSING_GROUP, is_missing

    if column is None or column not in table.columns:
        return None
    return np.array([MISSING_GROUP if is_missing(v) else str(v) for v in table[column]], dtype=object)


def group_stats(x: np.ndarray, groups: np.ndarray, eps: float = EPS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per group: (mean ``[k]``, std ``[k]``) of ``x`` ``[N, k]`` (float64, std clamped at ``eps``),
    exactly the statistics :func:`standardize` with ``"zscore"`` uses."""
    x = np.asarray(x, dtype=np.float64)
    out = {}
    for g in np.unique(groups):
        xs = x[groups == g]
        out[str(g)] = (xs.mean(0), np.maximum(xs.std(0), eps))
    return out
