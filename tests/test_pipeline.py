"""End to end on CPU: synthetic corpus -> eGeMAPS captions -> cached towers -> training -> zero-shot.

Uses the real bundled towers (Whisper tiny.en rebuild, MiniLM) and openSMILE, on a tiny espeak-ng
corpus, the way open_clip tests training on synthetic data.
"""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("opensmile")

from smoothclap.config import RunConfig, loss_preset  # noqa: E402
from smoothclap.errors import BadInputError, SkipLog  # noqa: E402
from smoothclap.evaluate import zero_shot_evaluate  # noqa: E402
from smoothclap.model import SmoothClapModel  # noqa: E402
from smoothclap.trainer import prepare  # noqa: E402
from smoothclap.trainer import train  # noqa: E402


@pytest.fixture
def corpus(synth_table):
    return synth_table


@pytest.fixture
def cache(shared_cache):
    return shared_cache


def _cfg(cache, **loss):
    cfg = RunConfig()
    cfg.train.epochs = 4
    cfg.train.batch_size = 8
    cfg.model.embed_dim = 32
    cfg.cache_dir = str(cache)
    cfg.loss = loss_preset("smoothclap-reconstructed", **loss)
    return cfg


def test_prepare_train_evaluate(corpus, cache, tmp_path, monkeypatch):
    cfg = _cfg(cache)
    prep = prepare(cfg, corpus, cache_dir=cache, progress=False)
    n = len(corpus)
    assert prep.audio.shape == (n, 384) and prep.caption_emb.shape[1] == 384
    assert prep.desc_emb.shape == (n, 384) and prep.local.shape == (n, 384)
    assert len(prep.caption_index) == cfg.train.epochs and all(len(ix) == n for ix in prep.caption_index)
    # captions name the emotion and paralinguistic phrases; descriptions do not name the emotion
    caps = [prep.caption_texts[i] for i in prep.caption_index[0]]
    assert all(lab in c for lab, c in zip(prep.table["label"], caps))
    assert not any(lab in d.split(", ") for lab, d in zip(prep.table["label"], prep.desc_texts))
    assert any("pitch" in d for d in prep.desc_texts)

    # second preparation: every tower output comes from the cache (towers must not run)
    from smoothclap.towers import build_tower

    def boom(*a, **k):
        raise AssertionError("tower ran although everything is cached")

    monkeypatch.setattr(type(build_tower("whisper-tiny-en")), "forward_waves", boom)
    monkeypatch.setattr(type(build_tower("minilm-l6")), "forward_texts", boom)
    import smoothclap.egemaps as paraling

    monkeypatch.setattr(paraling, "_extract_one", boom)
    prep2 = prepare(cfg, corpus, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(prep.audio, prep2.audio)
    np.testing.assert_array_equal(prep.caption_emb, prep2.caption_emb)
    monkeypatch.undo()

    res = train(cfg, prep, run_dir=tmp_path / "run", progress=False)
    assert len(res.history) == 4
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert 0 < res.history[0]["q_diag"] < 1 and res.history[0]["y_diag"] > 0.9 - 1e-6
    for f in ("config.yaml", "checkpoint.pt", "history.json", "model/config.json", "model/model.safetensors"):
        assert (tmp_path / "run" / f).exists(), f
    m2 = SmoothClapModel.from_pretrained(tmp_path / "run" / "model")
    assert m2.config.trained_on == ["synthetic"]
    ev = zero_shot_evaluate(m2, corpus, cache_dir=cache, progress=False)
    assert ev.metrics["n"] == n and 0.0 <= ev.metrics["uar"] <= 1.0
    assert np.asarray(ev.metrics["confusion"]).sum() == n
    probs = ev.predictions.filter(like="p_").to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_deterministic_and_resume(corpus, cache, tmp_path):
    cfg = _cfg(cache)
    prep = prepare(cfg, corpus, cache_dir=cache, progress=False)
    a = train(cfg, prep, run_dir=None, progress=False)
    b = train(cfg, prep, run_dir=None, progress=False)
    for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), k

    class Stop(Exception):
        pass

    def interrupt(epoch, rec, model):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, prep, run_dir=tmp_path / "r", progress=False, callback=interrupt)
    resumed = train(cfg, prep, run_dir=tmp_path / "r", progress=False)
    assert resumed.resumed_from_epoch == 2
    for (k, x), (_, y) in zip(a.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(x, y), k
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in a.history]


