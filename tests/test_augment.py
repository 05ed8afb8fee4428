"""Augmentation in cached mode (``train.augment_views``): views of a clip are deterministic, each
effect alters the waveform, views are embedded once (cached) and trained on as extra rows, and the
feature statistics come from the clips as recorded."""
from __future__ import annotations

import numpy as np
import pytest

from smoothclap.augment import KINDS, Augmentation, views
from smoothclap.config import ConfigError, load_config
from smoothclap.embed import preprocessing_key
from smoothclap.errors import BadInputError

SR = 16000


def _wave(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.3 * rng.standard_normal(len(t)))).astype(np.float32)


def test_a_view_is_seeded_by_the_clip_and_the_view():
    w = _wave()
    a1, a2 = views(KINDS, 2)
    assert np.array_equal(a1(w, SR, "abc"), a1(w, SR, "abc"))  # the same clip's view 1, every time
    assert not np.array_equal(a1(w, SR, "abc")[:8000], a2(w, SR, "abc")[:8000])  # view 2 is another
    assert not np.array_equal(a1(w, SR, "abc")[:8000], a1(w, SR, "abd")[:8000])  # another clip: other draws
    assert a1.key == "speed+reverb+noise+level#1"
    assert Augmentation(("level", "speed"), 1).key == "speed+level#1"  # canonical order


@pytest.mark.parametrize("kind", KINDS)
def test_each_effect_alters_the_wave_and_stays_finite(kind):
    w = _wave(seed=1)
    out = Augmentation((kind,), 1)(w, SR, "clip")
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    if kind == "speed":
        assert len(w) / 1.1 - 2 <= len(out) <= len(w) / 0.9 + 2 and len(out) != len(w)
    else:
        assert len(out) == len(w) and not np.allclose(out, w, atol=1e-4)
    if kind == "reverb":  # the room keeps the level
        assert np.sqrt(np.mean(out**2)) == pytest.approx(np.sqrt(np.mean(w.astype(np.float64) ** 2)), rel=1e-3)
    if kind == "level":
        assert np.max(np.abs(out)) <= 1.0


def test_bad_effects_and_view_numbers_are_refused():
    with pytest.raises(ValueError, match="echo"):
        Augmentation(("echo",), 1)
    with pytest.raises(ValueError, match="numbered from 1"):
        Augmentation(("noise",), 0)


def test_a_view_has_its_own_cache_key_and_clips_as_recorded_keep_theirs():
    assert preprocessing_key(SR, None) == "sr=16000|loud=none"  # unchanged: existing caches stay valid
    k1, k2 = (preprocessing_key(SR, "rms:-23", a) for a in views(["noise"], 2))
    assert k1 != k2 and k1.startswith("sr=16000|loud=rms:-23|aug=")


def test_config_checks_the_views():
    cfg = load_config(None, ["train.augment_views=2"])
    assert cfg.train.augment_views == 2 and cfg.train.augment == list(KINDS)
    with pytest.raises(ConfigError, match="train.mode"):
        load_config(None, ["train.augment_views=1", "train.mode=e2e"])
    with pytest.raises(ConfigError, match="train.augment"):
        load_config(None, ["train.augment_views=1", "train.augment=[]"])
    with pytest.raises(ConfigError, match="train.augment"):
        load_config(None, ["train.augment=[echo]"])


@pytest.mark.parametrize("fallback", ["pooled", "shrunk"])
def test_fit_rows_take_the_statistics_from_the_clips_as_recorded(fallback):
    """Views far from their clips (offset 5) change no statistic, yet are normalised with them."""
    from smoothclap.model import SmoothClapConfig, SmoothClapModel

    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 4)).astype(np.float32) + np.repeat([[0.0], [3.0]], 15, axis=0).astype(np.float32)
    groups = np.array(["a"] * 15 + ["b"] * 15, dtype=object)
    xv = np.concatenate([x, x + 5]).astype(np.float32)

    def fitted(raw, g, rows=None):
        m = SmoothClapModel(SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6", audio_dim=4,
                                             text_dim=4, embed_dim=8, feature_norm_group="corpus",
                                             fallback_stats=fallback, standardize_audio=True))
        out = m.fit_normalization(raw, g, rows)
        return m, np.asarray(out)

    m0, out0 = fitted(x, groups)
    m1, out1 = fitted(xv, np.concatenate([groups, groups]), np.arange(60) < 30)
    for name in ("norm_mean", "norm_std", "audio_mean", "audio_std"):
        assert torch_equal(getattr(m0, name), getattr(m1, name)), name
    np.testing.assert_array_equal(out1[:30], out0)
    assert (out1[30:] > out0 + 1).all()  # the views keep their offset
    with pytest.raises(ValueError, match="without rows"):
        fitted(xv, np.concatenate([groups, np.array(["c"] * 30, dtype=object)]), np.arange(60) < 30)


def _run(synth_root, cache, out, extra):
    from smoothclap.trainer import run_training

    base = [f"data.manifest={synth_root / 'manifest.csv'}", "train.epochs=1", "train.batch_size=8",
            "model.embed_dim=16", f"cache_dir={cache}", f"out_dir={out}"]
    return run_training(load_config(None, base + list(extra)), progress=False)


