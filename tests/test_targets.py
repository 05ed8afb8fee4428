"""Target geometry options: top-k, standardisation, temperature calibration."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch

from smoothclap.config import RunConfig, loss_preset
from smoothclap.losses import similarity_targets, soft_targets
from smoothclap.normalize import standardize  # noqa: E402
from smoothclap.targets import apply_target_options, build_loss, calibrate_tau, target_statistic


def test_topk_sparsifies_rows():
    e = torch.randn(10, 6, generator=torch.Generator().manual_seed(0))
    q = similarity_targets(e, 0.1, topk=3)
    assert torch.all((q > 0).sum(1) == 3)
    torch.testing.assert_close(q.sum(1), torch.ones(10))
    assert torch.all(q.diagonal() > 0)  # a clip is always its own nearest neighbour
    full = similarity_targets(e, 0.1)
    assert torch.all((full > 0).sum(1) == 10)
    t = soft_targets(e, e, beta=0.5, gamma=0.5, topk=2)
    assert torch.all((t.q > 0).sum(1) <= 2)


def test_standardize_modes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5)) + 3.0
    groups = np.repeat(["a", "b"], 200)
    x[200:] += 10
    c = standardize(x, "center", groups)
    for g in ("a", "b"):
        np.testing.assert_allclose(c[groups == g].mean(0), 0, atol=1e-5)
    z = standardize(x, "zscore")
    np.testing.assert_allclose(z.std(0), 1, atol=1e-4)
    y = rng.normal(size=(2000, 5)) * [1, 2, 3, 4, 5] + 7.0
    w = standardize(y, "whiten")
    np.testing.assert_allclose(np.cov(w.T), np.eye(5), atol=0.02)
    assert standardize(x, "none") is x
    with pytest.raises(ValueError):
        standardize(x, "bogus")


def test_centering_makes_targets_informative():
    # clustered embeddings sharing a large common offset: raw cosines are all ~1 (flat q);
    # centring exposes the clusters, so q concentrates on same-cluster pairs
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 16)
    centers = rng.normal(size=(4, 16))
    x = 20.0 + centers[labels] + 0.3 * rng.normal(size=(64, 16))
    same = torch.as_tensor(labels[:, None] == labels[None, :]) & ~torch.eye(64, dtype=torch.bool)

    def precision(emb):
        q = similarity_targets(torch.as_tensor(emb, dtype=torch.float32), 0.07)
        off = q * (~torch.eye(64, dtype=torch.bool))
        return float(off[same].sum() / off.sum())

    assert precision(standardize(x, "center")) > 0.9 > 0.5 > precision(x) - 0.25


@pytest.mark.parametrize("kind,value", [("diag", 0.5), ("diag", 0.2), ("neighbours", 4.0)])
def test_calibrate_tau_reaches_value(kind, value):
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(300, 12)).astype(np.float32)
    tau = calibrate_tau(emb, kind, value, batch_size=32, seed=0)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randperm(300, generator=g)[:32] for _ in range(24)]
    got = target_statistic(torch.as_tensor(emb), tau, batches, kind)
    assert abs(got - value) < 1e-3 * max(1, value)
    with pytest.raises(ValueError):
        calibrate_tau(emb, "diag", 0.01, batch_size=32)


def _bundle(n=64):
    rng = np.random.default_rng(3)
    from smoothclap.trainer import Prepared

    return Prepared(table=pd.DataFrame({"file": [f"{i}.wav" for i in range(n)], "label": ["a"] * n,
                                        "corpus": np.repeat(["x", "y"], n // 2)}),
                    audio=rng.normal(size=(n, 8)).astype(np.float32),
                    local=(5 + rng.normal(size=(n, 8))).astype(np.float32),
                    caption_texts=["a"], caption_emb=np.ones((1, 4), np.float32),
                    caption_index=[np.zeros(n, dtype=np.int64)], desc_texts=None,
                    desc_emb=(5 + rng.normal(size=(n, 4))).astype(np.float32),
                    label_ids=np.zeros(n, dtype=np.int64), label_names=["a"], binner=None, trained_on=["x", "y"])


def test_build_loss_and_apply_options():
    cfg = RunConfig()
    cfg.loss = loss_preset("smoothclap-reconstructed", calibrate="diag", calibrate_value=0.6,
                           target_standardize="zscore", target_standardize_group="corpus")
    cfg.train.batch_size = 16
    prep = apply_target_options(cfg, _bundle())
    for g in ("x", "y"):
        m = (prep.table["corpus"] == g).to_numpy()
        np.testing.assert_allclose(prep.local[m].mean(0), 0, atol=1e-5)
    loss = build_loss(cfg, prep)
    assert loss.config.tau_a != 0.07 and loss.config.tau_t != 0.07 and loss.config.topk is None
    clap = build_loss(cfg.updated({"loss": loss_preset("clap")}), prep)
    assert clap.config.beta == 0.0
    bad = cfg.updated({"loss": loss_preset("smoothclap-reconstructed", target_standardize="center",
                                           target_standardize_group="speaker")})
    with pytest.raises(ValueError, match="speaker"):
        apply_target_options(bad, _bundle())
    with pytest.raises(ValueError, match="calibrate"):
        loss_preset("smoothclap-reconstructed", calibrate="sometimes")
