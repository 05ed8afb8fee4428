"""The soft-target study on the cross-corpus benchmark: which settings and which target
construction help, chosen on validation speakers of the training corpora only, then reported once
on each held-out corpus; and what feature normalisation does when held-out speakers show few
emotions.

For every held-out corpus H (leave one corpus out over the corpora given):

1. split the training corpora's speakers into train / validation (every third speaker of each
   corpus, ``validation_folds(..., "speakers")``; never a clip of H);
2. a coordinate search over :data:`DEFAULT_STAGES`, from a fixed start (``base_shared`` /
   ``base_target``: fresh captions every epoch, the reconstructed soft targets): each stage tries its
   candidates on top of the winners so far (its first candidate, no change, is the incumbent). ``shared`` stages (feature
   normalisation, training length, caption pool) train CLAP and SmoothCLAP alike and optimise their
   mean validation UAR; ``target`` stages (the q_a2a source, the loss reading, beta, gamma) train
   SmoothCLAP only. Every candidate is scored with each prompt template set; the stages optimise the
   protocol's bare label words, and the template set is chosen at the end on the winners;
3. retrain on all training clips with ``seeds`` (paired: same seeds, same bundle) and score H once:
   CLAP (the shared winner), SmoothCLAP (validated), and the named presets ``smoothclap-reconstructed``
   and ``paper-main`` on the same shared settings, each with its target precision;
4. the skewed-speaker condition: H with each speaker keeping only ``skew_emotions`` of its emotions
   (seeded), scored by models trained with each feature normalisation (none / corpus / speaker),
   with the test groups and without them (the model's stored training statistics).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..cache import cache_root
from ..config import RunConfig
from ..corpora import training_table
from ..io import atomic_write_json, atomic_write_text
from ..plots import markdown_table
from ..targets import apply_target_options
from ..tasks import get_task, score_table
from ..trainer import prepare, train
from .loco import _summary, build_config, load_corpus, test_features, validation_folds
from .protocols import skew_speakers
from .report import machine_info
from .settings import AblationConfig, LocoConfig

log = logging.getLogger("smoothclap")

_Z = ["loss.target_standardize=zscore", "loss.target_standardize_group=corpus"]
_D5 = ["loss.calibrate=diag", "loss.calibrate_value=0.5"]

#: (kind, stage, {candidate: dotted RunConfig overrides}); the first candidate of a stage is "no
#: change" (the incumbent).
DEFAULT_STAGES: list[tuple[str, str, dict[str, list[str]]]] = [
    ("shared", "features", {"raw": [], "corpus-norm": ["model.feature_norm_group=corpus"],
                            "speaker-norm": ["model.feature_norm_group=speaker"]}),
    ("shared", "training length", {"15 epochs": [], "5 epochs": ["train.epochs=5"], "2 epochs": ["train.epochs=2"]}),
    ("shared", "caption pool", {"per epoch": [], "pool 1": ["captions.pool_size=1"],
                                "pool 2": ["captions.pool_size=2"], "pool 4": ["captions.pool_size=4"]}),
    ("target", "q_a2a source", {
        "whisper, tau .07 (paper)": [],
        "whisper, corpus-zscore, diag .5": [*_Z, *_D5],
        "egemaps, corpus-zscore, diag .5": ["towers.local=egemaps", *_Z, *_D5],
        "posteriors, tau .07": ["loss.local_source=posteriors"],
        "posteriors, diag .5": ["loss.local_source=posteriors", *_D5],
        "posteriors, diag .5, gamma 0": ["loss.local_source=posteriors", *_D5, "loss.gamma=0.0"],
        "labels": ["loss.local_source=labels"],
        "labels, gamma 0": ["loss.local_source=labels", "loss.gamma=0.0"],
    }),
    ("target", "loss reading", {"KL": [], "Jeffreys": ["loss.divergence=jeffreys"],
                                "KL, t2a renormalised": ["loss.t2a_target=renormalized"]}),
    ("target", "beta", {"as chosen (.1)": [], "beta .3": ["loss.beta=0.3"], "beta .5": ["loss.beta=0.5"]}),
    ("target", "gamma", {"as chosen": [], "gamma 0": ["loss.gamma=0.0"], "gamma .1": ["loss.gamma=0.1"],
                         "gamma .5": ["loss.gamma=0.5"]}),
]

#: The template sets every candidate is scored with (the stages optimise the first).
TEMPLATE_SETS = ("bare", "ensemble")
NORMS = {"none": [], "corpus": ["model.feature_norm_group=corpus"], "speaker": ["model.feature_norm_group=speaker"]}


def _strip_norm(ov: Sequence[str]) -> list[str]:
    return [o for o in ov if not o.startswith("model.feature_norm_group=")]


class _Bundles:
    """Prepared bundles keyed by what changes the data (towers, bins, captions, target source);
    target geometry is applied on top per candidate (cheap), so each bundle is prepared once."""

    def __init__(self, lc: LocoConfig):
        self.lc = lc
        self.store: dict = {}

    def get(self, cfg: RunConfig, table_key: str, table):
        lcf = cfg.loss
        key = (table_key, cfg.towers.audio, cfg.towers.local, cfg.captions.group_by, cfg.captions.pool_size,
               cfg.train.epochs, lcf.text_target, lcf.local_source, lcf.posterior_kind, lcf.posterior_folds)
        if key not in self.store:
            base = cfg.updated({"loss.target_standardize": "none"})
            self.store[key] = prepare(base, table, cache_dir=cache_root(self.lc.cache_dir), progress=False,
                                      need_local=True, need_desc=True)
        return apply_target_options(cfg, self.store[key])


def _diag_summary(hist: list[dict]) -> dict:
    keys = ("q_diag", "q_neighbours", "q_precision", "q_precision_chance", "scale")
    return {k: float(np.mean([h[k] for h in hist if k in h])) for k in keys if any(k in h for h in hist)}


def _runs(cfg, prepared, seeds, tests: dict, feats: dict, templates=TEMPLATE_SETS, groups: bool = True):
    """Train ``cfg`` per seed; score every test table with its task under each template set.
    Returns ({template: {test: [result per seed]}}, last-epoch history per seed)."""
    out = {t: {n: [] for n in tests} for t in templates}
    hist = []
    for seed in seeds:
        c = cfg.updated({"train.seed": int(seed)})
        res = train(c, prepared, run_dir=None, progress=False)
        hist.append(res.history[-1])
        for n, df in tests.items():
            task = get_task(n.split("/")[0])
            for t in templates:
                r = score_table(task, res.model, df, features=feats[n], templates=None if t == "bare" else t,
                                use_groups=groups)
                r["seed"] = int(seed)
                out[t][n].append(r)
    return out, hist


def _mean_uar(per_test: dict) -> float:
    return float(np.mean([np.mean([r["uar"] for r in runs]) for runs in per_test.values()]))


def _search(ac: AblationConfig, stages, bundles: _Bundles, tr_table, va_tables: dict, feats: dict) -> dict:
    """The coordinate search on validation speakers; returns every candidate's record and the winners."""
    lc = ac.loco
    shared: list[str] = list(ac.base_shared)
    target: list[str] = list(ac.base_target)
    cands: dict[str, dict] = {}
    for kind, stage, options in stages:
        scores = {}
        for cname, ov in options.items():
            sh = shared + list(ov) if kind == "shared" else shared
            tg = target + list(ov) if kind == "target" else target
            rec = {"stage": stage, "kind": kind, "shared": list(sh), "target": list(tg), "val": {}}
            methods = ("CLAP", "SmoothCLAP") if kind == "shared" else ("SmoothCLAP",)
            for m in methods:
                cfg = build_config(lc, sh, "CLAP") if m == "CLAP" else build_config(lc, [*sh, *tg], "SmoothCLAP")
                runs, hist = _runs(cfg, bundles.get(cfg, "val", tr_table), ac.val_seeds, va_tables, feats)
                rec["val"][m] = {t: _mean_uar(runs[t]) for t in runs}
                if m == "SmoothCLAP":
                    rec["diagnostics"] = _diag_summary(hist)
            rec["score"] = float(np.mean([rec["val"][m]["bare"] for m in methods]))
            name = f"{stage}: {cname}"
            cands[name] = rec
            scores[name] = rec["score"]
            log.info("validation %-50s UAR %.3f", name, rec["score"])
        best = max(scores, key=scores.get)  # ties: the first (the incumbent)
        cands[best]["chosen"] = True
        shared, target = cands[best]["shared"], cands[best]["target"]
    # the inference-side choice: the template set, on the winners of both methods
    last_shared = next(r for r in reversed(list(cands.values())) if r["kind"] == "shared" and r.get("chosen"))
    last_target = next((r for r in reversed(list(cands.values())) if r["kind"] == "target" and r.get("chosen")),
                       last_shared)
    per_t = {t: float(np.mean([last_shared["val"]["CLAP"][t], last_target["val"]["SmoothCLAP"][t]]))
             for t in TEMPLATE_SETS}
    return {"candidates": cands, "shared": shared, "target": target, "templates": max(per_t, key=per_t.get),
            "template_scores": per_t}


