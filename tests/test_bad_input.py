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

from cli_errors import assert_clean_error, run
from smoothclap.cli import main

pytest.importorskip("opensmile")


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
    import smoothclap.trainer.checkpoint  # noqa: F401 - imported before io.atomic_save is patched (else it
    # binds the patched one for good, and later tests in this process meet a full disk)

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


# -- zero-shot means unseen audio: what trained the model is recorded by content ---------------------------
def _louder_copies(files, folder, gain=0.5):
    """New clips (other audio content) from ``files``: each scaled by ``gain``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, f in enumerate(files):
        wav, sr = sf.read(f, dtype="float32")
        out.append(str(folder / f"new_{i}.wav"))
        sf.write(out[-1], wav * gain, sr)
    return out


def test_trained_clips_recorded_by_content(trained, manifest):
    from smoothclap.audio import content_prefixes
    from smoothclap.model import SmoothClapModel

    m = pd.read_csv(manifest)
    train_files = m.loc[m["split"] == "train", "file"].tolist()
    rec = trained / "model" / "trained_clips.safetensors"
    model = SmoothClapModel.from_pretrained(trained / "model")
    prefixes, ok = content_prefixes(train_files)
    assert ok.all() and model.trained_clips.dtype == np.uint64
    assert model.trained_clips.tolist() == sorted(set(prefixes.tolist()))
    # 8 bytes a clip plus a small header: about 80 kB per 10,000 clips
    assert rec.stat().st_size <= 8 * len(model.trained_clips) + 256


def test_zero_shot_means_unseen_audio(trained, manifest, shared_cache, tmp_path, capsys):
    """The guard compares clips by content, not manifest names: a manifest called like the training
    manifest with new clips is scored; the training clips under other names are refused, counted."""
    m = pd.read_csv(manifest)
    train_rows = m[m["split"] == "train"].reset_index(drop=True)
    model = ["--model", str(trained / "model"), "--cache-dir", str(shared_cache)]
    # 1. unrelated clips in a manifest with the training manifest's name: scored, no warning
    other = tmp_path / "other"
    new = train_rows.iloc[:12].copy()
    new["file"] = _louder_copies(new["file"], other / "wav")
    new.drop(columns=["split"]).to_csv(other / "m.csv", index=False)
    rc, out, err = run(["-q", "evaluate", *model, "--manifest", str(other / "m.csv")], capsys)
    assert rc == 0, err
    assert "WARNING" not in out + err
    # 2. the training clips, copied under other names into a manifest of another name: refused, counted
    copies = tmp_path / "copies"
    (copies / "wav").mkdir(parents=True)
    rows = train_rows.copy()
    rows["file"] = [shutil.copy(f, copies / "wav" / f"clip{i}.wav") for i, f in enumerate(rows["file"])]
    mixed = pd.concat([rows.iloc[:5], new.iloc[5:]], ignore_index=True).drop(columns=["split"])
    mixed.to_csv(copies / "manifest.csv", index=False)
    rc, _, err = run(["-q", "evaluate", *model, "--manifest", str(copies / "manifest.csv")], capsys)
    assert_clean_error(rc, err, "manifest.csv", "5 of 12 clips trained this model", "--allow-trained-corpus")
    # 3. --allow-trained-corpus scores anyway; the output, metrics.json and report.md say so, with the count
    ev = tmp_path / "ev"
    rc, out, err = run(["-q", "evaluate", *model, "--manifest", str(copies / "manifest.csv"),
                        "--allow-trained-corpus", "--out", str(ev)], capsys)
    assert rc == 0, err
    assert "5 of 12 clips TRAINED this model" in out
    metrics = json.loads((ev / "metrics.json").read_text())
    assert "5 of 12" in metrics["warning"] and metrics["trained_clips_scored"] == 5
    assert "5 of 12 clips TRAINED this model" in (ev / "report.md").read_text()


def test_model_without_clip_record_keeps_name_check(trained, manifest, shared_cache, tmp_path, capsys):
    """A model saved before the content record: the corpus-name check as before (a manifest's file
    stem is its corpus name)."""
    old = tmp_path / "old_model"
    shutil.copytree(trained / "model", old)
    (old / "trained_clips.safetensors").unlink()
    other = tmp_path / "other"
    new = pd.read_csv(manifest).iloc[1:13].copy()
    new["file"] = _louder_copies(new["file"], other / "wav")
    new.drop(columns=["split"]).to_csv(other / "m.csv", index=False)
    rc, _, err = run(["-q", "evaluate", "--model", str(old), "--manifest", str(other / "m.csv"),
                      "--cache-dir", str(shared_cache)], capsys)
    assert_clean_error(rc, err, "'m' TRAINED this model", "--allow-trained-corpus")


def test_task_runner_refuses_training_clips(trained, loco_root, shared_cache, capsys):
    """The EmoDB task's clips here are copies of the synthetic training clips (other names, another
    corpus name): the task runner counts and refuses them."""
    model = ["--model", str(trained / "model"), "--cache-dir", str(shared_cache), "--data-root", str(loco_root)]
    rc, _, err = run(["-q", "evaluate", *model, "--task", "emodb"], capsys)
    assert_clean_error(rc, err, "task emodb", "40 of 48 clips trained this model", "--allow-trained-corpus")
    rc, out, err = run(["-q", "evaluate", *model, "--task", "emodb", "--allow-trained-corpus"], capsys)
    assert rc == 0, err
    assert "40 of 48 clips TRAINED this model" in out and "| emodb (!) |" in out


def test_clip_guard_shape_for_other_callers(trained, manifest):
    """``check_clips_not_trained_on(model, files)``: the call the LOCO benchmark's guard makes."""
    from smoothclap.evaluate import TrainedCorpusError, check_clips_not_trained_on
    from smoothclap.model import SmoothClapModel

    model = SmoothClapModel.from_pretrained(trained / "model")
    m = pd.read_csv(manifest)
    train_files = m.loc[m["split"] == "train", "file"].tolist()
    test_files = m.loc[m["split"] == "test", "file"].tolist()
    assert check_clips_not_trained_on(model, test_files) is None
    with pytest.raises(TrainedCorpusError, match="2 of 10 clips"):
        check_clips_not_trained_on(model, train_files[:2] + test_files, what="held out")
    assert "2 of 10" in check_clips_not_trained_on(model, train_files[:2] + test_files, allow=True)
    model.trained_clips = None  # not recorded: nothing to compare
    assert check_clips_not_trained_on(model, train_files) is None


