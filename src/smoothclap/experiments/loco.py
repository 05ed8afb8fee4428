"""Cross-corpus zero-shot benchmark: leave one corpus out (LOCO) over EmoDB, RAVDESS and TESS.

For each held-out corpus H:

1. one training bundle (:func:`smoothclap.trainer.prepare`) from the other corpora: cached frozen
   audio embeddings, captions from the emotion word (mapped to the shared caption vocabulary,
   :func:`smoothclap.corpora.training_table`) plus binned eGeMAPS phrases with the bins fitted on
   the training corpora only, local features and descriptions for the soft targets (so CLAP and
   SmoothCLAP share it);
2. CLAP (loss preset ``clap``: beta = 0) and SmoothCLAP (preset ``smoothclap``) trained with
   identical settings for every seed;
3. H classified zero-shot with its own task's label prompts (:mod:`smoothclap.tasks`);
4. the in-corpus upper bound: a linear probe (standardised frozen audio embeddings ->
   ``LogisticRegression``) with speaker-independent folds (``GroupKFold`` by speaker).

H never trains anything: the training table is built without it, and every model's
``config.trained_on`` is checked before scoring.

Choices (towers, head size, epochs, caption design, normalisation) can be selected with
:func:`validate`, which only ever sees the training corpora of a fold: by default it trains on one
training corpus and scores the other zero-shot, both ways ("inner LOCO"); ``scheme="speakers"``
holds out speakers of the training corpora instead. The protocol: ``docs/protocols.md``.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .. import corpora
from ..errors import BadInputError
from ..cache import cache_root
from ..config import RunConfig, load_config, loss_preset, parse_override
from ..corpora import training_table
from ..tasks import get_task, load_task_table, score_table
from ..models import load_model
from ..trainer import build_model, prepare, train
from .report import METHODS, loco_table, machine_info, write_loco_report, write_round_files
from .protocols import EXTRA_PROTOCOLS, PROTOCOLS, robust, score_protocols
from .settings import BENCHMARK_BASE, LOCO_CORPORA, RECIPE_GRID, LocoConfig  # noqa: F401

log = logging.getLogger("smoothclap")

def grid_stages(grid) -> list[dict[str, list[str]]]:
    """A grid is one dict of candidates or a list of such stages."""
    if grid is None:
        return [dict(g) for g in RECIPE_GRID]
    if isinstance(grid, dict):
        return [dict(grid)]
    return [dict(g) for g in grid]


def select_candidates(names: Sequence[str], grid=None) -> list[dict[str, list[str]]]:
    """The stages of ``grid`` (default :data:`RECIPE_GRID`) restricted to ``names``."""
    stages = grid_stages(grid)
    known = {n for st in stages for n in st}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadInputError("--candidates", f"unknown candidate(s) {unknown}; known: {sorted(known)}")
    out = [{k: v for k, v in st.items() if k in names} for st in stages]
    return [st for st in out if st]


# ------------------------------------------------------------------------------------------------
# data


def load_corpus(name: str, data_root, **opts) -> pd.DataFrame:
    """The corpus' table as its task scores it (all speech files), found under ``data_root``."""
    return load_task_table(get_task(name), data_root, **opts)


def build_config(lc: LocoConfig, extra: Sequence[str] = (), method: str = "SmoothCLAP") -> RunConfig:
    """The run config of ``method``: the recipe (``lc.config``: a shipped config's name or a YAML
    file; else :data:`BENCHMARK_BASE`), the benchmark's fields that are set, then ``lc.overrides``
    and ``extra`` (later wins). CLAP differs only in its loss (preset ``clap``: beta = 0)."""
    values = dict(BENCHMARK_BASE) if lc.config is None else {}
    fields = {"towers.audio": lc.audio_tower, "towers.text": lc.text_tower, "model.embed_dim": lc.embed_dim,
              "train.epochs": lc.epochs, "train.batch_size": lc.batch_size, "train.lr": lc.lr,
              "loss.preset": lc.smoothclap_preset, "cache_dir": lc.cache_dir or None}
    values.update({k: v for k, v in fields.items() if v is not None})
    values.update({"train.num_workers": lc.num_workers, "train.device": "cpu"})
    values.update(parse_override(text) for text in (*lc.overrides, *extra))  # later wins
    cfg = load_config(lc.config, values=values)
    if method == "CLAP":
        cfg = cfg.updated({"loss": loss_preset("clap")})
    return cfg


