"""Classifying audio files zero-shot with any model (:func:`classify_files`: ``smoothclap classify``,
the web page, the API) and its result (:class:`Classification`), whichever model kind computed it
(a PyTorch model, a ``hf-clap:`` baseline or an ONNX export). The arithmetic is
:class:`smoothclap.zeroshot.ZeroShotClassifier`'s; this module adds opening a model given by
name (:func:`smoothclap.models.load_model`) and the table of results. No PyTorch is imported here."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from .errors import BadInputError, SkipLog
from .models import load_model
from .zeroshot import ZeroShotClassifier


@dataclass
class Classification:
    """What :func:`classify_files` returns: one row per input file (``file``, ``group``, ``pred``,
    ``p_<label>``...; ``pred`` None and NaN probabilities for skipped files), the labels, and the
    skipped files."""

    table: pd.DataFrame
    labels: list[str]
    skipped: SkipLog = field(default_factory=SkipLog)

    def ranked(self, top: int = 5) -> list[tuple[str, list[tuple[str, float]]]]:
        """Per classified file: [(label, probability)] best first, at most ``top``."""
        out = []
        probs = self.table[[f"p_{lab}" for lab in self.labels]].to_numpy(dtype=float)
        # column by column (no row Series: file names that are not UTF-8 stay plain Python strings)
        for f, pred, p in zip(self.table["file"].tolist(), self.table["pred"].tolist(), probs):
            if not isinstance(pred, str):  # skipped file
                continue
            order = np.argsort(-p, kind="stable")[:top]
            out.append((f, [(self.labels[i], float(p[i])) for i in order]))
        return out


def classify_files(model, files: Sequence[str], labels: Sequence[str], *, groups=None, prompts=None,
                   templates=None, cache_dir=None, batch_size: int = 16, skip_bad: bool = False,
                   progress: bool = False) -> Classification:
    """Rank free-text ``labels`` for each audio file (``smoothclap classify``, the web page).

    ``model``: any :class:`~smoothclap.zeroshot.ZeroShotModel`, or what :func:`smoothclap.models.load_model` opens (a
    model folder, an ONNX export folder, a Hub id, ``hf-clap:...``). ``groups`` ``[N]`` (speaker
    or corpus per file, optional) feeds the model's feature normalisation; without it the model
    uses its stored training statistics, so even a single clip is scored as the heads were
    trained. Bad files raise unless ``skip_bad``.
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    files = [str(f) for f in files]
    if groups is not None and len(groups) != len(files):
        raise BadInputError("groups", f"{len(groups)} groups for {len(files)} files (one per file)")
    skip = SkipLog(skip=skip_bad)
    clf = ZeroShotClassifier(model, labels, prompts=prompts, templates=templates)
    preds, probs, ok = clf.predict_files(files, groups, cache_dir=cache_dir, batch_size=batch_size, skip=skip,
                                         progress=progress)
    # object columns: file names that are not UTF-8 (surrogate escapes) stay as they are
    df = pd.DataFrame({"file": pd.Series(files, dtype=object),
                       "group": pd.Series(list(groups) if groups is not None else [None] * len(files), dtype=object),
                       "pred": pd.Series(preds, dtype=object)})
    for j, lab in enumerate(clf.labels):
        df[f"p_{lab}"] = probs[:, j]
    return Classification(table=df, labels=clf.labels, skipped=skip)
