"""Real-data figure: time to extract every tower's embeddings over EmoDB + RAVDESS + TESS.

One cold run of ``prepare`` (the training-bundle builder) into a fresh temporary cache:
whisper-tiny-en over every clip, eGeMAPSv02 functionals (2 worker processes), MiniLM over every
distinct caption (10 epochs of drawn captions) and every description. Reports each stage's time,
the total, and the real-time factor (seconds of audio per second of compute). Takes minutes:
run it on demand, not in a loop.

    .venv/bin/python benchmarks/bench_realdata.py [--quick]
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import _common as C


def main() -> None:
    ap = C.parser(__doc__.splitlines()[0])
    ap.add_argument("--keep-cache", action="store_true")
    args = ap.parse_args()

    from smoothclap.config import RunConfig
    from smoothclap.embed import forward_plan
    from smoothclap.trainer import prepare
    from smoothclap.towers import build_tower

    m = C.machine()
    table = C.real_files(args.data, 240 if args.quick else None, seed=6)
    audio_s = float(table["duration"].sum())
    cfg = RunConfig()  # whisper-tiny-en + minilm-l6, SmoothCLAP loss (needs descriptions), 10 epochs
    cfg.train.num_workers = 2
    cache = Path(tempfile.mkdtemp(prefix="bench_realdata_"))
    counts = table["corpus"].value_counts().to_dict()
    print(f"{len(table)} clips ({counts}), {audio_s / 3600:.2f} h audio; cold cache {cache}; {C.describe_machine(m)}",
          flush=True)
    plan = forward_plan(build_tower(cfg.towers.audio))
    t0 = time.perf_counter()
    prep = prepare(cfg, table, cache_dir=cache, progress=True)
    total = time.perf_counter() - t0
    res = {"benchmark": "realdata", "clips": len(table), "clips_per_corpus": counts, "audio_seconds": audio_s,
           "audio_hours": audio_s / 3600, "towers": [cfg.towers.audio, "egemaps", cfg.towers.text],
           "worker_plan_audio": list(plan), "egemaps_workers": cfg.train.num_workers,
           "stage_seconds": prep.timings, "total_seconds": total, "realtime_factor": audio_s / total,
           "distinct_captions": len(prep.caption_texts), "descriptions": len(prep.desc_texts or []),
           "clips_kept": len(prep.table), "skipped": prep.skipped.count, "machine": m}
    for k, v in prep.timings.items():
        print(f"  {k:<20s} {v:7.1f} s")
    print(f"total {total:.1f} s for {audio_s / 3600:.2f} h of audio: {audio_s / total:.0f}x real time "
          f"({len(prep.caption_texts)} distinct captions, {len(prep.desc_texts or [])} descriptions)")
    if not args.keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    C.write_result("realdata_quick" if args.quick else "realdata", res, args.out)


if __name__ == "__main__":
    main()
