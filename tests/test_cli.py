"""The command line, end to end on the tiny synthetic corpus."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from smoothclap.cli import main

pytest.importorskip("opensmile")


@pytest.fixture(scope="module")
def trained(synth_root, shared_cache, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    rc = main(["-q", "train", "--config", "demo", "--manifest", str(synth_root / "manifest.csv"),
               "--out", str(run), "--set", "train.epochs=2", "--set", "model.embed_dim=32",
               "--set", f"cache_dir={shared_cache}", "--set", "data.split=null"])
    assert rc == 0
    return run


def test_train_writes_run_folder(trained):
    for f in ("config.yaml", "checkpoint.pt", "history.json", "caption_bins.json", "model/config.json"):
        assert (trained / f).exists(), f
    hist = json.loads((trained / "history.json").read_text())
    assert len(hist) == 2 and hist[0]["y_diag"] < 1.0  # the demo config trains SmoothCLAP
    bins = json.loads((trained / "caption_bins.json").read_text())
    assert "pitch" in json.dumps(bins)


def test_evaluate_refuses_training_corpus_then_reports(trained, synth_root, shared_cache, tmp_path, capsys):
    args = ["-q", "evaluate", "--model", str(trained / "model"), "--manifest", str(synth_root / "manifest.csv"),
            "--cache-dir", str(shared_cache), "--out", str(tmp_path / "ev")]
    assert main(args) == 2  # refused by content: the very clips that trained it
    assert "manifest.csv: 48 of 48 clips trained this model" in capsys.readouterr().err
    assert main(args + ["--allow-trained-corpus"]) == 0
    out = capsys.readouterr().out
    assert "UAR" in out and "48 of 48 clips TRAINED this model" in out
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["n"] == 48 and len(m["confusion"]) == 6
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 1000


def test_classify_any_format_and_skip_bad(trained, synth_root, tmp_path, capsys):
    wav, sr = sf.read(next((synth_root / "wav").rglob("*.wav")))
    import soxr

    stereo44 = np.stack([soxr.resample(wav, sr, 44100)] * 2, axis=1)
    good = tmp_path / "clip44k_stereo.flac"
    sf.write(good, stereo44, 44100)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    labels = "angry,happy,sad,neutral"
    assert main(["classify", "--model", str(trained / "model"), "--labels", "angry", str(good)]) == 2
    assert "at least two labels" in capsys.readouterr().err
    assert main(["classify", "--model", str(trained / "model"), "--labels", labels, str(silent)]) == 2
    assert "silent" in capsys.readouterr().err
    assert main(["classify", "--model", str(trained / "model"), "--labels", labels, "--skip-bad",
                 str(good), str(silent)]) == 0
    out = capsys.readouterr().out
    lines = [ln.split() for ln in out.splitlines() if ln.startswith("  ")]
    assert {ln[0] for ln in lines} == set(labels.split(","))
    probs = [float(ln[-1]) for ln in lines]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 0.01
    assert "skipped 1 file" in out and "silent" in out


def test_train_unknown_labels_and_missing_columns(synth_root, tmp_path, capsys):
    rc = main(["-q", "train", "--config", "demo", "--manifest", str(synth_root / "manifest.csv"),
               "--set", "data.labels=[angry, happy]", "--set", "data.split=null", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "manifest.csv" in err and "unknown label" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("path,emotion\nx.wav,angry\n")
    assert main(["-q", "train", "--config", "demo", "--manifest", str(bad),
                 "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "missing" in err


def test_quiet_silences_third_party_progress(trained, synth_root):
    """-q: no progress bars at all, transformers' weight-loading bar included (a fresh process,
    so the towers load)."""
    import subprocess
    import sys

    clip = str(next((synth_root / "wav").rglob("*.wav")))
    base = [sys.executable, "-m", "smoothclap"]
    args = ["classify", "--model", str(trained / "model"), "--labels", "angry,sad", clip]
    import os

    env = {k: v for k, v in os.environ.items() if "PROGRESS" not in k and k != "TQDM_DISABLE"}
    loud = subprocess.run(base + args, capture_output=True, text=True, timeout=300, env=env)
    quiet = subprocess.run(base + ["-q"] + args, capture_output=True, text=True, timeout=300, env=env)
    assert loud.returncode == quiet.returncode == 0, quiet.stderr[-2000:]
    assert "Loading weights" in loud.stderr  # what -q must silence
    assert "Loading weights" not in quiet.stderr and "it/s" not in quiet.stderr, quiet.stderr[-2000:]
