"""Shared fixtures: one tiny espeak-ng corpus and one embedding cache per test session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def loco_root(synth_table, tmp_path_factory) -> Path:
    """emodb/, ravdess/, tess/ in their official layouts; the clips are the synthetic ones
    (4 voices x 2 sentences x 6 emotions), copied (identical audio hits the embedding cache)."""
    root = tmp_path_factory.mktemp("loco")
    voices = sorted(synth_table["speaker"].unique())
    sentences = {v: sorted(synth_table.loc[synth_table["speaker"] == v, "sentence_id"].astype(str).unique())
                 for v in voices}
    for _, r in synth_table.iterrows():
        v = voices.index(r["speaker"])
        s = sentences[r["speaker"]].index(str(r["sentence_id"])) + 1
        lab = r["label"]
        src = Path(r["file"])
        dst = root / "emodb" / "wav" / f"{EMODB_SPEAKERS[v]}a0{s}{EMODB_LETTER[lab]}a.wav"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            shutil.copy(src, dst)
        actor = v + 1
        dst = root / "ravdess" / f"Actor_{actor:02d}" / f"03-01-{RAVDESS_CODE[lab]}-01-0{s}-01-{actor:02d}.wav"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            shutil.copy(src, dst)
        if lab != "bored":
            spk = "OAF" if v < 2 else "YAF"
            dst = root / "tess" / f"{spk}_{lab}" / f"{spk}_w{v}{s}_{lab}.wav"
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                shutil.copy(src, dst)
    return root
