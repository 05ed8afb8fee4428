"""Benchmark 6: cost of the SmoothCLAP loss step vs the ClipLoss step, at batch 32 and 256.

"Loss step" = the loss forward + backward to the normalised embeddings and the scale (what the
loss adds to a training step). SmoothCLAP: beta 0.1, gamma 0.5, soft targets from 384-d local
audio and description embeddings (both computed per batch, as in training). Also timed: the full
training step as ``train.py`` runs it (heads forward, loss, backward, Adam step), which is what
a user pays per batch. Target: SmoothCLAP <= 1.5x ClipLoss at batch 32 and 256.

Timed with one intra-op thread (``--threads``; 0 = torch's default): at these sizes the ops are
too small to split, and on a shared 2-core machine two spinning OpenMP threads add noise far
larger than the effect measured (see ``bench_threads.py``).

Variants of the SmoothCLAP step, all giving the same loss and gradients (checked):
``smooth_loss`` the library as the trainer calls it (target sources L2-normalised once per corpus,
``sources_normalized=True``); ``smooth_loss_raw_sources`` the library normalising them per batch;
``smooth_loss_v0`` the plain autograd definition (the first implementation, for the speed-up).

    .venv/bin/python benchmarks/bench_loss.py [--quick]
"""
from __future__ import annotations

import _common as C


def smoothclap_loss_v0(z_audio, z_text, scale, local_audio, desc_text, beta=0.1, gamma=0.5, tau=0.07):
    """The first implementation: targets and both soft cross-entropies as plain autograd ops."""
    import torch
    import torch.nn.functional as F

    logits = scale * z_audio @ z_text.T
    with torch.no_grad():
        def q(e):
            e = F.normalize(e.float(), dim=-1)
            return torch.softmax(e @ e.T / tau, dim=1)
        y = (1 - beta) * torch.eye(logits.shape[0]) + beta * ((1 - gamma) * q(local_audio) + gamma * q(desc_text))

    def ce(t, lg):
        return -(t * F.log_softmax(lg, dim=1)).sum(1).mean()
    loss = 0.5 * (ce(y, logits) + ce(y.T, logits.T))
    with torch.no_grad():
        ent = -0.5 * (torch.xlogy(y, y).sum(1).mean() + torch.xlogy(y.T, y.T).sum(1).mean())
    return {"loss": loss, "kl": loss.detach() - ent}


