"""SAVEE (Surrey Audio-Visual Expressed Emotion), British English, four male speakers.

Accepted layouts (the root or one level down; ``.flac`` accepted):

* official: ``AudioData/<DC|JE|JK|KL>/<code><nn>.wav`` (e.g. ``AudioData/DC/sa01.wav``);
* flat copies: ``<SPK>_<code><nn>.wav`` in one folder (e.g. ``ALL/DC_sa01.wav``).

Codes: a anger, d disgust, f fear, h happiness, n neutral, sa sadness, su surprise.
Extra columns: ``emotion_code``, ``take`` (the number).
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import BadInputError, SkipLog
from ._common import check_root, child, dedupe_stems, emotion_table, list_audio, merge_map, missing, parsed, subdirs

CORPUS = "savee"
LANGUAGE = "en"
SPEAKERS = ("DC", "JE", "JK", "KL")
LABELS = {
    "a": "anger",
    "d": "disgust",
    "f": "fear",
    "h": "happiness",
    "n": "neutral",
    "sa": "sadness",
    "su": "surprise",
}

_CODE = re.compile(r"^(sa|su|a|d|f|h|n)(\d{2})$")
_FLAT = re.compile(r"^(DC|JE|JK|KL)_(.+)$", re.IGNORECASE)


def parse_code(token: str) -> tuple[str, int]:
    m = _CODE.match(token.lower())
    if not m:
        raise ValueError("malformed SAVEE file name (expected <code><nn>: a, d, f, h, n, sa, su + 2 digits)")
    return m.group(1), int(m.group(2))


def _speaker_dirs(d: Path) -> list[tuple[Path, str]]:
    return [(x, x.name.upper()) for x in subdirs(d) if x.name.upper() in SPEAKERS]


def _find(root: Path):
    """("official", [(dir, speaker)]) or ("flat", folder) or None."""
    for d in (root, *subdirs(root)):
        ad = child(d, "AudioData")
        if ad is not None and ad.is_dir() and _speaker_dirs(ad):
            return "official", _speaker_dirs(ad)
    for d in (root, *subdirs(root)):
        if _speaker_dirs(d):  # root is AudioData itself
            return "official", _speaker_dirs(d)
    for d in (root, *subdirs(root)):
        if any(_FLAT.match(f.stem) for f in list_audio(d)):
            return "flat", d
    return None


def load(root, *, with_duration: bool = True, skip_bad: bool = False, skips: SkipLog | None = None,
         label_map: dict | None = None) -> pd.DataFrame:
    """SAVEE table (480 files: 4 speakers x 120 in the official release).

    ``label_map`` overrides entries of :data:`LABELS` (code -> label).
    """
    root = check_root(root, CORPUS)
    found = _find(root)
    if found is None:
        raise missing(root, "'AudioData/<DC|JE|JK|KL>/' folders or '<SPK>_<code><nn>.wav' files", CORPUS)
    labels = merge_map(LABELS, label_map)
    skips = skips if skips is not None else SkipLog(skip=skip_bad)
    items: list[tuple[Path, str | None, str]] = []  # file, speaker, code token
    kind, where = found
    if kind == "official":
        for d, spk in where:
            items += [(f, spk, f.stem) for f in dedupe_stems(list_audio(d), skips)]
    else:
        for f in dedupe_stems(list_audio(where), skips):
            m = _FLAT.match(f.stem)
            items.append((f, m.group(1).upper() if m else None, m.group(2) if m else f.stem))
    def parse(item) -> dict:
        _, spk, token = item
        if spk is None:
            raise ValueError("malformed SAVEE file name (expected <SPK>_<code><nn>, e.g. DC_sa01)")
        code, take = parse_code(token)
        return {"speaker": spk, "emotion_code": code, "take": take}

    pairs = ((item[0], info) for item, info in parsed(items, parse, skips, file=lambda item: item[0]))
    return emotion_table(pairs, CORPUS, LANGUAGE, labels=labels, genders=dict.fromkeys(SPEAKERS, "male"),
                         extras=("emotion_code", "take"), skips=skips, with_duration=with_duration,
                         nothing=BadInputError(root, "no SAVEE audio found"))
