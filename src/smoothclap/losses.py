"""Contrastive losses: the CLAP/InfoNCE ``ClipLoss`` and the SmoothCLAP soft-target loss.

Structure follows open_clip: logits, targets and the loss are separate steps, so the distributed
trainer can gather features first and every process builds the same global targets.

Notation (docs/method.md), batch of B pairs:
    S = s * z_a z_t^T                       [B, B]
    p_a2t = row-softmax(S), p_t2a = row-softmax(S^T)
    q_a2a = row-softmax(l l^T / tau_a),  q_t2t = row-softmax(e e^T / tau_t)     (stop-gradient)
    q = (1 - gamma) q_a2a + gamma q_t2t;  y = (1 - beta) I + beta q
    L = 1/2 [CE(y, p_a2t) + CE(y^T, p_t2a)],  CE(y, p) = -mean_i sum_j y_ij log p_ij

The paper calls its loss a "symmetric KL". Two readings (``divergence``): ``"kl"`` is
KL(y || p) per direction, i.e. the soft cross-entropy above up to the targets' entropy;
``"jeffreys"`` is KL(y || p) + KL(p || y) per direction (as a public third-party reimplementation
does; the default, chosen on validation speakers). The text-to-audio target (``t2a_target``) is y^T
(``"transpose"``, default; its rows need not
sum to 1) or y^T with its rows renormalised (``"renormalized"``). q_a2a comes from frozen local
features, or (``local_source="labels"``) from the training labels: uniform over the clips of the
same label (the clip itself included), as supervised contrastive targets; an unlabelled clip's row
(label -1) uses no label: its local-feature similarities, or itself alone. beta = 0 is always
exactly ClipLoss. :class:`SmoothClapLoss` is built from the ``loss`` section of a run config
(:class:`smoothclap.config.LossConfig`, where every default is stated).

Cost (``benchmarks/bench_loss.py``): the soft loss is one autograd node with a closed-form
gradient (:class:`_SoftContrastiveCE`), and the target sources are frozen, so a trainer
L2-normalises them once per corpus (:func:`unit_rows`, ``sources_normalized=True``) instead of once
per batch. beta = 0 takes ClipLoss's own path.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import LossConfig, validate


def clip_logits(z_audio: torch.Tensor, z_text: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """z_audio ``[B, d]``, z_text ``[B, d]`` (L2-normalised) -> S ``[B, B]`` = scale * z_a z_t^T."""
    return scale * z_audio @ z_text.T


def unit_rows(emb: torch.Tensor | None) -> torch.Tensor | None:
    """``[N, k]`` -> the rows L2-normalised, float32, detached (a target source, ready for
    ``sources_normalized=True``). ``None`` stays ``None``."""
    if emb is None:
        return None
    with torch.no_grad():
        return F.normalize(emb.detach().float(), dim=-1)


def similarity_targets(emb: torch.Tensor, tau: float, topk: int | None = None,
                       normalized: bool = False) -> torch.Tensor:
    """Row-softmax of cosine similarities of ``emb`` ``[B, k]`` at temperature ``tau`` -> ``[B, B]``.

    ``topk``: keep only each row's k largest similarities (the diagonal is always one of them,
    cosine 1) before the softmax, so every row spreads its mass over at most k - 1 neighbours.
    ``normalized``: the rows of ``emb`` are already unit length (:func:`unit_rows`).
    Computed without gradient: targets are constants of the loss (stop-gradient).
    """
    with torch.no_grad():
        e = emb.detach().float() if normalized else unit_rows(emb)
        logits = torch.mm(e, e.T).div_(tau)
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


#: The label id of an unlabelled clip (``Prepared.label_ids``; :func:`label_targets`).
UNLABELLED = -1


def label_targets(labels: torch.Tensor, local_audio: torch.Tensor | None = None, tau: float = 0.07,
                  topk: int | None = None, normalized: bool = False) -> torch.Tensor:
    """Integer labels ``[B]`` -> ``[B, B]``: row i uniform over the clips with i's label (i included).

    A label < 0 marks an unlabelled clip (:data:`UNLABELLED`). A labelled clip's row spreads over
    the labelled clips of its label only (an unlabelled clip gets no mass there). An unlabelled
    clip's row uses no label at all: the tower similarity of its ``local_audio`` row
    (:func:`similarity_targets` at ``tau``, ``topk``), over every clip of the batch; without local
    features it is one-hot on itself (hard targets: that row is CLAP's)."""
    with torch.no_grad():
        same = (labels[:, None] == labels[None, :]).float()
        q = same / same.sum(1, keepdim=True)
        unl = labels < 0
        if bool(unl.any()):
            if local_audio is not None:
                sim = similarity_targets(local_audio, tau, topk, normalized)  # the tower source's rows
                q[unl] = sim[unl.to(sim.device)].to(device=q.device, dtype=q.dtype)
            else:
                q[unl] = torch.eye(len(labels), dtype=q.dtype, device=q.device)[unl]
        return q


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
    normalized: bool = False,
    labels: torch.Tensor | None = None,
) -> SoftTargets:
    """SmoothCLAP targets y = (1 - beta) I + beta [(1 - gamma) q_a2a + gamma q_t2t].

    local_audio: ``[B, k_a]`` frozen local-feature audio embeddings (needed when beta > 0, gamma < 1).
    desc_text: ``[B, k_t]`` frozen text embeddings of the paralinguistic descriptions (when gamma > 0).
    labels: ``[B]`` integer training labels: q_a2a = :func:`label_targets` instead of local features
    (-1: an unlabelled clip, whose row comes from ``local_audio`` when given, else is one-hot).
    normalized: both have unit-length rows already (:func:`unit_rows`), so they are not normalised here.
    """
    ref = local_audio if local_audio is not None else desc_text
    if ref is None and labels is not None:
        ref = labels
    if batch_size is None:
        if ref is None:
            raise ValueError("soft_targets needs batch_size when no embeddings are given")
        batch_size = ref.shape[0]
    device = device if device is not None else (ref.device if ref is not None else "cpu")
    if not 0.0 <= beta <= 1.0 or not 0.0 <= gamma <= 1.0:
        raise ValueError(f"beta and gamma must lie in [0, 1], got beta={beta}, gamma={gamma}")
    if beta == 0.0:
        return SoftTargets(y=torch.eye(batch_size, device=device))
    q_a2a = q_t2t = None
    if gamma < 1.0 and local_audio is None and labels is None:
        raise ValueError("beta > 0 and gamma < 1 need local-feature audio embeddings (or labels)")
    if gamma > 0.0 and desc_text is None:
        raise ValueError("beta > 0 and gamma > 0 need description text embeddings")
    with torch.no_grad():
        if gamma < 1.0:
            q_a2a = (label_targets(labels, local_audio, tau_a, topk, normalized) if labels is not None
                     else similarity_targets(local_audio, tau_a, topk, normalized)).to(device)
        if gamma > 0.0:
            q_t2t = similarity_targets(desc_text, tau_t, topk, normalized).to(device)
        if q_t2t is None:
            q = q_a2a
        elif q_a2a is None:
            q = q_t2t
        else:
            q = torch.add(q_a2a, q_t2t, alpha=gamma / (1.0 - gamma)).mul_(1.0 - gamma)
        y = q.mul(beta)
        y.diagonal().add_(1.0 - beta)
    return SoftTargets(y=y, q=q, q_a2a=q_a2a, q_t2t=q_t2t)


