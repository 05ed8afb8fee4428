"""Benchmark: what an augmented training view costs to embed (``train.augment_views``).

``embed_audio_files`` on the same real clips, cold cache each time, as recorded and as view 1
(speed, room, noise, level: ``smoothclap.augment``), interleaved, best of ``--repeats``; also the
effects alone (read + augment, no tower). Figure: the view's extraction time over the plain one
(a cold ``--config recommended`` run embeds each training clip 1 + 2 times).

    .venv/bin/python benchmarks/bench_augment.py [--quick] [--tower whisper-tiny-en?layers=all]
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import _common as C


def main() -> None:
    ap = C.parser(__doc__.splitlines()[0], background_load=True)
    ap.add_argument("--n", type=int, default=None, help="clips (default 192; --quick 32)")
    ap.add_argument("--tower", default="whisper-tiny-en?layers=all")
    args = ap.parse_args()
    n = args.n or (32 if args.quick else 192)
    repeats = args.repeats or (2 if args.quick else 3)

    from smoothclap.audio import read_audio
    from smoothclap.augment import KINDS, Augmentation
    from smoothclap.embed import embed_audio_files
    from smoothclap.towers import build_tower

    m = C.machine()
    tmp = Path(tempfile.mkdtemp(prefix="bench_augment_"))
    files = C.real_files(args.data, n, seed=2)["file"].astype(str).tolist()
    tower = build_tower(args.tower)
    tower.embed([read_audio(files[0])])  # load weights
    view = Augmentation(KINDS, 1)
    run = {"k": 0}

    def extract(augment=None):
        run["k"] += 1
        return embed_audio_files(tower, files, cache_dir=tmp / f"cache{run['k']}", progress=False, augment=augment)

    fns = {"as recorded": extract, "view": lambda: extract(view),
           "effects alone": lambda: [read_audio(f, augment=view) for f in files],
           "reading alone": lambda: [read_audio(f) for f in files]}
    with C.background_load(args.background_load):
        best, times = C.interleaved_best(fns, repeats)
    ratio = best["view"] / best["as recorded"]
    for k, v in best.items():
        print(f"  {k:<16s} best {v:7.2f} s   ({len(files) / v:6.1f} clips/s)")
    print(f"a view costs {ratio:.2f}x the extraction of the clips as recorded; the effects "
          f"{(best['effects alone'] - best['reading alone']) / len(files) * 1000:.1f} ms per clip")
    C.write_result("augment", {"benchmark": "augment", "tower": args.tower, "clips": len(files),
                               "repeats": repeats, "best_seconds": best, "all_seconds": times,
                               "view_over_plain": ratio, "background_load": args.background_load,
                               "machine": m}, args.out)


if __name__ == "__main__":
    main()
