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
    from smoothclap.synth import synthesize_corpus

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
