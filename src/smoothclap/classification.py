"""The result of classifying files zero-shot (:func:`smoothclap.zeroshot.classify_files`), whichever
model kind computed it (a PyTorch model or an ONNX export)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import SkipLog


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
