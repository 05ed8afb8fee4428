"""TurEV-DB (Turkish Emotional Voice Database), Turkish single words, 6 speakers.

Official layout: ``<root>/Sound Source/{Angry,Calm,Happy,Sad}/<speaker>_<code>_<word>.wav``
(``.flac`` accepted; folder names matched case-insensitively), e.g.
``Sound Source/Angry/1157_kz_acik.wav``. The folder is the label; the code (kz angry, sk calm,
mt happy, hl sad) must agree with it. Speaker: four digits (the release's 1157 1234 1358 1984 6783
7895); word: lower-case ASCII letters, optionally followed by digits (the release's
``Sad/7895_hl_ogul1``). The root may be the folder holding ``Sound Source`` or ``Sound Source``
itself. The release gives no speaker genders: ``gender`` is None.
Extra columns: ``word`` (as written in the file name), ``emotion_code``.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import BadInputError, SkipLog
from ._common import check_root, emotion_table, locate, merge_map, missing, one_copy, parsed_folders, subdirs

CORPUS = "turevdb"
LANGUAGE = "tr"

#: Emotion code (second token) -> label. Configurable via ``label_map``.
LABELS = {
    "kz": "angry",  # kızgın
    "sk": "calm",  # sakin
    "mt": "happy",  # mutlu
    "hl": "sad",  # hüzünlü
}
#: Emotion folder (lower case) -> emotion code.
FOLDERS = {"angry": "kz", "calm": "sk", "happy": "mt", "sad": "hl"}
#: Speaker ids of the release.
SPEAKERS = ("1157", "1234", "1358", "1984", "6783", "7895")

_NAME = re.compile(r"^(\d{4})_([a-z]{2})_([a-z]+\d*)$")


def parse_name(stem: str) -> dict:
    """``1157_kz_acik`` -> fields; ValueError (with the reason) if the name is not a TurEV-DB name."""
    m = _NAME.match(stem)
    if not m:
        raise ValueError("malformed TurEV-DB file name (expected <speaker>_<code>_<word>, e.g. 1157_kz_acik)")
    spk, code, word = m.groups()
    if code not in LABELS:
        raise ValueError(f"unknown emotion code (got {code!r}; expected one of {', '.join(LABELS)})")
    if spk not in SPEAKERS:
        raise ValueError(f"unknown speaker (got {spk!r}; TurEV-DB speakers: {', '.join(SPEAKERS)})")
    return {"speaker": spk, "word": word, "emotion_code": code}


def _parse_in_folder(f: Path, folder_code: str) -> dict:
    """:func:`parse_name`, and the file's code must be its folder's."""
    info = parse_name(f.stem)
    if info["emotion_code"] != folder_code:
        raise ValueError(f"emotion code disagrees with folder (file {info['emotion_code']!r}, folder {f.parent.name})")
    return info


def _emotion_dirs(folder: Path) -> list[tuple[Path, str]]:
    """``(folder, code)`` of the emotion folders (Angry, Calm, Happy, Sad; any case) in ``folder``."""
    return [(d, FOLDERS[d.name.lower()]) for d in subdirs(folder) if d.name.lower() in FOLDERS]


def _base(root: Path) -> Path | None:
    """The folder holding the emotion folders: ``root``, ``root/Sound Source`` or another child."""
    return locate(root, lambda d: bool(_emotion_dirs(d)))


def load(root, *, with_duration: bool = True, skip_bad: bool = False, skips: SkipLog | None = None,
         label_map: dict | None = None) -> pd.DataFrame:
    """TurEV-DB table (1735 files, 6 speakers, 4 labels in the official release).

    ``label_map`` overrides entries of :data:`LABELS` (emotion code -> label). ``skips``: the
    :class:`SkipLog` that collects skipped bad inputs (default: a new one, skipping if ``skip_bad``).
    """
    root = check_root(root, CORPUS)
    base = _base(root)
    if base is None:
        raise missing(root, "folder 'Sound Source/' with Angry, Calm, Happy, Sad", CORPUS)
    dirs = _emotion_dirs(base)
    one_copy([(d, LABELS[code]) for d, code in dirs], "TurEV-DB")
    labels = merge_map(LABELS, label_map)
    skips = skips if skips is not None else SkipLog(skip=skip_bad)
    found = parsed_folders(dirs, _parse_in_folder, skips)
    return emotion_table(found, CORPUS, LANGUAGE, labels=labels, genders={}, extras=("word", "emotion_code"),
                         skips=skips, with_duration=with_duration,
                         nothing=BadInputError(base, "TurEV-DB emotion folders hold no .wav or .flac files"))
