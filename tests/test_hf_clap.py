"""hf-clap towers on tiny randomly initialised ClapModels (fused and unfused) saved offline."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from smoothclap.towers.hf_clap import (ClapAudioTower, ClapTextTower, build_hf_clap_tower, clap_logit_scale,
                                       load_clap)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_models import TEXTS, tiny_clap  # noqa: E402

SR = 16000
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_clap")
    return {"unfused": str(tiny_clap(root / "unfused", fusion=False, hub_layout=True)),
            "fused": str(tiny_clap(root / "fused", fusion=True)),
            "unfused_b": str(tiny_clap(root / "unfused_b", fusion=False, seed=1))}


def sig(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * (200 + 300 * rng.random()) * t * (1 + 0.1 * t)) + 0.05 * rng.standard_normal(len(t))
    return (x * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t) ** 2)).astype(np.float32)


CLIPS = {"short": sig(3.0, 0), "tiny": sig(0.4, 1), "long": sig(12.5, 2)}


def processor_output(bundle, wave16, seed=0):
    """Reference features: soxr to 48 kHz, then the processor with the global RNG seeded."""
    import soxr

    x48 = soxr.resample(wave16, SR, 48000).astype(np.float32)
    trunc = "fusion" if bundle.enable_fusion else "rand_trunc"
    np.random.seed(seed)
    return bundle.processor(audio=[x48], sampling_rate=48000, truncation=trunc, return_tensors="pt")


def direct(bundle, enc, is_longer=None) -> torch.Tensor:
    """Reference embedding: ClapModel.get_audio_features on the processor's output, L2-normalised."""
    is_longer = enc["is_longer"] if is_longer is None else torch.tensor([[is_longer]])
    with torch.no_grad():
        out = bundle.model.get_audio_features(input_features=enc["input_features"], is_longer=is_longer)
    emb = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(emb, dim=-1)


@pytest.mark.parametrize("kind", ["unfused", "fused"])
def test_shapes_and_unit_norm(folders, kind):
    audio, text = ClapAudioTower(folders[kind]), ClapTextTower(folders[kind])
    assert audio.spec == text.spec == f"hf-clap:{folders[kind]}"
    assert audio.dim == text.dim == 16 and audio.sample_rate == 16000
    a = audio.embed(list(CLIPS.values()))
    t = text.embed(TEXTS)
    assert a.shape == (3, 16) and t.shape == (3, 16) and a.dtype == t.dtype == torch.float32
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    assert audio.model is text.model  # one loaded model per checkpoint


@pytest.mark.parametrize("kind", ["unfused", "fused"])
def test_audio_equals_get_audio_features(folders, kind):
    tower = ClapAudioTower(folders[kind])
    fused = kind == "fused"
    got = {}
    for name in ("short", "long"):
        wave = CLIPS[name]
        enc = processor_output(tower.bundle, wave)
        assert enc["input_features"].shape == (1, 4 if fused else 1, 1001, 64)
        is_longer = None
        if name == "long":
            assert bool(enc["is_longer"]) and tower.is_longer(len(wave) * 3)
        elif fused:
            # the processor's random flip: a lone short clip is marked longer; the tower uses its real flag
            assert bool(enc["is_longer"]) and not tower.is_longer(len(wave) * 3)
            is_longer = False
        got[name] = tower.embed([wave])
        diff = (got[name] - direct(tower.bundle, enc, is_longer)).abs().max().item()
        assert diff <= 1e-5, (kind, name, diff)
    if fused:  # fuse_short reproduces the plain processor on one short clip, flip included
        ref = direct(tower.bundle, processor_output(tower.bundle, CLIPS["short"]))
        fs = ClapAudioTower(folders[kind], fuse_short=True).embed([CLIPS["short"]])
        assert (fs - ref).abs().max().item() <= 1e-5
        assert (fs - got["short"]).abs().max().item() > 1e-4  # the flag matters


def test_unfused_processor_with_fusion_truncation_is_overridden(folders, caplog):
    bundle = load_clap(folders["unfused"])
    assert bundle.feature_extractor.truncation == "fusion" and not bundle.enable_fusion  # hub layout, default
    with caplog.at_level(logging.WARNING, logger="smoothclap"):
        tower = ClapAudioTower(folders["unfused"])
    assert tower.truncation == "rand_trunc" and "truncation='fusion'" in caplog.text


