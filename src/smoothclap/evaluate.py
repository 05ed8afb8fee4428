"""The one evaluation loop: a model, a table of clips with labels, label prompts -> metrics.

Corpora and tasks are data; this loop is the same for all of them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from .embed import embed_audio_files
from .errors import SkipLog
from .metrics import classification_metrics
from .zeroshot import ZeroShotClassifier


@dataclass
class EvalResult:
    metrics: dict
    predictions: pd.DataFrame       # file, label, pred, p_<label>...
    skipped: SkipLog = field(default_factory=SkipLog)
    seconds: float = 0.0


def audio_features(tower, files: Sequence[str], *, cache_dir=None, skip: SkipLog | None = None,
                   progress: bool = True, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Frozen audio-tower features of ``files`` (cached): ``([N, audio_dim], ok [N])``."""
    return embed_audio_files(tower, list(files), cache_dir=cache_dir, skip=skip,
                             progress=progress, batch_size=batch_size, desc="audio (eval)")


def zero_shot_evaluate(model, table: pd.DataFrame, labels: Sequence[str] | None = None, *,
                       prompts: dict[str, str] | None = None, templates=None, cache_dir=None,
                       skip: SkipLog | None = None, progress: bool = True,
                       features: np.ndarray | None = None) -> EvalResult:
    """Classify ``table`` (columns file, label) zero-shot among ``labels`` (default: the table's).

    Labels outside ``labels`` are an error (a task spec must name every class it scores).
    ``features`` (``[N, audio_dim]``) skips the tower when the caller already has them.
    """
    t0 = time.perf_counter()
    skip = skip if skip is not None else SkipLog()
    labels = list(labels) if labels is not None else sorted(table["label"].astype(str).unique())
    unknown = sorted(set(table["label"].astype(str)) - set(labels))
    if unknown:
        raise ValueError(f"labels {unknown} in the evaluation table are not among the task's labels {labels}")
    files = table["file"].astype(str).tolist()
    if features is None:
        features, ok = audio_features(model.tower("audio"), files, cache_dir=cache_dir, skip=skip, progress=progress)
    else:
        ok = np.isfinite(features).all(1)
    clf = ZeroShotClassifier(model, labels, prompts=prompts, templates=templates)
    keep = np.flatnonzero(ok)
    feats = features[keep]
    group = getattr(model.config, "feature_norm_group", None)
    if group:
        # the model was trained on per-corpus / per-speaker standardised features: standardise the
        # test clips the same way, from their own statistics (no labels involved)
        from .targets import group_ids, standardize

        feats = standardize(feats, "zscore", group_ids(table.iloc[keep], group))
    preds, probs = clf.predict_features(feats)
    y_true = table["label"].astype(str).to_numpy()[keep]
    m = classification_metrics(y_true, preds, labels)
    m["skipped"] = skip.count
    df = pd.DataFrame({"file": np.asarray(files, dtype=object)[keep], "label": y_true, "pred": preds})
    for j, lab in enumerate(labels):
        df[f"p_{lab}"] = probs[:, j]
    return EvalResult(metrics=m, predictions=df, skipped=skip, seconds=time.perf_counter() - t0)
