"""Within-class whitening (``model.whiten: within-class``): learned on the labelled training clips
as a single clip sees them, stored with the model and applied before the head on every path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from smoothclap.config import ConfigError, SmoothClapConfig, load_config
from smoothclap.errors import BadInputError
from smoothclap.model import SmoothClapModel
from smoothclap.normalize import Projected, RowSource, moments, remove_directions, within_class_whitening

DIM = 10


def _model(**kw) -> SmoothClapModel:
    kw = {"feature_norm_group": "corpus", "fallback_stats": "shrunk", "whiten": "within-class", **kw}
    cfg = SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6", audio_dim=DIM, text_dim=8,
                           embed_dim=4, **kw)
    return SmoothClapModel(cfg)


def _clips(seed: int = 0, n: int = 400):
    """Raw features ``[n, DIM]``: 4 emotions, two corpora with their own offsets, a correlated spread."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 4, n)
    corpus = np.where(np.arange(n) < n // 2, "a", "b").astype(object)
    mix = np.eye(DIM) + 0.5 * rng.normal(size=(DIM, DIM))
    x = (2 * rng.normal(size=(4, DIM))[classes] + rng.normal(size=(n, DIM)) @ mix
         + np.where(corpus == "a", 1.0, -1.0)[:, None] * rng.normal(size=DIM))
    return x.astype(np.float32), corpus, classes


def _within(x, classes):
    """Covariance of the rows around their class means ``[DIM, DIM]``."""
    means = np.stack([x[classes == c].mean(0) for c in np.unique(classes)])
    dev = x - means[np.searchsorted(np.unique(classes), classes)]
    return dev.T @ dev / len(x)


def test_whitening_makes_the_within_class_covariance_near_identity():
    x, _, classes = _clips(n=4000)
    w = within_class_whitening(x, classes)
    assert w.shape == (DIM, DIM) and w.dtype == np.float32
    np.testing.assert_allclose(w, w.T, atol=1e-6)
    before = np.linalg.eigvalsh(_within(x.astype(np.float64), classes))
    after = np.linalg.eigvalsh(_within(x.astype(np.float64) @ w, classes))
    assert before.max() / before.min() > 5  # a spread far from round ...
    assert after.max() / after.min() < 1.5 and abs(after.mean() - 1) < 0.05  # ... made round (a little shrinkage)
    # the class means stay apart: whitening is invertible
    assert np.linalg.cond(w) < 1e3


def test_with_fewer_clips_than_features_the_shrinkage_keeps_it_finite():
    x, _, classes = _clips(n=8)
    w = within_class_whitening(x, classes)
    assert np.isfinite(w).all()


def test_the_model_stores_the_whitening_of_single_clip_features_and_uses_it(tmp_path):
    x, corpus, classes = _clips(seed=1)
    m = _model()
    m.fit_normalization(x, corpus, classes=classes)
    z = (x.astype(np.float64) - m.norm_mean.double().numpy()) / m.norm_std.double().numpy()
    np.testing.assert_allclose(m.whiten_matrix.numpy(), within_class_whitening(z, classes), atol=1e-5)
    # the input standardiser is fitted on the whitened features: they reach the head standardised
    feats = np.asarray(m.normalize_audio_features(x, corpus), dtype=np.float64) @ m.whiten_matrix.double().numpy()
    np.testing.assert_allclose(m.audio_mean.numpy(), feats.mean(0), atol=1e-4)
    np.testing.assert_allclose(m.audio_std.numpy(), feats.std(0, ddof=1), rtol=1e-4)
    m.eval()
    plain = _model(whiten="none")
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if k != "whiten_matrix"})
    plain.eval()
    with torch.no_grad():  # the matrix is applied: without it the same heads give other embeddings
        assert (m.encode_audio_features(x[:5]) - plain.encode_audio_features(x[:5])).abs().max() > 1e-2
    m.save_pretrained(tmp_path / "m")
    assert "whitened by the training clips' within-emotion covariance" in (tmp_path / "m" / "README.md").read_text()
    back = SmoothClapModel.from_pretrained(tmp_path / "m")
    assert back.config.whiten == "within-class" and torch.equal(back.whiten_matrix, m.whiten_matrix)
    with torch.no_grad():
        torch.testing.assert_close(back.encode_audio_features(x[:5]), m.encode_audio_features(x[:5]))
        torch.testing.assert_close(back.encode_audio_features(x[:12], ["b"] * 12),
                                   m.encode_audio_features(x[:12], ["b"] * 12))


