"""Cross-corpus zero-shot benchmark: leave one corpus out (LOCO) over EmoDB, RAVDESS and TESS.

For each held-out corpus H:

1. one training bundle (:func:`smoothclap.prepare.prepare`) from the other corpora: cached frozen
   audio embeddings, captions from the (normalised, see :data:`TRAIN_LABELS`) emotion word plus
   binned eGeMAPS phrases with the bins fitted on the training corpora only, local features and
   descriptions for the soft targets (so CLAP and SmoothCLAP share it);
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
holds out speakers of the training corpora instead.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .config import RunConfig, load_config, loss_preset
from .io import atomic_write_json, atomic_write_text

log = logging.getLogger("smoothclap")

#: Corpora of the LOCO benchmark (each is also a task in :mod:`smoothclap.tasks`).
LOCO_CORPORA = ("emodb", "ravdess", "tess")

#: Training-caption vocabulary: corpus label -> the common emotion word used in training captions
#: (adjectives, so "speaker is angry" reads well in every template). Labels not listed keep their
#: name. Held-out corpora are always scored with their own task's label prompts instead.
TRAIN_LABELS: dict[str, dict[str, str]] = {
    "emodb": {"anger": "angry", "boredom": "bored", "disgust": "disgusted", "fear": "fearful",
              "happiness": "happy", "sadness": "sad", "neutral": "neutral"},
    "ravdess": {"disgust": "disgusted"},  # neutral calm happy sad angry fearful surprised stay
    "tess": {"disgust": "disgusted", "fear": "fearful", "pleasant surprise": "surprised"},
    "savee": {"anger": "angry", "disgust": "disgusted", "fear": "fearful", "happiness": "happy",
              "sadness": "sad", "surprise": "surprised"},
    "crema-d": {"disgust": "disgusted", "fear": "fearful"},
    "iemocap": {},
}

METHODS = ("CLAP", "SmoothCLAP")

#: What :func:`validate` compares by default, in two stages (a coordinate search): stage 1 picks
#: the audio features (tower and feature normalisation), stage 2 adds one training / caption change
#: on top of the stage-1 winner (or none). Entries: name -> dotted ``RunConfig`` overrides.
_W, _E, _WE = "towers.audio=whisper-tiny-en", "towers.audio=egemaps", "towers.audio=whisper-tiny-en+egemaps"
_CN, _SN = "model.feature_norm_group=corpus", "model.feature_norm_group=speaker"
DEFAULT_GRID: list[dict[str, list[str]]] = [
    {
        "whisper": [_W],
        "whisper, corpus-norm": [_W, _CN],
        "whisper, speaker-norm": [_W, _SN],
        "egemaps, corpus-norm": [_E, _CN],
        "whisper+egemaps, corpus-norm": [_WE, _CN],
        "whisper+egemaps, speaker-norm": [_WE, _SN],
    },
    {
        "2 epochs": ["train.epochs=2"],
        "5 epochs": ["train.epochs=5"],
        "10 epochs": ["train.epochs=10"],
        "5 epochs, d=768": ["train.epochs=5", "model.embed_dim=768"],
    },
]
# Not in the default grid, because inner LOCO cannot measure them: per-corpus caption bins
# ("captions.group_by=corpus": each inner fold trains on one corpus, so they equal global bins).
# 30 epochs and d=768 at 15 epochs lost to the default in a first validation run (BENCHMARKS.md).


def grid_stages(grid) -> list[dict[str, list[str]]]:
    """A grid is one dict of candidates or a list of such stages."""
    if grid is None:
        return [dict(g) for g in DEFAULT_GRID]
    if isinstance(grid, dict):
        return [dict(grid)]
    return [dict(g) for g in grid]


def select_candidates(names: Sequence[str], grid=None) -> list[dict[str, list[str]]]:
    """The stages of ``grid`` (default :data:`DEFAULT_GRID`) restricted to ``names``."""
    stages = grid_stages(grid)
    known = {n for st in stages for n in st}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown candidate(s) {unknown}; known: {sorted(known)}")
    out = [{k: v for k, v in st.items() if k in names} for st in stages]
    return [st for st in out if st]


@dataclass
class LocoConfig:
    """Settings of :func:`run_loco`. ``overrides``: dotted ``RunConfig`` keys applied to both
    methods (e.g. ``"model.embed_dim=512"``); per held-out corpus, a validated choice from
    :func:`validate` is added on top when ``validate`` is on."""

    data_root: str = "../shared/data"
    corpora: tuple[str, ...] = LOCO_CORPORA
    heldout: tuple[str, ...] | None = None     # default: every corpus in turn
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    embed_dim: int = 256
    audio_tower: str = "whisper-tiny-en"
    text_tower: str = "minilm-l6"
    smoothclap_preset: str = "smoothclap"
    overrides: tuple[str, ...] = ()
    probe: bool = True
    validate: bool = False
    validation_scheme: str = "corpus"           # "corpus" (inner LOCO) or "speakers"
    validation_seeds: tuple[int, ...] = (0, 1)
    grid: dict | list | None = None             # candidates or stages; default: DEFAULT_GRID
    cache_dir: str | None = "~/.cache/smoothclap"
    out_dir: str | None = "runs/loco"
    num_workers: int = 2
    save_models: bool = True
    progress: bool = False
    # torch threads while training heads: 1 avoids OpenMP barrier spinning on small, shared CPUs
    # (measured 10x slower runs with 2 threads on a busy 2-core machine); None = leave as is
    train_threads: int | None = 1


# ------------------------------------------------------------------------------------------------
# data


def load_corpus(name: str, data_root, **opts) -> pd.DataFrame:
    """The corpus' table as its task scores it (all speech files), found under ``data_root``."""
    from .tasks import get_task, load_task_table

    return load_task_table(get_task(name), data_root, **opts)


