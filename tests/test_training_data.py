"""A run config's training data: several corpora / manifests at once with one caption vocabulary,
manifests without a split column, splits that match nothing."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from smoothclap.config import load_config
from smoothclap.errors import BadInputError
from smoothclap.trainer.data import load_sources


def _cfg(overrides):
    return load_config(None, overrides)


def test_several_corpora_one_vocabulary(loco_root):
    cfg = _cfg([f"data.sources=[{{corpus: emodb, root: {loco_root / 'emodb'}}}, "
                f"{{corpus: ravdess, root: {loco_root / 'ravdess'}, label_map: {{calm: relaxed}}}}]",
                "data.label_map={fear: scared}"])
    t = load_sources(cfg.data, cfg.data.split)
    assert set(t["corpus"]) == {"emodb", "ravdess"}
    emo = t[t["corpus"] == "emodb"]
    # EmoDB's words become the shared caption vocabulary; the corpus' own word is kept
    assert {"anger", "happiness", "sadness"} <= set(emo["label_original"])
    assert {"angry", "happy", "sad"} <= set(emo["label"]) and "anger" not in set(emo["label"])
    rav = t[t["corpus"] == "ravdess"]
    assert "relaxed" in set(rav["label"]) and "calm" not in set(rav["label"])  # the source's own map
    # data.label_map maps a corpus' own word, over the vocabulary: EmoDB's "fear" (else "fearful")
    assert set(emo.loc[emo["label_original"] == "fear", "label"]) == {"scared"}
    assert set(rav.loc[rav["label_original"] == "fearful", "label"]) == {"fearful"}
    # speaker ids repeat across corpora: prefixed
    assert all(s.startswith(("emodb:", "ravdess:")) for s in t["speaker"])


def test_manifest_without_split_column_trains(synth_root, shared_cache, tmp_path):
    from smoothclap.cli import main

    m = pd.read_csv(synth_root / "manifest.csv")
    assert "split" not in m.columns
    out = tmp_path / "run"
    rc = main(["-q", "train", "--config", "demo", "--manifest", str(synth_root / "manifest.csv"), "--out", str(out),
               "--set", "train.epochs=1", "--set", "model.embed_dim=16", "--set", f"cache_dir={shared_cache}"])
    assert rc == 0  # data.split: train (the default) applies to tables that have splits only
    assert len(json.loads((out / "history.json").read_text())) == 1


def test_split_that_matches_nothing_names_the_splits(synth_root, tmp_path):
    m = pd.read_csv(synth_root / "manifest.csv")
    m["split"] = ["train" if i % 4 else "test" for i in range(len(m))]
    m["file"] = [str(synth_root / f) for f in m["file"]]
    p = tmp_path / "m.csv"
    m.to_csv(p, index=False)
    cfg = _cfg([f"data.manifest={p}", "data.split=dev"])
    with pytest.raises(BadInputError, match=r"no rows of split 'dev' \(splits here: test, train\)"):
        load_sources(cfg.data, cfg.data.split)
    cfg = _cfg([f"data.manifest={p}"])
    assert len(load_sources(cfg.data, cfg.data.split)) == sum(m["split"] == "train")


def test_training_on_two_corpora_records_both(loco_root, shared_cache, tmp_path):
    from smoothclap.model import SmoothClapModel
    from smoothclap.trainer import run_training

    cfg = _cfg([f"data.sources=[{{corpus: emodb, root: {loco_root / 'emodb'}}}, {{corpus: tess, root: {loco_root / 'tess'}}}]",
                "train.epochs=1", "model.embed_dim=16", f"cache_dir={shared_cache}", f"out_dir={tmp_path / 'run'}"])
    run = run_training(cfg, progress=False)
    assert run.prepared.trained_on == ["emodb", "tess"]
    assert SmoothClapModel.from_pretrained(tmp_path / "run" / "model").config.trained_on == ["emodb", "tess"]
