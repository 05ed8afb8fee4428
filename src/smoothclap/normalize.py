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


def group_ids(table, column: str | None) -> np.ndarray | None:
    """Group of each row of ``table`` by ``column`` (missing values form one group "?"); None
    when ``column`` is None or the table has no such column."""
    if column is None or column not in table.columns:
        return None
    return table[column].astype(str).fillna("?").to_numpy()


def group_stats(x: np.ndarray, groups: np.ndarray, eps: float = EPS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per group: (mean ``[k]``, std ``[k]``) of ``x`` ``[N, k]`` (float64, std clamped at ``eps``),
    exactly the statistics :func:`standardize` with ``"zscore"`` uses."""
    x = np.asarray(x, dtype=np.float64)
    out = {}
    for g in np.unique(groups):
        xs = x[groups == g]
        out[str(g)] = (xs.mean(0), np.maximum(xs.std(0), eps))
    return out
