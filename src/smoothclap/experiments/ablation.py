"""Soft-target ablation on the cross-corpus benchmark: which target construction helps, chosen on
validation speakers of the training corpora only, then reported once on each held-out corpus.

For every held-out corpus H (leave one corpus out over the corpora given):

1. split the training corpora's speakers into train / validation (``validation_folds(...,
   "speakers")``: every third speaker of each corpus; never a clip of H);
2. train CLAP with each shared candidate (towers, normalisation) and SmoothCLAP with each shared
   candidate x target candidate on the training speakers (``val_seeds``), score zero-shot UAR on
   the validation speakers with each corpus' own task prompts; pick the best per method;
3. retrain both chosen configurations on all training clips with ``seeds`` (paired: same seeds,
   same bundle) and score H once.

Target diagnostics (q diagonal mass, effective neighbours, target precision, calibrated taus) are
recorded for every SmoothCLAP candidate so the table shows *why* an option helps or not.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..cache import cache_root
from ..config import RunConfig
from ..corpora import training_table
from ..io import atomic_write_json, atomic_write_text
from ..plots import markdown_table
from ..targets import apply_target_options
from ..tasks import get_task, score_table
from ..trainer import prepare, train
from .loco import _summary, build_config, load_corpus, test_features, validation_folds
from .settings import AblationConfig, LocoConfig
from .report import machine_info

log = logging.getLogger("smoothclap")

#: Shared candidates (apply to CLAP and SmoothCLAP alike): dotted RunConfig overrides.
SHARED_GRID: dict[str, list[str]] = {
    "raw": [],
    "corpus-norm": ["model.feature_norm_group=corpus"],
}

#: SmoothCLAP target candidates (loss overrides on top of the ``smoothclap`` preset).
TARGET_GRID: dict[str, list[str]] = {
    "paper (tau .07)": [],
    "center + diag .5": ["loss.target_standardize=center", "loss.calibrate=diag", "loss.calibrate_value=0.5"],
    "corpus-zscore + diag .5": ["loss.target_standardize=zscore", "loss.target_standardize_group=corpus",
                                "loss.calibrate=diag", "loss.calibrate_value=0.5"],
    "corpus-zscore + diag .3": ["loss.target_standardize=zscore", "loss.target_standardize_group=corpus",
                                "loss.calibrate=diag", "loss.calibrate_value=0.3"],
    "corpus-zscore + top-5 + diag .5": ["loss.target_standardize=zscore", "loss.target_standardize_group=corpus",
                                        "loss.topk=5", "loss.calibrate=diag", "loss.calibrate_value=0.5"],
    "corpus-zscore + diag .5, beta .3": ["loss.target_standardize=zscore", "loss.target_standardize_group=corpus",
                                         "loss.calibrate=diag", "loss.calibrate_value=0.5", "loss.beta=0.3"],
    "egemaps local, corpus-zscore + diag .5": ["towers.local=egemaps", "loss.target_standardize=zscore",
                                               "loss.target_standardize_group=corpus", "loss.calibrate=diag",
                                               "loss.calibrate_value=0.5"],
}


def _method_config(lc: LocoConfig, shared: Sequence[str], target: Sequence[str] | None) -> RunConfig:
    """CLAP when ``target`` is None, else SmoothCLAP with the target overrides."""
    if target is None:
        return build_config(lc, list(shared), "CLAP")
    return build_config(lc, [*shared, *target], "SmoothCLAP")


class _Bundles:
    """Prepared bundles keyed by what changes the data (towers, normalisation, bins); target
    options are applied on top per candidate (cheap), so each bundle is prepared once."""

    def __init__(self, lc: LocoConfig):
        self.lc = lc
        self.store: dict = {}

    def get(self, cfg: RunConfig, table_key: str, table):
        key = (table_key, cfg.towers.audio, cfg.towers.local, cfg.model.feature_norm_group, cfg.captions.group_by,
               cfg.loss.text_target)
        if key not in self.store:
            base = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, target_standardize="none"))
            cache = cache_root(self.lc.cache_dir)
            self.store[key] = prepare(base, table, cache_dir=cache, progress=False, need_local=True, need_desc=True)
        return apply_target_options(cfg, self.store[key])


def _train_score(lc, cfg, prepared, seeds, tests: dict, feats: dict) -> tuple[dict, list[dict]]:
    """Train ``cfg`` per seed, score each test table with its task; returns per-test run lists and
    the last-epoch history records (diagnostics)."""
    out = {n: [] for n in tests}
    hist = []
    for seed in seeds:
        c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=int(seed)))
        res = train(c, prepared, run_dir=None, progress=False)
        hist.append(res.history[-1])
        for n, df in tests.items():
            corpus = n.split("/")[0]
            r = score_table(get_task(corpus), res.model, df, features=feats[n])
            r["seed"] = int(seed)
            out[n].append(r)
    return out, hist


def _diag_summary(hist: list[dict]) -> dict:
    keys = ("q_diag", "q_neighbours", "q_precision", "q_precision_chance", "scale")
    return {k: float(np.mean([h[k] for h in hist if k in h])) for k in keys if any(k in h for h in hist)}


def run_ablation(ac: AblationConfig) -> dict:
    lc = ac.loco
    t_all = time.perf_counter()
    corpora = [c.lower() for c in lc.corpora]
    tables = {c: load_corpus(c, lc.data_root) for c in corpora}
    shared_grid = ac.shared_grid or SHARED_GRID
    target_grid = ac.target_grid or TARGET_GRID
    cache = cache_root(lc.cache_dir)
    results: dict = {"config": {**dataclasses.asdict(lc), "val_seeds": list(ac.val_seeds)},
                     "shared_grid": shared_grid, "target_grid": target_grid, "heldout": {},
                     "machine": machine_info()}
    for h in [x.lower() for x in (lc.heldout or corpora)]:
        t_h = time.perf_counter()
        train_tables = {c: tables[c] for c in corpora if c != h}
        tr, va = validation_folds(train_tables, "speakers")[0]
        tr_table = training_table(tr)
        va_tables = {f"{n}/val": df for n, df in va.items()}
        bundles = _Bundles(lc)
        cands: dict[str, dict] = {}
        for sname, shared in shared_grid.items():
            options = [("CLAP", None, None)] + [("SmoothCLAP", tname, t) for tname, t in target_grid.items()]
            feats = None
            for method, tname, tov in options:
                cfg = _method_config(lc, shared, tov)
                prepared = bundles.get(cfg, "val", tr_table)
                if feats is None:
                    feats = test_features(cfg, prepared, va_tables, cache)
                runs, hist = _train_score(lc, cfg, prepared, ac.val_seeds, va_tables, feats)
                score = float(np.mean([np.mean([r["uar"] for r in rs]) for rs in runs.values()]))
                name = sname if method == "CLAP" else f"{sname} / {tname}"
                cands[name] = {"method": method, "shared": sname, "target": tname,
                               "overrides": [*shared, *(tov or [])], "val_uar": score,
                               "val_per_corpus": {n: float(np.mean([r["uar"] for r in rs])) for n, rs in runs.items()},
                               "diagnostics": _diag_summary(hist) if method == "SmoothCLAP" else {}}
                log.info("held out %s, validation %-60s UAR %.3f", h, name, score)
        best = {m: max((k for k, v in cands.items() if v["method"] == m), key=lambda k: cands[k]["val_uar"])
                for m in ("CLAP", "SmoothCLAP")}
        # the one look at the held-out corpus: both chosen configurations, paired seeds
        final = {}
        full_table = training_table(train_tables)
        test = {h: tables[h]}
        for m, k in best.items():
            c = cands[k]
            shared = shared_grid[c["shared"]]
            cfg = _method_config(lc, shared, None if m == "CLAP" else target_grid[c["target"]])
            prepared = bundles.get(cfg, "full", full_table)
            assert h not in prepared.trained_on
            runs, hist = _train_score(lc, cfg, prepared, lc.seeds, test, test_features(cfg, prepared, test, cache))
            final[m] = {"choice": k, **_summary(runs[h]), "diagnostics": _diag_summary(hist) if m == "SmoothCLAP" else {},
                        "chance": runs[h][0]["chance_uar"]}
        diff = np.array(final["SmoothCLAP"]["uar"]) - np.array(final["CLAP"]["uar"])
        results["heldout"][h] = {"trained_on": sorted(train_tables), "validation_speakers": {
            n: sorted(df["speaker"].astype(str).unique()) for n, df in va.items()},
            "candidates": cands, "best": best, "final": final,
            "wins": int((diff > 0).sum()), "n_seeds": int(len(diff)), "mean_diff": float(diff.mean()),
            "seconds": time.perf_counter() - t_h}
        log.info("held out %s: CLAP[%s] %.3f, SmoothCLAP[%s] %.3f, wins %d/%d", h, best["CLAP"],
                 final["CLAP"]["mean"], best["SmoothCLAP"], final["SmoothCLAP"]["mean"], (diff > 0).sum(), len(diff))
    results["wall_seconds"] = time.perf_counter() - t_all
    results["tables_md"] = ablation_tables(results)
    if lc.out_dir:
        out = Path(lc.out_dir)
        atomic_write_json(out / "ablation.json", results)
        atomic_write_text(out / "ablation.md", "# Soft-target ablation (LOCO)\n\n" + results["tables_md"] + "\n")
    return results


def ablation_tables(results: dict) -> str:
    """Markdown: per held-out corpus the validation table of all candidates, then the final table."""
    parts = []
    final_rows = []
    for h, e in results["heldout"].items():
        rows = []
        for name, c in sorted(e["candidates"].items(), key=lambda kv: (kv[1]["method"], -kv[1]["val_uar"])):
            d = c["diagnostics"]
            rows.append({"method": c["method"], "candidate": name + (" **(chosen)**" if name in e["best"].values() else ""),
                         "val UAR": c["val_uar"],
                         "q diag": d.get("q_diag", ""), "q neighbours": d.get("q_neighbours", ""),
                         "target precision (chance)": (f"{d['q_precision']:.3f} ({d['q_precision_chance']:.3f})"
                                                       if "q_precision" in d else "")})
        parts.append(f"### Validation, held out {h} (trained on {' + '.join(e['trained_on'])}; validation = "
                     f"every third speaker of each training corpus)\n\n"
                     + markdown_table(rows, list(rows[0])))
        f = e["final"]
        final_rows.append({"held out (trained on)": f"{h} ({' + '.join(e['trained_on'])})", "chance": f["CLAP"]["chance"],
                           "CLAP": f"{f['CLAP']['mean']:.3f} ± {f['CLAP']['sd']:.3f}",
                           "SmoothCLAP": f"{f['SmoothCLAP']['mean']:.3f} ± {f['SmoothCLAP']['sd']:.3f}",
                           "SmoothCLAP wins": f"{e['wins']}/{e['n_seeds']}",
                           "CLAP choice": f["CLAP"]["choice"], "SmoothCLAP choice": f["SmoothCLAP"]["choice"]})
    head = ("### Held-out results of the chosen configurations (UAR mean ± sd over seeds, paired)\n\n"
            + markdown_table(final_rows, list(final_rows[0])))
    return head + "\n\n" + "\n\n".join(parts)
