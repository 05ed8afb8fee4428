"""``smoothclap`` command line: synth, embed, train, evaluate, classify, demo, benchmark."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .config import LOSS_PRESETS

log = logging.getLogger("smoothclap")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("smoothclap").setLevel(logging.INFO)


def _load_table(args) -> "pd.DataFrame":  # noqa: F821
    from . import corpora

    if getattr(args, "manifest", None):
        return corpora.read_manifest(args.manifest, skip_bad=getattr(args, "skip_bad", False))
    if getattr(args, "corpus", None):
        if not args.data_root:
            raise SystemExit("--corpus needs --data-root")
        return corpora.load(args.corpus, args.data_root, skip_bad=getattr(args, "skip_bad", False))
    raise SystemExit("give --manifest FILE or --corpus NAME --data-root DIR")


# -- subcommands ------------------------------------------------------------------------------
def cmd_synth(args) -> int:
    from .synth import synthesize_corpus

    t = time.perf_counter()
    df = synthesize_corpus(args.out, languages=tuple(args.languages.split(",")), seed=args.seed,
                           sentences_per_voice=args.sentences_per_voice, clips_per_combo=args.takes,
                           num_workers=args.num_workers, progress=not args.quiet)
    print(f"wrote {len(df)} clips ({df['duration'].sum() / 60:.1f} min) and {Path(args.out) / 'manifest.csv'} "
          f"in {time.perf_counter() - t:.1f} s")
    print(df.groupby(["language", "label"]).size().unstack(fill_value=0).to_string())
    return 0


def cmd_embed(args) -> int:
    from .distributed import cleanup, embed_sharded, init_distributed
    from .errors import SkipLog
    from .towers import build_tower

    # Under torchrun: process r embeds files r::W on its own device; rank 0 assembles and reports.
    env = init_distributed(args.device)
    try:
        table = _load_table(args)
        skip = SkipLog(skip=args.skip_bad)
        t = time.perf_counter()
        tower = build_tower(args.tower, device=str(env.device))
        emb, ok = embed_sharded(tower, table["file"].astype(str).tolist(), env=env, cache_dir=args.cache_dir,
                                batch_size=args.batch_size, skip=skip, progress=not args.quiet and env.is_main)
        if not env.is_main:
            return 0
        dur = table["duration"].sum() if "duration" in table.columns else float("nan")
        sec = time.perf_counter() - t
        where = f" on {env.world_size} processes" if env.enabled else ""
        print(f"{int(ok.sum())}/{len(ok)} clips embedded with {args.tower} ({emb.shape[1]}-d){where} in {sec:.1f} s"
              + (f", {dur / sec:.0f}x real time" if dur == dur else "") + f"; skipped {skip.count}")
        if args.output:
            import numpy as np

            np.save(args.output, emb)
            print(f"wrote {args.output}")
        return 0
    finally:
        cleanup()


def cmd_train(args) -> int:
    from .config import load_config
    from .distributed import cleanup, init_distributed, prepare_distributed, warm_audio_cache
    from .errors import SkipLog
    from .train import DevSelector, train

    overrides = list(args.set or [])
    if args.preset:
        overrides.append(f"loss.preset={args.preset}")
    cfg = load_config(args.config, overrides)
    if args.manifest:
        cfg.data.manifest = args.manifest
    if args.out:
        cfg.out_dir = args.out
    if args.device:
        cfg.train.device = args.device
    from . import corpora

    # Under torchrun: DistributedDataParallel over the processes (see smoothclap.distributed).
    env = init_distributed(cfg.train.device)
    try:
        if cfg.data.manifest:
            table = corpora.read_manifest(cfg.data.manifest, label_set=cfg.data.labels, skip_bad=cfg.data.skip_bad)
        elif cfg.data.corpus:
            if not cfg.data.root:
                raise SystemExit(f"data.corpus={cfg.data.corpus!r} needs data.root (--set data.root=DIR)")
            table = corpora.load(cfg.data.corpus, cfg.data.root, skip_bad=cfg.data.skip_bad)
        else:
            raise SystemExit("no training data: set data.manifest (or --manifest) or data.corpus + data.root")
        full = table
        if cfg.data.split is not None and "split" in table.columns:
            table = table[table["split"].astype(str) == cfg.data.split]
        if cfg.data.labels is not None:
            unknown = sorted(set(table["label"].astype(str)) - set(cfg.data.labels))
            if unknown:
                raise SystemExit(f"training table has labels {unknown} outside data.labels {cfg.data.labels}")
        skip = SkipLog(skip=cfg.data.skip_bad)
        cache_dir = Path(cfg.cache_dir).expanduser()
        progress = not args.quiet and env.is_main
        callback = None
        if cfg.train.select_split:
            if "split" not in full.columns:
                raise SystemExit("train.select_split needs a table with a 'split' column")
            dev = full[full["split"].astype(str) == cfg.train.select_split]
            if cfg.train.select_labels is not None:
                dev = dev[dev["label"].astype(str).isin(cfg.train.select_labels)]
            if len(dev) == 0:
                raise SystemExit(f"no rows of split {cfg.train.select_split!r} (labels {cfg.train.select_labels}) "
                                 "for model selection")
            if env.enabled or env.device.type == "cuda":  # selection features: computed once, on the devices
                warm_audio_cache(cfg.towers.audio, dev["file"].astype(str).tolist(), env, cache_dir=cache_dir,
                                 batch_size=cfg.towers.batch_size, progress=progress, desc="audio (selection)")
            callback = DevSelector(dev, cfg.out_dir, labels=cfg.train.select_labels,
                                   templates=cfg.train.select_templates, cache_dir=cache_dir, env=env,
                                   skip_bad=cfg.data.skip_bad)
        prepared = prepare_distributed(cfg, table, env, cache_dir=cache_dir, progress=progress, skip=skip)
        res = train(cfg, prepared, run_dir=cfg.out_dir, progress=progress, callback=callback, dist_env=env)
        if env.is_main:
            last = res.history[-1] if res.history else {}
            where = f" on {env.world_size} processes" if env.enabled else ""
            print(f"trained {len(prepared.table)} clips, {cfg.train.epochs} epochs ({cfg.train.mode}){where} in "
                  f"{res.seconds:.1f} s; final loss {last.get('loss', float('nan')):.4f}, "
                  f"scale {last.get('scale', float('nan')):.2f}; skipped {prepared.skipped.count}; "
                  f"model -> {Path(cfg.out_dir) / 'model'}")
            if callback is not None and callback.best is not None:
                print(f"model selection on {cfg.train.select_split}: best UAR {callback.best['uar']:.4f} "
                      f"at epoch {callback.best['epoch']} -> {Path(cfg.out_dir) / 'best_model'}")
        return 0
    finally:
        cleanup()


def cmd_evaluate(args) -> int:
    from .errors import SkipLog
    from .evaluate import zero_shot_evaluate
    from .io import atomic_write_json, atomic_write_text
    from .model import SmoothClapModel
    from .report import markdown_table, plot_confusion

    if args.task:
        return _evaluate_tasks(args)
    model = SmoothClapModel.from_pretrained(args.model)
    table = _load_table(args)
    if args.split:
        table = table[table["split"].astype(str) == args.split]
    corpus_names = set(table["corpus"].astype(str)) if "corpus" in table.columns else set()
    overlap = corpus_names & set(model.config.trained_on or [])
    if overlap and not args.allow_trained_corpus:
        raise SystemExit(f"refusing to score corpus {sorted(overlap)}: the model was trained on it "
                         f"(trained_on={model.config.trained_on}); pass --allow-trained-corpus to override")
    labels = args.labels.split(",") if args.labels else None
    prompts = dict(p.split("=", 1) for p in args.prompt) if args.prompt else None
    skip = SkipLog(skip=args.skip_bad)
    ev = zero_shot_evaluate(model, table, labels, prompts=prompts, templates=args.templates or "bare",
                            cache_dir=Path(args.cache_dir).expanduser() if args.cache_dir else None, skip=skip,
                            progress=not args.quiet)
    m = ev.metrics
    row = {"n": m["n"], "UAR": m["uar"], "WA": m["wa"], "macro-F1": m["macro_f1"], "chance": m["chance_uar"],
           "skipped": skip.count}
    md = markdown_table([row], list(row))
    print(md)
    if args.out:
        out = Path(args.out)
        atomic_write_json(out / "metrics.json", {**m, "trained_on": model.config.trained_on,
                                                 "skipped_files": skip.items})
        ev.predictions.to_csv(out / "predictions.csv", index=False)
        plot_confusion(m["confusion"], m["labels"], f"UAR {m['uar']:.3f}", out / "confusion.png")
        atomic_write_text(out / "report.md", f"# evaluation\n\nmodel: `{args.model}` (trained on "
                          f"{model.config.trained_on})\n\n{md}\n\n![confusion](confusion.png)\n")
        print(f"wrote {out}/report.md")
    return 0


def _evaluate_tasks(args) -> int:
    """``evaluate --task NAME|all --data-root DIR``: the task registry's protocols and prompts."""
    from .errors import BadInputError
    from .model import SmoothClapModel
    from .tasks import (TASKS, CorpusNotFound, TrainedCorpusError, get_task, results_markdown, run_task,
                        tasks_present, write_task_report)

    if args.manifest or args.corpus:
        raise SystemExit("--task replaces --manifest / --corpus (give --data-root)")
    if not args.data_root:
        raise SystemExit("--task needs --data-root (a folder holding the corpora, e.g. <root>/emodb)")
    names = [n.strip() for n in args.task.split(",") if n.strip()]
    model = SmoothClapModel.from_pretrained(args.model)
    missing: dict[str, str] = {}
    if names == ["all"]:
        tasks, missing = tasks_present(args.data_root)
        for name, why in missing.items():
            print(f"skipping task {name}: {why}")
        if not tasks:
            raise SystemExit(f"no task corpus found under {args.data_root} (known tasks: {', '.join(TASKS)})")
    else:
        try:
            tasks = [get_task(n) for n in names]
        except ValueError as e:
            raise SystemExit(str(e))
    cache = args.cache_dir
    results, errors = [], {}
    for task in tasks:
        try:
            res = run_task(task, model, args.data_root, cache_dir=cache,
                           allow_trained_corpus=args.allow_trained_corpus, templates=args.templates,
                           skip_bad=args.skip_bad, progress=not args.quiet)
        except TrainedCorpusError as e:
            if len(tasks) == 1:
                raise SystemExit(str(e))
            print(f"skipping task {task.name}: {e}")
            errors[task.name] = str(e)
            continue
        except CorpusNotFound as e:
            if len(tasks) == 1:
                raise SystemExit(f"task {task.name}: {e}")
            print(f"skipping task {task.name}: {e}")
            missing[task.name] = str(e)
            continue
        except BadInputError as e:  # a corpus folder in the wrong layout: report it, score the rest
            if len(tasks) == 1:
                raise
            print(f"task {task.name} failed: {e}")
            errors[task.name] = str(e)
            continue
        if res.get("warning"):
            print(res["warning"])
        results.append(res)
    print(f"model {args.model} trained on: {', '.join(model.config.trained_on or []) or 'unknown'}")
    if results:
        print(results_markdown(results))
    if args.out:
        path = write_task_report(results, args.out, model_path=str(args.model), trained_on=model.config.trained_on,
                                 missing=missing, errors=errors)
        print(f"wrote {path}")
    return 0 if results else 1