# -- results that were silently wrong ---------------------------------------------------------------------
def test_feature_norm_group_needs_its_column(manifest, shared_cache, tmp_path, capsys):
    """model.feature_norm_group: speaker without speakers: an error naming the key and the column
    (a manifest without the column has it empty in every row; a table without it lacks it)."""
    m = pd.read_csv(manifest).iloc[:12].drop(columns=["speaker"])
    p = tmp_path / "nospk.csv"
    m.to_csv(p, index=False)
    rc, _, err = run(train_args(p, shared_cache, tmp_path / "r", "model.feature_norm_group=speaker",
                                "data.split=null"), capsys)
    assert_clean_error(rc, err, "model.feature_norm_group", "'speaker'", "empty in every row")
    assert not (tmp_path / "r" / "model").exists()

    from smoothclap.config import load_config
    from smoothclap.errors import BadInputError
    from smoothclap.trainer import prepare

    cfg = load_config("demo", ["model.feature_norm_group=speaker"])
    with pytest.raises(BadInputError, match="model.feature_norm_group.*has no 'speaker' column"):
        prepare(cfg, m, cache_dir=shared_cache, progress=False)


def test_one_class_is_refused(trained, manifest, shared_cache, tmp_path, capsys):
    m = pd.read_csv(manifest)
    one = m[m["label"] == m["label"].iloc[0]]
    p = tmp_path / "one.csv"
    one.to_csv(p, index=False)
    args = ["-q", "evaluate", "--model", str(trained / "model"), "--manifest", str(p), "--cache-dir", str(shared_cache),
            "--allow-trained-corpus"]
    rc, _, err = run(args, capsys)
    assert_clean_error(rc, err, "one.csv", "needs >= 2 classes", "give --labels")
    rc, out, err = run(args + ["--labels", f"{one['label'].iloc[0]},sad"], capsys)  # among others: a real choice
    assert rc == 0, err


