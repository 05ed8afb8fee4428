"""``smoothclap`` command line. Each subcommand parses its flags, calls one library function and
prints; defaults come from the config dataclasses, so the command line and the documented recipe
agree. A user's mistake (bad audio, manifest, config, flag, model folder, full disk) ends with one
line ``error: <file or key>: <reason>`` and exit code 2 (``--debug`` shows the traceback)."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("smoothclap")


def _setup_logging(verbose: bool, quiet: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("smoothclap").setLevel(logging.INFO if verbose else logging.WARNING)
    if quiet:  # third-party progress bars too (transformers' weight loading, the hub's downloads)
        try:
            import huggingface_hub.utils
            import transformers

            huggingface_hub.utils.disable_progress_bars()
            transformers.utils.logging.disable_progress_bar()
            transformers.utils.logging.set_verbosity_error()
        except Exception:  # noqa: BLE001 - a library missing or changed: nothing to silence
            pass


class _Parser(argparse.ArgumentParser):
    """argparse, with a flag mistake as one line ``error: <flag>: <reason>`` and exit code 2 (like
    every other mistake; ``--help`` shows the usage)."""

    def error(self, message: str):
        import re

        m = re.match(r"argument ([^:]+): (.*)", message, re.S)
        if m:
            key, reason = m.group(1).split("/")[-1], m.group(2)
        elif message.startswith("the following arguments are required: "):
            key, reason = message.split(": ", 1)[1], "required"
        elif message.startswith("unrecognized arguments: "):
            key, reason = message.split(": ", 1)[1], "unrecognized argument(s)"
        else:
            key, reason = "arguments", message
        reason = " ".join(reason.split())
        self.exit(2, f"error: {key}: {reason} (see {self.prog} --help)\n")


def _int_at_least(low: int, high: int | None = None):
    """argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < low or (high is not None and v > high):
            raise argparse.ArgumentTypeError(f"{v}: must be " + (f"in [{low}, {high}]" if high is not None
                                                                  else f">= {low}"))
        return v

    return parse


def _check_out(args) -> None:
    """``--out`` (a folder every command writes into) must not be an existing file, nor lie under one."""
    from .errors import BadInputError

    out = getattr(args, "out", None)
    if not out:
        return
    for p in (Path(out), *Path(out).parents):
        if p.exists() and not p.is_dir():
            raise BadInputError(p, "exists and is not a folder (--out names a folder to write into)")


def _tolerant_streams() -> None:
    """Printing a file name that is not valid UTF-8 (held as surrogate escapes) never fails: stdout
    writes its original bytes, stderr a backslash escape (Python's own choice for stderr)."""
    for stream, handler in ((sys.stdout, "surrogateescape"), (sys.stderr, "backslashreplace")):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors=handler)
            except (ValueError, OSError, AttributeError):  # not a text stream we may change
                pass


def _table(args, all_if_unsplit: bool = False):
    """The clips a command works on and what reading them left out (a :class:`smoothclap.corpora.Table`):
    ``--manifest``, ``--dataset`` or ``--corpus`` + ``--data-root`` (+ ``--split``)."""
    from . import corpora
    from .errors import BadInputError, SkipLog

    skips = SkipLog(skip=getattr(args, "skip_bad", False))
    if getattr(args, "dataset", None) and (getattr(args, "manifest", None) or getattr(args, "corpus", None)):
        raise BadInputError("--dataset", "give one of --manifest, --dataset or --corpus")
    if getattr(args, "manifest", None):
        table = corpora.manifest_table(args.manifest, skips=skips)
        name = args.manifest
    elif getattr(args, "dataset", None):
        table = corpora.dataset_table(args.dataset, format=args.dataset_format, split=args.dataset_split,
                                      columns=_columns(args.column), skips=skips)
        name = args.dataset
    elif getattr(args, "corpus", None):
        if not args.data_root:
            raise BadInputError("--corpus", "needs --data-root (the corpus folder)")
        table = corpora.Table(corpora.load(args.corpus, args.data_root, skips=skips), skips, str(args.data_root))
        name = args.data_root
    else:
        raise BadInputError("arguments", "give --manifest FILE, --dataset DATASET or --corpus NAME --data-root DIR")
    if getattr(args, "split", None):
        rows = corpora.rows_of_split(table.rows, args.split, str(name), all_if_unsplit=all_if_unsplit)
        table = table.with_rows(rows.reset_index(drop=True))
    return table


