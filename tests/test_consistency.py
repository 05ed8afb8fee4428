"""One inference path: ZeroShotClassifier.predict / predict_files, classify (library and command),
evaluate and the task runner give the same probabilities for the same clips and the same grouping,
for a model trained with per-speaker feature normalisation and one without, and for its ONNX
export at every one of those entry points; and a single clip without a group is scored with the
stored training statistics (not every clip the same class)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("opensmile")

from smoothclap.audio import read_audio  # noqa: E402
from smoothclap.config import RunConfig, loss_preset  # noqa: E402
from smoothclap.evaluate import zero_shot_evaluate  # noqa: E402
from smoothclap.model import SmoothClapModel  # noqa: E402
from smoothclap.tasks import get_task, run_task  # noqa: E402
from smoothclap.trainer import prepare, train  # noqa: E402
from smoothclap.classification import classify_files  # noqa: E402
from smoothclap.zeroshot import ZeroShotClassifier  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module", params=["speaker", None], ids=["speaker-norm", "no-norm"])
def model(request, synth_table, shared_cache, tmp_path_factory):
    cfg = RunConfig()
    cfg.train.epochs, cfg.train.batch_size, cfg.model.embed_dim = 8, 8, 32
    cfg.model.feature_norm_group = request.param
    cfg.loss = loss_preset("smoothclap")
    cfg.cache_dir = str(shared_cache)
    prep = prepare(cfg, synth_table, cache_dir=shared_cache, progress=False)
    res = train(cfg, prep, run_dir=tmp_path_factory.mktemp("run"), progress=False)
    # everything below uses the saved model, as a user would
    return SmoothClapModel.from_pretrained(res.run_dir / "model")


def _probs(df: pd.DataFrame, labels) -> np.ndarray:
    return df[[f"p_{lab}" for lab in labels]].to_numpy(dtype=np.float64)


def test_every_entry_point_gives_the_same_probabilities(model, synth_table, shared_cache, capsys):
    table = synth_table.iloc[::2].reset_index(drop=True)  # 24 clips, 4 speakers
    files = table["file"].tolist()
    groups = table["speaker"].astype(str).tolist()
    labels = sorted(table["label"].unique())
    clf = ZeroShotClassifier(model, labels)

    _, p_predict = clf.predict([read_audio(f) for f in files], groups)
    _, p_files, ok = clf.predict_files(files, groups)
    cls = classify_files(model, files, labels, groups=groups, cache_dir=shared_cache)
    ev = zero_shot_evaluate(model, table, labels, cache_dir=shared_cache, progress=False)
    assert ok.all() and ev.metrics["n"] == len(files)
    ref = p_predict.astype(np.float64)
    for name, p in (("predict_files", p_files), ("classify", _probs(cls.table, labels)),
                    ("evaluate", _probs(ev.predictions, labels))):
        diff = float(np.abs(np.asarray(p, dtype=np.float64) - ref).max())
        assert diff <= TOL, (name, diff)
    # the command prints the same ranking (3 decimals)
    from smoothclap.cli import main

    model.save_pretrained(path := shared_cache.parent / f"consistency-{model.config.feature_norm_group}")
    argv = ["-q", "classify", "--model", str(path), "--labels", ",".join(labels), "--groups", ",".join(groups[:3]),
            *files[:3], "--top", str(len(labels))]
    if model.config.feature_norm_group:  # 3 clips are too few for their own statistics
        model.config.min_group_clips = 2
        model.save_pretrained(path)
    assert main(argv) == 0
    printed = [ln.split() for ln in capsys.readouterr().out.splitlines() if ln.startswith("  ")]
    got = np.array([float(x[-1]) for x in printed]).reshape(3, len(labels))
    again = classify_files(SmoothClapModel.from_pretrained(path), files[:3], labels, groups=groups[:3])
    want = -np.sort(-_probs(again.table, labels), axis=1)
    np.testing.assert_allclose(got, want, atol=5e-4)


def test_task_runner_matches_classify(model, loco_root, shared_cache):
    task = get_task("ravdess")  # the synthetic clips in RAVDESS's layout (tests/conftest.py)
    res = run_task(task, model, loco_root, cache_dir=shared_cache, allow_trained_corpus=True)
    pred = res["predictions"]
    from smoothclap.tasks import load_task_table

    table = load_task_table(task, loco_root)
    assert pred["file"].tolist() == table["file"].tolist()
    groups = table["speaker"].astype(str).tolist() if model.config.feature_norm_group else None
    cls = classify_files(model, table["file"].tolist(), list(task.labels), groups=groups, prompts=task.prompt_map(),
                         templates=task.template, cache_dir=shared_cache)
    diff = float(np.abs(_probs(pred, task.labels) - _probs(cls.table, task.labels)).max())
    assert diff <= TOL, diff


def test_single_clips_without_groups_are_scored_sensibly(model, synth_table):
    """One clip at a time, no group: the model falls back to its training statistics; the answers
    differ between clips of different emotions (a model fed wrongly normalised features answers
    the same class for everything)."""
    labels = sorted(synth_table["label"].unique())
    picks = synth_table.groupby("label").head(2)
    preds = [classify_files(model, [f], labels).table["pred"].iloc[0] for f in picks["file"]]
    assert len(set(preds)) >= 3, preds
    # and they agree with scoring the same clips together without groups (same statistics)
    together = classify_files(model, picks["file"].tolist(), labels).table["pred"].tolist()
    assert together == preds
    # well above chance (1/6) on the clips it was trained on; the former fallback (the input
    # standardiser alone, fitted after per-speaker normalisation) measured .29 here, grouped .67
    from smoothclap.metrics import classification_metrics

    all_clips = classify_files(model, synth_table["file"].tolist(), labels).table
    uar = classification_metrics(synth_table["label"], all_clips["pred"], labels)["uar"]
    assert uar >= 0.4, uar


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """The same model as an ONNX export (opset 17: the quicker exporter), opened as any model."""
    pytest.importorskip("onnxruntime")
    from smoothclap.export import export_onnx
    from smoothclap.models import load_model

    out = export_onnx(model, tmp_path_factory.mktemp("onnx") / "export", opset=17)
    return load_model(out), out


def _printed(out: str) -> dict[str, dict[str, float]]:
    """``smoothclap classify``'s output -> {file: {label: probability}}."""
    res: dict[str, dict[str, float]] = {}
    for ln in out.splitlines():
        if ln.startswith("  "):
            lab, p = ln.split()
            res[f][lab] = float(p)
        elif ln.endswith(":"):
            f = ln[:-1]
            res[f] = {}
    return res