@pytest.mark.parametrize("edit,needles", [
    (lambda c: c.pop("audio_tower"), ["config.json", "audio_tower", "required"]),
    (lambda c: c.update(audio_tower="whisper-big"), ["config.json", "audio_tower", "unknown tower spec"]),
    (lambda c: c.update(text_tower="whisper-tiny-en"), ["config.json", "text_tower", "not a text tower"]),
    (lambda c: c.update(audio_dim="abc"), ["config.json", "audio_dim", "expected an integer"]),
    (lambda c: c.update(embed_dim=[16]), ["config.json", "embed_dim", "expected an integer"]),
    (lambda c: c.update(trained_on="emodb"), ["config.json", "trained_on", "expected a list"]),
    (lambda c: c.update(audio_tower="egemaps"), ["config.json", "audio_tower 'egemaps' gives 88-d features",
                                                 "audio_dim is 384"]),
])
def test_model_config_mistakes(trained, manifest, tmp_path, capsys, edit, needles):
    """A model folder's config.json with a missing key, a wrong type or another tower never loads
    with a default (or runs into a shape error): one line naming config.json and the key."""
    m = tmp_path / "m"
    shutil.copytree(trained / "model", m)
    cfg = json.loads((m / "config.json").read_text())
    edit(cfg)
    (m / "config.json").write_text(json.dumps(cfg))
    clip = pd.read_csv(manifest)["file"].iloc[0]
    rc, _, err = run(["-q", "classify", "--model", str(m), "--labels", "angry,sad", clip], capsys)
    assert_clean_error(rc, err, *needles)


def test_rerun_with_fewer_epochs_is_refused(trained, manifest, shared_cache, tmp_path, capsys):
    run_dir = tmp_path / "r"
    shutil.copytree(trained, run_dir)
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    rc, _, err = run(["-q", "train", "--config", "demo", "--manifest", str(manifest), "--out", str(run_dir),
                      "--set", "train.epochs=1", "--set", "model.embed_dim=16", "--set", f"cache_dir={shared_cache}"],
                     capsys)
    assert_clean_error(rc, err, str(run_dir), "already trained for 2 epochs", "train.epochs=1")
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("argv,needles", [
    (["classify", "--model", "m", "--labels", "a,b", "--top", "0", "x.wav"], ["--top", "0", ">= 1"]),
    (["classify", "--model", "m", "--labels", "a,b", "--top", "-3", "x.wav"], ["--top", "-3"]),
    (["classify", "--model", "m", "--labels", "a,b", "--top", "many", "x.wav"], ["--top", "expected an integer"]),
    (["embed", "--manifest", "m.csv", "--batch-size", "0"], ["--batch-size", ">= 1"]),
    (["serve", "--port", "70000"], ["--port", "[1, 65535]"]),
    (["serve", "--port", "-1"], ["--port"]),
    (["evaluate", "--manifest", "m.csv"], ["--model", "required"]),
    (["train", "--epochs", "3"], ["--epochs", "unrecognized"]),
    (["frobnicate"], ["invalid choice"]),
    (["classify", "--model", "m", "--labels", "sad\udcff,angry", "x.wav"], ["labels", "not valid UTF-8 text"]),
])
def test_flag_values_are_one_line(argv, needles, capsys):
    rc, out, err = run(argv, capsys)
    assert_clean_error(rc, err, *needles)
    assert len(err.strip().splitlines()) == 1 and "usage:" not in err


