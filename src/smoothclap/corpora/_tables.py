"""Reading the label tables of the challenge corpora: CSV / TSV / ``;``- or space-separated text,
and ARFF (only the columns we need are kept)."""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pandas as pd

from ..errors import BadInputError
from ._common import child, is_audio

TABLE_EXTS = (".csv", ".tsv", ".txt", ".lab", ".arff", ".tab")


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", str(name).strip().lower())


def find_column(columns, candidates) -> str | None:
    """First column whose normalised name is one of ``candidates`` (lower-case, no ``_ -.``)."""
    norm = {_norm(c): c for c in columns}
    for cand in candidates:
        if _norm(cand) in norm:
            return norm[_norm(cand)]
    return None


def _arff_header(lines) -> tuple[list[str], int]:
    names, n = [], 0
    for n, line in enumerate(lines, 1):
        s = line.strip()
        low = s.lower()
        if low.startswith("@attribute"):
            m = re.match(r"@attribute\s+('([^']*)'|\"([^\"]*)\"|(\S+))", s, re.IGNORECASE)
            names.append(next(g for g in m.groups()[1:] if g is not None) if m else f"col{len(names)}")
        elif low.startswith("@data"):
            return names, n
    return names, -1


def read_arff(path: Path, keep: list[str] | None = None) -> pd.DataFrame:
    """ARFF -> DataFrame of strings (columns ``keep`` only, when given; feature files are big)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().splitlines()
    names, data_at = _arff_header(lines)
    if data_at < 0:
        raise BadInputError(path, "ARFF file without an @data section")
    idx = [names.index(k) for k in keep] if keep else list(range(len(names)))
    rows = []
    body = (ln for ln in lines[data_at:] if ln.strip() and not ln.lstrip().startswith("%"))
    for n, rec in enumerate(csv.reader(body, quotechar="'", skipinitialspace=True), 1):
        if len(rec) != len(names):
            raise BadInputError(path, f"malformed ARFF data row {n} ({len(rec)} values, {len(names)} attributes)")
        rows.append([rec[i].strip() for i in idx])
    return pd.DataFrame(rows, columns=[names[i] for i in idx])


def table_columns(path: Path) -> list[str]:
    """Column names of a label table, reading only its header."""
    if path.suffix.lower() == ".arff":
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = []
            for line in fh:
                head.append(line)
                if line.strip().lower().startswith("@data"):
                    break
        return _arff_header(head)[0]
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        first = fh.readline()
    return _split_header(first)[0]


def _split_header(line: str) -> tuple[list[str], str | None]:
    line = line.rstrip("\r\n")
    for sep in ("\t", ";", ","):
        if sep in line:
            return [c.strip() for c in line.split(sep)], sep
    return line.split(), None


def read_table(path: Path, keep: list[str] | None = None) -> pd.DataFrame:
    """A label table as strings. Delimiter: tab, ``;`` or ``,`` (from the header line), else
    whitespace. ARFF by extension."""
    if path.suffix.lower() == ".arff":
        return read_arff(path, keep)
    try:
        text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise BadInputError(path, f"unreadable label table ({e})") from None
    if not text.strip():
        raise BadInputError(path, "empty label table")
    _, sep = _split_header(text.splitlines()[0])
    try:
        df = pd.read_csv(
            io.StringIO(text),
            sep=sep if sep else r"\s+",
            dtype=str,
            keep_default_na=False,
            engine="python" if sep is None else "c",
            skip_blank_lines=True,
        )
    except Exception as e:
        raise BadInputError(path, f"unreadable label table ({e.__class__.__name__}: {e})") from None
    df.columns = [str(c).strip() for c in df.columns]
    for c in df.columns:
        df[c] = df[c].str.strip()
    return df[keep] if keep else df


def discover_tables(base: Path, need: list[tuple[str, ...]], folders=("", "labels", "lab", "label")) -> list[Path]:
    """Label tables in ``base`` (and its ``labels/``-like folders) whose header has a column from
    each candidate group in ``need``."""
    out = []
    for sub in folders:
        d = child(base, sub) if sub else base
        if d is None or not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if not p.is_file() or p.name.startswith(".") or is_audio(p.name):
                continue
            if p.suffix.lower() not in TABLE_EXTS:
                continue
            try:
                cols = table_columns(p)
            except OSError:
                continue
            if all(find_column(cols, group) for group in need):
                out.append(p)
    return out


_PART = re.compile(r"(?:^|[^a-z])(train|training|devel|dev|development|test)(?:[^a-z]|$)", re.IGNORECASE)


def split_from_text(text: str) -> str | None:
    """``ALC_train.arff`` -> train, ``devel`` -> dev; None if no partition word."""
    from ._common import norm_split

    m = _PART.search(text)
    return norm_split(m.group(1)) if m else None
