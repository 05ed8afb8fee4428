import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smoothclap.losses import (ClipLoss, SmoothClapLoss, soft_cross_entropy, soft_targets,
                               target_diagnostics, unit_rows)

#: The paper's reading of the loss (q_a2a from local features, KL per direction); the library's defaults
#: are the validated "smoothclap" preset (label targets, Jeffreys).
PAPER = {"local_source": "tower", "divergence": "kl"}


def _batch(b=6, d=8, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    za = F.normalize(torch.randn(b, d, generator=g), dim=-1)
    zt = F.normalize(torch.randn(b, d, generator=g), dim=-1)
    la = torch.randn(b, k, generator=g)
    et = torch.randn(b, k + 1, generator=g)
    return za, zt, la, et


def test_beta_zero_equals_clip_loss():
    za, zt, la, et = _batch()
    scale = torch.tensor(14.3)
    ref = ClipLoss()(za, zt, scale)["loss"]
    for gamma in (0.0, 0.5, 1.0):
        out = SmoothClapLoss(beta=0.0, gamma=gamma, **PAPER)(za, zt, scale, la, et)
        assert abs(float(out["loss"]) - float(ref)) < 1e-6
        # with one-hot targets the KL equals the CE (target entropy 0)
        assert abs(float(out["kl"]) - float(ref)) < 1e-6


def test_hand_computed_3x3():
    # Orthonormal-ish setup with simple numbers, every step done by hand with numpy.
    za = torch.tensor([[1.0, 0.0], [0.0, 1.0], [math.sqrt(0.5), math.sqrt(0.5)]])
    zt = torch.tensor([[1.0, 0.0], [math.sqrt(0.5), math.sqrt(0.5)], [0.0, 1.0]])
    la = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    et = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    beta, gamma, tau_a, tau_t, s = 0.4, 0.25, 0.5, 1.0, 2.0
    out = SmoothClapLoss(beta=beta, gamma=gamma, tau_a=tau_a, tau_t=tau_t, **PAPER)(za, zt, torch.tensor(s), la, et)

    A, T = za.numpy().astype(np.float64), zt.numpy().astype(np.float64)
    S = s * A @ T.T
    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    L = la.numpy() / np.linalg.norm(la.numpy(), axis=1, keepdims=True)
    E = et.numpy() / np.linalg.norm(et.numpy(), axis=1, keepdims=True)
    qa, qt = softmax(L @ L.T / tau_a), softmax(E @ E.T / tau_t)
    y = (1 - beta) * np.eye(3) + beta * ((1 - gamma) * qa + gamma * qt)
    ce1 = -(y * np.log(softmax(S))).sum(1).mean()
    ce2 = -(y.T * np.log(softmax(S.T))).sum(1).mean()
    expected = 0.5 * (ce1 + ce2)
    assert abs(float(out["loss"]) - expected) < 1e-5
    np.testing.assert_allclose(out["targets"].y.numpy(), y, atol=1e-6)
    # KL = CE - H(y): check against the direct definition
    def kl(t, p):
        return (t * (np.log(np.where(t > 0, t, 1)) - np.log(p))).sum(1).mean()
    assert abs(float(out["kl"]) - 0.5 * (kl(y, softmax(S)) + kl(y.T, softmax(S.T)))) < 1e-5


@pytest.mark.parametrize("beta,gamma", [(0.1, 0.5), (0.5, 0.1), (1.0, 0.0), (1.0, 1.0), (0.3, 1.0)])
def test_targets_are_distributions(beta, gamma):
    za, zt, la, et = _batch(b=9)
    t = soft_targets(la, et, beta, gamma, 0.07, 0.2)
    for m in (t.y, t.q):
        assert torch.all(m >= 0)
        torch.testing.assert_close(m.sum(1), torch.ones(9))
    # diagonal carries at least the hard part
    assert torch.all(t.y.diagonal() >= 1 - beta - 1e-6)


def test_no_gradient_into_targets():
    za, zt, la, et = _batch()
    la.requires_grad_(True)
    et.requires_grad_(True)
    za.requires_grad_(True)
    out = SmoothClapLoss(beta=0.5, gamma=0.5, **PAPER)(za, zt, torch.tensor(10.0), la, et)
    assert not out["targets"].y.requires_grad
    out["loss"].backward()
    assert la.grad is None and et.grad is None
    assert za.grad is not None and torch.any(za.grad != 0)


def test_gradient_matches_soft_target_closed_form():
    # dL/dS = 1/(2B) [p_row * rowsum(y) + p_col * colsum(y) - 2y] (targets constant); warm
    # temperatures so that y is far from the identity and its columns do not sum to 1.
    za, zt, la, et = _batch(b=5)
    S = (za @ zt.T * 5.0).requires_grad_(True)
    loss_fn = SmoothClapLoss(beta=0.6, gamma=0.5, tau_a=1.0, tau_t=2.0, **PAPER)
    t = loss_fn.targets(la, et, 5, "cpu")
    assert float((t.y.sum(0) - 1).abs().max()) > 1e-2
    out = loss_fn.loss_from_logits(S, t)
    out["loss"].backward()
    p1 = torch.softmax(S.detach(), 1)
    p2 = torch.softmax(S.detach().T, 1)
    expected = 0.5 * ((p1 - t.y) / 5 + ((p2 * t.y.T.sum(1, keepdim=True) - t.y.T) / 5).T)
    torch.testing.assert_close(S.grad, expected, atol=1e-6, rtol=1e-5)
    # and the fused node equals autograd through the plain definition
    S2 = S.detach().clone().requires_grad_(True)
    ref = 0.5 * (soft_cross_entropy(t.y, S2) + soft_cross_entropy(t.y.T, S2.T))
    ref.backward()
    torch.testing.assert_close(out["loss"], ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(S.grad, S2.grad, atol=1e-7, rtol=1e-5)


def test_prenormalised_sources_give_the_same_loss():
    za, zt, la, et = _batch(b=7)
    loss_fn = SmoothClapLoss(beta=0.4, gamma=0.3, tau_a=0.5, tau_t=0.5, topk=4, **PAPER)
    a = loss_fn(za, zt, torch.tensor(10.0), la * 3.0, et * 0.2)
    b = loss_fn(za, zt, torch.tensor(10.0), unit_rows(la), unit_rows(et), sources_normalized=True)
    torch.testing.assert_close(a["loss"], b["loss"])
    torch.testing.assert_close(a["targets"].y, b["targets"].y)
    assert unit_rows(None) is None


def test_missing_sources_raise():
    za, zt, la, et = _batch()
    with pytest.raises(ValueError, match="local-feature"):
        SmoothClapLoss(beta=0.1, gamma=0.5, **PAPER)(za, zt, torch.tensor(1.0), None, et)
    with pytest.raises(ValueError, match="description"):
        SmoothClapLoss(beta=0.1, gamma=0.5, **PAPER)(za, zt, torch.tensor(1.0), la, None)
    with pytest.raises(ValueError, match="beta"):
        soft_targets(la, et, 1.5, 0.5)


def test_diagnostics_precision():
    # two label groups; embeddings identical within a group -> all off-diagonal mass within group
    la = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])
    t = soft_targets(la, None, beta=0.5, gamma=0.0, tau_a=0.05)
    d = target_diagnostics(t, torch.tensor([0, 0, 1, 1]))
    assert d["q_precision"] > 0.99
    assert abs(d["q_precision_chance"] - 1 / 3) < 1e-6
    assert 0.45 < d["q_diag"] < 0.55  # two identical neighbours share the mass
    assert abs(d["y_diag"] - (0.5 + 0.5 * d["q_diag"])) < 1e-6
