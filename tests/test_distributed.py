"""Distributed training and sharded extraction on CPU: 2 processes, gloo, launched with torchrun on
127.0.0.1 and a free port (every launch has a timeout and is killed as a process group).

This file is also the worker script: ``torchrun ... tests/test_distributed.py worker <mode> <dir>``.

Equivalence tolerances (float32): DDP loss vs single-process loss on the concatenated batch
|diff| <= 1e-6 (relative); gradients max |diff| <= 1e-6 + 1e-5 * max|grad|; soft targets y
|diff| <= 1e-6. A short DDP training run (Adam, 4 epochs, resumed after 2) ends within 1e-5 of the
single-process weights, and the ranks agree bit for bit.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))

LOSS_TOL = 1e-6
GRAD_ATOL, GRAD_RTOL = 1e-6, 1e-5
WEIGHT_TOL = 1e-5


# -- launching ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], nproc: int = 2, timeout: float = 150, expect_ok: bool = True) -> tuple[int, str]:
    """``torchrun --nproc-per-node nproc`` on 127.0.0.1:<free port>; returns (exit code, output)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        pytest.fail(f"torchrun timed out after {timeout} s:\n{out[-6000:]}")
    finally:
        try:  # nothing of ours may outlive the test
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if expect_ok and p.returncode != 0:
        pytest.fail(f"torchrun exited {p.returncode}:\n{out[-6000:]}")
    return p.returncode, out


# -- shared fixtures ------------------------------------------------------------------------------
def synthetic_prepared(n: int = 21, da: int = 12, dt: int = 10, epochs: int = 4, seed: int = 0):
    """A Prepared bundle of random embeddings (no towers): enough for the cached trainer."""
    from smoothclap.trainer import Prepared

    rng = np.random.default_rng(seed)
    labels = [["a", "b", "c"][i % 3] for i in range(n)]
    m = 9
    return Prepared(
        table=pd.DataFrame({"file": [f"x{i}.wav" for i in range(n)], "label": labels}),
        audio=rng.standard_normal((n, da)).astype(np.float32),
        local=rng.standard_normal((n, 6)).astype(np.float32),
        caption_texts=[f"caption {j}" for j in range(m)],
        caption_emb=rng.standard_normal((m, dt)).astype(np.float32),
        caption_index=[rng.integers(0, m, n) for _ in range(epochs)],
        desc_texts=[f"d{i}" for i in range(n)],
        desc_emb=rng.standard_normal((n, 5)).astype(np.float32),
        label_ids=np.array([ord(x) - ord("a") for x in labels]),
        label_names=["a", "b", "c"],
        binner=None,
        trained_on=["synthetic"],
    )