def soft_cross_entropy(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """CE(y, p) = -mean_i sum_j y_ij log softmax(logits)_ij. target, logits ``[B, B]``."""
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


class _SoftContrastiveCE(torch.autograd.Function):
    """L = 1/2 [CE(y, p_a2t) + CE(y^T, p_t2a)] from logits S ``[B, B]`` and constant targets y ``[B, B]``.

    p_a2t is S's row softmax and p_t2a^T its column softmax, so
    L = -1/(2B) sum_ij y_ij (log rowsoftmax(S)_ij + log colsoftmax(S)_ij), and the gradient is
    dL/dS = 1/(2B) [rowsoftmax(S) * y.sum(1)[:, None] + colsoftmax(S) * y.sum(0)[None, :] - 2 y]
    (rows of y sum to 1, columns need not). One node instead of autograd's graph of softmaxes,
    products and means: at batch 32 the step is dominated by per-op overhead.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        log_row = torch.log_softmax(logits, dim=1)
        log_col = torch.log_softmax(logits, dim=0)
        loss = torch.mul(log_row.add(log_col), y).sum().mul_(-0.5 / logits.shape[0])
        ctx.save_for_backward(log_row, log_col, y)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        log_row, log_col, y = ctx.saved_tensors
        g = log_row.exp().mul_(y.sum(1, keepdim=True))
        g.addcmul_(log_col.exp(), y.sum(0, keepdim=True)).sub_(y, alpha=2.0)
        return g.mul_(grad * (0.5 / y.shape[0])), None


def soft_contrastive_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1/2 [CE(y, p_a2t) + CE(y^T, p_t2a)] for logits ``[B, B]`` (differentiable) and targets y
    ``[B, B]`` (constant: no gradient flows into them)."""
    return _SoftContrastiveCE.apply(logits, y.detach().to(logits.dtype))


def _entropy(target: torch.Tensor) -> torch.Tensor:
    """mean_i H(y_i) with 0 log 0 = 0, for target ``[B, B']``."""
    return torch.xlogy(target, target).sum().div_(-target.shape[0])


#: Floor of target probabilities inside log y of the reverse KL (targets may hold exact zeros:
#: top-k, label targets), so KL(p || y) stays finite.
LOG_FLOOR = 1e-12


def _kl(y: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """mean_i KL(y_i || p_i) = mean_i sum_j y_ij (log y_ij - log p_ij), 0 log 0 = 0."""
    return (torch.xlogy(y, y) - y * log_p).sum(1).mean()


def _kl_reverse(y: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """mean_i KL(p_i || y_i) = mean_i sum_j p_ij (log p_ij - log y_ij) (y floored at :data:`LOG_FLOOR`)."""
    return (log_p.exp() * (log_p - y.clamp_min(LOG_FLOOR).log())).sum(1).mean()


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

    def __init__(self, config: LossConfig | None = None, **overrides):
        """``config``: the ``loss`` section of a run config (default: its defaults, the ``smoothclap``
        preset); ``overrides``: fields set on top, e.g. ``beta=0.5`` or calibrated ``tau_a``."""
        super().__init__()
        base = (config if config is not None else LossConfig()).to_dict()
        self.config = validate(LossConfig, {**base, **overrides}) if overrides else (config or LossConfig())

    def targets(self, local_audio, desc_text, batch_size, device, normalized: bool = False,
                labels: torch.Tensor | None = None) -> SoftTargets:
        c = self.config
        return soft_targets(local_audio, desc_text, c.beta, c.gamma, c.tau_a, c.tau_t, batch_size=batch_size,
                            device=device, topk=c.topk, normalized=normalized,
                            labels=labels if c.local_source == "labels" else None)

    def loss_from_logits(self, logits: torch.Tensor, t: SoftTargets) -> dict:
        """Loss of logits ``[B, B]`` against targets ``t`` (one-hot when ``t.q`` is None: ClipLoss)."""
        if t.q is None:  # beta = 0: hard targets, exactly ClipLoss (entropy 0, so KL = loss)
            labels = torch.arange(logits.shape[0], device=logits.device)
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
            return {"loss": loss, "kl": loss.detach(), "logits": logits, "targets": t}
        if self.config.divergence == "kl" and self.config.t2a_target == "transpose":
            loss = soft_contrastive_ce(logits, t.y)  # the fused node with its closed-form gradient
            with torch.no_grad():
                # mean row entropy of y equals that of y^T (same entries, same number of rows)
                kl = loss.detach() - _entropy(t.y)
            return {"loss": loss, "kl": kl, "logits": logits, "targets": t}
        y_a2t = t.y.detach().to(logits.dtype)
        y_t2a = y_a2t.T
        if self.config.t2a_target == "renormalized":
            y_t2a = y_t2a / y_t2a.sum(1, keepdim=True)
        lp_a2t, lp_t2a = F.log_softmax(logits, dim=1), F.log_softmax(logits.T, dim=1)
        kl_yp = 0.5 * (_kl(y_a2t, lp_a2t) + _kl(y_t2a, lp_t2a))
        if self.config.divergence == "kl":
            loss = kl_yp + 0.5 * (_entropy(y_a2t) + _entropy(y_t2a))  # the cross-entropy form
        else:
            loss = kl_yp + 0.5 * (_kl_reverse(y_a2t, lp_a2t) + _kl_reverse(y_t2a, lp_t2a))
        return {"loss": loss, "kl": kl_yp.detach(), "logits": logits, "targets": t}

    def forward(
        self,
        z_audio: torch.Tensor,
        z_text: torch.Tensor,
        scale: torch.Tensor,
        local_audio: torch.Tensor | None = None,
        desc_text: torch.Tensor | None = None,
        sources_normalized: bool = False,
        labels: torch.Tensor | None = None,
    ) -> dict:
        """z_audio, z_text ``[B, d]`` normalised; local_audio ``[B, k_a]``; desc_text ``[B, k_t]``
        (``sources_normalized``: their rows are unit length already, see :func:`unit_rows`);
        labels ``[B]`` integer training labels (used for q_a2a when ``local_source="labels"``)."""
        logits = clip_logits(z_audio, z_text, scale)
        t = self.targets(local_audio, desc_text, logits.shape[0], logits.device, sources_normalized, labels)
        return self.loss_from_logits(logits, t)


def target_diagnostics(t: SoftTargets, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Summaries of one batch's targets, as 0-d tensors on the targets' device (read them once per
    logging interval, not per step): diagonal mass of q and y, row entropy of q (and its exponent,
    the effective number of neighbours), and, given integer ``labels`` ``[B]``, the share of q's
    off-diagonal mass on same-label pairs ("target precision"; diagnostics only). Precision and
    its chance level count only pairs of two labelled clips (labels < 0 are unlabelled: skipped);
    where the batch has no such pair (or q puts no mass on one) they are NaN: undefined, and left
    out of the trainer's epoch means."""
    with torch.no_grad():
        out = {"y_diag": t.y.diagonal().mean()}
        if t.q is None:
            return out
        q = t.q
        ent = _entropy(q)
        out.update(q_diag=q.diagonal().mean(), q_entropy=ent, q_neighbours=ent.exp())
        if labels is not None:
            same = (labels[:, None] == labels[None, :]).to(q.dtype)
            known = (labels >= 0).to(q.dtype)
            off = (1.0 - torch.eye(q.shape[0], device=q.device, dtype=q.dtype)) * known[:, None] * known[None, :]
            mass = (q * off).sum()
            nan = torch.full((), float("nan"), dtype=q.dtype, device=q.device)
            out["q_precision"] = torch.where(mass > 0, (q * off * same).sum() / mass.clamp_min(1e-12), nan)
            # what precision uniform off-diagonal targets would give: the baseline to beat
            pairs = off.sum()
            out["q_precision_chance"] = torch.where(pairs > 0, (off * same).sum() / pairs.clamp_min(1.0), nan)
    return out
