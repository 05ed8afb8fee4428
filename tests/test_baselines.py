"""Any Hugging Face ClapModel as a zero-shot baseline (``hf-clap:<folder>``), offline, on tiny
randomly initialised models saved to temporary folders: classify, evaluate --manifest / --task
(with the task's prompts), an extra column of the LOCO benchmark; fused models' ``is_longer``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_models import tiny_clap  # noqa: E402

pytest.importorskip("opensmile")


@pytest.fixture(scope="module")
def clap_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("clap")
    return {"unfused": tiny_clap(root / "unfused", fusion=False), "fused": tiny_clap(root / "fused", fusion=True)}


def _reference(folder, waves16, texts) -> np.ndarray:
    """softmax(exp(logit_scale_a) * audio @ text^T) straight from transformers."""
    import soxr
    import transformers as tf

    model = tf.ClapModel.from_pretrained(folder).eval()
    proc = tf.ClapProcessor.from_pretrained(folder)
    fused = model.config.audio_config.enable_fusion
    za = []
    for w in waves16:
        x48 = soxr.resample(w, 16000, 48000).astype(np.float32)
        np.random.seed(0)
        enc = proc(audio=[x48], sampling_rate=48000, truncation="fusion" if fused else "rand_trunc",
                   return_tensors="pt")
        longer = torch.tensor([[len(x48) > proc.feature_extractor.nb_max_samples]])
        with torch.no_grad():
            out = model.get_audio_features(input_features=enc["input_features"], is_longer=longer)
        za.append(torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1))
    tok = proc.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.get_text_features(**tok)
    zt = torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1)
    logits = model.logit_scale_a.detach().exp() * torch.cat(za) @ zt.T
    return torch.softmax(logits, -1).numpy()


@pytest.mark.parametrize("kind", ["unfused", "fused"])
def test_classify_matches_transformers(clap_dirs, synth_table, kind):
    from smoothclap.audio import read_audio
    from smoothclap.models import load_model
    from smoothclap.classification import classify_files

    files = synth_table["file"].tolist()[:4]
    long = np.concatenate([read_audio(f) for f in synth_table["file"].tolist()[:6]])  # > 10 s: is_longer
    assert len(long) > 10 * 16000
    labels = ["angry", "sad", "happy"]
    model = load_model(f"hf-clap:{clap_dirs[kind]}")
    assert model.config.trained_on == [] and model.config.name.startswith("hf-clap:")
    got = classify_files(model, files, labels).table[[f"p_{x}" for x in labels]].to_numpy()
    ref = _reference(clap_dirs[kind], [read_audio(f) for f in files], labels)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    from smoothclap.zeroshot import ZeroShotClassifier

    _, p_long = ZeroShotClassifier(model, labels).predict([long])
    np.testing.assert_allclose(p_long, _reference(clap_dirs[kind], [long], labels), atol=1e-5)


def test_command_line_with_a_clap_baseline(clap_dirs, synth_root, loco_root, shared_cache, tmp_path, capsys):
    from smoothclap.cli import main

    spec = f"hf-clap:{clap_dirs['unfused']}"
    clip = str(next((synth_root / "wav").rglob("*.wav")))
    assert main(["-q", "classify", "--model", spec, "--labels", "angry,sad", clip]) == 0
    assert "angry" in capsys.readouterr().out
    assert main(["-q", "evaluate", "--model", spec, "--manifest", str(synth_root / "manifest.csv"),
                 "--cache-dir", str(shared_cache)]) == 0
    assert "UAR" in capsys.readouterr().out
    # a task, with the task's own prompts; and as an extra row beside a smoothclap model
    out = tmp_path / "ev"
    assert main(["-q", "evaluate", "--model", spec, "--task", "tess", "--data-root", str(loco_root),
                 "--cache-dir", str(shared_cache), "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())["results"][0]
    assert res["prompt_texts"]["sad"] == ["sadness"] and res["n"] == 40


def test_loco_baseline_column(clap_dirs, loco_root, shared_cache, tmp_path):
    from smoothclap.experiments.loco import LocoConfig, run_loco

    spec = f"hf-clap:{clap_dirs['unfused']}"
    lc = LocoConfig(data_root=str(loco_root), seeds=(0,), epochs=1, batch_size=8, embed_dim=16,
                    cache_dir=str(shared_cache), out_dir=str(tmp_path / "loco"), num_workers=1, heldout=("tess",),
                    probe=False, save_models=False, baselines=(spec,))
    res = run_loco(lc)
    b = res["heldout"]["tess"]["baselines"][spec]
    assert 0.0 <= b["uar"] <= 1.0 and np.asarray(b["confusion"]).sum() == 40
    assert spec in res["table_md"].splitlines()[0]
    assert (tmp_path / "loco" / "report.md").read_text().count(spec) >= 1


def test_task_report_with_baseline_rows(clap_dirs, loco_root, shared_cache, tmp_path):
    from smoothclap.cli import main
    from smoothclap.config import RunConfig
    from smoothclap.trainer import prepare, train
    from smoothclap.corpora import load

    cfg = RunConfig()
    cfg.train.epochs, cfg.train.batch_size, cfg.model.embed_dim = 1, 8, 16
    table = load("emodb", loco_root / "emodb")
    res = train(cfg, prepare(cfg, table, cache_dir=shared_cache, progress=False), run_dir=tmp_path / "run",
                progress=False)
    spec = f"hf-clap:{clap_dirs['unfused']}"
    out = tmp_path / "ev"
    # loco_root's corpora share their (synthetic) audio: the model's tess clips are its emodb training
    # clips by content, so scoring them needs --allow-trained-corpus (its row is marked)
    assert main(["-q", "evaluate", "--model", str(res.run_dir / "model"), "--baseline", spec, "--task", "tess",
                 "--data-root", str(loco_root), "--cache-dir", str(shared_cache), "--out", str(out),
                 "--allow-trained-corpus"]) == 0
    rows = json.loads((out / "results.json").read_text())["results"]
    assert [r["model"] for r in rows] == [str(res.run_dir / "model"), spec]
    assert "| model |" in (out / "report.md").read_text()
    assert len(list(out.glob("confusion_tess*.png"))) == 2
    assert pd.read_csv(next(out.glob("predictions_tess_*.csv"))).shape[0] == 40
