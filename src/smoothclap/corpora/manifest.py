"""Generic manifest reader: your own corpus as a CSV / TSV / JSONL table.

Columns: ``file`` or ``path`` (the audio; relative paths resolve against the manifest's folder, or
``root``), ``label`` and/or ``caption``, optional ``speaker``, ``gender``, ``split``, ``language``,
``start``, ``end`` (seconds, a segment of the file), ``corpus``; any other column is kept.
Formats by extension: ``.csv`` (delimiter ``,`` ``;`` or tab, detected), ``.tsv`` / ``.tab``,
``.jsonl`` / ``.ndjson`` (one JSON object per line), ``.json`` (a list of objects).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..errors import BadInputError, SkipLog
from ._common import STANDARD_COLUMNS, durations, log, norm_gender

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


def _blank(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _num(v, name: str) -> float | None:
    if _blank(v):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"non-numeric {name} {v!r}") from None
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"invalid {name} {v!r}")
    return x


def read_manifest(
    path,
    *,
    root=None,
    required=None,
    label_set=None,
    skip_bad: bool = False,
    check_files: bool = True,
    with_duration: bool = True,
    lowercase_labels: bool = True,
    corpus: str | None = None,
    language: str | None = None,
) -> pd.DataFrame:
    """Read a manifest into the standard corpus table.

    required: columns that must be present; default: ``file`` (or ``path``) and one of ``label`` /
        ``caption``. ``path`` satisfies a required ``file``.
    label_set: allowed labels (compared after lower-casing when ``lowercase_labels``); a row with
        another label is bad input.
    skip_bad: log and skip bad rows (unknown label, missing audio, empty cells, bad start/end)
        instead of raising; they are in ``df.attrs["skipped"]``.
    check_files: check that each audio file exists.
    with_duration: add ``duration`` (``end - start`` for segments, else from the file header).
    corpus / language: fill these columns where the manifest has none (corpus defaults to the
        manifest's file stem).

    A manifest without data rows, a row repeating an earlier row (same file, segment, label and
    caption) and a path that cannot be resolved (e.g. a symlink loop) are bad input; a clip in
    several rows with different labels or captions is kept and named in a warning. ``df.attrs["rows"]`` holds the
    manifest row number (1 = first data row) of every kept row, ``df.attrs["n_rows"]`` the number
    of data rows, so results can be laid out one row per manifest row.
    """
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
    df.columns = [str(c).strip() for c in df.columns]
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

    base = Path(root).expanduser().resolve() if root is not None else path.parent
    allowed = None
    if label_set is not None:
        allowed = {str(x).strip().lower() if lowercase_labels else str(x).strip() for x in label_set}
        if "label" not in df.columns:
            raise BadInputError(path, "missing column(s): label (needed for label_set)")

    skips = SkipLog(skip=skip_bad)
    keep, files, starts, ends = [], [], [], []
    seen: dict[tuple, int] = {}
    same_clip: dict[tuple, list[int]] = {}  # rows of one clip (with other labels or captions)
    row_errors: dict[int, str] = {}
    records = df.to_dict("records")
    for i, r in enumerate(records, 1):
        where = f"row {i}"
        try:
            if _blank(r.get("file")):
                raise BadInputError(path, f"empty file cell ({where})")
            f = Path(str(r["file"]).strip()).expanduser()
            try:
                f = (f if f.is_absolute() else base / f).resolve()
            except (OSError, RuntimeError) as e:  # a symlink loop, a name too long, ...
                raise BadInputError(path, f"cannot resolve the audio path ({where}: {r['file']}: {e})") from None
            if "label" in df.columns:
                lab = r.get("label")
                if _blank(lab):
                    if "caption" not in df.columns or _blank(r.get("caption")) or allowed is not None:
                        raise BadInputError(path, f"empty label ({where}: {r['file']})")
                    lab = None
                else:
                    lab = str(lab).strip()
                    lab = lab.lower() if lowercase_labels else lab
                    if allowed is not None and lab not in allowed:
                        why = f"unknown label ({where}: {lab!r} for {r['file']}; allowed: {', '.join(sorted(allowed))})"
                        raise BadInputError(path, why)
                r["label"] = lab
            elif _blank(r.get("caption")):
                raise BadInputError(path, f"empty caption ({where}: {r['file']})")
            try:
                s, e = _num(r.get("start"), "start"), _num(r.get("end"), "end")
            except ValueError as err:
                raise BadInputError(path, f"bad segment ({where}: {err})") from None
            if s is not None and e is not None and e <= s:
                raise BadInputError(path, f"bad segment ({where}: end {e} <= start {s})")
            if check_files:
                try:
                    is_file = f.is_file()
                except OSError:
                    is_file = False
                if not is_file:
                    raise BadInputError(f, f"audio file not found (manifest {path.name}, {where})")
            key = (str(f), s, e, None if _blank(r.get("label")) else str(r.get("label")).strip(),
                   None if _blank(r.get("caption")) else str(r.get("caption")).strip())
            dup = seen.get(key)
            if dup is not None:
                raise BadInputError(path, f"duplicate row ({where} repeats row {dup}: {r['file']}; it would be "
                                    "counted twice)")
            seen[key] = i
            same_clip.setdefault((str(f), s, e), []).append(i)
        except BadInputError as err:
            skips.handle(err)
            row_errors[i] = f"{err.path}: {err.reason}"
            continue
        keep.append(i - 1)
        files.append(str(f))
        starts.append(s)
        ends.append(e)

    if not keep:
        raise BadInputError(path, f"no usable rows: all {len(records)} are bad ({skips.by_reason()})")
    multi = [(k[0], rows) for k, rows in same_clip.items() if len(rows) > 1]
    if multi:  # suspicious unless meant (several captions or raters per clip): named, not dropped
        shown = "; ".join(f"{Path(f).name} (rows {', '.join(map(str, rows))})" for f, rows in multi[:3])
        log.warning("%s: %d clip(s) appear in several rows with different labels or captions: %s%s", path.name,
                    len(multi), shown, " ..." if len(multi) > 3 else "")
    out = df.iloc[keep].reset_index(drop=True).copy()
    if "label" in out.columns:
        out["label"] = [records[k]["label"] for k in keep]
    out["file"] = files
    if "start" in out.columns or "end" in out.columns:
        out["start"] = pd.Series(starts, dtype="float64")
        out["end"] = pd.Series(ends, dtype="float64")
    for c in ("label", "speaker", "gender", "split", "language", "corpus"):
        if c not in out.columns:
            out[c] = None
    out["gender"] = [norm_gender(g) if not _blank(g) else None for g in out["gender"]]
    out["speaker"] = [None if _blank(s) else str(s).strip() for s in out["speaker"]]
    out["split"] = [None if _blank(s) else str(s).strip() for s in out["split"]]
    out["language"] = [language if _blank(x) else str(x).strip() for x in out["language"]]
    out["corpus"] = [corpus or path.stem if _blank(x) else str(x).strip() for x in out["corpus"]]
    out = out[[*STANDARD_COLUMNS, *[c for c in out.columns if c not in STANDARD_COLUMNS]]]
    if with_duration:
        d = durations(out["file"].tolist(), skips)
        dur = []
        for k, x in enumerate(d):
            s, e = starts[k], ends[k]
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
        if not all(ok):
            out = out[ok].reset_index(drop=True)
            why = {p: r for p, r in skips.items}
            for k, good, f in zip(keep, ok, files):
                if not good:
                    row_errors[k + 1] = f"{f}: {why.get(f, 'unreadable audio header')}"
            keep = [k for k, good in zip(keep, ok) if good]
    for c in STANDARD_COLUMNS:
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    out.attrs["corpus"] = corpus or path.stem
    out.attrs["skipped"] = skips
    out.attrs["manifest"] = str(path)
    out.attrs["rows"] = [k + 1 for k in keep]
    out.attrs["n_rows"] = len(records)
    out.attrs["row_errors"] = row_errors
    if skips.count:
        log.warning("%s: skipped %d bad row(s): %s", path.name, skips.count, skips.by_reason())
    return out


def load(root, **opts) -> pd.DataFrame:
    """Registry entry: ``corpora.load("manifest", "my.csv", ...)``; ``root`` is the manifest path
    (``base=`` sets the folder that relative audio paths resolve against)."""
    base = opts.pop("base", None)
    return read_manifest(root, root=base, **opts)