def test_views_are_embedded_once_and_trained_on_as_extra_rows(synth_root, shared_cache, tmp_path, monkeypatch):
    calls = []
    real = Augmentation.__call__
    monkeypatch.setattr(Augmentation, "__call__", lambda self, *a: calls.append(self.view) or real(self, *a))
    plain = _run(synth_root, shared_cache, tmp_path / "plain", [])
    aug = _run(synth_root, shared_cache, tmp_path / "aug", ["train.augment_views=2"])
    n = len(plain.prepared.table)
    t = aug.prepared.table
    assert len(t) == 3 * n and sorted(set(t["augment_view"])) == [0, 1, 2]
    assert len(calls) == 2 * n  # each clip's two views, once each
    for v in (1, 2):  # a view keeps its clip's label, speaker and file; its features are its own
        block = t[t["augment_view"] == v].reset_index(drop=True)
        for col in ("file", "label", "speaker"):
            assert block[col].tolist() == plain.prepared.table[col].tolist()
    a = aug.prepared.audio
    assert np.array_equal(a[:n], plain.prepared.audio)
    assert not np.allclose(a[n : 2 * n], a[:n], atol=1e-3) and not np.allclose(a[n : 2 * n], a[2 * n :], atol=1e-3)
    # the feature statistics are those of the clips as recorded
    for name in ("norm_mean", "norm_std", "audio_mean", "audio_std"):
        assert torch_equal(getattr(aug.result.model, name), getattr(plain.result.model, name)), name
    calls.clear()
    again = _run(synth_root, shared_cache, tmp_path / "again", ["train.augment_views=2"])
    assert calls == [] and np.array_equal(again.prepared.audio, a)  # from the cache


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_augmented_views_need_the_in_memory_bundle(synth_root, shared_cache, tmp_path):
    with pytest.raises(BadInputError, match="train.augment_views"):
        _run(synth_root, shared_cache, tmp_path / "disk", ["train.augment_views=1", "train.bundle=disk",
                                                           "captions.variables=[]"])


def test_single_clip_rows_are_normalised_as_clips_of_an_unseen_group():
    """`train.single_clip_rows`: a copy of a row of group g is z-scored with the fallback statistics
    of the other groups (what a clip of a new corpus gets), and changes no stored statistic."""
    from smoothclap.model import SmoothClapConfig, SmoothClapModel
    from smoothclap.normalize import fallback_from_groups

    rng = np.random.default_rng(1)
    offsets = np.repeat([[0.0], [3.0], [-2.0]], 10, axis=0)
    x = (rng.standard_normal((30, 4)) * np.repeat([[1.0], [2.0], [0.5]], 10, axis=0) + offsets).astype(np.float32)
    groups = np.array(["a"] * 10 + ["b"] * 10 + ["c"] * 10, dtype=object)
    for how in ("pooled", "groups", "shrunk"):
        cfg = SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6", audio_dim=4, text_dim=4,
                               embed_dim=8, feature_norm_group="corpus", fallback_stats=how)
        plain, doubled = SmoothClapModel(cfg), SmoothClapModel(cfg)
        out0 = np.asarray(plain.fit_normalization(x, groups))
        out = np.asarray(doubled.fit_normalization(np.concatenate([x, x]), np.concatenate([groups, groups]),
                                                   np.arange(60) < 30, np.arange(60) >= 30))
        assert torch_equal(plain.norm_mean, doubled.norm_mean) and torch_equal(plain.norm_std, doubled.norm_std)
        np.testing.assert_array_equal(out[:30], out0)
        x64 = x.astype(np.float64)
        for g, rows in (("a", slice(0, 10)), ("b", slice(10, 20)), ("c", slice(20, 30))):
            others = [r for r in (slice(0, 10), slice(10, 20), slice(20, 30)) if r != rows]
            m, s = fallback_from_groups(np.stack([x64[r].mean(0) for r in others]),
                                        np.stack([x64[r].std(0) for r in others]), np.array([10, 10]), how)
            np.testing.assert_allclose(out[30:][rows], (x64[rows] - m) / s, rtol=1e-5, atol=1e-5)
        if how == "pooled":  # the formula from group moments equals the pooled moments of those clips
            both = np.concatenate([x64[10:20], x64[20:30]])
            m, s = fallback_from_groups(np.stack([x64[10:20].mean(0), x64[20:30].mean(0)]),
                                        np.stack([x64[10:20].std(0), x64[20:30].std(0)]), np.array([10, 10]), how)
            np.testing.assert_allclose(m, both.mean(0), rtol=1e-12)
            np.testing.assert_allclose(s, both.std(0), rtol=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        SmoothClapModel(cfg).fit_normalization(np.concatenate([x, x]), np.array(["a"] * 60, dtype=object),
                                               np.arange(60) < 30, np.arange(60) >= 30)


def test_single_clip_rows_in_a_run(synth_table, shared_cache, tmp_path):
    """Every row twice (the copy marked), the model's statistics those of the plain run, and the
    setting refused without groups."""
    from smoothclap.trainer import prepare, train

    table = synth_table.copy()
    table["corpus"] = np.where(table["speaker"].astype(str).isin(sorted(set(table["speaker"].astype(str)))[:2]),
                               "one", "two")
    base = ["train.epochs=1", "train.batch_size=8", "model.embed_dim=16", "model.feature_norm_group=corpus",
            "model.fallback_stats=shrunk"]
    plain_cfg = load_config(None, base)
    cfg = load_config(None, base + ["train.single_clip_rows=true"])
    p0 = prepare(plain_cfg, table, cache_dir=shared_cache, progress=False)
    p1 = prepare(cfg, table, cache_dir=shared_cache, progress=False)
    n = len(p0.table)
    assert len(p1.table) == 2 * n and p1.table["as_unseen_group"].tolist() == [False] * n + [True] * n
    m0 = train(plain_cfg, p0, run_dir=None, progress=False).model
    m1 = train(cfg, p1, run_dir=None, progress=False).model
    assert torch_equal(m0.norm_mean, m1.norm_mean) and torch_equal(m0.norm_std, m1.norm_std)
    with pytest.raises(ConfigError, match="train.single_clip_rows"):
        load_config(None, ["train.single_clip_rows=true"])