# -- tracebacks that are now one line ---------------------------------------------------------------------
def _pickle_only_folder(folder, marker):
    """A Hugging Face style folder whose weights are a pickle that would run code when loaded."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1,
                                                    "num_attention_heads": 1, "intermediate_size": 8,
                                                    "vocab_size": 30}))
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"w": _Boom()}, f)
    return folder


def test_tower_spec_mistakes(manifest, shared_cache, tmp_path, capsys, monkeypatch):
    base = ["-q", "embed", "--manifest", str(manifest), "--cache-dir", str(shared_cache), "--tower"]
    rc, _, err = run(base + ["whisper-big"], capsys)
    assert_clean_error(rc, err, "--tower", "unknown tower spec 'whisper-big'")
    rc, _, err = run(base + ["minilm-l6"], capsys)
    assert_clean_error(rc, err, "--tower", "not an audio tower")
    rc, _, err = run(base + [f"hf:{tmp_path / 'nope'}?modality=audio"], capsys)
    assert_clean_error(rc, err, "nope", "no such folder")
    marker = tmp_path / "ran"
    monkeypatch.setenv("BOOM_MARKER", str(marker))
    bad = _pickle_only_folder(tmp_path / "pickled", marker)
    rc, _, err = run(base + [f"hf:{bad}?modality=audio"], capsys)
    assert_clean_error(rc, err, "pickled", "pickle files only (pytorch_model.bin)", "never loads")
    assert not marker.exists()


def test_model_with_pickle_only_tower_is_refused(trained, manifest, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "ran"
    monkeypatch.setenv("BOOM_MARKER", str(marker))
    m = tmp_path / "m"
    shutil.copytree(trained / "model", m)
    _pickle_only_folder(m / "text_tower", marker)
    cfg = json.loads((m / "config.json").read_text())
    cfg["text_tower"] = "hf:./text_tower?pool=mean&modality=text"
    (m / "config.json").write_text(json.dumps(cfg))
    clip = pd.read_csv(manifest)["file"].iloc[0]
    rc, _, err = run(["-q", "classify", "--model", str(m), "--labels", "angry,sad", clip], capsys)
    assert_clean_error(rc, err, "text_tower", "pickle files only")
    assert not marker.exists()


def test_out_that_is_a_file(trained, manifest, tmp_path, capsys):
    f = tmp_path / "taken.txt"
    f.write_text("not a folder")
    model = str(trained / "model")
    for argv in (["train", "--config", "demo", "--manifest", str(manifest), "--out", str(f)],
                 ["train", "--config", "demo", "--manifest", str(manifest), "--set", f"out_dir={f}/run"],
                 ["evaluate", "--model", model, "--manifest", str(manifest), "--out", str(f / "ev")],
                 ["benchmark", "loco", "--data-root", str(tmp_path), "--out", str(f)],
                 ["export", "--model", model, "--out", str(f)],
                 ["demo", "--out", str(f)]):
        rc, _, err = run(["-q", *argv], capsys)
        assert_clean_error(rc, err, str(f), "not a folder")
    assert f.read_text() == "not a folder"


def test_disk_full_names_the_file(manifest, shared_cache, tmp_path, capsys, monkeypatch):
    """A full disk while writing the checkpoint: the writer's OSError carries no file name (or the
    temporary file's); the one line names the destination."""
    import errno

    import torch

    def full(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    rc, _, err = run(train_args(manifest, shared_cache, tmp_path / "r"), capsys)
    assert_clean_error(rc, err, str(tmp_path / "r" / "checkpoint.pt"), "No space left on device")
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]


