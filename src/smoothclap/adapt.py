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

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .errors import BadInputError, SkipLog
from .normalize import EPS, moments

#: what ``statistics`` may be: the reference clips' mean and std, or only their mean (the stored
#: scale kept: steadier with very few clips)
STATISTICS = ("mean+std", "mean")


def check_adaptable(model, clips: int, statistics: str = "mean+std", what: str = "reference clips") -> None:
    """BadInputError (ValueError for ``statistics``) unless ``model`` can be adapted on ``clips``
    clips: it normalises features per group, and ``clips`` >= its ``min_group_clips``."""
    if statistics not in STATISTICS:
        raise ValueError(f"statistics {statistics!r}: expected one of {', '.join(STATISTICS)}")
    cfg = model.config
    if not getattr(cfg, "feature_norm_group", None):
        raise BadInputError(what, "the model has no feature normalisation (model.feature_norm_group is off), so "
                            "its clips use no statistics and there is nothing to adapt")
    if clips < cfg.min_group_clips:
        raise BadInputError(what, f"{clips} clip(s); adapting needs at least model.min_group_clips = "
                            f"{cfg.min_group_clips} (the smallest group the model normalises with its own statistics)")


def adapted_copy(model, features: np.ndarray, statistics: str = "mean+std", what: str = "reference clips"):
    """A copy of ``model`` whose single-clip statistics are those of ``features`` ``[K, audio_dim]``
    (raw audio-tower features of K unlabelled clips of one setting; K >= ``min_group_clips``).

    ``statistics``: ``mean+std`` (z-score as a group of these clips, the whole-corpus rule) or
    ``mean`` (centre on them, keep the stored scale). The copy shares the towers.
    """
    cfg = model.config
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != cfg.audio_dim:
        raise BadInputError(what, f"features of shape {x.shape}; expected [clips, {cfg.audio_dim}]")
    if not np.isfinite(x).all():
        raise BadInputError(what, f"{int((~np.isfinite(x).all(1)).sum())} clip(s) with non-finite features")
    check_adaptable(model, len(x), statistics, what)
    mean, std = moments(x)
    out = model.copy()
    out.norm_mean.copy_(torch.from_numpy(mean[0]).float())
    if statistics == "mean+std":
        out.norm_std.copy_(torch.from_numpy(np.maximum(std[0], EPS)).float())
    out.config.adapted = {"clips": int(len(x)), "statistics": statistics}
    return out


def adapt_model(model, files: Sequence[str], *, statistics: str = "mean+std", out: str | Path | None = None,
                cache_dir=None, skip_bad: bool = False, progress: bool = False):
    """Adapt ``model`` (a :class:`~smoothclap.model.SmoothClapModel`, or a folder / Hub id) to the
    setting of the unlabelled audio ``files`` (see the module docstring); with ``out``, save the
    adapted model there (a model folder like any other: ``classify``, ``evaluate``, ``serve`` and
    ``export`` take it). Returns ``(adapted model, SkipLog of the files skipped)``; bad files raise
    unless ``skip_bad``."""
    from .cache import cache_root
    from .model import SmoothClapModel

    if isinstance(model, (str, Path)):
        model = SmoothClapModel.from_pretrained(model)
    files = [str(f) for f in files]
    if not files:
        raise BadInputError("adapt", "no audio files given")
    check_adaptable(model, len(files), statistics, what=f"{len(files)} reference file(s)")  # before reading audio
    skip = SkipLog(skip=skip_bad)
    feats, ok = model.file_features(files, cache_dir=cache_root(cache_dir), skip=skip, progress=progress,
                                    desc="audio (reference clips)")
    adapted = adapted_copy(model, np.asarray(feats)[np.asarray(ok, dtype=bool)], statistics,
                           what=f"{len(files)} reference file(s)")
    if out is not None:
        adapted.save_pretrained(out)
    return adapted, skip
