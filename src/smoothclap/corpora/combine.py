"""Rows of a split; several corpus tables -> one training table with one caption vocabulary."""
from __future__ import annotations

import logging

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


def training_table(tables: dict[str, pd.DataFrame], label_map: dict | None = None, *, vocabulary: bool = True,
                   per_source_maps: dict[str, dict] | None = None) -> pd.DataFrame:
    """Concatenate corpus tables (name -> table) for training.

    ``label`` becomes the caption word: the row's corpus' entry in the caption vocabulary
    (:func:`smoothclap.corpora.caption_words`, when ``vocabulary``), then ``per_source_maps[name]``,
    then ``label_map`` (both label -> word; later ones win). The corpus' own word is kept in
    ``label_original``. Speaker ids are prefixed with the corpus (``"emodb:03"``): ids repeat
    across corpora (EmoDB "03", RAVDESS "03"). A table without a ``corpus`` column is corpus ``name``.
    """
    parts = []
    for name, df in tables.items():
        df = df.copy()
        if "corpus" not in df.columns:
            df["corpus"] = name
        corpus = [name if is_missing(c) else str(c) for c in df["corpus"]]
        extra = {str(k): str(v) for k, v in ((per_source_maps or {}).get(name) or {}).items()}
        extra.update({str(k): str(v) for k, v in (label_map or {}).items()})
        vocab = {c: {**(caption_words(canonical(c)) if vocabulary else {}), **extra} for c in set(corpus)}
        df["label_original"] = df["label"].astype(str)
        df["label"] = [vocab[c].get(x, x) for c, x in zip(corpus, df["label_original"])]
        if "speaker" in df.columns:
            df["speaker"] = [None if is_missing(s) else f"{c}:{s}" for c, s in zip(corpus, df["speaker"])]
        parts.append(df)
    return pd.concat(parts, ignore_index=True)
