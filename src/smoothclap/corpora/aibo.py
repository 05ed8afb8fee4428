"""FAU Aibo Emotion Corpus, INTERSPEECH 2009 Emotion Challenge release, German (children).

Official layout (the root or one level down)::

    wav/<chunk id>.wav                                         (.flac accepted)
    labels/IS2009EmotionChallenge/chunk_labels_2cl_corpus.txt
    labels/IS2009EmotionChallenge/chunk_labels_5cl_corpus.txt

Label files: one chunk per line, whitespace-separated ``<chunk id> <class> <confidence>``, e.g.
``Ohm_01_001_00 NEG 1.0``. ``classes=2`` (default): labels ``idl`` (idle) and ``neg`` (negative),
the lower-cased official codes; ``classes=5``: A angry, E emphatic, N neutral, P motherese (the
challenge calls the class "Positive": motherese and joyful), R rest. school = ``Ohm`` or ``Mont``
(the id prefix); split: Ohm = train, Mont = test (the challenge's partition); speaker = the id up to
its second underscore (``Ohm_01``); gender is not in the release (None).
Extra columns: ``emotion_code``, ``confidence``, ``school``.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import BadInputError, SkipLog
from ._common import check_root, child, dedupe_stems, finish, list_audio, locate, merge_map, missing

CORPUS = "aibo"
LANGUAGE = "de"

LABELS_2 = {"IDL": "idl", "NEG": "neg"}
LABELS_5 = {"A": "angry", "E": "emphatic", "N": "neutral", "P": "motherese", "R": "rest"}
SCHOOL_SPLIT = {"Ohm": "train", "Mont": "test"}
LABEL_DIR = ("labels", "IS2009EmotionChallenge")

_ID = re.compile(r"^(Ohm|Mont)_(\d+)_.+$")


def label_file(base: Path, classes: int) -> Path:
    """The official path of the label file (``labels/IS2009EmotionChallenge/...``); copies that
    dropped the sub-folder (``labels/<file>``) or the whole folder (``<root>/<file>``) are accepted."""
    name = f"chunk_labels_{classes}cl_corpus.txt"
    official = base.joinpath(*LABEL_DIR, name)
    lab = child(base, "labels")
    candidates = [official]
    if lab is not None:
        sub = child(lab, LABEL_DIR[1])
        if sub is not None:
            candidates.append(sub / name)
        candidates.append(lab / name)
    candidates.append(base / name)
    for c in candidates:
        if c.is_file():
            return c
    raise BadInputError(official, f"FAU Aibo {classes}-class label file not found")


def read_labels(path: Path, codes: dict, skips: SkipLog) -> list[tuple[str, str, float]]:
    """``(chunk id, class code, confidence)`` per line; a header line is tolerated."""
    out, first = [], True
    text = path.read_text(encoding="utf-8", errors="replace")
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        is_header = first and not _ID.match(parts[0]) and (len(parts) < 2 or parts[1].upper() not in codes)
        first = False
        if is_header:
            continue  # a header line ("file class confidence")
        try:
            if len(parts) not in (2, 3):
                raise ValueError(f"expected '<id> <class> <confidence>', got {len(parts)} fields")
            conf = float(parts[2]) if len(parts) == 3 else float("nan")
        except ValueError as e:
            skips.handle(BadInputError(path, f"malformed label line ({n}: {e})"))
            continue
        code = parts[1].upper()
        if code not in codes:
            why = f"unknown class code (line {n}: {parts[1]!r}; expected {', '.join(codes)})"
            skips.handle(BadInputError(path, why))
            continue
        out.append((parts[0], code, conf))
    return out


def load(
    root,
    *,
    classes: int | str = 2,
    with_duration: bool = True,
    skip_bad: bool = False,
    skips: SkipLog | None = None,
    label_map: dict | None = None,
) -> pd.DataFrame:
    """FAU Aibo table (18216 chunks: Ohm 9959 train, Mont 8257 test in the official release).

    ``label_map`` overrides entries of the class-code -> label map (e.g. ``{"IDL": "idle"}``).
    """
    root = check_root(root, CORPUS)
    try:
        ncls = int(str(classes).lower().replace("cl", ""))
    except ValueError:
        ncls = -1
    if ncls not in (2, 5):
        raise ValueError(f"classes must be 2 or 5, not {classes!r}")
    base = locate(root, lambda d: (w := child(d, "wav")) is not None and w.is_dir())
    if base is None:
        raise missing(root, "folder 'wav/'", CORPUS)
    codes = LABELS_2 if ncls == 2 else LABELS_5
    labels = merge_map(codes, label_map)
    path = label_file(base, ncls)
    skips = skips if skips is not None else SkipLog(skip=skip_bad)
    wav_dir = child(base, "wav")
    audio = {f.stem: f for f in dedupe_stems(list_audio(wav_dir), skips)}
    if not audio:
        raise BadInputError(wav_dir, "no .wav or .flac files in the FAU Aibo wav folder")
    rows, seen = [], set()
    for cid, code, conf in read_labels(path, codes, skips):
        m = _ID.match(cid)
        if not m:
            skips.handle(BadInputError(path, f"malformed chunk id ({cid!r}; expected Ohm_NN_... or Mont_NN_...)"))
            continue
        if cid in seen:
            skips.handle(BadInputError(path, f"duplicate chunk id ({cid})"))
            continue
        seen.add(cid)
        f = audio.get(cid)
        if f is None:
            skips.handle(BadInputError(wav_dir / f"{cid}.wav", f"audio file not found (labelled in {path.name})"))
            continue
        school = m.group(1)
        rows.append(
            {
                "file": f,
                "label": labels[code],
                "speaker": f"{school}_{m.group(2)}",
                "gender": None,
                "split": SCHOOL_SPLIT[school],
                "emotion_code": code,
                "confidence": conf,
                "school": school,
            }
        )
    return finish(rows, CORPUS, LANGUAGE, skips, with_duration)
