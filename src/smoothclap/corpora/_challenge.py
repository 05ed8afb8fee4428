"""Shared loader for the INTERSPEECH challenge corpora distributed as ``wav/`` + a label table
(ALC, SLD): audio in ``wav/`` (flat or ``wav/<partition>/``), labels in one or more CSV / TSV /
``;``-separated / ARFF tables with a file column and a class column.

Reading runs in stages: :func:`_audio_by_stem` (the audio) -> :func:`_label_tables` (given or
found) -> :func:`_rows_of_table` (each label row checked by :func:`_label_row`) -> the standard
table (:func:`~smoothclap.corpora._common.finish`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import BadInputError, SkipLog
from ..values import is_missing, normalize_gender
from ._common import (
    AUDIO_EXTS,
    check_root,
    child,
    finish,
    list_audio,
    locate,
    log,
    merge_map,
    missing,
    norm_split,
    split_from_name,
)
from ._tables import discover_tables, find_column, read_table, split_from_text, table_columns

FILE_COLS = (
    "file", "filename", "file_name", "name", "id", "file_id", "fileid", "instance", "instance_name", "wav", "path",
)
PART_COLS = ("partition", "split", "set", "subset")
SPEAKER_COLS = ("speaker", "speaker_id", "speakerid", "spk", "spkid", "spkrid")
GENDER_COLS = ("gender", "sex")
#: Class cells that mean "no released label" (besides empty ones), compared lower-case.
UNLABELLED = ("?", "na", "nan", "none")


def _stem(value: str) -> str:
    name = Path(str(value).replace("\\", "/")).name
    return name[: -len(ext)] if (ext := next((e for e in AUDIO_EXTS if name.lower().endswith(e)), "")) else name


def _unlabelled(value) -> bool:
    """A class cell without a released label: missing, or a placeholder such as ``?``."""
    return is_missing(value) or str(value).strip().lower() in UNLABELLED


def _class_column(df: pd.DataFrame, candidates, codes) -> str | None:
    """Among the candidate columns present, the first whose values are all class codes."""
    present = []
    for c in candidates:
        col = find_column(df.columns, (c,))
        if col is not None and col not in present:
            present.append(col)
    for col in present:
        vals = {str(v).strip().upper() for v in df[col] if not _unlabelled(v)}
        if vals and vals <= set(codes):
            return col
    return present[0] if present else None


@dataclass
class _Reading:
    """What every label row is checked against, and the file ids seen so far."""

    codes: dict                                 # official class codes -> label
    labels: dict                                # the same with ``label_map`` applied
    class_cols: tuple[str, ...]
    wav_dir: Path
    audio: dict[str, tuple[Path, str | None]]  # stem -> (file, partition of its wav/ sub-folder)
    seen: dict[str, Path] = field(default_factory=dict)  # stem -> the table that labelled it


def _audio_by_stem(wav_dir: Path, corpus: str, skips: SkipLog) -> dict[str, tuple[Path, str | None]]:
    """The audio in ``wav/`` by stem; ``wav/<partition>/`` folders give the partition."""
    audio: dict[str, tuple[Path, str | None]] = {}
    for f in list_audio(wav_dir, recursive=True):
        part = None
        if f.parent != wav_dir:
            rel = f.parent.relative_to(wav_dir).parts
            part = next((norm_split(p) for p in rel if norm_split(p) in ("train", "dev", "test")), None)
        if f.stem in audio:
            skips.handle(BadInputError(f, f"duplicate recording (of {audio[f.stem][0]})"))
            continue
        audio[f.stem] = (f, part)
    if not audio:
        raise BadInputError(wav_dir, f"no .wav or .flac files in the {corpus} wav folder")
    return audio


def _label_tables(base: Path, labels, class_cols: tuple[str, ...], corpus: str) -> list[Path]:
    """The label tables given (each checked for a file and a class column), else those found in
    the root and ``labels/``."""
    if labels is None:
        tables = discover_tables(base, [FILE_COLS, class_cols])
        if not tables:
            raise BadInputError(
                base, f"no {corpus} label table found (a CSV/TSV/ARFF file with a file column and a "
                f"{'/'.join(class_cols)} column, in the root or labels/)"
            )
        return tables
    tables = [Path(p) for p in ([labels] if isinstance(labels, (str, Path)) else labels)]
    for t in tables:
        if not t.is_file():
            raise BadInputError(t, "label table not found")
        cols = table_columns(t)
        if not find_column(cols, FILE_COLS) or not find_column(cols, class_cols):
            raise BadInputError(
                t, f"missing column(s): need a file column ({'/'.join(FILE_COLS[:3])}) and a class column "
                f"({'/'.join(class_cols)}); found {', '.join(cols)}"
            )
    return tables


def _label_row(r: dict, i: int, t: Path, cols: dict, split_of_table: str | None, rd: _Reading) -> dict | None:
    """One label row -> a table row; None for an unreleased label. BadInputError for a bad row."""
    fid = "" if is_missing(r[cols["file"]]) else str(r[cols["file"]]).strip()
    raw = "" if is_missing(r[cols["class"]]) else str(r[cols["class"]]).strip()
    if not fid:
        raise BadInputError(t, f"empty file id (row {i})")
    if _unlabelled(raw):
        return None  # an unreleased label (e.g. the test partition): left out, not bad
    code = raw.upper()
    if code not in rd.labels:
        raise BadInputError(t, f"unknown class (row {i}: {raw!r} for {fid}; expected {', '.join(rd.codes)})")
    stem = _stem(fid)
    if stem in rd.seen:
        raise BadInputError(t, f"duplicate file id (row {i}: {fid}, also in {rd.seen[stem].name})")
    rd.seen[stem] = t
    hit = rd.audio.get(stem)
    if hit is None:
        raise BadInputError(rd.wav_dir / f"{stem}.wav", f"audio file not found (labelled in {t.name})")
    f, folder_split = hit
    pcol, scol, gcol = cols["part"], cols["speaker"], cols["gender"]
    split = (norm_split(r[pcol]) if pcol else None) or folder_split or split_from_name(stem) or split_of_table
    row = {
        "file": f,
        "label": rd.labels[code],
        "speaker": (None if is_missing(r[scol]) else str(r[scol]).strip()) if scol else None,
        "gender": normalize_gender(r[gcol]) if gcol else None,
        "split": split,
        "class_code": code,
    }
    for c in cols["extras"]:
        row.setdefault(c, r[c])
    return row


def _rows_of_table(t: Path, rd: _Reading, skips: SkipLog) -> list[dict]:
    """The table rows of one label table (bad rows to ``skips``)."""
    names = table_columns(t)
    cols = {"file": find_column(names, FILE_COLS), "part": find_column(names, PART_COLS),
            "speaker": find_column(names, SPEAKER_COLS), "gender": find_column(names, GENDER_COLS)}
    arff = t.suffix.lower() == ".arff"
    if arff:  # feature files: keep only what we need
        wanted = (*cols.values(), *[find_column(names, (c,)) for c in rd.class_cols])
        df = read_table(t, list(dict.fromkeys(c for c in wanted if c)))
    else:
        df = read_table(t)
    cols["class"] = _class_column(df, rd.class_cols, rd.codes)
    named = set(cols.values())
    cols["extras"] = [] if arff else [c for c in df.columns if c not in named]
    split_of_table = split_from_text(t.stem)
    rows = []
    for i, r in enumerate(df.to_dict("records"), 1):
        try:
            row = _label_row(r, i, t, cols, split_of_table, rd)
        except BadInputError as err:
            skips.handle(err)
            continue
        if row is not None:
            rows.append(row)
    return rows


def load_challenge(
    root,
    *,
    corpus: str,
    language: str,
    codes: dict,
    class_cols: tuple[str, ...],
    labels=None,
    with_duration: bool = True,
    skip_bad: bool = False,
    skips: SkipLog | None = None,
    label_map: dict | None = None,
) -> pd.DataFrame:
    """The corpus table of a ``wav/`` + label table corpus: the audio by stem, the label tables
    (given or found), their rows matched to the audio. Audio without a released label is left
    out and counted in an info line."""
    root = check_root(root, corpus)
    base = locate(root, lambda d: (w := child(d, "wav")) is not None and w.is_dir())
    if base is None:
        raise missing(root, "folder 'wav/'", corpus)
    wav_dir = child(base, "wav")
    skips = skips if skips is not None else SkipLog(skip=skip_bad)
    audio = _audio_by_stem(wav_dir, corpus, skips)
    tables = _label_tables(base, labels, class_cols, corpus)
    rd = _Reading(codes=codes, labels=merge_map(codes, label_map), class_cols=class_cols,
                  wav_dir=wav_dir, audio=audio)
    rows = [row for t in tables for row in _rows_of_table(t, rd, skips)]
    n_unlabelled = len(set(audio) - set(rd.seen))
    if n_unlabelled:
        log.info("%s: %d audio file(s) have no label (left out)", corpus, n_unlabelled)
    return finish(rows, corpus, language, skips, with_duration)
