"""Benchmark 2: extraction throughput vs the encoder's raw forward speed.

``embed_audio_files`` (hash + cache lookup, header-length sort, read / decode / resample / validate,
batching, forward, atomic cache writes; cold cache) against the tower's forward pass alone on the
same clips, already in memory, in the same batches, with the same worker threads.
Target: extraction throughput >= 85% of the forward-only throughput.

Also reported: the speed-up over the first implementation (``embed_v0``: sequential, torch's
default intra-op threads), the forward at torch's default threads, and (whisper) the encoder alone
on precomputed log-mels. ``--background-load K`` runs K busy-loop processes meanwhile (a shared
machine).

    .venv/bin/python benchmarks/bench_extract.py [--quick]
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import _common as C


def main() -> None:
    ap = C.parser(__doc__.splitlines()[0], background_load=True)
    ap.add_argument("--n", type=int, default=None, help="clips (default 384; --quick 48)")
    ap.add_argument("--tower", default="whisper-tiny-en")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--trim-every", type=int, default=1, help="towers.trim_every of the extraction (0 = never)")
    args = ap.parse_args()
    n = args.n or (48 if args.quick else 384)
    repeats = args.repeats or (2 if args.quick else 3)

    import numpy as np
    import torch

    from smoothclap.audio import read_audio
    from smoothclap.embed import embed_audio_files, forward_plan
    from smoothclap.towers import build_tower

    m = C.machine()
    tmp = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    table = C.real_files(args.data, n, seed=1)
    files = C.resampled_copies(table["file"].tolist(), tmp / "resampled", every=4)  # 1/4 at 44.1 kHz stereo
    tower = build_tower(args.tower)
    tower.embed([read_audio(files[0])])  # load weights
    batches = C.length_batches(files, args.batch_size)
    waves = [read_audio(f) for f in files]
    wave_batches = [[waves[i] for i in b] for b in batches]
    audio_s = sum(len(w) for w in waves) / 16000
    plan = forward_plan(tower)
    print(f"{len(files)} clips, {audio_s / 60:.1f} min audio, {len(batches)} batches of {args.batch_size}; "
          f"worker plan {plan}; {C.describe_machine(m)}")

    run = {"k": 0}

    def extract():
        run["k"] += 1
        return embed_audio_files(tower, files, cache_dir=tmp / f"cache{run['k']}", batch_size=args.batch_size,
                                 progress=False, trim_every=args.trim_every)

    def v0():
        run["k"] += 1
        return C.embed_v0(tower, files, cache_dir=tmp / f"cache{run['k']}", batch_size=args.batch_size)

    def fwd_default():
        return [tower.embed(b).numpy() for b in wave_batches]

    fns = {"forward": lambda: C.forward_only(tower, wave_batches), "extract": extract, "v0": v0,
           "forward_default_threads": fwd_default}
    mel_batches = None
    if hasattr(tower, "encode_mels") and hasattr(tower, "log_mel"):
        def mk(b):
            mels = [tower.log_mel(w) for w in b]
            lens = [x.shape[1] for x in mels]
            arr = np.zeros((len(mels), mels[0].shape[0], max(lens)), np.float32)
            for j, x in enumerate(mels):
                arr[j, :, : x.shape[1]] = x
            return torch.from_numpy(arr), lens

        if all(len(w) <= 30 * 16000 for w in waves):
            mel_batches = [mk(b) for b in wave_batches]

            class _Enc:  # the encoder alone, through the same worker plan
                spec, cache_key, dim, sample_rate = tower.spec, tower.cache_key, tower.dim, 16000
                thread_safe = True

                def parameters(self):
                    return iter(())

                @torch.no_grad()
                def embed(self, mb):
                    states, mask = tower.encode_mels(mb[0], mb[1], all_layers=False)
                    mk_ = mask.to(states[-1].dtype)
                    return (states[-1] * mk_[..., None]).sum(1) / mk_.sum(1, keepdim=True)

            enc = _Enc()
            fns["encoder_only"] = lambda: C.forward_only(enc, mel_batches)

    with C.background_load(args.background_load):
        best, times = C.interleaved_best(fns, repeats)
    emb, ok = extract()
    from smoothclap.embed import last_run

    plan_run = dict(last_run)
    ref = C.embed_v0(tower, files, cache_dir=None, batch_size=args.batch_size)
    diff = float(np.abs(emb - ref).max())
    ratio = best["forward"] / best["extract"]
    res = {
        "benchmark": "extract", "tower": args.tower, "clips": len(files), "audio_seconds": audio_s,
        "batch_size": args.batch_size, "worker_plan": list(plan), "repeats": repeats,
        "best_seconds": best, "all_seconds": times,
        "throughput_ratio_extract_vs_forward": ratio,
        "speedup_vs_v0": best["v0"] / best["extract"],
        "forward_plan_vs_default_threads": best["forward_default_threads"] / best["forward"],
        "realtime_factor_extract": audio_s / best["extract"],
        "max_abs_diff_vs_v0": diff, "last_run": plan_run, "all_ok": bool(ok.all()),
        "target": ">= 0.85", "met": ratio >= 0.85, "background_load": args.background_load, "machine": m,
    }
    if "encoder_only" in best:
        res["throughput_ratio_extract_vs_encoder_only"] = best["encoder_only"] / best["extract"]
    for k, v in best.items():
        print(f"  {k:<26s} best {v:7.2f} s   ({len(files) / v:6.1f} clips/s)")
    print(f"extraction / forward-only throughput: {ratio:.3f}  (target >= 0.85: {C.verdict(ratio >= 0.85)})")
    if "encoder_only" in best:
        print(f"extraction / encoder-only (log-mels precomputed): {res['throughput_ratio_extract_vs_encoder_only']:.3f}")
    print(f"speed-up over v0: {res['speedup_vs_v0']:.2f}x; max |emb - v0| = {diff:.2e}; last run {plan_run}")
    C.write_result("extract", res, args.out)


if __name__ == "__main__":
    main()
