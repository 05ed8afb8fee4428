"""Generic manifest reader: your own corpus as a CSV / TSV / JSONL table.

Columns: ``file`` or ``path`` (the audio; relative paths resolve against the manifest's folder, or
``root``), ``label`` and/or ``caption``, optional ``speaker``, ``gender``, ``split``, ``language``,
``start``, ``end`` (seconds, a segment of the file), ``corpus``; any other column is kept.
Formats by extension: ``.csv`` (delimiter ``,`` ``;`` or tab, detected), ``.tsv`` / ``.tab``,
``.jsonl`` / ``.ndjson`` (one JSON object per line), ``.json`` (a list of objects).

Reading runs in stages: :func:`_open` (the file) -> :func:`_map_columns` (column names, required
columns) -> :func:`_check_rows` (each row parsed and checked, repeated rows refused) ->
:func:`_table_of` (the standard columns) -> :func:`_with_durations`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import BadInputError, SkipLog
from ..values import is_missing, normalize_gender
from ._common import STANDARD_COLUMNS, durations, log
from .table import MANIFEST_ROW, Table

_STR_COLS = ("file", "path", "label", "caption", "speaker", "gender", "split", "language", "corpus")


def _read(path: Path) -> pd.DataFrame:
    ext = path.suffix.lower()
    try:
        if ext in (".jsonl", ".ndjson"):
            recs = []
            with open(path, encoding="utf-8-sig") as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise BadInputError(path, f"invalid JSON (line {n}: {e.msg})") from None
                    if not isinstance(obj, dict):
                        raise BadInputError(path, f"invalid JSON (line {n}: not an object)")
                    recs.append(obj)
            return pd.DataFrame(recs, dtype=object)  # object: ints stay ints beside missing cells
        if ext == ".json":
            with open(path, encoding="utf-8-sig") as fh:
                try:
                    data = json.load(fh)
                except json.JSONDecodeError as e:
                    raise BadInputError(path, f"invalid JSON ({e.msg})") from None
            if isinstance(data, dict):  # {"rows": [...]} or column-oriented
                data = data.get("rows", data.get("data", data))
            return pd.DataFrame(data, dtype=object)
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            header = fh.readline()
        if ext in (".tsv", ".tab"):
            sep = "\t"
        else:
            counts = {s: header.count(s) for s in (",", "\t", ";")}
            sep = max(counts, key=counts.get) if any(counts.values()) else ","
        cols = [c.strip() for c in header.rstrip("\r\n").split(sep)]
        dtype = {c: str for c in cols if c.lower() in _STR_COLS}
        # only empty cells are missing: labels such as "NA" or "none" stay labels
        return pd.read_csv(
            path, sep=sep, dtype=dtype, encoding="utf-8-sig", keep_default_na=False, na_values=[""],
            skipinitialspace=True,
        )
    except BadInputError:
        raise
    except FileNotFoundError:
        raise BadInputError(path, "manifest file not found") from None
    except Exception as e:
        raise BadInputError(path, f"unreadable manifest ({e.__class__.__name__}: {e})") from None


def _num(v, name: str) -> float | None:
    if is_missing(v):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"non-numeric {name} {v!r}") from None
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"invalid {name} {v!r}")
    return x


def _text(v) -> str | None:
    """A cell as stripped text; None when missing."""
    return None if is_missing(v) else str(v).strip()


@dataclass
class _Rules:
    """How the rows of one manifest are checked."""

    path: Path                      # the manifest (resolved)
    base: Path                      # relative audio paths resolve against this
    columns: set                    # the manifest's (mapped) columns
    allowed: set | None             # label_set, normalised
    lowercase_labels: bool
    check_files: bool
    allow_unlabelled: bool = False  # rows with neither label nor caption: kept, unlabelled (training)


@dataclass
class _Kept:
    """The rows that passed :func:`_check_rows`: 0-based index, resolved file and segment of each."""

    index: list[int] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    starts: list[float | None] = field(default_factory=list)
    ends: list[float | None] = field(default_factory=list)


def _open(path) -> tuple[Path, pd.DataFrame]:
    """Stage 1: the manifest file -> (its resolved path, its raw table of at least one row)."""
    if path is None:
        raise BadInputError("<none>", "no manifest path given")
    path = Path(path).expanduser()
    if not path.exists():
        raise BadInputError(path, "manifest file not found")
    if path.is_dir():
        raise BadInputError(path, "manifest path is a folder, not a CSV/TSV/JSONL file")
    path = path.resolve()
    df = _read(path)
    if len(df) == 0:
        raise BadInputError(path, "the manifest has no data rows (only a header, or empty)")
    return path, df


def _map_columns(df: pd.DataFrame, path: Path, required, label_set) -> pd.DataFrame:
    """Stage 2: known columns to their lower-case names (``path`` -> ``file``); the required columns
    (default: ``file`` and ``label`` or ``caption``) must be there."""
    df.columns = [str(c).strip() for c in df.columns]
    seen: dict[str, str] = {}
    for c in df.columns:  # "file" and "FILE" (or "label" twice) would be two columns read as one
        low = c.lower()
        if low in (*_STR_COLS, "start", "end") and low in seen:
            raise BadInputError(path, f"column {low!r} appears twice ({seen[low]!r} and {c!r}): keep one")
        seen[low] = c
    lower = {c.lower(): c for c in df.columns}
    df = df.rename(columns={orig: low for low, orig in lower.items() if low in (*_STR_COLS, "start", "end")})
    if "file" in df.columns and "path" in df.columns:
        raise BadInputError(path, "both 'file' and 'path' columns: keep one (the audio path)")
    if "path" in df.columns:
        df = df.rename(columns={"path": "file"})
    if required is None:
        miss = [] if "file" in df.columns else ["file (or path)"]
        if "label" not in df.columns and "caption" not in df.columns:
            miss.append("label (or caption)")
    else:
        req = [required] if isinstance(required, str) else list(required)
        miss = [c if c not in ("file", "path") else "file (or path)" for c in req
                if (("file" if c == "path" else c.lower()) not in df.columns)]
    if miss:
        raise BadInputError(path, f"missing column(s): {', '.join(miss)}")
    if label_set is not None and "label" not in df.columns:
        raise BadInputError(path, "missing column(s): label (needed for label_set)")
    return df


def _label(r: dict, where: str, rules: _Rules) -> str | None:
    """The row's label (lower-cased when asked); None for a caption-only row."""
    lab = r.get("label")
    if is_missing(lab):
        if rules.allow_unlabelled:
            return None
        if "caption" not in rules.columns or is_missing(r.get("caption")) or rules.allowed is not None:
            raise BadInputError(rules.path, f"empty label ({where}: {r['file']})")
        return None
    lab = str(lab).strip()
    lab = lab.lower() if rules.lowercase_labels else lab
    if rules.allowed is not None and lab not in rules.allowed:
        why = f"unknown label ({where}: {lab!r} for {r['file']}; allowed: {', '.join(sorted(rules.allowed))})"
        raise BadInputError(rules.path, why)
    return lab