def _columns(pairs) -> dict[str, str]:
    """``--column FIELD=NAME`` (repeatable) -> ``{field: name}``."""
    from .errors import BadInputError

    out = {}
    for pair in pairs or []:
        field, sep, name = pair.partition("=")
        if not sep or not field.strip() or not name.strip():
            raise BadInputError("--column", f"{pair!r} must look like FIELD=COLUMN (e.g. label=emotion)")
        out[field.strip()] = name.strip()
    return out


def _dataset_args(sp, what: str = "") -> None:
    """``--dataset`` and its options (beside ``--manifest``)."""
    sp.add_argument("--dataset", help="a Hugging Face dataset (save_to_disk folder, Parquet file/glob, Hub id) or "
                    "WebDataset .tar shards (path, glob, brace pattern shards-{000..009}.tar)" + what)
    sp.add_argument("--dataset-format", choices=["hf", "webdataset"], help="format of --dataset (default: detected)")
    sp.add_argument("--dataset-split", help="the split of a DatasetDict / Hub dataset to read (default: all)")
    sp.add_argument("--column", action="append", metavar="FIELD=COLUMN", help="the dataset's column (JSON field) of "
                    "a field: audio, label, caption, speaker, gender, split, language, corpus; repeatable")


def _model(spec: str):
    """A model folder, a Hub id, or ``hf-clap:<id or folder>`` (any Hugging Face ClapModel)."""
    from .models import load_model

    return load_model(spec)


# -- subcommands ------------------------------------------------------------------------------
def cmd_synth(args) -> int:
    from .experiments.synth import synthesize_corpus

    t = time.perf_counter()
    df = synthesize_corpus(args.out, languages=tuple(args.languages.split(",")), seed=args.seed,
                           sentences_per_voice=args.sentences_per_voice, clips_per_combo=args.takes,
                           num_workers=args.num_workers, progress=not args.quiet)
    print(f"wrote {len(df)} clips ({df['duration'].sum() / 60:.1f} min) and {Path(args.out) / 'manifest.csv'} "
          f"in {time.perf_counter() - t:.1f} s")
    print(df.groupby(["language", "label"]).size().unstack(fill_value=0).to_string())
    return 0


def cmd_embed(args) -> int:
    from .errors import BadInputError
    from .towers import check_spec
    from .trainer.distributed import embed_corpus

    try:
        check_spec(args.tower, "audio")
    except ValueError as e:
        raise BadInputError("--tower", str(e)) from None
    table = _table(args)
    run = embed_corpus(table, args.tower, device=args.device, cache_dir=args.cache_dir, batch_size=args.batch_size,
                       skip_bad=args.skip_bad, progress=not args.quiet, output=args.output)
    if run is None:  # not rank 0
        return 0
    dur = table.rows["duration"].sum() if "duration" in table.rows.columns else float("nan")
    where = f" on {run.world_size} processes" if run.world_size > 1 else ""
    print(f"{int(run.ok.sum())}/{len(run.ok)} clips embedded with {args.tower} ({run.embeddings.shape[1]}-d){where} "
          f"in {run.seconds:.1f} s" + (f", {dur / run.seconds:.0f}x real time" if dur == dur else "")
          + f"; skipped {len(run.skipped)}")
    if run.output:
        print(f"wrote {run.output} and {run.output}.files.csv")
    return 0


