"""Benchmark 6: cost of the SmoothCLAP loss step vs the ClipLoss step, at batch 32 and 256.

"Loss step" = the loss forward + backward to the normalised embeddings and the scale (what the
loss adds to a training step). SmoothCLAP: beta 0.1, gamma 0.5, soft targets from 384-d local
audio and description embeddings (both computed per batch, as in training). Also timed: the full
training step as ``train.py`` runs it (heads forward, loss, backward, Adam step), which is what
a user pays per batch. Target: SmoothCLAP <= 1.5x ClipLoss at batch 32 and 256.

Timed with one intra-op thread (``--threads``; 0 = torch's default): at these sizes the ops are
too small to split, and on a shared 2-core machine two spinning OpenMP threads add noise far
larger than the effect measured (see ``bench_threads.py``). ``proposed_smoothclap_loss`` below is
the same loss in as few ops as ClipLoss (targets from embeddings normalised once per corpus,
``F.cross_entropy`` with probability targets), timed alongside as a proposal for ``losses.py``.

    .venv/bin/python benchmarks/bench_loss.py [--quick]
"""
from __future__ import annotations

import _common as C


def target_features(local_audio, desc_text, gamma=0.5, tau_a=0.07, tau_t=0.07):
    """``[S, N, k]``: the frozen target embeddings, L2-normalised and divided by sqrt(tau), stacked
    (S = 2 sources, zero-padded to one width; padding leaves dot products alone). Frozen, so a
    trainer computes this once per corpus, not once per batch."""
    import torch
    import torch.nn.functional as F

    parts = []
    if gamma < 1.0:
        parts.append(F.normalize(local_audio.float(), dim=-1) / tau_a ** 0.5)
    if gamma > 0.0:
        parts.append(F.normalize(desc_text.float(), dim=-1) / tau_t ** 0.5)
    k = max(x.shape[1] for x in parts)
    return torch.stack([F.pad(x, (0, k - x.shape[1])) for x in parts])


def proposed_smoothclap_loss(z_audio, z_text, scale, feats, beta=0.1, gamma=0.5):
    """The SmoothCLAP loss in as few ops as ClipLoss (a proposal for ``losses.py``).

    ``feats`` ``[S, B, k]``: this batch's rows of :func:`target_features`. Targets: one batched
    matmul, one softmax over both sources, one weighted sum (no per-batch normalisation); loss:
    ``F.cross_entropy`` with probability targets, both directions (the same fused kernels ClipLoss
    uses). Equal to ``SmoothClapLoss(beta, gamma)`` (checked below); beta > 0 only.
    """
    import torch
    import torch.nn.functional as F

    logits = scale * z_audio @ z_text.T
    with torch.no_grad():
        w = [(1.0 - gamma) * beta] if gamma < 1.0 else []
        w += [gamma * beta] if gamma > 0.0 else []
        w = torch.tensor(w, dtype=logits.dtype).view(-1, 1, 1)
        y = (torch.softmax(torch.bmm(feats, feats.transpose(1, 2)), dim=-1) * w).sum(0)
        y.diagonal().add_(1.0 - beta)
        ent = -torch.xlogy(y, y).sum() / y.shape[0]  # mean row entropy of y (= that of y^T)
    loss = 0.5 * (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y.T))
    return {"loss": loss, "kl": loss.detach() - ent, "logits": logits, "y": y}


def main() -> None:
    ap = C.parser(__doc__.splitlines()[0])
    ap.add_argument("--batches", default="32,256")
    ap.add_argument("--embed-dim", type=int, default=768)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)

    import torch
    import torch.nn.functional as F

    from smoothclap.losses import ClipLoss, SmoothClapLoss
    from smoothclap.model import SmoothClapConfig, SmoothClapModel

    if args.threads:
        torch.set_num_threads(args.threads)
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
        feats = target_features(local, desc)  # once per corpus in a trainer; here per batch
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

        iters = max(20, int((100 if args.quick else 300) * 32 / B))

        def loop(f):
            def run():
                for _ in range(iters):
                    f()
            return run

        # the proposal computes the same loss and gradients
        za1, zt1 = za0.clone().requires_grad_(True), zt0.clone().requires_grad_(True)
        l1 = smooth(za1, zt1, log_scale.detach().exp(), local_audio=local, desc_text=desc)
        l1["loss"].backward()
        za2, zt2 = za0.clone().requires_grad_(True), zt0.clone().requires_grad_(True)
        l2 = proposed_smoothclap_loss(za2, zt2, log_scale.detach().exp(), feats)
        l2["loss"].backward()
        same = (torch.allclose(l1["loss"], l2["loss"], rtol=1e-5, atol=1e-5)
                and torch.allclose(l1["kl"], l2["kl"], rtol=1e-4, atol=1e-5)
                and torch.allclose(za1.grad, za2.grad, rtol=1e-4, atol=1e-6)
                and torch.allclose(zt1.grad, zt2.grad, rtol=1e-4, atol=1e-6))
        fns = {
            "clip_loss": loop(lambda: loss_step(lambda a, t, s: clip(a, t, s))),
            "proposed_smooth_loss": loop(lambda: loss_step(
                lambda a, t, s: proposed_smoothclap_loss(a, t, s, feats))),
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
        r_prop = best["proposed_smooth_loss"] / best["clip_loss"]
        res["batches"][str(B)] = {"iters": iters, "us_per_step_best": per,
                                  "ratio_proposed_loss_step": r_prop, "proposed_equals_library": bool(same),
                                  "ratio_loss_step": r_loss, "ratio_train_step": r_step,
                                  "met_loss_step": r_loss <= 1.5, "met_train_step": r_step <= 1.5}
        print(f"batch {B}: " + ", ".join(f"{k} {v:.0f} us" for k, v in per.items()))
        print(f"  SmoothCLAP / CLIP: loss step {r_loss:.2f}x ({C.verdict(r_loss <= 1.5)}), "
              f"training step {r_step:.2f}x ({C.verdict(r_step <= 1.5)}); proposed loss {r_prop:.2f}x "
              f"(same loss and gradients: {same})")
    res["met"] = all(v["met_loss_step"] for v in res["batches"].values())
    C.write_result("loss", res, args.out)


if __name__ == "__main__":
    main()