def _check_row(r: dict, where: str, rules: _Rules) -> tuple[Path, float | None, float | None]:
    """One row -> (resolved audio file, start, end); its label is normalised in place.
    BadInputError names the manifest (or the missing audio file) and the row."""
    path = rules.path
    if is_missing(r.get("file")):
        raise BadInputError(path, f"empty file cell ({where})")
    if "\x00" in str(r["file"]):
        raise BadInputError(path, f"the audio path holds a NUL character ({where}: {str(r['file'])!r})")
    for col in ("label", "caption", "speaker", "gender", "split", "language", "corpus"):
        v = r.get(col)
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:  # a JSON "\udcff" escape: no text (file names may hold such bytes)
                raise BadInputError(path, f"{col} is not valid UTF-8 text ({where}: {v!r})") from None
    f = Path(str(r["file"]).strip()).expanduser()
    try:
        f = (f if f.is_absolute() else rules.base / f).resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, a name too long, ...
        raise BadInputError(path, f"cannot resolve the audio path ({where}: {r['file']}: {e})") from None
    if "label" in rules.columns:
        r["label"] = _label(r, where, rules)
    elif is_missing(r.get("caption")) and not rules.allow_unlabelled:
        raise BadInputError(path, f"empty caption ({where}: {r['file']})")
    try:
        s, e = _num(r.get("start"), "start"), _num(r.get("end"), "end")
    except ValueError as err:
        raise BadInputError(path, f"bad segment ({where}: {err})") from None
    if s is not None and e is not None and e <= s:
        raise BadInputError(path, f"bad segment ({where}: end {e} <= start {s})")
    if rules.check_files:
        try:
            is_file = f.is_file()
        except OSError:
            is_file = False
        if not is_file:
            raise BadInputError(f, f"audio file not found (manifest {path.name}, {where})")
    return f, s, e


