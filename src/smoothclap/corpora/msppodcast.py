"""MSP-Podcast, English (the paper's training corpus).

Official release layout (the root or one level down)::

    Audios/*.wav                         (.flac accepted; sub-folders are searched too)
    Labels/labels_consensus.csv          (older releases: labels_concensus.csv)

``labels_consensus.csv`` columns: FileName, EmoClass (A S H U F D C N O X), EmoAct, EmoVal, EmoDom,
SpkrID, Gender, Split_Set (Train, Development, Test1, Test2, ...). ``X`` (no agreement) is left out
unless ``keep_no_agreement=True``; split is the lower-cased Split_Set (``train``, ``development``,
``test1``, ...). SpkrID / Gender "Unknown" become None. Extra columns: ``emotion_code``,
``arousal``, ``valence``, ``dominance``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import BadInputError, SkipLog
from ..values import is_missing, normalize_gender
from ._common import check_root, child, finish, list_audio, locate, log, merge_map, missing, subdirs

CORPUS = "msp-podcast"
LANGUAGE = "en"

#: EmoClass code -> label.
LABELS = {
    "A": "angry",
    "S": "sad",
    "H": "happy",
    "U": "surprise",
    "F": "fear",
    "D": "disgust",
    "C": "contempt",
    "N": "neutral",
    "O": "other",
    "X": "no agreement",
}
LABEL_FILES = ("labels_consensus.csv", "labels_concensus.csv")
REQUIRED = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")


def _label_file(base: Path) -> Path | None:
    lab = child(base, "Labels")
    if lab is None or not lab.is_dir():
        return None
    for d in (lab, *subdirs(lab)):  # some unpacked copies nest Labels/Labels/
        for name in LABEL_FILES:
            p = child(d, name)
            if p is not None and p.is_file():
                return p
    return None


def _unknown_to_none(v) -> str | None:
    """A label-table cell as text; None when missing or a placeholder (``Unknown``, ``nan``, ``none``)."""
    if is_missing(v):
        return None
    s = str(v).strip()
    return None if s.lower() in ("unknown", "nan", "none") else s


def read_labels(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, encoding="utf-8-sig", keep_default_na=False)
    except Exception as e:
        raise BadInputError(path, f"unreadable label table ({e.__class__.__name__}: {e})") from None
    df.columns = [c.strip() for c in df.columns]
    miss = [c for c in REQUIRED if c not in df.columns]
    if miss:
        raise BadInputError(path, f"missing column(s): {', '.join(miss)}")
    return df


def load(
    root,
    *,
    keep_no_agreement: bool = False,
    with_duration: bool = True,
    skip_bad: bool = False,
    skips: SkipLog | None = None,
    label_map: dict | None = None,
) -> pd.DataFrame:
    """MSP-Podcast table, all partitions (filter on ``split``).

    ``label_map`` overrides entries of :data:`LABELS` (EmoClass code -> label).
    """
    root = check_root(root, CORPUS)
    base = locate(root, lambda d: (a := child(d, "Audios")) is not None and a.is_dir())
    if base is None:
        raise missing(root, "folder 'Audios/'", CORPUS)
    label_path = _label_file(base)
    if label_path is None:
        raise BadInputError(base / "Labels" / LABEL_FILES[0], "MSP-Podcast label file not found")
    table = read_labels(label_path)
    audio_dir = child(base, "Audios")
    audio: dict[str, Path] = {}
    for f in list_audio(audio_dir, recursive=True):
        audio.setdefault(f.stem, f)
    labels = merge_map(LABELS, label_map)
    skips = skips if skips is not None else SkipLog(skip=skip_bad)
    rows, n_x = [], 0
    for i, r in enumerate(table.itertuples(index=False), 2):
        name = str(r.FileName).strip()
        code = str(r.EmoClass).strip().upper()
        if not name:
            skips.handle(BadInputError(label_path, f"empty FileName (line {i})"))
            continue
        if code not in labels:
            skips.handle(BadInputError(label_path, f"unknown EmoClass (line {i}: {r.EmoClass!r} for {name})"))
            continue
        if code == "X" and not keep_no_agreement:
            n_x += 1
            continue
        f = audio.get(Path(name).stem)
        if f is None:
            skips.handle(BadInputError(audio_dir / name, "audio file not found (listed in labels)"))
            continue
        try:
            act, val, dom = (float(x) if str(x).strip() else float("nan") for x in (r.EmoAct, r.EmoVal, r.EmoDom))
        except ValueError:
            skips.handle(BadInputError(label_path, f"non-numeric EmoAct/EmoVal/EmoDom (line {i}: {name})"))
            continue
        split = _unknown_to_none(r.Split_Set)
        rows.append(
            {
                "file": f,
                "label": labels[code],
                "speaker": _unknown_to_none(r.SpkrID),
                "gender": normalize_gender(r.Gender),
                "split": split.lower() if split else None,
                "emotion_code": code,
                "arousal": act,
                "valence": val,
                "dominance": dom,
            }
        )
    if n_x:
        log.info("msp-podcast: left out %d no-agreement (X) clip(s)", n_x)
    return finish(rows, CORPUS, LANGUAGE, skips, with_duration)