@pytest.mark.parametrize("kind", ["unfused", "fused"])
def test_deterministic_and_rng_restored(folders, kind):
    tower = ClapAudioTower(folders[kind])
    np.random.seed(123)
    state = np.random.get_state()
    a = tower.embed([CLIPS["long"]])
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]
    np.random.seed(7)
    b = tower.embed([CLIPS["long"]])
    assert torch.equal(a, b)
    # another seed draws other crops of the long clip (so the seed is what makes it deterministic)
    c = ClapAudioTower(folders[kind], seed=1).embed([CLIPS["long"]])
    assert not torch.equal(a, c)


@pytest.mark.parametrize("kind", ["unfused", "fused"])
def test_batch_equals_one_by_one(folders, kind):
    tower = ClapAudioTower(folders[kind])
    waves = [CLIPS["short"], CLIPS["long"], CLIPS["tiny"]]
    batch = tower.embed(waves)
    single = torch.cat([tower.embed([w]) for w in waves])
    assert (batch - single).abs().max().item() <= 1e-4
    shorts = tower.embed([CLIPS["short"], CLIPS["tiny"]])  # no clip longer: no random flag
    assert (shorts - single[[0, 2]]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("kind", ["unfused", "fused"])
def test_text_equals_get_text_features(folders, kind):
    tower = ClapTextTower(folders[kind])
    bundle = tower.bundle
    enc = bundle.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = bundle.model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    ref = torch.nn.functional.normalize(out if isinstance(out, torch.Tensor) else out.pooler_output, dim=-1)
    got = tower.embed(TEXTS)
    assert (got - ref).abs().max().item() <= 1e-5
    single = torch.cat([tower.embed([t]) for t in TEXTS])
    assert (got - single).abs().max().item() <= 1e-4
    assert tower.max_length == 64  # min(tokenizer 64, 66 positions - pad id 1 - 1)
    assert tower.embed(["word " * 200]).shape == (1, 16)  # truncated, not an index error


def test_is_longer_matches_feature_extractor(folders):
    tower = ClapAudioTower(folders["fused"])
    fe = tower.bundle.feature_extractor
    if not hasattr(fe, "_get_input_mel"):
        pytest.skip("ClapFeatureExtractor._get_input_mel changed")
    m, hop = tower.max_samples, tower.hop
    for n in (m - 1, m, m + 1, m + hop - 1, m + hop, m + 3 * hop + 7):
        x = np.full(n, 0.01, dtype=np.float64)
        _, longer = fe._get_input_mel(x, m, "fusion", fe.padding)
        assert tower.is_longer(n) == longer, n


def test_cache_key(folders):
    a, b = ClapAudioTower(folders["unfused"]), ClapAudioTower(folders["unfused_b"])
    assert a.cache_key != b.cache_key
    assert a.cache_key == ClapAudioTower(folders["unfused"]).cache_key
    assert "sha1:" in a.cache_key and a.bundle.weights_id in a.cache_key
    ta, tb = ClapTextTower(folders["unfused"]), ClapTextTower(folders["unfused_b"])
    assert ta.cache_key != tb.cache_key and ta.cache_key != a.cache_key
    assert ClapAudioTower(folders["unfused"], seed=1).cache_key != a.cache_key


def test_missing_folder_is_oserror(tmp_path):
    missing = tmp_path / "no_such_clap"
    with pytest.raises(OSError, match="no_such_clap.*local folder"):
        load_clap(str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OSError, match="empty.*local folder"):
        load_clap(str(empty))


def test_logit_scale_and_builder(folders):
    bundle = load_clap(folders["fused"])
    assert clap_logit_scale(bundle) == pytest.approx(20.0, rel=1e-6)
    assert clap_logit_scale(bundle, "text") == pytest.approx(10.0, rel=1e-6)
    spec = f"hf-clap:{folders['fused']}"
    assert isinstance(build_hf_clap_tower(folders["fused"], {"modality": "audio"}, spec), ClapAudioTower)
    t = build_hf_clap_tower(folders["fused"], {"max_length": "8"}, spec, modality="text")
    assert isinstance(t, ClapTextTower) and t.max_length == 8 and t.model is bundle.model
    with pytest.raises(ValueError, match="modality"):
        build_hf_clap_tower(folders["fused"], {}, spec)
    with pytest.raises(ValueError, match="empty"):
        ClapAudioTower(folders["fused"]).embed([np.zeros(0, np.float32)])


def test_unreachable_hub_id_is_oserror(monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # fail fast instead of retrying the network
    if not getattr(hub_constants, "is_offline_mode", lambda: True)():
        pytest.skip("cannot switch huggingface_hub to offline mode in-process")
    with pytest.raises(OSError, match="nobody-here/no-such-clap.*hub id"):
        load_clap("nobody-here/no-such-clap")