def training_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Concatenate training corpora; ``label`` becomes the common caption vocabulary
    (:data:`TRAIN_LABELS`), the corpus' own word is kept in ``label_original``."""
    parts = []
    for name, df in tables.items():
        df = df.copy()
        if "corpus" not in df.columns:
            df["corpus"] = name
        mapping = TRAIN_LABELS.get(name, {})
        df["label_original"] = df["label"].astype(str)
        df["label"] = df["label_original"].map(lambda x: mapping.get(x, x))
        if "speaker" in df.columns:  # speaker ids repeat across corpora (EmoDB "03", RAVDESS "03")
            df["speaker"] = [None if s is None or s != s else f"{name}:{s}" for s in df["speaker"]]
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def build_config(lc: LocoConfig, extra: Sequence[str] = (), method: str = "SmoothCLAP") -> RunConfig:
    """The run config of ``method`` (CLAP: loss preset ``clap``, else ``lc.smoothclap_preset``);
    everything but the loss is identical between the two."""
    ov = [f"towers.audio={lc.audio_tower}", f"towers.text={lc.text_tower}",
          f"model.embed_dim={lc.embed_dim}", f"train.epochs={lc.epochs}", f"train.batch_size={lc.batch_size}",
          f"train.lr={lc.lr}", f"train.num_workers={lc.num_workers}", "train.device=cpu",
          f"loss.preset={lc.smoothclap_preset}", *lc.overrides, *extra]
    cfg = load_config(None, ov)
    if lc.cache_dir:
        cfg.cache_dir = lc.cache_dir
    if method == "CLAP":
        cfg = dataclasses.replace(cfg, loss=loss_preset("clap"))
    return cfg


def _cache(lc: LocoConfig):
    return Path(lc.cache_dir).expanduser() if lc.cache_dir else None


def _check_heldout(model, heldout: str) -> None:
    from .tasks import canonical_corpus

    trained = {canonical_corpus(c) for c in (model.config.trained_on or [])}
    if canonical_corpus(heldout) in trained:  # a bug, never a setting
        raise AssertionError(f"held-out corpus {heldout} is in trained_on={model.config.trained_on}")


# ------------------------------------------------------------------------------------------------
# one train-and-score round