def cmd_train(args) -> int:
    from .config import load_config
    from .trainer import run_training

    flags = {"loss.preset": args.preset, "data.manifest": args.manifest, "data.corpus": args.corpus,
             "data.dataset": args.dataset, "data.dataset_format": args.dataset_format,
             "data.dataset_split": args.dataset_split, "data.columns": _columns(args.column),
             "data.root": args.data_root, "out_dir": args.out, "train.device": args.device}
    cfg = load_config(args.config, args.set, {k: v for k, v in flags.items() if v})
    run = run_training(cfg, progress=not args.quiet, new_folder=args.new_folder)
    if run is None:
        return 0
    last = run.result.history[-1] if run.result.history else {}
    where = f" on {run.world_size} processes" if run.world_size > 1 else ""
    print(f"trained {len(run.prepared.table)} clips, {cfg.train.epochs} epochs ({cfg.train.mode}){where} in "
          f"{run.result.seconds:.1f} s; final loss {last.get('loss', float('nan')):.4f}, "
          f"scale {last.get('scale', float('nan')):.2f}; skipped {len(run.skipped)}; model -> {run.out_dir / 'model'}")
    if run.selection is not None:
        print(f"model selection on {cfg.train.select_split}: best UAR {run.selection['uar']:.4f} "
              f"at epoch {run.selection['epoch']} -> {run.out_dir / 'best_model'}")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_table, metrics_markdown
    from .errors import BadInputError
    from .prompts import parse_labels

    model = _model(args.model)
    if args.task:
        if args.manifest or args.corpus or args.dataset:
            raise BadInputError("--task", "replaces --manifest / --dataset / --corpus (give --data-root)")
        if not args.data_root:
            raise BadInputError("--task", "needs --data-root (a folder holding the corpora, e.g. <root>/emodb)")
        from .tasks import evaluate_tasks, results_markdown

        baselines = {spec: _model(spec) for spec in (args.baseline or [])}
        run = evaluate_tasks(model, args.task, args.data_root, cache_dir=args.cache_dir, templates=args.templates,
                             allow_trained_corpus=args.allow_trained_corpus, skip_bad=args.skip_bad,
                             out_dir=args.out, model_name=str(args.model), progress=not args.quiet,
                             baselines=baselines, prompt_language=args.prompt_language)
        for name, why in run.missing.items():
            print(f"skipping task {name}: {why}")
        for name, why in run.errors.items():
            print(f"task {name} failed: {why}")
        for r in run.results:
            if r.get("warning"):
                print(r["warning"])
        print(f"model {args.model} trained on: {', '.join(model.config.trained_on or []) or 'unknown'}")
        if run.results:
            print(results_markdown(run.results))
        if run.report:
            print(f"wrote {run.report}")
        if args.record:
            from .hub import record_results

            if not Path(args.model).is_dir():
                raise BadInputError("--record", "needs a local model folder (--model DIR)")
            mine = [r for r in run.results if r.get("model") == str(args.model) and not r.get("warning")]
            print(f"recorded {len(mine)} result(s) in {record_results(args.model, mine)}")
        return 0 if run.results else 1
    labels = parse_labels(args.labels) if args.labels else None
    prompts = None
    if args.prompt:
        bad = [p for p in args.prompt if "=" not in p]
        if bad:
            raise BadInputError("--prompt", f"{bad[0]!r} must look like LABEL=TEXT")
        prompts = dict(p.split("=", 1) for p in args.prompt)
    ev = evaluate_table(model, _table(args), labels=labels, prompts=prompts, templates=args.templates,
                        cache_dir=args.cache_dir, skip_bad=args.skip_bad,
                        allow_trained_corpus=args.allow_trained_corpus, out_dir=args.out, model_name=str(args.model),
                        progress=not args.quiet)
    if ev.metrics.get("warning"):
        print(ev.metrics["warning"])
    print(metrics_markdown(ev.metrics))
    if args.out:
        print(f"wrote {Path(args.out) / 'report.md'}")
    return 0