def test_unlabelled_clips_and_nuisance_directions_are_accounted_for():
    x, corpus, classes = _clips(seed=2)
    speakers = np.array([f"{c}/{i % 5}" for i, c in enumerate(corpus)], dtype=object)
    labelled = classes.copy()
    labelled[::3] = -1  # a third unlabelled: left out of the covariance
    m = _model(nuisance_dims=2)
    m.fit_normalization(x, corpus, nuisance=speakers, classes=labelled)
    keep = labelled >= 0
    z = (x[keep].astype(np.float64) - m.norm_mean.double().numpy()) / m.norm_std.double().numpy()
    want = within_class_whitening(remove_directions(z, m.nuisance_basis.numpy()), labelled[keep])
    np.testing.assert_allclose(m.whiten_matrix.numpy(), want, atol=1e-5)


def test_rows_read_on_demand_give_the_whitening_of_the_array():
    class Rows(RowSource):
        def __init__(self, x):
            self.x, self.shape = x, x.shape

        def __getitem__(self, idx):
            return self.x[idx]

    x, corpus, classes = _clips(seed=3)
    a, b = _model(), _model()
    a.fit_normalization(x, corpus, classes=classes)
    b.fit_normalization(Rows(x), corpus, classes=classes)
    for name in ("whiten_matrix", "audio_mean", "audio_std"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=1e-5, atol=1e-5)
    # the row source that fits the standardiser applies the matrix as it reads
    got = np.asarray(Projected(x, None, a.whiten_matrix.numpy()))
    np.testing.assert_allclose(got, x.astype(np.float64) @ a.whiten_matrix.double().numpy(), atol=1e-4)
    mean, _ = moments(Projected(x, None, a.whiten_matrix.numpy()))
    np.testing.assert_allclose(mean[0], got.mean(0), atol=1e-5)


def test_settings_and_refusals():
    assert load_config(None, ["model.whiten=within-class"]).model.whiten == "within-class"
    with pytest.raises(ConfigError, match="model.whiten"):
        load_config(None, ["model.whiten=pca"])
    x, corpus, classes = _clips()
    with pytest.raises(ValueError, match="emotion"):
        _model().fit_normalization(x, corpus)  # no classes given
    with pytest.raises(BadInputError, match="two emotions"):
        _model().fit_normalization(x, corpus, classes=np.zeros(len(x), dtype=int))
    # a model without whitening has no matrix (older model folders load as before)
    assert "whiten_matrix" not in _model(whiten="none").state_dict()


def test_a_run_whitens_with_its_labels(synth_table, shared_cache):
    """Through the trainer: the labels of the training table reach the fit, and the trained model's
    matrix whitens its training clips' single-clip features."""
    from smoothclap.trainer import prepare, train

    cfg = load_config(None, ["train.epochs=1", "train.batch_size=8", "model.embed_dim=16",
                             "model.feature_norm_group=speaker", "model.whiten=within-class"])
    prep = prepare(cfg, synth_table, cache_dir=shared_cache, progress=False)
    model = train(cfg, prep, run_dir=None, progress=False).model
    raw = np.asarray(prep.audio, dtype=np.float64)
    z = (raw - model.norm_mean.double().cpu().numpy()) / model.norm_std.double().cpu().numpy()
    want = within_class_whitening(z, prep.label_ids)
    np.testing.assert_allclose(model.whiten_matrix.cpu().numpy(), want, atol=1e-4)
    assert not np.allclose(want, np.eye(len(want)), atol=1e-2)
