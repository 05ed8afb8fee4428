"""Label regimes for studies (not user settings): how much of the training data is labelled, how
noisy its labels are, and whether captions name the emotion.

* :func:`mask_labels`: keep a seeded share of each training corpus labelled (stratified by speaker
  and label where the table has them) and mark the rest unlabelled;
* :func:`noisy_labels`: replace a seeded share of each corpus' training labels by another class of
  that corpus (uniformly among the other classes);
* :func:`drop_emotion_words`: a run config whose captions never name the emotion
  (``captions.emotion_word: false``), so labels reach training only through the soft targets.

The table functions are pure: a training table in (``corpora.training_table`` /
``trainer.data.load_sources``, or any table with a ``label`` column and optionally ``corpus`` and
``speaker``), a new table out, the input untouched; the same seed gives the same table. Each corpus
draws from its own seeded stream, so adding a corpus does not change another corpus' rows. Only
rows labelled on input (:func:`smoothclap.corpora.labelled_mask`) count and change; rows already
unlabelled stay so.
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from ..corpora import labelled_mask, unlabel
from ..values import MISSING_GROUP, is_missing


def _rng(seed: int, what: str, corpus: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(what.encode()), zlib.crc32(corpus.encode())])


def _corpora(table: pd.DataFrame) -> np.ndarray:
    if "corpus" not in table.columns:
        return np.full(len(table), "(table)", dtype=object)
    return np.array(["(table)" if is_missing(c) else str(c) for c in table["corpus"]], dtype=object)


def _count(share: float, n: int) -> int:
    """round(share * n), halves up: the exact number of rows a share of ``n`` is."""
    return int(np.floor(share * n + 0.5))


def _check_share(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _allocate(cells: np.ndarray, labels: np.ndarray, speakers: np.ndarray, k: int,
              rng: np.random.Generator) -> np.ndarray:
    """How many rows of each (speaker, label) cell to take, ``k`` in all: each cell's share rounded
    down, then one more row at a time to the cell whose label, speaker and cell are furthest below
    their shares (seeded random order among ties), so label and speaker counts stay balanced."""
    sizes = np.bincount(cells)
    f = k / max(len(cells), 1)
    lab_of = np.zeros(len(sizes), dtype=np.int64)
    spk_of = np.zeros(len(sizes), dtype=np.int64)
    lab_of[cells], spk_of[cells] = labels, speakers
    lab_quota = f * np.bincount(labels)
    spk_quota = f * np.bincount(speakers)
    alloc = np.floor(f * sizes).astype(np.int64)
    tie = rng.random(len(sizes)) * 1e-6  # a seeded order among equal deficits
    for _ in range(k - int(alloc.sum())):
        lab_have = np.bincount(lab_of, weights=alloc, minlength=len(lab_quota))
        spk_have = np.bincount(spk_of, weights=alloc, minlength=len(spk_quota))
        score = ((lab_quota - lab_have)[lab_of] + (spk_quota - spk_have)[spk_of] + (f * sizes - alloc) + tie)
        score[alloc >= sizes] = -np.inf
        alloc[int(np.argmax(score))] += 1
    return alloc


def mask_labels(table: pd.DataFrame, fraction: float, seed: int = 0) -> pd.DataFrame:
    """``table`` with only a seeded share ``fraction`` of each corpus' labelled rows still
    labelled: round(fraction x n) of the n labelled rows of every corpus (halves up), stratified by
    speaker and label where possible (the counts of every label and every speaker stay as close
    to their share as whole rows allow; without a ``speaker`` column by label alone). The other
    rows become unlabelled (:func:`smoothclap.corpora.unlabel`: label and emotion annotation
    emptied, ``labelled`` False) and lose a given ``caption`` too, so nothing left in them names
    their emotion. ``fraction`` 1: every labelled row stays labelled; 0: none."""
    fraction = _check_share("fraction", fraction)
    has = labelled_mask(table)
    corpus = _corpora(table)
    label = np.array([str(x) if h else "" for x, h in zip(table["label"], has)], dtype=object) \
        if "label" in table.columns else np.full(len(table), "", dtype=object)
    speaker = (np.array([MISSING_GROUP if is_missing(s) else str(s) for s in table["speaker"]], dtype=object)
               if "speaker" in table.columns else np.full(len(table), MISSING_GROUP, dtype=object))
    keep = np.zeros(len(table), dtype=bool)
    for c in sorted(set(corpus[has])):
        rows = np.flatnonzero(has & (corpus == c))
        k = _count(fraction, len(rows))
        if k == 0:
            continue
        rng = _rng(seed, "mask", c)
        _, lab = np.unique(label[rows], return_inverse=True)
        _, spk = np.unique(speaker[rows], return_inverse=True)
        _, cell = np.unique(lab * (spk.max() + 1) + spk, return_inverse=True)
        alloc = _allocate(cell, lab, spk, k, rng)
        for j, n_take in enumerate(alloc):
            if n_take:
                members = rows[cell == j]
                keep[rng.choice(members, size=int(n_take), replace=False)] = True
    out = unlabel(table, has & ~keep)
    if "caption" in out.columns:
        out["caption"] = out["caption"].astype(object).where(keep | ~has, None)
    return out


def noisy_labels(table: pd.DataFrame, share: float, seed: int = 0) -> pd.DataFrame:
    """``table`` with a seeded share ``share`` of each corpus' labelled rows given another label:
    exactly round(share x n) of the n labelled rows of every corpus (halves up), each replaced by
    one of the corpus' other classes (its other ``label`` values), uniformly. ``label_original``
    follows (the corpus' own word of the new class) where the table has it; the column
    ``label_flipped`` (bool) says which rows changed (for analysis; training never reads it).
    Arousal / valence ratings are left as they are. A corpus with a single class cannot be made
    noisy (ValueError) unless ``share`` is 0."""
    share = _check_share("share", share)
    out = table.copy()
    has = labelled_mask(table)
    corpus = _corpora(table)
    flipped = np.zeros(len(table), dtype=bool)
    new_label = out["label"].astype(object).to_numpy().copy() if "label" in out.columns else None
    orig = out["label_original"].astype(object).to_numpy().copy() if "label_original" in out.columns else None
    for c in sorted(set(corpus[has])):
        rows = np.flatnonzero(has & (corpus == c))
        k = _count(share, len(rows))
        if k == 0:
            continue
        labels = np.array([str(x) for x in table["label"].to_numpy()[rows]], dtype=object)
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise ValueError(f"noisy_labels: corpus {c!r} has one class ({classes[0]!r}); no other label to give")
        word = {}
        if orig is not None:
            for lab_, o in zip(labels, orig[rows]):
                word.setdefault(lab_, o)
        rng = _rng(seed, "noise", c)
        pick = rng.choice(len(rows), size=k, replace=False)
        for i in np.sort(pick):
            others = [x for x in classes if x != labels[i]]
            nl = others[int(rng.integers(len(others)))]
            new_label[rows[i]] = nl
            if orig is not None:
                orig[rows[i]] = word[nl]
            flipped[rows[i]] = True
    if new_label is not None:
        out["label"] = new_label
    if orig is not None:
        out["label_original"] = orig
    out["label_flipped"] = flipped
    return out


def drop_emotion_words(cfg):
    """A copy of the run config ``cfg`` whose generated captions never name the emotion, for
    labelled rows neither (``captions.emotion_word: false``): labels then reach training only
    through the soft targets (``loss.local_source: labels`` or ``posteriors``). Captions given in a
    table's ``caption`` column are used as they are."""
    return cfg.updated({"captions.emotion_word": False})


__all__ = ["drop_emotion_words", "mask_labels", "noisy_labels"]