def _cache(lc: LocoConfig):
    return cache_root(lc.cache_dir)


def _check_heldout(model, heldout: str, table: pd.DataFrame) -> None:
    """The held-out corpus never trained the model: by name and by the content of its clips."""
    from ..evaluate import check_clips_not_trained_on

    trained = {corpora.canonical(c) for c in (model.config.trained_on or [])}
    if corpora.canonical(heldout) in trained:  # a bug, never a setting
        raise AssertionError(f"held-out corpus {heldout} is in trained_on={model.config.trained_on}")
    check_clips_not_trained_on(model, table["file"].tolist(), what=f"held-out corpus {heldout}")


def regime_table(lc: LocoConfig, table: pd.DataFrame) -> pd.DataFrame:
    """The training table under the study's label regime (``lc.labelled_fraction``,
    ``lc.label_noise``; :mod:`.regimes`): labels made noisy first, then a share kept labelled.
    Unchanged with the defaults (1.0, 0.0)."""
    from .regimes import mask_labels, noisy_labels

    if lc.label_noise:
        table = noisy_labels(table, lc.label_noise, seed=lc.regime_seed)
    if lc.labelled_fraction < 1.0:
        table = mask_labels(table, lc.labelled_fraction, seed=lc.regime_seed)
    return table


def test_features(cfg: RunConfig, prepared, tables: dict[str, pd.DataFrame], cache_dir, progress: bool = False
                  ) -> dict[str, np.ndarray]:
    """Raw audio-tower features of each test table, extracted once through a model of ``cfg``
    (its tower and preprocessing: the same for every seed and method)."""
    extractor = build_model(cfg, prepared)
    return {name: extractor.file_features(df["file"].astype(str).tolist(), cache_dir=cache_dir,
                                          progress=progress, desc="audio (eval)")[0]
            for name, df in tables.items()}


# ------------------------------------------------------------------------------------------------
# one train-and-score round


def train_and_score(lc: LocoConfig, train_tables: dict[str, pd.DataFrame], test_tables: dict[str, pd.DataFrame],
                    seeds: Sequence[int], extra: Sequence[str] = (), keep_models: bool = False,
                    adapt_clips: int = 0) -> dict:
    """Train CLAP and SmoothCLAP on ``train_tables`` (one shared bundle) for each seed and score
    every table of ``test_tables`` with its own task's prompts under each protocol
    (:mod:`.protocols`: whole, skewed, single; and adapted with ``adapt_clips`` > 0).

    Returns ``{"prepared": ..., "scores": {test: {method: [per seed {"seed", "whole", "skewed",
    "single"} (result dicts)]}}, "histories", "examples", "models" (seed-0 models when
    ``keep_models``), "timings", "config", "features"}``. ``test@<lang>`` entries score the same
    models with prompts in another language (``lc.prompt_languages``).
    """
    timings: dict[str, float] = {}
    t = time.perf_counter()
    overlap = set(train_tables) & set(test_tables)
    if overlap:
        raise AssertionError(f"corpora {sorted(overlap)} are both training and test")
    table = regime_table(lc, training_table(train_tables))
    cfg_s = build_config(lc, extra, "SmoothCLAP")
    cache = _cache(lc)
    prepared = prepare(cfg_s, table, cache_dir=cache, progress=lc.progress, need_local=True, need_desc=True)
    timings["prepare"] = time.perf_counter() - t

    t = time.perf_counter()
    feats = test_features(cfg_s, prepared, test_tables, cache, lc.progress)
    timings["test_features"] = time.perf_counter() - t

    t = time.perf_counter()
    langs = [None] + [lang for lang in lc.prompt_languages if lang != "en"]
    scores: dict[str, dict[str, list]] = {}
    histories, examples, models = {}, {}, {}
    for method in METHODS:
        cfg_m = build_config(lc, extra, method)
        for seed in seeds:
            res = train(cfg_m.updated({"train.seed": int(seed)}), prepared, run_dir=None, progress=False)
            if seed == seeds[0]:
                histories[method], examples[method] = res.history, res.example_targets
                if keep_models:
                    models[method] = res.model
            for name, df in test_tables.items():
                _check_heldout(res.model, name, df)
                for lang in langs:  # the same model, prompts in another language
                    r = score_protocols(get_task(name), res.model, df, feats[name], skew_emotions=lc.skew_emotions,
                                        skew_seed=lc.skew_seed, adapt_clips=adapt_clips if lang is None else 0,
                                        templates=lc.templates, prompt_language=lang)
                    key = name if lang is None else f"{name}@{lang}"
                    scores.setdefault(key, {m: [] for m in METHODS})[method].append({"seed": int(seed), **r})
    timings["train_and_score"] = time.perf_counter() - t
    return {"prepared": prepared, "scores": scores, "histories": histories, "examples": examples,
            "models": models, "timings": timings, "config": cfg_s, "features": feats}