def train_and_score(lc: LocoConfig, train_tables: dict[str, pd.DataFrame], test_tables: dict[str, pd.DataFrame],
                    seeds: Sequence[int], extra: Sequence[str] = (), keep_models: bool = False) -> dict:
    """Train CLAP and SmoothCLAP on ``train_tables`` (one shared bundle) for each seed and score
    every table of ``test_tables`` with its own task's prompts.

    Returns ``{"prepared": ..., "scores": {test: {method: [result dict per seed]}}, "histories",
    "examples", "models" (seed-0 models when ``keep_models``), "timings"}``.
    """
    from .evaluate import audio_features
    from .prepare import prepare
    from .tasks import get_task, score_table
    from .towers import build_tower

    timings: dict[str, float] = {}
    t = time.perf_counter()
    overlap = set(train_tables) & set(test_tables)
    if overlap:
        raise AssertionError(f"corpora {sorted(overlap)} are both training and test")
    table = training_table(train_tables)
    cfg_s = build_config(lc, extra, "SmoothCLAP")
    cache = _cache(lc)
    prepared = prepare(cfg_s, table, cache_dir=cache, progress=lc.progress, need_local=True, need_desc=True)
    timings["prepare"] = time.perf_counter() - t

    t = time.perf_counter()
    tower = build_tower(cfg_s.towers.audio)
    feats = {name: audio_features(tower, df["file"].astype(str), cache_dir=cache, progress=lc.progress)[0]
             for name, df in test_tables.items()}
    timings["test_features"] = time.perf_counter() - t

    t = time.perf_counter()
    scores: dict[str, dict[str, list]] = {name: {m: [] for m in METHODS} for name in test_tables}
    histories, examples, models = {}, {}, {}
    for method in METHODS:
        cfg_m = build_config(lc, extra, method)
        for seed in seeds:
            cfg = dataclasses.replace(cfg_m, train=dataclasses.replace(cfg_m.train, seed=int(seed)))
            res = _train(lc, cfg, prepared)
            if seed == seeds[0]:
                histories[method] = res.history
                examples[method] = res.example_targets
                if keep_models:
                    models[method] = res.model
            for name, df in test_tables.items():
                _check_heldout(res.model, name)
                r = score_table(get_task(name), res.model, df, features=feats[name])
                r["seed"] = int(seed)
                scores[name][method].append(r)
    timings["train_and_score"] = time.perf_counter() - t
    return {"prepared": prepared, "scores": scores, "histories": histories, "examples": examples,
            "models": models, "timings": timings, "config": cfg_s}


_WARNED: list = []


def _train(lc: LocoConfig, cfg: RunConfig, prepared):
    import torch

    from .train import train

    before = torch.get_num_threads()
    if lc.train_threads:
        torch.set_num_threads(lc.train_threads)
    try:
        res = train(cfg, prepared, run_dir=None, progress=False)
    finally:
        torch.set_num_threads(before)
    # The bundle's audio was normalised per group (cfg.model.feature_norm_group); the model must
    # say so, or test clips are scored un-normalised. Guard against a trainer that drops it.
    want = getattr(cfg.model, "feature_norm_group", None)
    if want and getattr(res.model.config, "feature_norm_group", None) != want:
        if not _WARNED:
            log.warning("the trainer did not record model.feature_norm_group=%r in the model config; "
                        "setting it (warned once)", want)
            _WARNED.append(True)
        res.model.config.feature_norm_group = want
    return res


def _mean_uar(scores: dict) -> float:
    """Mean UAR over test sets, methods and seeds (validation objective: same settings for both)."""
    vals = [np.mean([r["uar"] for r in runs]) for per in scores.values() for runs in per.values()]
    return float(np.mean(vals))


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
    is not an argument). Objective: mean zero-shot UAR over folds, both methods (they always share
    the settings) and ``lc.validation_seeds``.

    ``grid``: one dict name -> overrides, or a list of such stages (default :data:`DEFAULT_GRID`):
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
                             **{m: float(np.mean([r["uar"] for per in res.values() for r in per[m]]))
                                for m in METHODS}})
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
    from .evaluate import audio_features
    from .prepare import prepare
    from .tasks import get_task, score_table
    from .towers import build_tower

    cfg_s = build_config(lc, extra, "SmoothCLAP")
    cache = _cache(lc)
    prepared = prepare(cfg_s, training_table(tr), cache_dir=cache, progress=False, need_local=True, need_desc=True)
    tower = build_tower(cfg_s.towers.audio)
    feats = {n: audio_features(tower, df["file"].astype(str), cache_dir=cache, progress=False)[0] for n, df in va.items()}
    scores = {n: {m: [] for m in METHODS} for n in va}
    for method in METHODS:
        cfg_m = build_config(lc, extra, method)
        for seed in seeds:
            cfg = dataclasses.replace(cfg_m, train=dataclasses.replace(cfg_m.train, seed=int(seed)))
            model = _train(lc, cfg, prepared).model
            for n, df in va.items():
                scores[n][method].append(score_table(get_task(n), model, df, features=feats[n]))
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

    from .metrics import classification_metrics

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


