"""eGeMAPS extraction (smoothclap.egemaps): cached, parallel, bad input; and the whole chain
features -> bins -> captions."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from smoothclap import egemaps as paraling
from smoothclap.bins import ParalingBinner
from smoothclap.captions import CaptionBuilder
from smoothclap.egemaps import extract_egemaps
from smoothclap.errors import BadInputError, SkipLog


try:
    import opensmile  # noqa: F401

    HAVE_OPENSMILE = True
except ImportError:  # pragma: no cover
    HAVE_OPENSMILE = False

needs_opensmile = pytest.mark.skipif(not HAVE_OPENSMILE, reason="opensmile not installed (smoothclap[egemaps])")

SR = 16000
F0_COL = "F0semitoneFrom27.5Hz_sma3nz_amean"
LOUD_COL = "loudness_sma3_amean"



def _voice(f0: float, amp: float, seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """Harmonic tone with slight vibrato, syllable-like envelope and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t) ** 2
    x = amp * env * x / np.max(np.abs(x)) + 0.003 * amp * rng.standard_normal(len(t))
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    spec = {"low": (120.0, 0.1, 1.5), "high": (240.0, 0.1, 1.5), "loud": (120.0, 0.5, 2.0), "mid": (170.0, 0.2, 1.0)}
    out = {}
    for i, (name, (f0, amp, sec)) in enumerate(spec.items()):
        p = d / f"{name}.wav"
        sf.write(p, _voice(f0, amp, sec, seed=i), SR)
        out[name] = str(p)
    return out


@pytest.fixture(scope="module")
def bad_clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    missing = d / "missing.wav"
    empty = d / "empty.wav"
    empty.write_bytes(b"")
    silent = d / "silent.wav"
    sf.write(silent, np.zeros(SR, dtype=np.float32), SR)
    short = d / "short.wav"
    sf.write(short, _voice(150, 0.2, 0.1), SR)
    return {"missing": str(missing), "empty": str(empty), "silent": str(silent), "short": str(short)}


@pytest.fixture(scope="module")
def features(clips):
    if not HAVE_OPENSMILE:
        pytest.skip("opensmile not installed")
    return extract_egemaps(list(clips.values()), num_workers=1, progress=False)


def _count_smile_calls(monkeypatch):
    import opensmile

    calls = {"n": 0}
    orig = opensmile.Smile.process_signal

    def counting(self, *a, **k):
        calls["n"] += 1
        return orig(self, *a, **k)

    monkeypatch.setattr(opensmile.Smile, "process_signal", counting)
    return calls


# ------------------------------------------------------------------------------------------ extraction


@needs_opensmile
def test_extract_shape_and_values(features, clips):
    assert list(features.index) == list(clips.values())
    assert features.index.name == "file"
    assert features.shape == (4, 89)
    assert features.columns[-1] == "duration"
    assert len(features.columns[:-1]) == 88 and F0_COL in features.columns and LOUD_COL in features.columns
    assert np.isfinite(features.to_numpy()).all()
    f = features.rename(index={v: k for k, v in clips.items()})
    assert f.loc["high", F0_COL] > f.loc["low", F0_COL] + 6  # one octave = 12 semitones
    assert f.loc["loud", LOUD_COL] > f.loc["low", LOUD_COL]
    assert f.loc["low", "duration"] == pytest.approx(1.5)
    assert f.loc["loud", "duration"] == pytest.approx(2.0)
    for name in ("low", "high", "loud"):  # voicing found
        assert f.loc[name, F0_COL] > 20


