"""Standardisation of embeddings, globally or per group (corpus, speaker).

Used by the model for cross-corpus feature normalisation (``model.feature_norm_group``, see
:meth:`smoothclap.model.SmoothClapModel.normalize_audio_features`) and by the soft targets
(``loss.target_standardize``). Statistics always come from the rows given (training rows when
fitting, the clips being scored at test time; never labels).

**Streaming.** Training statistics may come from more rows than memory holds: a
:class:`RowSource` (``[N, k]`` rows read on demand, e.g. from the embedding cache,
:class:`smoothclap.trainer.mapped.CachedRows`) is read in chunks of :data:`CHUNK_ROWS` rows by
:func:`moments`, which accumulates in float64 row after row, in the order NumPy's ``x.mean(0)`` /
``x.std(0)`` add them (a reduction over the first axis of a C-ordered array adds the rows one by
one), so the statistics are bit-for-bit those of the whole array at once (``tests/
test_scale_training.py``), whatever the chunk size. :class:`ZScored` applies per-group
statistics to the rows as they are read, with the arithmetic of :func:`standardize`.
"""
from __future__ import annotations

import logging

import numpy as np

EPS = 1e-6
#: Rows per chunk when statistics are accumulated over a :class:`RowSource` (or a large array).
CHUNK_ROWS = 1 << 12

log = logging.getLogger("smoothclap")


class RowSource:
    """``[N, k]`` rows read on demand: ``shape``, ``len(x)``, ``x[idx]`` (an index array or a
    slice) -> ``np.ndarray`` ``[len(idx), k]``; ``np.asarray(x)`` reads all of it (in chunks).
    Subclasses set ``shape`` (and ``dtype``) and implement :meth:`__getitem__`."""

    ndim = 2
    dtype = np.dtype(np.float32)
    shape: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, idx) -> np.ndarray:
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """What the rows would take in memory (they are not held)."""
        return int(self.shape[0]) * int(self.shape[1]) * self.dtype.itemsize

    def __array__(self, dtype=None, copy=None):
        log.info("reading all %d x %d rows of %s into memory", self.shape[0], self.shape[1], type(self).__name__)
        out = np.empty(self.shape, dtype=self.dtype)
        step = CHUNK_ROWS
        for a in range(0, len(self), step):
            out[a : a + step] = self[a : a + step]
        return out if dtype is None else out.astype(dtype, copy=False)


def is_row_source(x) -> bool:
    """Rows read on demand (:class:`RowSource`) rather than an array in memory."""
    return isinstance(x, RowSource)


