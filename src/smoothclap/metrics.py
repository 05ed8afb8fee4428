"""Classification metrics: UAR (unweighted average recall), WA (accuracy), macro-F1, confusion."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict:
    """UAR averages recall over the classes present in ``y_true`` (the usual definition, equal to
    sklearn's balanced accuracy); macro-F1 likewise; the confusion matrix covers all ``labels``
    (rows = true, columns = predicted)."""
    y_true = np.asarray(y_true, dtype=object)
    y_pred = np.asarray(y_pred, dtype=object)
    if len(y_true) == 0:
        raise ValueError("no predictions to score")
    present = [lab for lab in labels if np.any(y_true == lab)]
    return {
        "uar": float(recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "wa": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "n": int(len(y_true)),
        "chance_uar": 1.0 / len(present),
        "labels": list(labels),
        "confusion": confusion_matrix(y_true, y_pred, labels=list(labels)).tolist(),
    }