def _check_rows(records: list[dict], rules: _Rules, skips: SkipLog) -> tuple[_Kept, dict[int, str]]:
    """Stage 3: every row checked (:func:`_check_row`); a row repeating an earlier one (same file,
    segment, label and caption) is bad input, a clip in several rows with other labels or captions
    is named in a warning. Returns the kept rows and the row errors (row number -> reason)."""
    kept, row_errors = _Kept(), {}
    seen: dict[tuple, int] = {}
    same_clip: dict[tuple, list[int]] = {}  # rows of one clip (with other labels or captions)
    for i, r in enumerate(records, 1):
        where = f"row {i}"
        try:
            f, s, e = _check_row(r, where, rules)
            key = (str(f), s, e, _text(r.get("label")), _text(r.get("caption")))
            dup = seen.get(key)
            if dup is not None:
                raise BadInputError(rules.path, f"duplicate row ({where} repeats row {dup}: {r['file']}; it would "
                                    "be counted twice)")
            seen[key] = i
            same_clip.setdefault((str(f), s, e), []).append(i)
        except BadInputError as err:
            skips.handle(err)
            row_errors[i] = f"{err.path}: {err.reason}"
            continue
        kept.index.append(i - 1)
        kept.files.append(str(f))
        kept.starts.append(s)
        kept.ends.append(e)
    if not kept.index:
        raise BadInputError(rules.path, f"no usable rows: all {len(records)} are bad ({skips.by_reason()})")
    multi = [(k[0], rows) for k, rows in same_clip.items() if len(rows) > 1]
    if multi:  # suspicious unless meant (several captions or raters per clip): named, not dropped
        shown = "; ".join(f"{Path(f).name} (rows {', '.join(map(str, rows))})" for f, rows in multi[:3])
        log.warning("%s: %d clip(s) appear in several rows with different labels or captions: %s%s",
                    rules.path.name, len(multi), shown, " ..." if len(multi) > 3 else "")
    return kept, row_errors


def _table_of(df: pd.DataFrame, records: list[dict], kept: _Kept, corpus: str, language: str | None) -> pd.DataFrame:
    """Stage 4: the kept rows in the standard columns first (speaker, split, ... as text, gender
    normalised, ``corpus`` / ``language`` filled in), then the manifest's other columns, then
    ``manifest_row``."""
    out = df.iloc[kept.index].reset_index(drop=True).copy()
    if "label" in out.columns:
        out["label"] = [records[k]["label"] for k in kept.index]
    out["file"] = pd.Series(kept.files, index=out.index, dtype=object)  # any file name, UTF-8 or not
    if "start" in out.columns or "end" in out.columns:
        out["start"] = pd.Series(kept.starts, dtype="float64")
        out["end"] = pd.Series(kept.ends, dtype="float64")
    for c in ("label", "speaker", "gender", "split", "language", "corpus"):
        if c not in out.columns:
            out[c] = None
    out["gender"] = [normalize_gender(g) for g in out["gender"]]
    out["speaker"] = [_text(s) for s in out["speaker"]]
    out["split"] = [_text(s) for s in out["split"]]
    out["language"] = [language if is_missing(x) else str(x).strip() for x in out["language"]]
    out["corpus"] = [corpus if is_missing(x) else str(x).strip() for x in out["corpus"]]
    out[MANIFEST_ROW] = [k + 1 for k in kept.index]
    return out[[*STANDARD_COLUMNS, *[c for c in out.columns if c not in STANDARD_COLUMNS]]]


def _with_durations(out: pd.DataFrame, kept: _Kept, skips: SkipLog, row_errors: dict[int, str]) -> pd.DataFrame:
    """Stage 5: ``duration`` (``end - start`` for segments, else from the file header, minus
    ``start``); rows whose header is unreadable are skipped (bad input) and get a row error."""
    d = durations(out["file"].tolist(), skips)
    dur = []
    for x, s, e in zip(d, kept.starts, kept.ends):
        if x is None:
            dur.append(None)
        elif e is not None:
            dur.append(e - (s or 0.0))
        else:
            dur.append(max(x - (s or 0.0), 0.0))
    if "duration" in out.columns:  # the header's duration wins over a stated one
        out = out.drop(columns=["duration"])
    out.insert(len(STANDARD_COLUMNS), "duration", pd.Series(dur, dtype="float64"))
    ok = [x is not None for x in d]
    if all(ok):
        return out
    why = dict(skips.items)
    for k, good, f in zip(kept.index, ok, kept.files):
        if not good:
            row_errors[k + 1] = f"{f}: {why.get(f, 'unreadable audio header')}"
    return out[ok].reset_index(drop=True)