MIN_GROUP_FILES = 8  # fewest clips to standardise a group of test clips on their own statistics


def cmd_classify(args) -> int:
    import numpy as np
    import torch

    from .audio import read_audio
    from .errors import BadInputError, SkipLog
    from .model import SmoothClapModel
    from .zeroshot import ZeroShotClassifier

    model = SmoothClapModel.from_pretrained(args.model)
    labels = [x.strip() for x in args.labels.split(",") if x.strip()]
    if len(labels) < 2:
        raise SystemExit("--labels needs at least two comma-separated labels")
    clf = ZeroShotClassifier(model, labels, templates=args.templates)
    skip = SkipLog(skip=args.skip_bad)
    names, feats = [], []
    for f in args.files:
        try:
            wav = read_audio(f)
        except BadInputError as e:
            skip.handle(e)
            continue
        names.append(f)
        feats.append(model.tower("audio").embed([wav])[0].numpy())
    if feats:
        x = np.stack(feats)
        group = getattr(model.config, "feature_norm_group", None)
        if group:
            # the model was trained on per-group standardised features: treat the files given as
            # one group (needs several clips; with fewer, fall back to the training statistics)
            if len(x) >= MIN_GROUP_FILES:
                from .targets import standardize

                x = standardize(x, "zscore")
            else:
                log.warning("model expects features standardised per %s; %d file(s) are too few to do that "
                            "(>= %d), so the training statistics are used", group, len(x), MIN_GROUP_FILES)
        probs = torch.softmax(clf.logits_from_features(x), -1)
        for f, p in zip(names, probs):
            order = torch.argsort(p, descending=True)
            print(f"{f}:")
            for i in order[: args.top]:
                print(f"  {labels[i]:<24s} {float(p[i]):.3f}")
    if skip.count:
        print(f"skipped {skip.count} file(s): " + "; ".join(f"{p} ({r})" for p, r in skip.items))
    return 0