def small_cfg(beta: float = 0.5, epochs: int = 4):
    from smoothclap.config import RunConfig, loss_preset

    cfg = RunConfig()
    cfg.model.embed_dim = 16
    cfg.model.dropout = 0.0
    cfg.loss = loss_preset("paper-main", beta=beta, gamma=0.5)
    cfg.train.epochs = epochs
    cfg.train.batch_size = 8
    cfg.train.device = "cpu"
    return cfg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny wav2vec2 / BERT folders, 12 training + 4 development clips, a manifest, a config."""
    from tiny_models import tiny_bert, tiny_wav2vec2, write_clips

    root = tmp_path_factory.mktemp("tiny")
    w2v, bert = tiny_wav2vec2(root / "w2v"), tiny_bert(root / "bert")
    table = write_clips(root / "clips", 16, seed=1)
    table["split"] = ["train"] * 12 + ["dev"] * 4
    table.to_csv(root / "manifest.csv", index=False)
    cfg = {
        "towers": {"audio": f"hf:{w2v}?pool=mean", "text": f"hf:{bert}?pool=cls", "batch_size": 4},
        "model": {"embed_dim": 16, "dropout": 0.0},
        "loss": {"preset": "smoothclap", "text_target": "caption"},
        "captions": {"variables": []},
        "data": {"manifest": str(root / "manifest.csv"), "split": "train"},
        "train": {"epochs": 3, "batch_size": 6, "device": "cpu", "num_workers": 0, "select_split": "dev"},
        "cache_dir": str(root / "cache"),
    }
    import yaml

    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return root


@pytest.fixture(scope="module")
def ddp_run(tiny):
    """One torchrun launch (2 processes) doing every DDP check; results come back as JSON."""
    _, out = torchrun([str(HERE), "worker", "ddp", str(tiny)], timeout=200)
    res = json.loads((tiny / "ddp_results.json").read_text())
    res["output"] = out
    return res


# -- tests ----------------------------------------------------------------------------------------
def test_global_batch_loss_and_gradients_equal_single_process(ddp_run):
    cases = ddp_run["grads"]
    assert {c["beta"] for c in cases} == {0.0, 0.5} and {c["batch"] for c in cases} == {8, 7}
    for c in cases:
        assert c["loss_rel_diff"] <= LOSS_TOL, c
        assert c["y_max_diff"] <= 1e-6, c
        assert c["grad_max_diff"] <= GRAD_ATOL + GRAD_RTOL * c["grad_max_abs"], c
        assert c["ranks_agree_loss"], c
    # beta = 0 is CLAP: targets are the identity
    assert all(c["y_is_identity"] for c in cases if c["beta"] == 0.0)


def test_ddp_training_matches_single_process_and_resumes(ddp_run):
    t = ddp_run["train"]
    assert t["resumed_from"] == [2, 2]  # both ranks resumed from rank 0's checkpoint
    assert t["weight_max_diff"] <= WEIGHT_TOL, t
    assert t["rank_weight_max_diff"] == 0.0  # every process holds the same model
    assert max(t["loss_diffs"]) <= 1e-5, t
    assert t["run_files_written"]


def test_ddp_end_to_end_gradients(ddp_run):
    for c in ddp_run["e2e"]:
        assert c["grad_max_diff"] <= GRAD_ATOL + 5e-5 * c["grad_max_abs"], c  # towers: ~1e-5 relative
        assert c["frozen_text_has_no_grad"], c


def test_torchrun_cli_train_matches_single_process(ddp_run, tiny):
    """``torchrun -m smoothclap train`` == ``smoothclap train`` (same config, same global batch)."""
    from safetensors.torch import load_file

    from smoothclap.cli import main

    assert "on 2 processes" in ddp_run["output"]
    assert main(["-q", "train", "--config", str(tiny / "cfg.yaml"), "--out", str(tiny / "run_single")]) == 0
    a = load_file(str(tiny / "run_ddp" / "model" / "model.safetensors"))
    b = load_file(str(tiny / "run_single" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff <= WEIGHT_TOL, diff
    ha = json.loads((tiny / "run_ddp" / "history.json").read_text())
    hb = json.loads((tiny / "run_single" / "history.json").read_text())
    assert np.allclose([h["loss"] for h in ha], [h["loss"] for h in hb], atol=1e-5)
    sel = json.loads((tiny / "run_ddp" / "selection.json").read_text())
    assert [e["epoch"] for e in sel["epochs"]] == [1, 2, 3] and (tiny / "run_ddp" / "best_model").is_dir()


def test_sharded_embed_killed_then_resumed(tiny, tmp_path):
    """``torchrun -m smoothclap embed``: rank r embeds files r::2 into the cache. A run
    whose rank 1 dies mid-shard keeps what it finished; the rerun computes only the rest and
    rank 0's assembled array equals a single-process extraction."""
    from smoothclap.embed import embed_audio_files
    from smoothclap.towers import build_tower

    cache = tmp_path / "cache"
    spec = f"hf:{tiny / 'w2v'}?pool=mean"
    code, out = torchrun([str(HERE), "worker", "embed-kill", str(tiny), str(cache)], expect_ok=False)
    assert code != 0, out

    def tower_cache():  # the one tower folder, as a new process sees it (entries, not files)
        from smoothclap.cache import ArrayCache

        (folder,) = (cache / "emb").iterdir()
        ArrayCache(folder).close()
        return ArrayCache(folder)

    c = tower_cache()
    keys = c.keys()
    assert 2 <= len(keys) < 16, (len(keys), out[-3000:])
    before = dict(zip(keys, c.get_many(keys)[0]))

    torchrun(["-m", "smoothclap", "-q", "embed", "--manifest", str(tiny / "manifest.csv"), "--tower", spec,
              "--cache-dir", str(cache), "--batch-size", "1", "--device", "cpu", "--output", str(tmp_path / "e.npy")])
    c = tower_cache()
    assert len(c) == 16
    assert c.stats()["records"] == 16  # finished items were not recomputed (nor rewritten)
    for k, v in before.items():
        np.testing.assert_array_equal(c.get(k), v)
    emb = np.load(tmp_path / "e.npy")
    files = pd.read_csv(tiny / "manifest.csv")["file"].tolist()
    ref, ok = embed_audio_files(build_tower(spec, shared=False), files, cache_dir=None, batch_size=1, progress=False)
    assert ok.all() and emb.shape == ref.shape == (16, 32)
    np.testing.assert_allclose(emb, ref, atol=1e-5, rtol=1e-5)


