"""Contrastive losses: the CLAP/InfoNCE ``ClipLoss`` and the SmoothCLAP soft-target loss.

Structure follows open_clip: logits, targets and the loss are separate steps, so the distributed
trainer can gather features first and every process builds the same global targets.

Notation (DESIGN.md section 2), batch of B pairs:
    S = s * z_a z_t^T                       [B, B]
    p_a2t = row-softmax(S), p_t2a = row-softmax(S^T)
    q_a2a = row-softmax(l l^T / tau_a),  q_t2t = row-softmax(e e^T / tau_t)     (stop-gradient)
    q = (1 - gamma) q_a2a + gamma q_t2t;  y = (1 - beta) I + beta q
    L = 1/2 [CE(y, p_a2t) + CE(y^T, p_t2a)],  CE(y, p) = -mean_i sum_j y_ij log p_ij
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def clip_logits(z_audio: torch.Tensor, z_text: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """z_audio ``[B, d]``, z_text ``[B, d]`` (L2-normalised) -> S ``[B, B]`` = scale * z_a z_t^T."""
    return scale * z_audio @ z_text.T


def similarity_targets(emb: torch.Tensor, tau: float, topk: int | None = None) -> torch.Tensor:
    """Row-softmax of cosine similarities of ``emb`` ``[B, k]`` at temperature ``tau`` -> ``[B, B]``.

    ``topk``: keep only each row's k largest similarities (the diagonal is always one of them,
    cosine 1) before the softmax, so every row spreads its mass over at most k - 1 neighbours.
    Computed without gradient: targets are constants of the loss (stop-gradient).
    """
    with torch.no_grad():
        e = F.normalize(emb.detach().float(), dim=-1)
        logits = e @ e.T / tau
        if topk is not None and topk < logits.shape[1]:
            if topk < 1:
                raise ValueError(f"topk must be >= 1, got {topk}")
            kth = logits.topk(topk, dim=1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.softmax(logits, dim=1)


@dataclass
class SoftTargets:
    """All ``[B, B]``; rows of q_a2a, q_t2t, q and y sum to 1. ``None`` where a source is unused."""

    y: torch.Tensor
    q: torch.Tensor | None = None
    q_a2a: torch.Tensor | None = None
    q_t2t: torch.Tensor | None = None


def soft_targets(
    local_audio: torch.Tensor | None,
    desc_text: torch.Tensor | None,
    beta: float,
    gamma: float,
    tau_a: float = 0.07,
    tau_t: float = 0.07,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    topk: int | None = None,
) -> SoftTargets:
    """SmoothCLAP targets y = (1 - beta) I + beta [(1 - gamma) q_a2a + gamma q_t2t].

    local_audio: ``[B, k_a]`` frozen local-feature audio embeddings (needed when beta > 0, gamma < 1).
    desc_text: ``[B, k_t]`` frozen text embeddings of the paralinguistic descriptions (when gamma > 0).
    """
    ref = local_audio if local_audio is not None else desc_text
    if batch_size is None:
        if ref is None:
            raise ValueError("soft_targets needs batch_size when no embeddings are given")
        batch_size = ref.shape[0]
    device = device if device is not None else (ref.device if ref is not None else "cpu")
    eye = torch.eye(batch_size, device=device)
    if not 0.0 <= beta <= 1.0 or not 0.0 <= gamma <= 1.0:
        raise ValueError(f"beta and gamma must lie in [0, 1], got beta={beta}, gamma={gamma}")
    if beta == 0.0:
        return SoftTargets(y=eye)
    q_a2a = q_t2t = None
    q = torch.zeros(batch_size, batch_size, device=device)
    if gamma < 1.0:
        if local_audio is None:
            raise ValueError("beta > 0 and gamma < 1 need local-feature audio embeddings")
        q_a2a = similarity_targets(local_audio, tau_a, topk).to(device)
        q = q + (1.0 - gamma) * q_a2a
    if gamma > 0.0:
        if desc_text is None:
            raise ValueError("beta > 0 and gamma > 0 need description text embeddings")
        q_t2t = similarity_targets(desc_text, tau_t, topk).to(device)
        q = q + gamma * q_t2t
    y = (1.0 - beta) * eye + beta * q
    return SoftTargets(y=y, q=q, q_a2a=q_a2a, q_t2t=q_t2t)


def soft_cross_entropy(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """CE(y, p) = -mean_i sum_j y_ij log softmax(logits)_ij. target, logits ``[B, B]``."""
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


def _entropy(target: torch.Tensor) -> torch.Tensor:
    """mean_i H(y_i) with 0 log 0 = 0."""
    return -(torch.xlogy(target, target)).sum(1).mean()


class ClipLoss(nn.Module):
    """Symmetric InfoNCE: 1/2 [CE(I, p_a2t) + CE(I, p_t2a)] (hard one-hot targets)."""

    def forward(self, z_audio: torch.Tensor, z_text: torch.Tensor, scale: torch.Tensor) -> dict:
        logits = clip_logits(z_audio, z_text, scale)
        labels = torch.arange(logits.shape[0], device=logits.device)
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        return {"loss": loss, "logits": logits}


class SmoothClapLoss(nn.Module):
    """SmoothCLAP loss with soft targets; beta = 0 gives exactly :class:`ClipLoss`.

    ``forward`` returns a dict with ``loss`` (to backpropagate), ``kl`` (bidirectional KL(y || p),
    equal to the loss minus the targets' entropy), ``logits`` ``[B, B]`` and ``targets``
    (:class:`SoftTargets`).
    """

    def __init__(self, beta: float = 0.1, gamma: float = 0.5, tau_a: float = 0.07, tau_t: float = 0.07,
                 topk: int | None = None):
        super().__init__()
        self.beta, self.gamma, self.tau_a, self.tau_t, self.topk = beta, gamma, tau_a, tau_t, topk

    def targets(self, local_audio, desc_text, batch_size, device) -> SoftTargets:
        return soft_targets(local_audio, desc_text, self.beta, self.gamma, self.tau_a, self.tau_t,
                            batch_size=batch_size, device=device, topk=self.topk)

    def loss_from_logits(self, logits: torch.Tensor, t: SoftTargets) -> dict:
        y = t.y.to(logits.dtype)
        ce_a2t = soft_cross_entropy(y, logits)
        ce_t2a = soft_cross_entropy(y.T, logits.T)
        loss = 0.5 * (ce_a2t + ce_t2a)
        with torch.no_grad():
            kl = loss.detach() - 0.5 * (_entropy(y) + _entropy(y.T))
        return {"loss": loss, "kl": kl, "logits": logits, "targets": t}

    def forward(
        self,
        z_audio: torch.Tensor,
        z_text: torch.Tensor,
        scale: torch.Tensor,
        local_audio: torch.Tensor | None = None,
        desc_text: torch.Tensor | None = None,
    ) -> dict:
        """z_audio, z_text ``[B, d]`` normalised; local_audio ``[B, k_a]``; desc_text ``[B, k_t]``."""
        logits = clip_logits(z_audio, z_text, scale)
        t = self.targets(local_audio, desc_text, logits.shape[0], logits.device)
        return self.loss_from_logits(logits, t)


def target_diagnostics(t: SoftTargets, labels: torch.Tensor | None = None) -> dict[str, float]:
    """Summaries of one batch's targets: diagonal mass of q and y, row entropy of q (and its
    exponent, the effective number of neighbours), and, given integer ``labels`` ``[B]``, the share
    of q's off-diagonal mass on same-label pairs ("target precision"; diagnostics only)."""
    out = {"y_diag": float(t.y.diagonal().mean())}
    if t.q is None:
        return out
    q = t.q
    ent = _entropy(q)
    out.update(q_diag=float(q.diagonal().mean()), q_entropy=float(ent), q_neighbours=float(ent.exp()))
    if labels is not None:
        same = (labels[:, None] == labels[None, :]).to(q.dtype)
        off = 1.0 - torch.eye(q.shape[0], device=q.device, dtype=q.dtype)
        mass = (q * off).sum()
        out["q_precision"] = float((q * off * same).sum() / mass.clamp_min(1e-12))
        # what precision uniform off-diagonal targets would give: the baseline to beat
        out["q_precision_chance"] = float((off * same).sum() / off.sum().clamp_min(1.0))
    return out
