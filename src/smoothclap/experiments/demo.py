"""The offline demo: synthesise a corpus, train CLAP and SmoothCLAP identically, compare zero-shot.

Everything runs on a laptop CPU with the bundled towers (Whisper tiny.en audio, MiniLM text) and
openSMILE eGeMAPS captions. The synthetic corpus (espeak-ng) demonstrates the pipeline; it is not a
substitute for real emotional speech (see ``smoothclap benchmark`` for real corpora).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..config import RunConfig, loss_preset
from ..corpora import read_manifest
from ..evaluate import zero_shot_evaluate
from ..io import atomic_write_json, atomic_write_text
from ..plots import markdown_table, plot_confusion, plot_history, plot_targets
from ..trainer import prepare, train
from .loco import test_features
from .settings import DemoConfig
from .synth import split_holdout, synthesize_corpus

log = logging.getLogger("smoothclap")


def _stage(timings: dict, name: str, t0: float) -> float:
    timings[name] = time.perf_counter() - t0
    log.info("%s: %.1f s", name, timings[name])
    return time.perf_counter()


def run_demo(dc: DemoConfig) -> dict:
    """Synthesise, train both methods for every seed, score, write ``report.md``; returns
    ``{"table_md", "timings", "out_dir", "summary"}``."""
    out = Path(dc.out_dir)
    cache = Path(dc.cache_dir) if dc.cache_dir else out / "cache"
    timings: dict[str, float] = {}
    t = time.perf_counter()

    table = _corpus(dc, out)
    t = _stage(timings, "synthesise corpus", t)

    base = _base_config(dc, cache)
    train_table = table[table["split"] == "train"].reset_index(drop=True)
    prepared = prepare(base, train_table, cache_dir=cache, progress=dc.progress, need_local=True, need_desc=True)
    t = _stage(timings, "features, captions, embeddings", t)

    tests = {name: table[table["split"] == name].reset_index(drop=True) for name in ("test_en", "test_de")}
    feats = test_features(base, prepared, tests, cache, dc.progress)
    t = _stage(timings, "test-set embeddings", t)

    labels = sorted(train_table["label"].unique())
    methods = {"CLAP": loss_preset("clap"), "SmoothCLAP": loss_preset(dc.smoothclap_preset)}
    results, histories, examples = _train_and_score(dc, base, prepared, tests, feats, labels, methods, out)
    t = _stage(timings, f"train + evaluate {len(methods)} methods x {len(dc.seeds)} seeds", t)

    rows = _result_rows(tests, methods, results)
    table_md = markdown_table(rows, ["test set", "chance", "CLAP", "SmoothCLAP", "CLAP WA", "SmoothCLAP WA"])
    figs = out / "figures"
    _figures(dc, results, histories, examples, methods, figs)
    t = _stage(timings, "report", t)

    n_train = len(prepared.table)
    report = _report(dc, base, methods["SmoothCLAP"], train_table, n_train, table_md, timings, figs)
    atomic_write_text(out / "report.md", "\n".join(report) + "\n")
    summary = {"table": rows, "timings": timings, "n_train": n_train,
               "per_seed": {f"{m}/{t_}": [ev.metrics["uar"] for ev in evs] for (m, t_), evs in results.items()}}
    atomic_write_json(out / "summary.json", summary)
    return {"table_md": table_md, "timings": timings, "out_dir": str(out), "summary": summary}


def _corpus(dc: DemoConfig, out: Path):
    """The synthetic corpus (English and German), split into train / test_en / test_de."""
    synthesize_corpus(out / "corpus", languages=("en", "de"),
                      sentences_per_voice={"en": dc.sentences_per_voice, "de": dc.de_sentences_per_voice}, seed=dc.corpus_seed,
                      num_workers=dc.num_workers, progress=dc.progress)
    table = split_holdout(read_manifest(out / "corpus" / "manifest.csv", skip_bad=False))
    table["corpus"] = "synthetic-en"
    return table


def _base_config(dc: DemoConfig, cache: Path) -> RunConfig:
    """The settings both methods share (the SmoothCLAP loss; CLAP swaps the loss section only)."""
    base = RunConfig()
    base.train.epochs = dc.epochs
    base.train.num_workers = dc.num_workers
    base.cache_dir = str(cache)
    base.loss = loss_preset(dc.smoothclap_preset)
    return base


def _train_and_score(dc: DemoConfig, base: RunConfig, prepared, tests: dict, feats: dict, labels: list,
                     methods: dict, out: Path) -> tuple[dict, dict, dict]:
    """Train every method for every seed and score it zero-shot on each test set; the first seed's
    model is saved (``models/<method>``) with its results on the model card. Returns (evaluations
    by (method, test set), training history by method, example targets by method)."""
    results, histories, examples = {}, {}, {}
    for mname, lcfg in methods.items():
        for seed in dc.seeds:
            cfg = base.updated({"loss": lcfg, "train.seed": seed,
                                "out_dir": str(out / "runs" / f"{lcfg.preset}-seed{seed}")})
            res = train(cfg, prepared, run_dir=cfg.out_dir, progress=dc.progress)
            recorded = []
            for tname, df in tests.items():
                ev = zero_shot_evaluate(res.model, df, labels, features=feats[tname], progress=False)
                results.setdefault((mname, tname), []).append(ev)
                m = ev.metrics
                recorded.append({"task": f"synthetic {tname}", "corpus": "synthetic", "n": m["n"], "uar": m["uar"],
                                 "wa": m["wa"], "macro_f1": m["macro_f1"], "chance_uar": m["chance_uar"],
                                 "protocol": "held-out voices; bare label words"})
            if seed == dc.seeds[0]:  # the saved model, with its results on the model card
                histories[mname] = res.history
                examples[mname] = res.example_targets
                res.model.results = recorded
                res.model.save_pretrained(out / "models" / mname.lower())
    return results, histories, examples


def _result_rows(tests: dict, methods: dict, results: dict) -> list[dict]:
    """One row per test set: chance, UAR mean ± sd over seeds and mean WA per method."""
    rows = []
    for tname, df in tests.items():
        row = {"test set": f"{tname} ({len(df)} clips)", "chance": 1.0 / len(set(df["label"]))}
        for mname in methods:
            uars = np.array([ev.metrics["uar"] for ev in results[(mname, tname)]])
            row[mname] = f"{uars.mean():.3f} ± {uars.std(ddof=1) if len(uars) > 1 else 0:.3f}"
            row[f"{mname} WA"] = float(np.mean([ev.metrics["wa"] for ev in results[(mname, tname)]]))
        rows.append(row)
    return rows


def _figures(dc: DemoConfig, results: dict, histories: dict, examples: dict, methods: dict, figs: Path) -> None:
    """Confusion matrices (first seed), SmoothCLAP's soft targets, training curves."""
    for (mname, tname), evs in results.items():
        m = evs[0].metrics
        plot_confusion(m["confusion"], m["labels"], f"{mname} seed {dc.seeds[0]}, {tname}: UAR {m['uar']:.3f}",
                       figs / f"confusion_{mname.lower()}_{tname}.png")
    plot_targets(examples.get("SmoothCLAP"), figs / "soft_targets_smoothclap.png",
                 title=f"SmoothCLAP targets, one batch of the last epoch (beta={methods['SmoothCLAP'].beta:g})")
    plot_history(histories, figs / "training_curves.png")