def cmd_demo(args) -> int:
    from .demo import DemoConfig, run_demo

    t = time.perf_counter()
    dc = DemoConfig(out_dir=args.out, epochs=args.epochs, seeds=[int(s) for s in args.seeds.split(",")],
                    sentences_per_voice=args.sentences_per_voice, progress=not args.quiet,
                    smoothclap_preset=args.preset, cache_dir=args.cache_dir)
    res = run_demo(dc)
    print()
    print("Zero-shot UAR on held-out synthetic speech (mean ± sd over seeds; chance = 1/6):")
    print(res["table_md"])
    print()
    for k, v in res["timings"].items():
        print(f"  {k:<45s} {v:7.1f} s")
    print(f"  {'total':<45s} {time.perf_counter() - t:7.1f} s")
    print(f"report: {Path(res['out_dir']) / 'report.md'}; models: {Path(res['out_dir']) / 'models'}")
    return 0


def _loco_config(args, **extra):
    """LocoConfig from the ``benchmark`` subcommand's shared arguments."""
    from .benchmark import LocoConfig

    return LocoConfig(data_root=args.data_root, corpora=tuple(c.strip() for c in args.corpora.split(",")),
                      heldout=tuple(c.strip() for c in args.heldout.split(",")) if args.heldout else None,
                      seeds=tuple(int(x) for x in args.seeds.split(",")), epochs=args.epochs,
                      batch_size=args.batch_size, embed_dim=args.embed_dim, audio_tower=args.audio_tower,
                      text_tower=args.text_tower, smoothclap_preset=args.preset, overrides=tuple(args.set or ()),
                      cache_dir=args.cache_dir, out_dir=args.out, num_workers=args.num_workers,
                      progress=not args.quiet, **extra)


