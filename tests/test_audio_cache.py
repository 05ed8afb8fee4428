"""Audio reading (bad input cases), the embedding cache and the embed pipeline's skip handling."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from smoothclap.audio import read_audio
from smoothclap.cache import EmbeddingCache
from smoothclap.embed import embed_audio_files, embed_texts
from smoothclap.errors import BadInputError, SkipLog
from smoothclap.towers.base import AudioTower, TextTower


def _tone(sr=16000, sec=1.0, f=220.0, amp=0.3):
    t = np.arange(int(sr * sec)) / sr
    return (amp * np.sin(2 * np.pi * f * t)).astype(np.float32)


def test_any_rate_any_channels(tmp_path):
    stereo = np.stack([_tone(44100), _tone(44100, f=330)], axis=1)
    p = tmp_path / "st.flac"
    sf.write(p, stereo, 44100)
    w = read_audio(p)
    assert w.ndim == 1 and w.dtype == np.float32 and abs(len(w) - 16000) <= 2


@pytest.mark.parametrize("case,reason", [
    ("missing", "file not found"), ("empty", "empty file"), ("garbage", "unreadable audio"),
    ("silent", "silent"), ("short", "too short"), ("nan", "NaN"),
])
def test_bad_audio_names_file_and_reason(tmp_path, case, reason):
    p = tmp_path / f"{case}.wav"
    if case == "empty":
        p.write_bytes(b"")
    elif case == "garbage":
        p.write_bytes(b"RIFF not really a wave file" * 10)
    elif case == "silent":
        sf.write(p, np.zeros(16000, np.float32), 16000)
    elif case == "short":
        sf.write(p, _tone(sec=0.05), 16000)
    elif case == "nan":
        x = _tone()
        x[100] = np.nan
        sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(BadInputError) as ei:
        read_audio(p)
    assert str(p) in str(ei.value) and reason in str(ei.value)


class CountingTower(AudioTower):
    spec = "counting-test"
    dim = 3

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.batches = []

    def forward_waves(self, waves):
        self.calls += len(waves)
        self.batches.append([len(w) for w in waves])
        return torch.tensor([[len(w), float(np.abs(w).mean()), 1.0] for w in waves])


def test_embed_cache_reuse_sorting_and_skip(tmp_path):
    files = []
    for i, sec in enumerate([1.0, 0.5, 2.0, 0.7]):
        p = tmp_path / f"a{i}.wav"
        sf.write(p, _tone(sec=sec, f=200 + 50 * i), 16000)
        files.append(str(p))
    bad = tmp_path / "silent.wav"
    sf.write(bad, np.zeros(8000, np.float32), 16000)
    tower = CountingTower()
    with pytest.raises(BadInputError, match="silent"):
        embed_audio_files(tower, files + [str(bad)], cache_dir=tmp_path / "c", progress=False)
    tower = CountingTower()
    skip = SkipLog(skip=True)
    emb, ok = embed_audio_files(tower, files + [str(bad)], cache_dir=tmp_path / "c", batch_size=2,
                                skip=skip, progress=False)
    assert ok.tolist() == [True, True, True, True, False] and skip.count == 1
    assert np.isnan(emb[4]).all() and emb[2, 0] == 32000
    # length-sorted batches: each batch's clips are no longer than the next batch's
    flat = [n for b in tower.batches for n in b]
    assert flat == sorted(flat)
    # a second run reads everything from the cache
    t2 = CountingTower()
    emb2, ok2 = embed_audio_files(t2, files, cache_dir=tmp_path / "c", progress=False)
    assert t2.calls == 0
    np.testing.assert_array_equal(emb2, emb[:4])
    # changing the file's content invalidates its entry
    sf.write(files[0], _tone(sec=1.0, f=900), 16000)
    t3 = CountingTower()
    embed_audio_files(t3, files, cache_dir=tmp_path / "c", progress=False)
    assert t3.calls == 1


def test_cache_atomic_and_corrupt_entries(tmp_path):
    c = EmbeddingCache(tmp_path, "tower-x")
    c.put("ab" * 20, np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(c.get("ab" * 20), np.arange(4))
    assert not list(tmp_path.rglob("*.tmp"))
    # a torn file is treated as missing (recomputed), never trusted
    c._path("cd" * 20).parent.mkdir(parents=True, exist_ok=True)
    c._path("cd" * 20).write_bytes(b"\x93NUMPY garbage")
    assert c.get("cd" * 20) is None
    assert EmbeddingCache(None, "t").get("ab" * 20) is None


class EchoText(TextTower):
    spec = "echo-text"
    dim = 2

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward_texts(self, texts):
        self.seen.extend(texts)
        return torch.tensor([[len(t), t.count("a")] for t in texts], dtype=torch.float32)


def test_embed_texts_distinct_once(tmp_path):
    tower = EchoText()
    out = embed_texts(tower, ["aa", "b", "aa", "ccc", "b"], cache_dir=tmp_path, progress=False)
    assert sorted(tower.seen) == ["aa", "b", "ccc"]
    assert out.shape == (5, 2) and out[0, 1] == 2 and (out[0] == out[2]).all()
    tower2 = EchoText()
    embed_texts(tower2, ["aa", "ccc"], cache_dir=tmp_path, progress=False)
    assert tower2.seen == []


def test_loudness_normalisation(tmp_path):
    p = tmp_path / "quiet.wav"
    sf.write(p, _tone(amp=0.01), 16000)
    raw = read_audio(p)
    peak = read_audio(p, loudness="peak")
    rms = read_audio(p, loudness="rms:-23")
    assert abs(20 * np.log10(np.abs(peak).max()) + 1) < 0.01
    assert abs(20 * np.log10(np.sqrt(np.mean(rms.astype(np.float64) ** 2))) + 23) < 0.05
    np.testing.assert_allclose(rms / np.abs(rms).max(), raw / np.abs(raw).max(), atol=1e-5)
    with pytest.raises(ValueError, match="loudness"):
        read_audio(p, loudness="lufs")