def run_loco(lc: LocoConfig) -> dict:
    """Run the benchmark; writes ``results.json``, ``report.md`` and figures to ``lc.out_dir``
    (when set) and returns the results dict (``"table_md"`` holds the Markdown table)."""
    from .evaluate import audio_features
    from .tasks import get_task
    from .towers import build_tower

    t_all = time.perf_counter()
    corpora = [c.lower() for c in lc.corpora]
    if len(corpora) < 2:
        raise ValueError("LOCO needs at least 2 corpora")
    tables = {c: load_corpus(c, lc.data_root) for c in corpora}
    heldouts = [h.lower() for h in (lc.heldout or corpora)]
    out_dir = Path(lc.out_dir) if lc.out_dir else None
    results: dict = {"config": dataclasses.asdict(lc), "heldout": {}, "train_labels": TRAIN_LABELS,
                     "machine": machine_info()}
    for h in heldouts:
        if h not in tables:
            raise ValueError(f"held-out corpus {h!r} is not among {corpora}")
        t_h = time.perf_counter()
        train_tables = {c: tables[c] for c in corpora if c != h}
        entry: dict = {"trained_on": sorted(train_tables), "n_train": int(sum(len(d) for d in train_tables.values())),
                       "n_test": int(len(tables[h]))}
        extra: list[str] = []
        if lc.validate:
            t = time.perf_counter()
            val = validate(lc, train_tables)
            extra = list(val["overrides"])
            entry["validation"] = val
            entry["validation_seconds"] = time.perf_counter() - t
            log.info("held out %s: validation chose %s", h, val["best"])
        entry["overrides"] = list(lc.overrides) + extra
        rnd = train_and_score(lc, train_tables, {h: tables[h]}, lc.seeds, extra, keep_models=lc.save_models)
        cfg = rnd["config"]
        entry["towers"] = {"audio": cfg.towers.audio, "text": cfg.towers.text}
        entry["run_config"] = cfg.to_dict()
        entry["trained_on_models"] = list(rnd["prepared"].trained_on)
        assert h not in entry["trained_on_models"]
        per = rnd["scores"][h]
        entry["methods"] = {m: _summary(per[m]) for m in METHODS}
        entry["chance"] = per["CLAP"][0]["chance_uar"]
        entry["labels"] = per["CLAP"][0]["labels"]
        entry["prompt_texts"] = per["CLAP"][0]["prompt_texts"]
        entry["confusion_seed0"] = {m: per[m][0]["confusion"] for m in METHODS}
        diff = np.array(entry["methods"]["SmoothCLAP"]["uar"]) - np.array(entry["methods"]["CLAP"]["uar"])
        entry["wins"] = {"smoothclap": int((diff > 0).sum()), "clap": int((diff < 0).sum()),
                         "ties": int((diff == 0).sum()), "n": int(len(diff)), "mean_diff": float(diff.mean())}
        entry["paper"] = dict(get_task(h).paper)
        entry["timings"] = rnd["timings"]
        entry["caption_example"] = _caption_examples(rnd["prepared"])
        if lc.probe:
            t = time.perf_counter()
            feats, _ = audio_features(build_tower(cfg.towers.audio), tables[h]["file"].astype(str),
                                      cache_dir=_cache(lc), progress=False)
            entry["probe"] = linear_probe(feats, tables[h]["label"], tables[h]["speaker"])
            entry["timings"]["probe"] = time.perf_counter() - t
        entry["seconds"] = time.perf_counter() - t_h
        results["heldout"][h] = entry
        if out_dir is not None:
            _write_round_files(out_dir, h, rnd, entry, lc)
        log.info("held out %s: CLAP %.3f, SmoothCLAP %.3f (%.0f s)", h, entry["methods"]["CLAP"]["mean"],
                 entry["methods"]["SmoothCLAP"]["mean"], entry["seconds"])
    results["wall_seconds"] = time.perf_counter() - t_all
    results["table_md"] = loco_table(results)
    if out_dir is not None:
        write_loco_report(results, out_dir)
    return results


