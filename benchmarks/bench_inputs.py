"""Benchmark: the same clips through a manifest, a Hugging Face dataset folder and WebDataset shards.

For N clips (default 200 synthetic clips of 1-4 s, WAV and FLAC, a quarter at 22.05 / 44.1 kHz;
``--real`` takes N clips of EmoDB / RAVDESS / TESS from ``--data``), written once as files + a
manifest, as a ``save_to_disk`` folder and as 4 tar shards, this times in one process, the three
interleaved (their order rotating every round), best of ``--repeats``:

* ``list``: building the corpus table (manifest: header durations; dataset / shards: every clip's
  bytes read once for its header and content hash; each run starts with nothing remembered);
* ``read``: decoding every clip (``read_audio``: resampled, checked) in the extraction's order;
* ``embed``: ``embed_audio_files`` with whisper-tiny-en, no cache (what the reading costs beside
  the tower), and ``list + embed``.

``read`` and ``embed`` start from what their own (untimed) listing left in the process, as a command
does (list, then extract).

It prints each path's throughput against the manifest's (goal: within 10 %) and checks that the
embeddings are bit-identical.

    .venv/bin/python benchmarks/bench_inputs.py [--quick] [--real] [--n 200]
"""
from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import _common as C

LABELS = ("angry", "happy", "sad", "neutral")


