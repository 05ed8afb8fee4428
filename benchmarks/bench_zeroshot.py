"""Benchmark 4: zero-shot classification of a folder of clips, end to end, vs the tower's forward.

End to end = list the folder, build the classifier (label prompts: 7 labels x 5 templates, embedded
once per task with MiniLM), ``ZeroShotClassifier.predict_files`` (read, resample, length-sorted
batches, whisper-tiny-en forward in worker threads, heads, cosine, softmax), no cache.
Baseline = the audio tower's forward pass alone on the same clips, in memory, in the same batches
with the same worker threads. Target: end-to-end throughput >= 85% of the forward-only throughput.

Also reported: the per-clip loop (read one file, embed it alone, classify), which is how a naive
script (and ``smoothclap classify`` when this was written) does it.

    .venv/bin/python benchmarks/bench_zeroshot.py [--quick]
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import _common as C

LABELS = ["neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


def main() -> None:
    ap = C.parser(__doc__.splitlines()[0], background_load=True)
    ap.add_argument("--n", type=int, default=None, help="clips (default 192; --quick 48)")
    ap.add_argument("--no-per-clip", action="store_true", help="skip the (slow) per-clip loop")
    args = ap.parse_args()
    n = args.n or (48 if args.quick else 192)
    repeats = args.repeats or (2 if args.quick else 3)

    import numpy as np
    import torch

    from smoothclap.audio import read_audio
    from smoothclap.embed import forward_plan
    from smoothclap.model import SmoothClapConfig, SmoothClapModel
    from smoothclap.zeroshot import ZeroShotClassifier

    m = C.machine()
    table = C.real_files(args.data, n, seed=4)
    folder = Path(tempfile.mkdtemp(prefix="bench_zeroshot_"))
    for k, f in enumerate(table["file"]):
        os.symlink(f, folder / f"{k:05d}_{Path(f).name}")
    torch.manual_seed(0)
    model = SmoothClapModel(SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6",
                                             audio_dim=384, text_dim=384)).eval()  # untrained heads: speed only
    tower = model.tower("audio")
    files = sorted(str(p) for p in folder.iterdir())
    tower.embed([read_audio(files[0])])
    model.tower("text").embed(["warm up"])
    waves = [read_audio(f) for f in files]
    audio_s = sum(len(x) for x in waves) / 16000
    batches = [[waves[i] for i in b] for b in C.length_batches(files, 16)]
    print(f"{len(files)} clips, {audio_s / 60:.1f} min audio; plan {forward_plan(tower)}; {C.describe_machine(m)}")

    def end_to_end():
        fs = sorted(str(p) for p in folder.iterdir())
        clf = ZeroShotClassifier(model, LABELS, templates="ensemble")
        return clf.predict_files(fs, batch_size=16)

    def per_clip():
        clf = ZeroShotClassifier(model, LABELS, templates="ensemble")
        out = []
        for f in sorted(str(p) for p in folder.iterdir()):
            feats = tower.embed([read_audio(f)])
            out.append(clf.predict_features(feats)[1][0])
        return out

    fns = {"forward": lambda: C.forward_only(tower, batches), "end_to_end": end_to_end}
    if not args.no_per_clip:
        fns["per_clip_loop"] = per_clip
    with C.background_load(args.background_load):
        best, times = C.interleaved_best(fns, repeats)
    preds, probs, ok = end_to_end()
    ref = per_clip() if not args.no_per_clip else None
    ratio = best["forward"] / best["end_to_end"]
    res = {"benchmark": "zeroshot", "clips": len(files), "audio_seconds": audio_s, "labels": LABELS,
           "templates": 5, "repeats": repeats, "best_seconds": best, "all_seconds": times,
           "throughput_ratio_end_to_end_vs_forward": ratio, "target": ">= 0.85", "met": ratio >= 0.85,
           "all_ok": bool(ok.all()), "background_load": args.background_load, "machine": m}
    if ref is not None:
        res["speedup_vs_per_clip_loop"] = best["per_clip_loop"] / best["end_to_end"]
        res["max_abs_prob_diff_vs_per_clip"] = float(np.abs(probs - np.stack(ref)).max())
    for k, v in best.items():
        print(f"  {k:<14s} best {v:7.2f} s ({len(files) / v:6.1f} clips/s)")
    print(f"end-to-end / forward-only throughput: {ratio:.3f} (target >= 0.85: {C.verdict(ratio >= 0.85)})")
    if ref is not None:
        print(f"speed-up over the per-clip loop: {res['speedup_vs_per_clip_loop']:.2f}x; "
              f"max |p - p_per_clip| = {res['max_abs_prob_diff_vs_per_clip']:.1e}")
    C.write_result("zeroshot", res, args.out)


if __name__ == "__main__":
    main()