def manifest_table(
    path,
    *,
    root=None,
    required=None,
    label_set=None,
    skip_bad: bool = False,
    skips: SkipLog | None = None,
    check_files: bool = True,
    with_duration: bool = True,
    lowercase_labels: bool = True,
    corpus: str | None = None,
    language: str | None = None,
    allow_unlabelled: bool = False,
) -> Table:
    """:func:`read_manifest` (the same options) as a :class:`~smoothclap.corpora.Table`: the rows,
    the skips, ``source`` = the manifest path, ``n_rows`` = its number of data rows and
    ``row_errors`` = why each left-out row was left out, so results can be laid out one row per
    manifest row."""
    path, df = _open(path)
    df = _map_columns(df, path, required, label_set)
    skips = skips if skips is not None else SkipLog(skip=skip_bad)
    n0 = skips.count
    allowed = None
    if label_set is not None:
        allowed = {str(x).strip().lower() if lowercase_labels else str(x).strip() for x in label_set}
    rules = _Rules(path=path, base=Path(root).expanduser().resolve() if root is not None else path.parent,
                   columns=set(df.columns), allowed=allowed, lowercase_labels=lowercase_labels,
                   check_files=check_files, allow_unlabelled=allow_unlabelled)
    records = df.to_dict("records")
    kept, row_errors = _check_rows(records, rules, skips)
    out = _table_of(df, records, kept, corpus or path.stem, language)
    if with_duration:
        out = _with_durations(out, kept, skips, row_errors)
    for c in STANDARD_COLUMNS:
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    if skips.count > n0:
        log.warning("%s: skipped %d bad row(s): %s", path.name, skips.count - n0, skips.by_reason())
    return Table(rows=out, skipped=skips, source=str(path), n_rows=len(records), row_errors=row_errors)


def read_manifest(
    path,
    *,
    root=None,
    required=None,
    label_set=None,
    skip_bad: bool = False,
    skips: SkipLog | None = None,
    check_files: bool = True,
    with_duration: bool = True,
    lowercase_labels: bool = True,
    corpus: str | None = None,
    language: str | None = None,
    allow_unlabelled: bool = False,
) -> pd.DataFrame:
    """Read a manifest into the standard corpus table.

    required: columns that must be present; default: ``file`` (or ``path``) and one of ``label`` /
        ``caption``. ``path`` satisfies a required ``file``.
    label_set: allowed labels (compared after lower-casing when ``lowercase_labels``); a row with
        another label is bad input.
    skip_bad: log and skip bad rows (unknown label, missing audio, empty cells, bad start/end)
        instead of raising.
    skips: the :class:`~smoothclap.errors.SkipLog` that collects the skipped rows (default: a new
        one that skips when ``skip_bad``); pass one to learn what was left out.
    check_files: check that each audio file exists.
    with_duration: add ``duration`` (``end - start`` for segments, else from the file header).
    corpus / language: fill these columns where the manifest has none (corpus defaults to the
        manifest's file stem).
    allow_unlabelled: keep rows with neither a label nor a caption (an empty label cell, or no label
        column at all) as unlabelled rows (label None) instead of bad input: training data that is
        partly or not labelled (``data.sources[].labelled``, ``docs/data.md``).

    A manifest without data rows, a row repeating an earlier row (same file, segment, label and
    caption) and a path that cannot be resolved (e.g. a symlink loop) are bad input; a clip in
    several rows with different labels or captions is kept and named in a warning. The column
    ``manifest_row`` holds the manifest row number (1 = first data row) of every kept row;
    :func:`manifest_table` also gives the number of data rows and why each left-out row was left out.
    """
    return manifest_table(path, root=root, required=required, label_set=label_set, skip_bad=skip_bad, skips=skips,
                          check_files=check_files, with_duration=with_duration, lowercase_labels=lowercase_labels,
                          corpus=corpus, language=language, allow_unlabelled=allow_unlabelled).rows


def load(root, **opts) -> pd.DataFrame:
    """Registry entry: ``corpora.load("manifest", "my.csv", ...)``; ``root`` is the manifest path
    (``base=`` sets the folder that relative audio paths resolve against)."""
    base = opts.pop("base", None)
    return read_manifest(root, root=base, **opts)
