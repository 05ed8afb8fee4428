"""Hardened edges, through the command line as a user meets them: every mistake ends with exit code
2 and one line ``error: <file or key>: <reason>`` (no traceback); ``--skip-bad`` skips and counts
every per-file failure; counts are right; nothing is run from a file; a run folder is never
overwritten by another run. The table of these cases is docs/bad-input.md."""
from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from smoothclap.cli import main

pytest.importorskip("opensmile")


def run(argv, capsys) -> tuple[int, str, str]:
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_clean_error(rc, err, *needles):
    assert rc == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err, err
    for n in needles:
        assert n in lines[-1], (n, lines[-1])


@pytest.fixture(scope="module")
def manifest(synth_root, tmp_path_factory):
    """The synthetic corpus as a manifest with absolute paths and a train/test split."""
    m = pd.read_csv(synth_root / "manifest.csv")
    m["file"] = [str(synth_root / f) for f in m["file"]]
    m["split"] = ["test" if i % 6 == 0 else "train" for i in range(len(m))]
    p = tmp_path_factory.mktemp("man") / "m.csv"
    m.to_csv(p, index=False)
    return p


@pytest.fixture(scope="module")
def trained(manifest, shared_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["-q", "train", "--config", "demo", "--manifest", str(manifest), "--out", str(out),
                 "--set", "train.epochs=2", "--set", "model.embed_dim=16", "--set", f"cache_dir={shared_cache}"]) == 0
    return out


def train_args(manifest, cache, out, *sets):
    argv = ["-q", "train", "--config", "demo", "--manifest", str(manifest), "--out", str(out),
            "--set", f"cache_dir={cache}", "--set", "model.embed_dim=16", "--set", "train.epochs=1"]
    for s in sets:
        argv += ["--set", s]
    return argv


