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

from .errors import BadInputError, SkipLog, UserError
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


def file_list(table: pd.DataFrame) -> list[str]:
    """The ``file`` column as a list of str (``astype(str)`` would refuse a file name that is not
    valid UTF-8, which pandas' string dtype cannot hold)."""
    return [f if isinstance(f, str) else str(f) for f in table["file"]]


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


def _registered(name: str) -> bool:
    """A corpus of the registry (EmoDB, RAVDESS, ...); not the generic manifest reader's names
    (``manifest``, ``csv``, ...), which a manifest file's stem may happen to be."""
    from .corpora import get_info

    try:
        return get_info(name).name != "manifest"
    except ValueError:
        return False


def check_not_trained_on(model, corpora: Sequence[str], allow: bool = False, what: str = "") -> str | None:
    """Refuse (:class:`TrainedCorpusError`) to score corpora listed in ``model.config.trained_on``
    (names compared through the corpus registry's aliases); with ``allow`` return a loud warning
    instead. None when no scored corpus trained the model.

    A model that records its training clips by content (``model.trained_clips``, see
    :func:`check_clips_not_trained_on`) is compared by name for registered corpora only: a
    manifest's own name (its file stem, e.g. ``manifest``) says nothing about the clips in it.
    Models saved before that record compare every name."""
    from .corpora import canonical

    by_content = getattr(model, "trained_clips", None) is not None
    trained = {canonical(c) for c in (getattr(model.config, "trained_on", None) or [])
               if not by_content or _registered(c)}
    overlap = sorted({canonical(c) for c in corpora if not by_content or _registered(c)} & trained)
    if not overlap:
        return None
    msg = (f"{what + ': ' if what else ''}corpus {', '.join(map(repr, overlap))} TRAINED this model "
           f"(trained_on={model.config.trained_on}); its scores are not zero-shot")
    if not allow:
        raise TrainedCorpusError(f"refusing to score {msg}; pass allow_trained_corpus / "
                                 "--allow-trained-corpus to override")
    log.warning("WARNING: %s", msg)
    return "WARNING: " + msg


def trained_clip_mask(model, files: Sequence[str]) -> np.ndarray | None:
    """``[N]`` bool: which of ``files`` have the content of a clip that trained ``model`` (compared
    by the 8-byte sha1 prefixes the model records, ``model.trained_clips``; files that cannot be
    read are False: reading them later says why). None when the model records no training clips
    (saved before the record existed, a baseline). An ONNX export carries its model's record."""
    trained = getattr(model, "trained_clips", None)
    if trained is None:
        return None
    from .audio import content_prefixes

    prefixes, ok = content_prefixes([str(f) for f in files])
    return ok & np.isin(prefixes, np.asarray(trained, dtype=np.uint64))


def check_clips_not_trained_on(model, files: Sequence[str], allow: bool = False, what: str = "") -> str | None:
    """Refuse (:class:`TrainedCorpusError`) to score clips that trained ``model``, compared by content
    (:func:`trained_clip_mask`), whatever the manifest or corpus that lists them is called; the
    message counts them. With ``allow`` return a loud warning (with the count) instead. None when
    no clip trained the model, or the model records no training clips. ``what``: the table (a
    manifest, a corpus folder) named in the message. The shape every zero-shot guard calls
    (``evaluate``, the task runner, the LOCO benchmark)."""
    mask = trained_clip_mask(model, files)
    if mask is None or not mask.any():
        return None
    k, n = int(mask.sum()), len(mask)
    where = f"{what}: " if what else ""
    if not allow:
        raise TrainedCorpusError(f"{where}{k} of {n} clips trained this model (the same audio as its training "
                                 "clips: scores on them are not zero-shot); --allow-trained-corpus to score anyway")
    msg = (f"{where}{k} of {n} clips TRAINED this model (the same audio as its training clips); scored anyway "
           "(--allow-trained-corpus): not zero-shot")
    log.warning("WARNING: %s", msg)
    return "WARNING: " + msg


def _joined(*warnings: str | None) -> str | None:
    parts = [w for w in warnings if w]
    return "; ".join(parts) if parts else None


