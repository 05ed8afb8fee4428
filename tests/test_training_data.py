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


def test_train_bundle_on_disk_trains_as_in_memory(synth_root, shared_cache, tmp_path):
    """`train.bundle: disk` (the command line's path to memory-flat training: rows read per batch
    from the embedding cache) trains exactly as the in-memory bundle; `auto` falls back to memory
    when the settings need eGeMAPS, and `disk` then says why it cannot."""
    import numpy as np

    from smoothclap.trainer import run_training
    from smoothclap.trainer.mapped import CachedRows

    base = [f"data.manifest={synth_root / 'manifest.csv'}", "train.epochs=2", "train.batch_size=8",
            "model.embed_dim=16", "captions.variables=[]", f"cache_dir={shared_cache}"]
    runs = {}
    for where in ("memory", "disk"):
        runs[where] = run_training(_cfg(base + [f"train.bundle={where}", f"out_dir={tmp_path / where}"]), progress=False)
    assert isinstance(runs["disk"].prepared.audio, CachedRows) and isinstance(runs["memory"].prepared.audio, np.ndarray)
    h = {w: [e["loss"] for e in r.result.history] for w, r in runs.items()}
    assert h["memory"] == h["disk"]
    auto = run_training(_cfg([f"data.manifest={synth_root / 'manifest.csv'}", "train.epochs=1", "model.embed_dim=16",
                              "train.bundle=auto", f"cache_dir={shared_cache}", f"out_dir={tmp_path / 'auto'}"]),
                        progress=False)
    assert isinstance(auto.prepared.audio, np.ndarray)  # eGeMAPS captions: in memory
    with pytest.raises(BadInputError, match="captions.variables"):
        run_training(_cfg([f"data.manifest={synth_root / 'manifest.csv'}", "train.epochs=1", "train.bundle=disk",
                           f"cache_dir={shared_cache}", f"out_dir={tmp_path / 'disk2'}"]), progress=False)