def synthetic(root: Path, n: int, seed: int = 0) -> list[dict]:
    """``n`` voiced-sounding clips of 1-4 s (harmonics of a gliding f0, amplitude modulation, noise)."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    rows = []
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sr = (16000, 16000, 22050, 44100)[i % 4]
        t = np.arange(int(rng.uniform(1.0, 4.0) * sr)) / sr
        f0 = rng.uniform(110, 260) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        x = sum((0.6 ** k) * np.sin(k * phase) for k in range(1, 6))
        x = 0.3 * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2) * x / np.max(np.abs(x))
        x = (x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
        f = root / f"clip{i:04d}.{'flac' if i % 2 else 'wav'}"
        sf.write(f, x, sr, subtype="PCM_16")
        rows.append({"file": str(f), "label": LABELS[i % 4], "speaker": f"s{i % 10}", "corpus": "bench"})
    return rows


def real(data: str, n: int) -> list[dict]:
    table = C.real_files(data, n, seed=1)
    return [{"file": str(r.file), "label": str(r.label), "speaker": str(r.speaker), "corpus": str(r.corpus)}
            for r in table.itertuples()]


def write_inputs(rows: list[dict], tmp: Path) -> dict[str, str]:
    """The clips as a manifest, a save_to_disk folder and 4 tar shards (``<key>.<ext>`` + ``<key>.json``)."""
    import datasets
    import pandas as pd

    pd.DataFrame(rows).to_csv(tmp / "bench.csv", index=False)
    blob = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    feats = datasets.Features({"audio": blob, **{k: datasets.Value("string") for k in ("label", "speaker", "corpus")}})
    data = {k: [r[k] for r in rows] for k in ("label", "speaker", "corpus")}
    data["audio"] = [{"bytes": Path(r["file"]).read_bytes(), "path": Path(r["file"]).name} for r in rows]
    ds = datasets.Dataset.from_dict(data, features=feats).cast_column("audio", datasets.Audio())
    ds.save_to_disk(str(tmp / "hf"))
    shards = 4
    per = -(-len(rows) // shards)
    for s in range(shards):
        with tarfile.open(tmp / f"bench-{s:03d}.tar", "w") as tf:
            for k, r in enumerate(rows[s * per:(s + 1) * per]):
                f = Path(r["file"])
                key = f"{s * per + k:06d}"
                tf.add(str(f), arcname=f"{key}{f.suffix.lower()}")
                meta = json.dumps({c: r[c] for c in ("label", "speaker", "corpus")}).encode()
                ti = tarfile.TarInfo(f"{key}.json")
                ti.size = len(meta)
                tf.addfile(ti, io.BytesIO(meta))
    return {"manifest": str(tmp / "bench.csv"), "hf": str(tmp / "hf"),
            "webdataset": str(tmp / ("bench-{000..%03d}.tar" % (shards - 1)))}


def main() -> None:
    ap = C.parser(__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="clips (default 200; --quick 48)")
    ap.add_argument("--real", action="store_true", help="real clips of EmoDB / RAVDESS / TESS from --data")
    ap.add_argument("--tower", default="whisper-tiny-en")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    n = args.n or (48 if args.quick else 200)
    repeats = args.repeats or (2 if args.quick else 3)

    import numpy as np

    from smoothclap import corpora, sources
    from smoothclap.audio import header_seconds, read_audio
    from smoothclap.embed import embed_audio_files
    from smoothclap.towers import build_tower

    m = C.machine()
    tmp = Path(tempfile.mkdtemp(prefix="bench_inputs_"))
    rows = real(args.data, n) if args.real else synthetic(tmp / "clips", n)
    specs = write_inputs(rows, tmp)

    def listing(kind: str):
        sources.clear()  # nothing remembered: every listing reads what it needs
        if kind == "manifest":
            return corpora.manifest_table(specs[kind])
        return corpora.dataset_table(specs[kind])

    tables = {k: listing(k) for k in specs}
    files = {k: t.rows["file"].tolist() for k, t in tables.items()}
    for k, t in tables.items():
        assert len(t.rows) == len(rows), (k, len(t.rows))
        np.testing.assert_array_equal(t.rows["duration"].to_numpy(), tables["manifest"].rows["duration"].to_numpy())
    audio_s = float(tables["manifest"].rows["duration"].sum())
    tower = build_tower(args.tower)
    tower.embed([read_audio(files["manifest"][0])])  # load weights
    print(f"{len(rows)} {'real' if args.real else 'synthetic'} clips, {audio_s / 60:.1f} min audio; "
          f"{C.describe_machine(m)}")

    def read_all(kind):
        order = sorted(files[kind], key=header_seconds)
        return sum(len(read_audio(f)) for f in order)

    def embed(kind):
        return embed_audio_files(tower, files[kind], cache_dir=None, batch_size=args.batch_size, progress=False)

    def list_embed(kind):
        fs = listing(kind).rows["file"].tolist()
        return embed_audio_files(tower, fs, cache_dir=None, batch_size=args.batch_size, progress=False)

    # (untimed preparation, timed run): "read" and "embed" start from what their own listing
    # remembered (as in a command: list, then extract), "list" and "list+embed" from nothing.
    stages = {"list": (lambda k: sources.clear(), listing), "read": (listing, read_all),
              "embed": (listing, embed), "list+embed": (lambda k: sources.clear(), list_embed)}
    kinds = list(specs)
    times: dict[str, list[float]] = {f"{st}/{k}": [] for st in stages for k in kinds}
    for stage, (prep, fn) in stages.items():
        rounds = max(repeats, 5) if stage in ("list", "read") else repeats  # cheap ones: more rounds
        for r in range(rounds):
            for kind in kinds[r % len(kinds):] + kinds[: r % len(kinds)]:  # rotated: no kind always first
                prep(kind)
                dt, _ = C.timeit(lambda: fn(kind))
                times[f"{stage}/{kind}"].append(dt)
    best = {k: min(v) for k, v in times.items()}
    embs = {k: embed(k) for k in specs}
    identical = all(np.array_equal(embs[k][0], embs["manifest"][0]) and embs[k][1].all() for k in specs)
    ratios = {f"{stage}/{kind}": best[f"{stage}/manifest"] / best[f"{stage}/{kind}"]
              for stage in stages for kind in kinds if kind != "manifest"}
    # the same, paired within each round (the three run back to back), median over rounds: robust to
    # a machine whose load drifts between rounds
    paired = {k: float(np.median([tm / tx for tm, tx in zip(times[k.split("/")[0] + "/manifest"], times[k])]))
              for k in ratios}
    for k, v in best.items():
        print(f"  {k:<24s} best {v:7.2f} s   ({len(rows) / v:7.1f} clips/s)")
    print("throughput against the manifest (1.0 = as fast; goal >= 0.90): best-of ratio, median of per-round ratios")
    for k, v in ratios.items():
        print(f"  {k:<24s} {v:.3f}   {paired[k]:.3f}")
    print(f"embeddings bit-identical across inputs: {identical}")
    goal = all(paired[f"{s}/{k}"] >= 0.90 for s in ("embed", "list+embed") for k in kinds if k != "manifest")
    print(f"goal (embed and list+embed within 10 %, paired medians): {C.verdict(goal)}")
    res = {"benchmark": "inputs", "tower": args.tower, "clips": len(rows), "real": args.real,
           "audio_seconds": audio_s, "repeats": repeats, "best_seconds": best, "all_seconds": times,
           "throughput_ratio_vs_manifest": ratios,
           "throughput_ratio_vs_manifest_paired_median": paired, "embeddings_identical": identical, "goal": ">= 0.90",
           "met": goal, "machine": m}
    C.write_result("inputs" + ("_quick" if args.quick else "") + ("_real" if args.real else ""), res, args.out)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
