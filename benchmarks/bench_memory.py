"""Benchmark 5: peak memory of extraction and training at two corpus sizes, 4x apart.

Each measurement runs in a fresh subprocess: load the towers and run them once (weights resident),
reset the peak-RSS counter (``/proc/self/clear_refs``), run the stage, read the peak (``VmHWM``).
Stages: ``extract`` = ``prepare`` into an empty cache (whisper-tiny-en over every clip, eGeMAPS in
2 worker processes, MiniLM over captions and descriptions); ``train`` = ``train`` (10 epochs,
batch 32) on the bundle ``prepare`` then reads back from that cache. Peak growth of the pool's
worker processes is reported too (``RUSAGE_CHILDREN`` max RSS).
Target: the growth from N to 4N clips is no more than what the in-memory results and index
(embedding arrays, feature table, caption strings, cache keys) grow by, plus allocator slack,
both for Python objects and numpy buffers (``tracemalloc``: where decoded audio would show) and
for the resident set; the resident set is measured with the default environment and with
oneDNN's primitive cache and glibc's adaptive mmap threshold off (``TUNED_ENV``), which shows
what of the native growth is those caches;
i.e. no audio is held beyond the clips in flight. For scale the JSON also gives what holding all
the decoded audio would cost. Both sizes are drawn from clips of at most 4 s: the longest batch
sets the activation peak (attention grows with the square of the clip length), and a 4x larger
random sample usually holds a longer clip than the small one.

    .venv/bin/python benchmarks/bench_memory.py [--quick]
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import _common as C

SLACK_MIB = 32.0
#: Native caches that grow with the number of distinct batch shapes, not with data held: oneDNN's
#: primitive cache (one entry per conv input length, up to 1024) and glibc's adaptive mmap threshold
#: (freed activation blocks stay in a fragmenting heap). The "tuned" run switches both off.
TUNED_ENV = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0", "MALLOC_MMAP_THRESHOLD_": "131072"}
MAX_SECONDS = 4.0


def _status() -> dict[str, float]:
    return C.memory_status()


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def child(stage: str, n: int, cache: str, data: str) -> None:

    from smoothclap.audio import read_audio
    from smoothclap.config import RunConfig
    from smoothclap.egemaps import _get_smile
    from smoothclap.trainer import prepare
    from smoothclap.towers import build_tower
    from smoothclap.trainer import train

    # Clips of at most MAX_SECONDS in both sizes: the longest batch sets the activation peak, so
    # both sizes get alike longest batches and the comparison is about the number of clips.
    table = C.real_files(data, n, seed=5, max_seconds=MAX_SECONDS)
    cfg = RunConfig()
    cfg.train.epochs, cfg.train.device = 10, "cpu"
    a, t = build_tower(cfg.towers.audio), build_tower(cfg.towers.text)
    a.embed([read_audio(table["file"][0])])
    t.embed(["warm up the text tower"])
    _get_smile("eGeMAPSv02")
    res: dict = {"stage": stage, "n": n}
    tracemalloc.start()  # Python objects and numpy buffers (decoded audio included); not torch's
    t0 = time.perf_counter()
    if stage == "extract":
        _reset_peak()
        base = _status()["VmRSS"]
        t0 = time.perf_counter()
        prep = prepare(cfg, table, cache_dir=cache, progress=False)
        res["stage_seconds"] = {k: round(v, 3) for k, v in prep.timings.items()}
    else:
        prep = prepare(cfg, table, cache_dir=cache, progress=False)  # warm: reads the cache
        tracemalloc.reset_peak()
        _reset_peak()
        base = _status()["VmRSS"]
        t0 = time.perf_counter()
        train(cfg, prep, run_dir=None, progress=False)
    res["seconds"] = time.perf_counter() - t0
    st = _status()
    py_now, py_peak = tracemalloc.get_traced_memory()
    results = prep.audio.nbytes + prep.caption_emb.nbytes + (prep.desc_emb.nbytes if prep.desc_emb is not None else 0)
    results += (prep.local.nbytes if prep.local is not None and prep.local is not prep.audio else 0)
    results += sum(len(s) + 49 for s in prep.caption_texts) + sum(len(s) + 49 for s in (prep.desc_texts or []))
    results += sum(x.nbytes for x in prep.caption_index)
    results += n * (2 * 89 * 8 + 2 * 41 + 200)  # feature table, bins, keys, paths (estimate)
    res.update(python_peak_mib=py_peak / 2**20, python_end_mib=py_now / 2**20, base_mib=base, peak_mib=st["VmHWM"], growth_mib=st["VmHWM"] - base,
               results_mib=results / 2**20,
               children_peak_mib=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0,
               all_audio_mib=float(table["duration"].sum()) * 16000 * 4 / 2**20)
    print("RESULT " + json.dumps(res))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
        return
    ap = C.parser(__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="smaller size (default 128; --quick 32); larger = 4x")
    args = ap.parse_args()
    n = args.n or (32 if args.quick else 128)
    m = C.machine()
    print(C.describe_machine(m))
    tmp = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    runs: dict = {}
    verdicts: dict = {}
    for variant, extra_env in (("default", {}), ("tuned", TUNED_ENV)):
        env = {**os.environ, **extra_env}
        for size in (n, 4 * n):
            cache = tmp / f"cache_{variant}_{size}"
            for stage in ("extract", "train"):
                p = subprocess.run([sys.executable, __file__, "--child", stage, str(size), str(cache), args.data],
                                   capture_output=True, text=True, env=env)
                line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
                if p.returncode or not line:
                    raise SystemExit(f"child {stage} {size} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
                r = json.loads(line[0][7:])
                runs[f"{variant}_{stage}_{size}"] = r
                print(f"  [{variant}] {stage:<8s} N={size:<5d} peak RSS growth {r['growth_mib']:7.1f} MiB, "
                      f"Python/numpy peak {r['python_peak_mib']:6.1f} MiB "
                      f"(results/index {r['results_mib']:5.1f} MiB; pool workers' peak {r['children_peak_mib']:.0f} MiB; "
                      f"all decoded audio would be {r['all_audio_mib']:.0f} MiB)", flush=True)
        for stage in ("extract", "train"):
            a, b = runs[f"{variant}_{stage}_{n}"], runs[f"{variant}_{stage}_{4 * n}"]
            allowed = b["results_mib"] - a["results_mib"] + SLACK_MIB
            for what, key in (("rss", "growth_mib"), ("python", "python_peak_mib")):
                if what == "python" and variant != "default":
                    continue
                extra = b[key] - a[key]
                verdicts[f"{variant}_{stage}_{what}"] = {"n_mib": a[key], "4n_mib": b[key], "extra_mib": extra,
                                                         "allowed_mib": allowed, "met": extra <= allowed}
                print(f"[{variant}] {stage} {what}: peak growth N -> 4N {a[key]:.1f} -> {b[key]:.1f} MiB "
                      f"(+{extra:.1f}; allowed {allowed:.1f} = results/index growth + {SLACK_MIB:.0f} MiB slack): "
                      f"{C.verdict(extra <= allowed)}")
    # What the tuned environment costs in speed (separate processes, run one after the other).
    slow = {f"{stage}_{size}": runs[f"tuned_{stage}_{size}"]["seconds"] / runs[f"default_{stage}_{size}"]["seconds"]
            for stage in ("extract", "train") for size in (n, 4 * n)}
    a, b = runs[f"default_extract_{4 * n}"], runs[f"tuned_extract_{4 * n}"]
    slow["audio_embeddings_4n"] = b["stage_seconds"]["audio_embeddings"] / a["stage_seconds"]["audio_embeddings"]
    print("time tuned / default: " + ", ".join(f"{k} {v:.2f}x" for k, v in slow.items()))
    res = {"benchmark": "memory", "time_tuned_vs_default": slow, "sizes": [n, 4 * n], "max_clip_seconds": MAX_SECONDS, "tuned_env": TUNED_ENV,
           "runs": runs, "verdicts": verdicts, "slack_mib": SLACK_MIB,
           "met_python": all(v["met"] for k, v in verdicts.items() if k.endswith("_python")),
           "met_rss_default": all(v["met"] for k, v in verdicts.items() if k.startswith("default") and k.endswith("_rss")),
           "met_rss_tuned": all(v["met"] for k, v in verdicts.items() if k.startswith("tuned")), "machine": m}
    C.write_result("memory", res, args.out)


if __name__ == "__main__":
    main()
