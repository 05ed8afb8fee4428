"""RAVDESS (Ryerson Audio-Visual Database of Emotional Speech and Song), audio-only speech, English.

Official layout: ``<root>/Actor_NN/MM-VV-EE-II-SS-RR-AA.wav`` (``.flac`` accepted). Fields: modality
(03 audio-only), vocal channel (01 speech, 02 song), emotion, intensity (01 normal, 02 strong),
statement (01 "kids are talking by the door", 02 "dogs are sitting by the door"), repetition, actor
(odd male, even female). The speech and song archives unpack into ``Audio_Speech_Actors_01-24/`` and
``Audio_Song_Actors_01-24/``; ``Actor_NN`` folders are searched in the root and one level down.
Song files are left out unless ``include_song=True`` (they are not bad input).
Extra columns, in this order: ``vocal_channel``, ``emotion_code``, ``intensity``, ``statement``, ``repetition``.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import BadInputError, SkipLog
from ._common import check_root, emotion_table, log, merge_map, missing, parsed_folders, subdirs

CORPUS = "ravdess"
LANGUAGE = "en"

#: Field 3 (emotion code) -> label.
LABELS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
INTENSITY = {"01": "normal", "02": "strong"}
STATEMENTS = {"01": "kids are talking by the door", "02": "dogs are sitting by the door"}
CHANNELS = {"01": "speech", "02": "song"}
#: Actor id (field 7) -> gender: odd male, even female.
GENDERS = {f"{n:02d}": "male" if n % 2 else "female" for n in range(1, 25)}

_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_ACTOR_DIR = re.compile(r"^actor_(\d{2})$", re.IGNORECASE)


def parse_name(stem: str) -> dict:
    m = _NAME.match(stem)
    if not m:
        raise ValueError("malformed RAVDESS file name (expected 7 two-digit fields MM-VV-EE-II-SS-RR-AA)")
    mod, chan, emo, inten, stmt, rep, actor = m.groups()
    if mod != "03":
        raise ValueError(f"modality is not audio-only (got {mod}; expected 03)")
    if chan not in CHANNELS:
        raise ValueError(f"unknown vocal channel (got {chan}; expected 01 speech or 02 song)")
    if emo not in LABELS:
        raise ValueError(f"unknown emotion code (got {emo}; expected 01..08)")
    if inten not in INTENSITY:
        raise ValueError(f"unknown intensity (got {inten}; expected 01 or 02)")
    if stmt not in STATEMENTS:
        raise ValueError(f"unknown statement (got {stmt}; expected 01 or 02)")
    if rep not in ("01", "02"):
        raise ValueError(f"unknown repetition (got {rep}; expected 01 or 02)")
    if not 1 <= int(actor) <= 24:
        raise ValueError(f"actor out of range (got {actor}; expected 01..24)")
    return {
        "vocal_channel": CHANNELS[chan],
        "emotion_code": emo,
        "intensity": INTENSITY[inten],
        "statement": STATEMENTS[stmt],
        "repetition": int(rep),
        "actor": actor,
    }


def _parse_in_folder(f: Path, folder_actor: str) -> dict:
    """:func:`parse_name` with the actor as ``speaker``; it must be its folder's."""
    info = parse_name(f.stem)
    if info["actor"] != folder_actor:
        raise ValueError(f"actor does not match folder (field {info['actor']}, folder {f.parent.name})")
    info["speaker"] = info.pop("actor")
    return info


def _actor_dirs(root: Path) -> list[Path]:
    """``Actor_NN`` folders in ``root`` and one level down (speech and song archives side by side)."""
    out = [d for d in subdirs(root) if _ACTOR_DIR.match(d.name)]
    for d in subdirs(root):
        if not _ACTOR_DIR.match(d.name):
            out.extend(x for x in subdirs(d) if _ACTOR_DIR.match(x.name))
    return out


def load(root, *, with_duration: bool = True, skip_bad: bool = False, skips: SkipLog | None = None,
         include_song: bool = False, label_map: dict | None = None) -> pd.DataFrame:
    """RAVDESS speech table (1440 files, 24 actors x 60, 8 labels in the official release).

    ``label_map`` overrides entries of :data:`LABELS` (two-digit code -> label).
    """
    root = check_root(root, CORPUS)
    actor_dirs = _actor_dirs(root)
    if not actor_dirs:
        raise missing(root, "'Actor_NN' folders", CORPUS)
    labels = merge_map(LABELS, label_map)
    skips = skips if skips is not None else SkipLog(skip=skip_bad)
    found, n_song, seen = [], 0, {}
    folders = [(d, _ACTOR_DIR.match(d.name).group(1)) for d in actor_dirs]
    for f, info in parsed_folders(folders, _parse_in_folder, skips):
        if f.stem in seen:  # the same take in two folders (e.g. an archive unpacked twice)
            skips.handle(BadInputError(f, f"duplicate recording (of {seen[f.stem]})"))
            continue
        seen[f.stem] = f
        if info["vocal_channel"] == "song" and not include_song:
            n_song += 1
            continue
        found.append((f, info))
    if n_song:
        log.info("ravdess: left out %d song file(s) (include_song=False)", n_song)
    nothing = BadInputError(root, "no RAVDESS speech audio (.wav/.flac) found in the Actor_NN folders")
    return emotion_table(found, CORPUS, LANGUAGE, labels=labels, genders=GENDERS,
                         extras=("vocal_channel", "emotion_code", "intensity", "statement", "repetition"),
                         skips=skips, with_duration=with_duration, nothing=nothing)
