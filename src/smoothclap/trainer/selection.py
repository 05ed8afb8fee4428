"""Model selection during training: zero-shot UAR on a held-out split after every epoch."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import SkipLog
from ..evaluate import zero_shot_evaluate
from ..io import atomic_write_json
from .distributed import DistEnv

log = logging.getLogger("smoothclap")


class DevSelector:
    """Zero-shot UAR on a held-out table after every epoch, best epoch kept.

    Use as ``train(..., callback=DevSelector(dev_table, run_dir, ...))``. Writes
    ``<run_dir>/selection.json`` (every epoch's scores and the best) and saves the best model to
    ``<run_dir>/best_model`` (with fine-tuned towers in e2e mode). Runs on rank 0 only.
    Resumes: the best so far is read back from ``selection.json``.
    """

    def __init__(self, table, run_dir: str | Path | None, *, labels=None, templates: str = "bare",
                 prompts: dict | None = None, cache_dir=None, env: DistEnv | None = None,
                 skip_bad: bool = False):
        labels = list(labels) if labels is not None else sorted(table["label"].astype(str).unique())
        self.table = table[table["label"].astype(str).isin(labels)].reset_index(drop=True)
        if len(self.table) == 0:
            raise ValueError(f"model selection: no rows with labels {labels}")
        self.labels = labels
        self.templates, self.prompts, self.cache_dir = templates, prompts, cache_dir
        self.skip_bad = skip_bad
        self.env = env or DistEnv()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.scores: list[dict] = []
        self.best: dict | None = None
        sel = self.run_dir / "selection.json" if self.run_dir is not None else None
        if sel is not None and sel.exists():
            data = json.loads(sel.read_text())
            self.scores, self.best = data.get("epochs", []), data.get("best")

    def __call__(self, epoch: int, rec: dict, model) -> None:
        if not self.env.is_main:
            return
        m = model.copy()
        fresh_audio = "audio" in m.trainable_towers  # a fine-tuned tower: cached features are stale
        ev = zero_shot_evaluate(m, self.table, self.labels, prompts=self.prompts, templates=self.templates,
                                cache_dir=None if fresh_audio else self.cache_dir,
                                skip=SkipLog(skip=self.skip_bad), progress=False)
        score = {"epoch": epoch, "uar": ev.metrics["uar"], "wa": ev.metrics["wa"],
                 "macro_f1": ev.metrics["macro_f1"], "n": ev.metrics["n"]}
        rec["select_uar"] = score["uar"]
        self.scores = [s for s in self.scores if s["epoch"] < epoch] + [score]
        if self.best is None or score["uar"] > self.best["uar"]:
            self.best = score
            if self.run_dir is not None:
                m.save_pretrained(self.run_dir / "best_model")
        log.info("epoch %d: selection UAR %.4f (best %.4f at epoch %d)", epoch, score["uar"],
                 self.best["uar"], self.best["epoch"])
        if self.run_dir is not None:
            atomic_write_json(self.run_dir / "selection.json",
                              {"labels": self.labels, "n": len(self.table), "epochs": self.scores, "best": self.best})
