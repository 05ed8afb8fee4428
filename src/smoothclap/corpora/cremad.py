"""CREMA-D (Crowd-sourced Emotional Multimodal Actors Dataset), English, 91 actors.

Official layout: ``<root>/AudioWAV/SSSS_TTT_EMO_LV.wav`` (``.flac`` accepted) -- SSSS actor id
(1001..1091), TTT sentence code, EMO emotion code, LV level (LO, MD, HI, XX unspecified). Gender
comes from ``<root>/VideoDemographics.csv`` (columns ActorID, Sex) when it is there, else None.
The labels are the file names' acted emotions. Extra columns: ``emotion_code`` (raw, e.g. ``ANG``),
``sentence``, ``level``.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import BadInputError, SkipLog
from ..values import normalize_gender
from ._common import check_root, child, dedupe_stems, emotion_table, list_audio, locate, merge_map, missing, parsed

CORPUS = "crema-d"
LANGUAGE = "en"

#: Emotion code -> label.
LABELS = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified", "X": "unspecified"}
SENTENCES = {
    "IEO": "it's eleven o'clock",
    "TIE": "that is exactly what happened",
    "IOM": "i'm on my way to the meeting",
    "IWW": "i wonder what this is about",
    "TAI": "the airplane is almost full",
    "MTI": "maybe tomorrow it will be cold",
    "IWL": "i would like a new alarm clock",
    "ITH": "i think i have a doctor's appointment",
    "DFA": "don't forget a jacket",
    "ITS": "i think i've seen this before",
    "TSI": "the surface is slick",
    "WSI": "we'll stop in a couple of minutes",
}

_NAME = re.compile(r"^(\d{4})_([A-Za-z]{3})_([A-Za-z]{3})_([A-Za-z]{1,2})$")


def parse_name(stem: str) -> dict:
    m = _NAME.match(stem)
    if not m:
        raise ValueError("malformed CREMA-D file name (expected SSSS_TTT_EMO_LV, e.g. 1001_DFA_ANG_XX)")
    actor, sent, emo, lvl = m.group(1), m.group(2).upper(), m.group(3).upper(), m.group(4).upper()
    if emo not in LABELS:
        raise ValueError(f"unknown emotion code (got {m.group(3)!r}; expected one of {', '.join(LABELS)})")
    if lvl not in LEVELS:
        raise ValueError(f"unknown level (got {m.group(4)!r}; expected LO, MD, HI or XX)")
    if sent not in SENTENCES:
        raise ValueError(f"unknown sentence code (got {m.group(2)!r})")
    return {"speaker": actor, "sentence": sent, "emotion_code": emo, "level": LEVELS[lvl]}


def read_demographics(path: Path) -> dict[str, str | None]:
    """``VideoDemographics.csv`` -> {actor id: "male" / "female" / None}."""
    try:
        df = pd.read_csv(path, dtype=str, encoding="utf-8-sig", sep=None, engine="python")
    except Exception as e:
        raise BadInputError(path, f"unreadable demographics table ({e.__class__.__name__}: {e})") from None
    cols = {c.strip().lower(): c for c in df.columns}
    miss = [c for c in ("actorid", "sex") if c not in cols]
    if miss:
        names = {"actorid": "ActorID", "sex": "Sex"}
        raise BadInputError(path, f"missing column(s): {', '.join(names[c] for c in miss)}")
    return {str(a).strip(): normalize_gender(s) for a, s in zip(df[cols["actorid"]], df[cols["sex"]])}


def load(root, *, with_duration: bool = True, skip_bad: bool = False, skips: SkipLog | None = None,
         label_map: dict | None = None, demographics: str | Path | None = None) -> pd.DataFrame:
    """CREMA-D table (7442 clips, 91 actors, 6 labels in the official release).

    ``demographics``: path of VideoDemographics.csv if it is not in the root.
    ``label_map`` overrides entries of :data:`LABELS` (emotion code -> label).
    """
    root = check_root(root, CORPUS)
    base = locate(root, lambda d: (a := child(d, "AudioWAV")) is not None and a.is_dir())
    if base is None:
        raise missing(root, "folder 'AudioWAV/'", CORPUS)
    audio_dir = child(base, "AudioWAV")
    if demographics is not None:
        demo_path = Path(demographics)
        if not demo_path.is_file():
            raise BadInputError(demo_path, "demographics file not found")
    else:
        demo_path = child(base, "VideoDemographics.csv")
    genders = read_demographics(demo_path) if demo_path is not None else {}
    labels = merge_map(LABELS, label_map)
    skips = skips if skips is not None else SkipLog(skip=skip_bad)
    files = dedupe_stems(list_audio(audio_dir), skips)
    if not files:
        raise BadInputError(audio_dir, "no .wav or .flac files in the CREMA-D AudioWAV folder")
    found = parsed(files, lambda f: parse_name(f.stem), skips)
    return emotion_table(found, CORPUS, LANGUAGE, labels=labels, genders=genders,
                         extras=("emotion_code", "sentence", "level"), skips=skips, with_duration=with_duration)