# -- settings: checked when the config is read, before any work -------------------------------------------
@pytest.mark.parametrize("yaml_text,needles", [
    ("train:\n  epohcs: 3\n", ["train.epohcs", "did you mean 'epochs'"]),
    ("train:\n  batch_size: abc\n", ["train.batch_size", "expected an integer", "'abc'"]),
    ("train:\n  epochs: [1\n", ["not valid YAML", "line"]),
    ("- a\n- b\n", ["top level must be a mapping"]),
    ("train:\n  epochs: 0\n", ["train.epochs", "0", ">= 1"]),
    ("train:\n  epochs: -3\n", ["train.epochs", "-3"]),
    ("train:\n  batch_size: -4\n", ["train.batch_size", "-4"]),
    ("train:\n  batch_size: 1\n", ["train.batch_size", ">= 2"]),
    ("train:\n  lr: 0\n", ["train.lr", "> 0"]),
    ("loss:\n  beta: 1.5\n", ["loss.beta", "1.5", "[0, 1]"]),
    ("loss:\n  beta: -0.1\n", ["loss.beta"]),
    ("loss:\n  gamma: 2\n", ["loss.gamma"]),
    ("loss:\n  preset: smooth\n", ["loss.preset", "'smooth'"]),
    ("loss:\n  calibrate: diag\n  calibrate_value: 2\n", ["loss.calibrate_value", "(1/train.batch_size, 1)"]),
    ("model:\n  dropout: 1.0\n", ["model.dropout", "[0, 1)"]),
    ("model:\n  loudness: loud\n", ["model.loudness"]),
    ("towers:\n  audio: whisper-big\n", ["towers.audio", "unknown tower spec 'whisper-big'"]),
    ("towers:\n  text: whisper-tiny-en\n", ["towers.text", "not a text tower"]),
    ("train:\n  mode: cached\n  crop_seconds: 5\n", ["train.mode", "need end-to-end training"]),
])
def test_config_mistakes(yaml_text, needles, manifest, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    rc, _, err = run(["-q", "train", "--config", str(cfg), "--manifest", str(manifest), "--out",
                      str(tmp_path / "r")], capsys)
    assert_clean_error(rc, err, str(cfg), *needles)
    assert not (tmp_path / "r").exists()  # nothing ran


def test_flag_mistakes(manifest, tmp_path, capsys):
    rc, _, err = run(["-q", "train", "--config", str(tmp_path / "missing.yaml")], capsys)
    assert_clean_error(rc, err, "missing.yaml", "no such file")
    rc, _, err = run(["-q", "train", "--manifest", str(manifest), "--set", "train.epochs"], capsys)
    assert_clean_error(rc, err, "--set", "section.key=value")
    rc, _, err = run(["-q", "train", "--manifest", str(manifest), "--set", "train.epochs.x=1"], capsys)
    assert_clean_error(rc, err, "train.epochs", "expected an integer")


def test_name_mistakes(trained, manifest, tmp_path, capsys):
    model = ["--model", str(trained / "model")]
    clip = pd.read_csv(manifest)["file"].iloc[0]
    rc, _, err = run(["-q", "evaluate", *model, "--task", "emodbb", "--data-root", str(tmp_path)], capsys)
    assert_clean_error(rc, err, "emodbb", "unknown task")
    rc, _, err = run(["-q", "evaluate", *model, "--corpus", "emodbb", "--data-root", str(tmp_path)], capsys)
    assert_clean_error(rc, err, "emodbb", "unknown corpus")
    rc, _, err = run(["-q", "classify", *model, "--labels", "a,b", "--templates", "fancy", clip], capsys)
    assert_clean_error(rc, err, "templates", "unknown template set")
    rc, _, err = run(["-q", "classify", *model, "--labels", "a,b", "--groups", "s1,s2", clip], capsys)
    assert_clean_error(rc, err, "groups", "2 groups for 1 files")
    rc, _, err = run(["-q", "evaluate", *model, "--manifest", str(manifest), "--prompt", "angry"], capsys)
    assert_clean_error(rc, err, "--prompt", "LABEL=TEXT")


# -- model folders -------------------------------------------------------------------------------------------
def test_model_folder_mistakes(trained, manifest, tmp_path, capsys):
    clip = pd.read_csv(manifest)["file"].iloc[0]
    base = ["-q", "classify", "--labels", "angry,sad", clip, "--model"]
    rc, _, err = run(base + [str(tmp_path / "nope")], capsys)
    assert_clean_error(rc, err, "nope", "model folder not found")
    m = tmp_path / "m"
    shutil.copytree(trained / "model", m)
    (m / "model.safetensors").write_bytes(b"garbage, not safetensors")
    rc, _, err = run(base + [str(m)], capsys)
    assert_clean_error(rc, err, "model.safetensors", "corrupted weights")
    (m / "model.safetensors").unlink()
    rc, _, err = run(base + [str(m)], capsys)
    assert_clean_error(rc, err, "model.safetensors", "not found")
    shutil.copy(trained / "model" / "model.safetensors", m)
    (m / "config.json").write_text("{not json")
    rc, _, err = run(base + [str(m)], capsys)
    assert_clean_error(rc, err, "config.json", "corrupted model config")


# -- labels ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels,needle", [("angry,angry,sad", "duplicated"), ("angry,,sad", "empty label"),
                                           ("angry", "at least two")])
def test_label_mistakes(trained, manifest, labels, needle, capsys):
    rc, _, err = run(["-q", "evaluate", "--model", str(trained / "model"), "--manifest", str(manifest),
                      "--labels", labels, "--allow-trained-corpus"], capsys)
    assert_clean_error(rc, err, "labels", needle)


