"""End-to-end mode on CPU with tiny randomly initialised towers (Wav2Vec2Model, BertModel) saved to
local folders and a handful of generated clips: crops, gradient accumulation that keeps the
contrastive batch, frozen vs unfrozen towers, saving fine-tuned towers, resume."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from smoothclap.config import RunConfig, loss_preset  # noqa: E402
from smoothclap.trainer import Trainer as E2ETrainer  # noqa: E402
from smoothclap.trainer.steps import CropDataset, amp_dtype, random_crop  # noqa: E402
from smoothclap.model import SmoothClapModel  # noqa: E402
from smoothclap.trainer import prepare  # noqa: E402
from smoothclap.trainer import train  # noqa: E402

N = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tiny_models import tiny_bert, tiny_wav2vec2, write_clips

    root = tmp_path_factory.mktemp("e2e")
    w2v, bert = tiny_wav2vec2(root / "w2v"), tiny_bert(root / "bert")
    table = write_clips(root / "clips", N, seconds=(0.8, 1.4), seed=2)
    cfg = _cfg(w2v, bert, root / "cache")
    prep = prepare(cfg, table, cache_dir=root / "cache", progress=False)
    return {"root": root, "w2v": w2v, "bert": bert, "table": table, "prep": prep}


def _cfg(w2v, bert, cache, **train) -> RunConfig:
    cfg = RunConfig()
    cfg.towers.audio, cfg.towers.text = f"hf:{w2v}?pool=mean", f"hf:{bert}?pool=cls"
    cfg.captions.variables = []  # captions from labels only: no openSMILE needed here
    cfg.loss = loss_preset("paper-main", text_target="caption")  # beta 0.5, gamma 0.1: both q's used
    cfg.model.embed_dim, cfg.model.dropout = 16, 0.0
    cfg.train.mode, cfg.train.crop_seconds = "e2e", 0.5
    cfg.train.batch_size, cfg.train.epochs, cfg.train.device, cfg.train.num_workers = N, 2, "cpu", 0
    cfg.cache_dir = str(cache)
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def _with(setup, freeze_audio=True, freeze_text=True, **train) -> RunConfig:
    cfg = _cfg(setup["w2v"], setup["bert"], setup["root"] / "cache", **train)
    cfg.towers.freeze_audio, cfg.towers.freeze_text = freeze_audio, freeze_text
    cfg.towers.audio_lr = cfg.towers.text_lr = 1e-3
    return cfg


def _all_grads(tr: E2ETrainer) -> dict[str, torch.Tensor]:
    out = {}
    for prefix, mod in (("heads", tr.model), ("audio", tr.audio_tower), ("text", tr.text_tower)):
        if mod is None:
            continue
        for k, p in mod.named_parameters():
            if p.grad is not None:
                out[f"{prefix}.{k}"] = p.grad.detach().clone()
    return out


def test_crops_are_random_deterministic_and_bounded(setup):
    ds = CropDataset(setup["table"]["file"], 16000, 0.5, seed=0)
    a, b, c = ds[(0, 3)][1], ds[(0, 3)][1], ds[(1, 3)][1]
    assert len(a) == 8000 and np.array_equal(a, b) and not np.array_equal(a, c)
    short = np.ones(100, dtype=np.float32)
    assert random_crop(short, 8000, np.random.default_rng(0)) is short  # shorter clips stay whole
    assert len(CropDataset(setup["table"]["file"], 16000, None, seed=0)[(0, 0)][1]) >= 0.8 * 16000


@pytest.mark.parametrize("freeze_text", [True, False])
def test_accumulation_keeps_the_contrastive_batch(setup, freeze_text):
    """accum_freq = 2 (and 3: uneven micro-batches) gives the gradients of one pass over the batch."""
    idx = torch.arange(N)
    grads, losses = {}, {}
    for accum in (1, 2, 3):
        tr = E2ETrainer(_with(setup, freeze_audio=False, freeze_text=freeze_text, accum_freq=accum), setup["prep"])
        out = tr.accumulate(0, idx)
        grads[accum], losses[accum] = _all_grads(tr), float(out["loss"].detach())
        # a frozen text tower is not even run (its cached caption embeddings are the same)
        assert (tr.text_tower is None) == freeze_text
    assert any(k.startswith("audio.") for k in grads[1]) and any(k.startswith("text.") for k in grads[1]) != freeze_text
    # Tolerances (float32): the loss is the same to 1e-6 (relative); heads' gradients to
    # 1e-5 x max|g|; tower gradients to 5e-5 x max|g| (a LayerNorm bias gradient sums ~200 frame
    # terms, and one sum vs two partial sums differ by ~2.5e-5 of its scale: rounding, not method).
    for accum in (2, 3):
        assert grads[accum].keys() == grads[1].keys()
        for group, rtol in (("heads.", 1e-5), ("audio.", 5e-5), ("text.", 5e-5)):
            keys = [k for k in grads[1] if k.startswith(group)]
            if not keys:
                continue
            scale = max(float(grads[1][k].abs().max()) for k in keys)
            diff = max(float((grads[accum][k] - grads[1][k]).abs().max()) for k in keys)
            assert diff <= 1e-6 + rtol * scale, (accum, group, diff, scale)
        assert abs(losses[accum] - losses[1]) <= 1e-6 * abs(losses[1])
    # the logit scale gets its gradient exactly once (not accum_freq times, as in open_clip)
    torch.testing.assert_close(grads[2]["heads.logit_scale"], grads[1]["heads.logit_scale"], rtol=1e-5, atol=1e-7)


def test_frozen_towers_unchanged_unfrozen_changed(setup, tmp_path):
    """Audio tower frozen but running (crops), text tower fine-tuned: after training the audio
    tower is bit-identical and never had a gradient; the text tower moved; the saved model
    carries the fine-tuned text tower and reloads to the same embeddings."""
    cfg = _with(setup, freeze_audio=True, freeze_text=False, accum_freq=2)
    tr = E2ETrainer(cfg, setup["prep"])
    a0 = {k: v.clone() for k, v in tr.audio_tower.state_dict().items()}
    t0 = {k: v.clone() for k, v in tr.text_tower.state_dict().items()}
    assert not any(p.requires_grad for p in tr.audio_tower.parameters())
    tr.opt.zero_grad(set_to_none=True)
    tr.accumulate(0, torch.arange(N))
    assert all(p.grad is None for p in tr.audio_tower.parameters())
    tr.step()
    assert all(torch.equal(a0[k], v) for k, v in tr.audio_tower.state_dict().items())
    assert any(not torch.equal(t0[k], v) for k, v in tr.text_tower.state_dict().items())

    res = train(cfg, setup["prep"], run_dir=tmp_path / "run", progress=False)
    assert len(res.history) == 2 and np.isfinite(res.history[-1]["loss"])
    from smoothclap.towers import build_tower

    audio_now = build_tower(cfg.towers.audio)  # the shared frozen tower: untouched by training
    assert all(torch.equal(a0[k], v) for k, v in audio_now.state_dict().items())
    saved = tmp_path / "run" / "model"
    assert (saved / "text_tower" / "config.json").exists() and not (saved / "audio_tower").exists()
    m2 = SmoothClapModel.from_pretrained(saved)
    assert m2.config.text_tower.startswith("hf:./text_tower?")  # relative to the model folder
    texts = ["speaker is angry", "a sad voice"]
    torch.testing.assert_close(m2.embed_text(texts), res.model.embed_text(texts), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(m2.tower("text").embed(texts), build_tower(cfg.towers.text).embed(texts))
    # a moved model folder still loads, with its fine-tuned tower
    import shutil

    moved = shutil.move(str(saved), str(tmp_path / "elsewhere" / "model"))
    m3 = SmoothClapModel.from_pretrained(moved)
    torch.testing.assert_close(m3.embed_text(texts), res.model.embed_text(texts), atol=1e-5, rtol=1e-5)


def test_unfrozen_audio_tower_trains_and_resumes_bit_exactly(setup, tmp_path):
    cfg = _with(setup, freeze_audio=False, accum_freq=2)
    cfg.train.batch_size = 4
    full = train(cfg, setup["prep"], run_dir=None, progress=False)
    from smoothclap.towers import build_tower

    before = build_tower(cfg.towers.audio).state_dict()
    after = full.model.tower("audio").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)

    class Stop(Exception):
        pass

    def interrupt(epoch, rec, model):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, setup["prep"], run_dir=tmp_path / "r", progress=False, callback=interrupt)
    resumed = train(cfg, setup["prep"], run_dir=tmp_path / "r", progress=False)
    assert resumed.resumed_from_epoch == 1
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    ra = resumed.model.tower("audio").state_dict()
    assert all(torch.equal(after[k], ra[k]) for k in after)


def test_precision_and_mode_checks(setup):
    assert amp_dtype("bf16", torch.device("cpu")) is None  # CPU: always fp32
    assert amp_dtype("auto", torch.device("cpu")) is None
    assert amp_dtype("fp32", torch.device("cuda")) is None
    assert amp_dtype("fp16", torch.device("cuda")) is torch.float16
    cfg = _with(setup)
    cfg.train.mode = "cached"
    with pytest.raises(ValueError, match="train.mode: e2e"):
        train(cfg, setup["prep"], progress=False)
    with pytest.raises(ValueError, match="accum_freq"):
        from smoothclap.config import TrainConfig

        TrainConfig(accum_freq=0)
    cfg = _with(setup, freeze_audio=False)
    cfg.towers.audio = "egemaps"
    with pytest.raises(ValueError, match="needs an hf: tower"):
        E2ETrainer(cfg, setup["prep"])