def _report(dc: DemoConfig, base: RunConfig, sm, train_table, n_train: int, table_md: str, timings: dict,
            figs: Path) -> list[str]:
    """The lines of ``report.md``."""
    return [
        "# smoothclap demo report", "",
        "Synthetic espeak-ng speech (a pipeline demonstration, not real emotional speech).",
        f"Trained on: {n_train} English clips of {train_table['speaker'].nunique()} voices "
        f"(split `train`); test_en = held-out voices reading held-out sentences; test_de = German clips.",
        f"Towers: audio `{base.towers.audio}`, text `{base.towers.text}`; heads d={base.model.embed_dim}; "
        f"Adam lr {base.train.lr:g}, batch {base.train.batch_size}, {dc.epochs} epochs, seeds {dc.seeds}.",
        f"SmoothCLAP: beta={sm.beta:g}, gamma={sm.gamma:g}, tau_a={sm.tau_a:g}, tau_t={sm.tau_t:g}, "
        f"q_t2t from `{sm.text_target}`. CLAP: beta=0, everything else identical.",
        "Zero-shot prompts: bare label words. Cells: UAR mean ± sd over seeds; WA = accuracy (mean).", "",
        table_md, "",
        "## Stage times (s)", "",
        markdown_table([{"stage": k, "seconds": round(v, 1)} for k, v in timings.items()], ["stage", "seconds"]),
        "", "## Figures", "",
        *[f"![{p.stem}](figures/{p.name})" for p in sorted(figs.glob("*.png"))], "",
        "Models: `models/clap`, `models/smoothclap` (load with `SmoothClapModel.from_pretrained`).",
    ]
