"""The result of classifying files zero-shot, whichever backend computed it (PyTorch:
:func:`smoothclap.zeroshot.classify_files`; ONNX: :func:`smoothclap.onnx_runtime.classify_files`)."""
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
        cols = [f"p_{lab}" for lab in self.labels]
        for _, r in self.table.iterrows():
            if not isinstance(r["pred"], str):  # skipped file
                continue
            p = r[cols].to_numpy(dtype=float)
            order = np.argsort(-p, kind="stable")[:top]
            out.append((r["file"], [(self.labels[i], float(p[i])) for i in order]))
        return out
