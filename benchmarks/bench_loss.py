"""Benchmark 6: cost of the SmoothCLAP loss step vs the ClipLoss step, at batch 32 and 256.

"Loss step" = the loss forward + backward to the normalised embeddings and the scale (what the
loss adds to a training step). SmoothCLAP: beta 0.1, gamma 0.5, soft targets from 384-d local
audio and description embeddings (both computed per batch, as in training). Also timed: the full
training step as ``train.py`` runs it (heads forward, loss, backward, Adam step), which is what
a user pays per batch. Target: SmoothCLAP <= 1.5x ClipLoss at batch 32 and 256.

    .venv/bin/python benchmarks/bench_loss.py [--quick]
"""
from __future__ import annotations

import time

import _common as C


def main() -> None:
    ap = C.parser(__doc__.splitlines()[0])
    ap.add_argument("--batches", default="32,256")
    ap.add_argument("--embed-dim", type=int, default=768)
    args = ap.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)

    import torch
    import torch.nn.functional as F

    from smoothclap.losses import ClipLoss, SmoothClapLoss
    from smoothclap.model import SmoothClapConfig, SmoothClapModel

    m = C.machine()
    torch.manual_seed(0)
    d = args.embed_dim
    clip, smooth = ClipLoss(), SmoothClapLoss(beta=0.1, gamma=0.5)
    res = {"benchmark": "loss", "embed_dim": d, "repeats": repeats, "batches": {}, "machine": m}
    print(C.describe_machine(m))
    for B in [int(b) for b in args.batches.split(",")]:
        za0 = F.normalize(torch.randn(B, d), dim=-1)
        zt0 = F.normalize(torch.randn(B, d), dim=-1)
        local, desc = torch.randn(B, 384), torch.randn(B, 384)
        log_scale = torch.tensor(2.659, requires_grad=True)

        def loss_step(fn):
            za = za0.clone().requires_grad_(True)
            zt = zt0.clone().requires_grad_(True)
            out = fn(za, zt, log_scale.exp())
            out["loss"].backward()
            return out

        model = SmoothClapModel(SmoothClapConfig(audio_dim=384, text_dim=384, embed_dim=d))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        xa, xt = torch.randn(B, 384), torch.randn(B, 384)

        def train_step(kind):
            za = model.encode_audio_features(xa)
            zt = model.encode_text_features(xt)
            if kind == "clip":
                out = clip(za, zt, model.scale)
            else:
                out = smooth(za, zt, model.scale, local_audio=local, desc_text=desc)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()

        iters = max(20, int((200 if args.quick else 1000) * 32 / B))

        def loop(f):
            def run():
                for _ in range(iters):
                    f()
            return run

        fns = {
            "clip_loss": loop(lambda: loss_step(lambda a, t, s: clip(a, t, s))),
            "smooth_loss": loop(lambda: loss_step(lambda a, t, s: smooth(a, t, s, local_audio=local, desc_text=desc))),
            "clip_train_step": loop(lambda: train_step("clip")),
            "smooth_train_step": loop(lambda: train_step("smooth")),
        }
        for f in fns.values():  # warm-up
            f()
        best, times = C.interleaved_best(fns, repeats)
        per = {k: v / iters * 1e6 for k, v in best.items()}  # microseconds per step
        r_loss = best["smooth_loss"] / best["clip_loss"]
        r_step = best["smooth_train_step"] / best["clip_train_step"]
        res["batches"][str(B)] = {"iters": iters, "us_per_step_best": per,
                                  "ratio_loss_step": r_loss, "ratio_train_step": r_step,
                                  "met_loss_step": r_loss <= 1.5, "met_train_step": r_step <= 1.5}
        print(f"batch {B}: " + ", ".join(f"{k} {v:.0f} us" for k, v in per.items()))
        print(f"  SmoothCLAP / CLIP: loss step {r_loss:.2f}x ({C.verdict(r_loss <= 1.5)}), "
              f"training step {r_step:.2f}x ({C.verdict(r_step <= 1.5)})")
    res["met"] = all(v["met_loss_step"] for v in res["batches"].values())
    C.write_result("loss", res, args.out)


if __name__ == "__main__":
    main()