# -- manifests -------------------------------------------------------------------------------------------
def test_header_only_manifest_and_empty_split(trained, manifest, tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("file,label,speaker\n")
    for cmd in (["embed", "--manifest", str(empty)],
                ["evaluate", "--model", str(trained / "model"), "--manifest", str(empty)],
                ["train", "--config", "demo", "--manifest", str(empty), "--out", str(tmp_path / "r")]):
        rc, _, err = run(["-q", *cmd], capsys)
        assert_clean_error(rc, err, "empty.csv", "no data rows")
    rc, _, err = run(["-q", "evaluate", "--model", str(trained / "model"), "--manifest", str(manifest),
                      "--split", "dev", "--allow-trained-corpus"], capsys)
    assert_clean_error(rc, err, "m.csv", "no rows of split 'dev'", "test, train")
    rc, _, err = run(["-q", "train", "--config", "demo", "--manifest", str(manifest), "--set", "data.split=dev",
                      "--out", str(tmp_path / "r2")], capsys)
    assert_clean_error(rc, err, "m.csv", "no rows of split 'dev'")


def _bad_manifest(manifest, tmp_path):
    """The manifest plus: a symlink loop, a missing file, a duplicated row, a silent clip."""
    m = pd.read_csv(manifest).iloc[:12].copy()
    loop = tmp_path / "loop.wav"
    os.symlink(loop, loop)  # points at itself
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    extra = pd.DataFrame({"file": [str(loop), str(tmp_path / "missing.wav"), m["file"].iloc[0], str(silent)],
                          "label": ["sad", "sad", m["label"].iloc[0], "sad"]})
    bad = pd.concat([m, extra], ignore_index=True)
    p = tmp_path / "bad.csv"
    bad.to_csv(p, index=False)
    return p, loop, silent


def test_manifest_mistakes_error_then_skip_and_count(trained, manifest, shared_cache, tmp_path, capsys):
    p, loop, silent = _bad_manifest(manifest, tmp_path)
    rc, _, err = run(["-q", "embed", "--manifest", str(p), "--cache-dir", str(shared_cache)], capsys)
    assert_clean_error(rc, err, "bad.csv")
    # --skip-bad: every per-file failure skipped and counted once; one output row per manifest row
    out = tmp_path / "e.npy"
    rc, stdout, err = run(["-q", "embed", "--manifest", str(p), "--cache-dir", str(shared_cache), "--skip-bad",
                           "--output", str(out)], capsys)
    assert rc == 0 and "Traceback" not in err
    # 3 rows fail while reading the manifest, the silent clip while embedding
    assert "12/13 clips embedded" in stdout and "skipped 4" in stdout, stdout
    emb = np.load(out)
    files = pd.read_csv(f"{out}.files.csv")
    assert emb.shape[0] == len(files) == 16 and files["row"].tolist() == list(range(1, 17))
    assert np.isfinite(emb[:12]).all() and np.isnan(emb[12:]).all()
    assert files["ok"].tolist() == [True] * 12 + [False] * 4
    reasons = files["reason"].tolist()[12:]
    assert "cannot resolve" in reasons[0] or "not found" in reasons[0]
    assert "not found" in reasons[1] and "duplicate row" in reasons[2] and "silent" in reasons[3]
    # evaluate: the same four, counted in the output and in metrics.json
    rc, stdout, err = run(["-q", "evaluate", "--model", str(trained / "model"), "--manifest", str(p), "--skip-bad",
                           "--allow-trained-corpus", "--cache-dir", str(shared_cache), "--out", str(tmp_path / "ev")],
                          capsys)
    assert rc == 0, err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["skipped"] == 4 and len(metrics["skipped_files"]) == 4 and metrics["n"] == 12
    assert "| 4 |" in stdout  # the skipped column of the printed table


def test_a_bad_clip_counts_once_in_training(manifest, shared_cache, tmp_path, capsys):
    """A silent clip fails the audio tower and eGeMAPS: one skipped clip, not two."""
    p, *_ = _bad_manifest(manifest, tmp_path)
    m = pd.read_csv(p)
    m = pd.concat([m.iloc[:12], m[m["file"].str.endswith("silent.wav")]])
    q = tmp_path / "one_bad.csv"
    m.to_csv(q, index=False)
    rc, stdout, err = run(train_args(q, shared_cache, tmp_path / "r", "data.skip_bad=true", "data.split=null"), capsys)
    assert rc == 0, err
    assert "skipped 1;" in stdout, stdout
    assert json.loads((tmp_path / "r" / "skipped.json").read_text())["count"] == 1


def test_truncated_wav_is_bad_input(trained, manifest, tmp_path, capsys):
    src = pd.read_csv(manifest)["file"].iloc[0]
    data = open(src, "rb").read()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])  # the header still declares the whole clip
    rc, _, err = run(["-q", "classify", "--model", str(trained / "model"), "--labels", "angry,sad", str(cut)], capsys)
    assert_clean_error(rc, err, "cut.wav", "truncated WAV")


