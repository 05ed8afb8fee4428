"""Shared fixtures: one tiny espeak-ng corpus and one embedding cache per test session."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_home(tmp_path_factory):
    """Entry points that use the default embedding cache (``~/.cache/smoothclap``, e.g. the
    ``classify`` command) write under a temporary home, never the user's."""
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(tmp_path_factory.mktemp("home"))
    yield
    if old is None:
        os.environ.pop("HOME", None)
    else:
        os.environ["HOME"] = old

REPO = Path(__file__).resolve().parents[1]


def have_synth_tools() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """4 English voices x 2 sentences x 6 emotions (48 clips), written once per session."""
    if not have_synth_tools():
        pytest.skip("espeak-ng and sox are needed (apt-get install espeak-ng sox)")
    from smoothclap.experiments.synth import synthesize_corpus

    root = tmp_path_factory.mktemp("synth")
    synthesize_corpus(root, languages=("en",), voices_per_language=4, sentences_per_voice=2, seed=3, progress=False)
    return root


@pytest.fixture(scope="session")
def synth_table(synth_root):
    from smoothclap.corpora import read_manifest

    df = read_manifest(synth_root / "manifest.csv")
    df["corpus"] = "synthetic"
    return df


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


EMODB_LETTER = {"neutral": "N", "happy": "F", "angry": "W", "sad": "T", "fear": "A", "bored": "L"}
RAVDESS_CODE = {"neutral": "01", "bored": "02", "happy": "03", "sad": "04", "angry": "05", "fear": "06"}
EMODB_SPEAKERS = ["03", "08", "09", "10"]


EMOVO_CODE = {"neutral": "neu", "happy": "gio", "angry": "rab", "sad": "tri", "fear": "pau"}
EMOVO_SPEAKERS = ["f1", "f2", "m1", "m2"]
TUREV = {"angry": ("Angry", "kz"), "bored": ("Calm", "sk"), "happy": ("Happy", "mt"), "sad": ("Sad", "hl")}
TUREV_SPEAKERS = ["1157", "1234", "1358", "1984"]


def _copy_level(src: Path, dst: Path, gain: float) -> None:
    """``src`` written to ``dst`` at ``gain``: each corpus holds its own audio (other bytes), as real
    corpora do, so the zero-shot guard of the benchmark sees no training clip among the test clips."""
    import soundfile as sf

    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    wave, sr = sf.read(src, dtype="float32")
    sf.write(dst, wave * gain, sr, subtype="PCM_16")


@pytest.fixture(scope="session")
def loco_root(synth_table, tmp_path_factory) -> Path:
    """emodb/, ravdess/, tess/, emovo/, turevdb/ in their official layouts; the clips are the
    synthetic ones (4 voices x 2 sentences x 6 emotions; each corpus keeps the emotions its layout
    has), each corpus at its own level (other bytes, nearly the same audio)."""
    root = tmp_path_factory.mktemp("loco")
    voices = sorted(synth_table["speaker"].unique())
    sentences = {v: sorted(synth_table.loc[synth_table["speaker"] == v, "sentence_id"].astype(str).unique())
                 for v in voices}
    for _, r in synth_table.iterrows():
        v = voices.index(r["speaker"])
        s = sentences[r["speaker"]].index(str(r["sentence_id"])) + 1
        lab = r["label"]
        src = Path(r["file"])
        _copy_level(src, root / "emodb" / "wav" / f"{EMODB_SPEAKERS[v]}a0{s}{EMODB_LETTER[lab]}a.wav", 1.0)
        actor = v + 1
        _copy_level(src, root / "ravdess" / f"Actor_{actor:02d}" / f"03-01-{RAVDESS_CODE[lab]}-01-0{s}-01-{actor:02d}.wav",
                    0.9)
        if lab != "bored":
            spk = "OAF" if v < 2 else "YAF"
            _copy_level(src, root / "tess" / f"{spk}_{lab}" / f"{spk}_w{v}{s}_{lab}.wav", 0.8)
        if lab in EMOVO_CODE:
            spk = EMOVO_SPEAKERS[v]
            _copy_level(src, root / "emovo" / "EMOVO" / spk / f"{EMOVO_CODE[lab]}-{spk}-b{s}.wav", 0.7)
        if lab in TUREV:
            folder, code = TUREV[lab]
            _copy_level(src, root / "turevdb" / "Sound Source" / folder / f"{TUREV_SPEAKERS[v]}_{code}_kelime{s}.wav",
                        0.6)
    return root