def test_atomic_writer_names_the_destination(tmp_path, monkeypatch):
    import errno

    from smoothclap.errors import user_message
    from smoothclap.io import atomic_save

    dest = tmp_path / "sub" / "emb.npy"

    def no_name(t):
        raise OSError(errno.ENOSPC, "No space left on device")

    def tmp_name(t):
        raise OSError(errno.EDQUOT, "Disk quota exceeded", t)

    for fn in (no_name, tmp_name):
        with pytest.raises(OSError) as ei:
            atomic_save(dest, fn)
        assert user_message(ei.value).startswith(f"{dest}: ")
    # a writer that reports a full disk as something else (torch.save: RuntimeError)
    import os

    class Full:
        f_bavail = f_favail = 0

    monkeypatch.setattr(os, "statvfs", lambda p: Full())

    def torch_like(t):
        raise RuntimeError("[enforce fail at inline_container.cc] file write failed")

    with pytest.raises(OSError) as ei:
        atomic_save(dest, torch_like)
    assert user_message(ei.value) == f"{dest}: No space left on device"
    assert list((tmp_path / "sub").iterdir()) == []  # no temporary file left


def test_atomic_folder_is_the_old_folder_or_the_whole_new_one(tmp_path):
    from smoothclap.io import atomic_folder

    out = tmp_path / "export"
    with atomic_folder(out) as tmp:
        (tmp / "a.onnx").write_text("v1")
        assert not out.exists()  # nothing in place until the block ends
    assert (out / "a.onnx").read_text() == "v1"
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(out) as tmp:
            (tmp / "a.onnx").write_text("half")
            raise KeyboardInterrupt
    assert (out / "a.onnx").read_text() == "v1" and [p.name for p in tmp_path.iterdir()] == ["export"]
    with atomic_folder(out) as tmp:
        (tmp / "b.onnx").write_text("v2")
    assert [p.name for p in out.iterdir()] == ["b.onnx"] and [p.name for p in tmp_path.iterdir()] == ["export"]


def _enospc(*a, **k):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")  # as os.write / os.pwrite report it: no file name


def test_disk_full_saving_the_model_names_the_file(manifest, shared_cache, tmp_path, capsys, monkeypatch):
    """A full disk while training saves the model (its weights): the one line names
    <run>/model/model.safetensors; no temporary file is left anywhere in the run folder."""
    monkeypatch.setattr("smoothclap.model.save_file", _enospc)
    run_dir = tmp_path / "r"
    rc, _, err = run(train_args(manifest, shared_cache, run_dir), capsys)
    assert_clean_error(rc, err, f"{run_dir / 'model' / 'model.safetensors'}: No space left on device")
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]


def _shard_files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_disk_full_while_embedding_names_the_shard(manifest, tmp_path, capsys, monkeypatch):
    """A full disk while ``embed`` writes the cache: the one line names the shard file being written
    (not "disk: ..."); nothing half-written stays (no temporary file, no partial index record); the
    entries written before are read back, and a rerun fills the rest."""
    from smoothclap.cache import ArrayCache

    m = pd.read_csv(manifest).iloc[:6]
    small = tmp_path / "six.csv"
    m.to_csv(small, index=False)
    cache = tmp_path / "cache"
    real, calls = os.pwrite, []

    def pwrite(fd, data, offset):  # two entries (a row + its record each) fit, then the disk is full
        calls.append(1)
        return real(fd, data, offset) if len(calls) <= 4 else _enospc()

    monkeypatch.setattr(os, "pwrite", pwrite)
    argv = ["-q", "embed", "--manifest", str(small), "--cache-dir", str(cache), "--device", "cpu"]
    rc, _, err = run(argv, capsys)
    assert_clean_error(rc, err, str(cache), "No space left on device")
    monkeypatch.undo()
    line = err.strip().splitlines()[-1]
    shard = line[len("error: "):].split(": No space left")[0]
    assert shard.endswith(".npy") and os.path.isfile(shard), line
    folder = os.path.dirname(os.path.dirname(shard))
    ArrayCache(folder).close()  # this process's view dropped: read as the next process would
    files = _shard_files(cache)
    assert not [p for p in files if p.name.startswith(".")], files  # no temporary file
    (idx,) = [p for p in files if p.suffix == ".idx"]
    assert idx.stat().st_size == 2 * 40  # the two complete records, no partial one
    c = ArrayCache(folder)
    keys = c.keys()
    assert len(keys) == 2
    rows, ok = c.get_many(keys)
    assert ok.all() and np.isfinite(rows).all()
    c.close()
    rc, _, err = run(argv, capsys)  # the disk has room again: the rest is computed and appended
    assert rc == 0, err
    c = ArrayCache(folder)
    assert len(c.keys()) == 6 and c.get_many(c.keys())[1].all()
    c.close()