def _final_rows(ac: AblationConfig, search: dict) -> dict[str, RunConfig]:
    lc = ac.loco
    sh, tg = search["shared"], search["target"]
    return {"CLAP": build_config(lc, sh, "CLAP"),
            "SmoothCLAP (validated)": build_config(lc, [*sh, *tg], "SmoothCLAP"),
            "SmoothCLAP (reconstructed defaults)": build_config(lc, [*sh, "loss.preset=smoothclap-reconstructed"],
                                                                "SmoothCLAP"),
            "SmoothCLAP (paper-main)": build_config(lc, [*sh, "loss.preset=paper-main"], "SmoothCLAP")}


def run_ablation(ac: AblationConfig) -> dict:
    lc = ac.loco
    t_all = time.perf_counter()
    corpora = [c.lower() for c in lc.corpora]
    tables = {c: load_corpus(c, lc.data_root) for c in corpora}
    stages = ac.stages if ac.stages is not None else DEFAULT_STAGES
    cache = cache_root(lc.cache_dir)
    results: dict = {"config": {**dataclasses.asdict(lc), "val_seeds": list(ac.val_seeds),
                                "skew_emotions": ac.skew_emotions, "skew_seed": ac.skew_seed},
                     "stages": [[k, s, o] for k, s, o in stages], "heldout": {}, "machine": machine_info()}
    for h in [x.lower() for x in (lc.heldout or corpora)]:
        t_h = time.perf_counter()
        train_tables = {c: tables[c] for c in corpora if c != h}
        tr, va = validation_folds(train_tables, "speakers")[0]
        tr_table = training_table(tr)
        va_tables = {f"{n}/val": df for n, df in va.items()}
        bundles = _Bundles(lc)
        probe_cfg = build_config(lc, list(ac.base_shared), "CLAP")
        feats_val = test_features(probe_cfg, bundles.get(probe_cfg, "val", tr_table), va_tables, cache)
        search = _search(ac, stages, bundles, tr_table, va_tables, feats_val)

        # the one look at the held-out corpus: the chosen settings and the named presets, paired seeds
        full_table = training_table(train_tables)
        test = {h: tables[h]}
        feats_h = test_features(probe_cfg, bundles.get(probe_cfg, "full", full_table), test, cache)
        final: dict[str, dict] = {}
        for row, cfg in _final_rows(ac, search).items():
            prepared = bundles.get(cfg, "full", full_table)
            assert h not in prepared.trained_on
            runs, hist = _runs(cfg, prepared, lc.seeds, test, feats_h)
            chosen = runs[search["templates"]][h]
            final[row] = {**_summary(chosen), "bare": _summary(runs["bare"][h]),
                          "diagnostics": _diag_summary(hist) if row != "CLAP" else {},
                          "chance": chosen[0]["chance_uar"], "overrides": [] if row == "CLAP" else None}
        clap = np.array(final["CLAP"]["uar"])
        for row, f in final.items():
            if row != "CLAP":
                d = np.array(f["uar"]) - clap
                f["vs_clap"] = {"mean_diff": float(d.mean()), "wins": int((d > 0).sum()), "n": int(len(d))}

        # skewed speakers: what each feature normalisation does, with and without test groups
        skewed = skew_speakers(tables[h], ac.skew_emotions, ac.skew_seed)
        tests = {h: tables[h], f"{h}/skewed": skewed}
        feats_s = test_features(probe_cfg, bundles.get(probe_cfg, "full", full_table), tests, cache)  # cached
        skew: dict = {}
        for norm, nov in NORMS.items():
            sh = [*_strip_norm(search["shared"]), *nov]
            for m, cfg in (("CLAP", build_config(lc, sh, "CLAP")),
                           ("SmoothCLAP", build_config(lc, [*sh, *search["target"]], "SmoothCLAP"))):
                prepared = bundles.get(cfg, "full", full_table)
                for groups in ((True, False) if norm != "none" else (True,)):
                    runs, _ = _runs(cfg, prepared, lc.seeds, tests, feats_s, templates=(search["templates"],),
                                    groups=groups)
                    key = norm if groups else f"{norm} (no test groups)"
                    for n, rs in runs[search["templates"]].items():
                        skew.setdefault(key, {}).setdefault("skewed" if "/" in n else "full", {})[m] = _summary(rs)
        results["heldout"][h] = {
            "trained_on": sorted(train_tables),
            "validation_speakers": {n: sorted(df["speaker"].astype(str).unique()) for n, df in va.items()},
            "search": search, "final": final, "skewed": skew,
            "skewed_clips": int(len(skewed)), "skewed_labels_per_speaker": ac.skew_emotions,
            "seconds": time.perf_counter() - t_h}
        log.info("held out %s: %s", h, {k: round(v["mean"], 3) for k, v in final.items()})
    results["wall_seconds"] = time.perf_counter() - t_all
    results["tables_md"] = ablation_tables(results)
    if lc.out_dir:
        out = Path(lc.out_dir)
        atomic_write_json(out / "ablation.json", results)
        atomic_write_text(out / "ablation.md", "# Soft-target study (LOCO)\n\n" + results["tables_md"] + "\n")
    return results