def cmd_classify(args) -> int:
    from .errors import BadInputError
    from .prompts import parse_labels

    from .onnx_runtime import OnnxModel, is_export
    from .classification import classify_files

    labels = parse_labels(args.labels)
    if args.backend == "onnx":  # insists on an export folder (the reasons it is not one come from load)
        model = OnnxModel.load(args.model)
    elif args.backend == "torch" and is_export(args.model):
        raise BadInputError(args.model, "is an ONNX export, which runs with onnxruntime, not PyTorch: drop "
                            "--backend torch (or give --backend onnx), or give the model folder it was exported from")
    else:  # a model folder, an export folder (no torch imported), a Hub id, hf-clap:...
        model = _model(args.model)
    files, groups = list(args.files), None
    if args.manifest or args.dataset:
        table = _table(args).rows
        col = args.group_column or getattr(model.config, "feature_norm_group", None)
        files += table["file"].astype(str).tolist()
        if col and col in table.columns:
            groups = table[col].astype(str).tolist()
            if args.files:
                raise BadInputError("--manifest", "give files either on the command line or in the manifest")
    if args.groups:
        groups = [g.strip() for g in args.groups.split(",")]
    if not files:
        raise BadInputError("classify", "no audio files given")
    res = classify_files(model, files, labels, groups=groups, templates=args.templates,
                         skip_bad=args.skip_bad, progress=not args.quiet)
    for f, ranked in res.ranked(args.top):
        print(f"{f}:")
        for lab, p in ranked:
            print(f"  {lab:<24s} {p:.3f}")
    if res.skipped.count:
        print(f"skipped {res.skipped.count} file(s): " + "; ".join(f"{p} ({r})" for p, r in res.skipped.items))
    return 0


def cmd_adapt(args) -> int:
    from .adapt import adapt_model

    files = list(args.files) + (_table(args).rows["file"].astype(str).tolist() if args.manifest or args.dataset else [])
    adapted, skipped = adapt_model(args.model, files, statistics=args.statistics, reference=args.reference, out=args.out,
                                   cache_dir=args.cache_dir, skip_bad=args.skip_bad, progress=not args.quiet)
    a = adapted.config.adapted
    print(f"wrote {args.out}: clips scored alone now use the statistics ({a['statistics']}) of {a['clips']} "
          f"{'neutral ' if a.get('reference') == 'neutral' else ''}reference clip(s)")
    if skipped.count:
        print(f"skipped {skipped.count} file(s): " + "; ".join(f"{p} ({r})" for p, r in skipped.items))
    return 0


def cmd_export(args) -> int:
    from .export import export_onnx

    out = export_onnx(args.model, args.out, opset=args.opset, verify=not args.no_verify)
    print(f"wrote {out} (classify with: smoothclap classify --backend onnx --model {out} ...)")
    return 0


def cmd_serve(args) -> int:
    from .serve import launch

    served = launch(args.model, host=args.host, port=args.port, open_browser=args.open_browser,
                    cache_dir=args.cache_dir, quiet=args.quiet, block=False)
    print(f"serving {', '.join(served.models)} at {served.url} (Ctrl+C to stop)", flush=True)
    served.wait()  # until Ctrl+C, then closes the server
    return 0


def cmd_demo(args) -> int:
    from .experiments.demo import run_demo
    from .experiments.settings import DemoConfig

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


def _ints(text: str) -> tuple[int, ...]:
    """``"0,1"`` -> ``(0, 1)`` (seed lists of the benchmark options)."""
    return tuple(int(x) for x in text.split(",") if x.strip())


