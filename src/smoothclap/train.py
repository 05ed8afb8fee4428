"""Training of heads + scale on cached frozen-tower embeddings (the paper's setting).

Input is a :class:`~smoothclap.prepare.Prepared` bundle (audio / local / caption / description
embeddings, all computed once and cached); every epoch after that is a few matrix products.
Seeded and deterministic; the run directory holds ``config.yaml``, ``checkpoint.pt`` (written
atomically after every epoch, so an interrupted run resumes), ``history.json`` and ``model/``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import RunConfig
from .device import resolve_device
from .io import atomic_save, atomic_write_json
from .losses import target_diagnostics
from .targets import build_loss
from .model import SmoothClapConfig, SmoothClapModel

log = logging.getLogger("smoothclap")


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
    d["train"].pop("device", None)
    d["train"].pop("epochs", None)  # a finished run can be extended by raising epochs
    d["towers"].pop("device", None)
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


def train(cfg: RunConfig, prepared, run_dir: str | Path | None = None, progress: bool = True,
          resume: bool = True, callback=None) -> TrainResult:
    """Train heads and scale on ``prepared`` with ``cfg``; returns the model and per-epoch history.

    Each epoch: a seeded permutation, batches of ``cfg.train.batch_size`` (a last batch of one
    clip is dropped: a 1 x 1 contrastive problem has no negatives), captions for that epoch
    (pre-drawn by :mod:`smoothclap.prepare`), SmoothCLAP loss (beta = 0: CLAP).
    ``callback(epoch, record, model)`` runs after each epoch's checkpoint (e.g. validation).
    """
    t0 = time.perf_counter()
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, prepared)
    audio = torch.from_numpy(prepared.audio)
    model.fit_audio_standardizer(audio)
    model.to(device)
    loss_fn = build_loss(cfg, prepared)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

    local = torch.from_numpy(prepared.local) if prepared.local is not None else None
    cap_emb = torch.from_numpy(prepared.caption_emb)
    desc = torch.from_numpy(prepared.desc_emb) if prepared.desc_emb is not None else None
    labels = torch.as_tensor(prepared.label_ids)
    n = audio.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 training clips, got {n}")

    history: list[dict] = []
    start_epoch = 0
    ckpt_path = Path(run_dir) / "checkpoint.pt" if run_dir is not None else None
    fp = _fingerprint(cfg, prepared)
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        cfg.dump(Path(run_dir) / "config.yaml")
        if getattr(prepared, "binner", None) is not None:  # caption bins, fitted on training data only
            atomic_write_json(Path(run_dir) / "caption_bins.json", prepared.binner.to_dict())
        if resume and ckpt_path.exists():
            ck = torch.load(ckpt_path, map_location=device, weights_only=False)
            if ck.get("fingerprint") == fp:
                model.load_state_dict(ck["model"])
                opt.load_state_dict(ck["optimizer"])
                history = ck["history"]
                start_epoch = ck["epoch"]
                torch.set_rng_state(ck["torch_rng"])
                log.info("resuming %s from epoch %d", run_dir, start_epoch)
            else:
                log.warning("%s: checkpoint is from a different config or data; starting afresh", ckpt_path)
    resumed_from = start_epoch

    example: dict = {}
    bs = cfg.train.batch_size
    epochs = cfg.train.epochs
    bar = tqdm(range(start_epoch, epochs), desc=f"train beta={cfg.loss.beta:g}", unit="epoch",
               disable=not progress, initial=start_epoch, total=epochs)
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
            za = model.encode_audio_features(audio[idx].to(device))
            zt = model.encode_text_features(cap_emb[cap_idx[idx]].to(device))
            out = loss_fn(za, zt, model.scale,
                          local_audio=local[idx].to(device) if local is not None else None,
                          desc_text=desc[idx].to(device) if desc is not None else None)
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
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                     "history": history, "fingerprint": fp, "torch_rng": torch.get_rng_state()}
            atomic_save(ckpt_path, lambda t: torch.save(state, t))
        if callback is not None:
            callback(epoch + 1, rec, model)
    bar.close()
    model.eval()
    model.cpu()
    if run_dir is not None:
        model.save_pretrained(Path(run_dir) / "model")
        atomic_write_json(Path(run_dir) / "history.json", history)
    return TrainResult(model=model, history=history, run_dir=Path(run_dir) if run_dir else None,
                       example_targets=example, seconds=time.perf_counter() - t0,
                       resumed_from_epoch=resumed_from)
