"""Benchmark: zero-shot classification of a folder of clips, ONNX runtime vs PyTorch, on the CPU.

Both sides run their ``classify_files`` end to end, no cache: list the folder, embed the label
prompts (7 labels x 5 templates), read and resample every clip, batch by length, audio tower,
feature normalisation, heads, cosine, softmax. PyTorch: :func:`smoothclap.classification.classify_files`
on the saved model (whisper-tiny-en forward in worker threads). ONNX: the model exported with
:func:`smoothclap.export.export_onnx` and run by the same :func:`smoothclap.classification.classify_files`
on an :class:`~smoothclap.onnx_runtime.OnnxModel` (log-mels inside the graph, onnxruntime, worker
threads). Same process, interleaved, best of N. Also timed:
ONNX with one worker over all threads (intra-op only), the export, and the cold start of each
backend in a fresh process (imports + model load, until the model can classify).

The model is demo-like (whisper-tiny-en + minilm-l6, 768-d heads, per-speaker feature
normalisation off), trained for 2 epochs on a small synthetic corpus (espeak-ng) unless
``--model DIR`` names a saved model; the weights do not change the speed.

    .venv/bin/python benchmarks/bench_onnx.py [--quick] [--model DIR] [--folder DIR]
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

LABELS = ["neutral", "happy", "sad", "angry", "fearful", "disgust", "bored"]


def _train_demo_model(out: Path) -> Path:
    """A demo-like model trained for 2 epochs on 48 synthetic clips (falls back to untrained heads
    without espeak-ng / sox)."""
    import shutil

    from smoothclap.model import SmoothClapConfig, SmoothClapModel

    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        print("espeak-ng / sox not found: untrained heads (the speed is the same)")
        import torch

        torch.manual_seed(0)
        return SmoothClapModel(SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6",
                                                audio_dim=384, text_dim=384)).save_pretrained(out / "model")
    from smoothclap.config import RunConfig, loss_preset
    from smoothclap.corpora import read_manifest
    from smoothclap.experiments.synth import synthesize_corpus
    from smoothclap.trainer import prepare, train

    synthesize_corpus(out / "corpus", languages=("en",), voices_per_language=4, sentences_per_voice=2, seed=3,
                      progress=False)
    table = read_manifest(out / "corpus" / "manifest.csv")
    table["corpus"] = "synthetic"
    cfg = RunConfig()
    cfg.train.epochs, cfg.train.batch_size = 2, 16
    cfg.captions.variables = []
    cfg.loss = loss_preset("clap")
    cfg.cache_dir = str(out / "cache")
    prep = prepare(cfg, table, cache_dir=out / "cache", progress=False)
    res = train(cfg, prep, run_dir=out / "run", progress=False)
    return res.run_dir / "model"


def _cold_start(code: str, repeats: int) -> float:
    """Best wall time of ``python -c code`` in a fresh process (imports + load)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=C.REPO, capture_output=True)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = C.parser(__doc__.splitlines()[0], background_load=True)
    ap.add_argument("--model", help="saved model folder (default: train a demo-like model)")
    ap.add_argument("--export", help="existing ONNX export of --model (default: export into a temporary folder)")
    ap.add_argument("--folder", help="folder of clips (default: <data>/emodb/wav, 535 clips)")
    ap.add_argument("--n", type=int, default=None, help="clips (default: all; --quick 48, a seeded sample)")
    ap.add_argument("--opset", type=int, default=18)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-start timings")
    args = ap.parse_args()
    repeats = args.repeats or (2 if args.quick else 3)

    import numpy as np

    from smoothclap.audio import read_audio
    from smoothclap.export import export_onnx
    from smoothclap.model import SmoothClapModel
    from smoothclap.onnx_runtime import OnnxModel
    from smoothclap.classification import classify_files

    m = C.machine()
    src = Path(args.folder) if args.folder else Path(args.data) / "emodb" / "wav"
    if not src.is_dir():
        raise SystemExit(f"{src}: no such folder (pass --folder or --data)")
    all_files = sorted(str(p) for p in src.iterdir() if p.suffix.lower() in (".wav", ".flac", ".ogg"))
    n = args.n or (48 if args.quick else None)
    chosen = sorted(random.Random(5).sample(all_files, n)) if n and n < len(all_files) else all_files
    folder = Path(tempfile.mkdtemp(prefix="bench_onnx_"))
    for k, f in enumerate(chosen):
        (folder / f"{k:05d}_{Path(f).name}").symlink_to(f)
    work = Path(tempfile.mkdtemp(prefix="bench_onnx_model_"))

    t = time.perf_counter()
    model_dir = Path(args.model) if args.model else _train_demo_model(work)
    t_train = time.perf_counter() - t
    t = time.perf_counter()
    export_dir = Path(args.export) if args.export else export_onnx(model_dir, work / "onnx", opset=args.opset)
    t_export = time.perf_counter() - t
    meta = json.loads((export_dir / "preprocess.json").read_text())

    model = SmoothClapModel.from_pretrained(model_dir)
    om = OnnxModel.load(export_dir)
    om1 = OnnxModel.load(export_dir, workers=1)
    files = sorted(str(p) for p in folder.iterdir())
    audio_s = sum(len(read_audio(f)) for f in files) / 16000
    # warm up: towers load lazily, onnxruntime allocates on first runs
    classify_files(model, files[:2], LABELS, templates="ensemble")
    classify_files(om, files[:2], LABELS, templates="ensemble")
    classify_files(om1, files[:2], LABELS, templates="ensemble")
    print(f"{len(files)} clips from {src} ({audio_s / 60:.1f} min audio); model {model_dir}; export {export_dir} "
          f"(opset {meta['opset']}, {meta['exporter']}); onnx plan {om.workers} worker(s) x "
          f"{om.threads // om.workers} thread(s); {C.describe_machine(m)}")

    def run_torch():
        return classify_files(model, sorted(str(p) for p in folder.iterdir()), LABELS, templates="ensemble")

    def run_onnx():
        return classify_files(om, sorted(str(p) for p in folder.iterdir()), LABELS, templates="ensemble")

    def run_onnx1():
        return classify_files(om1, sorted(str(p) for p in folder.iterdir()), LABELS, templates="ensemble")

    fns = {"pytorch": run_torch, "onnx": run_onnx, "onnx_1_worker": run_onnx1}
    with C.background_load(args.background_load):
        best, times = C.interleaved_best(fns, repeats)
    cols = [f"p_{lab}" for lab in LABELS]
    ref, got = run_torch().table, run_onnx().table
    diff = float(np.abs(ref[cols].to_numpy(dtype=float) - got[cols].to_numpy(dtype=float)).max())
    same_pred = float((ref["pred"] == got["pred"]).mean())

    cold = {}
    if not args.no_cold:
        py_src = str(C.REPO / "src")
        pre = f"import sys; sys.path.insert(0, {py_src!r}); "
        cold["pytorch"] = _cold_start(
            pre + "from smoothclap.model import SmoothClapModel; "
            f"m = SmoothClapModel.from_pretrained({str(model_dir)!r}); m.tower('audio')._ensure_loaded(); "
            "m.tower('text')", repeats)
        cold["onnx"] = _cold_start(
            pre + f"from smoothclap.onnx_runtime import OnnxModel; OnnxModel.load({str(export_dir)!r})", repeats)

    ratio = best["pytorch"] / best["onnx"]
    res = {"benchmark": "onnx", "clips": len(files), "source": str(src), "audio_seconds": audio_s, "labels": LABELS,
           "templates": 5, "repeats": repeats, "model": str(model_dir), "opset": meta["opset"],
           "exporter": meta["exporter"], "onnx_plan": {"workers": om.workers, "threads": om.threads},
           "best_seconds": best, "all_seconds": times,
           "clips_per_second": {k: len(files) / v for k, v in best.items()},
           "throughput_ratio_onnx_vs_pytorch": ratio,
           "throughput_ratio_onnx_1_worker_vs_pytorch": best["pytorch"] / best["onnx_1_worker"],
           "max_abs_prob_diff": diff, "same_prediction_share": same_pred,
           "train_seconds": t_train if not args.model else None,
           "export_seconds": t_export if not args.export else None,
           "cold_start_seconds": cold, "background_load": args.background_load,
           "versions": {"onnxruntime": __import__("onnxruntime").__version__, "onnx": __import__("onnx").__version__},
           "machine": m}
    for k, v in best.items():
        print(f"  {k:<14s} best {v:7.2f} s ({len(files) / v:6.1f} clips/s, {audio_s / v:5.0f}x real time)")
    print(f"ONNX / PyTorch throughput: {ratio:.3f} (1 worker: {res['throughput_ratio_onnx_1_worker_vs_pytorch']:.3f}); "
          f"max |p_onnx - p_torch| = {diff:.1e}; same prediction for {same_pred:.1%} of clips")
    if cold:
        print(f"cold start (fresh process, imports + load): pytorch {cold['pytorch']:.2f} s, onnx {cold['onnx']:.2f} s")
    if not args.export:
        print(f"export: {t_export:.1f} s")
    C.write_result("onnx", res, args.out)


if __name__ == "__main__":
    main()