def _loco_config(args, **extra):
    """LocoConfig from the ``benchmark`` subcommand's shared arguments."""
    from .experiments.settings import LocoConfig

    return LocoConfig(data_root=args.data_root, corpora=tuple(c.strip() for c in args.corpora.split(",")),
                      heldout=tuple(c.strip() for c in args.heldout.split(",")) if args.heldout else None,
                      seeds=_ints(args.seeds), config=args.config, epochs=args.epochs,
                      batch_size=args.batch_size, embed_dim=args.embed_dim, audio_tower=args.audio_tower,
                      text_tower=args.text_tower, smoothclap_preset=args.preset, overrides=tuple(args.set or ()),
                      skew_emotions=args.skew_emotions, adapt_clips=args.adapt_clips, templates=args.templates,
                      cache_dir=args.cache_dir, out_dir=args.out, num_workers=args.num_workers,
                      progress=not args.quiet, baselines=tuple(args.baseline or ()),
                      prompt_languages=tuple(x.strip() for x in args.prompt_languages.split(",")),
                      labelled_fraction=args.labelled_fraction, label_noise=args.label_noise,
                      regime_seed=args.regime_seed, **extra)


def cmd_benchmark(args) -> int:
    t = time.perf_counter()
    if args.which == "ablation":
        from .experiments.ablation import run_ablation
        from .experiments.settings import AblationConfig

        seeds = {} if args.validation_seeds is None else {"val_seeds": _ints(args.validation_seeds)}
        res = run_ablation(AblationConfig(loco=_loco_config(args, probe=False), **seeds))
        print(res["tables_md"])
        print(f"total {time.perf_counter() - t:.0f} s; report: {Path(args.out) / 'ablation.md'}")
        return 0
    from .experiments.loco import run_loco, select_candidates

    seeds = {} if args.validation_seeds is None else {"validation_seeds": _ints(args.validation_seeds)}
    lc = _loco_config(args, probe=not args.no_probe, validate=args.validate,
                      validation_scheme=args.validation_scheme, **seeds)
    from .experiments.settings import GRIDS

    lc.grid = GRIDS[args.grid]
    if args.candidates:
        lc.grid = select_candidates([c.strip() for c in args.candidates.split(";") if c.strip()], lc.grid)
    res = run_loco(lc)
    print()
    print("Zero-shot UAR, leave one corpus out (mean ± sd over seeds " + ",".join(map(str, lc.seeds)) + "):")
    print(res["table_md"])
    for h, e in res["heldout"].items():
        if "validation" in e:
            print(f"  {h}: validation (training corpora only) chose {e['validation']['best']!r}")
    print(f"total {time.perf_counter() - t:.0f} s; report: {Path(args.out) / 'report.md'}")
    return 0