def test_clap_and_smoothclap_differ_only_in_targets(corpus, cache):
    cfg = _cfg(cache)
    prep = prepare(cfg, corpus, cache_dir=cache, progress=False)
    clap = train(cfg.updated({"loss": loss_preset("clap")}), prep, progress=False)
    smooth = train(cfg, prep, progress=False)
    assert all(h["y_diag"] == 1.0 for h in clap.history)
    assert all(h["y_diag"] < 1.0 for h in smooth.history)
    assert not torch.equal(clap.model.audio_head.linear1.weight, smooth.model.audio_head.linear1.weight)


def test_feature_norm_group_recorded_and_applied(corpus, cache):
    cfg = _cfg(cache)
    cfg.model.feature_norm_group = "speaker"
    prep = prepare(cfg, corpus, cache_dir=cache, progress=False)
    res = train(cfg, prep, progress=False)
    # the model must remember it, or test clips are scored without the normalisation
    assert res.model.config.feature_norm_group == "speaker"
    # it normalises the training clips per speaker, with each speaker's own statistics
    from smoothclap.trainer.bundle import norm_groups

    x = res.model.normalize_audio_features(prep.audio, norm_groups(cfg, prep)).numpy()
    for spk in prep.table["speaker"].unique():
        m = (prep.table["speaker"] == spk).to_numpy()
        np.testing.assert_allclose(x[m].mean(0), 0, atol=1e-4)
    raw = prep.audio  # the bundle holds the towers' raw features; the model normalises them
    ev = zero_shot_evaluate(res.model, corpus, features=raw, progress=False)
    from smoothclap.zeroshot import ZeroShotClassifier

    clf = ZeroShotClassifier(res.model, ev.metrics["labels"])
    _, p_norm = clf.predict_features(raw, corpus["speaker"].astype(str).to_numpy())
    _, p_raw = clf.predict_features(raw)  # no groups: the stored training statistics instead
    got = ev.predictions.filter(like="p_").to_numpy()
    np.testing.assert_allclose(got, p_norm, atol=1e-5)
    assert not np.allclose(got, p_raw, atol=1e-3)


def test_bad_files_skipped_and_counted(corpus, cache, tmp_path):
    import soundfile as sf

    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    bad = pd.DataFrame({"file": [str(silent), str(empty), str(tmp_path / "missing.wav")],
                        "label": ["sad", "sad", "sad"]})
    table = pd.concat([corpus, bad], ignore_index=True)
    cfg = _cfg(cache)
    with pytest.raises(BadInputError, match="silent.wav: silent"):
        prepare(cfg, pd.concat([corpus, bad.iloc[:1]], ignore_index=True), cache_dir=cache, progress=False)
    with pytest.raises(BadInputError, match="empty.wav: empty"):
        prepare(cfg, pd.concat([corpus, bad.iloc[1:2]], ignore_index=True), cache_dir=cache, progress=False)
    with pytest.raises(BadInputError, match="missing.wav: file not found"):
        prepare(cfg, table, cache_dir=cache, progress=False)
    skip = SkipLog(skip=True)
    prep = prepare(cfg, table, cache_dir=cache, progress=False, skip=skip)
    assert len(prep.table) == len(corpus)
    assert skip.count >= 3
    assert {str(silent), str(empty)} <= {p for p, _ in skip.items}


def test_training_stores_neutral_statistics_and_old_checkpoints_load(corpus, cache):
    """With feature normalisation, training stores where the neutral clips sit within their group
    (for ``smoothclap adapt --reference neutral``); a checkpoint written before those statistics
    existed still loads, keeping the ones just fitted."""
    from smoothclap.trainer.loop import Trainer

    cfg = _cfg(cache)
    cfg.model.feature_norm_group, cfg.train.epochs = "corpus", 1
    prep = prepare(cfg, corpus, cache_dir=cache, progress=False)
    res = train(cfg, prep, progress=False)
    x = np.asarray(prep.audio, dtype=np.float64)
    neutral = (prep.table["label"].astype(str) == "neutral").to_numpy()
    assert neutral.sum() >= cfg.model.min_group_clips  # one group, enough neutral clips
    off, scale = res.model.neutral_statistics()
    np.testing.assert_allclose(off, (x[neutral].mean(0) - x.mean(0)) / x.std(0), atol=1e-4)
    np.testing.assert_allclose(scale, x[neutral].std(0) / x.std(0), rtol=1e-4)
    tr = Trainer(cfg, prep)
    ck = tr.state(1, [], "fp", None)
    ck["model"] = {k: v for k, v in ck["model"].items() if not k.startswith("neutral_")}
    again = Trainer(cfg, prep)
    again.load(ck)  # no "missing keys" error
    for k in ("neutral_offset", "neutral_scale"):
        assert torch.equal(getattr(again.model, k), getattr(res.model, k))
