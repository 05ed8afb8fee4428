"""The LOCO cross-corpus benchmark (smoothclap.experiments.loco) on five tiny corpora in the official
EmoDB / RAVDESS / TESS / EMOVO / TurEV-DB layouts, made of the synthetic espeak-ng clips, scored
under the three protocols; plus a cheap real-data check."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("opensmile")

from smoothclap.experiments import loco as benchmark  # noqa: E402
from smoothclap.corpora import training_table  # noqa: E402
from smoothclap.experiments.loco import LocoConfig, linear_probe, run_loco, validation_folds  # noqa: E402
from smoothclap.tasks import TASKS  # noqa: E402

def _cfg(root, cache, out, **kw):
    base = dict(data_root=str(root), seeds=(0, 1), epochs=2, batch_size=8, embed_dim=16, cache_dir=str(cache),
                out_dir=str(out) if out else None, num_workers=1)
    base.update(kw)
    return LocoConfig(**base)


def test_training_vocabulary():
    tabs = {"emodb": pd.DataFrame({"file": ["a", "b"], "label": ["anger", "boredom"], "corpus": "emodb"}),
            "tess": pd.DataFrame({"file": ["c", "d"], "label": ["pleasant surprise", "sad"], "corpus": "tess"})}
    t = training_table(tabs)
    assert t["label"].tolist() == ["angry", "bored", "surprised", "sad"]
    assert t["label_original"].tolist() == ["anger", "boredom", "pleasant surprise", "sad"]


def test_validation_folds_use_training_corpora_only():
    tabs = {c: pd.DataFrame({"file": list("abcdef"), "label": "x", "speaker": list("112233"), "corpus": c})
            for c in ("ravdess", "tess")}
    folds = validation_folds(tabs, "corpus")
    assert [(sorted(tr), sorted(va)) for tr, va in folds] == [(["tess"], ["ravdess"]), (["ravdess"], ["tess"])]
    (tr, va), = validation_folds(tabs, "speakers")
    for c in tabs:
        assert set(tr[c]["speaker"]).isdisjoint(va[c]["speaker"]) and len(tr[c]) + len(va[c]) == 6


def test_linear_probe_speaker_folds():
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 40)
    x = rng.standard_normal((120, 8))
    x[:, :3] += 3.0 * (y[:, None] == np.array(["a", "b", "c"])[None, :])
    spk = np.tile(["s1", "s2"], 60)
    p = linear_probe(x, y, spk)
    assert p["n_folds"] == 2 and p["uar"] > 0.8 and len(p["folds"]) == 2
    assert {tuple(f["speakers"]) for f in p["folds"]} == {("s1",), ("s2",)}


def test_loco_loop_structure_and_no_leak(loco_root, shared_cache, tmp_path, monkeypatch):
    import smoothclap.experiments.loco as prep_mod

    seen: list[set] = []
    real_prepare = prep_mod.prepare

    def spy(cfg, table, **kw):
        seen.append(set(table["corpus"]))
        return real_prepare(cfg, table, **kw)

    monkeypatch.setattr(prep_mod, "prepare", spy)
    out = tmp_path / "loco"
    res = run_loco(_cfg(loco_root, shared_cache, out))
    five = ["emodb", "ravdess", "tess", "emovo", "turevdb"]
    assert list(res["heldout"]) == five
    assert seen == [set(five) - {h} for h in five]
    chance = {"emodb": 1 / 6, "ravdess": 1 / 6, "tess": 1 / 5, "emovo": 1 / 5, "turevdb": 1 / 4}
    for h, e in res["heldout"].items():
        assert h not in e["trained_on"] and h not in e["trained_on_models"]
        assert e["trained_on"] == sorted(set(benchmark.LOCO_CORPORA) - {h})
        for p in ("whole", "skewed", "single"):
            for m in ("CLAP", "SmoothCLAP"):
                s = e["protocols"][p]["methods"][m]
                assert len(s["uar"]) == 2 and s["seeds"] == [0, 1] and 0 <= s["mean"] <= 1 and s["sd"] >= 0
            w = e["protocols"][p]["wins"]
            assert w["n"] == 2 and w["smoothclap"] + w["clap"] + w["ties"] == 2
        for m in ("CLAP", "SmoothCLAP"):  # robust = mean of the protocols, seed by seed
            per_seed = np.mean([e["protocols"][p]["methods"][m]["uar"] for p in ("whole", "skewed", "single")], 0)
            np.testing.assert_allclose(e["robust"][m]["uar"], per_seed)
            # without feature normalisation the single-clip path is the whole-corpus path
            np.testing.assert_allclose(e["protocols"]["single"]["methods"][m]["uar"],
                                       e["protocols"]["whole"]["methods"][m]["uar"])
        assert e["methods"] == e["protocols"]["whole"]["methods"]
        assert e["probe"]["n_folds"] == (2 if h == "tess" else 4) and 0 <= e["probe"]["uar"] <= 1
        assert e["chance"] == pytest.approx(chance[h])
        # each held-out corpus is scored with its own task's prompt words
        assert e["labels"] == list(TASKS[h].labels)
        for m in ("clap", "smoothclap"):
            cfg = json.loads((out / "models" / f"heldout-{h}" / m / "config.json").read_text())
            assert h not in cfg["trained_on"]
            assert (out / "figures" / f"confusion_{h}_{m}.png").exists()
    sm = res["summary"]
    assert sm["n_corpora"] == 5 and sm["robust"]["methods"]["CLAP"]["mean"] == pytest.approx(
        np.mean([e["robust"]["CLAP"]["mean"] for e in res["heldout"].values()]))
    assert res["heldout"]["tess"]["paper"]["SmoothCLAP"] == pytest.approx(.275)
    assert "emodb (emovo + ravdess + tess + turevdb)" in res["table_md"]
    assert "| **mean of 5** |" in res["table_md"] and "| emovo | 0.200 | skewed |" in res["table_md"]
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["heldout"]) == set(five)
    report = (out / "report.md").read_text()
    assert "| held out (trained on)" in report and (out / "figures" / "loco_uar.png").exists()


def test_skewed_speakers_keep_two_emotions_each():
    from smoothclap.experiments.protocols import skew_speakers, skewed_rows

    t = pd.DataFrame({"file": [f"f{i}" for i in range(60)], "speaker": np.repeat(list("abc"), 20),
                      "label": np.tile(list("uvwxy"), 12)})
    s = skew_speakers(t, 2, seed=1)
    assert s.groupby("speaker")["label"].nunique().tolist() == [2, 2, 2] and len(s) == 24
    assert s["file"].tolist() == t["file"].iloc[skewed_rows(t, 2, seed=1)].tolist()
    assert not s.equals(skew_speakers(t, 2, seed=2)) and s.equals(skew_speakers(t, 2, seed=1))


def test_validate_never_sees_heldout(loco_root, shared_cache, monkeypatch, capsys):
    import smoothclap.experiments.loco as prep_mod

    seen: list[set] = []
    real_prepare = prep_mod.prepare

    def spy(cfg, table, **kw):
        seen.append(set(table["corpus"]))
        return real_prepare(cfg, table, **kw)

    monkeypatch.setattr(prep_mod, "prepare", spy)
    grid = [{"small": ["model.embed_dim=8"], "whisper": ["towers.audio=whisper-tiny-en"]},
            {"1 epoch": ["train.epochs=1"]}]
    lc = _cfg(loco_root, shared_cache, None, heldout=("tess",), seeds=(0,), probe=False, validate=True,
              validation_seeds=(0,), grid=grid, save_models=False)
    res = run_loco(lc)
    e = res["heldout"]["tess"]
    assert all("tess" not in s for s in seen) and len(seen) == 3 * 4 + 1  # 3 candidates x 4 folds + final
    v = e["validation"]
    first = max(["small", "whisper"], key=lambda n: v["candidates"][n]["score"])
    assert v["stages"] == [["small", "whisper"], [f"{first}; 1 epoch"]]
    assert v["candidates"][f"{first}; 1 epoch"]["overrides"] == grid[0][first] + ["train.epochs=1"]
    assert v["best"] in (first, f"{first}; 1 epoch") and e["overrides"] == v["candidates"][v["best"]]["overrides"]
    for c in v["candidates"].values():
        assert [f["val"] for f in c["per_fold"]] == [["emodb"], ["emovo"], ["ravdess"], ["turevdb"]]


def test_validate_speaker_scheme(loco_root, shared_cache):
    lc = _cfg(loco_root, shared_cache, None, heldout=("emodb",), seeds=(0,), epochs=1, probe=False,
              validate=True, validation_scheme="speakers", validation_seeds=(0,),
              grid={"only": ["model.embed_dim=8"]}, save_models=False)
    e = run_loco(lc)["heldout"]["emodb"]
    (fold,) = e["validation"]["candidates"]["only"]["per_fold"]
    assert fold["train"] == fold["val"] == ["emovo", "ravdess", "tess", "turevdb"] and 0 <= fold["uar"] <= 1
    assert e["validation"]["best"] == "only" and e["overrides"] == ["model.embed_dim=8"]


def test_cli_benchmark(loco_root, shared_cache, tmp_path, capsys):
    from smoothclap.cli import main

    out = tmp_path / "b"
    rc = main(["-q", "benchmark", "loco", "--data-root", str(loco_root), "--heldout", "emodb", "--seeds", "0",
               "--epochs", "1", "--embed-dim", "8", "--batch-size", "8", "--no-probe",
               "--set", "model.feature_norm_group=corpus", "--cache-dir", str(shared_cache), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "emodb (emovo + ravdess + tess + turevdb)" in printed and (out / "report.md").exists()
    # the models say how their inputs were normalised (test clips are normalised the same way)
    cfg = json.loads((out / "models" / "heldout-emodb" / "smoothclap" / "config.json").read_text())
    assert cfg["feature_norm_group"] == "corpus" and cfg["trained_on"] == ["emovo", "ravdess", "tess", "turevdb"]


def test_regime_table_masks_and_flips_training_labels_only():
    tabs = {c: pd.DataFrame({"file": [f"{c}{i}" for i in range(40)], "label": ["anger", "sadness"] * 20,
                             "speaker": np.repeat(list("abcd"), 10), "corpus": c}) for c in ("emodb", "tess")}
    table = training_table(tabs)
    same = benchmark.regime_table(_cfg(".", None, None), table)
    pd.testing.assert_frame_equal(same, table)  # the defaults change nothing
    lc = _cfg(".", None, None, labelled_fraction=0.25, label_noise=0.5, regime_seed=3)
    out = benchmark.regime_table(lc, table)
    from smoothclap.corpora import labelled_mask

    has = labelled_mask(out)
    assert [int(has[out["corpus"] == c].sum()) for c in ("emodb", "tess")] == [10, 10]
    assert out.loc[~has, "label"].isna().all()
    assert int(out["label_flipped"].sum()) == 40  # half of each corpus' 40 labels, before masking
    pd.testing.assert_frame_equal(out, benchmark.regime_table(lc, table))  # seeded


def test_cli_regimes_study(loco_root, shared_cache, tmp_path, capsys):
    """The regimes study through the benchmark: 30 % labels, 20 % noise, captions without the
    emotion word, the soft-target source chosen on validation speakers (--grid targets)."""
    from smoothclap.cli import main

    out = tmp_path / "r"
    rc = main(["-q", "benchmark", "loco", "--data-root", str(loco_root), "--heldout", "tess", "--seeds", "0",
               "--epochs", "1", "--embed-dim", "8", "--batch-size", "8", "--no-probe", "--validate",
               "--validation-scheme", "speakers", "--validation-seeds", "0", "--grid", "targets",
               "--candidates", "q from labels;q from the audio tower", "--labelled-fraction", "0.3",
               "--label-noise", "0.2", "--set", "captions.emotion_word=false",
               "--cache-dir", str(shared_cache), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    e = res["heldout"]["tess"]
    assert res["config"]["labelled_fraction"] == 0.3 and res["config"]["label_noise"] == 0.2
    assert e["validation"]["best"] in ("q from labels", "q from the audio tower")
    assert set(e["validation"]["candidates"]) == {"q from labels", "q from the audio tower"}
    # the report's validation table shows each candidate per method and per protocol
    c = e["validation"]["candidates"]["q from labels"]
    single = np.mean([f["single"] for f in c["per_fold"]])
    row = next(r for r in (out / "report.md").read_text().splitlines() if r.startswith("| q from labels |"))
    assert len(row.strip("|").split("|")) == 8 and f"| {single:.3f} | {c['seconds']:.0f} |" in row
    assert "captions.emotion_word=false" in e["overrides"]
    assert set(e["target_precision"]) == {"precision", "precision_chance"}
    examples = " ".join(e["caption_example"]).lower()
    assert not any(w in examples for w in ("angry", "sad", "happy", "neutral", "fear", "disgust")), examples


# ------------------------------------------------------------------------------ real data (cheap)


def _data_dir() -> Path | None:
    env = os.environ.get("SMOOTHCLAP_DATA")
    d = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return d if d.is_dir() else None


@pytest.mark.realdata
def test_real_loco_tables():
    """The real corpora load as the benchmark expects (no audio decoded, no training)."""
    d = _data_dir()
    if d is None or not all((d / c).is_dir() for c in benchmark.LOCO_CORPORA):
        pytest.skip("real corpora not available (set SMOOTHCLAP_DATA or provide ../shared/data)")
    tabs = {c: benchmark.load_corpus(c, d) for c in benchmark.LOCO_CORPORA}
    assert {c: len(t) for c, t in tabs.items()} == {"emodb": 535, "ravdess": 1440, "tess": 2800, "emovo": 588,
                                                    "turevdb": 1735}
    train = training_table({c: tabs[c] for c in ("emodb", "tess")})
    assert set(train["label"]) == {"angry", "bored", "disgusted", "fearful", "happy", "sad", "neutral", "surprised"}
    assert set(train["corpus"]) == {"emodb", "tess"}


@pytest.mark.parametrize("flag,value", [("--labelled-fraction", "0"), ("--labelled-fraction", "1.5"),
                                        ("--label-noise", "1"), ("--label-noise", "-0.1")])
def test_regime_flags_out_of_range_are_one_line_errors(flag, value, capsys):
    from smoothclap.cli import main

    rc = main(["benchmark", "loco", "--data-root", "/nonexistent", flag, value])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().splitlines()[-1].startswith(f"error: {flag}: {value}") and "Traceback" not in err


def test_every_grid_candidate_is_a_valid_recipe():
    """Each candidate of the shipped validation grids builds a run config on top of `--config
    recommended` (a typo in an override would otherwise surface an hour into a validation run)."""
    from smoothclap.config import parse_override
    from smoothclap.experiments.loco import build_config
    from smoothclap.experiments.settings import GRIDS

    lc = LocoConfig(config="recommended")
    for grid in GRIDS.values():
        for stage in grid:
            for name, overrides in stage.items():
                cfg = build_config(lc, overrides)
                for o in overrides:
                    dotted, value = parse_override(o)
                    section, key = dotted.split(".")
                    assert getattr(getattr(cfg, section), key) == value, (name, o)


def test_grid_candidates_mean_what_their_names_say_on_top_of_any_recipe():
    """A candidate sets every setting the recipe grids vary, so on top of `--config recommended`
    (which removes directions and adds views) "no directions" has none; and the recipe's own
    candidate is `--config recommended` itself on those settings."""
    from smoothclap.config import load_config
    from smoothclap.experiments.loco import build_config
    from smoothclap.experiments.settings import EXPLORE_GRID, RECIPE_GRID, _REC

    lc = LocoConfig(config="recommended")
    for grid in (RECIPE_GRID, EXPLORE_GRID):
        for name, overrides in grid[0].items():
            cfg = build_config(lc, overrides)
            assert (cfg.model.nuisance_dims > 0) == ("directions removed" in name), name
            assert (cfg.train.augment_views > 0) == ("augmented views" in name), name
            assert (cfg.model.feature_norm_group is None) == ("no norm" in name), name
            assert (cfg.model.fallback_stats == "shrunk") == ("shrunk fallback" in name), name
            assert (cfg.towers.text == "e5-small") == ("e5-small" in name), name
    rec, shipped = build_config(lc, RECIPE_GRID[0][_REC]), load_config("recommended")
    for section, key in (("towers", "audio"), ("towers", "text"), ("model", "feature_norm_group"),
                         ("model", "fallback_stats"), ("model", "nuisance_dims"), ("model", "loudness"),
                         ("train", "augment_views"), ("train", "single_clip_rows"), ("inference", "prompt_language")):
        assert getattr(getattr(rec, section), key) == getattr(getattr(shipped, section), key), (section, key)
