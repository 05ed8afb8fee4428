"""EMOVO (Italian emotional speech corpus; Costantini et al., LREC 2014), Italian, 6 actors.

Official layout: ``<root>/{f1,f2,f3,m1,m2,m3}/<emo>-<spk>-<sentence>.wav`` (``.flac`` accepted),
e.g. ``f1/dis-f1-b1.wav``: emotion code (dis disgust, gio joy, neu neutral, pau fear, rab anger,
sor surprise, tri sadness), speaker (its first letter is the gender: f female, m male; it must
match its folder), sentence (b1-b3, d1-d2, l1-l4, n1-n5: 14 sentences). The root may be the folder
holding the actor folders (the release's ``EMOVO/``) or one level above it.
Extra columns: ``sentence`` (sentence code), ``emotion_code``.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import BadInputError, SkipLog
from ._common import check_root, emotion_table, locate, merge_map, missing, one_copy, parsed_folders, subdirs

CORPUS = "emovo"
LANGUAGE = "it"

#: Emotion code (first token) -> label.
LABELS = {
    "dis": "disgust",  # disgusto
    "gio": "joy",  # gioia
    "neu": "neutral",  # neutro
    "pau": "fear",  # paura
    "rab": "anger",  # rabbia
    "sor": "surprise",  # sorpresa
    "tri": "sadness",  # tristezza
}

#: Speaker id (second token, and the actor folder's name) -> gender (the id's first letter).
SPEAKERS = {
    "f1": "female",
    "f2": "female",
    "f3": "female",
    "m1": "male",
    "m2": "male",
    "m3": "male",
}

#: The 14 sentence codes of the release (third token).
SENTENCES = ("b1", "b2", "b3", "d1", "d2", "l1", "l2", "l3", "l4", "n1", "n2", "n3", "n4", "n5")

_NAME = re.compile(r"^([a-z]+)-([a-z]\d)-([a-z]\d)$", re.IGNORECASE)


def parse_name(stem: str) -> dict:
    """``dis-f1-b1`` -> fields; ValueError (with the reason) if the name is not an EMOVO name."""
    m = _NAME.match(stem)
    if not m:
        raise ValueError("malformed EMOVO file name (expected <emo>-<spk>-<sentence>, e.g. dis-f1-b1)")
    emo, spk, sentence = (g.lower() for g in m.groups())
    if emo not in LABELS:
        raise ValueError(f"unknown emotion code (got {m.group(1)!r}; expected one of {', '.join(LABELS)})")
    if spk not in SPEAKERS:
        raise ValueError(f"unknown speaker (got {m.group(2)!r}; EMOVO speakers: {', '.join(SPEAKERS)})")
    if sentence not in SENTENCES:
        raise ValueError(f"unknown sentence (got {m.group(3)!r}; EMOVO sentences: {', '.join(SENTENCES)})")
    return {"speaker": spk, "sentence": sentence, "emotion_code": emo}


def _parse_in_folder(f: Path, folder_speaker: str) -> dict:
    """:func:`parse_name`, and the file's speaker must be its folder's."""
    info = parse_name(f.stem)
    if info["speaker"] != folder_speaker:
        raise ValueError(f"speaker does not match folder (file {info['speaker']!r}, folder {f.parent.name})")
    return info


def _actor_dirs(folder: Path) -> list[tuple[Path, str]]:
    """``(folder, speaker)`` of the actor folders (``f1`` .. ``m3``, any case) in ``folder``."""
    return [(d, d.name.lower()) for d in subdirs(folder) if d.name.lower() in SPEAKERS]


def load(root, *, with_duration: bool = True, skip_bad: bool = False, skips: SkipLog | None = None,
         label_map: dict | None = None) -> pd.DataFrame:
    """EMOVO table (588 files: 6 actors x 7 labels x 14 sentences in the official release).

    ``label_map`` overrides entries of :data:`LABELS` (emotion code -> label). ``skips``: the
    :class:`SkipLog` that collects skipped bad inputs (default: a new one, skipping if ``skip_bad``).
    """
    root = check_root(root, CORPUS)
    base = locate(root, lambda d: bool(_actor_dirs(d)))
    if base is None:
        raise missing(root, "actor folders 'f1'..'f3', 'm1'..'m3'", CORPUS)
    dirs = _actor_dirs(base)
    one_copy([(d, f"speaker {spk}") for d, spk in dirs], "EMOVO")
    labels = merge_map(LABELS, label_map)
    skips = skips if skips is not None else SkipLog(skip=skip_bad)
    found = parsed_folders(dirs, _parse_in_folder, skips)
    return emotion_table(found, CORPUS, LANGUAGE, labels=labels, genders=SPEAKERS, extras=("sentence", "emotion_code"),
                         skips=skips, with_duration=with_duration,
                         nothing=BadInputError(base, "EMOVO actor folders hold no .wav or .flac files"))
