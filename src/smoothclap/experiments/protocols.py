"""How a held-out corpus is scored: three protocols, the way users meet a model.

* ``whole``: the whole corpus scored at once, with its own groups (the model's
  ``feature_norm_group`` column: per-corpus or per-speaker statistics of the clips scored);
* ``skewed``: each speaker keeps only ``k`` of its emotions (seeded), as in natural speech where a
  speaker shows one or two emotions, scored with its groups;
* ``single``: every clip on its own, no groups at all: the path of ``smoothclap classify FILE``,
  the web page and the three-call API (the model's stored training statistics).

The **robust UAR** of a corpus is the mean over the three; over corpora, the mean of those.

Reported beside them, not part of the robust UAR (it uses clips of the test corpus, unlabelled):

* ``adapted``: single clips after ``smoothclap adapt`` (:mod:`smoothclap.adapt`) on ``k``
  unlabelled clips of the corpus (drawn with a seed); the other clips scored alone;
* ``adapted-skewed``: the same, the ``k`` clips drawn from the skewed speakers' clips (each speaker
  showing ``skew_emotions`` emotions, as a user's own natural speech would);
* ``adapted-neutral``: the same, the ``k`` clips all of the corpus's unemotional label (the first
  of :data:`smoothclap.adapt.NEUTRAL_LABELS` the corpus has): reference recordings that show no
  emotion, adapted on as if they were the setting's usual mix;
* ``adapted-neutral-declared``: the same clips, adapted with ``reference="neutral"`` (``smoothclap
  adapt --reference neutral``): the model's neutral statistics correct for their lack of emotion.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..tasks import Task, score_table

log = logging.getLogger("smoothclap")

PROTOCOLS = ("whole", "skewed", "single")
#: reported when asked for, never averaged into the robust UAR
EXTRA_PROTOCOLS = ("adapted", "adapted-skewed", "adapted-neutral", "adapted-neutral-declared")


def skew_speakers(table: pd.DataFrame, k: int, seed: int = 0) -> pd.DataFrame:
    """Each speaker keeps only ``k`` of its emotions (drawn with ``seed``): natural speech, where a
    speaker shows one or two emotions, not every emotion evenly as in acted corpora. Rows keep
    their order; the index is reset."""
    rng = np.random.default_rng(seed)
    keep = []
    for _, rows in table.groupby(table["speaker"].astype(str), sort=True):
        labels = sorted(rows["label"].astype(str).unique())
        chosen = set(rng.choice(labels, size=min(k, len(labels)), replace=False))
        keep.append(rows[rows["label"].astype(str).isin(chosen)])
    return pd.concat(keep).sort_index().reset_index(drop=True)


def skewed_rows(table: pd.DataFrame, k: int, seed: int = 0) -> np.ndarray:
    """Row positions of ``table`` kept by :func:`skew_speakers` (to reuse features computed once)."""
    marked = table.reset_index(drop=True).assign(_row=np.arange(len(table)))
    return skew_speakers(marked, k, seed)["_row"].to_numpy()


def adapt_rows(n: int, k: int, seed: int = 0, pool: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(reference [k], rest [n - k])`` sorted row positions of an ``n``-row table: the clips a
    model is adapted on, drawn from ``pool`` (row positions; default all), and every other clip,
    then scored alone (protocols ``adapted``, ``adapted-skewed``)."""
    pool = np.arange(n) if pool is None else np.asarray(pool)
    if not 0 < k < n or k > len(pool):
        raise ValueError(f"adapting on {k} of {len(pool)} clips ({n} in all): needs 0 < k < n (clips left to score)")
    ref = np.sort(np.random.default_rng(seed).choice(pool, size=k, replace=False))
    return ref, np.setdiff1d(np.arange(n), ref)


def score_protocols(task: Task, model, table: pd.DataFrame, features: np.ndarray, *, skew_emotions: int = 2,
                    skew_seed: int = 0, adapt_clips: int = 0, **kw) -> dict[str, dict]:
    """:func:`smoothclap.tasks.score_table` of ``table`` under each of :data:`PROTOCOLS` (and
    :data:`EXTRA_PROTOCOLS` with ``adapt_clips`` > 0 and a model with feature normalisation):
    protocol -> result. ``features``: the model's raw audio-tower features of ``table``'s rows
    ``[N, audio_dim]`` (computed once, shared by the protocols); ``kw`` go to ``score_table``
    (templates, language)."""
    table = table.reset_index(drop=True)
    rows = skewed_rows(table, skew_emotions, skew_seed)
    out = {"whole": score_table(task, model, table, features=features, **kw),
           "skewed": score_table(task, model, table.iloc[rows], features=features[rows], **kw),
           "single": score_table(task, model, table, features=features, use_groups=False, **kw)}
    if not (adapt_clips and getattr(model.config, "feature_norm_group", None)):
        return out
    from ..adapt import NEUTRAL_LABELS, adapted_copy, neutral_rows

    # reference clips from the whole corpus, from its skewed speakers (natural speech: the clips a
    # user adapts on show few emotions per speaker), and from its neutral clips only
    neutral = np.flatnonzero(neutral_rows(table["label"], np.zeros(len(table))))
    declared = model.neutral_statistics() is not None
    for name, pool, reference in (("adapted", None, "any"), ("adapted-skewed", rows, "any"),
                                  ("adapted-neutral", neutral, "any"), ("adapted-neutral-declared", neutral, "neutral")):
        if reference == "neutral" and not declared:
            log.warning("%s: the model holds no neutral statistics; no %r protocol", task.name, name)
            continue
        if pool is neutral and not len(neutral):
            log.warning("%s: no label of %s; no %r protocol", task.name, "/".join(NEUTRAL_LABELS), name)
            continue
        if adapt_clips >= len(table) or (pool is not None and adapt_clips > len(pool)):
            log.warning("%s: too few clips to adapt on %d and score the rest; no %r protocol",
                        task.name, adapt_clips, name)
            continue
        ref, rest = adapt_rows(len(table), adapt_clips, skew_seed, pool)
        adapted = adapted_copy(model, features[ref], what=f"{task.name}: {adapt_clips} reference clips",
                               reference=reference)
        out[name] = score_table(task, adapted, table.iloc[rest], features=features[rest], use_groups=False, **kw)
    return out


def robust(per_protocol: dict[str, float]) -> float:
    """Mean over the protocols (the robust UAR of one corpus)."""
    return float(np.mean([per_protocol[p] for p in PROTOCOLS]))
