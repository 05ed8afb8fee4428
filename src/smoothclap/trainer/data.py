"""A run config's training data: one or several corpora / manifests / datasets -> one training table."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .. import corpora
from ..errors import BadInputError, SkipLog

log = logging.getLogger("smoothclap")


def _read(src, data, skips: SkipLog) -> pd.DataFrame:
    """The source's table. A source that is not fully labelled (``labelled: partial`` / ``false``)
    keeps rows without label nor caption; an unlabelled one (``false``) needs no label column and
    its labels are not checked against ``data.labels`` (they are ignored)."""
    partly = src.labelled is not True
    label_set = None if src.labelled is False else data.labels
    if src.manifest is not None:
        kw = {"required": ("file",)} if src.labelled is False else {}
        return corpora.read_manifest(src.manifest, label_set=label_set, skips=skips, allow_unlabelled=partly,
                                     **kw, **src.options)
    if src.dataset is not None:
        return corpora.read_dataset(src.dataset, format=src.format, split=src.dataset_split, columns=src.columns,
                                    label_set=label_set, skips=skips, allow_unlabelled=partly, **src.options)
    if not src.root:
        raise BadInputError(f"data.sources ({src.corpus})", f"corpus {src.corpus!r} needs a root folder "
                            "(data.root, or root: in its source; --set data.root=DIR)")
    return corpora.load(src.corpus, src.root, skips=skips, **src.options)


def load_sources(data, split: str | None = None, *, labels=None, skips: SkipLog | None = None,
                 labelled_only: bool = False) -> pd.DataFrame:
    """Read every source of ``data`` (a :class:`~smoothclap.config.DataConfig`), keep the rows of
    ``split`` (each source may set its own), check labels and whole files, and combine the sources
    into one table with one caption vocabulary (:func:`smoothclap.corpora.training_table`). Rows
    skipped while reading (``data.skip_bad``) are added to ``skips`` when given. ``labels``: keep
    only these (model selection); ``labelled_only``: leave unlabelled rows out (model selection).

    Unlabelled rows (a source with ``labelled: false``: all its rows, its labels ignored; with
    ``labelled: partial``: rows with an empty label) have ``label`` None; the table's ``labelled``
    column marks every row (:func:`smoothclap.corpora.labelled_mask`)."""
    sources = data.all_sources()
    if not sources:
        raise BadInputError("data", "no training data: set data.manifest (or --manifest), data.dataset (or "
                            "--dataset), data.corpus + data.root, or data.sources")
    tables, maps = {}, {}
    for src in sources:
        read = SkipLog(skip=data.skip_bad)  # one per source: each reader logs its own count
        df = _read(src, data, read)
        if skips is not None:
            skips.items.extend(read.items)
        name = (corpora.canonical(src.corpus) if src.corpus is not None
                else str(src.manifest if src.manifest is not None else src.dataset))
        df = corpora.rows_of_split(df, src.split if src.split is not None else split, name)
        df = corpora.unlabel(df, None if src.labelled is False else np.zeros(len(df), dtype=bool))
        if labelled_only or labels is not None:
            df = df[corpora.labelled_mask(df)]
        if labels is not None:
            df = df[df["label"].astype(str).isin(labels)]
        has = corpora.labelled_mask(df)
        if data.labels is not None:
            unknown = sorted(set(df.loc[has, "label"].astype(str)) - set(data.labels))
            if unknown:
                raise BadInputError(name, f"labels {unknown} outside data.labels {data.labels}")
        corpora.check_whole_files(df, "training", source=name)  # here, where the source is known
        if not has.any() and src.labelled is not False and not labelled_only:
            log.info("%s: no row has a label: all %d rows train unlabelled", name, len(df))
        key = name if name not in tables else f"{name}#{len(tables)}"
        tables[key], maps[key] = df.reset_index(drop=True), src.label_map
    table = corpora.training_table(tables, data.label_map, vocabulary=data.caption_vocabulary, per_source_maps=maps)
    n_un = int((~table[corpora.LABELLED].to_numpy(dtype=bool)).sum())
    if n_un:
        log.info("%d of %d training rows are unlabelled (captions without an emotion word)", n_un, len(table))
    return table
