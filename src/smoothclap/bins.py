"""Quantile bins of paralinguistic variables: "low" / "normal" / "high" per clip.

Each clip's value of a few eGeMAPS variables (pitch, pitch variation, loudness, jitter, shimmer,
duration, optionally speaking rate) is placed by its quantile over the *training* clips (quantile
<= 0.3 -> low, >= 0.7 -> high, else normal), as ParaCLAP does. :class:`ParalingBinner` fits and
applies the thresholds; its state goes into a run folder as ``caption_bins.json``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .egemaps import DURATION_COLUMN
from .errors import BadInputError

#: Binned variables: short key -> feature column (docs/method.md, "Captions"). Keys not listed here are
#: taken to be column names themselves (phrases "high <key>", ...).
VARIABLES: dict[str, str] = {
    "pitch": "F0semitoneFrom27.5Hz_sma3nz_amean",
    "pitch_variation": "F0semitoneFrom27.5Hz_sma3nz_stddevNorm",
    "loudness": "loudness_sma3_amean",
    "jitter": "jitterLocal_sma3nz_amean",
    "shimmer": "shimmerLocaldB_sma3nz_amean",
    "duration": DURATION_COLUMN,
    "rate": "VoicedSegmentsPerSec",
}

#: Default variables (speaking rate is off by default).
DEFAULT_VARIABLES: list[str] = ["pitch", "pitch_variation", "loudness", "jitter", "shimmer", "duration"]

BINS = ("low", "normal", "high")


def _as_thresholds(d: Mapping[str, Sequence[float]]) -> dict[str, tuple[float, float]]:
    return {k: (float(v[0]), float(v[1])) for k, v in d.items()}


#: Values within this relative distance of a threshold count as lying on it, so that a value
#: exactly at a quantile is binned as such despite rounding in ``numpy.quantile``.
THRESHOLD_RTOL = 1e-9


def _bin_values(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``<= lo`` -> low, ``>= hi`` -> high, else normal; values tied at ``lo == hi`` -> normal;
    NaN -> None."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, "normal", dtype=object)
    with np.errstate(invalid="ignore"):
        at_lo = np.isclose(values, lo, rtol=THRESHOLD_RTOL, atol=0.0)
        at_hi = np.isclose(values, hi, rtol=THRESHOLD_RTOL, atol=0.0)
        out[(values <= lo) | at_lo] = "low"
        out[(values >= hi) | at_hi] = "high"
        if at_lo.any() and at_hi.any() and np.isclose(lo, hi, rtol=THRESHOLD_RTOL, atol=0.0):
            out[at_lo & at_hi] = "normal"
    out[~np.isfinite(values)] = None
    return out


class ParalingBinner:
    """Quantile bins ("low" / "normal" / "high") of paralinguistic variables.

    :meth:`fit` stores, per variable, the ``low_q`` and ``high_q`` quantiles of the training clips
    (``numpy.quantile``, linear interpolation, NaN ignored). A clip whose value lies at or below the
    ``low_q`` quantile is "low", at or above the ``high_q`` quantile "high", else "normal" -- i.e.
    the clip's value is placed by its quantile over the training corpus. Values within
    :data:`THRESHOLD_RTOL` (relative) of a threshold count as on it; if both thresholds coincide
    because of ties, clips at the tie are "normal". Fit on training clips only.

    With ``group_by`` (e.g. ``"speaker"`` or ``"corpus"``) thresholds are also fitted per group, so a
    clip is binned relative to its own speaker/corpus. Groups with fewer than ``min_group_size``
    training clips, and groups unseen at fit time, use the global thresholds. Group keys are stored
    as ``str`` (so they survive JSON); lookup uses ``str(value)``.

    Args:
        variables: keys of :data:`VARIABLES` (or column names); default :data:`DEFAULT_VARIABLES`.
        low_q, high_q: quantile thresholds (0.3 and 0.7 as in ParaCLAP).
        group_by: None or the column holding the group of each clip.
        min_group_size: smallest group fitted on its own.
    """

    def __init__(
        self,
        variables: Sequence[str] | None = None,
        low_q: float = 0.3,
        high_q: float = 0.7,
        group_by: str | None = None,
        min_group_size: int = 10,
    ):
        self.variables = list(DEFAULT_VARIABLES if variables is None else variables)
        if not self.variables:
            raise ValueError("ParalingBinner needs at least one variable")
        if not 0.0 <= low_q < high_q <= 1.0:
            raise ValueError(f"need 0 <= low_q < high_q <= 1, got low_q={low_q}, high_q={high_q}")
        self.low_q = float(low_q)
        self.high_q = float(high_q)
        self.group_by = group_by
        self.min_group_size = int(min_group_size)
        self.thresholds_: dict[str, tuple[float, float]] | None = None
        self.group_thresholds_: dict[str, dict[str, tuple[float, float]]] = {}

    @classmethod
    def from_config(cls, cfg) -> "ParalingBinner":
        return cls(cfg.variables, cfg.low_q, cfg.high_q, cfg.group_by, cfg.min_group_size)

    @property
    def columns(self) -> dict[str, str]:
        """variable key -> feature column."""
        return {v: VARIABLES.get(v, v) for v in self.variables}

    @property
    def is_fitted(self) -> bool:
        return self.thresholds_ is not None

    def _check_columns(self, df: pd.DataFrame, what: str, need_group: bool) -> None:
        missing = [c for c in self.columns.values() if c not in df.columns]
        if need_group and self.group_by is not None and self.group_by not in df.columns:
            missing.append(self.group_by)
        if missing:
            raise BadInputError(what, f"missing columns {missing}")

    def _fit_block(self, df: pd.DataFrame, what: str) -> dict[str, tuple[float, float]]:
        out = {}
        for key, col in self.columns.items():
            vals = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            if vals.size == 0:
                raise BadInputError(what, f"variable {key!r} (column {col}) has no finite values")
            lo, hi = np.quantile(vals, [self.low_q, self.high_q])
            out[key] = (float(lo), float(hi))
        return out

    def fit(self, df: pd.DataFrame) -> "ParalingBinner":
        """Fit thresholds on ``df`` (training clips only; one row per clip)."""
        self._check_columns(df, "training feature table", need_group=True)
        if len(df) == 0:
            raise BadInputError("training feature table", "no rows")
        self.thresholds_ = self._fit_block(df, "training feature table")
        self.group_thresholds_ = {}
        if self.group_by is not None:
            for g, block in df.groupby(df[self.group_by].astype(str), sort=True):
                if len(block) >= self.min_group_size:
                    self.group_thresholds_[str(g)] = self._fit_block(block, f"training group {g!r}")
        return self

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        """Bins for every row of ``df``: a DataFrame with the same index and one column per variable
        key (``"pitch"``, ...) holding ``"low"`` / ``"normal"`` / ``"high"`` (None where the value is NaN)."""
        if self.thresholds_ is None:
            raise RuntimeError("ParalingBinner is not fitted: call fit() on the training clips first")
        self._check_columns(df, "feature table", need_group=True)
        out: dict[str, np.ndarray] = {}
        if self.group_by is None or not self.group_thresholds_:
            groups = None
        else:
            groups = df[self.group_by].astype(str).to_numpy()
        for key, col in self.columns.items():
            vals = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
            if groups is None:
                lo, hi = self.thresholds_[key]
                out[key] = _bin_values(vals, lo, hi)
                continue
            res = np.empty(len(vals), dtype=object)
            for g in np.unique(groups):
                m = groups == g
                lo, hi = self.group_thresholds_.get(g, self.thresholds_)[key]
                res[m] = _bin_values(vals[m], lo, hi)
            out[key] = res
        return pd.DataFrame({k: pd.Series(v, index=df.index, dtype=object) for k, v in out.items()},
                            index=df.index, columns=self.variables)

    def fit_transform(self, df: pd.DataFrame) -> pd.DataFrame:
        return self.fit(df).transform(df)

    def to_dict(self) -> dict[str, Any]:
        """Plain (JSON/YAML-serialisable) state, for a run directory."""
        return {
            "variables": list(self.variables),
            "columns": self.columns,
            "low_q": self.low_q,
            "high_q": self.high_q,
            "group_by": self.group_by,
            "min_group_size": self.min_group_size,
            "thresholds": None if self.thresholds_ is None else {k: list(v) for k, v in self.thresholds_.items()},
            "group_thresholds": {
                g: {k: list(v) for k, v in t.items()} for g, t in self.group_thresholds_.items()
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ParalingBinner":
        self = cls(d["variables"], d["low_q"], d["high_q"], d.get("group_by"), d.get("min_group_size", 10))
        cols = d.get("columns")
        if cols is not None and dict(cols) != self.columns:
            raise ValueError(f"binner state maps variables to other columns than this version: {cols}")
        if d.get("thresholds") is not None:
            self.thresholds_ = _as_thresholds(d["thresholds"])
        self.group_thresholds_ = {str(g): _as_thresholds(t) for g, t in (d.get("group_thresholds") or {}).items()}
        return self

    def __repr__(self) -> str:
        state = "fitted" if self.is_fitted else "unfitted"
        return (
            f"ParalingBinner(variables={self.variables}, low_q={self.low_q}, high_q={self.high_q}, "
            f"group_by={self.group_by!r}, {state}, groups={len(self.group_thresholds_)})"
        )