def _mean_uar(scores: dict) -> float:
    """Validation objective: mean robust UAR (over protocols) over test sets, methods and seeds
    (both methods always share the settings)."""
    return float(np.mean([_robust_uar(runs) for per in scores.values() for runs in per.values()]))


def _robust_uar(runs: list[dict]) -> float:
    return float(np.mean([robust({p: r[p]["uar"] for p in PROTOCOLS}) for r in runs]))


# ------------------------------------------------------------------------------------------------
# validation (training corpora only)


def validation_folds(train_tables: dict[str, pd.DataFrame], scheme: str = "corpus"
                     ) -> list[tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]]:
    """(train tables, validation tables) pairs made from the training corpora only.

    ``"corpus"``: each training corpus in turn is scored zero-shot by a model trained on the
    others (needs >= 2 corpora). ``"speakers"``: every third speaker (at least one) of each
    corpus is held out; one fold, validation scored per corpus.
    """
    names = sorted(train_tables)
    if scheme == "corpus":
        if len(names) < 2:
            raise ValueError("validation scheme 'corpus' needs at least 2 training corpora")
        return [({n: train_tables[n] for n in names if n != v}, {v: train_tables[v]}) for v in names]
    if scheme == "speakers":
        tr, va = {}, {}
        for n in names:
            df = train_tables[n]
            spk = sorted(df["speaker"].astype(str).unique())
            held = set(spk[1::3]) if len(spk) > 2 else {spk[-1]}
            if len(spk) < 2:
                raise ValueError(f"corpus {n} has one speaker; cannot hold speakers out")
            mask = df["speaker"].astype(str).isin(held).to_numpy()
            tr[n], va[n] = df[~mask].reset_index(drop=True), df[mask].reset_index(drop=True)
        # the same corpus names appear on both sides here: speakers, not corpora, are held out
        return [(tr, {f"{n}": va[n] for n in names})]
    raise ValueError(f"unknown validation scheme {scheme!r} (corpus, speakers)")


def validate(lc: LocoConfig, train_tables: dict[str, pd.DataFrame], grid=None) -> dict:
    """Select settings on validation folds made from ``train_tables`` only (the held-out corpus
    is not an argument). Objective: mean robust UAR (the three protocols: whole, skewed speakers,
    single clips, simulated on the validation clips) over folds, both methods (they always share
    the settings) and ``lc.validation_seeds``.

    ``grid``: one dict name -> overrides, or a list of such stages (default :data:`RECIPE_GRID`):
    each later stage tries its candidates on top of the best so far, which stays in the running.
    Returns ``{"best", "overrides", "candidates": {name: {"overrides", "score", "per_fold",
    "seconds"}}, "stages": [[names]], "scheme", "seeds"}``.
    """
    stages = grid_stages(grid if grid is not None else lc.grid)
    folds = validation_folds(train_tables, lc.validation_scheme)
    out: dict[str, dict] = {}

    def score(name: str, extra: list[str]) -> None:
        t = time.perf_counter()
        per_fold = []
        for tr, va in folds:
            if lc.validation_scheme == "speakers":
                res = _train_and_score_speakers(lc, tr, va, lc.validation_seeds, extra)
            else:
                res = train_and_score(lc, tr, va, lc.validation_seeds, extra)["scores"]
            per_fold.append({"train": sorted(tr), "val": sorted(va), "uar": _mean_uar(res),
                             **{m: float(np.mean([_robust_uar(per[m]) for per in res.values()])) for m in METHODS},
                             **{p: float(np.mean([r[p]["uar"] for per in res.values() for m in METHODS for r in per[m]]))
                                for p in PROTOCOLS}})
        out[name] = {"overrides": list(extra), "score": float(np.mean([f["uar"] for f in per_fold])),
                     "per_fold": per_fold, "seconds": time.perf_counter() - t}
        log.info("validation %-45s UAR %.3f (%.0f s)", name, out[name]["score"], out[name]["seconds"])

    best, best_extra, names_per_stage = None, [], []
    for k, stage in enumerate(stages):
        names = []
        for name, delta in stage.items():
            full = name if best is None else f"{best}; {name}"
            score(full, best_extra + list(delta))
            names.append(full)
        names_per_stage.append(names)
        pool = names + ([best] if best is not None else [])
        best = max(pool, key=lambda n: out[n]["score"])
        best_extra = list(out[best]["overrides"])
    return {"scheme": lc.validation_scheme, "seeds": list(lc.validation_seeds), "best": best,
            "overrides": best_extra, "candidates": out, "stages": names_per_stage}


