"""Paralinguistic features and ParaCLAP-style captions.

Three parts, used in this order (see DESIGN.md section 2, "ParaCLAP captions"):

1. :func:`extract_egemaps` -- eGeMAPSv02 functionals (88 openSMILE features) plus the clip
   ``duration`` per file; parallel over files and cached on disk per audio content hash.
2. :class:`ParalingBinner` -- maps each clip's value of a few variables (pitch, pitch variation,
   loudness, jitter, shimmer, duration, optionally speaking rate) to ``"low"`` / ``"normal"`` /
   ``"high"`` by its quantile over the *training* clips (quantile <= 0.3 -> low, >= 0.7 -> high).
3. :class:`CaptionBuilder` -- turns the bins (+ emotion label, gender, arousal, valence) into
   training captions from a pool of templates, and :func:`description` into the fixed
   paralinguistic description used by SmoothCLAP's text-side soft target.

openSMILE is an optional extra (``pip install 'smoothclap[egemaps]'``). It is licensed by
audEERING for research and other non-commercial use only; commercial use needs a licence from
audEERING. Binning and captions do not need it.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import string
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .audio import SAMPLE_RATE, file_hash, read_audio
from .errors import BadInputError, SkipLog

log = logging.getLogger("smoothclap")

# --------------------------------------------------------------------------------------------
# 1. eGeMAPS extraction
# --------------------------------------------------------------------------------------------

#: Bump when anything that changes cached feature values changes (reading, resampling, openSMILE
#: configuration). It is part of the cache directory name, so old entries are simply not found.
PREPROC_VERSION = "v1-16k-mono"

DURATION_COLUMN = "duration"

_INSTALL_HINT = (
    "eGeMAPS extraction needs openSMILE: pip install 'smoothclap[egemaps]' (or pip install opensmile). "
    "Note: openSMILE is licensed by audEERING for research / non-commercial use only."
)

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


def _cache_root(cache_dir: str | Path, feature_set: str) -> Path:
    return Path(cache_dir).expanduser() / "egemaps" / f"{feature_set}-{PREPROC_VERSION}"


def _cache_file(root: Path, h: str) -> Path:
    return root / h[:2] / f"{h}.npy"


def _atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_npy(path: Path, arr: np.ndarray) -> None:
    _atomic_write_bytes(path, lambda f: np.save(f, arr, allow_pickle=False))


def _load_npy(path: Path, n: int | None) -> np.ndarray | None:
    """Cached vector, or None when absent, unreadable or of the wrong length (then recomputed)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (FileNotFoundError, OSError, ValueError):
        return None
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        return None
    return arr


def _extract_one(path: str, cache_file: str | None, feature_set: str):
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
    if cache_file is not None:
        _save_npy(Path(cache_file), out)
    return ("ok", path, out, names)


def _extract_batch(items, feature_set: str):
    return [_extract_one(p, c, feature_set) for p, c in items]


