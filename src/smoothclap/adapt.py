"""Adapting a model to a recording setting from a few unlabelled clips of it.

A clip scored alone (``smoothclap classify FILE``, the web page, the three-call API) has no group to
normalise with, so it is z-scored with statistics stored at training time
(``model.fallback_stats``). Clips of a new corpus, microphone or room sit at an offset from those
statistics, and the offset pulls most of them towards one class. :func:`adapt_model` replaces the
stored statistics with those of a handful of unlabelled clips from the user's own setting, the
rule the whole-corpus path applies to a group of clips (their own mean and standard deviation,
``model.feature_norm_group``), so that every later clip, scored alone, is normalised as a member
of that group. No labels are used and the heads are unchanged; the model records how it was
adapted (``config.adapted``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .errors import BadInputError, SkipLog
from .normalize import EPS, moments

#: what ``statistics`` may be: the reference clips' mean and std, or only their mean (the stored
#: scale kept: steadier with very few clips)
STATISTICS = ("mean+std", "mean")
#: what the reference clips are: any clips of the setting (its usual mix of emotions), or only
#: unemotional ones (corrected by where neutral clips sit within a training corpus)
REFERENCES = ("any", "neutral")
#: a corpus's unemotional label: the first of these its labels hold
NEUTRAL_LABELS = ("neutral", "calm")


def neutral_rows(labels, groups) -> np.ndarray:
    """``[N]`` bool: the clips whose label is their group's unemotional label (per group in
    ``groups`` ``[N]``, the first of :data:`NEUTRAL_LABELS` among the group's ``labels`` ``[N]``)."""
    # integer codes, not string copies: the training table may hold millions of rows
    lab, names = pd.factorize(np.asarray(labels, dtype=object))
    grp, _ = pd.factorize(np.asarray(groups))
    names = list(names)
    present = np.zeros((grp.max(initial=-1) + 1, len(names)), dtype=bool)
    present[grp[lab >= 0], lab[lab >= 0]] = True
    calm = np.full(len(present), -2)  # per group, the code of its unemotional label (-2: none)
    for name in reversed(NEUTRAL_LABELS):  # the first of them wins
        if name in names:
            calm[present[:, names.index(name)]] = names.index(name)
    return (lab == calm[grp]) & (grp >= 0)


def check_adaptable(model, clips: int, statistics: str = "mean+std", what: str = "reference clips",
                    reference: str = "any") -> None:
    """BadInputError (ValueError for ``statistics`` / ``reference``) unless ``model`` can be adapted
    on ``clips`` clips: it normalises features per group, ``clips`` >= its ``min_group_clips``, and
    for ``reference="neutral"`` it holds neutral statistics."""
    if statistics not in STATISTICS:
        raise ValueError(f"statistics {statistics!r}: expected one of {', '.join(STATISTICS)}")
    if reference not in REFERENCES:
        raise ValueError(f"reference {reference!r}: expected one of {', '.join(REFERENCES)}")
    cfg = model.config
    if not getattr(cfg, "feature_norm_group", None):
        raise BadInputError(what, "the model has no feature normalisation (model.feature_norm_group is off), so "
                            "its clips use no statistics and there is nothing to adapt")
    if clips < cfg.min_group_clips:
        raise BadInputError(what, f"{clips} clip(s); adapting needs at least model.min_group_clips = "
                            f"{cfg.min_group_clips} (the smallest group the model normalises with its own statistics)")
    if reference == "neutral" and model.neutral_statistics() is None:
        raise BadInputError(what, "--reference neutral: the model holds no neutral statistics (trained before "
                            "they were stored, or on no group with enough clips labelled "
                            f"{' / '.join(NEUTRAL_LABELS)}); adapt on clips of the setting's usual mix instead")


