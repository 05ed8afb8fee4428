"""The offline demo end to end at a small size: report, models, and the results on their cards."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("opensmile")


def test_demo_small(tmp_path, shared_cache):
    from conftest import have_synth_tools

    if not have_synth_tools():
        pytest.skip("espeak-ng and sox are needed")
    from smoothclap.experiments.demo import run_demo
    from smoothclap.experiments.settings import DemoConfig
    from smoothclap.model import SmoothClapModel

    res = run_demo(DemoConfig(out_dir=str(tmp_path / "demo"), seeds=[0], epochs=2, sentences_per_voice=1,
                              de_sentences_per_voice=1, progress=False))
    out = tmp_path / "demo"
    assert "| test_en" in res["table_md"] and (out / "report.md").exists()
    for name in ("clap", "smoothclap"):
        m = SmoothClapModel.from_pretrained(out / "models" / name)
        assert [r["task"] for r in m.results] == ["synthetic test_en", "synthetic test_de"]
        card = (out / "models" / name / "README.md").read_text()
        assert "| synthetic test_en |" in card and "model-index" in card
    summary = json.loads((out / "summary.json").read_text())
    assert summary["per_seed"]["SmoothCLAP/test_en"][0] == pytest.approx(
        SmoothClapModel.from_pretrained(out / "models" / "smoothclap").results[0]["uar"])
