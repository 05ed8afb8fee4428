"""Groups shrunk toward the clips scored with them (``model.group_shrink``): at test time a group of
n clips is z-scored with its mean and variance pulled toward those of all the clips given by s
clips' worth, on every path that normalises with groups (PyTorch model and ONNX runtime)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from smoothclap.config import ConfigError, SmoothClapConfig, load_config
from smoothclap.model import SmoothClapModel
from smoothclap.normalize import normalize_groups, shrunk_zscore, standardize

DIM = 6


def _clips(seed: int = 0):
    """``[60, DIM]`` features of three speakers (10, 20 and 30 clips) with their own offsets."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.array(["a", "b", "c"], dtype=object), [10, 20, 30])
    x = rng.normal(size=(60, DIM)) * rng.uniform(0.5, 2, DIM) + 3 * rng.normal(size=(3, DIM))[[0] * 10 + [1] * 20 + [2] * 30]
    return x.astype(np.float32), groups


def test_shrinking_interpolates_between_the_group_and_all_clips():
    x, g = _clips()
    x64 = x.astype(np.float64)
    got = shrunk_zscore(x, g, x, 16)
    for name, n in (("a", 10), ("b", 20), ("c", 30)):
        xs = x64[g == name]
        mu = (n * xs.mean(0) + 16 * x64.mean(0)) / (n + 16)
        sd = np.sqrt((n * xs.var(0) + 16 * x64.var(0)) / (n + 16))
        np.testing.assert_allclose(got[g == name], (xs - mu) / sd, rtol=1e-5, atol=1e-5)
    # no pull: each group's own z-score; a huge pull: every clip z-scored as one group
    np.testing.assert_allclose(shrunk_zscore(x, g, x, 0), standardize(x, "zscore", g), atol=1e-5)
    np.testing.assert_allclose(shrunk_zscore(x, g, x, 10**9), standardize(x, "zscore"), atol=1e-4)
    # a small group moves further toward the pooled statistics than a large one
    own = standardize(x, "zscore", g)
    assert np.abs(got - own)[g == "a"].mean() > np.abs(got - own)[g == "c"].mean()


def test_test_time_normalisation_uses_it_on_both_backends():
    x, g = _clips(seed=1)
    mean, std = np.zeros(DIM), np.ones(DIM)
    small = np.concatenate([g[:-3], np.array(["lone"] * 3, dtype=object)])  # a group below min_clips
    plain = normalize_groups(x, small, 8, mean, std)
    shrunk = normalize_groups(x, small, 8, mean, std, shrink=16)
    assert np.abs(shrunk - plain)[:-3].max() > 1e-2
    np.testing.assert_allclose(shrunk[-3:], plain[-3:])  # the small group keeps the stored statistics
    np.testing.assert_allclose(normalize_groups(x, None, 8, mean, std, shrink=16), x)  # no groups: stored ones

    cfg = SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6", audio_dim=DIM, text_dim=4,
                           embed_dim=4, feature_norm_group="speaker", group_shrink=16)
    model = SmoothClapModel(cfg)
    np.testing.assert_allclose(model.normalize_audio_features(x, small).numpy(), shrunk, atol=1e-6)
    from smoothclap.onnx_runtime import OnnxModel

    onnx_like = SimpleNamespace(config=cfg, arrays={"norm_mean": mean.astype(np.float32),
                                                    "norm_std": std.astype(np.float32)})
    np.testing.assert_allclose(OnnxModel.normalize_audio_features(onnx_like, x, small), shrunk, atol=1e-6)


def test_training_groups_keep_their_own_statistics():
    """The pull is a test-time estimate for groups that show few emotions: training statistics
    (and so the heads' inputs) are those of the unshrunk groups."""
    x, g = _clips(seed=2)
    a = SmoothClapModel(SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6", audio_dim=DIM,
                                         text_dim=4, embed_dim=4, feature_norm_group="speaker", group_shrink=16))
    b = SmoothClapModel(SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6", audio_dim=DIM,
                                         text_dim=4, embed_dim=4, feature_norm_group="speaker"))
    np.testing.assert_array_equal(np.asarray(a.fit_normalization(x, g)), np.asarray(b.fit_normalization(x, g)))
    for name in ("norm_mean", "norm_std", "audio_mean", "audio_std"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_setting_is_checked():
    assert load_config(None, ["model.group_shrink=16"]).model.group_shrink == 16
    with pytest.raises(ConfigError, match="model.group_shrink"):
        load_config(None, ["model.group_shrink=-1"])


def test_the_model_card_says_so():
    from smoothclap.hub import model_card

    cfg = SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6", audio_dim=DIM, text_dim=4,
                           feature_norm_group="speaker", group_shrink=16)
    assert "each group shrunk toward all the clips scored with it by 16 clips" in model_card(cfg)
    assert "shrunk toward" not in model_card(cfg.model_copy(update={"group_shrink": 0}))