# -- worker side (runs under torchrun) ------------------------------------------------------------
def _grads(model) -> dict[str, torch.Tensor]:
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}


def _worker_grads(env) -> list[dict]:
    import copy

    from smoothclap.trainer.distributed import GlobalBatchLoss, all_gather_object, local_slice, wrap_ddp
    from smoothclap.losses import SmoothClapLoss
    from smoothclap.model import SmoothClapConfig, SmoothClapModel
    from smoothclap.trainer.steps import HeadsNet

    res = []
    for beta in (0.0, 0.5):
        for batch in (8, 7):  # 7: uneven slices (4 + 3)
            torch.manual_seed(0)
            model = SmoothClapModel(SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6",
                                                     audio_dim=12, text_dim=10, embed_dim=16, dropout=0.0))
            g = torch.Generator().manual_seed(1)
            audio, text = torch.randn(batch, 12, generator=g), torch.randn(batch, 10, generator=g)
            local, desc = torch.randn(batch, 6, generator=g), torch.randn(batch, 5, generator=g)
            model.fit_normalization(torch.randn(30, 12, generator=g).numpy())
            loss = SmoothClapLoss(beta=beta, gamma=0.5, tau_a=0.1, tau_t=0.1, local_source="tower", divergence="kl")
            ref = copy.deepcopy(model)
            ref_out = loss(ref.encode_audio_features(audio), ref.encode_text_features(text), ref.scale,
                           local_audio=local, desc_text=desc)
            ref_out["loss"].backward()
            ref_g = _grads(ref)

            net = wrap_ddp(HeadsNet(model), env)
            mine, sizes = local_slice(torch.arange(batch), env)
            za, zt, s = net(audio[mine], text[mine])
            out = GlobalBatchLoss(loss, env)(z_audio=za, z_text=zt, scale=s, local_audio=local[mine],
                                             desc_text=desc[mine], sizes=sizes)
            out["loss"].backward()
            got = _grads(model)
            assert got.keys() == ref_g.keys()
            losses = all_gather_object(float(out["loss"]), env)
            res.append({
                "beta": beta, "batch": batch, "sizes": sizes,
                "loss_rel_diff": abs(float(out["loss"]) - float(ref_out["loss"])) / abs(float(ref_out["loss"])),
                "y_max_diff": float((out["targets"].y - ref_out["targets"].y).abs().max()),
                "y_is_identity": bool(torch.equal(out["targets"].y, torch.eye(batch))),
                "grad_max_diff": max(float((got[k] - ref_g[k]).abs().max()) for k in got),
                "grad_max_abs": max(float(v.abs().max()) for v in ref_g.values()),
                "ranks_agree_loss": len(set(losses)) == 1,
            })
    return res


def _worker_train(env, root: Path) -> dict:
    from smoothclap.trainer.distributed import DistEnv, all_gather_object, barrier
    from smoothclap.trainer import train

    prep = synthetic_prepared()
    run = root / "run_cached_ddp"
    train(small_cfg(epochs=2), prep, run_dir=run, progress=False, dist_env=env)
    # the ranks must not race: rank 1 starts the resumed run only after rank 0 wrote the checkpoint
    files_ok = (run / "checkpoint.pt").exists() if env.is_main else True
    barrier(env)
    res = train(small_cfg(epochs=4), prep, run_dir=run, progress=False, dist_env=env)
    sd = {k: v.clone() for k, v in res.model.state_dict().items()}
    states = all_gather_object(sd, env)
    out = {"resumed_from": all_gather_object(res.resumed_from_epoch, env)}
    if env.is_main:
        single = train(small_cfg(epochs=4), prep, run_dir=None, progress=False, dist_env=DistEnv())
        ref = single.model.state_dict()
        out["weight_max_diff"] = max(float((sd[k] - ref[k]).abs().max()) for k in ref)
        out["rank_weight_max_diff"] = max(float((states[1][k] - sd[k]).abs().max()) for k in sd)
        out["loss_diffs"] = [abs(a["loss"] - b["loss"]) for a, b in zip(res.history, single.history)]
        out["run_files_written"] = files_ok and sorted(p.name for p in run.iterdir()) == \
            ["checkpoint.pt", "config.yaml", "history.json", "model"]
    return out


