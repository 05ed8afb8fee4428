"""Training of heads + scale on cached frozen-tower embeddings (the paper's setting).

Input is a :class:`~smoothclap.prepare.Prepared` bundle (audio / local / caption / description
embeddings, all computed once and cached); every epoch after that is a few matrix products.
Seeded and deterministic; the run directory holds ``config.yaml``, ``checkpoint.pt`` (written
atomically after every epoch, so an interrupted run resumes), ``history.json`` and ``model/``.

Launched by ``torchrun`` (several processes, GPUs or machines) the same loop trains with
DistributedDataParallel: every process draws the same permutation, takes its contiguous slice of
each global batch, and the loss is computed on the gathered global batch
(:class:`smoothclap.distributed.GlobalBatchLoss`), so the soft targets and the gradients are those
of the single-process run on the whole batch. Only rank 0 writes files; every rank resumes from
rank 0's checkpoint. ``train.mode: e2e`` hands over to :mod:`smoothclap.e2e` (towers in the loop).
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .config import RunConfig
from .distributed import (DistEnv, GlobalBatchLoss, all_gather_object, barrier, broadcast_object,
                          current_env, local_slice, wrap_ddp)
from .io import atomic_save, atomic_write_json
from .losses import target_diagnostics, unit_rows
from .targets import build_loss
from .model import SmoothClapConfig, SmoothClapModel

log = logging.getLogger("smoothclap")

# Settings that do not change what cached training computes (left out of its fingerprint, so a
# checkpoint resumes across them and across versions that added them).
_TRAIN_NOT_CACHED = ("device", "epochs", "mode", "crop_seconds", "accum_freq", "precision",
                     "select_split", "select_labels", "select_templates")
_TOWERS_NOT_CACHED = ("device", "freeze_audio", "freeze_text", "audio_lr", "text_lr")


@dataclass
class TrainResult:
    model: SmoothClapModel
    history: list[dict]
    run_dir: Path | None
    example_targets: dict = field(default_factory=dict)  # one batch's y, q, labels for the heatmap
    seconds: float = 0.0
    resumed_from_epoch: int = 0


def _fingerprint(cfg: RunConfig, prepared) -> str:
    """Identifies what a checkpoint was trained on; resume only when it matches."""
    d = {"model": asdict(cfg.model), "loss": asdict(cfg.loss), "train": asdict(cfg.train),
         "towers": asdict(cfg.towers), "n": int(prepared.audio.shape[0]),
         "audio_sum": float(np.float64(prepared.audio.sum()))}
    for k in _TRAIN_NOT_CACHED:  # "epochs": a finished run can be extended by raising epochs
        d["train"].pop(k, None)
    for k in _TOWERS_NOT_CACHED:
        d["towers"].pop(k, None)
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def build_model(cfg: RunConfig, prepared) -> SmoothClapModel:
    mc = SmoothClapConfig(
        audio_tower=cfg.towers.audio, text_tower=cfg.towers.text,
        audio_dim=int(prepared.audio.shape[1]), text_dim=int(prepared.caption_emb.shape[1]),
        embed_dim=cfg.model.embed_dim, dropout=cfg.model.dropout, init_scale=cfg.model.init_scale,
        max_scale=cfg.model.max_scale, standardize_audio=cfg.model.standardize_audio,
        feature_norm_group=cfg.model.feature_norm_group,
        trained_on=list(prepared.trained_on), loss=asdict(cfg.loss),
    )
    return SmoothClapModel(mc)


class HeadsNet(nn.Module):
    """What DistributedDataParallel wraps in cached training: tower features -> (z_a, z_t, scale)."""

    def __init__(self, model: SmoothClapModel):
        super().__init__()
        self.model = model

    def forward(self, audio_feats: torch.Tensor, text_feats: torch.Tensor):
        za = self.model.encode_audio_features(audio_feats)
        zt = self.model.encode_text_features(text_feats)
        return za, zt, self.model.scale


def uses_caption_as_description(cfg: RunConfig, prepared) -> bool:
    """``loss.text_target: caption``: q_t2t comes from the (frozen) caption embeddings."""
    from .prepare import needs_desc

    return prepared.desc_emb is None and cfg.loss.text_target == "caption" and needs_desc(cfg)


def _check_cached(cfg: RunConfig) -> None:
    t, tw = cfg.train, cfg.towers
    bad = [name for name, on in (("train.crop_seconds", t.crop_seconds is not None),
                                 ("train.accum_freq > 1", t.accum_freq > 1),
                                 ("towers.freeze_audio: false", not tw.freeze_audio),
                                 ("towers.freeze_text: false", not tw.freeze_text)) if on]
    if bad:
        raise ValueError(f"{', '.join(bad)} need end-to-end training: set train.mode: e2e "
                         "(cached training sees one fixed embedding per clip)")


def _restore_rng(ck: dict, env: DistEnv, seed: int) -> None:
    ranks = ck.get("torch_rng_ranks")
    if not env.enabled:
        torch.set_rng_state(ck["torch_rng"])
    elif ranks is not None and len(ranks) == env.world_size:
        torch.set_rng_state(ranks[env.rank])
    elif env.rank == 0:
        torch.set_rng_state(ck["torch_rng"])
    else:  # resumed with another number of processes: fresh per-rank dropout streams
        torch.manual_seed(seed + 7919 * env.rank + 104729 * int(ck["epoch"]))


def train(cfg: RunConfig, prepared, run_dir: str | Path | None = None, progress: bool = True,
          resume: bool = True, callback=None, *, dist_env: DistEnv | None = None) -> TrainResult:
    """Train heads and scale on ``prepared`` with ``cfg``; returns the model and per-epoch history.

    Each epoch: a seeded permutation, batches of ``cfg.train.batch_size`` (a last batch of one
    clip is dropped: a 1 x 1 contrastive problem has no negatives), captions for that epoch
    (pre-drawn by :mod:`smoothclap.prepare`), SmoothCLAP loss (beta = 0: CLAP).
    ``callback(epoch, record, model)`` runs after each epoch's checkpoint (e.g. validation), on
    every process. ``dist_env`` (default: the initialised process group, if any) makes it
    distributed; ``batch_size`` is then the global batch. ``cfg.train.mode == "e2e"`` runs
    :func:`smoothclap.e2e.train_e2e` instead.
    """
    if cfg.train.mode == "e2e":
        from .e2e import train_e2e

        return train_e2e(cfg, prepared, run_dir=run_dir, progress=progress, resume=resume, callback=callback,
                         dist_env=dist_env)
    _check_cached(cfg)
    env = dist_env if dist_env is not None else current_env(cfg.train.device)
    if env.device.type != "cpu":
        return _train_cached(cfg, prepared, run_dir, progress, resume, callback, env)
    # Heads on cached embeddings are small matrix products: on CPU one intra-op thread is
    # several times faster than two fighting over the cores (measured: 3.5x, benchmarks/).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_cached(cfg, prepared, run_dir, progress, resume, callback, env)
    finally:
        torch.set_num_threads(threads)


def _train_cached(cfg: RunConfig, prepared, run_dir, progress, resume, callback, env: DistEnv) -> TrainResult:
    t0 = time.perf_counter()
    device = env.device
    main = env.is_main
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, prepared)
    audio = torch.from_numpy(prepared.audio)
    model.fit_audio_standardizer(audio)
    model.to(device)
    loss_fn = build_loss(cfg, prepared)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, foreach=True)
    net = wrap_ddp(HeadsNet(model), env)  # DDP broadcasts rank 0's initial weights
    gloss = GlobalBatchLoss(loss_fn, env)
    if env.enabled and env.rank > 0:  # every process its own dropout stream
        torch.manual_seed(cfg.train.seed + 7919 * env.rank)

    # Target sources are frozen: L2-normalised once here, not once per batch in the loss.
    local = unit_rows(torch.from_numpy(prepared.local)) if prepared.local is not None else None
    cap_emb = torch.from_numpy(prepared.caption_emb)
    desc = unit_rows(torch.from_numpy(prepared.desc_emb)) if prepared.desc_emb is not None else None
    caption_desc = uses_caption_as_description(cfg, prepared)
    cap_unit = unit_rows(cap_emb) if caption_desc else None  # captions as the description source
    labels = torch.as_tensor(prepared.label_ids)
    n = audio.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 training clips, got {n}")

    history: list[dict] = []
    start_epoch = 0
    ckpt_path = Path(run_dir) / "checkpoint.pt" if run_dir is not None else None
    fp = _fingerprint(cfg, prepared)
    if run_dir is not None:
        if main:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            cfg.dump(Path(run_dir) / "config.yaml")
            if getattr(prepared, "binner", None) is not None:  # caption bins, fitted on training data only
                atomic_write_json(Path(run_dir) / "caption_bins.json", prepared.binner.to_dict())
        if resume:
            ck = None
            if main and ckpt_path.exists():
                ck = torch.load(ckpt_path, map_location=device if not env.enabled else "cpu", weights_only=False)
                if ck.get("fingerprint") != fp:
                    log.warning("%s: checkpoint is from a different config or data; starting afresh", ckpt_path)
                    ck = None
            ck = broadcast_object(ck, env)  # every rank resumes from rank 0's checkpoint
            if ck is not None:
                model.load_state_dict(ck["model"])
                opt.load_state_dict(ck["optimizer"])
                history = ck["history"]
                start_epoch = ck["epoch"]
                _restore_rng(ck, env, cfg.train.seed)
                if main:
                    log.info("resuming %s from epoch %d", run_dir, start_epoch)
    resumed_from = start_epoch

    example: dict = {}
    bs = cfg.train.batch_size
    epochs = cfg.train.epochs
    bar = tqdm(range(start_epoch, epochs), desc=f"train beta={cfg.loss.beta:g}", unit="epoch",
               disable=not progress or not main, initial=start_epoch, total=epochs)
    for epoch in bar:
        model.train()
        g = torch.Generator().manual_seed(cfg.train.seed * 100003 + epoch)
        perm = torch.randperm(n, generator=g)
        cap_idx = torch.as_tensor(prepared.caption_index[epoch % len(prepared.caption_index)])
        sums: dict[str, float] = {}
        count = 0
        for b0 in range(0, n, bs):
            idx = perm[b0 : b0 + bs]
            if len(idx) < 2:
                continue
            mine, sizes = local_slice(idx, env)
            za, zt, scale = net(audio[mine].to(device), cap_emb[cap_idx[mine]].to(device))
            if desc is not None:
                d_b = desc[mine].to(device)
            elif caption_desc:
                d_b = cap_unit[cap_idx[mine]].to(device)
            else:
                d_b = None
            out = gloss(za, zt, scale, local_audio=local[mine].to(device) if local is not None else None,
                        desc_text=d_b, sizes=sizes, sources_normalized=True)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            stats = {"loss": float(out["loss"].detach()), "kl": float(out["kl"])}
            stats.update(target_diagnostics(out["targets"], labels[idx].to(device)))
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            if epoch == epochs - 1 and not example and len(idx) == min(bs, n):
                t = out["targets"]
                example = {"y": t.y.cpu().numpy(), "q": None if t.q is None else t.q.cpu().numpy(),
                           "labels": [prepared.label_names[i] for i in labels[idx].tolist()]}
        rec = {"epoch": epoch + 1, **{k: v / max(count, 1) for k, v in sums.items()},
               "scale": float(model.scale.detach())}
        history.append(rec)
        bar.set_postfix(loss=f"{rec.get('loss', float('nan')):.3f}", scale=f"{rec['scale']:.1f}")
        if ckpt_path is not None:
            rngs = all_gather_object(torch.get_rng_state(), env) if env.enabled else None
            if main:
                state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                         "history": history, "fingerprint": fp, "torch_rng": torch.get_rng_state()}
                if rngs is not None:
                    state["torch_rng_ranks"] = rngs
                atomic_save(ckpt_path, lambda t: torch.save(state, t))
        if callback is not None:
            callback(epoch + 1, rec, model)
    bar.close()
    model.eval()
    model.cpu()
    if run_dir is not None and main:
        model.save_pretrained(Path(run_dir) / "model")
        atomic_write_json(Path(run_dir) / "history.json", history)
    barrier(env)
    return TrainResult(model=model, history=history, run_dir=Path(run_dir) if run_dir else None,
                       example_targets=example, seconds=time.perf_counter() - t0,
                       resumed_from_epoch=resumed_from)


# -- model selection ------------------------------------------------------------------------------
def eval_copy(model: SmoothClapModel) -> SmoothClapModel:
    """A CPU copy of the heads (towers shared, not copied) for evaluation during training."""
    m = SmoothClapModel(copy.deepcopy(model.config))
    m.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    m._towers = dict(model._towers)
    m.trainable_towers = tuple(getattr(model, "trainable_towers", ()))
    m.eval()
    return m


class DevSelector:
    """Model selection: zero-shot UAR on a held-out split after every epoch, best epoch kept.

    Use as ``train(..., callback=DevSelector(dev_table, run_dir, ...))``. Writes
    ``<run_dir>/selection.json`` (every epoch's scores and the best) and saves the best model to
    ``<run_dir>/best_model`` (with fine-tuned towers in e2e mode). Runs on rank 0 only.
    Resumes: the best so far is read back from ``selection.json``.
    """

    def __init__(self, table, run_dir: str | Path | None, *, labels=None, templates: str = "bare",
                 prompts: dict | None = None, cache_dir=None, env: DistEnv | None = None,
                 skip_bad: bool = False):
        labels = list(labels) if labels is not None else sorted(table["label"].astype(str).unique())
        self.table = table[table["label"].astype(str).isin(labels)].reset_index(drop=True)
        if len(self.table) == 0:
            raise ValueError(f"model selection: no rows with labels {labels}")
        self.labels = labels
        self.templates, self.prompts, self.cache_dir = templates, prompts, cache_dir
        self.skip_bad = skip_bad
        self.env = env or DistEnv()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.scores: list[dict] = []
        self.best: dict | None = None
        sel = self.run_dir / "selection.json" if self.run_dir is not None else None
        if sel is not None and sel.exists():
            data = json.loads(sel.read_text())
            self.scores, self.best = data.get("epochs", []), data.get("best")

    def __call__(self, epoch: int, rec: dict, model: SmoothClapModel) -> None:
        if not self.env.is_main:
            return
        from .e2e import save_model
        from .errors import SkipLog
        from .evaluate import zero_shot_evaluate

        m = eval_copy(model)
        fresh_audio = "audio" in m.trainable_towers  # a fine-tuned tower: cached features are stale
        ev = zero_shot_evaluate(m, self.table, self.labels, prompts=self.prompts, templates=self.templates,
                                cache_dir=None if fresh_audio else self.cache_dir,
                                skip=SkipLog(skip=self.skip_bad), progress=False)
        score = {"epoch": epoch, "uar": ev.metrics["uar"], "wa": ev.metrics["wa"],
                 "macro_f1": ev.metrics["macro_f1"], "n": ev.metrics["n"]}
        rec["select_uar"] = score["uar"]
        self.scores = [s for s in self.scores if s["epoch"] < epoch] + [score]
        if self.best is None or score["uar"] > self.best["uar"]:
            self.best = score
            if self.run_dir is not None:
                save_model(m, self.run_dir / "best_model")
        log.info("epoch %d: selection UAR %.4f (best %.4f at epoch %d)", epoch, score["uar"],
                 self.best["uar"], self.best["epoch"])
        if self.run_dir is not None:
            atomic_write_json(self.run_dir / "selection.json",
                              {"labels": self.labels, "n": len(self.table), "epochs": self.scores, "best": self.best})
