"""Corpus loaders: each corpus' official distribution layout -> one pandas table.

Every table has the columns ``file`` (absolute path), ``label`` (lower-case class name),
``speaker`` (str or None), ``gender`` ("male" / "female" / None), ``split`` (train / dev / test,
a session id, or None), ``language`` ("en" / "de"), ``corpus``, then ``duration`` (seconds, from the
file header; ``with_duration=True``, the default) and corpus-specific extra columns.

>>> from smoothclap import corpora
>>> corpora.available()                                   # doctest: +SKIP
>>> df = corpora.load("emodb", "/data/emodb")             # doctest: +SKIP
>>> df = corpora.load("aibo", "/data/aibo", classes=5)    # doctest: +SKIP
>>> df = corpora.read_manifest("my_corpus.csv")           # doctest: +SKIP
>>> df = corpora.read_dataset("shards-{000..009}.tar")   # doctest: +SKIP  (or a HF dataset)

Every loader accepts ``with_duration``, ``skip_bad`` and ``skips`` and returns a plain DataFrame.
A missing root, or a root without the corpus' expected files, raises
:class:`~smoothclap.errors.BadInputError` naming what is missing and where. Malformed file names
and label rows are errors too, or, with ``skip_bad=True``, are logged and skipped into ``skips``:
the caller's :class:`~smoothclap.errors.SkipLog` (default: a new one the caller never sees). A
caller that reports what was left out passes its own and keeps it beside the rows; a
:class:`Table` is that pair (``rows``, ``skipped``, ``source``; for a manifest also ``n_rows`` and
``row_errors``, and the rows' ``manifest_row`` column), as the command line, the trainer and the
embed command hand it around:

>>> from smoothclap.errors import SkipLog
>>> skips = SkipLog(skip=True)
>>> table = corpora.Table(corpora.load("emodb", "/data/emodb", skips=skips), skips, "/data/emodb")  # doctest: +SKIP
>>> table = corpora.manifest_table("my_corpus.csv", skip_bad=True)                           # doctest: +SKIP

Corpus names, aliases, the folder names a data root may use, and the caption vocabulary live in
one table, :data:`CORPORA` (:mod:`smoothclap.corpora.registry`). To add a corpus: a module with a
``load(root, **opts)`` function and one :class:`CorpusInfo` row there.
"""
from __future__ import annotations

import pandas as pd

from ._common import AUDIO_EXTS, STANDARD_COLUMNS
from .manifest import manifest_table, read_manifest
from .datasets import dataset_table, read_dataset
from .combine import EMOTION_COLUMNS, LABELLED, check_whole_files, labelled_mask, rows_of_split, training_table, unlabel
from .registry import CORPORA, CorpusInfo, available, canonical, caption_words, find_root, get_info, key
from .table import MANIFEST_ROW, Table



def get_loader(name: str):
    """The loader function of corpus ``name`` (any alias)."""
    return get_info(name).loader


def load(name: str, root, **opts) -> pd.DataFrame:
    """Load corpus ``name`` from its official layout under ``root`` (for ``"manifest"``: the
    manifest file). ``opts`` go to the corpus loader (see each module's ``load``), ``skips`` too:
    the :class:`~smoothclap.errors.SkipLog` that collects what ``skip_bad`` leaves out."""
    return get_loader(name)(root, **opts)


__all__ = [
    "AUDIO_EXTS",
    "CORPORA",
    "CorpusInfo",
    "EMOTION_COLUMNS",
    "LABELLED",
    "MANIFEST_ROW",
    "STANDARD_COLUMNS",
    "available",
    "check_whole_files",
    "dataset_table",
    "canonical",
    "caption_words",
    "find_root",
    "get_info",
    "get_loader",
    "key",
    "labelled_mask",
    "load",
    "manifest_table",
    "read_manifest",
    "read_dataset",
    "rows_of_split",
    "Table",
    "training_table",
    "unlabel",
]