def _worker_init(feature_set: str) -> None:
    # Threads inside workers would only oversubscribe the cores we parallelise over.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _get_smile(feature_set)


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
        files: audio paths. Duplicates are processed once (the result has one row per distinct path).
        cache_dir: when given, each clip's vector is cached as
            ``cache_dir/egemaps/<feature_set>-<PREPROC_VERSION>/<sha1[:2]>/<sha1>.npy`` keyed by the
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

    Licence: openSMILE is licensed by audEERING for research / non-commercial use only; it is an
    optional extra (``pip install 'smoothclap[egemaps]'``). ImportError with that hint otherwise.
    """
    skip = SkipLog() if skip is None else skip
    paths = list(dict.fromkeys(str(os.fspath(f)) for f in files))
    root = _cache_root(cache_dir, feature_set) if cache_dir is not None else None
    names: list[str] | None = None
    if root is not None:
        try:
            names = json.loads((root / "columns.json").read_text())
        except (FileNotFoundError, ValueError):
            # No column list yet (e.g. the run that wrote the entries ended on a bad file before
            # the list was written): take it from openSMILE, so finished entries are still found.
            names = _names_or_empty(feature_set) or None
            if names is not None:
                data = json.dumps(names).encode()
                _atomic_write_bytes(root / "columns.json", lambda f: f.write(data))

    results: dict[str, np.ndarray] = {}
    todo: list[tuple[str, str | None]] = []
    for p in paths:
        cfile = None
        if root is not None:
            try:
                h = file_hash(p)
            except FileNotFoundError:
                skip.handle(BadInputError(p, "file not found"))
                continue
            except OSError as e:
                skip.handle(BadInputError(p, f"unreadable file ({e.__class__.__name__}: {e})"))
                continue
            cpath = _cache_file(root, h)
            if names is not None:
                arr = _load_npy(cpath, len(names) + 1)
                if arr is not None:
                    results[p] = arr
                    continue
            cfile = str(cpath)
        todo.append((p, cfile))

    if todo:
        _import_opensmile()  # fail early, with the install hint, before starting workers

        def handle(res) -> None:
            nonlocal names
            status, path, payload, got_names = res
            if status == "bad":
                skip.handle(BadInputError(path, payload))
                return
            if names is None:
                names = got_names
                if root is not None:
                    data = json.dumps(names).encode()
                    _atomic_write_bytes(root / "columns.json", lambda f: f.write(data))
            results[path] = payload

        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(total=len(todo), desc=f"{feature_set}", unit="clip", disable=not progress)
        try:
            workers = min(int(num_workers), len(todo))
            if workers <= 1:
                for item in todo:
                    handle(_extract_one(*item, feature_set))
                    bar.update(1)
            else:
                import multiprocessing as mp  # noqa: PLC0415

                # Small batches amortise the IPC cost while keeping the workers balanced.
                size = max(1, min(16, len(todo) // (workers * 8)))
                batches = [todo[i : i + size] for i in range(0, len(todo), size)]
                ctx = mp.get_context(mp_context) if mp_context else None
                with ProcessPoolExecutor(
                    max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(feature_set,)
                ) as pool:
                    pending = {pool.submit(_extract_batch, b, feature_set) for b in batches}
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
        finally:
            bar.close()

    kept = [p for p in paths if p in results]
    if names is None:  # nothing extracted and no columns.json: only possible when all were bad
        names = _names_or_empty(feature_set)
    cols = list(names) + [DURATION_COLUMN]
    mat = np.stack([results[p] for p in kept]) if kept else np.zeros((0, len(cols)))
    df = pd.DataFrame(mat, index=pd.Index(kept, name="file", dtype=object), columns=cols)
    return df


def _names_or_empty(feature_set: str) -> list[str]:
    try:
        return egemaps_feature_names(feature_set)
    except ImportError:
        return []


# --------------------------------------------------------------------------------------------
# 2. Quantile binning
# --------------------------------------------------------------------------------------------

#: Binned variables: short key -> feature column (DESIGN.md section 2). Keys not listed here are
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
    def from_config(cls, cfg: "CaptionConfig") -> "ParalingBinner":
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


# --------------------------------------------------------------------------------------------
# 3. Phrases, descriptions, captions
# --------------------------------------------------------------------------------------------

#: Phrase per variable and bin, as used in descriptions and in ``{phrases}``.
PHRASES: dict[str, dict[str, str]] = {
    "pitch": {"high": "high pitch", "normal": "normal pitch", "low": "low pitch"},
    "pitch_variation": {
        "high": "high pitch variation",
        "normal": "normal pitch variation",
        "low": "low pitch variation",
    },
    "loudness": {"high": "loud", "normal": "normal loudness", "low": "quiet"},
    "jitter": {"high": "high jitter", "normal": "normal jitter", "low": "low jitter"},
    "shimmer": {"high": "high shimmer", "normal": "normal shimmer", "low": "low shimmer"},
    "duration": {"high": "long", "normal": "medium length", "low": "short"},
    "rate": {"high": "fast", "normal": "normal speed", "low": "slow"},
}

#: The same as verb phrases about the speaker, used in ``{predicates}``
#: ("speaker is angry and has a high pitch and is loud").
PREDICATES: dict[str, dict[str, str]] = {
    "pitch": {"high": "has a high pitch", "normal": "has a normal pitch", "low": "has a low pitch"},
    "pitch_variation": {
        "high": "has high pitch variation",
        "normal": "has normal pitch variation",
        "low": "has low pitch variation",
    },
    "loudness": {"high": "is loud", "normal": "has normal loudness", "low": "is quiet"},
    "jitter": {"high": "has high jitter", "normal": "has normal jitter", "low": "has low jitter"},
    "shimmer": {"high": "has high shimmer", "normal": "has normal shimmer", "low": "has low shimmer"},
    "duration": {"high": "speaks for a long time", "normal": "speaks for a medium time", "low": "speaks briefly"},
    "rate": {"high": "speaks fast", "normal": "speaks at a normal speed", "low": "speaks slowly"},
}

#: Built-in template pool. Placeholders: ``{emotion}`` (the label), ``{phrases}`` ("high pitch,
#: loud and short"), ``{predicates}`` ("has a high pitch, is loud and speaks briefly"),
#: ``{gender}`` ("female"/"male"/"" -- an empty gender collapses away: "a speaker"),
#: ``{arousal}`` / ``{valence}`` (the given words). A clip with a label uses the templates with
#: ``{emotion}``, one without uses those without it; likewise a clip with phrases uses templates with
#: ``{phrases}`` or ``{predicates}``. Gender never blocks a template; ``{arousal}``/``{valence}`` do
#: when not given. When no template fits, the caption is a plain list ("angry, low pitch, loud").
DEFAULT_TEMPLATES: list[str] = [
    "speaker is {emotion} and {predicates}",
    "a {gender} speaker sounding {emotion}, with {phrases}",
    "this person is feeling {emotion}; {phrases}.",
    "{emotion} {gender} speech with {phrases}",
    "the {gender} speaker sounds {emotion}: {phrases}",
    "a {gender} speaker who {predicates} and sounds {emotion}",
    "{phrases}; the speaker is {emotion}",
    "a {gender} voice, {emotion}, with {phrases}",
    # without emotion label
    "a {gender} speaker who {predicates}",
    "{gender} speech with {phrases}",
    # without phrases
    "this person is feeling {emotion}.",
    "a {gender} speaker sounding {emotion}",
]

_FIELDS = {"emotion", "phrases", "predicates", "gender", "arousal", "valence"}
_GENDER = {
    "f": "female", "female": "female", "w": "female", "woman": "female", "women": "female",
    "weiblich": "female", "frau": "female",
    "m": "male", "male": "male", "man": "male", "men": "male", "männlich": "male", "mann": "male",
}
_UNKNOWN = {"", "nan", "none", "unknown", "?", "na", "n/a", "u", "x"}


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def normalize_gender(g: Any) -> str | None:
    """"f"/"female"/"w"/... -> "female", "m"/"male"/... -> "male", unknown/NaN -> None, other
    strings (e.g. "child") -> lower-cased as they are."""
    if _is_missing(g):
        return None
    s = str(g).strip().lower()
    if s in _UNKNOWN:
        return None
    return _GENDER.get(s, s)


_warned_numeric: set[str] = set()


def _dimension_word(v: Any, dim: str) -> str | None:
    """Arousal / valence as a word ("high", "negative"). Numeric ratings cannot be phrased without
    thresholds: they are left out (bin them first, e.g. ``ParalingBinner(variables=[..., "arousal"])``
    on a table holding the ratings, and pass the resulting "low"/"normal"/"high")."""
    if _is_missing(v):
        return None
    if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
        if dim not in _warned_numeric:
            _warned_numeric.add(dim)
            log.warning("numeric %s ratings are left out of captions; bin them into words first", dim)
        return None
    s = str(v).strip()
    return s or None


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _template_fields(t: str) -> set[str]:
    names = {f for _, f, _, _ in string.Formatter().parse(t) if f is not None}
    unknown = names - _FIELDS
    if unknown or any(n == "" for n in names):
        raise ValueError(f"caption template {t!r} uses unknown placeholders {sorted(unknown) or ['{}']}; "
                         f"allowed: {sorted(_FIELDS)}")
    return names


def _ordered_items(row_bins: Mapping[str, Any] | pd.Series, variables: Sequence[str] | None):
    """(variable, bin) pairs in a fixed order: ``variables`` if given, else known variables in
    :data:`VARIABLES` order followed by other keys in row order. Missing bins are dropped."""
    row = dict(row_bins.items()) if isinstance(row_bins, pd.Series) else dict(row_bins)
    if variables is None:
        keys = [k for k in VARIABLES if k in row] + [k for k in row if k not in VARIABLES]
    else:
        keys = list(variables)
    out = []
    for k in keys:
        b = row.get(k)
        if _is_missing(b):
            continue
        b = str(b)
        if b not in BINS:
            raise ValueError(f"bin of {k!r} must be one of {BINS}, got {b!r}")
        out.append((k, b))
    return out


def phrase(variable: str, bin: str) -> str:
    """Phrase for one variable and bin ("pitch", "high" -> "high pitch"; unknown variables
    -> "high <variable>")."""
    table = PHRASES.get(variable)
    return table[bin] if table else f"{bin} {variable.replace('_', ' ')}"


def predicate(variable: str, bin: str) -> str:
    table = PREDICATES.get(variable)
    return table[bin] if table else f"has {bin} {variable.replace('_', ' ')}"


def description(
    row_bins: Mapping[str, Any] | pd.Series,
    label: str | None = None,
    include_label: bool = False,
    variables: Sequence[str] | None = None,
) -> str:
    """The paralinguistic description of one clip (text for SmoothCLAP's q^{t2t} target).

    Deterministic: phrases in a fixed variable order (``variables``, else :data:`VARIABLES` order),
    joined by ", ", e.g. ``"high pitch, low pitch variation, loud, normal jitter, low shimmer, short"``.
    With ``include_label`` (and a label) the emotion word comes first: ``"angry, high pitch, ..."``.
    """
    parts = [phrase(k, b) for k, b in _ordered_items(row_bins, variables)]
    if include_label and not _is_missing(label):
        parts.insert(0, str(label))
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# 4. Config
# --------------------------------------------------------------------------------------------


@dataclass
class CaptionConfig:
    """How captions and descriptions are made (plain dataclass; build it from YAML with :meth:`from_dict`).

    Attributes:
        variables: binned variables (keys of :data:`VARIABLES`); add ``"rate"`` for speaking rate.
        low_q, high_q: quantile thresholds ("low" at or below ``low_q``, "high" at or above ``high_q``).
        group_by: None, or a column (``"corpus"``, ``"speaker"``) to fit bins per group.
        min_group_size: groups with fewer training clips use the global bins.
        templates: caption templates (None = :data:`DEFAULT_TEMPLATES`).
        include_gender: put the speaker's gender into captions when known.
        include_dimensions: add arousal / valence phrases ("high arousal") when given.
        phrases_per_caption: None = all phrases; k = a random subset of k phrases per caption.
        phrase_dropout: drop each phrase independently with this probability (at least one kept).
        description_include_label: prefix the description (text soft target) with the emotion word.
    """

    variables: list[str] = field(default_factory=lambda: list(DEFAULT_VARIABLES))
    low_q: float = 0.3
    high_q: float = 0.7
    group_by: str | None = None
    min_group_size: int = 10
    templates: list[str] | None = None
    include_gender: bool = True
    include_dimensions: bool = True
    phrases_per_caption: int | None = None
    phrase_dropout: float = 0.0
    description_include_label: bool = False

    def __post_init__(self) -> None:
        self.variables = list(self.variables)
        if not 0.0 <= self.low_q < self.high_q <= 1.0:
            raise ValueError(f"need 0 <= low_q < high_q <= 1, got {self.low_q}, {self.high_q}")
        if not 0.0 <= self.phrase_dropout < 1.0:
            raise ValueError(f"phrase_dropout must be in [0, 1), got {self.phrase_dropout}")
        if self.phrases_per_caption is not None and self.phrases_per_caption < 1:
            raise ValueError(f"phrases_per_caption must be >= 1 or None, got {self.phrases_per_caption}")
        if self.templates is not None:
            self.templates = list(self.templates)
            if not self.templates:
                raise ValueError("templates must be None (built-in pool) or a non-empty list")
            for t in self.templates:
                _template_fields(t)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "CaptionConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown caption config keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CaptionBuilder:
    """Captions from binned paralinguistic variables, in the manner of ParaCLAP.

    ``caption()`` picks a phrase subset (per ``phrases_per_caption`` / ``phrase_dropout``) and a
    template at random with the numpy Generator it is given, so a trainer that seeds it per epoch
    gets deterministic captions. ``all_captions()`` lists every string ``caption()`` can return for
    a clip (for pre-embedding each distinct caption once).
    """

    def __init__(self, config: CaptionConfig | None = None):
        self.config = config or CaptionConfig()
        self.templates = list(self.config.templates or DEFAULT_TEMPLATES)
        self._fields = [_template_fields(t) for t in self.templates]

    # -- pieces ---------------------------------------------------------------------------
    def _items(self, row_bins, arousal, valence) -> list[tuple[str, str]]:
        """[(phrase, predicate)] in fixed order, arousal / valence appended."""
        items = [(phrase(k, b), predicate(k, b)) for k, b in _ordered_items(row_bins, self.config.variables)]
        if self.config.include_dimensions:
            for word, dim in ((arousal, "arousal"), (valence, "valence")):
                if not _is_missing(word):
                    w = str(word)
                    p = w if dim in w else f"{w} {dim}"
                    items.append((p, f"has {p}"))
        return items

    def phrases(self, row_bins, *, arousal=None, valence=None) -> list[str]:
        """All phrases of one clip, in fixed order."""
        return [p for p, _ in self._items(row_bins, arousal, valence)]

    def description(self, row_bins, label: str | None = None) -> str:
        """:func:`description` with this config's variables and ``description_include_label``."""
        return description(row_bins, label, self.config.description_include_label, self.config.variables)

    def _usable(self, label, has_phrases: bool, gender, arousal, valence) -> list[str]:
        avail = {"gender"}
        if label is not None:
            avail.add("emotion")
        if has_phrases:
            avail |= {"phrases", "predicates"}
        if arousal is not None:
            avail.add("arousal")
        if valence is not None:
            avail.add("valence")
        # A template must use the label iff there is one and the phrases iff there are any;
        # gender / arousal / valence are optional extras.
        usable = [
            t for t, f in zip(self.templates, self._fields)
            if f <= avail and ("emotion" in f) == (label is not None)
            and bool(f & {"phrases", "predicates"}) == has_phrases
        ]
        if not usable:
            # Nothing in the pool fits: fall back to a plain list ("angry, high pitch, loud").
            usable = ["{emotion}, {phrases}" if label is not None and has_phrases
                      else "{emotion}" if label is not None else "{phrases}"]
        return usable

    @staticmethod
    def _render(t: str, label, items, gender, arousal, valence) -> str:
        s = t.format(
            emotion=label or "",
            phrases=_join([p for p, _ in items]),
            predicates=_join([q for _, q in items]),
            gender=gender or "",
            arousal=arousal or "",
            valence=valence or "",
        )
        s = " ".join(s.split())
        return s.replace(" ,", ",").replace(" ;", ";").replace(" :", ":").replace(" .", ".")

    def _prepare(self, label, gender, arousal, valence):
        label = None if _is_missing(label) else str(label)
        gender = normalize_gender(gender) if self.config.include_gender else None
        arousal = _dimension_word(arousal, "arousal")
        valence = _dimension_word(valence, "valence")
        return label, gender, arousal, valence

    # -- captions -------------------------------------------------------------------------
    def caption(
        self,
        row_bins: Mapping[str, Any] | pd.Series,
        label: str | None = None,
        *,
        rng: np.random.Generator | int | None,
        gender: str | None = None,
        arousal: str | None = None,
        valence: str | None = None,
    ) -> str:
        """One caption for one clip, e.g. ``"speaker is angry and has a high pitch and is loud"``.

        Args:
            row_bins: ``{variable: "low"|"normal"|"high"}`` (a row of :meth:`ParalingBinner.transform`).
            label: emotion word (optional).
            rng: numpy Generator (or a seed) -- draws the phrase subset, then the template.
            gender: "female"/"male"/"f"/"m"/... (optional; ignored unless ``include_gender``).
            arousal, valence: words such as "high" / "negative" (optional) -> "high arousal";
                numeric ratings are left out (bin them into words first).
        """
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        label, gender, arousal, valence = self._prepare(label, gender, arousal, valence)
        items = self._items(row_bins, arousal, valence)
        n = len(items)
        cfg = self.config
        if n:
            keep = np.arange(n)
            if cfg.phrase_dropout > 0:
                mask = rng.random(n) >= cfg.phrase_dropout
                keep = np.flatnonzero(mask) if mask.any() else np.array([rng.integers(n)])
            if cfg.phrases_per_caption is not None and len(keep) > cfg.phrases_per_caption:
                keep = np.sort(rng.choice(keep, size=cfg.phrases_per_caption, replace=False))
            items = [items[i] for i in keep]
        if label is None and not items:
            raise ValueError("cannot caption a clip with neither a label nor any binned variable")
        usable = self._usable(label, bool(items), gender, arousal, valence)
        t = usable[int(rng.integers(len(usable)))]
        return self._render(t, label, items, gender, arousal, valence)

    def _subsets(self, n: int) -> list[tuple[int, ...]]:
        cfg = self.config
        if n == 0:
            return [()]
        k = n if cfg.phrases_per_caption is None else min(cfg.phrases_per_caption, n)
        if cfg.phrase_dropout > 0:
            return [c for r in range(1, k + 1) for c in itertools.combinations(range(n), r)]
        return list(itertools.combinations(range(n), k))

    def all_captions(
        self,
        row_bins: Mapping[str, Any] | pd.Series,
        label: str | None = None,
        *,
        gender: str | None = None,
        arousal: str | None = None,
        valence: str | None = None,
    ) -> list[str]:
        """Every distinct caption :meth:`caption` can return for this clip (sorted). With phrase
        subsets this grows combinatorially (all subsets x templates)."""
        label, gender, arousal, valence = self._prepare(label, gender, arousal, valence)
        items = self._items(row_bins, arousal, valence)
        if label is None and not items:
            raise ValueError("cannot caption a clip with neither a label nor any binned variable")
        out = set()
        for sub in self._subsets(len(items)):
            chosen = [items[i] for i in sub]
            for t in self._usable(label, bool(chosen), gender, arousal, valence):
                out.add(self._render(t, label, chosen, gender, arousal, valence))
        return sorted(out)

    def captions(
        self,
        bins: pd.DataFrame,
        labels: Sequence[Any] | None = None,
        *,
        rng: np.random.Generator | int | None,
        gender: Sequence[Any] | None = None,
        arousal: Sequence[Any] | None = None,
        valence: Sequence[Any] | None = None,
    ) -> list[str]:
        """:meth:`caption` for every row of ``bins`` (aligned sequences for the other arguments)."""
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        n = len(bins)
        for name, seq in (("labels", labels), ("gender", gender), ("arousal", arousal), ("valence", valence)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{name} has {len(seq)} entries for {n} rows of bins")

        cols = [None if s is None else list(s) for s in (labels, gender, arousal, valence)]
        rows = bins.to_dict(orient="records")
        out = []
        for i in range(n):
            lab, gen, aro, val = (None if c is None else c[i] for c in cols)
            out.append(self.caption(rows[i], lab, rng=rng, gender=gen, arousal=aro, valence=val))
        return out

    def descriptions(self, bins: pd.DataFrame, labels: Sequence[Any] | None = None) -> list[str]:
        """:meth:`description` for every row of ``bins``."""
        labels_ = None if labels is None else list(labels)
        rows = bins.to_dict(orient="records")
        return [self.description(r, None if labels_ is None else labels_[i]) for i, r in enumerate(rows)]