@needs_opensmile
def test_extract_cache_hit_skips_opensmile(clips, features, tmp_path, monkeypatch):
    files = list(clips.values())
    calls = _count_smile_calls(monkeypatch)
    # an "interrupted" first run that finished only two files
    part = extract_egemaps(files[:2], cache_dir=tmp_path, num_workers=1, progress=False)
    assert calls["n"] == 2
    full = extract_egemaps(files, cache_dir=tmp_path, num_workers=1, progress=False)
    assert calls["n"] == 4  # only the two new clips were extracted
    again = extract_egemaps(files, cache_dir=tmp_path, num_workers=2, progress=False)
    assert calls["n"] == 4  # nothing extracted the second time
    pd.testing.assert_frame_equal(again, full)
    pd.testing.assert_frame_equal(full, features)
    pd.testing.assert_frame_equal(part, features.iloc[:2])
    cache = paraling.feature_cache(tmp_path)
    assert cache.dir.name == "eGeMAPSv02-" + paraling.PREPROC_VERSION
    assert len(cache) == 4 and cache.stats()["records"] == 4  # each clip written once
    assert not list(tmp_path.rglob("*.tmp"))
    # the cache is keyed by content: a copy under another name hits it too
    copy = tmp_path / "copy_of_low.wav"
    copy.write_bytes(open(files[0], "rb").read())
    got = extract_egemaps([copy], cache_dir=tmp_path, num_workers=1, progress=False)
    assert calls["n"] == 4
    assert got.index[0] == str(copy)
    np.testing.assert_array_equal(got.to_numpy()[0], features.to_numpy()[0])
    # a corrupt entry is recomputed, not trusted
    (shard,) = cache.dir.glob("shards/*.npy")
    rows = np.load(shard, mmap_mode="r+", allow_pickle=False)  # a genuine .npy: flip one stored row
    rows[0] += 1.0
    rows.flush()
    del rows
    again = extract_egemaps(files, cache_dir=tmp_path, num_workers=1, progress=False)
    assert calls["n"] == 5
    pd.testing.assert_frame_equal(again, features)


@needs_opensmile
def test_extract_two_workers_same_as_one(clips, features):
    files = list(clips.values()) + [list(clips.values())[0]]  # duplicate: one row
    two = extract_egemaps(files, num_workers=2, progress=False)
    pd.testing.assert_frame_equal(two, features)


@needs_opensmile
@pytest.mark.parametrize("kind", ["missing", "empty", "silent", "short"])
def test_extract_bad_input_raises_naming_file(bad_clips, kind, tmp_path):
    with pytest.raises(BadInputError) as e:
        extract_egemaps([bad_clips[kind]], num_workers=1, progress=False)
    assert bad_clips[kind] in str(e.value)
    with pytest.raises(BadInputError) as e:  # the hashing (cache) path reports it just as well
        extract_egemaps([bad_clips[kind]], num_workers=1, progress=False, cache_dir=tmp_path)
    assert bad_clips[kind] in str(e.value)


@needs_opensmile
def test_extract_pool_error_keeps_finished_work(clips, bad_clips, features, tmp_path, monkeypatch):
    files = [clips["low"], clips["high"], bad_clips["silent"]]
    with pytest.raises(BadInputError) as e:
        extract_egemaps(files, num_workers=2, progress=False, cache_dir=tmp_path)
    assert bad_clips["silent"] in str(e.value) and "silent" in e.value.reason
    assert len(paraling.feature_cache(tmp_path)) == 2  # the good clips were cached before the error
    calls = _count_smile_calls(monkeypatch)
    got = extract_egemaps(files[:2], num_workers=1, progress=False, cache_dir=tmp_path)
    assert calls["n"] == 0
    pd.testing.assert_frame_equal(got, features.loc[files[:2]])


@needs_opensmile
@pytest.mark.parametrize("workers,use_cache", [(1, False), (2, True)])
def test_extract_bad_input_skipped_and_counted(clips, bad_clips, features, tmp_path, workers, use_cache):
    files = [clips["low"], bad_clips["missing"], bad_clips["empty"], clips["high"], bad_clips["silent"],
             bad_clips["short"]]
    skip = SkipLog(skip=True)
    df = extract_egemaps(files, num_workers=workers, progress=False, skip=skip,
                         cache_dir=tmp_path if use_cache else None)
    assert list(df.index) == [clips["low"], clips["high"]]
    pd.testing.assert_frame_equal(df, features.loc[[clips["low"], clips["high"]]])
    assert skip.count == 4
    assert sorted(p for p, _ in skip.items) == sorted(bad_clips.values())
    assert set(skip.by_reason()) == {"file not found", "empty file", "silent", "too short"}


