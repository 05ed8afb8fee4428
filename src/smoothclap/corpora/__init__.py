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

Every loader accepts ``with_duration`` and ``skip_bad``. A missing root, or a root without the
corpus' expected files, raises :class:`~smoothclap.errors.BadInputError` naming what is missing
and where. Malformed file names and label rows are errors too, or, with ``skip_bad=True``, are
logged and skipped; the skips are in ``df.attrs["skipped"]`` (a :class:`~smoothclap.errors.SkipLog`).

Corpus names, aliases, the folder names a data root may use, and the caption vocabulary live in
one table, :data:`CORPORA` (:mod:`smoothclap.corpora.registry`). To add a corpus: a module with a
``load(root, **opts)`` function and one :class:`CorpusInfo` row there.
"""
from __future__ import annotations

import pandas as pd

from ._common import AUDIO_EXTS, STANDARD_COLUMNS
from .manifest import read_manifest
from .combine import check_whole_files, rows_of_split, training_table
from .registry import CORPORA, CorpusInfo, available, canonical, caption_words, find_root, get_info, key



def get_loader(name: str):
    """The loader function of corpus ``name`` (any alias)."""
    return get_info(name).loader


def load(name: str, root, **opts) -> pd.DataFrame:
    """Load corpus ``name`` from its official layout under ``root`` (for ``"manifest"``: the
    manifest file). ``opts`` go to the corpus loader (see each module's ``load``)."""
    return get_loader(name)(root, **opts)


__all__ = [
    "AUDIO_EXTS",
    "CORPORA",
    "CorpusInfo",
    "STANDARD_COLUMNS",
    "available",
    "check_whole_files",
    "canonical",
    "caption_words",
    "find_root",
    "get_info",
    "get_loader",
    "key",
    "load",
    "read_manifest",
    "rows_of_split",
    "training_table",
]
