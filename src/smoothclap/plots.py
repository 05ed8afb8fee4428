"""Markdown tables and PNG figures (confusion matrices, soft-target heatmaps, training curves)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .io import atomic_save


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless: reports are files
    import matplotlib.pyplot as plt

    return plt


def markdown_table(rows: Sequence[dict], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    headers = list(headers or columns)
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c, "")
            cells.append(f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: Bounds on what a figure draws, whatever the number and length of labels (a label is user input):
#: tick labels are cut to ``MAX_LABEL_CHARS`` with an ellipsis, titles to ``MAX_TITLE_CHARS``, a
#: figure side to ``MAX_FIGURE_INCHES`` (at 110 dpi), and cells are annotated up to ``MAX_ANNOTATED``
#: classes. The PNG stays under about 2,000 x 2,000 pixels.
MAX_LABEL_CHARS = 24
MAX_TITLE_CHARS = 120
MAX_FIGURE_INCHES = 14.0
MAX_ANNOTATED = 30
_DPI = 110


def short(text, limit: int = MAX_LABEL_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis (file names that are not
    valid UTF-8 keep a printable escape)."""
    t = " ".join(str(text).split())
    t = t.encode("utf-8", "backslashreplace").decode("utf-8")
    return t if len(t) <= limit else t[: max(limit - 1, 1)] + "\u2026"


def _side(n: int, per: float, base: float) -> float:
    return min(base + per * n, MAX_FIGURE_INCHES)


def _savefig(fig, path: Path) -> Path:
    plt = _plt()
    atomic_save(path, lambda t: fig.savefig(t, dpi=_DPI, bbox_inches="tight", format="png"))
    plt.close(fig)
    return path


def plot_confusion(confusion, labels: Sequence[str], title: str, path: str | Path) -> Path:
    """Row-normalised confusion matrix (rows = true class) with counts in the cells."""
    plt = _plt()
    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(labels)
    ticks = [short(lab) for lab in labels]
    fig, ax = plt.subplots(figsize=(_side(n, 0.6, 1.0), _side(n, 0.55, 0.8)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    font = 8 if n <= MAX_ANNOTATED else max(2.0, 8 * MAX_ANNOTATED / n)
    if n <= 200:
        ax.set_xticks(range(n), ticks, rotation=45, ha="right", fontsize=font)
        ax.set_yticks(range(n), ticks, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(short(title, MAX_TITLE_CHARS), fontsize=9)
    if n <= MAX_ANNOTATED:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="recall share")
    return _savefig(fig, Path(path))


def plot_targets(example: dict, path: str | Path, title: str = "soft targets of one batch") -> Path | None:
    """Heatmaps of q (blend of audio- and text-similarity targets) and y for one batch, rows and
    columns sorted by the clips' (training) labels so informative targets show as blocks."""
    if not example or example.get("y") is None:
        return None
    plt = _plt()
    labels = list(example["labels"])
    order = np.argsort(np.asarray(labels, dtype=object), kind="stable")
    mats = [("y (targets)", example["y"])]
    if example.get("q") is not None:
        mats.insert(0, ("q (soft part)", example["q"]))
    fig, axes = plt.subplots(1, len(mats), figsize=(5.2 * len(mats), 4.8))
    axes = np.atleast_1d(axes)
    sorted_labels = [short(labels[i]) for i in order]
    bounds = [i for i in range(1, len(sorted_labels)) if sorted_labels[i] != sorted_labels[i - 1]]
    for ax, (name, m) in zip(axes, mats):
        m = np.asarray(m)[order][:, order]
        im = ax.imshow(m, cmap="magma")
        for b in bounds:
            ax.axhline(b - 0.5, color="cyan", lw=0.5)
            ax.axvline(b - 0.5, color="cyan", lw=0.5)
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(order)), sorted_labels, rotation=90, fontsize=5)
        ax.set_yticks(range(len(order)), sorted_labels, fontsize=5)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(short(title, MAX_TITLE_CHARS), fontsize=10)
    return _savefig(fig, Path(path))


def plot_history(histories: dict[str, list[dict]], path: str | Path,
                 keys: Sequence[str] = ("loss", "scale", "q_diag", "q_precision")) -> Path:
    """Per-epoch curves of several runs side by side."""
    plt = _plt()
    keys = [k for k in keys if any(k in h[0] for h in histories.values() if h)]
    fig, axes = plt.subplots(1, len(keys), figsize=(min(3.6 * len(keys), MAX_FIGURE_INCHES), 3.0))
    axes = np.atleast_1d(axes)
    for ax, k in zip(axes, keys):
        for name, h in histories.items():
            if h and k in h[0]:
                ax.plot([r["epoch"] for r in h], [r[k] for r in h], label=short(name, 40))
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _savefig(fig, Path(path))