def main() -> None:
    ap = C.parser(__doc__.splitlines()[0])
    ap.add_argument("--batches", default="32,256")
    ap.add_argument("--embed-dim", type=int, default=768)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)

    import torch
    import torch.nn.functional as F

    from smoothclap.config import loss_preset
    from smoothclap.losses import ClipLoss, SmoothClapLoss, unit_rows
    from smoothclap.model import SmoothClapConfig, SmoothClapModel

    if args.threads:
        torch.set_num_threads(args.threads)
    m = C.machine()
    torch.manual_seed(0)
    d = args.embed_dim
    clip, smooth = ClipLoss(), SmoothClapLoss(loss_preset("smoothclap-reconstructed"))
    res = {"benchmark": "loss", "embed_dim": d, "repeats": repeats, "batches": {}, "machine": m}
    print(C.describe_machine(m))
    for B in [int(b) for b in args.batches.split(",")]:
        za0 = F.normalize(torch.randn(B, d), dim=-1)
        zt0 = F.normalize(torch.randn(B, d), dim=-1)
        local, desc = torch.randn(B, 384), torch.randn(B, 384)
        local_u, desc_u = unit_rows(local), unit_rows(desc)  # once per corpus, as train.py does
        log_scale = torch.tensor(2.659, requires_grad=True)

        def loss_step(fn):
            za = za0.clone().requires_grad_(True)
            zt = zt0.clone().requires_grad_(True)
            out = fn(za, zt, log_scale.exp())
            out["loss"].backward()
            out["grads"] = (za.grad, zt.grad)
            return out

        model = SmoothClapModel(SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6",
                                                 audio_dim=384, text_dim=384, embed_dim=d))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        xa, xt = torch.randn(B, 384), torch.randn(B, 384)

        def train_step(kind):
            za = model.encode_audio_features(xa)
            zt = model.encode_text_features(xt)
            if kind == "clip":
                out = clip(za, zt, model.scale)
            else:
                out = smooth(za, zt, model.scale, local_audio=local_u, desc_text=desc_u, sources_normalized=True)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()

        iters = max(20, int((100 if args.quick else 300) * 32 / B))

        def loop(f):
            def run():
                for _ in range(iters):
                    f()
            return run

        def smooth_lib(a, t, s_):
            return smooth(a, t, s_, local_audio=local_u, desc_text=desc_u, sources_normalized=True)

        def smooth_raw(a, t, s_):
            return smooth(a, t, s_, local_audio=local, desc_text=desc)

        def smooth_v0(a, t, s_):
            return smoothclap_loss_v0(a, t, s_, local, desc)

        # every variant computes the same loss, KL and gradients
        ref = loss_step(smooth_v0)
        same = {}
        for name, fn in (("smooth_loss", smooth_lib), ("smooth_loss_raw_sources", smooth_raw)):
            out = loss_step(fn)
            same[name] = bool(torch.allclose(out["loss"], ref["loss"], rtol=1e-5, atol=1e-6)
                              and torch.allclose(out["kl"], ref["kl"], rtol=1e-4, atol=1e-5)
                              and all(torch.allclose(g1, g2, rtol=1e-4, atol=1e-7)
                                      for g1, g2 in zip(out["grads"], ref["grads"])))
        fns = {
            "clip_loss": loop(lambda: loss_step(lambda a, t, s_: clip(a, t, s_))),
            "smooth_loss": loop(lambda: loss_step(smooth_lib)),
            "smooth_loss_raw_sources": loop(lambda: loss_step(smooth_raw)),
            "smooth_loss_v0": loop(lambda: loss_step(smooth_v0)),
            "clip_train_step": loop(lambda: train_step("clip")),
            "smooth_train_step": loop(lambda: train_step("smooth")),
        }
        for f in fns.values():  # warm-up
            f()
        best, times = C.interleaved_best(fns, repeats)
        per = {k: v / iters * 1e6 for k, v in best.items()}  # microseconds per step
        r_loss = best["smooth_loss"] / best["clip_loss"]
        r_step = best["smooth_train_step"] / best["clip_train_step"]
        r_raw = best["smooth_loss_raw_sources"] / best["clip_loss"]
        r_v0 = best["smooth_loss_v0"] / best["clip_loss"]
        res["batches"][str(B)] = {"iters": iters, "us_per_step_best": per,
                                  "ratio_loss_step": r_loss, "ratio_loss_step_raw_sources": r_raw,
                                  "ratio_loss_step_v0": r_v0, "speedup_vs_v0": best["smooth_loss_v0"] / best["smooth_loss"],
                                  "same_loss_and_gradients_as_v0": same,
                                  "ratio_train_step": r_step,
                                  "met_loss_step": r_loss <= 1.5, "met_train_step": r_step <= 1.5}
        print(f"batch {B}: " + ", ".join(f"{k} {v:.0f} us" for k, v in per.items()))
        print(f"  SmoothCLAP / CLIP: loss step {r_loss:.2f}x ({C.verdict(r_loss <= 1.5)}), sources normalised "
              f"per batch {r_raw:.2f}x, v0 {r_v0:.2f}x; training step {r_step:.2f}x ({C.verdict(r_step <= 1.5)}); "
              f"same loss and gradients as v0: {same}")
    res["met"] = all(v["met_loss_step"] for v in res["batches"].values())
    res["all_same"] = all(all(v["same_loss_and_gradients_as_v0"].values()) for v in res["batches"].values())
    C.write_result("loss", res, args.out)


if __name__ == "__main__":
    main()