def test_identical_audio_is_named(manifest, tmp_path, caplog):
    from smoothclap.embed import embed_audio_files
    from smoothclap.towers import build_tower

    src = pd.read_csv(manifest)["file"].iloc[0]
    copy = tmp_path / "copy.wav"
    shutil.copy(src, copy)
    with caplog.at_level("WARNING", logger="smoothclap"):
        embed_audio_files(build_tower("whisper-tiny-en"), [src, str(copy)], cache_dir=tmp_path / "c", progress=False)
    assert "identical audio" in caplog.text and "copy.wav" in caplog.text


# -- run folders and checkpoints -------------------------------------------------------------------------
def test_other_config_refused_then_new_folder(trained, manifest, shared_cache, tmp_path, capsys):
    run_dir = tmp_path / "r"
    shutil.copytree(trained, run_dir)
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    rc, _, err = run(train_args(manifest, shared_cache, run_dir, "loss.beta=0.3"), capsys)
    assert_clean_error(rc, err, str(run_dir), "loss.beta")
    after = {p.name: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    assert after == before  # nothing touched
    rc, stdout, err = run(train_args(manifest, shared_cache, run_dir, "loss.beta=0.3") + ["--new-folder"], capsys)
    assert rc == 0, err
    assert (tmp_path / "r-2" / "model" / "model.safetensors").exists()
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('BOOM_MARKER', '/tmp/smoothclap-boom')}",))


def test_planted_pickle_never_runs(manifest, shared_cache, tmp_path, capsys, monkeypatch):
    """A crafted checkpoint.pt in a run folder: resuming refuses it and executes nothing."""
    import torch

    marker = tmp_path / "ran"
    monkeypatch.setenv("BOOM_MARKER", str(marker))
    run_dir = tmp_path / "r"
    rc, _, err = run(train_args(manifest, shared_cache, run_dir), capsys)
    assert rc == 0, err
    with open(run_dir / "checkpoint.pt", "wb") as f:
        pickle.dump({"format": 2, "fingerprint": "x", "payload": _Boom()}, f)
    assert not marker.exists()
    rc, _, err = run(train_args(manifest, shared_cache, run_dir), capsys)
    assert_clean_error(rc, err, "checkpoint.pt", "refused or corrupted")
    assert not marker.exists()
    torch.save({"format": 2, "fingerprint": "x", "payload": _Boom()}, run_dir / "checkpoint.pt")
    rc, _, err = run(train_args(manifest, shared_cache, run_dir), capsys)
    assert_clean_error(rc, err, "checkpoint.pt")
    assert not marker.exists()


def test_disk_full_is_one_line(manifest, shared_cache, tmp_path, capsys, monkeypatch):
    import errno

    import smoothclap.io as io

    def full(path, save_fn):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(io, "atomic_save", full)
    monkeypatch.setattr("smoothclap.trainer.checkpoint.atomic_save", full)
    rc, _, err = run(train_args(manifest, shared_cache, tmp_path / "r"), capsys)
    assert_clean_error(rc, err, "No space left on device")


def test_segments_refused_and_captions_used(manifest, shared_cache, tmp_path, capsys):
    """start/end segments would silently be embedded as whole files: refused, naming the manifest;
    a manifest's own captions are what training embeds."""
    m = pd.read_csv(manifest).iloc[:12].copy()
    m["start"], m["end"] = 0.0, 0.5
    p = tmp_path / "seg.csv"
    m.to_csv(p, index=False)
    rc, _, err = run(train_args(p, shared_cache, tmp_path / "r", "data.split=null"), capsys)
    assert_clean_error(rc, err, "seg.csv", "segments")
    rc, _, err = run(["-q", "embed", "--manifest", str(p), "--cache-dir", str(shared_cache)], capsys)
    assert_clean_error(rc, err, "seg.csv", "segments")

    from smoothclap.config import load_config
    from smoothclap.corpora import read_manifest
    from smoothclap.trainer import prepare

    m = pd.read_csv(manifest).iloc[:12].copy()
    m["caption"] = [f"my own caption number {i}" for i in range(len(m))]
    p = tmp_path / "cap.csv"
    m.to_csv(p, index=False)
    cfg = load_config("demo", ["train.epochs=2", f"cache_dir={shared_cache}"])
    prep = prepare(cfg, read_manifest(p), cache_dir=shared_cache, progress=False)
    used = [prep.caption_texts[i] for i in prep.caption_index[1]]
    assert used == m["caption"].tolist()
