"""``smoothclap`` command line: synth, embed, train, evaluate, classify, demo."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

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
    from .embed import embed_audio_files
    from .errors import SkipLog
    from .towers import build_tower

    table = _load_table(args)
    skip = SkipLog(skip=args.skip_bad)
    t = time.perf_counter()
    tower = build_tower(args.tower)
    emb, ok = embed_audio_files(tower, table["file"].astype(str).tolist(), cache_dir=args.cache_dir,
                                batch_size=args.batch_size, skip=skip, progress=not args.quiet)
    dur = table["duration"].sum() if "duration" in table.columns else float("nan")
    sec = time.perf_counter() - t
    print(f"{int(ok.sum())}/{len(ok)} clips embedded with {args.tower} ({emb.shape[1]}-d) in {sec:.1f} s"
          + (f", {dur / sec:.0f}x real time" if dur == dur else "") + f"; skipped {skip.count}")
    if args.output:
        import numpy as np

        np.save(args.output, emb)
        print(f"wrote {args.output}")
    return 0


def cmd_train(args) -> int:
    from .config import load_config
    from .errors import SkipLog
    from .prepare import prepare
    from .train import train

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

    if cfg.data.manifest:
        table = corpora.read_manifest(cfg.data.manifest, label_set=cfg.data.labels, skip_bad=cfg.data.skip_bad)
    elif cfg.data.corpus:
        table = corpora.load(cfg.data.corpus, cfg.data.root, skip_bad=cfg.data.skip_bad)
    else:
        raise SystemExit("no training data: set data.manifest (or --manifest) or data.corpus + data.root")
    if cfg.data.split is not None and "split" in table.columns:
        table = table[table["split"].astype(str) == cfg.data.split]
    if cfg.data.labels is not None:
        unknown = sorted(set(table["label"].astype(str)) - set(cfg.data.labels))
        if unknown:
            raise SystemExit(f"training table has labels {unknown} outside data.labels {cfg.data.labels}")
    skip = SkipLog(skip=cfg.data.skip_bad)
    prepared = prepare(cfg, table, cache_dir=Path(cfg.cache_dir).expanduser(), progress=not args.quiet, skip=skip)
    res = train(cfg, prepared, run_dir=cfg.out_dir, progress=not args.quiet)
    last = res.history[-1] if res.history else {}
    print(f"trained {len(prepared.table)} clips, {cfg.train.epochs} epochs in {res.seconds:.1f} s; "
          f"final loss {last.get('loss', float('nan')):.4f}, scale {last.get('scale', float('nan')):.2f}; "
          f"skipped {skip.count}; model -> {Path(cfg.out_dir) / 'model'}")
    return 0


def cmd_evaluate(args) -> int:
    from .errors import SkipLog
    from .evaluate import zero_shot_evaluate
    from .io import atomic_write_json, atomic_write_text
    from .model import SmoothClapModel
    from .report import markdown_table, plot_confusion

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
    ev = zero_shot_evaluate(model, table, labels, prompts=prompts, templates=args.templates,
                            cache_dir=args.cache_dir, skip=skip, progress=not args.quiet)
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


def cmd_classify(args) -> int:
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
    for f in args.files:
        try:
            wav = read_audio(f)
        except BadInputError as e:
            skip.handle(e)
            continue
        feats = model.tower("audio").embed([wav])
        probs = torch.softmax(clf.logits_from_features(feats), -1)[0]
        order = torch.argsort(probs, descending=True)
        print(f"{f}:")
        for i in order[: args.top]:
            print(f"  {labels[i]:<24s} {float(probs[i]):.3f}")
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
    s.set_defaults(fn=cmd_embed)

    s = sub.add_parser("train", help="train heads (+ scale) on cached frozen-tower embeddings")
    s.add_argument("--config", help="YAML config (see configs/)")
    s.add_argument("--manifest")
    s.add_argument("--preset", choices=["clap", "smoothclap", "paper-main"])
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. train.epochs=5")
    s.add_argument("--out")
    s.add_argument("--device", help="auto | cpu | cuda[:N]")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("evaluate", help="zero-shot evaluation of a saved model on labelled clips")
    s.add_argument("--model", required=True)
    data_args(s)
    s.add_argument("--split", help="only rows of this split")
    s.add_argument("--labels", help="comma-separated class labels (default: the table's)")
    s.add_argument("--prompt", action="append", metavar="LABEL=TEXT", help="prompt word(s) for a label")
    s.add_argument("--templates", default="bare", help="template set (bare, feeling, ensemble) or one template")
    s.add_argument("--cache-dir", default="~/.cache/smoothclap")
    s.add_argument("--out", help="write metrics.json, predictions.csv, confusion.png, report.md here")
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
    s.add_argument("--preset", default="smoothclap", choices=["smoothclap", "paper-main"])
    s.add_argument("--cache-dir", default=None, help="default: <out>/cache")
    s.set_defaults(fn=cmd_demo)
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