def adapted_copy(model, features: np.ndarray, statistics: str = "mean+std", what: str = "reference clips",
                 digest: str | None = None, reference: str = "any"):
    """A copy of ``model`` whose single-clip statistics are those of ``features`` ``[K, audio_dim]``
    (raw audio-tower features of K unlabelled clips of one setting; K >= ``min_group_clips``).

    ``statistics``: ``mean+std`` (z-score as a group of these clips, the whole-corpus rule) or
    ``mean`` (centre on them, keep the stored scale). ``reference``: ``any`` (clips of the
    setting's usual mix of emotions: their statistics are the setting's) or ``neutral`` (only
    unemotional clips: the setting's statistics are estimated from theirs with the model's
    ``neutral_offset`` / ``neutral_scale``, where neutral clips sit within a training corpus: std =
    their std / scale, mean = their mean - offset x that std). ``digest``: a fingerprint of the clips
    (:func:`reference_digest`). Both are recorded in ``config.adapted``. The copy shares the towers.
    """
    cfg = model.config
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != cfg.audio_dim:
        raise BadInputError(what, f"features of shape {x.shape}; expected [clips, {cfg.audio_dim}]")
    if not np.isfinite(x).all():
        raise BadInputError(what, f"{int((~np.isfinite(x).all(1)).sum())} clip(s) with non-finite features")
    check_adaptable(model, len(x), statistics, what, reference)
    mean, std = (m[0] for m in moments(x))
    if reference == "neutral":
        offset, scale = model.neutral_statistics()
        std = np.maximum(std, EPS) / scale  # the setting's spread, estimated (kept only with mean+std)
        mean = mean - offset * std
    return model.with_feature_statistics(mean, std if statistics == "mean+std" else None,
                                         adapted={"clips": int(len(x)), "statistics": statistics,
                                                  **({"reference": reference} if reference != "any" else {}),
                                                  **({"reference_sha1": digest} if digest else {})})


def reference_digest(files: Sequence[str]) -> str:
    """sha1 of the reference clips' sorted content hashes (:func:`smoothclap.audio.file_hash`): the
    same clips give the same digest whatever their names or order."""
    from .audio import file_hash

    return hashlib.sha1("\n".join(sorted(file_hash(f) for f in files)).encode()).hexdigest()


def adapt_model(model, files: Sequence[str], *, statistics: str = "mean+std", reference: str = "any",
                out: str | Path | None = None, cache_dir=None, skip_bad: bool = False, progress: bool = False):
    """Adapt ``model`` (a :class:`~smoothclap.model.SmoothClapModel` or
    :class:`~smoothclap.onnx_runtime.OnnxModel`, or a model folder, ONNX export folder or Hub id) to
    the setting of the unlabelled audio ``files`` (see the module docstring; ``statistics`` and
    ``reference`` as in :func:`adapted_copy`); with ``out``, save the
    adapted model there, of the same kind (a model folder or an export like any other: ``classify``,
    ``evaluate`` and ``serve`` take it, and ``export`` an adapted model folder). The copy records the
    clips' count and :func:`reference_digest` in ``config.adapted``. Returns ``(adapted model,
    SkipLog of the files skipped)``; bad files raise unless ``skip_bad``."""
    from .cache import cache_root
    from .models import load_model

    if isinstance(model, (str, Path)):
        model = load_model(model)
    files = [str(f) for f in files]
    if not files:
        raise BadInputError("adapt", "no audio files given")
    check_adaptable(model, len(files), statistics, f"{len(files)} reference file(s)", reference)  # before reading audio
    skip = SkipLog(skip=skip_bad)
    feats, ok = model.file_features(files, cache_dir=cache_root(cache_dir), skip=skip, progress=progress,
                                    desc="audio (reference clips)")
    ok = np.asarray(ok, dtype=bool)
    adapted = adapted_copy(model, np.asarray(feats)[ok], statistics, what=f"{len(files)} reference file(s)",
                           digest=reference_digest([f for f, k in zip(files, ok) if k]), reference=reference)
    if out is not None:
        adapted.save_pretrained(out)
    return adapted, skip