def moments(x, codes: np.ndarray | None = None, ddof: int = 0, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the float64 mean and standard deviation (``ddof``: as NumPy's) of the rows of
    ``x`` (``[N, k]``, an array or a :class:`RowSource`): ``(mean [G, k], std [G, k])``, group
    ``g`` = the rows where ``codes`` (``[N]`` ints in ``0..G-1``, every one present; None: one
    group) is ``g``. Exactly ``x[codes == g].astype(float64).mean(0)`` / ``.std(0, ddof=ddof)``
    for ``k >= 2`` (see the module docstring), read in chunks of ``rows`` rows (grouped rows in
    group order, each group's rows in their order; default :data:`CHUNK_ROWS`): two passes, memory
    ``O(rows x k + G x k)`` plus 8 bytes per row for grouped rows' order."""
    rows = int(rows or CHUNK_ROWS)
    n, k = int(x.shape[0]), int(x.shape[1])
    codes = np.zeros(n, dtype=np.int64) if codes is None else np.asarray(codes, dtype=np.int64)
    if len(codes) != n:
        raise ValueError(f"{len(codes)} group codes for {n} rows")
    n_groups = int(codes.max()) + 1 if n else 0
    count = np.bincount(codes, minlength=n_groups).astype(np.float64)[:, None]
    if n <= rows or k == 1:  # it fits one chunk (or a column, which NumPy sums pairwise): at once
        a = np.asarray(x[0:n], dtype=np.float64)
        mean, std = np.empty((n_groups, k)), np.empty((n_groups, k))
        for g in range(n_groups):
            xs = a[codes == g] if n_groups > 1 else a
            mean[g], std[g] = xs.mean(0), xs.std(0, ddof=ddof)
        return mean, std
    order = np.argsort(codes, kind="stable") if n_groups > 1 else None

    def chunks():
        for a in range(0, n, rows):
            sel = slice(a, a + rows) if order is None else order[a : a + rows]
            c = codes[sel]
            cuts = (np.flatnonzero(np.diff(c)) + 1).tolist() if n_groups > 1 else []
            bounds = [0, *cuts, len(c)]  # runs of one group (the rows come grouped)
            yield np.asarray(x[sel], dtype=np.float64), c, list(zip(bounds[:-1], bounds[1:]))

    def add(acc, g, block):  # acc[g] + block[0] + block[1] + ... in this order
        acc[g] = np.add.reduce(np.concatenate([acc[g][None], block]), axis=0)

    total = np.zeros((n_groups, k))
    for block, c, runs in chunks():
        for s0, s1 in runs:
            add(total, int(c[s0]), block[s0:s1])
    mean = total / count
    sq = np.zeros((n_groups, k))
    for block, c, runs in chunks():
        dev = block - mean[c]
        dev = dev * dev
        for s0, s1 in runs:
            add(sq, int(c[s0]), dev[s0:s1])
    with np.errstate(divide="ignore", invalid="ignore"):
        std = np.sqrt(sq / np.maximum(count - ddof, 0))
    return mean, std


def group_codes(groups) -> tuple[np.ndarray, np.ndarray]:
    """``(names [G], codes [N])``: the sorted distinct groups and each row's index among them."""
    names, codes = np.unique(np.asarray(groups), return_inverse=True)
    return names, codes.reshape(-1).astype(np.int64)


class ZScored(RowSource):
    """Rows of ``x`` (an array or a :class:`RowSource`) z-scored with fixed per-group statistics
    as they are read: row ``i`` -> ``(x[i] - mean[codes[i]]) / std[codes[i]]`` in float64, returned
    as float32: the arithmetic of :func:`standardize` (``std`` already clamped at ``eps``)."""

    def __init__(self, x, codes: np.ndarray, mean: np.ndarray, std: np.ndarray):
        self.x, self.codes = x, np.asarray(codes, dtype=np.int64)
        self.mean, self.std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        self.shape = (int(x.shape[0]), int(x.shape[1]))

    def __getitem__(self, idx) -> np.ndarray:
        c = self.codes[idx]
        return ((np.asarray(self.x[idx], dtype=np.float64) - self.mean[c]) / self.std[c]).astype(np.float32)


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


def fallback_from_groups(mean: np.ndarray, std: np.ndarray, count: np.ndarray, how: str,
                         eps: float = EPS) -> tuple[np.ndarray, np.ndarray]:
    """The statistics ``(mean [k], std [k])`` float64 for a clip without a group, from per-group
    ``mean`` / ``std`` ``[G, k]`` (ddof 0) and ``count`` ``[G]`` (``model.fallback_stats``): ``pooled``
    (all the groups' clips together), ``groups`` (mean of the group means, root mean within-group
    variance) or ``shrunk`` (``groups`` with each feature's std scaled by (w + b) / w, w the mean
    within-group and b the between-group variance: the expected offset of an unseen group removed)."""
    mean, std = np.asarray(mean, dtype=np.float64), np.maximum(np.asarray(std, dtype=np.float64), eps)
    if how == "pooled":
        n = np.asarray(count, dtype=np.float64)[:, None]
        m = (n * mean).sum(0) / n.sum()
        return m, np.sqrt(np.maximum((n * (std**2 + (mean - m) ** 2)).sum(0) / n.sum(), 0.0))
    within = (std**2).mean(0)
    if how == "groups":
        return mean.mean(0), np.sqrt(within)
    if how == "shrunk":
        return mean.mean(0), (within + mean.var(0)) / np.sqrt(within)
    raise ValueError(f"unknown fallback statistics {how!r}")


def unseen_group_codes(codes: np.ndarray, unseen: np.ndarray, mean: np.ndarray, std: np.ndarray,
                       count: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(codes [N], mean [2G, k], std [2G, k])`` for :class:`ZScored`: rows in
    ``unseen`` (``[N]`` bool) of group g get code ``G + g``, whose statistics are the fallback
    (``how``) of the other G - 1 groups: the row as a clip of a group the model never saw."""
    n_groups = len(mean)
    if n_groups < 2:
        raise ValueError("unseen_rows need at least 2 feature-normalisation groups (one to leave out)")
    out = [fallback_from_groups(np.delete(mean, g, 0), np.delete(std, g, 0), np.delete(count, g), how)
           for g in range(n_groups)]
    codes = np.where(unseen, codes + n_groups, codes)
    return (codes, np.concatenate([mean, np.stack([m for m, _ in out])]),
            np.concatenate([std, np.maximum(np.stack([s for _, s in out]), EPS)]))


def normalize_groups(x: np.ndarray, groups, min_clips: int, mean: np.ndarray, std: np.ndarray,
                     shrink: int = 0) -> np.ndarray:
    """Feature normalisation at test time, ``[N, k]`` -> ``[N, k]`` float32: clips of each group in
    ``groups`` (``[N]``) z-scored with that group's own statistics; groups of fewer than ``min_clips``
    clips (a single clip has no statistics of its own), and all clips when ``groups`` is None, with
    the training statistics ``mean`` / ``std`` ``[k]``. ``shrink`` = s > 0: a group of n clips is
    z-scored with its statistics shrunk toward those of all the clips given (:func:`shrunk_zscore`)."""
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
        out[big] = shrunk_zscore(x[big], g[big], x, shrink) if shrink else standardize(x[big], "zscore", g[big])
    if mask.any():
        out[mask] = (x[mask] - mean) / std
    return out


def shrunk_zscore(x: np.ndarray, groups: np.ndarray, pool: np.ndarray, shrink: int) -> np.ndarray:
    """Rows of ``x`` ``[N, k]`` z-scored per group (``groups`` ``[N]``) with the group's mean and
    variance shrunk toward those of ``pool`` ``[M, k]`` (e.g. every clip of the corpus) by ``shrink``
    clips' worth: a group of n clips gets mean ``(n m_g + s m) / (n + s)`` and variance
    ``(n v_g + s v) / (n + s)``, so a speaker heard in few clips or showing few emotions is centred
    mostly on the corpus. ``[N, k]`` float32 (computed in float64)."""
    x, pool = np.asarray(x, dtype=np.float64), np.asarray(pool, dtype=np.float64)
    m, v = pool.mean(0), pool.var(0)
    out = np.empty_like(x)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        n, xs = len(idx), x[idx]
        mu = (n * xs.mean(0) + shrink * m) / (n + shrink)
        var = (n * xs.var(0) + shrink * v) / (n + shrink)
        out[idx] = (xs - mu) / np.maximum(np.sqrt(var), EPS)
    return out.astype(np.float32)


def group_ids(table, column: str | None) -> np.ndarray | None:
    """``[N]`` group of each row of ``table`` by ``column``, as text; rows whose value is missing
    (:func:`smoothclap.values.is_missing`: None, NaN, empty) form one group ``"?"``
    (:data:`~smoothclap.values.MISSING_GROUP`). None when ``column`` is None or the table has no
    such column."""
    from .values import MISSING_GROUP, is_missing

    if column is None or column not in table.columns:
        return None
    return np.array([MISSING_GROUP if is_missing(v) else str(v) for v in table[column]], dtype=object)


def group_stats(x, groups: np.ndarray, eps: float = EPS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per group: (mean ``[k]``, std ``[k]``) of ``x`` ``[N, k]`` (float64, std clamped at ``eps``),
    exactly the statistics :func:`standardize` with ``"zscore"`` uses. ``x`` may be a
    :class:`RowSource` (read in chunks, :func:`moments`)."""
    names, codes = group_codes(groups)
    mean, std = moments(x, codes)
    return {str(g): (mean[i], np.maximum(std[i], eps)) for i, g in enumerate(names.tolist())}


def group_directions(means: np.ndarray, k: int) -> np.ndarray:
    """``[d, k]`` float32 orthonormal columns: the ``k`` principal directions of the group means
    ``means`` ``[G, d]`` (each group counts once, around the mean of the means); columns beyond
    the means' rank (at most G - 1) are zero, so they remove nothing."""
    means = np.asarray(means, dtype=np.float64)
    basis = np.zeros((means.shape[1], int(k)))
    if len(means) < 2 or not k:
        return basis.astype(np.float32)
    _, s, vt = np.linalg.svd(means - means.mean(0), full_matrices=False)
    rank = int((s > 1e-9 * s[0]).sum()) if s[0] > 0 else 0
    m = min(int(k), rank)
    basis[:, :m] = vt[:m].T
    return basis.astype(np.float32)


def remove_directions(x, basis: np.ndarray) -> np.ndarray:
    """Rows of ``x`` ``[N, d]`` without their components along the orthonormal columns of ``basis``
    ``[d, k]``: ``x - (x @ basis) @ basis.T``, in float64."""
    x, b = np.asarray(x, dtype=np.float64), np.asarray(basis, dtype=np.float64)
    return x - (x @ b) @ b.T


def within_class_whitening(x: np.ndarray, classes) -> np.ndarray:
    """``[d, d]`` float32 symmetric ``C^-1/2``, with ``C`` the Ledoit-Wolf shrunk covariance of the
    rows of ``x`` ``[N, d]`` around the mean of their class (``classes`` ``[N]``): directions along
    which clips of one emotion spread widely (speakers, corpora, recording) are scaled down,
    directions where they agree are scaled up. The shrinkage keeps every eigenvalue positive, so
    the inverse exists even with fewer rows than features."""
    from sklearn.covariance import LedoitWolf

    x = np.asarray(x, dtype=np.float64)
    _, codes = group_codes(classes)
    means, _ = moments(x, codes)
    cov = LedoitWolf(assume_centered=True).fit(x - means[codes]).covariance_
    w, v = np.linalg.eigh(cov)
    return ((v / np.sqrt(np.maximum(w, EPS))) @ v.T).astype(np.float32)


class Projected(RowSource):
    """Rows of ``x`` (an array or a :class:`RowSource`) with the directions of ``basis`` ``[d, k]``
    removed (:func:`remove_directions`; None: none) and then multiplied by ``matrix`` ``[d, d]``
    (None: not) as they are read, as float32."""

    def __init__(self, x, basis: np.ndarray | None, matrix: np.ndarray | None = None):
        self.x = x
        self.basis = None if basis is None else np.asarray(basis, dtype=np.float64)
        self.matrix = None if matrix is None else np.asarray(matrix, dtype=np.float64)
        self.shape = (int(x.shape[0]), int(x.shape[1]))

    def __getitem__(self, idx) -> np.ndarray:
        rows = self.x[idx]
        out = np.asarray(rows, dtype=np.float64) if self.basis is None else remove_directions(rows, self.basis)
        return (out if self.matrix is None else out @ self.matrix).astype(np.float32)
