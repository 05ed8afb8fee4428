"""Rows of a split; several corpus tables -> one training table with one caption vocabulary."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..errors import BadInputError
from ..values import is_missing
from .registry import caption_words, canonical

log = logging.getLogger("smoothclap")


def rows_of_split(df: pd.DataFrame, split: str | None, name: str, *, all_if_unsplit: bool = True) -> pd.DataFrame:
    """Rows of ``df`` whose ``split`` is ``split`` (None: all rows). A table without split values
    (no column, or every cell empty) keeps every row when ``all_if_unsplit`` (a manifest without a
    split column trains on all its rows), else it is an error; so is a split that matches nothing.
    Errors name ``name`` and the splits present."""
    if split is None:
        return df
    values = df["split"] if "split" in df.columns else pd.Series([None] * len(df), index=df.index)
    have = ~values.map(is_missing).astype(bool) & (values.astype(str) != "None")
    if not have.any():
        if all_if_unsplit:
            log.info("%s has no split values: all %d rows are used (split %r does not apply)", name, len(df), split)
            return df
        raise BadInputError(name, f"no split values, so no rows of split {split!r}")
    out = df[values.astype(str) == str(split)]
    if out.empty:
        found = sorted(values[have].astype(str).unique())
        raise BadInputError(name, f"no rows of split {split!r} (splits here: {', '.join(found)})")
    return out


def check_whole_files(table: pd.DataFrame, what: str, source: str = "table") -> None:
    """Embeddings and features are computed per file: a table with ``start`` / ``end`` segments
    would silently be treated as whole files, so it is refused, naming its ``source`` (the manifest)."""
    for col in ("start", "end"):
        if col in table.columns and table[col].notna().any():
            n = int(table[col].notna().sum())
            raise BadInputError(source, f"{n} row(s) give {col!r} segments; {what} works on whole files: cut the "
                                "segments into files first")


#: The table column that marks rows with a usable emotion label (``True``) and unlabelled rows
#: (``False``): the one marker the training pipeline reads (:func:`labelled_mask`).
LABELLED = "labelled"

#: Columns that carry a row's emotion annotation; :func:`unlabel` empties them, so an unlabelled
#: row's label (or ratings, or a corpus' own emotion code) cannot reach a caption or a target.
EMOTION_COLUMNS = ("label", "label_original", "arousal", "valence", "dominance", "emotion_code")


def labelled_mask(table: pd.DataFrame) -> np.ndarray:
    """``[N]`` bool: the rows that carry an emotion label: a ``label`` that is not missing
    (:func:`smoothclap.values.is_missing`) and, where the table has a ``labelled`` column, a true
    value there. Every other row is unlabelled (a table without a ``label`` column: all rows)."""
    n = len(table)
    if "label" not in table.columns:
        return np.zeros(n, dtype=bool)
    has = np.array([not is_missing(x) for x in table["label"]], dtype=bool)
    if LABELLED in table.columns:
        has &= np.array([_true(v) for v in table[LABELLED]], dtype=bool)
    return has


def _true(v) -> bool:
    """A ``labelled`` cell: bools and numbers as such, text ``true`` / ``yes`` / ``1`` (a manifest's
    column), anything else (missing included) false."""
    if is_missing(v):
        return False
    if isinstance(v, str):
        return v.strip().lower() in ("true", "yes", "y", "1")
    return bool(v)


def unlabel(table: pd.DataFrame, rows=None) -> pd.DataFrame:
    """A copy of ``table`` in which ``rows`` (a boolean mask ``[N]``; None: every row) are
    unlabelled: ``labelled`` False and the emotion annotation (:data:`EMOTION_COLUMNS`: label,
    the corpus' own word, arousal / valence / dominance ratings, emotion codes) emptied (None).
    Every other row keeps its values; ``labelled`` is (re)computed for all rows
    (:func:`labelled_mask`). Given captions (a ``caption`` column) are kept."""
    out = table.copy()
    mask = np.ones(len(out), dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    if mask.shape != (len(out),):
        raise ValueError(f"rows: a boolean mask of {len(out)} rows expected, got shape {mask.shape}")
    if "label" not in out.columns:
        out["label"] = None
    keep = labelled_mask(out) & ~mask
    for col in EMOTION_COLUMNS:
        if col in out.columns and (~keep).any():
            out[col] = out[col].astype(object).where(keep, None)
    out[LABELLED] = keep
    return out


def training_table(tables: dict[str, pd.DataFrame], label_map: dict | None = None, *, vocabulary: bool = True,
                   per_source_maps: dict[str, dict] | None = None) -> pd.DataFrame:
    """Concatenate corpus tables (name -> table) for training.

    ``label`` becomes the caption word: the row's corpus' entry in the caption vocabulary
    (:func:`smoothclap.corpora.caption_words`, when ``vocabulary``), then ``per_source_maps[name]``,
    then ``label_map`` (both label -> word; later ones win). The corpus' own word is kept in
    ``label_original``. Speaker ids are prefixed with the corpus (``"emodb:03"``): ids repeat
    across corpora (EmoDB "03", RAVDESS "03"). A table without a ``corpus`` column is corpus ``name``.

    Unlabelled rows (a missing label, or ``labelled`` False in the table; :func:`labelled_mask`)
    stay unlabelled: ``label`` and ``label_original`` None, their emotion annotation emptied
    (:func:`unlabel`). The result's ``labelled`` column (bool) marks every row.
    """
    parts = []
    for name, df in tables.items():
        df = df.copy()
        if "corpus" not in df.columns:
            df["corpus"] = name
        if "label" not in df.columns:
            df["label"] = None
        corpus = [name if is_missing(c) else str(c) for c in df["corpus"]]
        extra = {str(k): str(v) for k, v in ((per_source_maps or {}).get(name) or {}).items()}
        extra.update({str(k): str(v) for k, v in (label_map or {}).items()})
        vocab = {c: {**(caption_words(canonical(c)) if vocabulary else {}), **extra} for c in set(corpus)}
        has = labelled_mask(df)
        df["label_original"] = [str(x) if h else None for x, h in zip(df["label"], has)]
        df["label"] = [vocab[c].get(x, x) if x is not None else None for c, x in zip(corpus, df["label_original"])]
        df = unlabel(df, ~has)
        if "speaker" in df.columns:
            df["speaker"] = [None if is_missing(s) else f"{c}:{s}" for c, s in zip(corpus, df["speaker"])]
        parts.append(df)
    return pd.concat(parts, ignore_index=True)
