"""Emotion-aware soft targets: cross-fitted posteriors (out-of-fold by speaker), label targets, the
loss's two readings (KL and Jeffreys) and text-to-audio targets against plain autograd references,
and a bounded caption pool."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from smoothclap.losses import ClipLoss, SmoothClapLoss, label_targets, soft_targets
from smoothclap.targets import crossfit_dimensions, crossfit_posteriors


def _data(n=60, k=6, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.standard_normal((n, k)) + 2.0 * np.eye(3)[y] @ rng.standard_normal((3, k))
    spk = np.array([f"s{i % 5}" for i in range(n)])  # every speaker shows every label
    return x, y, spk


def spy_on_fits(monkeypatch) -> list[set]:
    """Record the rows (rounded) every scikit-learn pipeline is fitted on, in order."""
    from sklearn.pipeline import Pipeline

    seen: list[set] = []
    real_fit = Pipeline.fit

    def spy(self, X, Y=None, **kw):
        seen.append({tuple(r) for r in np.round(X, 8)})
        return real_fit(self, X, Y, **kw)

    monkeypatch.setattr(Pipeline, "fit", spy)
    return seen


def test_posteriors_are_out_of_fold_by_speaker(monkeypatch):
    x, y, spk = _data()
    seen = spy_on_fits(monkeypatch)
    post, fold = crossfit_posteriors(x, y, spk, n_folds=3)
    assert post.shape == (60, 3) and post.dtype == np.float32
    np.testing.assert_allclose(post.sum(1), 1.0, atol=1e-5)
    assert len(seen) == 3 and set(fold) == {0, 1, 2}
    for f, train_rows in enumerate(seen):
        test_rows = {tuple(r) for r in np.round(x[fold == f], 8)}
        assert not train_rows & test_rows  # no clip is predicted by a model that saw it
        assert not set(spk[fold == f]) & {s for s, r in zip(spk, np.round(x, 8)) if tuple(r) in train_rows}
    assert (post.argmax(1) == y).mean() > 0.8  # informative: the classes separate
    again, _ = crossfit_posteriors(x, y, spk, n_folds=3)
    np.testing.assert_array_equal(post, again)  # deterministic


def test_dimensional_targets():
    x, y, spk = _data()
    dims = np.stack([y * 1.0, -y * 0.5 + 3], 1)
    pred, fold = crossfit_dimensions(x, dims, spk, n_folds=3)
    assert pred.shape == (60, 2) and abs(pred.mean()) < 1e-5
    assert np.corrcoef(pred[:, 0], dims[:, 0])[0, 1] > 0.8


def test_label_targets_put_all_off_diagonal_mass_on_same_label():
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    q = label_targets(labels)
    same = labels[:, None] == labels[None, :]
    assert torch.allclose(q.sum(1), torch.ones(6))
    assert float(q[~same].abs().sum()) == 0.0
    assert torch.allclose(q[0], torch.tensor([1 / 3, 0, 1 / 3, 0, 0, 1 / 3]))
    t = soft_targets(None, None, beta=0.5, gamma=0.0, labels=labels)
    off = ~torch.eye(6, dtype=torch.bool)
    assert float(t.y[off & ~same].sum()) == 0.0 and float(t.y[off & same].sum()) > 0


def _batch(b=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    za = F.normalize(torch.randn(b, d, generator=g), dim=-1)
    zt = F.normalize(torch.randn(b, d, generator=g), dim=-1)
    return za, zt, torch.randn(b, 5, generator=g), torch.randn(b, 4, generator=g)


def _reference(za, zt, s, y, divergence, t2a):
    """The plain definitions, through autograd: per direction KL(y||p) [+ KL(p||y)]."""
    S = s * za @ zt.T
    y1 = y
    y2 = y.T if t2a == "transpose" else y.T / y.T.sum(1, keepdim=True)
    out = 0.0
    for yy, logits in ((y1, S), (y2, S.T)):
        p = torch.softmax(logits, 1)
        kl = (yy * (torch.log(yy.clamp_min(1e-30)) - torch.log(p))).sum(1).mean()
        if divergence == "jeffreys":
            kl = kl + (p * (torch.log(p) - torch.log(yy.clamp_min(1e-12)))).sum(1).mean()
        else:
            kl = kl + (-(yy * torch.log(yy.clamp_min(1e-30))).sum(1).mean())  # + H(y): the CE form
        out = out + 0.5 * kl
    return out


@pytest.mark.parametrize("divergence", ["kl", "jeffreys"])
@pytest.mark.parametrize("t2a", ["transpose", "renormalized"])
def test_loss_readings_equal_autograd_reference(divergence, t2a):
    za, zt, la, dt = _batch()
    s = torch.tensor(12.0, requires_grad=True)
    za.requires_grad_(True)
    loss = SmoothClapLoss(beta=0.5, gamma=0.3, tau_a=0.3, tau_t=0.5, local_source="tower", divergence=divergence,
                          t2a_target=t2a)
    out = loss(za, zt, s, la, dt)
    out["loss"].backward()
    g_loss, g_s = za.grad.clone(), s.grad.clone()
    za.grad = None
    s.grad = None
    ref = _reference(za, zt, s, out["targets"].y.detach(), divergence, t2a)
    ref.backward()
    assert abs(float(out["loss"]) - float(ref)) < 1e-6
    torch.testing.assert_close(g_loss, za.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g_s, s.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("divergence", ["kl", "jeffreys"])
@pytest.mark.parametrize("t2a", ["transpose", "renormalized"])
def test_beta_zero_is_clip_loss_for_every_reading(divergence, t2a):
    za, zt, la, dt = _batch()
    ref = ClipLoss()(za, zt, torch.tensor(14.0))["loss"]
    got = SmoothClapLoss(beta=0.0, local_source="tower", divergence=divergence, t2a_target=t2a)(za, zt, torch.tensor(14.0), la, dt)["loss"]
    assert float(got) == float(ref)


def test_caption_pool_bounds_the_distinct_captions(synth_table, shared_cache):
    pytest.importorskip("opensmile")
    from smoothclap.config import load_config
    from smoothclap.trainer import prepare

    free = prepare(load_config(None, ["train.epochs=6", "captions.pool_size=null"]), synth_table,
                   cache_dir=shared_cache, progress=False)
    pooled = prepare(load_config(None, ["train.epochs=6", "captions.pool_size=2"]), synth_table,
                     cache_dir=shared_cache, progress=False)
    n = len(synth_table)
    per_clip = pd.DataFrame({e: [pooled.caption_texts[i] for i in ix] for e, ix in enumerate(pooled.caption_index)})
    assert per_clip.nunique(axis=1).max() <= 2  # at most K variants of each clip over all epochs
    assert len(pooled.caption_texts) <= 2 * n < len(free.caption_texts)
    assert len(pooled.caption_index) == 6


def test_posterior_targets_train_and_are_pinned(synth_table, shared_cache, tmp_path):
    pytest.importorskip("opensmile")
    from smoothclap.config import load_config
    from smoothclap.trainer import prepare, train

    cfg = load_config(None, ["train.epochs=2", "train.batch_size=8", "model.embed_dim=16",
                             "loss.local_source=posteriors", "loss.posterior_folds=2"])
    prep = prepare(cfg, synth_table, cache_dir=shared_cache, progress=False)
    assert prep.local.shape == (len(synth_table), len(prep.label_names))
    res = train(cfg, prep, run_dir=tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "target_sources.npz").exists()
    assert res.history[-1]["q_precision"] > res.history[-1]["q_precision_chance"]
    # a repeated run uses the saved targets, even if recomputing gave others
    import dataclasses

    changed = dataclasses.replace(prep, local=np.roll(prep.local, 1, axis=1))
    again = train(cfg, changed, run_dir=tmp_path / "r", progress=False)
    for k, v in res.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k])
    labels_cfg = load_config(None, ["train.epochs=1", "train.batch_size=8", "model.embed_dim=16",
                                    "loss.local_source=labels", "loss.gamma=0"])
    lab = train(labels_cfg, prepare(labels_cfg, synth_table, cache_dir=shared_cache, progress=False), progress=False)
    assert lab.history[-1]["q_precision"] == pytest.approx(1.0)
