"""A run config's training data: one or several corpora / manifests / datasets -> one training table."""
from __future__ import annotations

import logging

import pandas as pd

from .. import corpora
from ..errors import BadInputError, SkipLog

log = logging.getLogger("smoothclap")


def _read(src, data, skips: SkipLog) -> pd.DataFrame:
    if src.manifest is not None:
        return corpora.read_manifest(src.manifest, label_set=data.labels, skips=skips, **src.options)
    if src.dataset is not None:
        return corpora.read_dataset(src.dataset, format=src.format, split=src.dataset_split, columns=src.columns,
                                    label_set=data.labels, skips=skips, **src.options)
    if not src.root:
        raise BadInputError(f"data.sources ({src.corpus})", f"corpus {src.corpus!r} needs a root folder "
                            "(data.root, or root: in its source; --set data.root=DIR)")
    return corpora.load(src.corpus, src.root, skips=skips, **src.options)


def load_sources(data, split: str | None = None, *, labels=None, skips: SkipLog | None = None) -> pd.DataFrame:
    """Read every source of ``data`` (a :class:`~smoothclap.config.DataConfig`), keep the rows of
    ``split`` (each source may set its own), check labels and whole files, and combine the sources
    into one table with one caption vocabulary (:func:`smoothclap.corpora.training_table`). Rows
    skipped while reading (``data.skip_bad``) are added to ``skips`` when given. ``labels``: keep
    only these (model selection)."""
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
        if labels is not None:
            df = df[df["label"].astype(str).isin(labels)]
        if data.labels is not None:
            unknown = sorted(set(df["label"].astype(str)) - set(data.labels))
            if unknown:
                raise BadInputError(name, f"labels {unknown} outside data.labels {data.labels}")
        corpora.check_whole_files(df, "training", source=name)  # here, where the source is known
        key = name if name not in tables else f"{name}#{len(tables)}"
        tables[key], maps[key] = df.reset_index(drop=True), src.label_map
    return corpora.training_table(tables, data.label_map, vocabulary=data.caption_vocabulary, per_source_maps=maps)