def _f(x) -> str:
    return "" if x is None or x == "" else f"{x:.3f}"


def ablation_tables(results: dict) -> str:
    """Markdown: the held-out table (chosen settings, presets, target precision), the skewed-speaker
    table, then per held-out corpus the validation table of every candidate."""
    held, skew_rows, parts = [], [], []
    for h, e in results["heldout"].items():
        s = e["search"]
        for row, f in e["final"].items():
            d = f.get("diagnostics", {})
            held.append({"held out (trained on)": f"{h} ({' + '.join(e['trained_on'])})", "model": row,
                         "UAR": f"{f['mean']:.3f} ± {f['sd']:.3f}",
                         "vs CLAP (wins)": (f"{f['vs_clap']['mean_diff']:+.3f} ({f['vs_clap']['wins']}/{f['vs_clap']['n']})"
                                            if "vs_clap" in f else ""),
                         "target precision (chance)": (f"{d['q_precision']:.2f} ({d['q_precision_chance']:.2f})"
                                                       if "q_precision" in d else ""),
                         "UAR, bare words": f"{f['bare']['mean']:.3f}"})
        for norm, conds in e["skewed"].items():
            for cond in ("full", "skewed"):
                ms = conds.get(cond, {})
                skew_rows.append({"held out": h, "normalisation": norm, "test speakers": cond,
                                  "CLAP": f"{ms['CLAP']['mean']:.3f} ± {ms['CLAP']['sd']:.3f}" if "CLAP" in ms else "",
                                  "SmoothCLAP": (f"{ms['SmoothCLAP']['mean']:.3f} ± {ms['SmoothCLAP']['sd']:.3f}"
                                                 if "SmoothCLAP" in ms else "")})
        rows = []
        for name, c in s["candidates"].items():
            d = c.get("diagnostics", {})
            rows.append({"candidate": name + (" **(chosen)**" if c.get("chosen") else ""),
                         "CLAP": _f(c["val"].get("CLAP", {}).get("bare")),
                         "SmoothCLAP": _f(c["val"].get("SmoothCLAP", {}).get("bare")),
                         "SmoothCLAP, ensemble": _f(c["val"].get("SmoothCLAP", {}).get("ensemble")),
                         "q diag": _f(d.get("q_diag")),
                         "target precision (chance)": (f"{d['q_precision']:.2f} ({d['q_precision_chance']:.2f})"
                                                       if "q_precision" in d else "")})
        parts.append(f"### Validation, held out {h} (trained on {' + '.join(e['trained_on'])}; validation = every "
                     f"third speaker of each training corpus; templates chosen: {s['templates']} "
                     f"({', '.join(f'{k} {v:.3f}' for k, v in s['template_scores'].items())}))\n\n"
                     + markdown_table(rows, list(rows[0])))
    head = ("### Held out: the chosen settings and the named presets (UAR mean ± sd over seeds, paired)\n\n"
            + markdown_table(held, list(held[0])))
    skew = ("### Held-out speakers showing few emotions: what feature normalisation does\n\n"
            + markdown_table(skew_rows, list(skew_rows[0])))
    return head + "\n\n" + skew + "\n\n" + "\n\n".join(parts)