def _train_and_score_speakers(lc, tr, va, seeds, extra) -> dict:
    """Speaker hold-out: training and validation share corpus names, so score directly."""
    cfg_s = build_config(lc, extra, "SmoothCLAP")
    cache = _cache(lc)
    prepared = prepare(cfg_s, regime_table(lc, training_table(tr)), cache_dir=cache, progress=False, need_local=True, need_desc=True)
    feats = test_features(cfg_s, prepared, va, cache)
    scores = {n: {m: [] for m in METHODS} for n in va}
    for method in METHODS:
        cfg_m = build_config(lc, extra, method)
        for seed in seeds:
            cfg = cfg_m.updated({"train.seed": int(seed)})
            model = train(cfg, prepared, run_dir=None, progress=False).model
            for n, df in va.items():
                r = score_protocols(get_task(n), model, df, feats[n], skew_emotions=lc.skew_emotions,
                                    skew_seed=lc.skew_seed, templates=lc.templates)
                scores[n][method].append({"seed": int(seed), **r})
    return scores


# ------------------------------------------------------------------------------------------------
# linear probe (in-corpus upper bound)


def linear_probe(features: np.ndarray, labels: Sequence[str], speakers: Sequence[str], max_folds: int = 5,
                 C: float = 1.0, seed: int = 0) -> dict:
    """Speaker-independent linear probe: ``GroupKFold`` by speaker (``min(max_folds, speakers)``
    folds), StandardScaler + LogisticRegression fitted on the training folds. Returns mean UAR /
    WA over folds, per-fold UARs and the pooled out-of-fold confusion matrix."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..metrics import classification_metrics

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=object).astype(str)
    g = np.asarray(speakers, dtype=object).astype(str)
    ok = np.isfinite(x).all(1)
    x, y, g = x[ok], y[ok], g[ok]
    k = min(max_folds, len(set(g)))
    if k < 2:
        raise ValueError("a speaker-independent probe needs at least 2 speakers")
    classes = sorted(set(y))
    pred = np.empty(len(y), dtype=object)
    folds = []
    for tr, te in GroupKFold(n_splits=k).split(x, y, g):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000, random_state=seed))
        clf.fit(x[tr], y[tr])
        pred[te] = clf.predict(x[te])
        m = classification_metrics(y[te], pred[te], classes)
        folds.append({"speakers": sorted(set(g[te])), "n": int(len(te)), "uar": m["uar"], "wa": m["wa"]})
    pooled = classification_metrics(y, pred, classes)
    return {"uar": float(np.mean([f["uar"] for f in folds])), "wa": float(np.mean([f["wa"] for f in folds])),
            "uar_sd_folds": float(np.std([f["uar"] for f in folds], ddof=1)), "n_folds": k, "folds": folds,
            "labels": classes, "confusion": pooled["confusion"], "n": int(len(y))}


# ------------------------------------------------------------------------------------------------
# the benchmark


def _summary(runs: list[dict]) -> dict:
    u = np.array([r["uar"] for r in runs])
    return {"uar": u.tolist(), "wa": [r["wa"] for r in runs], "macro_f1": [r["macro_f1"] for r in runs],
            "seeds": [r.get("seed") for r in runs], "mean": float(u.mean()),
            "sd": float(u.std(ddof=1)) if len(u) > 1 else 0.0,
            "wa_mean": float(np.mean([r["wa"] for r in runs])),
            "macro_f1_mean": float(np.mean([r["macro_f1"] for r in runs]))}


def paired(a: Sequence[float], b: Sequence[float]) -> dict:
    """SmoothCLAP (``b``) against CLAP (``a``), seed by seed: mean difference and wins."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    return {"smoothclap": int((d > 0).sum()), "clap": int((d < 0).sum()), "ties": int((d == 0).sum()),
            "n": int(len(d)), "mean_diff": float(d.mean())}


