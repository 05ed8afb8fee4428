"""Shared helpers for the corpus loaders: root checks, audio listing, the standard table.

Genders go through :func:`smoothclap.values.normalize_gender`, missing cells are
:func:`smoothclap.values.is_missing` (the rules shared with captions and grouping)."""
from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import soundfile as sf

from ..errors import BadInputError, SkipLog
from ..values import is_missing

log = logging.getLogger("smoothclap.corpora")

#: Extensions accepted wherever an official layout has ``.wav`` (case-insensitive).
AUDIO_EXTS = (".wav", ".flac")

#: Column order of every corpus table; ``duration`` only with ``with_duration=True``.
STANDARD_COLUMNS = ("file", "label", "speaker", "gender", "split", "language", "corpus")


def check_root(root, corpus: str) -> Path:
    """``root`` as an absolute Path; BadInputError if it is missing or not a folder."""
    if root is None:
        raise BadInputError("<none>", f"no root folder given for corpus {corpus!r}")
    p = Path(root).expanduser()
    if not p.exists():
        raise BadInputError(p, f"{corpus} root folder does not exist")
    if not p.is_dir():
        raise BadInputError(p, f"{corpus} root is not a folder")
    return p.resolve()


def subdirs(folder: Path) -> list[Path]:
    """Immediate sub-folders, sorted, hidden ones (``.x``, ``__MACOSX``) left out."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    return [
        Path(e.path)
        for e in entries
        if e.is_dir() and not e.name.startswith(".") and e.name != "__MACOSX"
    ]


def locate(root: Path, test: Callable[[Path], bool]) -> Path | None:
    """``root`` if ``test(root)``, else the first immediate sub-folder passing ``test``.

    Archives often unpack into one extra top folder; this searches exactly one level down.
    """
    if test(root):
        return root
    for d in subdirs(root):
        if test(d):
            return d
    return None


def child(folder: Path, name: str) -> Path | None:
    """Child of ``folder`` named ``name``, matched case-insensitively (exact match preferred)."""
    p = folder / name
    if p.exists():
        return p
    low = name.lower()
    try:
        for e in os.scandir(folder):
            if e.name.lower() == low:
                return Path(e.path)
    except OSError:
        pass
    return None


def is_audio(name: str) -> bool:
    # "._x.wav" are macOS resource forks that some copies carry; they are not audio.
    return name.lower().endswith(AUDIO_EXTS) and not name.startswith("._")


def list_audio(folder: Path, recursive: bool = False) -> list[Path]:
    """Audio files (``.wav`` / ``.flac``) in ``folder``, sorted."""
    out: list[Path] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
            out.extend(Path(dirpath) / f for f in filenames if is_audio(f))
    else:
        try:
            out = [Path(e.path) for e in os.scandir(folder) if e.is_file() and is_audio(e.name)]
        except OSError:
            return []
    return sorted(out)


def dedupe_stems(files: Iterable[Path], skips: SkipLog) -> list[Path]:
    """Keep one file per (folder, stem): the same recording as ``.wav`` and ``.flac`` is a duplicate.

    The ``.wav`` wins; the other is reported as bad input (error, or skipped with ``skip_bad``).
    """
    seen: dict[tuple[Path, str], Path] = {}
    for f in sorted(files, key=lambda p: (p.parent, p.stem, p.suffix.lower() != ".wav")):
        key = (f.parent, f.stem)
        if key in seen:
            skips.handle(BadInputError(f, f"duplicate recording (of {seen[key].name})"))
            continue
        seen[key] = f
    return sorted(seen.values())


def parsed(items: Iterable, parse: Callable, skips: SkipLog, file=lambda item: item):
    """Yield ``(item, parse(item))`` for every item whose name parses. A ``ValueError`` from
    ``parse`` marks a bad file: raised as :class:`BadInputError` naming ``file(item)`` and the
    reason, or counted and logged when ``skips`` skips."""
    for item in items:
        try:
            info = parse(item)
        except ValueError as e:
            skips.handle(BadInputError(file(item), str(e)))
            continue
        yield item, info


def parsed_folders(folders: Iterable[tuple], parse: Callable, skips: SkipLog):
    """:func:`parsed` over the audio files of each folder (one per recording, :func:`dedupe_stems`),
    folder by folder. ``folders``: ``(folder, *facts)`` tuples; a file's name is parsed with
    ``parse(file, *facts)`` (what the folder says of its files: speaker, emotion)."""
    for d, *facts in folders:
        yield from parsed(dedupe_stems(list_audio(d), skips), lambda f: parse(f, *facts), skips)


def norm_split(value) -> str | None:
    """Partition names to ``train`` / ``dev`` / ``test`` (``devel``/``development`` -> ``dev``)."""
    if is_missing(value):
        return None
    v = str(value).strip().lower()
    if v in ("devel", "development", "develop", "valid", "validation", "val"):
        return "dev"
    if v in ("training",):
        return "train"
    return v


def _duration(path: str) -> float:
    from ..audio import soundfile_path

    with sf.SoundFile(soundfile_path(path)) as f:
        return f.frames / f.samplerate if f.samplerate else float("nan")


def durations(files: list[str], skips: SkipLog) -> list[float | None]:
    """Durations from the file headers (no decoding), in parallel; unreadable -> bad input."""

    def one(p: str):
        try:
            return _duration(p)
        except Exception as e:  # LibsndfileError, RuntimeError, OSError
            return BadInputError(p, f"unreadable audio header ({e.__class__.__name__}: {e})")

    if len(files) > 64:
        with ThreadPoolExecutor(min(8, (os.cpu_count() or 2) * 2)) as ex:
            res = list(ex.map(one, files))
    else:
        res = [one(f) for f in files]
    out: list[float | None] = []
    for r in res:
        if isinstance(r, BadInputError):
            skips.handle(r)
            out.append(None)
        else:
            out.append(r)
    return out


def finish(
    rows: list[dict],
    corpus: str,
    language: str | None,
    skips: SkipLog,
    with_duration: bool = True,
    extra_columns: Iterable[str] = (),
) -> pd.DataFrame:
    """Rows -> the standard table, sorted by file. Files whose header is unreadable (with
    ``with_duration``) go to ``skips`` like every other bad input of the loader."""
    for r in rows:
        r.setdefault("language", language)
        r.setdefault("corpus", corpus)
        r["file"] = str(r["file"])
    cols = list(STANDARD_COLUMNS)
    extras = list(dict.fromkeys(list(extra_columns) + [k for r in rows for k in r if k not in cols]))
    df = pd.DataFrame(rows, columns=cols + extras)
    if len(df):
        df = df.sort_values("file", kind="stable").reset_index(drop=True)
    if with_duration:
        d = durations(df["file"].tolist(), skips)
        df.insert(len(STANDARD_COLUMNS), "duration", pd.Series(d, dtype="float64"))
        keep = [x is not None for x in d]
        if not all(keep):
            df = df[keep].reset_index(drop=True)
    for c in ("file", "label", "speaker", "gender", "split", "language", "corpus"):
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    if skips.count:
        log.warning("%s: skipped %d bad input(s): %s", corpus, skips.count, skips.by_reason())
    return df


def emotion_table(found: Iterable[tuple[Path, dict]], corpus: str, language: str, *, labels: dict, genders: dict,
                  extras: tuple[str, ...], skips: SkipLog, with_duration: bool,
                  nothing: BadInputError | None = None) -> pd.DataFrame:
    """The standard table (:func:`finish`) of an acted-emotion corpus from ``(file, fields)`` pairs,
    as :func:`parsed` yields them. ``fields`` holds ``emotion_code`` (the label: ``labels[code]``),
    ``speaker`` (the gender: ``genders.get(speaker)``, None for a speaker not in it) and the
    corpus' ``extras`` columns, which follow the standard ones in this order. ``nothing``: raised
    when no file was found (no row and nothing skipped)."""
    rows = [
        {"file": f, "label": labels[x["emotion_code"]], "speaker": x["speaker"], "gender": genders.get(x["speaker"]),
         "split": None, **{k: x[k] for k in extras}}
        for f, x in found
    ]
    if nothing is not None and not rows and not skips.count:
        raise nothing
    return finish(rows, corpus, language, skips, with_duration)


def one_copy(folders: Iterable[tuple[Path, str]], corpus: str) -> None:
    """BadInputError on a second folder for what an earlier one holds (``(folder, what)`` pairs):
    two copies of the corpus under the root would load every clip twice."""
    seen: dict[str, Path] = {}
    for d, what in folders:
        if what in seen:
            raise BadInputError(d, f"second folder for {what} (first: {seen[what]}); "
                                f"point root at one copy of {corpus}")
        seen[what] = d


def missing(where: Path, what: str, corpus: str) -> BadInputError:
    return BadInputError(where, f"not a {corpus} folder: {what} not found here (nor one level down)")


def merge_map(default: dict, override: dict | None) -> dict:
    m = dict(default)
    if override:
        m.update({str(k): v for k, v in override.items()})
    return m


_SPLIT_PREFIX = re.compile(r"^(train|training|dev|devel|development|test)[_\-]", re.IGNORECASE)


def split_from_name(stem: str) -> str | None:
    m = _SPLIT_PREFIX.match(stem)
    return norm_split(m.group(1)) if m else None