def cmd_benchmark(args) -> int:
    from .benchmark import run_loco, select_candidates

    if args.which == "ablation":
        return cmd_ablation(args)
    if args.which != "loco":
        raise SystemExit(f"unknown benchmark {args.which!r} (known: loco, ablation)")
    t = time.perf_counter()
    lc = _loco_config(args, probe=not args.no_probe, validate=args.validate,
                      validation_scheme=args.validation_scheme,
                      validation_seeds=tuple(int(x) for x in args.validation_seeds.split(",")))
    if args.candidates:
        try:
            lc.grid = select_candidates([c.strip() for c in args.candidates.split(";") if c.strip()])
        except ValueError as e:
            raise SystemExit(str(e))
    res = run_loco(lc)
    print()
    print("Zero-shot UAR, leave one corpus out (mean ± sd over seeds " + ",".join(map(str, lc.seeds)) + "):")
    print(res["table_md"])
    for h, e in res["heldout"].items():
        if "validation" in e:
            print(f"  {h}: validation (training corpora only) chose {e['validation']['best']!r}")
    print(f"total {time.perf_counter() - t:.0f} s; report: {Path(args.out) / 'report.md'}")
    return 0


def cmd_ablation(args) -> int:
    from .ablation import AblationConfig, run_ablation

    t = time.perf_counter()
    lc = _loco_config(args, probe=False)
    res = run_ablation(AblationConfig(loco=lc, val_seeds=tuple(int(x) for x in args.validation_seeds.split(","))))
    print(res["tables_md"])
    print(f"total {time.perf_counter() - t:.0f} s; report: {Path(args.out) / 'ablation.md'}")
    return 0


