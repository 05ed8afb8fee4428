"""Nuisance directions (``model.nuisance_dims``): the principal directions of the training
speakers' means are learned at training time, stored with the model and removed before the head,
so a clip's offset along them (a new speaker's voice, a new corpus's channel) changes nothing,
with or without test-time groups."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from smoothclap.config import ConfigError, SmoothClapConfig, load_config
from smoothclap.model import SmoothClapModel
from smoothclap.normalize import Projected, group_directions, remove_directions

DIM = 12


def _model(k: int = 3, **kw) -> SmoothClapModel:
    kw = {"feature_norm_group": "corpus", "fallback_stats": "shrunk", **kw}
    cfg = SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6", audio_dim=DIM, text_dim=8,
                           embed_dim=4, nuisance_dims=k, **kw)
    return SmoothClapModel(cfg)


def _speakers(seed: int = 0, n_speakers: int = 6, clips: int = 20):
    """Raw features ``[S * clips, DIM]`` of speakers with their own offsets, two corpora."""
    rng = np.random.default_rng(seed)
    spk = np.repeat(np.arange(n_speakers), clips)
    corpus = np.where(spk < n_speakers // 2, "a", "b")
    x = rng.normal(size=(len(spk), DIM)) + 3 * rng.normal(size=(n_speakers, DIM))[spk]
    return x.astype(np.float32), corpus.astype(object), np.array([f"{c}/{s}" for c, s in zip(corpus, spk)], dtype=object)


def test_group_directions_span_the_group_means_and_are_orthonormal():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(5, DIM))
    basis = group_directions(means, 7)
    assert basis.shape == (DIM, 7) and basis.dtype == np.float32
    gram = basis.T @ basis
    np.testing.assert_allclose(gram[:4, :4], np.eye(4), atol=1e-5)  # rank of 5 centred means: 4
    assert not basis[:, 4:].any()  # beyond the rank: zero columns, which remove nothing
    # every difference between group means is removed; a direction orthogonal to them is kept
    centred = remove_directions(means - means.mean(0), basis)
    np.testing.assert_allclose(centred, 0, atol=1e-5)
    q, _ = np.linalg.qr(np.concatenate([basis[:, :4], rng.normal(size=(DIM, 1))], 1))
    keep = q[:, 4:5].T
    np.testing.assert_allclose(remove_directions(keep, basis), keep, atol=1e-6)
    assert not group_directions(means[:1], 3).any()  # one group: no directions


def test_projected_rows_equal_the_array_projection():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, DIM)).astype(np.float32)
    basis = group_directions(rng.normal(size=(4, DIM)), 2)
    np.testing.assert_allclose(np.asarray(Projected(x, basis)), remove_directions(x, basis), atol=1e-6)
    np.testing.assert_allclose(Projected(x, basis)[np.array([3, 7])], remove_directions(x[[3, 7]], basis), atol=1e-6)


def test_an_offset_along_a_learned_direction_changes_no_embedding():
    x, corpus, speakers = _speakers()
    m = _model()
    out = m.fit_normalization(x, corpus, nuisance=speakers)
    plain = _model(0)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(plain.fit_normalization(x, corpus)))  # same inputs
    basis = m.nuisance_basis.numpy()
    np.testing.assert_allclose(basis.T @ basis, np.eye(3), atol=1e-5)
    m.eval()
    # a shift that, z-scored with the single-clip statistics, lies along a stored direction
    shift = 4 * basis[:, 1] * m.norm_std.numpy()
    with torch.no_grad():
        a = m.encode_audio_features(x[:6])
        np.testing.assert_allclose(m.encode_audio_features(x[:6] + shift), a, atol=1e-5)  # single clips
        g = ["a"] * 6
        b = m.encode_audio_features(np.concatenate([x[:6], x[:6] + shift]), g + ["new"] * 6)
        np.testing.assert_allclose(b[6:], b[:6], atol=1e-5)  # one group shifted: the same clips
        # the same shift moves the embeddings of a model without the projection
        plain.eval()
        assert (plain.encode_audio_features(x[:6] + shift) - plain.encode_audio_features(x[:6])).abs().max() > 1e-2


def test_the_directions_come_from_the_speakers_and_survive_saving(tmp_path):
    x, corpus, speakers = _speakers(seed=2)
    m = _model(k=8)
    m.fit_normalization(x, corpus, nuisance=speakers)
    basis = m.nuisance_basis.numpy()
    assert np.linalg.matrix_rank(basis, tol=1e-4) == 5  # 6 speakers: 5 directions, 3 columns of zeros
    # the speakers' means, z-scored as single clips, lie in the span
    means = np.stack([x[speakers == s].astype(np.float64).mean(0) for s in np.unique(speakers)])
    z = (means - m.norm_mean.double().numpy()) / m.norm_std.double().numpy()
    np.testing.assert_allclose(remove_directions(z - z.mean(0), basis), 0, atol=1e-4)
    m.save_pretrained(tmp_path / "m")
    assert "8 principal directions of the training speakers' means are removed" in (tmp_path / "m" / "README.md").read_text()
    back = SmoothClapModel.from_pretrained(tmp_path / "m")
    m.eval()  # (from_pretrained gives an eval model: no dropout)
    assert back.config.nuisance_dims == 8 and torch.equal(back.nuisance_basis, m.nuisance_basis)
    with torch.no_grad():
        torch.testing.assert_close(back.encode_audio_features(x[:5]), m.encode_audio_features(x[:5]))


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="model.nuisance_dims"):
        load_config(None, ["model.nuisance_dims=-1", "model.feature_norm_group=corpus"])
    x, corpus, _ = _speakers()
    with pytest.raises(ValueError, match="'speaker'"):
        _model().fit_normalization(x, corpus)  # no speakers given


def test_without_feature_normalisation_the_directions_are_the_raw_features():
    """`--config recommended --set model.feature_norm_group=null` still works: the speakers' means
    are taken as the tower gives them."""
    assert load_config(None, ["model.nuisance_dims=4"]).model.nuisance_dims == 4
    x, _, speakers = _speakers(seed=4)
    m = _model(k=5, feature_norm_group=None)
    np.testing.assert_array_equal(np.asarray(m.fit_normalization(x, nuisance=speakers)), x)  # unchanged rows
    means = np.stack([x[speakers == s].astype(np.float64).mean(0) for s in np.unique(speakers)])
    np.testing.assert_allclose(remove_directions(means - means.mean(0), m.nuisance_basis.numpy()), 0, atol=1e-4)
    m.eval()
    shift = 3 * m.nuisance_basis[:, 0].numpy()
    with torch.no_grad():
        np.testing.assert_allclose(m.encode_audio_features(x[:4] + shift), m.encode_audio_features(x[:4]), atol=1e-5)


def test_a_run_learns_directions_of_speakers_within_their_corpus(synth_table, shared_cache):
    """Through the trainer: speaker ids are taken within their corpus (they repeat across
    corpora), and the fitted directions reach the trained model."""
    from smoothclap.trainer import prepare, train
    from smoothclap.trainer.bundle import nuisance_groups

    table = synth_table.copy()
    table["corpus"] = np.where(table["speaker"].astype(str).isin(sorted(set(table["speaker"].astype(str)))[:2]),
                               "one", "two")
    cfg = load_config(None, ["train.epochs=1", "train.batch_size=8", "model.embed_dim=16",
                             "model.feature_norm_group=corpus", "model.nuisance_dims=4"])
    prep = prepare(cfg, table, cache_dir=shared_cache, progress=False)
    groups = nuisance_groups(cfg, prep)
    want = [f"{c}/{s}" for c, s in zip(prep.table["corpus"], prep.table["speaker"].astype(str))]
    assert groups.tolist() == want
    model = train(cfg, prep, run_dir=None, progress=False).model
    basis = model.nuisance_basis.cpu().numpy()
    n_speakers = len(set(want))
    assert np.linalg.matrix_rank(basis, tol=1e-4) == min(4, n_speakers - 1)
    assert nuisance_groups(load_config(None, ["model.feature_norm_group=corpus"]), prep) is None


def test_rows_read_on_demand_give_the_directions_of_the_array():
    """The on-disk bundle hands the model a row source: the directions and the standardiser come
    out as from the array in memory."""
    from smoothclap.normalize import RowSource

    class Rows(RowSource):
        def __init__(self, x):
            self.x, self.shape = x, x.shape

        def __getitem__(self, idx):
            return self.x[idx]

    x, corpus, speakers = _speakers(seed=3)
    a, b = _model(), _model()
    a.fit_normalization(x, corpus, nuisance=speakers)
    b.fit_normalization(Rows(x), corpus, nuisance=speakers)
    for name in ("nuisance_basis", "audio_mean", "audio_std", "norm_mean", "norm_std"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=1e-6, atol=1e-6)
