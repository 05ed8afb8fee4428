"""The one evaluation loop: a model, a table of clips with labels, label prompts -> metrics.

Corpora and tasks are data; this loop is the same for all of them. :func:`zero_shot_evaluate`
scores a table (features computed and cached through the model, or given); :func:`evaluate_table`
is ``smoothclap evaluate --manifest/--corpus``: it refuses corpora that trained the model, scores,
and writes the report.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .errors import SkipLog, UserError
from .metrics import classification_metrics
from .normalize import group_ids
from .zeroshot import ZeroShotClassifier

log = logging.getLogger("smoothclap")


class TrainedCorpusError(UserError):
    """Scoring a corpus that trained the model (refused unless explicitly allowed)."""


@dataclass
class EvalResult:
    metrics: dict
    predictions: pd.DataFrame       # file, label, pred, p_<label>...
    skipped: SkipLog = field(default_factory=SkipLog)
    seconds: float = 0.0


def table_groups(model, table: pd.DataFrame) -> np.ndarray | None:
    """The groups of ``table``'s rows for ``model``'s feature normalisation (its
    ``feature_norm_group`` column), or None (no normalisation, or no such column: then the model's
    stored training statistics are used, with a warning)."""
    col = getattr(model.config, "feature_norm_group", None)
    if not col:
        return None
    g = group_ids(table, col)
    if g is None:
        log.warning("the model normalises features per %s, but the table has no %r column: using the "
                    "model's training statistics", col, col)
    return g


def check_not_trained_on(model, corpora: Sequence[str], allow: bool = False, what: str = "") -> str | None:
    """Refuse (:class:`TrainedCorpusError`) to score corpora listed in ``model.config.trained_on``
    (names compared through the corpus registry's aliases); with ``allow`` return a loud warning
    instead. None when no scored corpus trained the model."""
    from .corpora import canonical

    trained = {canonical(c) for c in (getattr(model.config, "trained_on", None) or [])}
    overlap = sorted({canonical(c) for c in corpora} & trained)
    if not overlap:
        return None
    msg = (f"{what + ': ' if what else ''}corpus {', '.join(map(repr, overlap))} TRAINED this model "
           f"(trained_on={model.config.trained_on}); its scores are not zero-shot")
    if not allow:
        raise TrainedCorpusError(f"refusing to score {msg}; pass allow_trained_corpus / "
                                 "--allow-trained-corpus to override")
    log.warning("WARNING: %s", msg)
    return "WARNING: " + msg


def zero_shot_evaluate(model, table: pd.DataFrame, labels: Sequence[str] | None = None, *,
                       prompts: dict[str, str] | None = None, templates=None, cache_dir=None,
                       skip: SkipLog | None = None, progress: bool = True,
                       features: np.ndarray | None = None, batch_size: int = 16,
                       use_groups: bool = True) -> EvalResult:
    """Classify ``table`` (columns file, label; the model's group column when it normalises per
    group) zero-shot among ``labels`` (default: the table's).

    Labels outside ``labels`` are an error (a task spec must name every class it scores).
    ``features`` (raw audio-tower features ``[N, audio_dim]``) skips the tower when the caller
    already has them. ``use_groups=False`` scores without test groups (the model's stored training
    statistics), as for clips whose speaker is unknown.
    """
    t0 = time.perf_counter()
    skip = skip if skip is not None else SkipLog()
    labels = list(labels) if labels is not None else sorted(table["label"].astype(str).unique())
    unknown = sorted(set(table["label"].astype(str)) - set(labels))
    if unknown:
        raise ValueError(f"labels {unknown} in the evaluation table are not among the task's labels {labels}")
    files = table["file"].astype(str).tolist()
    if features is None:
        from .corpora import check_whole_files

        check_whole_files(table, "scoring")
        features, ok = model.file_features(files, cache_dir=cache_dir, skip=skip, progress=progress,
                                           batch_size=batch_size, desc="audio (eval)")
    else:
        ok = np.isfinite(features).all(1)
    keep = np.flatnonzero(ok)
    if len(keep) == 0:
        raise ValueError("no clip left to score (every file was skipped)")
    groups = table_groups(model, table) if use_groups else None
    clf = ZeroShotClassifier(model, labels, prompts=prompts, templates=templates)
    preds, probs = clf.predict_features(features[keep], None if groups is None else groups[keep])
    y_true = table["label"].astype(str).to_numpy()[keep]
    m = classification_metrics(y_true, preds, labels)
    m["skipped"] = skip.count
    df = pd.DataFrame({"file": np.asarray(files, dtype=object)[keep], "label": y_true, "pred": preds})
    for j, lab in enumerate(labels):
        df[f"p_{lab}"] = probs[:, j]
    return EvalResult(metrics=m, predictions=df, skipped=skip, seconds=time.perf_counter() - t0)


def evaluate_table(model, table: pd.DataFrame, *, labels: Sequence[str] | None = None, prompts=None,
                   templates=None, cache_dir=None, skip_bad: bool = False, allow_trained_corpus: bool = False,
                   out_dir=None, model_name: str = "", progress: bool = True) -> EvalResult:
    """``smoothclap evaluate --manifest/--corpus``: refuse corpora the model trained on, score the
    table zero-shot and, with ``out_dir``, write ``metrics.json``, ``predictions.csv``,
    ``confusion.png`` and ``report.md``. Skipped rows of the table's reading (``table.attrs``) and
    of the audio are counted together."""
    from .io import atomic_write_json, atomic_write_text
    from .plots import plot_confusion

    corpora = set(table["corpus"].dropna().astype(str)) if "corpus" in table.columns else set()
    warning = check_not_trained_on(model, corpora, allow=allow_trained_corpus)
    skip = SkipLog(skip=skip_bad)
    ev = zero_shot_evaluate(model, table, labels, prompts=prompts, templates=templates, cache_dir=cache_dir,
                            skip=skip, progress=progress)
    read_skips = table.attrs.get("skipped")
    skipped = list(getattr(read_skips, "items", [])) + list(skip.items)
    ev.metrics["skipped"] = len(skipped)
    ev.metrics["warning"] = warning
    if out_dir is not None:
        out = Path(out_dir)
        m = ev.metrics
        atomic_write_json(out / "metrics.json", {**m, "trained_on": model.config.trained_on,
                                                 "skipped_files": skipped})
        atomic_write_text(out / "predictions.csv", ev.predictions.to_csv(index=False))
        plot_confusion(m["confusion"], m["labels"], f"UAR {m['uar']:.3f}", out / "confusion.png")
        atomic_write_text(out / "report.md", f"# evaluation\n\nmodel: `{model_name}` (trained on "
                          f"{model.config.trained_on})\n\n{metrics_markdown(m)}\n\n![confusion](confusion.png)\n")
    return ev


def metrics_markdown(m: dict) -> str:
    """One-row Markdown table of an evaluation's metrics."""
    from .plots import markdown_table

    row = {"n": m["n"], "UAR": m["uar"], "WA": m["wa"], "macro-F1": m["macro_f1"], "chance": m["chance_uar"],
           "skipped": m.get("skipped", 0)}
    return markdown_table([row], list(row))
