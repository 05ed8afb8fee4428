"""Trace: resident memory after each stage of cached training's set-up and epoch (issue 21).

Writes the synthetic cache of ``bench_scale.py`` (``--clips`` rows of 384-d audio embeddings and
4,000 captions, written straight into the cache: no audio, no tower), builds the memory-flat
bundle with ``from_cache(..., in_memory=False)``, drops the caller's table, then trains one epoch
and prints the resident set (``VmRSS``) and its peak (``VmHWM``, reset before training) after each
set-up stage of :class:`smoothclap.trainer.loop.Trainer` (model, normalisation statistics, step,
optimizer, loss, batch builder, fingerprint) and around the epoch. What ``bench_scale.py``
reports as one peak, split by stage: where a peak comes from.

    .venv/bin/python benchmarks/trace_train_memory.py --clips 1000000   # ~10 min, 1.7 GB in /tmp
    .venv/bin/python benchmarks/trace_train_memory.py --clips 10000     # the reference size
"""
from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
from pathlib import Path

import bench_scale as B


def line(tag: str) -> None:
    s = B._status()
    print(f"{tag:28s} RSS {s['VmRSS']:8.1f} MiB   peak {s['VmHWM']:8.1f} MiB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=1_000_000)
    ap.add_argument("--workdir", default=None, help="where the cache goes (default: a temporary folder in /tmp)")
    args = ap.parse_args()
    print(B.C.describe_machine(B.C.machine()))
    work = Path(tempfile.mkdtemp(prefix="trace_train_memory.", dir=args.workdir))
    try:
        B.stage_write(args.clips, 4000, str(work), 1, 1)
        gc.collect()
        import smoothclap.trainer.loop as L
        from smoothclap.trainer import from_cache, train
        from smoothclap.trainer.mapped import CacheTower

        line("after writing the cache")
        cfg = B.make_cfg()
        table, hashes = B.make_table(args.clips, 4000), B.hashes_of(args.clips)
        prep = from_cache(cfg, table, cache_dir=str(work), hashes=hashes, in_memory=False, progress=False,
                          towers=(CacheTower(B.AUDIO_KEY), CacheTower(B.TEXT_KEY)))
        line("bundle built")
        del table, hashes
        gc.collect()
        line("caller's table dropped")
        Path("/proc/self/clear_refs").write_text("5")  # the peak from here on

        def traced(owner, name):
            fn = getattr(owner, name)

            def wrapper(*a, **kw):
                out = fn(*a, **kw)
                line(name)
                return out
            setattr(owner, name, wrapper)

        for name in ("build_model", "norm_groups", "wrap_ddp", "build_loss", "BatchBuilder", "fingerprint"):
            traced(L, name)
        traced(L.SmoothClapModel, "fit_normalization")
        traced(L.CachedStep, "__init__")
        epoch = L.Trainer._epoch

        def timed_epoch(self, *a, **kw):
            line("epoch starts")
            return epoch(self, *a, **kw)
        L.Trainer._epoch = timed_epoch
        train(cfg, prep, run_dir=None, progress=False)
        line("after train")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