def _check_classes(table: pd.DataFrame, labels: Sequence[str] | None, source: str) -> None:
    """Zero-shot scores need at least two classes to choose among: the given ``labels``, else the
    classes of the scored clips (one class would be right for every clip by construction)."""
    if labels is not None:
        if len(list(labels)) < 2:
            raise BadInputError("labels", f"need at least two labels, got {list(labels)}")
        return
    present = sorted(set(table["label"].astype(str))) if "label" in table.columns else []
    if len(present) < 2:
        raise BadInputError(source, f"{len(present)} class{'es' if len(present) != 1 else ''} among the scored "
                            f"clips ({', '.join(map(repr, present)) or 'none'}); zero-shot scoring needs >= 2 "
                            "classes (with one, every clip is right by construction): give --labels to score them "
                            "among others")


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
        raise BadInputError("labels", f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''} in the scored table are not "
                            f"among the labels scored {labels} (give every class with --labels)")
    files = file_list(table)
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
    # object, not pandas' string dtype: a file name that is not UTF-8 (surrogate escapes) stays as it is
    df = pd.DataFrame({"file": pd.Series(np.asarray(files, dtype=object)[keep], dtype=object), "label": y_true,
                       "pred": preds})
    for j, lab in enumerate(labels):
        df[f"p_{lab}"] = probs[:, j]
    return EvalResult(metrics=m, predictions=df, skipped=skip, seconds=time.perf_counter() - t0)


def evaluate_table(model, table, *, labels: Sequence[str] | None = None, prompts=None,
                   templates=None, cache_dir=None, skip_bad: bool = False, allow_trained_corpus: bool = False,
                   out_dir=None, model_name: str = "", progress: bool = True) -> EvalResult:
    """``smoothclap evaluate --manifest/--corpus``: refuse corpora the model trained on, score the
    table zero-shot and, with ``out_dir``, write ``metrics.json``, ``predictions.csv``,
    ``confusion.png`` and ``report.md``. ``table``: a :class:`~smoothclap.corpora.Table` (or a
    DataFrame, which skipped nothing); the files left out while reading it (``table.skipped``) and
    those of the audio are counted together."""
    from .corpora import Table, check_whole_files
    from .io import atomic_write_json, atomic_write_text
    from .plots import plot_confusion

    read = Table.of(table)
    table = read.rows
    _check_classes(table, labels, read.source)
    corpora = set(table["corpus"].dropna().astype(str)) if "corpus" in table.columns else set()
    warning = check_not_trained_on(model, corpora, allow=allow_trained_corpus)
    check_whole_files(table, "scoring", source=read.source)  # here, where the manifest is known
    files = file_list(table)
    mask = trained_clip_mask(model, files)
    overlap = int(mask.sum()) if mask is not None else None
    warning = _joined(warning, check_clips_not_trained_on(model, files, allow=allow_trained_corpus,
                                                          what=read.source))
    skip = SkipLog(skip=skip_bad)
    ev = zero_shot_evaluate(model, table, labels, prompts=prompts, templates=templates, cache_dir=cache_dir,
                            skip=skip, progress=progress)
    _check_classes(ev.predictions, labels, read.source)  # the clips left after skipping bad ones
    skipped = list(read.skipped.items) + list(skip.items)
    ev.metrics["skipped"] = len(skipped)
    ev.metrics["warning"] = warning
    ev.metrics["trained_clips_scored"] = overlap  # clips that trained the model (None: not recorded)
    if out_dir is not None:
        out = Path(out_dir)
        m = ev.metrics
        atomic_write_json(out / "metrics.json", {**m, "trained_on": model.config.trained_on,
                                                 "skipped_files": skipped})
        atomic_write_text(out / "predictions.csv", ev.predictions.to_csv(index=False))
        plot_confusion(m["confusion"], m["labels"], f"UAR {m['uar']:.3f}", out / "confusion.png")
        warn = f"**{warning}**\n\n" if warning else ""
        atomic_write_text(out / "report.md", f"# evaluation\n\nmodel: `{model_name}` (trained on "
                          f"{model.config.trained_on})\n\n{warn}{metrics_markdown(m)}\n\n![confusion](confusion.png)\n")
    return ev


def metrics_markdown(m: dict) -> str:
    """One-row Markdown table of an evaluation's metrics."""
    from .plots import markdown_table

    row = {"n": m["n"], "UAR": m["uar"], "WA": m["wa"], "macro-F1": m["macro_f1"], "chance": m["chance_uar"],
           "skipped": m.get("skipped", 0)}
    return markdown_table([row], list(row))