def _caption_examples(prepared, k: int = 3) -> list[str]:
    idx = prepared.caption_index[0]
    step = max(1, len(idx) // k)
    return [prepared.caption_texts[int(i)] for i in idx[::step][:k]]


def _write_round_files(out_dir: Path, h: str, rnd: dict, entry: dict, lc: LocoConfig) -> None:
    from .report import plot_confusion, plot_history

    figs = out_dir / "figures"
    for m in METHODS:
        r = rnd["scores"][h][m][0]
        plot_confusion(r["confusion"], r["labels"],
                       f"{m} seed {lc.seeds[0]}, held out {h} (trained on {'+'.join(entry['trained_on'])}): "
                       f"UAR {r['uar']:.3f}", figs / f"confusion_{h}_{m.lower()}.png")
    if "probe" in entry:
        p = entry["probe"]
        plot_confusion(p["confusion"], p["labels"], f"linear probe in {h} ({p['n_folds']} speaker folds): "
                       f"UAR {p['uar']:.3f}", figs / f"confusion_{h}_probe.png")
    plot_history(rnd["histories"], figs / f"training_{h}.png")
    if lc.save_models:
        for m, model in rnd["models"].items():
            model.save_pretrained(out_dir / "models" / f"heldout-{h}" / m.lower())


def _f(x, nd=3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def loco_table(results: dict) -> str:
    head = ["held out (trained on)", "n", "chance", "CLAP", "SmoothCLAP", "SmoothCLAP wins",
            "linear probe (speaker folds)", "paper CLAP / SmoothCLAP"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for h, e in results["heldout"].items():
        ms = e["methods"]
        probe = e.get("probe")
        paper = e.get("paper") or {}
        lines.append("| " + " | ".join([
            f"{h} ({' + '.join(e['trained_on'])})", str(e["n_test"]), _f(e["chance"]),
            f"{ms['CLAP']['mean']:.3f} ± {ms['CLAP']['sd']:.3f}",
            f"{ms['SmoothCLAP']['mean']:.3f} ± {ms['SmoothCLAP']['sd']:.3f}",
            f"{e['wins']['smoothclap']}/{e['wins']['n']}",
            f"{probe['uar']:.3f} ({probe['n_folds']})" if probe else "–",
            f"{_f(paper.get('CLAP'))} / {_f(paper.get('SmoothCLAP'))}" if paper else "–",
        ]) + " |")
    return "\n".join(lines)


def plot_loco(results: dict, path) -> Path:
    from .report import _plt, _savefig

    plt = _plt()
    hs = list(results["heldout"])
    fig, ax = plt.subplots(figsize=(1.8 + 2.0 * len(hs), 3.4))
    w = 0.22
    for j, (name, color) in enumerate([("CLAP", "tab:blue"), ("SmoothCLAP", "tab:orange"), ("probe", "tab:gray")]):
        xs = np.arange(len(hs)) + (j - 1) * w
        if name == "probe":
            ys = [results["heldout"][h].get("probe", {}).get("uar", np.nan) for h in hs]
            ax.bar(xs, ys, w, color=color, label="linear probe (in-corpus)")
        else:
            ys = [results["heldout"][h]["methods"][name]["mean"] for h in hs]
            es = [results["heldout"][h]["methods"][name]["sd"] for h in hs]
            ax.bar(xs, ys, w, yerr=es, color=color, label=f"{name} zero-shot", capsize=3)
    for i, h in enumerate(hs):
        ax.hlines(results["heldout"][h]["chance"], i - 1.5 * w, i + 1.5 * w, colors="k", linestyles="dashed", lw=1)
    ax.set_xticks(range(len(hs)), hs)
    ax.set_ylabel("UAR")
    ax.set_ylim(0, 1)
    ax.set_title("LOCO zero-shot (mean ± sd over seeds); dashed: chance", fontsize=9)
    ax.legend(fontsize=7)
    return _savefig(fig, Path(path))


def machine_info() -> dict:
    import torch

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": bool(torch.cuda.is_available()), "platform": platform.platform()}


def write_loco_report(results: dict, out_dir) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_loco(results, out / "figures" / "loco_uar.png")
    lc = results["config"]
    lines = ["# Cross-corpus zero-shot benchmark (leave one corpus out)", "",
             f"Corpora: {', '.join(lc['corpora'])} under `{lc['data_root']}`. Seeds: {list(lc['seeds'])}. "
             f"Wall time: {results['wall_seconds']:.0f} s on {results['machine']['cpus']} CPU(s), "
             f"CUDA: {results['machine']['cuda']}.", "",
             "Cells: zero-shot UAR on the held-out corpus, mean ± sd over seeds; prompts = the held-out "
             "task's own label words (smoothclap.tasks). SmoothCLAP wins: seeds where SmoothCLAP's UAR "
             "beats CLAP's (paired: same seed, same data). Linear probe: in-corpus, speaker-independent "
             "folds (count in brackets), the same frozen audio embeddings. Paper: SmoothCLAP paper's "
             "zero-shot UARs (MSP-Podcast training, wav2vec2 / BERT), context only.", "",
             results["table_md"], "", "![UAR](figures/loco_uar.png)", "", "## Per held-out corpus", ""]
    for h, e in results["heldout"].items():
        lines += [f"### {h} (trained on {' + '.join(e['trained_on'])})", "",
                  f"- towers: audio `{e['towers']['audio']}`, text `{e['towers']['text']}`; overrides: "
                  f"{e['overrides'] or 'none'}",
                  f"- clips: {e['n_train']} training, {e['n_test']} held out; models' trained_on = "
                  f"{e['trained_on_models']}",
                  "- prompts: " + "; ".join(f"{k} -> {' / '.join(v)}" for k, v in e["prompt_texts"].items()),
                  "- per seed UAR: " + "; ".join(f"{m} " + ", ".join(f"{u:.3f}" for u in e["methods"][m]["uar"])
                                                for m in METHODS),
                  f"- WA (mean): CLAP {e['methods']['CLAP']['wa_mean']:.3f}, SmoothCLAP "
                  f"{e['methods']['SmoothCLAP']['wa_mean']:.3f}; macro-F1: CLAP "
                  f"{e['methods']['CLAP']['macro_f1_mean']:.3f}, SmoothCLAP {e['methods']['SmoothCLAP']['macro_f1_mean']:.3f}",
                  "- example training captions: " + " | ".join(f"`{c}`" for c in e["caption_example"]),
                  f"- seconds: {e['seconds']:.0f} (" + ", ".join(f"{k} {v:.0f}" for k, v in e["timings"].items()) + ")"]
        if "validation" in e:
            v = e["validation"]
            lines += [f"- validation ({v['scheme']} scheme, seeds {v['seeds']}, training corpora only) chose "
                      f"**{v['best']}**:", "",
                      "| candidate | val UAR | CLAP | SmoothCLAP | s |", "| --- | --- | --- | --- | --- |"]
            for name, c in sorted(v["candidates"].items(), key=lambda kv: -kv[1]["score"]):
                cl = np.mean([f["CLAP"] for f in c["per_fold"]])
                sm = np.mean([f["SmoothCLAP"] for f in c["per_fold"]])
                lines.append(f"| {name} | {c['score']:.3f} | {cl:.3f} | {sm:.3f} | {c['seconds']:.0f} |")
        lines += ["", f"![{h} CLAP](figures/confusion_{h}_clap.png) ![{h} SmoothCLAP](figures/confusion_{h}_smoothclap.png)"
                  + (f" ![{h} probe](figures/confusion_{h}_probe.png)" if "probe" in e else ""), ""]
    lines += ["## Training-caption vocabulary", "",
              "Training labels are mapped to one vocabulary for captions (held-out corpora keep their own "
              "prompt words):", ""]
    for c, m in results["train_labels"].items():
        if c in lc["corpora"] and m:
            lines.append(f"- {c}: " + ", ".join(f"{k} -> {v}" for k, v in m.items()))
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "results.json", results)
    return out / "report.md"
