"""IEMOCAP (Interactive Emotional Dyadic Motion Capture), English, 5 sessions x 2 speakers.

Official layout (``IEMOCAP_full_release``; the root or one level down)::

    Session1..5/sentences/wav/<dialog>/<utterance>.wav          (.flac accepted)
    Session1..5/dialog/EmoEvaluation/<dialog>.txt

Evaluation lines look like ``[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]``
(the bracket is [valence, activation, dominance]). ``classes="4"`` (default, the usual protocol)
keeps neutral, happy (hap + exc merged), angry, sad and drops the rest; ``classes="all"`` keeps every
utterance with its own label (exc -> "excited", xxx -> "no agreement").
split = session ("Session1".."Session5"); speaker = session + the utterance speaker's gender letter
(``Ses01F_impro01_M003`` -> ``Ses01_M``). Extra columns: ``emotion_code``, ``valence``, ``arousal``,
``dominance``, ``dialog``, ``utterance``.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import BadInputError, SkipLog
from ._common import check_root, child, finish, list_audio, locate, merge_map, missing, subdirs

CORPUS = "iemocap"
LANGUAGE = "en"

#: The 4-class protocol: code -> label (everything else is dropped).
LABELS_4 = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}
#: ``classes="all"``: every code IEMOCAP uses -> label.
LABELS_ALL = {
    "neu": "neutral",
    "hap": "happy",
    "exc": "excited",
    "ang": "angry",
    "sad": "sad",
    "fru": "frustrated",
    "sur": "surprised",
    "fea": "fearful",
    "dis": "disgusted",
    "oth": "other",
    "xxx": "no agreement",
}

_SESSION = re.compile(r"^session([1-5])$", re.IGNORECASE)
_LINE = re.compile(
    r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[\s*([^,\]]+),\s*([^,\]]+),\s*([^,\]]+)\]\s*$"
)
_UTT = re.compile(r"^(Ses\d{2})[FM]_(.+)_([FM])[A-Za-z]*\d+$")


def parse_utterance(utt: str) -> dict:
    """``Ses01F_impro01_M003`` -> dialog ``Ses01F_impro01``, speaker ``Ses01_M``, gender male."""
    m = _UTT.match(utt)
    if not m:
        raise ValueError(f"malformed IEMOCAP utterance id (got {utt!r})")
    ses, _, letter = m.groups()
    return {
        "dialog": utt.rsplit("_", 1)[0],
        "speaker": f"{ses}_{letter}",
        "gender": "female" if letter == "F" else "male",
    }


def parse_evaluation(path: Path, skips: SkipLog) -> list[dict]:
    """Utterance lines of one ``EmoEvaluation/<dialog>.txt``; other lines (headers, the annotators'
    ``C-E1:`` / ``A-E1:`` lines, blanks) are ignored. A line starting with ``[`` that does not parse
    is bad input."""
    out = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise BadInputError(path, f"unreadable evaluation file ({e})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.startswith("["):
            continue
        m = _LINE.match(line.strip())
        try:
            if not m:
                raise ValueError("expected '[start - end]<TAB>utterance<TAB>code<TAB>[V, A, D]'")
            v, a, d = (float(x) for x in m.group(5, 6, 7))
        except ValueError as e:
            skips.handle(BadInputError(path, f"malformed evaluation line (line {n}: {e})"))
            continue
        out.append(
            {"utterance": m.group(3), "emotion_code": m.group(4).lower(), "valence": v, "arousal": a, "dominance": d}
        )
    return out


def _sessions(root: Path) -> list[Path]:
    def find(d: Path):
        return [x for x in subdirs(d) if _SESSION.match(x.name)]

    base = locate(root, lambda d: bool(find(d)))
    return find(base) if base is not None else []


def load(
    root,
    *,
    classes: str | int = "4",
    with_duration: bool = True,
    skip_bad: bool = False,
    skips: SkipLog | None = None,
    label_map: dict | None = None,
) -> pd.DataFrame:
    """IEMOCAP table (4-class protocol: 5531 utterances in the full release).

    ``label_map`` overrides entries of the code -> label map of the chosen ``classes``; with
    ``classes="4"`` only mapped codes are kept, so ``label_map={"fru": "frustrated"}`` adds a class.
    """
    root = check_root(root, CORPUS)
    cls = str(classes).lower()
    if cls not in ("4", "all"):
        raise ValueError(f"classes must be '4' or 'all', not {classes!r}")
    labels = merge_map(LABELS_4 if cls == "4" else LABELS_ALL, label_map)
    sessions = _sessions(root)
    if not sessions:
        raise missing(root, "'Session1'..'Session5' folders", CORPUS)
    layout = []  # check every session's folders before reading any labels
    for ses in sessions:
        eval_dir = ses / "dialog" / "EmoEvaluation"
        wav_root = ses / "sentences" / "wav"
        if not eval_dir.is_dir():
            raise BadInputError(eval_dir, f"missing label folder dialog/EmoEvaluation/ of {ses.name}")
        if not wav_root.is_dir():
            raise BadInputError(wav_root, f"missing audio folder sentences/wav/ of {ses.name}")
        eval_files = sorted(p for p in eval_dir.glob("*.txt") if not p.name.startswith("._"))
        if not eval_files:
            raise BadInputError(eval_dir, "no <dialog>.txt evaluation files")
        layout.append((f"Session{_SESSION.match(ses.name).group(1)}", wav_root, eval_files))
    skips = skips if skips is not None else SkipLog(skip=skip_bad)
    rows = []
    for session_id, wav_root, eval_files in layout:
        for ev in eval_files:
            audio_dir = child(wav_root, ev.stem)
            audio = {f.stem: f for f in list_audio(audio_dir)} if audio_dir is not None else {}
            for item in parse_evaluation(ev, skips):
                code = item["emotion_code"]
                if code not in labels and code not in LABELS_ALL:
                    skips.handle(BadInputError(ev, f"unknown emotion code (got {code!r} for {item['utterance']})"))
                    continue
                if code not in labels:
                    continue  # a class outside the chosen protocol: dropped, not bad
                try:
                    utt = parse_utterance(item["utterance"])
                except ValueError as e:
                    skips.handle(BadInputError(ev, str(e)))
                    continue
                f = audio.get(item["utterance"])
                if f is None:
                    where = (audio_dir or wav_root / ev.stem) / f"{item['utterance']}.wav"
                    skips.handle(BadInputError(where, f"audio file not found (labelled in {ev.name})"))
                    continue
                rows.append(
                    {
                        "file": f,
                        "label": labels[code],
                        "speaker": utt["speaker"],
                        "gender": utt["gender"],
                        "split": session_id,
                        **item,
                        "dialog": utt["dialog"],
                    }
                )
    return finish(rows, CORPUS, LANGUAGE, skips, with_duration)
