"""Benchmark 3: openSMILE (eGeMAPSv02) extraction on every core, and the cache.

``extract_egemaps`` over the same clips with ``num_workers=1`` (in-process) and ``num_workers=2``
(process pool), no cache, interleaved, best of ``--repeats``; then a cold run into an empty cache
and a repeat run that reads it. Targets: 2 workers >= 1.7x the single-worker speed on 2 cores;
the cached repeat >= 20x faster than the cold run.

Other processes on the machine take CPU from the workers, so the JSON also records the CPU time
the workers received (``cpu_seconds``) and the work inflation of the pool (cpu(2) / cpu(1)).

    .venv/bin/python benchmarks/bench_egemaps.py [--quick]
"""
from __future__ import annotations

import resource
import shutil
import tempfile
import time
from pathlib import Path

import _common as C


def _spin(k: int) -> int:
    x = 0
    for i in range(k):
        x += i * i
    return x


def _control(items: int, per_item: int, workers: int) -> None:
    """Pure CPU work of the same shape (one process vs a pool): what parallelism the machine
    gives right now, whatever else runs on it."""
    if workers <= 1:
        for _ in range(items):
            _spin(per_item)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_spin, [per_item] * items, chunksize=max(1, items // (workers * 8))))


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def main() -> None:
    ap = C.parser(__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="clips (default 240; --quick 48)")
    args = ap.parse_args()
    n = args.n or (48 if args.quick else 240)
    repeats = args.repeats or (2 if args.quick else 3)

    from smoothclap.egemaps import _get_smile, extract_egemaps

    m = C.machine()
    table = C.real_files(args.data, n, seed=2)
    files = table["file"].tolist()
    audio_s = float(table["duration"].sum())
    _get_smile("eGeMAPSv02")  # load openSMILE once in the parent (the pool forks from it)
    print(f"{len(files)} clips, {audio_s / 60:.1f} min audio; {C.describe_machine(m)}")

    cpu: dict[str, list[float]] = {"1": [], "2": []}

    def run(workers):
        def f():
            c0 = _cpu()
            df = extract_egemaps(files, num_workers=workers, progress=False)
            cpu[str(workers)].append(_cpu() - c0)
            return df
        return f

    # control work: ~ the single-worker eGeMAPS time, split into as many items as clips
    t = time.perf_counter()
    _spin(200_000)
    per_item = int(200_000 * (0.05 * audio_s / len(files) / 3.0) / max(time.perf_counter() - t, 1e-6))
    fns = {"workers_1": run(1), "workers_2": run(2),
           "control_1": lambda: _control(len(files), per_item, 1), "control_2": lambda: _control(len(files), per_item, 2)}
    best, times = C.interleaved_best(fns, repeats)
    scaling = best["workers_1"] / best["workers_2"]
    control = best["control_1"] / best["control_2"]

    tmp = Path(tempfile.mkdtemp(prefix="bench_egemaps_"))
    cold, warm = [], []
    for r in range(repeats):
        cache = tmp / f"c{r}"
        t = time.perf_counter()
        a = extract_egemaps(files, cache_dir=cache, num_workers=2, progress=False)
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = extract_egemaps(files, cache_dir=cache, num_workers=2, progress=False)
        warm.append(time.perf_counter() - t)
        assert a.equals(b), "cached features differ from computed ones"
        shutil.rmtree(cache)
    cache_speedup = min(cold) / min(warm)
    cpu1, cpu2 = min(cpu["1"]), min(cpu["2"])
    res = {
        "benchmark": "egemaps", "clips": len(files), "audio_seconds": audio_s, "repeats": repeats,
        "best_seconds": best, "all_seconds": times,
        "speedup_2_workers": scaling, "target_speedup": ">= 1.7", "met_speedup": scaling >= 1.7,
        "control_speedup_2_processes": control, "speedup_relative_to_control": scaling / control,
        "cpu_seconds": cpu, "work_inflation_2_vs_1": cpu2 / cpu1,
        "cores_obtained_2_workers": cpu2 / best["workers_2"],
        "realtime_factor_1_worker": audio_s / best["workers_1"],
        "realtime_factor_2_workers": audio_s / best["workers_2"],
        "cold_seconds": cold, "warm_seconds": warm, "cache_speedup": cache_speedup,
        "target_cache": ">= 20", "met_cache": cache_speedup >= 20, "machine": m,
    }
    print(f"  1 worker  best {best['workers_1']:6.2f} s ({audio_s / best['workers_1']:5.1f}x real time)")
    print(f"  2 workers best {best['workers_2']:6.2f} s ({audio_s / best['workers_2']:5.1f}x real time)")
    print(f"2-worker speed-up: {scaling:.2f}x (target >= 1.7: {C.verdict(scaling >= 1.7)}); "
          f"CPU received by 2 workers {res['cores_obtained_2_workers']:.2f} cores; work inflation {cpu2 / cpu1:.2f}")
    print(f"control (pure CPU work, same pool shape): {control:.2f}x -> eGeMAPS reaches {scaling / control:.0%} "
          f"of the parallelism the machine gave")
    print(f"cache: cold {min(cold):.2f} s, repeat {min(warm):.3f} s -> {cache_speedup:.0f}x "
          f"(target >= 20: {C.verdict(cache_speedup >= 20)})")
    C.write_result("egemaps", res, args.out)


if __name__ == "__main__":
    main()
