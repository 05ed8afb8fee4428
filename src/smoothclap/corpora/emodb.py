"""EmoDB (Berlin Database of Emotional Speech), German.

Official layout: ``<root>/wav/SSTTTEV.wav`` -- SS speaker (2 digits), TTT text id (``a01``..``b10``),
E emotion letter, V version letter; e.g. ``03a01Fa.wav``. ``.flac`` is accepted as well.
Extra columns: ``text`` (text id), ``version``, ``emotion_code`` (the letter).
"""
from __future__ import annotations

import re

import pandas as pd

from ..errors import BadInputError, SkipLog
from ._common import check_root, child, dedupe_stems, emotion_table, list_audio, locate, merge_map, missing, parsed

CORPUS = "emodb"
LANGUAGE = "de"

#: Emotion letter (6th character) -> label.
LABELS = {
    "W": "anger",  # Wut
    "L": "boredom",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fear",  # Angst
    "F": "happiness",  # Freude
    "T": "sadness",  # Trauer
    "N": "neutral",
}

#: Official speaker list (erklaerung.txt): speaker id -> gender.
SPEAKERS = {
    "03": "male",
    "08": "female",
    "09": "female",
    "10": "male",
    "11": "male",
    "12": "male",
    "13": "female",
    "14": "female",
    "15": "male",
    "16": "female",
}

_NAME = re.compile(r"^(\d{2})([ab]\d{2})([A-Z])([a-z])$")


def parse_name(stem: str) -> dict:
    """``03a01Fa`` -> fields; ValueError (with the reason) if the name is not an EmoDB name."""
    m = _NAME.match(stem)
    if not m:
        raise ValueError("malformed EmoDB file name (expected SSTTTEV, e.g. 03a01Fa)")
    spk, text, emo, version = m.groups()
    if emo not in LABELS:
        raise ValueError(f"unknown emotion letter (got {emo!r}; expected one of {''.join(LABELS)})")
    if spk not in SPEAKERS:
        raise ValueError(f"unknown speaker (got {spk!r}; EmoDB speakers: {', '.join(SPEAKERS)})")
    return {"speaker": spk, "text": text, "emotion_code": emo, "version": version}


def load(root, *, with_duration: bool = True, skip_bad: bool = False, skips: SkipLog | None = None,
         label_map: dict | None = None) -> pd.DataFrame:
    """EmoDB table (535 files, 10 speakers, 7 labels in the official release).

    ``label_map`` overrides entries of :data:`LABELS` (emotion letter -> label).
    """
    root = check_root(root, CORPUS)
    base = locate(root, lambda d: (w := child(d, "wav")) is not None and w.is_dir())
    if base is None:
        raise missing(root, "folder 'wav/'", CORPUS)
    wav_dir = child(base, "wav")
    labels = merge_map(LABELS, label_map)
    skips = skips if skips is not None else SkipLog(skip=skip_bad)
    files = dedupe_stems(list_audio(wav_dir), skips)
    if not files:
        raise BadInputError(wav_dir, "no .wav or .flac files in the EmoDB wav folder")
    found = parsed(files, lambda f: parse_name(f.stem), skips)
    return emotion_table(found, CORPUS, LANGUAGE, labels=labels, genders=SPEAKERS,
                         extras=("text", "version", "emotion_code"), skips=skips, with_duration=with_duration)
