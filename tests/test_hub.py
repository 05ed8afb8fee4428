"""The Hugging Face Hub, offline: loading "<org>/<name>" from a pre-filled Hugging Face cache with
HF_HUB_OFFLINE=1 (a subprocess, as a user runs it), pushing with the Hub calls faked at the
huggingface_hub boundary, the model card, and recording results."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from smoothclap.model import SmoothClapConfig, SmoothClapModel


@pytest.fixture()
def model(tmp_path):
    torch.manual_seed(0)
    m = SmoothClapModel(SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6",
                                         audio_dim=6, text_dim=5, embed_dim=8, trained_on=["emodb", "tess"],
                                         loss={"preset": "smoothclap", "beta": 0.1, "gamma": 0.5}))
    m.fit_normalization(torch.randn(20, 6).numpy())
    m.results = [{"task": "ravdess", "corpus": "ravdess", "n": 1440, "uar": 0.25, "wa": 0.27, "macro_f1": 0.2,
                  "chance_uar": 0.125, "protocol": "all clips; one pool"}]
    return m


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_model_card(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    card = (tmp_path / "m" / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "smoothclap"
    assert meta["datasets"] == ["emodb", "tess"] and "speech-emotion-recognition" in meta["tags"]
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.25
    assert "MIT" in card and "Apache-2.0" in card and "whisper-tiny-en" in card and "beta 0.1" in card
    assert "| ravdess | 1440 | 0.250 |" in card
    assert "Feature normalisation: none. Loudness: as recorded." in card
    m2 = SmoothClapModel.from_pretrained(tmp_path / "m")
    assert m2.results == model.results
    # a non-commercial tower makes the whole model non-commercial
    model.config.audio_tower = "hf:audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim?pool=mean"
    model.config.feature_norm_group, model.config.fallback_stats = "corpus", "shrunk"
    model.save_pretrained(tmp_path / "nc")
    card = (tmp_path / "nc" / "README.md").read_text()
    assert _front_matter(card)["license"] == "cc-by-nc-sa-4.0"
    # how a clip without a group is normalised is part of what a user must know
    assert "Feature normalisation: corpus (per-group z-score; without groups the stored training statistics, " \
           "`shrunk`)." in card


def test_from_hub_id_offline_cache(model, tmp_path):
    """A pre-filled Hugging Face cache, HF_HUB_OFFLINE=1: "org/name" (and a revision) load from it."""
    SHA = "0123abcd" * 5  # a commit hash (40 hex digits)
    snap = tmp_path / "hf" / "hub" / "models--org--emotion" / "snapshots" / SHA
    model.save_pretrained(snap)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text(SHA)
    code = ("import sys, torch; from smoothclap.model import SmoothClapModel as M\n"
            f"m = M.from_pretrained('org/emotion'); r = M.from_pretrained('org/emotion', revision='{SHA}')\n"
            "print(m.config.trained_on, m.results[0]['task'], float(m.logit_scale))\n"
            "try:\n    M.from_pretrained('org/missing')\nexcept Exception as e:\n    print('ERR', type(e).__name__, e)\n")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    first, err = out.stdout.strip().splitlines()[:2]
    assert first.startswith("['emodb', 'tess'] ravdess ")
    assert abs(float(first.split()[-1]) - float(model.logit_scale)) < 1e-6
    assert err.startswith("ERR BadInputError org/missing: not a local folder, and not on the Hugging Face Hub")


def test_push_to_hub_faked(model, tmp_path, monkeypatch):
    import huggingface_hub

    calls = {}

    def create_repo(self, repo_id, **kw):
        calls["create"] = (repo_id, kw)

    def upload_folder(self, *, folder_path, repo_id, **kw):
        dest = tmp_path / "remote" / repo_id
        shutil.copytree(folder_path, dest)
        calls["upload"] = (repo_id, kw)
        return type("Info", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    url = model.push_to_hub("me/emo", private=True)
    assert url.endswith("/commit/1") and calls["create"] == ("me/emo", {"repo_type": "model", "private": True,
                                                                        "exist_ok": True})
    remote = tmp_path / "remote" / "me" / "emo"
    assert {p.name for p in remote.iterdir()} >= {"config.json", "model.safetensors", "README.md", "results.json"}
    again = SmoothClapModel.from_pretrained(remote)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])


def test_record_results_rewrites_card(model, tmp_path):
    from smoothclap.hub import record_results

    model.save_pretrained(tmp_path / "m")
    record_results(tmp_path / "m", [{"task": "ravdess", "uar": 0.3, "n": 1440}, {"task": "tess", "uar": 0.4, "n": 2800}])
    rows = json.loads((tmp_path / "m" / "results.json").read_text())
    assert {r["task"]: r["uar"] for r in rows} == {"ravdess": 0.3, "tess": 0.4}  # newer replaces older
    assert "| tess | 2800 | 0.400 |" in (tmp_path / "m" / "README.md").read_text()
