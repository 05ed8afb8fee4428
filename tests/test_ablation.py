"""The soft-target ablation (smoothclap.experiments.ablation) on three tiny corpora in the official layouts."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("opensmile")

from smoothclap.experiments.ablation import AblationConfig, run_ablation  # noqa: E402
from smoothclap.experiments.loco import LocoConfig  # noqa: E402


def test_ablation_selects_on_training_speakers_and_reports(loco_root, shared_cache, tmp_path):
    lc = LocoConfig(data_root=str(loco_root), heldout=("emodb",), seeds=(0, 1), epochs=2, batch_size=8,
                    embed_dim=16, cache_dir=str(shared_cache), out_dir=str(tmp_path / "abl"), num_workers=1,
                    probe=False)
    grid = {"paper": [], "center + diag .5": ["loss.target_standardize=center", "loss.calibrate=diag",
                                               "loss.calibrate_value=0.5"]}
    res = run_ablation(AblationConfig(loco=lc, val_seeds=(0,), shared_grid={"raw": []}, target_grid=grid))
    e = res["heldout"]["emodb"]
    assert e["trained_on"] == ["ravdess", "tess"]
    # validation speakers come from the training corpora only
    assert set(e["validation_speakers"]) == {"ravdess", "tess"}
    assert set(e["candidates"]) == {"raw", "raw / paper", "raw / center + diag .5"}
    assert e["best"]["CLAP"] == "raw" and e["best"]["SmoothCLAP"] in ("raw / paper", "raw / center + diag .5")
    # calibration moves the diagonal mass to the requested value; the paper's tau leaves q flatter
    cal = e["candidates"]["raw / center + diag .5"]["diagnostics"]
    assert abs(cal["q_diag"] - 0.5) < 0.15
    for m in ("CLAP", "SmoothCLAP"):
        assert len(e["final"][m]["uar"]) == 2 and 0 <= e["final"][m]["mean"] <= 1
    assert 0 <= e["wins"] <= 2
    saved = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert saved["heldout"]["emodb"]["best"] == e["best"]
    assert "(chosen)" in (tmp_path / "abl" / "ablation.md").read_text()