def _worker_e2e(env, root: Path) -> list[dict]:
    import yaml

    from smoothclap import corpora
    from smoothclap.config import RunConfig, validate
    from smoothclap.trainer.distributed import DistEnv, prepare_distributed
    from smoothclap.trainer import Trainer as E2ETrainer

    data = yaml.safe_load((root / "cfg.yaml").read_text())
    data["train"].update(mode="e2e", crop_seconds=0.5, batch_size=6, select_split=None)
    data["towers"].update(freeze_audio=False, audio_lr=1e-3)
    table = corpora.read_manifest(root / "manifest.csv")
    table = table[table["split"] == "train"].reset_index(drop=True)
    res = []
    for accum in (1, 2):
        data["train"]["accum_freq"] = accum
        cfg = validate(RunConfig, data)
        prep = prepare_distributed(cfg, table, env, cache_dir=root / "cache", progress=False)
        idx = torch.arange(6)
        tr = E2ETrainer(cfg, prep, env)
        tr.accumulate(0, idx)
        got = {**_grads(tr.model), **{f"audio.{k}": v for k, v in _grads(tr.audio_tower).items()}}
        if env.is_main:
            ref_tr = E2ETrainer(cfg, prep, DistEnv())
            ref_tr.accumulate(0, idx)
            ref = {**_grads(ref_tr.model), **{f"audio.{k}": v for k, v in _grads(ref_tr.audio_tower).items()}}
            assert got.keys() == ref.keys()
            res.append({"accum": accum, "grad_max_diff": max(float((got[k] - ref[k]).abs().max()) for k in ref),
                        "grad_max_abs": max(float(v.abs().max()) for v in ref.values()),
                        "frozen_text_has_no_grad": tr.text_tower is None})
    return res


def _worker_ddp(root: Path) -> None:
    from smoothclap.cli import main
    from smoothclap.trainer.distributed import init_distributed

    env = init_distributed("cpu")
    assert env.world_size == 2
    res = {"grads": _worker_grads(env), "train": _worker_train(env, root), "e2e": _worker_e2e(env, root)}
    if env.is_main:
        (root / "ddp_results.json").write_text(json.dumps(res, indent=1))
    # the real command, in the same processes (it reuses the process group and leaves it at the end)
    rc = main(["-q", "train", "--config", str(root / "cfg.yaml"), "--out", str(root / "run_ddp")])
    assert rc == 0


def _worker_embed_kill(root: Path, cache: Path) -> None:
    """``smoothclap embed`` whose rank 1 dies (os._exit, no clean-up) after writing two items."""
    from smoothclap.cache import EmbeddingCache
    from smoothclap.cli import main

    rank = int(os.environ["RANK"])
    puts = {"n": 0}
    orig = EmbeddingCache.put

    def put(self, key, vec):
        if rank == 1 and puts["n"] == 2:
            os._exit(17)
        orig(self, key, vec)
        puts["n"] += 1

    EmbeddingCache.put = put
    main(["-q", "embed", "--manifest", str(root / "manifest.csv"), "--tower", f"hf:{root / 'w2v'}?pool=mean",
          "--cache-dir", str(cache), "--batch-size", "1", "--device", "cpu"])


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "worker":
    mode, root = sys.argv[2], Path(sys.argv[3])
    if mode == "ddp":
        _worker_ddp(root)
    elif mode == "embed-kill":
        _worker_embed_kill(root, Path(sys.argv[4]))
    else:
        raise SystemExit(f"unknown worker mode {mode}")