@pytest.mark.parametrize("fail", ["row", "record", "new shard"])
def test_disk_full_in_the_cache_names_the_file_and_leaves_it_readable(tmp_path, monkeypatch, fail):
    """The cache's own writes under ENOSPC: writing a row names the shard's .npy, writing its record
    (half of it written first) names the .idx and cuts the partial record off, creating a shard names
    its .npy and leaves no temporary file; what was stored before reads back, and later puts work."""
    import errno

    from smoothclap.cache import ArrayCache
    from smoothclap.errors import user_message

    folder = tmp_path / "c"
    keys = [f"{i:040x}" for i in range(8)]
    rows = np.arange(8 * 4, dtype=np.float32).reshape(8, 4)
    c = ArrayCache(folder, shard_rows=16)
    if fail != "new shard":
        c.put_many(keys[:3], rows[:3])
    real_pwrite, real_fsync = os.pwrite, os.fsync
    target, partial = {"row": ".npy", "record": ".idx"}.get(fail), []

    def pwrite(fd, data, offset):
        if target is None or not os.readlink(f"/proc/self/fd/{fd}").endswith(target):
            return real_pwrite(fd, data, offset)
        if fail == "record" and not partial:
            partial.append(1)
            return real_pwrite(fd, memoryview(data)[:20], offset)  # half a record, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".npy.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as ei:
        c.put_many(keys[3:5], rows[3:5])
    msg = user_message(ei.value)
    want = ".idx" if fail == "record" else ".npy"
    where = msg.split(": ")[0]
    assert where.startswith(str(folder / "shards")) and where.endswith(want) and "No space left" in msg, msg
    monkeypatch.undo()
    files = sorted(p.name for p in (folder / "shards").iterdir()) if (folder / "shards").exists() else []
    assert not [n for n in files if n.startswith(".")], files
    if fail == "new shard":
        assert files == []
    else:
        assert [os.path.getsize(folder / "shards" / n) % 40 for n in files if n.endswith(".idx")] == [0]
    c.close()
    fresh = ArrayCache(folder)
    stored = 0 if fail == "new shard" else 3
    got, ok = fresh.get_many(keys[:5], 4)
    assert ok.tolist() == [True] * stored + [False] * (5 - stored)
    np.testing.assert_array_equal(got[:stored], rows[:stored])
    fresh.put_many(keys[stored:], rows[stored:])
    got, ok = fresh.get_many(keys, 4)
    assert ok.all()
    np.testing.assert_array_equal(got, rows)
    fresh.close()


# -- file names that are not UTF-8 --------------------------------------------------------------------------
def _non_utf8_files(manifest, tmp_path):
    """A good clip and a silent one whose names hold bytes that are not UTF-8, as sys.argv holds
    such names (surrogate escapes, ``os.fsdecode``)."""
    src = pd.read_csv(manifest)["file"].iloc[0]
    folder = os.fsencode(tmp_path)
    good = os.path.join(folder, b"caf\xe9-\xff.wav")
    with open(good, "wb") as f, open(src, "rb") as g:
        f.write(g.read())
    bad = os.path.join(folder, b"silent-\xfe.wav")
    sf.write(bad, np.zeros(16000, np.float32), 16000)
    return os.fsdecode(good), os.fsdecode(bad)


