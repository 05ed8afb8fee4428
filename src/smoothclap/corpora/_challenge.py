"""Shared loader for the INTERSPEECH challenge corpora distributed as ``wav/`` + a label table
(ALC, SLD): audio in ``wav/`` (flat or ``wav/<partition>/``), labels in one or more CSV / TSV /
``;``-separated / ARFF tables with a file column and a class column."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import BadInputError, SkipLog
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
    norm_gender,
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
UNLABELLED = ("", "?", "na", "nan", "none")


def _stem(value: str) -> str:
    name = Path(str(value).replace("\\", "/")).name
    return name[: -len(ext)] if (ext := next((e for e in AUDIO_EXTS if name.lower().endswith(e)), "")) else name


def _class_column(df: pd.DataFrame, candidates, codes) -> str | None:
    """Among the candidate columns present, the first whose values are all class codes."""
    present = []
    for c in candidates:
        col = find_column(df.columns, (c,))
        if col is not None and col not in present:
            present.append(col)
    for col in present:
        vals = {str(v).strip().upper() for v in df[col]} - {u.upper() for u in UNLABELLED}
        if vals and vals <= set(codes):
            return col
    return present[0] if present else None


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
    label_map: dict | None = None,
) -> pd.DataFrame:
    root = check_root(root, corpus)
    base = locate(root, lambda d: (w := child(d, "wav")) is not None and w.is_dir())
    if base is None:
        raise missing(root, "folder 'wav/'", corpus)
    wav_dir = child(base, "wav")
    skips = SkipLog(skip=skip_bad)

    # audio, by stem; wav/<partition>/ folders give the partition
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

    # label table(s)
    if labels is not None:
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
    else:
        tables = discover_tables(base, [FILE_COLS, class_cols])
        if not tables:
            raise BadInputError(
                base, f"no {corpus} label table found (a CSV/TSV/ARFF file with a file column and a "
                f"{'/'.join(class_cols)} column, in the root or labels/)"
            )
    lab = merge_map(codes, label_map)

    rows, seen = [], {}
    for t in tables:
        cols = table_columns(t)
        fcol, pcol = find_column(cols, FILE_COLS), find_column(cols, PART_COLS)
        scol, gcol = find_column(cols, SPEAKER_COLS), find_column(cols, GENDER_COLS)
        if t.suffix.lower() == ".arff":  # feature files: keep only what we need
            wanted = (fcol, pcol, scol, gcol, *[find_column(cols, (c,)) for c in class_cols])
            keep = list(dict.fromkeys(c for c in wanted if c))
            df = read_table(t, keep)
        else:
            df = read_table(t)
        ccol = _class_column(df, class_cols, codes)
        table_split = split_from_text(t.stem)
        skip_cols = {fcol, ccol, pcol, scol, gcol}
        extras = [c for c in df.columns if c not in skip_cols and t.suffix.lower() != ".arff"]
        for i, r in enumerate(df.to_dict("records"), 1):
            fid = str(r[fcol]).strip()
            raw = str(r[ccol]).strip()
            if not fid:
                skips.handle(BadInputError(t, f"empty file id (row {i})"))
                continue
            if raw.lower() in UNLABELLED:
                continue  # an unreleased label (e.g. the test partition): left out, not bad
            code = raw.upper()
            if code not in lab:
                why = f"unknown class (row {i}: {raw!r} for {fid}; expected {', '.join(codes)})"
                skips.handle(BadInputError(t, why))
                continue
            stem = _stem(fid)
            if stem in seen:
                skips.handle(BadInputError(t, f"duplicate file id (row {i}: {fid}, also in {seen[stem].name})"))
                continue
            seen[stem] = t
            hit = audio.get(stem)
            if hit is None:
                skips.handle(BadInputError(wav_dir / f"{stem}.wav", f"audio file not found (labelled in {t.name})"))
                continue
            f, folder_split = hit
            split = (
                (norm_split(r[pcol]) if pcol else None)
                or folder_split
                or split_from_name(stem)
                or table_split
            )
            row = {
                "file": f,
                "label": lab[code],
                "speaker": (str(r[scol]).strip() or None) if scol else None,
                "gender": norm_gender(r[gcol]) if gcol else None,
                "split": split,
                "class_code": code,
            }
            for c in extras:
                if c not in row:
                    row[c] = r[c]
            rows.append(row)
    n_unlabelled = len(set(audio) - set(seen))
    if n_unlabelled:
        log.info("%s: %d audio file(s) have no label (left out)", corpus, n_unlabelled)
    df = finish(rows, corpus, language, skips, with_duration)
    df.attrs["unlabelled"] = n_unlabelled
    return df
