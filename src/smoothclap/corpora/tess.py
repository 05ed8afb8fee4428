"""TESS (Toronto Emotional Speech Set), English, two female speakers (OAF older, YAF younger).

Official layout: ``<root>/<SPK>_<emotion>/<SPK>_<word>_<emotion>.wav`` (``.flac`` accepted). Folder
names vary between copies (``OAF_Fear``, ``OAF_Pleasant_surprise``, ``YAF_pleasant_surprised``); the
folders may sit one level down (e.g. ``TESS Toronto emotional speech set data/``). The speaker comes
from the folder: the release's file ``OAF_neutral/OA_bite_neutral`` carries the prefix typo ``OA_``.
The label comes from the file name's last token and must agree with the folder's emotion.
Extra columns: ``word``, ``emotion_code`` (the file name's token, e.g. ``ps``).
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import BadInputError, SkipLog
from ._common import check_root, emotion_table, merge_map, missing, one_copy, parsed_folders, subdirs

CORPUS = "tess"
LANGUAGE = "en"

#: Emotion token (last token of the file name) -> label. Configurable via ``label_map``.
LABELS = {
    "angry": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happy",
    "neutral": "neutral",
    "ps": "pleasant surprise",
    "sad": "sad",
}
SPEAKERS = ("OAF", "YAF")

#: Folder spellings seen in copies -> emotion token.
_FOLDER_EMOTION = {
    "pleasant_surprise": "ps",
    "pleasant_surprised": "ps",
    "pleasant surprise": "ps",
    "pleasantsurprise": "ps",
    "surprise": "ps",
    "surprised": "ps",
}
_DIR = re.compile(r"^(OAF|YAF)[_ ](.+)$", re.IGNORECASE)


def folder_info(name: str) -> tuple[str, str] | None:
    """``OAF_Pleasant_surprise`` -> ("OAF", "ps"); None if not a TESS emotion folder."""
    m = _DIR.match(name)
    if not m:
        return None
    emo = m.group(2).strip().lower()
    emo = _FOLDER_EMOTION.get(emo, emo)
    if emo not in LABELS:
        return None
    return m.group(1).upper(), emo


def parse_name(stem: str, folder_speaker: str) -> dict:
    parts = stem.split("_")
    if len(parts) < 3 or not all(parts):
        raise ValueError("malformed TESS file name (expected <SPK>_<word>_<emotion>)")
    prefix, emo = parts[0].upper(), parts[-1].lower()
    if not folder_speaker.startswith(prefix) or len(prefix) < 2:
        raise ValueError(f"speaker prefix does not match folder (prefix {parts[0]!r}, folder speaker {folder_speaker})")
    if emo not in LABELS:
        raise ValueError(f"unknown emotion (got {parts[-1]!r}; expected one of {', '.join(LABELS)})")
    return {"word": "_".join(parts[1:-1]).lower(), "emotion_code": emo}


def _parse_in_folder(f: Path, folder_speaker: str, folder_emotion: str) -> dict:
    """:func:`parse_name` with the folder's ``speaker``; the file's emotion must be its folder's."""
    info = parse_name(f.stem, folder_speaker)
    if info["emotion_code"] != folder_emotion:
        raise ValueError(f"file emotion disagrees with folder (file {info['emotion_code']!r}, "
                         f"folder {f.parent.name})")
    return {"speaker": folder_speaker, **info}


def _emotion_dirs(root: Path) -> list[tuple[Path, str, str]]:
    def find(d: Path):
        return [(x, *fi) for x in subdirs(d) if (fi := folder_info(x.name))]

    found = find(root)
    if not found:
        for d in subdirs(root):
            found.extend(find(d))
    return found


def load(root, *, with_duration: bool = True, skip_bad: bool = False, skips: SkipLog | None = None,
         label_map: dict | None = None) -> pd.DataFrame:
    """TESS table (2800 files: 2 speakers x 7 labels x 200 words in the official release).

    ``label_map`` overrides entries of :data:`LABELS` (e.g. ``{"ps": "surprised"}``).
    """
    root = check_root(root, CORPUS)
    dirs = _emotion_dirs(root)
    if not dirs:
        raise missing(root, "'<OAF|YAF>_<emotion>' folders", CORPUS)
    one_copy([(d, f"{spk} {emo}") for d, spk, emo in dirs], "TESS")
    labels = merge_map(LABELS, label_map)
    skips = skips if skips is not None else SkipLog(skip=skip_bad)
    found = parsed_folders(dirs, _parse_in_folder, skips)
    return emotion_table(found, CORPUS, LANGUAGE, labels=labels, genders=dict.fromkeys(SPEAKERS, "female"),
                         extras=("word", "emotion_code"), skips=skips, with_duration=with_duration,
                         nothing=BadInputError(root, "TESS folders hold no .wav or .flac files"))