@needs_opensmile
def test_extract_all_bad_skipped_gives_empty_frame(bad_clips):
    skip = SkipLog(skip=True)
    df = extract_egemaps(list(bad_clips.values()), num_workers=1, progress=False, skip=skip)
    assert len(df) == 0 and skip.count == 4


@needs_opensmile
def test_extract_nan_features_are_bad_input(clips, monkeypatch, tmp_path):
    import opensmile

    orig = opensmile.Smile.process_signal

    def nan_features(self, *a, **k):
        df = orig(self, *a, **k)
        df.iloc[0, 3] = np.nan
        return df

    monkeypatch.setattr(opensmile.Smile, "process_signal", nan_features)
    with pytest.raises(BadInputError, match="NaN") as e:
        extract_egemaps([clips["low"]], num_workers=1, progress=False, cache_dir=tmp_path)
    assert clips["low"] in str(e.value)
    assert not list(tmp_path.rglob("*.npy"))  # nothing bad is cached
    skip = SkipLog(skip=True)
    assert len(extract_egemaps([clips["low"]], num_workers=1, progress=False, skip=skip)) == 0
    assert skip.count == 1


@needs_opensmile
def test_extract_opensmile_failure_names_file(clips, monkeypatch):
    import opensmile

    def boom(self, *a, **k):
        raise RuntimeError("smile crashed")

    monkeypatch.setattr(opensmile.Smile, "process_signal", boom)
    with pytest.raises(BadInputError, match="feature extraction failed.*smile crashed") as e:
        extract_egemaps([clips["mid"]], num_workers=1, progress=False)
    assert e.value.path == clips["mid"]


def test_missing_opensmile_gives_install_hint(monkeypatch, clips):
    monkeypatch.setitem(sys.modules, "opensmile", None)  # makes `import opensmile` fail
    monkeypatch.setattr(paraling, "_SMILES", {})
    with pytest.raises(ImportError, match=r"smoothclap\[egemaps\]"):
        extract_egemaps([clips["low"]], num_workers=1, progress=False)


# ------------------------------------------------------------------------------------------ binning


@needs_opensmile
def test_end_to_end_features_to_captions(features, clips):
    binner = ParalingBinner(min_group_size=1).fit(features)
    bins = binner.transform(features)
    names = {v: k for k, v in clips.items()}
    pitch = {names[f]: b for f, b in bins["pitch"].items()}
    assert pitch["high"] == "high"
    assert bins.loc[features[F0_COL].idxmin(), "pitch"] == "low"
    loud = {names[f]: b for f, b in bins["loudness"].items()}
    assert loud["loud"] == "high"
    b = CaptionBuilder()
    caps = b.captions(bins, ["neutral"] * len(bins), rng=0)
    assert all("neutral" in c for c in caps)
    assert b.descriptions(bins)[list(names).index(clips["loud"])].split(", ")[2] == "loud"


@needs_opensmile
def test_cache_entries_found_without_column_list(clips, tmp_path, monkeypatch):
    """A run that ends on a bad file may leave entries but no columns.json (the pool's workers
    write entries, the parent writes the list): the next run must still use the entries."""
    files = [clips["low"], clips["high"]]
    first = extract_egemaps(files, num_workers=1, progress=False, cache_dir=tmp_path)
    (col,) = tmp_path.rglob("columns.json")
    col.unlink()
    calls = _count_smile_calls(monkeypatch)
    again = extract_egemaps(files, num_workers=1, progress=False, cache_dir=tmp_path)
    assert calls["n"] == 0
    pd.testing.assert_frame_equal(first, again)
    assert col.exists()
