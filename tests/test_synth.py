"""Synthetic emotional-speech corpus (smoothclap.experiments.synth): layout, determinism, resume, acoustics, split."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from smoothclap.experiments import synth

needs_tools = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng and sox are not installed (apt-get install espeak-ng sox)",
)

TINY = dict(
    languages=("en", "de"),
    emotions=("neutral", "happy", "angry", "sad"),
    voices_per_language={"en": 2, "de": 1},  # en-us+m7 (train) and en+f3 (held out), de+m2
    sentences_per_voice={"en": 2, "de": 1},
    clips_per_combo=1,
    num_workers=2,
    progress=False,
)
N_TINY = 2 * 2 * 4 + 1 * 1 * 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are not installed (apt-get install espeak-ng sox)")
    out = tmp_path_factory.mktemp("synth0")
    df = synth.synthesize_corpus(out, seed=0, **TINY)
    return out, df


def _rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(x**2)) + 1e-12))


def _median_f0(x: np.ndarray, sr: int, fmin: float = 50.0, fmax: float = 450.0) -> float:
    """Crude autocorrelation F0: median over frames whose normalised peak exceeds 0.5.

    The frame's autocorrelation is divided by the window's, so long lags (low voices) are not
    penalised by the taper.
    """
    n, hop = int(0.06 * sr), int(0.01 * sr)
    lo, hi = int(sr / fmax), min(int(sr / fmin), n // 2)
    win = np.hanning(n)
    acw = np.correlate(win, win, "full")[n - 1 : n + hi]
    f0 = []
    for s in range(0, len(x) - n, hop):
        w = x[s : s + n] * win
        if np.sqrt(np.mean(w**2)) < 0.005:
            continue
        ac = np.correlate(w, w, "full")[n - 1 : n + hi] / acw
        ac = ac / (ac[0] + 1e-12)
        k = lo + int(np.argmax(ac[lo:hi]))
        if ac[k] > 0.5:
            f0.append(sr / k)
    return float(np.median(f0)) if f0 else float("nan")


# --------------------------------------------------------------------------------------------------
# with the tools
# --------------------------------------------------------------------------------------------------


@needs_tools
def test_manifest_and_files(corpus):
    out, df = corpus
    assert list(df.columns) == list(synth.MANIFEST_COLUMNS)
    for col in ("file", "label", "speaker", "gender", "language", "text", "sentence_id", "duration",
                "pitch", "range", "speed", "amplitude"):
        assert col in df.columns
    assert len(df) == N_TINY
    on_disk = pd.read_csv(out / "manifest.csv")
    assert list(on_disk.columns) == list(df.columns) and len(on_disk) == len(df)
    assert set(df.label) == {"neutral", "happy", "angry", "sad"}
    assert set(df.language) == {"en", "de"}
    assert set(df.gender) <= {"male", "female"}
    assert df.groupby("speaker").gender.nunique().eq(1).all()
    assert set(df.speaker) == {"en-us+m7", "en+f3", "de+m2"}
    for row in df.itertuples():
        p = out / row.file
        assert p.is_file()
        assert row.file.startswith(f"wav/{row.language}/{row.speaker}/")
        info = sf.info(str(p))
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        assert row.duration > 0.3
        assert abs(info.duration - row.duration) < 1e-3
        x, _ = sf.read(str(p), dtype="float32")
        assert np.isfinite(x).all() and 0.05 < np.abs(x).max() < 1.0
    # the sentence text belongs to the sentence id
    for row in df.itertuples():
        assert synth.SENTENCES[row.language][int(row.sentence_id[2:])] == row.text
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".tmp-*")) and not list(out.rglob(".raw-*"))


@needs_tools
def test_same_seed_identical_other_seed_differs(corpus, tmp_path):
    out, df = corpus
    df2 = synth.synthesize_corpus(tmp_path / "again", seed=0, **TINY)
    pd.testing.assert_frame_equal(df, df2)
    assert (out / "manifest.csv").read_bytes() == (tmp_path / "again" / "manifest.csv").read_bytes()
    for f in df.file:
        assert (out / f).read_bytes() == (tmp_path / "again" / f).read_bytes(), f
    df3 = synth.synthesize_corpus(tmp_path / "seed1", seed=1, **TINY)
    assert len(df3) == len(df)
    params = ["pitch", "range", "speed", "amplitude"]
    assert not df3[params].equals(df[params])
    assert set(df3.file).isdisjoint(df.file)  # file names carry a hash of the parameters
    a = (out / df.file.iloc[0]).read_bytes()
    b = (tmp_path / "seed1" / df3.file.iloc[0]).read_bytes()
    assert a != b


@needs_tools
def test_resume_does_not_rewrite(corpus):
    out, df = corpus
    before = {f: ((out / f).stat().st_mtime_ns, (out / f).stat().st_ino) for f in df.file}
    victim = out / df.file.iloc[3]
    victim.unlink()
    df2 = synth.synthesize_corpus(out, seed=0, **TINY)
    pd.testing.assert_frame_equal(df, df2)
    assert victim.is_file()
    for f, stamp in before.items():
        if out / f != victim:
            assert ((out / f).stat().st_mtime_ns, (out / f).stat().st_ino) == stamp, f


@needs_tools
def test_presets_move_acoustics(corpus):
    out, df = corpus
    feats = []
    for row in df.itertuples():
        x, sr = sf.read(str(out / row.file), dtype="float64")
        feats.append({"label": row.label, "speaker": row.speaker, "rms": _rms_db(x),
                      "f0": _median_f0(x, sr), "duration": row.duration})
    f = pd.DataFrame(feats)
    # within each speaker, so the comparison is not confounded by the voice
    by = f.groupby(["speaker", "label"]).mean(numeric_only=True)
    for spk in f.speaker.unique():
        s = by.loc[spk]
        assert s.loc["angry", "rms"] > s.loc["neutral", "rms"] > s.loc["sad", "rms"] + 1.0, spk
        assert s.loc["happy", "f0"] > s.loc["neutral", "f0"] > s.loc["sad", "f0"], spk
        assert s.loc["sad", "duration"] > s.loc["neutral", "duration"] > s.loc["angry", "duration"], spk
    assert by.xs("happy", level="label").f0.mean() > 1.2 * by.xs("sad", level="label").f0.mean()


@needs_tools
def test_split_on_generated_corpus(corpus):
    _, df = corpus
    s = synth.split_holdout(df)
    assert set(s.split) == {"train", "test_en", "test_de"}  # the default plan wastes nothing
    tr, te, de = (s[s.split == k] for k in ("train", "test_en", "test_de"))
    assert set(tr.language) == {"en"} and set(te.language) == {"en"} and set(de.language) == {"de"}
    assert set(tr.speaker).isdisjoint(te.speaker)
    assert set(tr.sentence_id).isdisjoint(te.sentence_id)
    assert set(te.speaker) <= set(synth.DEFAULT_HOLDOUT_VOICES)
    assert set(te.sentence_id) <= set(synth.DEFAULT_HOLDOUT_SENTENCES)
    assert len(de) == (df.language == "de").sum()
    assert "split" not in df.columns  # a copy, the input is untouched


# --------------------------------------------------------------------------------------------------
# without the tools
# --------------------------------------------------------------------------------------------------


def test_missing_tools_error(monkeypatch, tmp_path):
    real_which = shutil.which
    monkeypatch.setattr(synth.shutil, "which", lambda name: None if name == "espeak-ng" else real_which(name))
    with pytest.raises(synth.SynthToolMissingError, match="apt-get install espeak-ng sox"):
        synth.synthesize_corpus(tmp_path, progress=False)
    assert not (tmp_path / "manifest.csv").exists()


def test_builtin_tables():
    assert len(synth.SENTENCES["en"]) >= 40 and len(synth.SENTENCES["de"]) >= 25
    assert len(set(synth.SENTENCES["en"])) == len(synth.SENTENCES["en"])
    for lang, voices in synth.VOICES.items():
        assert len(voices) >= 6
        assert {v.gender for v in voices} == {"male", "female"}
        assert all(v.language == lang and v.id.split("+")[0].startswith(lang) for v in voices)
        assert len({v.id for v in voices}) == len(voices)
    assert set(synth.DEFAULT_EMOTIONS) <= set(synth.EMOTION_PRESETS)
    assert {"neutral", "happy", "angry", "sad", "fear", "bored"} <= set(synth.DEFAULT_EMOTIONS)
    en_ids = {v.id for v in synth.VOICES["en"]}
    assert set(synth.DEFAULT_HOLDOUT_VOICES) <= en_ids
    held = [synth._VOICE_BY_ID[v] for v in synth.DEFAULT_HOLDOUT_VOICES]
    assert {v.gender for v in held} == {"male", "female"}


def test_plan_is_deterministic_and_local():
    kw = dict(emotions=synth.DEFAULT_EMOTIONS, sentences_per_voice=3, seed=7)
    a = synth.plan_corpus(languages=("en", "de"), **kw)
    b = synth.plan_corpus(languages=("en", "de"), **kw)
    assert a == b
    # a clip's parameters do not depend on which other clips are requested
    only_en = synth.plan_corpus(languages=("en",), **kw)
    assert only_en == [s for s in a if s.voice.language == "en"]
    other = synth.plan_corpus(languages=("en", "de"), **{**kw, "seed": 8})
    assert [s.relpath() for s in a] != [s.relpath() for s in other]
    assert len({s.relpath() for s in a}) == len(a)
    # per-clip randomisation: the drawn pitch varies within an emotion but stays in its range
    happy = [s.pitch for s in a if s.label == "happy"]
    preset = synth.EMOTION_PRESETS["happy"].pitch
    assert len(set(happy)) > 5 and all(preset.lo <= p <= preset.hi for p in happy)


def test_plan_sentence_pools():
    plan = synth.plan_corpus(languages=("en",), sentences_per_voice=50, emotions=("neutral",))
    held_v, held_s = set(synth.DEFAULT_HOLDOUT_VOICES), set(synth.DEFAULT_HOLDOUT_SENTENCES)
    for s in plan:
        assert (s.voice.id in held_v) == (s.sentence_id in held_s)
    rnd = synth.plan_corpus(languages=("en",), sentences_per_voice=50, emotions=("neutral",),
                            sentence_plan="random")
    assert len(rnd) == len(synth.VOICES["en"]) * len(synth.SENTENCES["en"])


def test_plan_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown emotions"):
        synth.plan_corpus(emotions=("neutral", "ecstatic"))
    with pytest.raises(ValueError, match="unknown language"):
        synth.plan_corpus(languages=("fr",))
    with pytest.raises(ValueError, match="unknown 'en' voices"):
        synth.plan_corpus(languages=("en",), voices_per_language={"en": ["en-us+zz"]})
    with pytest.raises(ValueError, match="voices_per_language"):
        synth.plan_corpus(languages=("en",), voices_per_language=99)
    with pytest.raises(ValueError, match="clips_per_combo"):
        synth.plan_corpus(clips_per_combo=0)


def test_split_holdout_properties():
    rows = []
    for spk, lang in [("en-us+m7", "en"), ("en+f3", "en"), ("en+m8", "en"), ("de+m2", "de")]:
        for sid in ["en00", "en03", "en07", "en08"] if lang == "en" else ["de00", "de01"]:
            rows.append({"speaker": spk, "sentence_id": sid, "language": lang, "label": "sad"})
    df = pd.DataFrame(rows)
    s = synth.split_holdout(df)
    expect = {
        ("en-us+m7", "en00"): "train", ("en-us+m7", "en08"): "train",
        ("en-us+m7", "en03"): "unused", ("en+f3", "en00"): "unused",
        ("en+f3", "en03"): "test_en", ("en+m8", "en07"): "test_en",
        ("de+m2", "de00"): "test_de",
    }
    got = {(r.speaker, r.sentence_id): r.split for r in s.itertuples()}
    for k, v in expect.items():
        assert got[k] == v, k
    tr, te = s[s.split == "train"], s[s.split == "test_en"]
    assert set(tr.speaker).isdisjoint(te.speaker) and set(tr.sentence_id).isdisjoint(te.sentence_id)
    custom = synth.split_holdout(df, holdout_voices=["en-us+m7"], holdout_sentences=["en00"])
    assert set(custom[custom.split == "test_en"].speaker) == {"en-us+m7"}
    assert set(custom[custom.split == "test_en"].sentence_id) == {"en00"}
    with pytest.raises(ValueError, match="no 'speaker' column"):
        synth.split_holdout(df.drop(columns=["speaker"]))
