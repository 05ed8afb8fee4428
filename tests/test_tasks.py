"""Tasks as data (smoothclap.tasks) and ``smoothclap evaluate --task``, on fixture trees in the
official layouts with a small model trained on the synthetic corpus."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from smoothclap.tasks import (PAPER_TASKS, TASKS, CorpusNotFound, TrainedCorpusError, find_corpus_root, get_task,
                              load_task_table, run_task, tasks_present)
from test_corpora import (make_aibo, make_alc, make_cremad, make_emodb, make_iemocap, make_ravdess, make_sld,
                          make_tess, wav)
from test_new_corpora import make_emovo, make_turevdb

pytest.importorskip("opensmile")


# ------------------------------------------------------------------------------ registry (no audio)


def test_registry_has_paper_tasks_emodb_savee():
    assert set(PAPER_TASKS) | {"emodb", "savee"} <= set(TASKS)
    for name in PAPER_TASKS:
        assert set(TASKS[name].paper) == {"CLAP", "Pengi", "ParaCLAP", "SmoothCLAP"}, name
    assert TASKS["iemocap"].paper["SmoothCLAP"] == pytest.approx(.606)
    assert TASKS["tess"].paper["CLAP"] == pytest.approx(.232)
    assert get_task("CREMA-D") is TASKS["crema-d"] and get_task("aibo") is TASKS["aibo-2"]
    with pytest.raises(ValueError, match="unknown task"):
        get_task("nope")


def test_prompts_follow_design():
    iemo = TASKS["iemocap"].prompt_texts()
    assert iemo == {"neutral": "this person is feeling neutral.", "happy": "this person is feeling happy.",
                    "angry": "this person is feeling anger.", "sad": "this person is feeling sadness."}
    assert TASKS["iemocap"].fold_by == "split"
    assert TASKS["alc"].prompt_texts() == {"al": "intoxicated with alcohol", "nal": "not intoxicated with alcohol"}
    assert TASKS["sld"].prompt_texts() == {"l": "likeable", "nl": "not likeable"}
    assert TASKS["aibo-2"].prompt_texts() == {"idl": "non-negative", "neg": "negative"}
    assert TASKS["aibo-5"].loader_options == {"classes": 5} and TASKS["aibo-5"].split == "test"
    assert list(TASKS["ravdess"].prompt_texts().values()) == [
        "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    assert set(TASKS["tess"].prompt_texts().values()) == {
        "neutral", "happy", "sadness", "angry", "fear", "disgust", "pleasant surprise"}
    assert len(TASKS["emodb"].labels) == 7 and len(TASKS["savee"].labels) == 7
    for t in TASKS.values():
        json.dumps(t.to_dict())


# ------------------------------------------------------------------------------ fixture trees + model


def make_savee(root: Path) -> Path:
    for spk in ["DC", "JE"]:
        for code in ["a01", "d02", "f03", "h04", "n05", "sa06", "su07"]:
            wav(root / "AudioData" / spk / f"{code}.wav")
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpora")
    make_emodb(root / "emodb")
    make_ravdess(root / "RAVDESS")
    make_tess(root / "tess")
    make_cremad(root / "CREMA-D")
    make_iemocap(root / "iemocap")
    make_aibo(root / "aibo")
    make_alc(root / "alc")
    make_sld(root / "sld")
    make_emovo(root / "emovo")
    make_turevdb(root / "TurEV-DB")
    return root  # no savee: "all" must skip it


@pytest.fixture(scope="module")
def model_dir(synth_table, shared_cache, tmp_path_factory) -> Path:
    from smoothclap.config import RunConfig, loss_preset
    from smoothclap.trainer import prepare
    from smoothclap.trainer import train

    cfg = RunConfig()
    cfg.train.epochs = 2
    cfg.train.batch_size = 8
    cfg.model.embed_dim = 16
    cfg.loss = loss_preset("clap")
    prep = prepare(cfg, synth_table, cache_dir=shared_cache, progress=False)
    run = tmp_path_factory.mktemp("task_model")
    train(cfg, prep, run_dir=run, progress=False)
    return run / "model"


@pytest.fixture(scope="module")
def model(model_dir):
    from smoothclap.model import SmoothClapModel

    return SmoothClapModel.from_pretrained(model_dir)


def test_corpus_lookup(data_root, tmp_path):
    assert find_corpus_root(TASKS["ravdess"], data_root).name == "RAVDESS"  # case-insensitive
    assert find_corpus_root(TASKS["crema-d"], data_root).name == "CREMA-D"
    assert find_corpus_root(TASKS["emodb"], data_root / "emodb") == data_root / "emodb"  # root is the corpus
    with pytest.raises(CorpusNotFound, match="savee"):
        find_corpus_root(TASKS["savee"], data_root)
    found, missing = tasks_present(data_root)
    assert {t.name for t in found} == set(TASKS) - {"savee"} and set(missing) == {"savee"}


def test_task_rows(data_root):
    assert len(load_task_table(TASKS["aibo-2"], data_root)) == 3  # Mont only
    five = load_task_table(TASKS["aibo-5"], data_root)
    assert set(five["school"]) == {"Mont"} and set(five["label"]) <= set(TASKS["aibo-5"].labels)
    assert set(load_task_table(TASKS["alc"], data_root)["split"]) == {"test"}
    assert len(load_task_table(TASKS["sld"], data_root)) == 2
    assert len(load_task_table(TASKS["ravdess"], data_root)) == 6  # speech only


def test_run_task_iemocap_averages_sessions(model, data_root, shared_cache):
    from smoothclap.evaluate import zero_shot_evaluate

    res = run_task("iemocap", model, data_root, cache_dir=shared_cache)
    assert res["n_folds"] == 2 and [f["fold"] for f in res["folds"]] == ["Session1", "Session2"]
    assert [f["n"] for f in res["folds"]] == [4, 2] and res["n"] == 6
    assert res["uar"] == pytest.approx(np.mean([f["uar"] for f in res["folds"]]))
    assert res["wa"] == pytest.approx(np.mean([f["wa"] for f in res["folds"]]))
    assert np.asarray(res["confusion"]).sum() == 6
    assert res["prompt_texts"]["angry"] == ["this person is feeling anger."]
    # the same as scoring each session by hand with the task's prompts
    table = load_task_table(TASKS["iemocap"], data_root)
    for f in res["folds"]:
        sub = table[table["split"] == f["fold"]]
        ev = zero_shot_evaluate(model, sub, list(TASKS["iemocap"].labels), prompts=TASKS["iemocap"].prompt_map(),
                                templates="this person is feeling {label}.", cache_dir=shared_cache, progress=False)
        assert ev.metrics["uar"] == pytest.approx(f["uar"])
    assert res["trained_on"] == ["synthetic"] and res["warning"] is None
    assert set(res["predictions"]["fold"]) == {"Session1", "Session2"}


@pytest.mark.parametrize("name,n", [("emodb", 7), ("tess", 17), ("crema-d", 6), ("aibo-2", 3), ("alc", 2)])
def test_run_task_pool(model, data_root, shared_cache, name, n):
    res = run_task(name, model, data_root, cache_dir=shared_cache)
    assert res["n"] == n and res["n_folds"] == 1 and 0.0 <= res["uar"] <= 1.0
    assert res["labels"] == list(TASKS[name].labels)
    assert [c for c in res["predictions"].columns if c.startswith("p_")] == [f"p_{l}" for l in TASKS[name].labels]


def test_refuses_trained_corpus(model, data_root, shared_cache):
    m = copy.deepcopy(model)
    m.config.trained_on = ["EmoDB", "synthetic"]
    with pytest.raises(TrainedCorpusError, match="emodb"):
        run_task("emodb", m, data_root, cache_dir=shared_cache)
    res = run_task("emodb", m, data_root, cache_dir=shared_cache, allow_trained_corpus=True)
    assert res["warning"].startswith("WARNING") and "not zero-shot" in res["warning"]
    run_task("tess", m, data_root, cache_dir=shared_cache)  # other corpora are fine


def test_cli_task_all_report(model_dir, data_root, shared_cache, tmp_path, capsys):
    from smoothclap.cli import main

    out = tmp_path / "ev"
    rc = main(["-q", "evaluate", "--task", "all", "--data-root", str(data_root), "--model", str(model_dir),
               "--cache-dir", str(shared_cache), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "skipping task savee" in printed and "| iemocap |" in printed
    res = json.loads((out / "results.json").read_text())
    names = [r["task"] for r in res["results"]]
    assert set(names) == set(TASKS) - {"savee"} and "savee" in res["missing"]
    assert res["trained_on"] == ["synthetic"]
    report = (out / "report.md").read_text()
    assert "Trained on: synthetic" in report and "paper SmoothCLAP" in report and "savee" in report
    assert "| iemocap | 6 | 2 |" in report
    for name in names:
        assert (out / f"confusion_{name}.png").stat().st_size > 0
        assert (out / f"predictions_{name}.csv").exists()


def test_cli_task_refusal_and_savee(model_dir, data_root, shared_cache, tmp_path, capsys):
    from smoothclap.cli import main
    from smoothclap.model import SmoothClapModel

    m = SmoothClapModel.from_pretrained(model_dir)
    m.config.trained_on = ["tess"]
    m.save_pretrained(tmp_path / "m")
    base = ["-q", "evaluate", "--model", str(tmp_path / "m"), "--data-root", str(data_root),
            "--cache-dir", str(shared_cache)]
    assert main(base + ["--task", "tess"]) == 2
    assert "refusing" in capsys.readouterr().err
    assert main(base + ["--task", "tess", "--allow-trained-corpus"]) == 0
    assert main(base + ["--task", "savee"]) == 2
    assert "no folder for corpus 'savee'" in capsys.readouterr().err
    savee_root = make_savee(tmp_path / "SAVEE")
    assert main(base[:-4] + ["--data-root", str(savee_root), "--cache-dir", str(shared_cache),
                             "--task", "savee", "--out", str(tmp_path / "sv")]) == 0
    r = json.loads((tmp_path / "sv" / "results.json").read_text())["results"][0]
    assert r["n"] == 14 and r["chance_uar"] == pytest.approx(1 / 7)


def test_cli_task_all_reports_broken_corpus(model_dir, shared_cache, tmp_path, capsys):
    from smoothclap.cli import main

    root = tmp_path / "data"
    make_emodb(root / "EmoDB")
    (root / "savee").mkdir()  # present but not in SAVEE's layout
    rc = main(["-q", "evaluate", "--task", "all", "--data-root", str(root), "--model", str(model_dir),
               "--cache-dir", str(shared_cache), "--out", str(tmp_path / "ev")])
    assert rc == 0
    assert "task savee failed" in capsys.readouterr().out
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert [r["task"] for r in res["results"]] == ["emodb"] and "savee" in res["errors"]
    assert "ravdess" in res["missing"]
