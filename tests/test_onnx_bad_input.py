"""Hardened edges of ONNX export folders (docs/bad-input.md), through ``smoothclap.cli.main`` as a
user meets them: ``preprocess.json`` / ``preprocess.npz`` with a missing key, a wrong type or an
unknown value, and file paths pointing outside the export folder, end with exit code 2 and one line
naming the file and the key; an export carries the record of its model's training clips, so
``evaluate`` refuses them as it does for the PyTorch model.

One tiny model (a 2-layer Wav2Vec2 and a 2-layer BERT from ``tiny_models``, no downloads),
exported once (opset 17, TorchScript exporter: about 10 s).
"""
from __future__ import annotations

import functools
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_errors import assert_clean_error as _clean_error, run  # noqa: E402
from tiny_models import tiny_bert, tiny_wav2vec2, write_clips  # noqa: E402

LABELS = "angry,happy,sad,neutral"


#: errors here are stderr's only line (the ONNX paths log nothing before them)
assert_clean_error = functools.partial(_clean_error, only_line=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model folder, export folder, clips table): the model records the first 4 clips as its
    training clips (by content, as training does)."""
    from smoothclap.audio import content_prefixes
    from smoothclap.export import export_onnx
    from smoothclap.model import SmoothClapConfig, SmoothClapModel

    root = tmp_path_factory.mktemp("onnx-bad")
    w2v, bert = tiny_wav2vec2(root / "w2v"), tiny_bert(root / "bert")
    clips = write_clips(root / "clips", 8)
    torch.manual_seed(0)
    model = SmoothClapModel(SmoothClapConfig(audio_tower=f"hf:{w2v}?pool=mean", text_tower=f"hf:{bert}?pool=cls",
                                             audio_dim=32, text_dim=24, embed_dim=8, trained_on=["tiny"])).eval()
    prefixes, ok = content_prefixes(clips["file"].iloc[:4].tolist())
    assert ok.all()
    model.trained_clips = np.unique(prefixes)
    model.save_pretrained(root / "model")
    export_onnx(root / "model", root / "export", opset=17)
    return root / "model", root / "export", clips


def _copy(exported, tmp_path) -> Path:
    d = tmp_path / "export"
    shutil.copytree(exported[1], d)
    return d


def _classify(export: Path, clip: str, capsys):
    return run(["-q", "classify", "--model", str(export), "--labels", LABELS, clip], capsys)


def test_unedited_export_classifies(exported, tmp_path, capsys):
    """The baseline of the cases below: the copied export works."""
    d = _copy(exported, tmp_path)
    rc, out, err = _classify(d, exported[2]["file"].iloc[5], capsys)
    assert rc == 0, err
    assert any(lab in out for lab in LABELS.split(","))


def _set(key: str, value):
    def edit(meta):
        *parents, name = key.split(".")
        d = meta
        for p in parents:
            d = d[p]
        d[name] = value
    return edit


def _pop(key: str):
    def edit(meta):
        *parents, name = key.split(".")
        d = meta
        for p in parents:
            d = d[p]
        d.pop(name)
    return edit


@pytest.mark.parametrize("edit,needles", [
    (_pop("scale"), ["scale: required"]),
    (_set("scale", "big"), ["scale: expected a number, got 'big'"]),
    (_set("scale", -2.0), ["scale: -2.0: must be > 0"]),
    (_pop("embed_dim"), ["embed_dim: required"]),
    (_set("embed_dim", 9), ["embed_dim: 9, but the model's config.embed_dim is 8"]),
    (_set("version", "two"), ["version: expected an integer, got 'two'"]),
    (_pop("config"), ["config: required"]),
    (_set("config.audio_dim", "abc"), ["config.audio_dim", "expected an integer"]),
    (_set("config.audio_tower", "whisper-big"), ["config.audio_tower", "unknown tower spec 'whisper-big'"]),
    (_pop("audio"), ["audio: required"]),
    (_set("audio", [1, 2]), ["audio: expected a mapping"]),
    (_pop("audio.spec"), ["audio.spec: required"]),
    (_set("audio.dim", "32"), ["audio.dim: expected an integer, got '32'"]),
    (_set("audio.dim", 33), ["audio.dim: 33, but the model's config.audio_dim is 32"]),
    (_set("audio.sample_rate", 0), ["audio.sample_rate: 0: must be >= 1"]),
    (_set("audio.windows", {"max_samples": 480000}), ["audio.windows.min_samples: required"]),
    (_set("audio.windows", {"max_samples": 400, "min_samples": 800}), ["audio.windows.min_samples", "more than"]),
    (_set("audio.windows", {"max_samples": 480000, "min_samples": 400}),
     ["audio.windows", "needs the outputs ['frames', 'sums'] of audio.onnx", "['features']"]),
    (_set("audio.graph", "other.onnx"), ["audio.graph: unknown graph 'other.onnx'"]),
    (_set("audio.graph", "../audio.onnx"), ["audio.graph", "points outside the export folder"]),
    (_pop("text"), ["text: required"]),
    (_set("text.dim", 2.5), ["text.dim: expected an integer, got 2.5"]),
    (_pop("text.inputs"), ["text.inputs: required"]),
    (_set("text.inputs", "input_ids"), ["text.inputs: expected a list of strings"]),
    (_set("text.inputs", ["input_ids", "attention_mask", "pixel_values"]),
     ["text.inputs: unknown graph input(s) ['pixel_values']"]),
    (_set("text.inputs", ["input_ids", "attention_mask", "token_type_ids"]), ["text.inputs", "text.onnx takes"]),
    (_set("text.prefix", 3), ["text.prefix: expected a string, got 3"]),
    (_set("text.tokenizer", 5), ["text.tokenizer: expected a file name inside the export folder"]),
    (_set("text.tokenizer", "sub/../../tok.json"), ["text.tokenizer", "points outside the export folder"]),
    (_set("text_head", {"graph": "/tmp/text_head.onnx"}), ["text_head.graph", "points outside the export folder"]),
    (_set("caption_bins", [1]), ["caption_bins: expected a mapping"]),
])
def test_export_metadata_mistakes(exported, tmp_path, capsys, edit, needles):
    """preprocess.json with a missing key, a wrong type or an unknown value: one line naming
    preprocess.json and the key, never a KeyError or an onnxruntime traceback later."""
    d = _copy(exported, tmp_path)
    meta = json.loads((d / "preprocess.json").read_text())
    edit(meta)
    (d / "preprocess.json").write_text(json.dumps(meta))
    rc, _, err = _classify(d, exported[2]["file"].iloc[5], capsys)
    assert_clean_error(rc, err, str(d / "preprocess.json") + ": ", *needles)


@pytest.mark.parametrize("key", ["audio.sample_rate", "text.prefix", "text.tokenizer", "audio.windows"])
def test_export_metadata_null_is_the_default(exported, tmp_path, capsys, key):
    """An optional key written as null means its default, for the check and for the runtime alike
    (not a crash on ``int(None)`` after the check let it through)."""
    d = _copy(exported, tmp_path)
    meta = json.loads((d / "preprocess.json").read_text())
    if key == "audio.windows" and meta["audio"].get("windows") is not None:
        pytest.skip("this export's graph needs its windows")
    _set(key, None)(meta)
    (d / "preprocess.json").write_text(json.dumps(meta))
    rc, out, err = _classify(d, exported[2]["file"].iloc[5], capsys)
    assert rc == 0, err
    assert any(lab in out for lab in LABELS.split(","))


@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_export_tokenizer_outside_the_folder_is_refused(exported, tmp_path, capsys, where):
    """A tokenizer path pointing at a working tokenizer outside the export folder (an absolute path,
    or up with '..') is refused, not read."""
    d = _copy(exported, tmp_path)
    outside = tmp_path / "tok.json"
    shutil.copy(d / "tokenizer.json", outside)
    meta = json.loads((d / "preprocess.json").read_text())
    meta["text"]["tokenizer"] = str(outside) if where == "absolute" else "../tok.json"
    (d / "preprocess.json").write_text(json.dumps(meta))
    rc, _, err = _classify(d, exported[2]["file"].iloc[5], capsys)
    assert_clean_error(rc, err, str(d / "preprocess.json"), "text.tokenizer", "points outside the export folder")


def _edit_npz(d: Path, **arrays):
    with np.load(d / "preprocess.npz", allow_pickle=False) as z:
        have = {k: z[k] for k in z.files}
    have.update(arrays)
    for k in [k for k, v in have.items() if v is None]:
        del have[k]
    np.savez(d / "preprocess.npz", **have)


def test_export_arrays_mistakes(exported, tmp_path, capsys):
    """preprocess.npz: a record of training clips that is not uint64 [N]; feature normalisation
    without its statistics; a statistic of the wrong size."""
    clip = exported[2]["file"].iloc[5]
    d = _copy(exported, tmp_path)
    _edit_npz(d, trained_clips=np.arange(4, dtype=np.float32))
    rc, _, err = _classify(d, clip, capsys)
    assert_clean_error(rc, err, str(d / "preprocess.npz") + ": trained_clips: expected uint64 [N]")

    d2 = tmp_path / "e2"
    shutil.copytree(exported[1], d2)
    _edit_npz(d2, norm_mean=np.zeros(5, np.float32))
    rc, _, err = _classify(d2, clip, capsys)
    assert_clean_error(rc, err, str(d2 / "preprocess.npz") + ": norm_mean: expected float [32]")

    d3 = tmp_path / "e3"
    shutil.copytree(exported[1], d3)
    meta = json.loads((d3 / "preprocess.json").read_text())
    meta["config"]["feature_norm_group"] = "speaker"
    (d3 / "preprocess.json").write_text(json.dumps(meta))
    _edit_npz(d3, norm_std=None)
    rc, _, err = _classify(d3, clip, capsys)
    assert_clean_error(rc, err, str(d3 / "preprocess.npz") + ": norm_std: required")


# -- the record of the training clips travels with the export --------------------------------------------
def test_export_carries_the_training_clip_record(exported, tmp_path, capsys):
    """The export holds the model's trained_clips (preprocess.npz); ``evaluate`` refuses an export's
    own training clips with the same line as for the model folder, and with
    --allow-trained-corpus both count them alike."""
    from smoothclap.evaluate import TrainedCorpusError, check_clips_not_trained_on
    from smoothclap.model import SmoothClapModel
    from smoothclap.models import load_model
    from smoothclap.onnx_runtime import OnnxModel

    model_dir, export, clips = exported
    torch_model = SmoothClapModel.from_pretrained(model_dir)
    om = load_model(export)
    assert isinstance(om, OnnxModel)
    assert om.trained_clips is not None
    np.testing.assert_array_equal(om.trained_clips, torch_model.trained_clips)
    files = clips["file"].tolist()
    for m in (torch_model, om):
        with pytest.raises(TrainedCorpusError, match="4 of 8 clips trained this model"):
            check_clips_not_trained_on(m, files, what="m.csv")
        assert check_clips_not_trained_on(m, files[4:]) is None

    manifest = tmp_path / "m.csv"
    clips.to_csv(manifest, index=False)
    lines, scored = {}, {}
    for name, spec in (("torch", model_dir), ("onnx", export)):
        rc, _, err = run(["-q", "evaluate", "--model", str(spec), "--manifest", str(manifest), "--out",
                          str(tmp_path / f"refused-{name}")], capsys)
        lines[name] = assert_clean_error(rc, err, str(manifest), "4 of 8 clips trained this model")
        rc, _, err = run(["-q", "evaluate", "--model", str(spec), "--manifest", str(manifest), "--out",
                          str(tmp_path / f"eval-{name}"), "--allow-trained-corpus"], capsys)
        assert rc == 0, err
        scored[name] = json.loads((tmp_path / f"eval-{name}" / "metrics.json").read_text())["trained_clips_scored"]
    assert lines["onnx"] == lines["torch"]
    assert scored["onnx"] == scored["torch"] == 4