# -- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smoothclap", description=__doc__)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="cmd", required=True)

    def data_args(sp, required=True):
        sp.add_argument("--manifest", help="CSV/TSV/JSONL manifest (file/path, label, ...)")
        sp.add_argument("--corpus", help="corpus name (see smoothclap.corpora.available())")
        sp.add_argument("--data-root", help="corpus root in its official layout")
        sp.add_argument("--skip-bad", action="store_true", help="skip (and count) bad files instead of failing")

    s = sub.add_parser("synth", help="synthesise an emotional-speech corpus with espeak-ng (demo/test data)")
    s.add_argument("out")
    s.add_argument("--languages", default="en,de")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--sentences-per-voice", type=int, default=None)
    s.add_argument("--takes", type=int, default=1, help="clips per voice x sentence x emotion")
    s.add_argument("--num-workers", type=int, default=2)
    s.set_defaults(fn=cmd_synth)

    s = sub.add_parser("embed", help="run a frozen tower over a corpus once (fills the cache)")
    data_args(s)
    s.add_argument("--tower", default="whisper-tiny-en")
    s.add_argument("--cache-dir", default="~/.cache/smoothclap")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--output", help="also write the embeddings as .npy")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (under torchrun: each process's GPU)")
    s.set_defaults(fn=cmd_embed)

    s = sub.add_parser("train", help="train heads (+ scale) on cached embeddings, or end to end (train.mode=e2e); "
                       "under torchrun: distributed")
    s.add_argument("--config", help="YAML config (see configs/)")
    s.add_argument("--manifest")
    s.add_argument("--preset", choices=sorted(LOSS_PRESETS))
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. train.epochs=5")
    s.add_argument("--out")
    s.add_argument("--device", help="auto | cpu | cuda[:N] (under torchrun: each process's GPU)")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("evaluate", help="zero-shot evaluation of a saved model on labelled clips or named tasks")
    s.add_argument("--model", required=True)
    data_args(s)
    s.add_argument("--task", help="task name(s), comma-separated, or 'all' (the paper's tasks + emodb, savee; "
                   "corpora found as <data-root>/<name>, see smoothclap.tasks); replaces --manifest/--corpus")
    s.add_argument("--split", help="only rows of this split")
    s.add_argument("--labels", help="comma-separated class labels (default: the table's)")
    s.add_argument("--prompt", action="append", metavar="LABEL=TEXT", help="prompt word(s) for a label")
    s.add_argument("--templates", default=None, help="template set (bare, feeling, ensemble) or one template "
                   "(default: bare; with --task: the task's own template)")
    s.add_argument("--cache-dir", default="~/.cache/smoothclap")
    s.add_argument("--out", help="write metrics.json, predictions.csv, confusion.png, report.md here "
                   "(--task: report.md, results.json, confusion_<task>.png, predictions_<task>.csv)")
    s.add_argument("--allow-trained-corpus", action="store_true")
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("classify", help="rank free-text labels for audio files")
    s.add_argument("--model", required=True)
    s.add_argument("--labels", required=True, help="comma-separated, e.g. 'angry,happy,sad,neutral'")
    s.add_argument("--templates", default="bare")
    s.add_argument("--top", type=int, default=5)
    s.add_argument("--skip-bad", action="store_true")
    s.add_argument("files", nargs="+")
    s.set_defaults(fn=cmd_classify)

    s = sub.add_parser("demo", help="offline demo: synth corpus, train CLAP + SmoothCLAP, compare zero-shot")
    s.add_argument("--out", default="smoothclap_demo")
    s.add_argument("--epochs", type=int, default=20)
    s.add_argument("--seeds", default="0,1,2")
    s.add_argument("--sentences-per-voice", type=int, default=10)
    s.add_argument("--preset", default="smoothclap", choices=[k for k in sorted(LOSS_PRESETS) if k != "clap"])
    s.add_argument("--cache-dir", default=None, help="default: <out>/cache")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("benchmark", help="real-data benchmarks: 'loco' = cross-corpus zero-shot, leave one corpus out")
    s.add_argument("which", choices=["loco", "ablation"],
                   help="loco: CLAP vs SmoothCLAP per held-out corpus; ablation: soft-target options chosen on "
                        "validation speakers of the training corpora, then scored once per held-out corpus")
    s.add_argument("--data-root", default="../shared/data", help="folder with <corpus>/ subfolders (emodb, ravdess, tess)")
    s.add_argument("--corpora", default="emodb,ravdess,tess")
    s.add_argument("--heldout", help="only these held-out corpora (default: each in turn)")
    s.add_argument("--seeds", default="0,1,2,3,4")
    s.add_argument("--epochs", type=int, default=15)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--embed-dim", type=int, default=256)
    s.add_argument("--audio-tower", default="whisper-tiny-en")
    s.add_argument("--text-tower", default="minilm-l6")
    s.add_argument("--preset", default="smoothclap", choices=[k for k in sorted(LOSS_PRESETS) if k != "clap"])
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override for both methods")
    s.add_argument("--validate", action="store_true",
                   help="per held-out corpus, choose among candidate settings on the training corpora only")
    s.add_argument("--validation-scheme", default="corpus", choices=["corpus", "speakers"])
    s.add_argument("--validation-seeds", default="0,1")
    s.add_argument("--candidates", help="';'-separated candidate names from smoothclap.benchmark.DEFAULT_GRID "
                   "(default: all of its stages)")
    s.add_argument("--no-probe", action="store_true", help="skip the in-corpus linear probe")
    s.add_argument("--cache-dir", default="~/.cache/smoothclap")
    s.add_argument("--num-workers", type=int, default=2)
    s.add_argument("--out", default="runs/loco")
    s.set_defaults(fn=cmd_benchmark)
    return p


def main(argv: list[str] | None = None) -> int:
    from .errors import BadInputError

    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.fn(args)
    except BadInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
