"""The one list of corpora: canonical names, aliases, folder names under a data root, language,
and the caption vocabulary (how each corpus' labels read in training captions).

Names are case-insensitive and ignore ``-``, ``_``, ``.`` and spaces ("CREMA-D" == "crema_d" ==
"cremad"). Everything that names a corpus (loaders, tasks, ``trained_on`` checks, the LOCO
benchmark, ``data.sources`` in a run config) resolves it here.

The caption vocabulary maps a corpus' label words to one shared vocabulary for training captions
(adjectives, so "speaker is angry" reads well in every template): when several corpora train one
model, EmoDB's "anger" and RAVDESS's "angry" become the same word. Labels not listed keep their
name; ``data.label_map`` in a run config changes or extends it (``docs/data.md``). Evaluation
never uses it: a scored corpus keeps its task's own prompt words.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import BadInputError
from . import aibo, alc, cremad, emodb, iemocap, manifest, msppodcast, ravdess, savee, sld, tess
from . import emovo, turevdb


@dataclass(frozen=True)
class CorpusInfo:
    """One corpus: ``name`` (canonical), its ``loader(root, **opts)``, ``aliases``, extra
    ``folders`` (folder names its release unpacks to), ``language`` and ``caption_words``."""

    name: str
    loader: Callable
    aliases: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()
    language: str | None = None
    caption_words: dict = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(self.name)

    def folder_keys(self) -> set[str]:
        return {key(n) for n in (self.name, *self.aliases, *self.folders)}


_LIST = [
    CorpusInfo("emodb", emodb.load, aliases=("berlin", "emo-db"), language="de",
               caption_words={"anger": "angry", "boredom": "bored", "disgust": "disgusted", "fear": "fearful",
                              "happiness": "happy", "sadness": "sad", "neutral": "neutral"}),
    CorpusInfo("ravdess", ravdess.load, folders=("audio_speech_actors_01-24",), language="en",
               caption_words={"disgust": "disgusted"}),  # neutral calm happy sad angry fearful surprised stay
    CorpusInfo("tess", tess.load, language="en",
               caption_words={"disgust": "disgusted", "fear": "fearful", "pleasant surprise": "surprised"}),
    CorpusInfo("crema-d", cremad.load, aliases=("cremad",), language="en",
               caption_words={"disgust": "disgusted", "fear": "fearful"}),
    CorpusInfo("iemocap", iemocap.load, folders=("iemocap_full_release",), language="en"),
    CorpusInfo("msp-podcast", msppodcast.load, aliases=("msppodcast", "msp"), language="en"),
    CorpusInfo("aibo", aibo.load, aliases=("fau-aibo", "fauaibo", "is2009"), language="de"),
    CorpusInfo("alc", alc.load, aliases=("is2011", "intoxication"), language="de"),
    CorpusInfo("sld", sld.load, aliases=("is2012", "likability", "likeability"), language="de"),
    CorpusInfo("savee", savee.load, language="en",
               caption_words={"anger": "angry", "disgust": "disgusted", "fear": "fearful", "happiness": "happy",
                              "sadness": "sad", "surprise": "surprised"}),
    CorpusInfo("emovo", emovo.load, language="it",
               caption_words={"anger": "angry", "disgust": "disgusted", "fear": "fearful", "joy": "happy",
                              "sadness": "sad", "surprise": "surprised"}),  # neutral stays
    CorpusInfo("turevdb", turevdb.load, aliases=("tur-ev-db", "turev"), folders=("Sound Source",),
               language="tr"),  # angry calm happy sad stay
    CorpusInfo("manifest", manifest.load, aliases=("csv", "jsonl", "tsv")),
]

#: Canonical corpus name -> :class:`CorpusInfo`.
CORPORA: dict[str, CorpusInfo] = {c.name: c for c in _LIST}


def key(name: str) -> str:
    """Comparison key of a name: lower case, without ``-``, ``_``, ``.`` and spaces."""
    return re.sub(r"[\s_\-.]", "", str(name).lower())


_BY_KEY = {key(n): c for c in _LIST for n in (c.name, *c.aliases)}


def available() -> list[str]:
    """Registered corpus names, sorted."""
    return sorted(CORPORA)


def get_info(name: str) -> CorpusInfo:
    info = _BY_KEY.get(key(name))
    if info is None:
        raise BadInputError(name, f"unknown corpus; available: {', '.join(available())}")
    return info


def canonical(name: str) -> str:
    """Canonical corpus name (``"CREMA-D"`` -> ``"crema-d"``, ``"berlin"`` -> ``"emodb"``);
    names not registered (a manifest's own corpus name) are lower-cased."""
    info = _BY_KEY.get(key(name))
    return info.name if info is not None else str(name).lower()


def caption_words(name: str) -> dict[str, str]:
    """Label -> caption word of corpus ``name`` (empty for corpora not registered)."""
    info = _BY_KEY.get(key(name))
    return dict(info.caption_words) if info is not None else {}


def find_root(name: str, data_root, folders: tuple[str, ...] = ()) -> Path:
    """``<data_root>/<folder>`` of corpus ``name`` (its name, aliases or release folder names, and
    ``folders``, matched case-insensitively), or ``data_root`` itself when it is named so.
    FileNotFoundError (naming what was looked for) when there is none."""
    info = get_info(name)
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} is not a folder")
    wanted = info.folder_keys() | {key(f) for f in folders}
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as e:
        raise FileNotFoundError(f"cannot list {root}: {e}") from e
    for e in entries:
        if e.is_dir() and key(e.name) in wanted:
            return Path(e.path)
    if key(root.name) in wanted:
        return root
    names = (info.name, *info.aliases, *info.folders, *folders)
    raise FileNotFoundError(f"no folder for corpus {info.name!r} under {root} (expected one of: {', '.join(names)})")