def test_onnx_export_gives_the_same_probabilities_at_every_entry_point(model, exported, synth_table, loco_root,
                                                                      shared_cache, tmp_path, capsys):
    """predict, predict_files, classify_files, evaluate, the task runner and the classify command:
    the export's probabilities are the PyTorch model's, each with its own cache entries."""
    from smoothclap.onnx_runtime import OnnxModel

    om, out = exported
    assert isinstance(om, OnnxModel)
    om.config.min_group_clips = model.config.min_group_clips  # the first test may have lowered it
    table = synth_table.iloc[::2].reset_index(drop=True)
    files = table["file"].tolist()
    groups = table["speaker"].astype(str).tolist()
    labels = sorted(table["label"].unique())
    task = get_task("ravdess")

    def entry_points(m) -> dict[str, np.ndarray]:
        clf = ZeroShotClassifier(m, labels)
        ev = zero_shot_evaluate(m, table, labels, cache_dir=shared_cache, progress=False)
        res = run_task(task, m, loco_root, cache_dir=shared_cache, allow_trained_corpus=True)
        return {"predict": clf.predict([read_audio(f) for f in files], groups)[1],
                "predict_files": clf.predict_files(files, groups, cache_dir=shared_cache)[1],
                "classify": _probs(classify_files(m, files, labels, groups=groups, cache_dir=shared_cache).table,
                                   labels),
                "evaluate": _probs(ev.predictions, labels), "task": _probs(res["predictions"], task.labels)}

    ref, got = entry_points(model), entry_points(om)
    for name in ref:
        diff = float(np.abs(np.asarray(got[name], dtype=np.float64) - np.asarray(ref[name], dtype=np.float64)).max())
        assert diff <= TOL, (name, diff)
    # the command: the export as --model prints the model folder's ranking (3 decimals)
    from smoothclap.cli import main

    model.save_pretrained(tmp_path / "model")
    printed = {}
    for spec in (tmp_path / "model", out):
        assert main(["-q", "classify", "--model", str(spec), "--labels", ",".join(labels), *files[:3],
                     "--top", str(len(labels))]) == 0
        printed[spec] = _printed(capsys.readouterr().out)
    want, have = printed[tmp_path / "model"], printed[out]
    assert list(have) == list(want) == files[:3]
    for f in files[:3]:
        assert set(have[f]) == set(want[f])
        assert max(abs(have[f][lab] - want[f][lab]) for lab in labels) <= 1e-3 + 1e-9


def test_model_carries_its_inference_recipe(synth_table, shared_cache, tmp_path, capsys):
    """inference.templates is stored with the model and used by every entry point unless overridden:
    the classifier, classify (library and command), evaluate and the tasks."""
    from smoothclap.cli import main
    from smoothclap.prompts import TEMPLATE_SETS

    cfg = RunConfig()
    cfg.train.epochs, cfg.train.batch_size, cfg.model.embed_dim = 2, 8, 16
    cfg.inference.templates = "ensemble"
    cfg.cache_dir = str(shared_cache)
    prep = prepare(cfg, synth_table, cache_dir=shared_cache, progress=False)
    res = train(cfg, prep, run_dir=tmp_path / "run", progress=False)
    model = SmoothClapModel.from_pretrained(res.run_dir / "model")
    assert model.config.inference.templates == "ensemble"
    table = synth_table.iloc[::3].reset_index(drop=True)
    files, labels = table["file"].tolist(), sorted(table["label"].unique())
    ens, bare = ZeroShotClassifier(model, labels), ZeroShotClassifier(model, labels, templates="bare")
    assert len(ens.texts[0]) == len(TEMPLATE_SETS["ensemble"]) > 1 and bare.texts[0] == [labels[0]]
    _, p_ens, _ = ens.predict_files(files)
    _, p_bare, _ = bare.predict_files(files)
    assert float(np.abs(p_ens - p_bare).max()) > 1e-4  # the recipe changes the answer
    cls = classify_files(model, files, labels, cache_dir=shared_cache)
    ev = zero_shot_evaluate(model, table, labels, cache_dir=shared_cache, progress=False, use_groups=False)
    for p in (_probs(cls.table, labels), _probs(ev.predictions, labels)):
        assert float(np.abs(p - p_ens).max()) <= TOL
    # the command line: the recipe by default, --templates overrides it
    rc = main(["-q", "classify", "--model", str(res.run_dir / "model"), "--labels", ",".join(labels), files[0]])
    out_default = capsys.readouterr().out
    rc2 = main(["-q", "classify", "--model", str(res.run_dir / "model"), "--labels", ",".join(labels),
                "--templates", "bare", files[0]])
    out_bare = capsys.readouterr().out
    assert rc == rc2 == 0 and out_default != out_bare
