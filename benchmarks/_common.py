"""Shared helpers of the benchmark scripts (not a benchmark itself).

Every benchmark prints its figures and writes them as JSON (default
``benchmarks/results/<name>.json``). Figures are ratios against a baseline timed in the same
process, interleaved and best-of-``repeats``, because absolute times on shared machines drift.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing

DEFAULT_DATA = Path(os.environ.get("SMOOTHCLAP_DATA", REPO.parent / "shared" / "data"))


def parser(description: str, background_load: bool = False) -> argparse.ArgumentParser:
    """The options every benchmark shares (``--background-load`` where the timing honours it)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes, fewer repeats (a smoke run)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder with emodb/ ravdess/ tess/")
    p.add_argument("--out", default=None, help="JSON result path (default benchmarks/results/<name>.json)")
    p.add_argument("--repeats", type=int, default=None, help="repeats per timing (best is kept)")
    if background_load:
        p.add_argument("--background-load", type=int, default=0, metavar="K",
                       help="run K busy-loop processes meanwhile (simulates a shared machine)")
    return p


class background_load:
    """Context manager: ``k`` busy-loop processes (pure Python spin) while the block runs."""

    def __init__(self, k: int):
        self.k, self.procs = int(k), []

    def __enter__(self):
        import subprocess

        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.k)]
        if self.k:
            time.sleep(1.0)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        return False


def memory_status() -> dict[str, float]:
    """This process's resident set now and at its peak, MiB (``VmRSS``, ``VmHWM`` of /proc/self/status)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmHWM", "VmRSS")):
            k, v = line.split(":")
            out[k] = int(v.split()[0]) / 1024.0
    return out


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {"cpu_count": os.cpu_count(), "cpu": cpu, "mem_gib": mem, "gpu": torch.cuda.is_available(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "nice": os.nice(0),
            "loadavg_start": loadavg()}


def describe_machine(m: dict) -> str:
    return (f"{m['cpu_count']} CPU cores ({m['cpu']}), {m['mem_gib']} GiB, "
            f"{'GPU' if m['gpu'] else 'no GPU'}, torch {m['torch']} ({m['torch_threads']} threads), "
            f"load average at start {m['loadavg_start']}" + (f", nice {m['nice']}" if m.get("nice") else ""))


def timeit(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def interleaved_best(fns: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Run every fn once per round, ``repeats`` rounds; best (min) time per fn and all times."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            dt, _ = timeit(fn)
            times[k].append(dt)
    return {k: min(v) for k, v in times.items()}, times


def write_result(name: str, result: dict, out: str | None) -> Path:
    result.setdefault("machine", {})["loadavg_end"] = loadavg()
    path = Path(out) if out else REPO / "benchmarks" / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=float))
    print(f"wrote {path}")
    return path


def real_files(data: str | Path, n: int | None = None, seed: int = 0,
               corpora: Sequence[str] = ("emodb", "ravdess", "tess"), max_seconds: float | None = None):
    """Table of real clips (file, label, corpus, duration...). ``n``: a seeded sample, equal parts
    per corpus as far as they go; ``max_seconds``: only clips at most that long.
    Raises SystemExit with a hint when the data is absent."""
    import pandas as pd

    from smoothclap import corpora as C

    data = Path(data)
    if not all((data / c).exists() for c in corpora):
        raise SystemExit(f"real corpora not found under {data} (need {', '.join(corpora)}); pass --data")
    tables = [C.load(c, data / c) for c in corpora]
    for c, t in zip(corpora, tables):
        t["corpus"] = c
    if max_seconds is not None:
        tables = [t[t["duration"] <= max_seconds].reset_index(drop=True) for t in tables]
    if n is None:
        return pd.concat(tables, ignore_index=True)
    rng = random.Random(seed)
    per = -(-n // len(tables))
    parts = []
    for t in tables:
        rows = list(range(len(t)))
        rng.shuffle(rows)
        parts.append(t.iloc[sorted(rows[:per])])
    df = pd.concat(parts, ignore_index=True)
    return df.iloc[sorted(rng.sample(range(len(df)), min(n, len(df))))].reset_index(drop=True)


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def embed_v0(tower, files, *, cache_dir=None, batch_size: int = 16, chunk_size: int = 256):
    """The first implementation of ``embed_audio_files`` (before the performance work), kept as the
    "before" reference: sequential read -> per-chunk length sort -> tower.embed in the calling
    thread (torch's default intra-op threads) -> cache writes. Raises on bad files."""
    import numpy as np

    from smoothclap.audio import file_hash, read_audio
    from smoothclap.cache import EmbeddingCache, audio_key
    from smoothclap.embed import preprocessing_key

    cache = EmbeddingCache(cache_dir, tower.cache_key)
    pre = preprocessing_key(tower.sample_rate)
    out = np.full((len(files), tower.dim), np.nan, dtype=np.float32)
    keys = [audio_key(file_hash(f), pre) for f in files]
    todo = []
    for i in range(len(files)):
        v = cache.get(keys[i])
        if v is not None:
            out[i] = v
        else:
            todo.append(i)
    for c0 in range(0, len(todo), chunk_size):
        chunk = todo[c0 : c0 + chunk_size]
        waves = {i: read_audio(files[i], sample_rate=tower.sample_rate) for i in chunk}
        order = sorted(waves, key=lambda i: len(waves[i]))
        for b0 in range(0, len(order), batch_size):
            idx = order[b0 : b0 + batch_size]
            emb = tower.embed([waves[i] for i in idx]).numpy()
            for i, v in zip(idx, emb):
                out[i] = v
                cache.put(keys[i], v)
    return out


def length_batches(files, batch_size: int):
    """The batches ``embed_audio_files`` forms for a cold run: indices sorted by header duration."""
    from smoothclap.audio import header_seconds

    order = sorted(range(len(files)), key=lambda i: header_seconds(str(files[i])))
    return [order[b : b + batch_size] for b in range(0, len(order), batch_size)]


def forward_only(tower, batches_of_waves, workers: int | None = None) -> list:
    """The tower's forward pass alone on in-memory batches, with the same forward plan as
    ``embed_audio_files`` (W worker threads x torch threads // W each), no reading, no cache."""
    from smoothclap.embed import _Pipeline, forward_plan

    plan = forward_plan(tower, workers)

    def produce(emit_batch, emit_msg, stopped):
        for k, b in enumerate(batches_of_waves):
            if stopped() or not emit_batch(k, b):
                return

    out = [None] * len(batches_of_waves)
    pipe = _Pipeline(produce, lambda b: tower.embed(b).numpy(), plan, plan.workers).run()
    try:
        for _, k, emb in pipe:
            out[k] = emb
    finally:
        pipe.close()
    return out


def resampled_copies(files, out_dir, every: int = 4, rate: int = 44100):
    """Copy every ``every``-th clip as a stereo WAV at ``rate`` into ``out_dir`` (a temporary folder),
    so the benchmark exercises resampling and down-mixing. Returns the new file list."""
    import numpy as np
    import soundfile as sf
    import soxr

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = []
    for k, f in enumerate(files):
        if k % every:
            res.append(str(f))
            continue
        x, sr = sf.read(str(f), dtype="float32")
        y = soxr.resample(x, sr, rate)
        p = out_dir / f"{k:05d}_{Path(f).stem}.wav"
        sf.write(p, np.stack([y, 0.9 * y], axis=1), rate)
        res.append(str(p))
    return res