def test_non_utf8_file_names_in_a_manifest(trained, manifest, shared_cache, tmp_path, capsysbinary):
    """A file name with bytes that are not UTF-8 is an ordinary file: read, scored, and written to
    predictions.csv as its own bytes; with --skip-bad a bad one never costs the good results."""
    good, bad = _non_utf8_files(manifest, tmp_path)
    rows = pd.read_csv(manifest).iloc[1:12]
    recs = [{"file": f, "label": lab} for f, lab in zip(rows["file"], rows["label"])]
    recs += [{"file": good, "label": pd.read_csv(manifest)["label"].iloc[0]}, {"file": bad, "label": "sad"}]
    mf = tmp_path / "m.jsonl"  # JSON escapes (\udcff) carry such names
    mf.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    argv = ["-q", "evaluate", "--model", str(trained / "model"), "--manifest", str(mf), "--cache-dir",
            str(shared_cache), "--allow-trained-corpus", "--out", str(tmp_path / "ev")]
    rc = main(argv)
    cap = capsysbinary.readouterr()
    assert rc == 2 and cap.err.startswith(b"error: ") and b"silent-\\udcfe.wav" in cap.err  # stderr: an escape
    rc = main(argv + ["--skip-bad"])
    cap = capsysbinary.readouterr()
    assert rc == 0, cap.err
    pred = (tmp_path / "ev" / "predictions.csv").read_bytes()
    assert b"caf\xe9-\xff.wav" in pred and pred.count(b"\n") == 13  # header + 12 clips
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["skipped"] == 1 and os.fsencode(metrics["skipped_files"][0][0]).endswith(b"silent-\xfe.wav")


def test_non_utf8_file_names_classified(trained, manifest, tmp_path, capsysbinary):
    good, bad = _non_utf8_files(manifest, tmp_path)
    rc = main(["-q", "classify", "--model", str(trained / "model"), "--labels", "angry,sad", "--skip-bad", good, bad])
    cap = capsysbinary.readouterr()
    assert rc == 0, cap.err
    assert b"caf\xe9-\xff.wav:" in cap.out and b"angry" in cap.out  # stdout: the name's own bytes
    assert b"skipped 1 file" in cap.out and b"silent-\xfe.wav" in cap.out


# -- file modes, plots -----------------------------------------------------------------------------------
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(trained, tmp_path, umask, mode):
    from smoothclap.io import atomic_write_text
    from smoothclap.model import SmoothClapModel
    from smoothclap.trainer.checkpoint import save_checkpoint

    model = SmoothClapModel.from_pretrained(trained / "model")
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "report" / "r.md", "x")
        model.save_pretrained(tmp_path / "model")
        save_checkpoint(tmp_path / "run" / "checkpoint.pt", {"fingerprint": "x"})
    finally:
        os.umask(old)
    files = [tmp_path / "report" / "r.md", tmp_path / "run" / "checkpoint.pt",
             *(p for p in (tmp_path / "model").iterdir() if p.is_file())]
    assert len(files) >= 6
    for p in files:
        assert p.stat().st_mode & 0o777 == mode, (p, oct(p.stat().st_mode))
    for d in (tmp_path / "report", tmp_path / "model", tmp_path / "run"):
        assert d.stat().st_mode & 0o777 == 0o777 & ~umask


def test_plots_are_bounded_whatever_the_labels(tmp_path):
    import time

    from PIL import Image

    from smoothclap.plots import plot_confusion

    for labels in (["angry" * 1000, "sad"], [f"class number {i} " * 8 for i in range(120)]):
        n = len(labels)
        t = time.perf_counter()
        p = plot_confusion(np.ones((n, n)), labels, "title " * 1000, tmp_path / "c.png")
        assert time.perf_counter() - t < 20
        w, h = Image.open(p).size
        assert w <= 2000 and h <= 2000, (w, h)
