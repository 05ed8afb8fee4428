"""Reports of the experiments: the LOCO table and figures, the machine a run used."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

from ..io import atomic_write_json, atomic_write_text
from ..plots import _plt, _savefig, plot_confusion, plot_history
from .protocols import EXTRA_PROTOCOLS, PROTOCOLS

METHODS = ("CLAP", "SmoothCLAP")


def write_round_files(out_dir: Path, h: str, rnd: dict, entry: dict, seeds, save_models: bool) -> None:
    """Figures (confusion matrices, training curves) and seed-0 models of one held-out corpus."""
    figs = out_dir / "figures"
    for m in METHODS:
        r = rnd["scores"][h][m][0]["whole"]
        plot_confusion(r["confusion"], r["labels"],
                       f"{m} seed {seeds[0]}, held out {h} (trained on {'+'.join(entry['trained_on'])}): "
                       f"UAR {r['uar']:.3f}", figs / f"confusion_{h}_{m.lower()}.png")
    if "probe" in entry:
        p = entry["probe"]
        plot_confusion(p["confusion"], p["labels"], f"linear probe in {h} ({p['n_folds']} speaker folds): "
                       f"UAR {p['uar']:.3f}", figs / f"confusion_{h}_probe.png")
    plot_history(rnd["histories"], figs / f"training_{h}.png")
    if save_models:
        for m, model in rnd["models"].items():
            model.save_pretrained(out_dir / "models" / f"heldout-{h}" / m.lower())


def _f(x, nd=3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def loco_table(results: dict) -> str:
    """Markdown: per held-out corpus, CLAP and SmoothCLAP (mean ± sd), wins, probe, paper, and a
    column per baseline model scored on the same corpus with the same prompts."""
    baselines = list(results.get("config", {}).get("baselines") or [])
    head = ["held out (trained on)", "n", "chance", "CLAP", "SmoothCLAP", "SmoothCLAP wins",
            "linear probe (speaker folds)", "paper CLAP / SmoothCLAP", *baselines]
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
            *(_f(e.get("baselines", {}).get(b, {}).get("uar")) for b in baselines),
        ]) + " |")
    lines += ["", protocol_table(results)]
    by_lang = [(h, lang, x) for h, e in results["heldout"].items() for lang, x in (e.get("by_language") or {}).items()]
    if by_lang:
        lines += ["", "| held out | prompts | CLAP | SmoothCLAP | SmoothCLAP wins |", "| --- | --- | --- | --- | --- |"]
        for h, e in results["heldout"].items():
            rows = [("en", e["methods"], e["wins"])] + [(lang, x["methods"], x["wins"])
                                                        for hh, lang, x in by_lang if hh == h]
            for lang, ms, w in rows:
                lines.append(f"| {h} | {lang} | {ms['CLAP']['mean']:.3f} ± {ms['CLAP']['sd']:.3f} | "
                             f"{ms['SmoothCLAP']['mean']:.3f} ± {ms['SmoothCLAP']['sd']:.3f} | {w['smoothclap']}/{w['n']} |")
    return "\n".join(lines)


def _pm(m: dict) -> str:
    return f"{m['mean']:.3f} ± {m['sd']:.3f}" if "sd" in m else f"{m['mean']:.3f}"


def _diff(w: dict) -> str:
    return f"{w['mean_diff']:+.3f} ({w['smoothclap']}/{w['n']})"


def protocol_table(results: dict) -> str:
    """Markdown: per held-out corpus and protocol (whole corpus with its groups, skewed speakers,
    single clips; then robust = their mean), CLAP and SmoothCLAP (mean ± sd over seeds) and
    SmoothCLAP minus CLAP, paired (wins out of the seeds); last, the means over corpora."""
    head = ["held out", "chance", "protocol", "CLAP", "SmoothCLAP", "SmoothCLAP - CLAP (wins)"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for h, e in results["heldout"].items():
        for p, x in e["protocols"].items():
            lines.append(f"| {h} | {_f(e['chance'])} | {p} | {_pm(x['methods']['CLAP'])} | "
                         f"{_pm(x['methods']['SmoothCLAP'])} | {_diff(x['wins'])} |")
        r = e["robust"]
        lines.append(f"| {h} | {_f(e['chance'])} | **robust** | **{_pm(r['CLAP'])}** | **{_pm(r['SmoothCLAP'])}** | "
                     f"{_diff(e['robust_wins'])} |")
    sm = results.get("summary")
    if sm and sm["n_corpora"] > 1:
        for what in (*[p for p in sm if p in (*PROTOCOLS, *EXTRA_PROTOCOLS)], "robust"):
            x = sm[what]
            bold = "**" if what == "robust" else ""
            lines.append(f"| {bold}mean of {sm['n_corpora']}{bold} | {_f(sm['chance'])} | {bold}{what}{bold} | "
                         f"{bold}{x['methods']['CLAP']['mean']:.3f}{bold} | {bold}{x['methods']['SmoothCLAP']['mean']:.3f}"
                         f"{bold} | {_diff(x['wins'])} |")
    return "\n".join(lines)


def plot_loco(results: dict, path) -> Path:
    """Bar chart: zero-shot UAR per held-out corpus and method (mean ± sd), probe, chance."""
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
    """What a benchmark ran on (recorded in its results)."""
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
                      "| candidate | val UAR | CLAP | SmoothCLAP | whole | skewed | single | s |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- |"]
            for name, c in sorted(v["candidates"].items(), key=lambda kv: -kv[1]["score"]):
                # robust UAR per method; then per protocol (both methods), each a mean over the folds
                cells = [np.mean([f[k] for f in c["per_fold"]]) for k in (*METHODS, *PROTOCOLS)]
                lines.append(f"| {name} | {c['score']:.3f} | " + " | ".join(f"{x:.3f}" for x in cells)
                             + f" | {c['seconds']:.0f} |")
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
