"""Benchmark: the sharded embedding cache vs the old one-``.npy``-per-entry cache.

Writes N entries (default 20,000 x 384 float32, sha1 keys) through the old per-file layout
(``<dir>/<key[:2]>/<key>.npy``, written with the atomic writer, read with ``np.load``: the code of
the cache before the shards) and through :class:`smoothclap.cache.ArrayCache`, in the same
process, interleaved, best of ``--repeats`` rounds. Timed:

* write: N ``put`` calls (the cold run's path), and for the shards also one ``put_many``;
* read: N ``get`` calls one at a time, in a shuffled order, by a fresh cache object (a warm run's
  path: the shards' time includes loading the index), and for the shards ``get_many`` and
  ``locate(...).rows`` of random batches of 256 (training);
* files and bytes on disk (apparent size and allocated blocks).

Ratios > 1 mean the shards are faster. The page cache is warm for both (files just written).

    .venv/bin/python benchmarks/bench_cache.py [--n 20000] [--dim 384] [--quick]
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import _common as C


def _tree(path: Path) -> dict:
    files = nbytes = disk = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            s = os.stat(os.path.join(dirpath, n))
            files += 1
            nbytes += s.st_size
            disk += s.st_blocks * 512
    return {"files": files, "bytes": nbytes, "disk_bytes": disk}


def main() -> None:
    ap = C.parser(__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="entries (default 20000; --quick 4000)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    args = ap.parse_args()
    n = args.n or (4000 if args.quick else 20000)
    repeats = args.repeats or (2 if args.quick else 3)

    import numpy as np

    from smoothclap.cache import ArrayCache
    from smoothclap.io import atomic_save

    def old_path(d: Path, k: str) -> Path:
        return d / k[:2] / f"{k}.npy"

    def old_put(d: Path, k: str, v) -> None:  # the per-file cache's put (before the shards)
        def save(t):
            with open(t, "wb") as f:
                np.save(f, v, allow_pickle=False)
        atomic_save(old_path(d, k), save)

    def old_get(d: Path, k: str):
        try:
            a = np.load(old_path(d, k), allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError, EOFError):
            return None
        return a if a.ndim == 1 else None

    rng = np.random.default_rng(0)
    keys = [hashlib.sha1(f"clip {i}".encode()).hexdigest() for i in range(n)]
    data = rng.standard_normal((n, args.dim)).astype(np.float32)
    order = rng.permutation(n).tolist()
    batches = [rng.integers(0, n, 256) for _ in range(max(1, n // 256))]
    base = Path(tempfile.mkdtemp(prefix="bench_cache.", dir=args.dir))
    m = C.machine()
    print(C.describe_machine(m))
    print(f"{n} entries x {args.dim} float32 under {base}")

    times: dict[str, list[float]] = {k: [] for k in (
        "old_write", "new_write", "new_write_many", "old_read", "new_read", "new_get_many", "new_rows")}
    sizes = {}
    try:
        for r in range(repeats):
            od, nd, md = base / f"old{r}", base / f"new{r}", base / f"many{r}"

            t = time.perf_counter()
            for k, v in zip(keys, data):
                old_put(od, k, v)
            times["old_write"].append(time.perf_counter() - t)

            c = ArrayCache(nd)
            t = time.perf_counter()
            for k, v in zip(keys, data):
                c.put(k, v)
            c.flush()
            times["new_write"].append(time.perf_counter() - t)
            c.close()

            c = ArrayCache(md)
            t = time.perf_counter()
            c.put_many(keys, data)
            c.flush()
            times["new_write_many"].append(time.perf_counter() - t)
            c.close()

            t = time.perf_counter()
            got = [old_get(od, keys[i]) for i in order]
            times["old_read"].append(time.perf_counter() - t)
            assert all(g is not None for g in got)

            c = ArrayCache(nd)  # fresh: loads the index
            t = time.perf_counter()
            got = [c.get(keys[i]) for i in order]
            times["new_read"].append(time.perf_counter() - t)
            assert all(np.array_equal(got[j], data[i]) for j, i in enumerate(order[:100]))

            t = time.perf_counter()
            arr, found = c.get_many([keys[i] for i in order])
            times["new_get_many"].append(time.perf_counter() - t)
            assert found.all()

            loc = c.locate(keys)
            t = time.perf_counter()
            for b in batches:
                loc.rows(b)
            times["new_rows"].append(time.perf_counter() - t)
            np.testing.assert_array_equal(loc.rows(batches[0]), data[batches[0]])
            c.close()
            if r == 0:
                sizes = {"old": _tree(od), "new": _tree(nd)}
            for d in (od, nd, md):
                shutil.rmtree(d)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    best = {k: min(v) for k, v in times.items()}
    rows_read = sum(len(b) for b in batches)
    result = {
        "n": n, "dim": args.dim, "repeats": repeats, "machine": m, "sizes": sizes, "times_s": times,
        "best_s": best,
        "throughput_per_s": {
            "old_write": n / best["old_write"], "new_write": n / best["new_write"],
            "new_write_many": n / best["new_write_many"], "old_read": n / best["old_read"],
            "new_read": n / best["new_read"], "new_get_many": n / best["new_get_many"],
            "new_rows": rows_read / best["new_rows"]},
        "ratios": {"write (put)": best["old_write"] / best["new_write"],
                   "write (put_many)": best["old_write"] / best["new_write_many"],
                   "read (get)": best["old_read"] / best["new_read"],
                   "read (get_many)": best["old_read"] / best["new_get_many"],
                   "files": sizes["old"]["files"] / max(1, sizes["new"]["files"]),
                   "disk bytes": sizes["old"]["disk_bytes"] / max(1, sizes["new"]["disk_bytes"])},
    }
    print(f"{'':24} {'files':>7} {'bytes (apparent)':>17} {'bytes (on disk)':>16}")
    for k in ("old", "new"):
        s = sizes[k]
        print(f"{k + ' layout':24} {s['files']:>7} {s['bytes']:>17,} {s['disk_bytes']:>16,}")
    print(f"{'entries/s':24} {'old':>12} {'sharded':>12} {'ratio':>8}")
    tp, ra = result["throughput_per_s"], result["ratios"]
    for label, old, new, ratio in (
            ("write, put", tp["old_write"], tp["new_write"], ra["write (put)"]),
            ("write, put_many", None, tp["new_write_many"], ra["write (put_many)"]),
            ("read, get (one by one)", tp["old_read"], tp["new_read"], ra["read (get)"]),
            ("read, get_many", None, tp["new_get_many"], ra["read (get_many)"]),
            ("read, locate().rows(256)", None, tp["new_rows"], None)):
        o = f"{old:>12,.0f}" if old is not None else " " * 12
        r = f"{ratio:>7.1f}x" if ratio is not None else ""
        print(f"{label:24} {o} {new:>12,.0f} {r}")
    C.write_result("bench_cache", result, args.out)


if __name__ == "__main__":
    main()