# -- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .cache import DEFAULT_CACHE_DIR
    from .config import LOSS_PRESETS, TowersConfig
    from .experiments.settings import DemoConfig, LocoConfig

    towers, demo, loco = TowersConfig(), DemoConfig(), LocoConfig()
    p = _Parser(prog="smoothclap", description=__doc__.split("\n")[0])
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars (ours and third-party)")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="cmd", required=True)

    def data_args(sp):
        sp.add_argument("--manifest", help="CSV/TSV/JSONL manifest (file/path, label, ...)")
        _dataset_args(sp)
        sp.add_argument("--corpus", help="corpus name (see smoothclap.corpora.available())")
        sp.add_argument("--data-root", help="corpus root in its official layout")
        sp.add_argument("--split", help="only rows of this split")
        sp.add_argument("--skip-bad", action="store_true", help="skip (and count) bad files instead of failing")

    cache_help = f"embedding cache (default {DEFAULT_CACHE_DIR})"
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
    s.add_argument("--tower", default=towers.audio)
    s.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help=cache_help)
    s.add_argument("--batch-size", type=_int_at_least(1), default=towers.batch_size)
    s.add_argument("--output", help="also write the embeddings as .npy (+ <output>.files.csv)")
    s.add_argument("--device", default=towers.device, help="auto | cpu | cuda[:N] (under torchrun: each process's GPU)")
    s.set_defaults(fn=cmd_embed)

    s = sub.add_parser("train", help="train heads (+ scale) on cached embeddings, or end to end (train.mode=e2e); "
                       "under torchrun: distributed")
    s.add_argument("--config", help="YAML config: a path, or a shipped one by name (demo, paper)")
    s.add_argument("--manifest", help="training manifest (sets data.manifest)")
    _dataset_args(s, " (sets data.dataset; --dataset-format, --dataset-split, --column: data.dataset_format, ...)")
    s.add_argument("--corpus", help="training corpus (sets data.corpus; with --data-root)")
    s.add_argument("--data-root", help="its folder (sets data.root)")
    s.add_argument("--preset", choices=sorted(LOSS_PRESETS))
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. train.epochs=5")
    s.add_argument("--out", help="run folder (sets out_dir); the same settings resume, others are refused")
    s.add_argument("--new-folder", action="store_true", help="if --out holds a run of other settings, train into "
                   "<out>-2 (-3, ...) instead of stopping")
    s.add_argument("--device", help="auto | cpu | cuda[:N] (under torchrun: each process's GPU)")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("evaluate", help="zero-shot evaluation of a saved model on labelled clips or named tasks")
    s.add_argument("--model", required=True, help="model folder, Hub id, or hf-clap:<id or folder>")
    data_args(s)
    s.add_argument("--task", help="task name(s), comma-separated, or 'all' (the paper's tasks + emodb, savee; "
                   "corpora found as <data-root>/<name>, see smoothclap.tasks); replaces --manifest/--corpus")
    s.add_argument("--labels", help="comma-separated class labels (default: the table's)")
    s.add_argument("--prompt", action="append", metavar="LABEL=TEXT", help="prompt word(s) for a label")
    s.add_argument("--templates", default=None, help="template set (bare, feeling, ensemble) or one template "
                   "(default: the model's recipe, else bare; with --task: else the task's own template)")
    s.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help=cache_help)
    s.add_argument("--out", help="write metrics.json, predictions.csv, confusion.png, report.md here "
                   "(--task: report.md, results.json, confusion_<task>.png, predictions_<task>.csv)")
    s.add_argument("--allow-trained-corpus", action="store_true")
    s.add_argument("--prompt-language", default=None, help="with --task: language of the label prompts: en "
                   "(the paper's protocol), de, it, tr, ... or 'task' (the speech's own language where the task has "
                   "prompts in it); default: the model's recipe, else en. Pair non-English prompts with a "
                   "multilingual text tower (e5-small)")
    s.add_argument("--record", action="store_true", help="with --task: record the results in the model folder "
                   "(results.json and its model card README.md)")
    s.add_argument("--baseline", action="append", metavar="MODEL", help="with --task: also score this model "
                   "(e.g. hf-clap:laion/clap-htsat-unfused) on the same tasks, extra rows of the report; repeatable")
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("classify", help="rank free-text labels for audio files")
    s.add_argument("--model", required=True, help="model folder, ONNX export folder (smoothclap export; runs "
                   "without PyTorch), Hub id, or hf-clap:<id or folder>")
    s.add_argument("--labels", required=True, help="comma-separated, e.g. 'angry,happy,sad,neutral'")
    s.add_argument("--templates", help="template set (bare, feeling, ensemble) or one template with {label} "
                   "(default: the model's recipe, else bare label words)")
    s.add_argument("--top", type=_int_at_least(1), default=5)
    s.add_argument("--skip-bad", action="store_true")
    s.add_argument("--groups", help="comma-separated speaker (or corpus) of each file, for the model's feature "
                   "normalisation (default: the model's training statistics)")
    s.add_argument("--manifest", help="files (and their speaker / corpus column) from a manifest")
    _dataset_args(s, ", its clips (and their speaker / corpus column) instead of files")
    s.add_argument("--group-column", help="manifest column holding the groups (default: the model's "
                   "feature_norm_group)")
    s.add_argument("--backend", choices=["torch", "onnx"], default=None,
                   help="default: from --model (an ONNX export folder runs with onnxruntime, without PyTorch); "
                   "onnx: --model must be an export; torch: --model must not be one")
    s.add_argument("files", nargs="*")
    s.set_defaults(fn=cmd_classify, split=None, corpus=None, data_root=None)

    s = sub.add_parser("adapt", help="adapt a model to a recording setting from unlabelled clips of it: clips "
                       "classified alone are then normalised as members of that setting")
    s.add_argument("--model", required=True, help="saved model folder, ONNX export folder or Hub id (with "
                   "model.feature_norm_group); the adapted model is of the same kind")
    s.add_argument("--out", required=True, help="folder to write the adapted model (or export) to")
    s.add_argument("--statistics", choices=["mean+std", "mean"], default="mean+std",
                   help="the reference clips' mean and std (default; the whole-corpus rule), or only their mean "
                   "(the stored scale kept)")
    s.add_argument("--reference", choices=["any", "neutral"], default="any",
                   help="what the clips are: the setting's usual mix of emotions (default), or unemotional speech "
                   "only (the setting's statistics then estimated from theirs with the model's neutral statistics)")
    s.add_argument("--manifest", help="reference clips from a manifest (labels are not used)")
    _dataset_args(s, ", its clips as the reference clips (labels are not used)")
    s.add_argument("--skip-bad", action="store_true")
    s.add_argument("--cache-dir", help="embedding cache (default ~/.cache/smoothclap)")
    s.add_argument("files", nargs="*", help="unlabelled clips of the setting (at least model.min_group_clips)")
    s.set_defaults(fn=cmd_adapt, split=None, corpus=None, data_root=None)

    s = sub.add_parser("export", help="export a model for inference without PyTorch (ONNX + onnxruntime)")
    s.add_argument("--model", required=True, help="saved model folder")
    s.add_argument("--format", choices=["onnx"], default="onnx")
    s.add_argument("--out", required=True, help="folder to write (an earlier export there is replaced); "
                   "classify, evaluate and serve take it as --model")
    s.add_argument("--opset", type=int, default=18,
                   help="ONNX opset: 18 (PyTorch's default exporter) or 17 (TorchScript exporter)")
    s.add_argument("--no-verify", action="store_true", help="skip checking the graphs against PyTorch")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("serve", help="a local web page (Gradio) to try models: record or upload speech, see ranked labels")
    s.add_argument("--model", action="append", help="model folder or hf-clap:<id or folder>; repeat for several "
                   "(default: smoothclap_demo/models/smoothclap and smoothclap_demo/models/clap, from `smoothclap demo`)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    s.add_argument("--port", type=_int_at_least(1, 65535), default=7860)
    s.add_argument("--open-browser", action="store_true", help="open the page in the default browser")
    s.add_argument("--cache-dir", default=None, help="embedding cache (default: none; uploads are one-off files)")
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("demo", help="offline demo: synth corpus, train CLAP + SmoothCLAP, compare zero-shot")
    s.add_argument("--out", default=demo.out_dir)
    s.add_argument("--epochs", type=int, default=demo.epochs)
    s.add_argument("--seeds", default=",".join(map(str, demo.seeds)))
    s.add_argument("--sentences-per-voice", type=int, default=demo.sentences_per_voice)
    s.add_argument("--preset", default=demo.smoothclap_preset, choices=[k for k in sorted(LOSS_PRESETS) if k != "clap"])
    s.add_argument("--cache-dir", default=None, help="default: <out>/cache")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("benchmark", help="real-data benchmarks: 'loco' = cross-corpus zero-shot, leave one corpus out")
    s.add_argument("which", choices=["loco", "ablation"],
                   help="loco: CLAP vs SmoothCLAP per held-out corpus; ablation: soft-target options chosen on "
                        "validation speakers of the training corpora, then scored once per held-out corpus")
    s.add_argument("--data-root", default=loco.data_root, help="folder with <corpus>/ subfolders")
    s.add_argument("--corpora", default=",".join(loco.corpora),
                   help="corpora left out in turn (emodb,ravdess,tess: the earlier three-corpus table)")
    s.add_argument("--heldout", help="only these held-out corpora (default: each in turn)")
    s.add_argument("--seeds", default=",".join(map(str, loco.seeds)))
    s.add_argument("--config", help="the recipe both methods train with: a shipped config (e.g. recommended) or a "
                   "YAML file (default: the benchmark's fixed settings, smoothclap.experiments.settings.BENCHMARK_BASE)")
    s.add_argument("--epochs", type=int, help="override the recipe's train.epochs")
    s.add_argument("--batch-size", type=int, help="override the recipe's train.batch_size")
    s.add_argument("--embed-dim", type=int, help="override the recipe's model.embed_dim")
    s.add_argument("--audio-tower", help="override the recipe's towers.audio")
    s.add_argument("--text-tower", help="override the recipe's towers.text")
    s.add_argument("--preset", choices=[k for k in sorted(LOSS_PRESETS) if k != "clap"],
                   help="override the recipe's SmoothCLAP loss preset")
    s.add_argument("--skew-emotions", type=int, default=loco.skew_emotions,
                   help="skewed-speaker protocol: emotions each held-out speaker keeps")
    s.add_argument("--adapt-clips", type=_int_at_least(0), default=loco.adapt_clips,
                   help="loco: also report single clips after 'smoothclap adapt' on this many unlabelled clips of the "
                   "held-out corpus, the rest scored alone (not part of the robust UAR; 0: off)")
    s.add_argument("--templates", help="prompt templates (default: the model's recipe, else each task's own)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override for both methods")
    s.add_argument("--validate", action="store_true",
                   help="per held-out corpus, choose among candidate settings on the training corpora only")
    s.add_argument("--validation-scheme", default=loco.validation_scheme, choices=["corpus", "speakers"])
    s.add_argument("--validation-seeds", help="comma-separated training seeds of each validation candidate "
                   f"(default: loco {','.join(map(str, loco.validation_seeds))}; ablation 0,1)")
    s.add_argument("--grid", default="recipe", choices=["recipe", "explore", "targets"],
                   help="what --validate chooses among: recipe = the recommended recipe against its neighbours, "
                        "sized for 90 minutes on 2 cores (smoothclap.experiments.settings.RECIPE_GRID); explore = "
                        "the wider search over features, normalisation, text towers, training length and prompts "
                        "that chose it (EXPLORE_GRID, hours); targets = the soft-target source (TARGET_GRID)")
    s.add_argument("--candidates", help="';'-separated candidate names from the grid (default: all of its stages)")
    s.add_argument("--labelled-fraction", type=float, default=loco.labelled_fraction,
                   help="study: share of each training corpus kept labelled; the rest trains unlabelled")
    s.add_argument("--label-noise", type=float, default=loco.label_noise,
                   help="study: share of training labels replaced by another class (seeded)")
    s.add_argument("--regime-seed", type=int, default=loco.regime_seed, help="seed of the label regime's draws")
    s.add_argument("--no-probe", action="store_true", help="skip the in-corpus linear probe")
    s.add_argument("--prompt-languages", default=",".join(loco.prompt_languages),
                   help="score held-out corpora with label prompts in these languages too (e.g. en,de)")
    s.add_argument("--baseline", action="append", metavar="MODEL", help="also score this model on each held-out "
                   "corpus (e.g. hf-clap:laion/clap-htsat-unfused, or a model folder); repeatable")
    s.add_argument("--cache-dir", default=loco.cache_dir, help=cache_help)
    s.add_argument("--num-workers", type=int, default=loco.num_workers)
    s.add_argument("--out", default=loco.out_dir)
    s.set_defaults(fn=cmd_benchmark)
    return p


def main(argv: list[str] | None = None) -> int:
    _tolerant_streams()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0), or a flag mistake (2; its one line is printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    _setup_logging(args.verbose, args.quiet)
    try:
        _check_out(args)
        return args.fn(args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # noqa: BLE001 - one line for a user's mistake, the traceback for a bug
        from .errors import user_message

        msg = user_message(e)
        if msg is None or args.debug:
            raise
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