def summarise_protocols(per: dict[str, list[dict]]) -> dict:
    """Per protocol (and each of :data:`EXTRA_PROTOCOLS` the runs have): each method's summary over
    seeds and the paired comparison; and the robust UAR (mean over :data:`PROTOCOLS`) per method
    and seed."""
    out = {"protocols": {}}
    for p in (*PROTOCOLS, *[x for x in EXTRA_PROTOCOLS if all(x in r for rs in per.values() for r in rs)]):
        ms = {m: _summary([{**r[p], "seed": r["seed"]} for r in per[m]]) for m in METHODS}
        out["protocols"][p] = {"methods": ms, "wins": paired(ms["CLAP"]["uar"], ms["SmoothCLAP"]["uar"])}
    rob = {m: [robust({p: r[p]["uar"] for p in PROTOCOLS}) for r in per[m]] for m in METHODS}
    out["robust"] = {m: {"uar": v, "mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
                     for m, v in rob.items()}
    out["robust_wins"] = paired(rob["CLAP"], rob["SmoothCLAP"])
    return out


def run_loco(lc: LocoConfig) -> dict:
    """Run the benchmark; writes ``results.json``, ``report.md`` and figures to ``lc.out_dir``
    (when set) and returns the results dict (``"table_md"`` holds the Markdown tables)."""
    t_all = time.perf_counter()
    names = [c.lower() for c in lc.corpora]
    if len(names) < 2:
        raise ValueError("LOCO needs at least 2 corpora")
    least = build_config(lc).model.min_group_clips
    if 0 < lc.adapt_clips < least:  # fail before any training, not after the first round
        raise BadInputError("--adapt-clips", f"{lc.adapt_clips}: adapting needs at least model.min_group_clips = "
                            f"{least} clips (0 turns the adapted protocol off)")
    tables = {c: load_corpus(c, lc.data_root) for c in names}
    heldouts = [h.lower() for h in (lc.heldout or names)]
    unknown = [h for h in heldouts if h not in tables]
    if unknown:
        raise ValueError(f"held-out corpus {unknown[0]!r} is not among {names}")
    out_dir = Path(lc.out_dir) if lc.out_dir else None
    baselines = {spec: load_model(spec) for spec in lc.baselines}
    results: dict = {"config": dataclasses.asdict(lc), "heldout": {},
                     "train_labels": {c: corpora.caption_words(c) for c in names},
                     "machine": machine_info()}
    for h in heldouts:
        entry, rnd = _heldout_round(lc, h, tables, baselines)
        results["heldout"][h] = entry
        if out_dir is not None:
            write_round_files(out_dir, h, rnd, entry, lc.seeds, lc.save_models)
        log.info("held out %s: robust CLAP %.3f, SmoothCLAP %.3f (%.0f s)", h, entry["robust"]["CLAP"]["mean"],
                 entry["robust"]["SmoothCLAP"]["mean"], entry["seconds"])
    results["summary"] = summary_over_corpora(results["heldout"])
    results["wall_seconds"] = time.perf_counter() - t_all
    results["table_md"] = loco_table(results)
    if out_dir is not None:
        write_loco_report(results, out_dir)
    return results


def _heldout_round(lc: LocoConfig, h: str, tables: dict[str, pd.DataFrame], baselines: dict) -> tuple[dict, dict]:
    """Validation (optional), training and scoring with corpus ``h`` held out: (entry, round)."""
    t_h = time.perf_counter()
    train_tables = {c: df for c, df in tables.items() if c != h}
    entry: dict = {"trained_on": sorted(train_tables), "n_train": int(sum(len(d) for d in train_tables.values())),
                   "n_test": int(len(tables[h]))}
    extra: list[str] = []
    if lc.validate:
        t = time.perf_counter()
        val = validate(lc, train_tables)
        extra = list(val["overrides"])
        entry["validation"], entry["validation_seconds"] = val, time.perf_counter() - t
        log.info("held out %s: validation chose %s", h, val["best"])
    entry["overrides"] = list(lc.overrides) + extra
    rnd = train_and_score(lc, train_tables, {h: tables[h]}, lc.seeds, extra, keep_models=lc.save_models,
                          adapt_clips=lc.adapt_clips)
    cfg = rnd["config"]
    entry["towers"] = {"audio": cfg.towers.audio, "text": cfg.towers.text}
    entry["run_config"] = cfg.to_dict()
    entry["trained_on_models"] = list(rnd["prepared"].trained_on)
    assert h not in entry["trained_on_models"]
    per = rnd["scores"][h]
    entry.update(summarise_protocols(per))
    entry["methods"], entry["wins"] = entry["protocols"]["whole"]["methods"], entry["protocols"]["whole"]["wins"]
    first = per["CLAP"][0]["whole"]
    entry["chance"], entry["labels"], entry["prompt_texts"] = first["chance_uar"], first["labels"], first["prompt_texts"]
    entry["confusion_seed0"] = {m: per[m][0]["whole"]["confusion"] for m in METHODS}
    entry["paper"] = dict(get_task(h).paper)
    for key, runs in rnd["scores"].items():
        if key.startswith(f"{h}@"):
            s = summarise_protocols(runs)
            entry.setdefault("by_language", {})[key.split("@", 1)[1]] = {
                "methods": s["protocols"]["whole"]["methods"], "wins": s["protocols"]["whole"]["wins"],
                "robust": s["robust"], "prompt_texts": runs["CLAP"][0]["whole"]["prompt_texts"]}
    entry["timings"] = rnd["timings"]
    last = (rnd["histories"].get("SmoothCLAP") or [{}])[-1]  # seed 0's last epoch: the training labels' view
    entry["target_precision"] = {k: last.get(f"q_{k}") for k in ("precision", "precision_chance")}
    entry["caption_example"] = _caption_examples(rnd["prepared"])
    if lc.probe:
        t = time.perf_counter()
        entry["probe"] = linear_probe(rnd["features"][h], tables[h]["label"], tables[h]["speaker"])
        entry["timings"]["probe"] = time.perf_counter() - t
    for spec, model in baselines.items():  # no training: scored as they are, same task prompts
        r = score_table(get_task(h), model, tables[h], cache_dir=_cache(lc), progress=lc.progress)
        entry.setdefault("baselines", {})[spec] = {k: r[k] for k in ("uar", "wa", "macro_f1", "confusion")}
    entry["seconds"] = time.perf_counter() - t_h
    return entry, rnd


def summary_over_corpora(heldout: dict) -> dict:
    """Means over the held-out corpora: per protocol and the robust UAR, per method, with the
    paired comparison of the per-seed means over corpora."""
    out: dict = {"n_corpora": len(heldout)}
    extras = [x for x in EXTRA_PROTOCOLS if all(x in e["protocols"] for e in heldout.values())]
    for what in (*PROTOCOLS, *extras, "robust"):
        per_m = {}
        for m in METHODS:
            cols = [e["robust"][m]["uar"] if what == "robust" else e["protocols"][what]["methods"][m]["uar"]
                    for e in heldout.values()]
            per_seed = np.mean(np.array(cols, dtype=float), axis=0)  # [seeds]: mean over corpora
            per_m[m] = {"mean": float(per_seed.mean()), "per_seed": per_seed.tolist()}
        out[what] = {"methods": per_m, "wins": paired(per_m["CLAP"]["per_seed"], per_m["SmoothCLAP"]["per_seed"])}
    out["chance"] = float(np.mean([e["chance"] for e in heldout.values()]))
    probes = [e["probe"]["uar"] for e in heldout.values() if "probe" in e]
    out["probe"] = float(np.mean(probes)) if len(probes) == len(heldout) else None
    return out


def _caption_examples(prepared, k: int = 3) -> list[str]:
    idx = prepared.caption_index[0]
    step = max(1, len(idx) // k)
    return [prepared.caption_texts[int(i)] for i in idx[::step][:k]]
