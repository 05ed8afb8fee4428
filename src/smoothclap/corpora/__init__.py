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
"""
from __future__ import annotations

import re
from typing import Callable

import pandas as pd

from . import aibo, alc, cremad, emodb, iemocap, manifest, msppodcast, ravdess, savee, sld, tess
from ._common import AUDIO_EXTS, STANDARD_COLUMNS
from .manifest import read_manifest

Loader = Callable[..., pd.DataFrame]

#: Canonical corpus name -> loader ``f(root, **opts) -> DataFrame``.
REGISTRY: dict[str, Loader] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", str(name).lower())


def register(name: str, loader: Loader | None = None, *, aliases: tuple[str, ...] = ()):
    """Register ``loader`` under ``name`` (usable as a decorator). Names are case-insensitive and
    ignore ``-``, ``_``, ``.`` and spaces ("CREMA-D" == "crema_d" == "cremad")."""

    def deco(fn: Loader) -> Loader:
        canon = name.lower()
        REGISTRY[canon] = fn
        for a in (name, *aliases):
            _ALIASES[_key(a)] = canon
        return fn

    return deco(loader) if loader is not None else deco


def available() -> list[str]:
    """Registered corpus names, sorted."""
    return sorted(REGISTRY)


def get_loader(name: str) -> Loader:
    canon = _ALIASES.get(_key(name))
    if canon is None:
        raise ValueError(f"unknown corpus {name!r}; available: {', '.join(available())}")
    return REGISTRY[canon]


def load(name: str, root, **opts) -> pd.DataFrame:
    """Load corpus ``name`` from its official layout under ``root`` (for ``"manifest"``: the
    manifest file). ``opts`` go to the corpus loader (see each module's ``load``)."""
    return get_loader(name)(root, **opts)


register("emodb", emodb.load, aliases=("berlin", "emo-db"))
register("ravdess", ravdess.load)
register("tess", tess.load)
register("crema-d", cremad.load, aliases=("cremad",))
register("iemocap", iemocap.load)
register("msp-podcast", msppodcast.load, aliases=("msppodcast", "msp"))
register("aibo", aibo.load, aliases=("fau-aibo", "fauaibo", "is2009"))
register("alc", alc.load, aliases=("is2011", "intoxication"))
register("sld", sld.load, aliases=("is2012", "likability", "likeability"))
register("savee", savee.load)
register("manifest", manifest.load, aliases=("csv", "jsonl", "tsv"))

__all__ = [
    "AUDIO_EXTS",
    "REGISTRY",
    "STANDARD_COLUMNS",
    "available",
    "get_loader",
    "load",
    "read_manifest",
    "register",
]
