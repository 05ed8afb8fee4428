"""Supporting benchmark: torch's CPU threading on a shared 2-core machine.

torch runs every op over ``torch.get_num_threads()`` OpenMP threads (2 here), and libgomp's
default wait policy spins at barriers. When other processes keep the cores busy, a spinning
thread waits for a descheduled sibling at every op, and small ops become many times slower.
This benchmark times, in fresh subprocesses (the OpenMP policy is read at start-up):

* ``whisper``: whisper-tiny-en forward over length-sorted batches of real clips (16 per batch);
* ``train``: 200 training steps on cached features (ParaCLAP heads 384 -> 768, SmoothCLAP loss,
  Adam, batch 32), the inner loop of ``smoothclap.train``;

under: the default (2 threads, spinning), ``OMP_WAIT_POLICY=PASSIVE`` (2 threads, sleeping waits),
one thread, and (whisper) 2 worker threads x 1 thread each (what ``embed_audio_files`` does).
Ratios are against the default, in the same command, interleaved over ``--repeats`` rounds; both
the best and the median round are given: the best shows what each setting does when the machine
happens to be free for a moment, the median what it does under the usual load of a shared machine.

    .venv/bin/python benchmarks/bench_threads.py [--quick]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import _common as C

CONFIGS = {
    "default": {"env": {}, "threads": None, "workers": 1},
    "passive_wait": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "threads": None, "workers": 1},
    "one_thread": {"env": {}, "threads": 1, "workers": 1},
    "two_workers_x1": {"env": {}, "threads": None, "workers": 2},
}


def child(workload: str, threads: str, workers: int, data: str, n: int) -> None:
    import torch

    if threads != "None":
        torch.set_num_threads(int(threads))
    if workload == "whisper":
        from smoothclap.audio import read_audio
        from smoothclap.towers import build_tower

        files = C.real_files(data, n, seed=7)["file"].tolist()
        tower = build_tower("whisper-tiny-en")
        waves = sorted((read_audio(f) for f in files), key=len)
        batches = [waves[b : b + 16] for b in range(0, len(waves), 16)]
        tower.embed(batches[0][:2])
        t = time.perf_counter()
        if workers > 1:
            C.forward_only(tower, batches, workers=workers)
        else:
            for b in batches:
                tower.embed(b)
        dt = time.perf_counter() - t
    else:
        from smoothclap.config import loss_preset
        from smoothclap.losses import SmoothClapLoss
        from smoothclap.model import SmoothClapConfig, SmoothClapModel

        torch.manual_seed(0)
        model = SmoothClapModel(SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6",
                                                 audio_dim=384, text_dim=384, embed_dim=768))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss = SmoothClapLoss(loss_preset("smoothclap-reconstructed"))
        xa, xt, loc, desc = (torch.randn(32, 384) for _ in range(4))

        def step():
            out = loss(model.encode_audio_features(xa), model.encode_text_features(xt), model.scale,
                       local_audio=loc, desc_text=desc)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()

        for _ in range(10):
            step()
        t = time.perf_counter()
        for _ in range(200):
            step()
        dt = time.perf_counter() - t
    print("RESULT " + json.dumps({"seconds": dt}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6]))
        return
    ap = C.parser(__doc__.splitlines()[0], background_load=True)
    ap.add_argument("--n", type=int, default=None, help="clips for the whisper workload (default 64; --quick 32)")
    args = ap.parse_args()
    n = args.n or (32 if args.quick else 64)
    repeats = args.repeats or (2 if args.quick else 5)
    m = C.machine()
    print(C.describe_machine(m))
    times: dict = {}
    with C.background_load(args.background_load):  # stopped even when a run fails
        for _ in range(repeats):
            for workload in ("whisper", "train"):
                for name, cfg in CONFIGS.items():
                    if workload == "train" and cfg["workers"] > 1:
                        continue
                    env = {**os.environ, **cfg["env"]}
                    p = subprocess.run([sys.executable, __file__, "--child", workload, str(cfg["threads"]),
                                        str(cfg["workers"]), args.data, str(n)], capture_output=True, text=True, env=env)
                    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
                    if p.returncode or not line:
                        raise SystemExit(f"{workload}/{name} failed:\n{p.stderr[-3000:]}")
                    times.setdefault(workload, {}).setdefault(name, []).append(json.loads(line[0][7:])["seconds"])
    import statistics

    res = {"benchmark": "threads", "repeats": repeats, "whisper_clips": n, "seconds": times,
           "speedup_vs_default_best": {}, "speedup_vs_default_median": {},
           "background_load": args.background_load, "machine": m}
    for workload, by in times.items():
        for how, f in (("best", min), ("median", statistics.median)):
            base = f(by["default"])
            res[f"speedup_vs_default_{how}"][workload] = {k: base / f(v) for k, v in by.items()}
            print(f"{workload} ({how}): " + ", ".join(f"{k} {f(v):.2f} s ({base / f(v):.2f}x)" for k, v in by.items()))
    C.write_result("threads", res, args.out)


if __name__ == "__main__":
    main()
