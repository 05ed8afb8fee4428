"""End-to-end training: the towers run inside the training loop.

Besides cached training (one fixed frozen embedding per clip, :mod:`smoothclap.train`), this mode
(``train.mode: e2e``) gives

* **random crops** of ``train.crop_seconds`` (the paper: 5 s), drawn per (seed, epoch, clip), so
  they do not depend on the number of processes or data-loader workers; clips shorter than the
  crop are used whole;
* **unfrozen towers** (``towers.freeze_audio: false`` / ``freeze_text: false``; ``hf:`` towers
  and ``minilm-l6``) with their own learning rates (``towers.audio_lr`` / ``text_lr``). A frozen
  tower runs in eval mode under ``torch.no_grad`` with ``requires_grad=False``: it never receives
  gradients. A frozen text tower is not run at all: its caption embeddings are the cached ones;
* **gradient accumulation that keeps the contrastive batch** (``train.accum_freq``, as open_clip's
  ``accum_freq``): the batch is split into micro-batches; a first pass without gradients collects
  every micro-batch's features, then each micro-batch is recomputed with gradients and put in
  place of its cached features, and the loss on the whole batch is backpropagated. The RNG state
  of each micro-batch's first pass is restored for its second, so dropout masks match and the
  summed gradients equal those of one pass over the whole batch. The logit scale takes its
  gradient from one micro-step only (open_clip counts it ``accum_freq`` times);
* **mixed precision** on CUDA (``train.precision``: auto = bf16 where supported, else fp16 with a
  gradient scaler); the loss is computed in fp32. On CPU this is a no-op (fp32);
* the same DistributedDataParallel scheme as cached training (global-batch loss, rank-0 files).

The soft targets' sources stay frozen: q_a2a uses the cached local-feature embeddings of the whole
clip (by default the *initial* audio tower's, even when the audio tower is being fine-tuned), q_t2t
the cached description embeddings.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .audio import read_audio
from .config import RunConfig
from .distributed import (DistEnv, GlobalBatchLoss, all_gather_object, barrier, broadcast_object, current_env,
                          local_slice, rng_state, set_rng_state, wrap_ddp)
from .io import atomic_save, atomic_write_json
from .losses import target_diagnostics
from .targets import build_loss

log = logging.getLogger("smoothclap")


# -- pieces -------------------------------------------------------------------------------------
def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``train.precision`` on ``device``; None = full fp32 (always on CPU)."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def random_crop(wave: np.ndarray, crop_samples: int | None, rng: np.random.Generator) -> np.ndarray:
    """A random window of ``crop_samples`` samples (the whole clip when it is not longer)."""
    if crop_samples is None or len(wave) <= crop_samples:
        return wave
    start = int(rng.integers(0, len(wave) - crop_samples + 1))
    return wave[start : start + crop_samples]


class CropDataset(torch.utils.data.Dataset):
    """Key ``(epoch, i)`` -> ``(i, crop of clip i)``; the crop depends only on (seed, epoch, i)."""

    def __init__(self, files, sample_rate: int, crop_seconds: float | None, seed: int):
        self.files = [str(f) for f in files]
        self.sample_rate = sample_rate
        self.crop = None if crop_seconds is None else int(round(crop_seconds * sample_rate))
        self.seed = seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key):
        epoch, i = key
        wave = read_audio(self.files[i], sample_rate=self.sample_rate)
        return i, random_crop(wave, self.crop, np.random.default_rng([self.seed, epoch, i]))


def _collate(items):
    return items


def _is_hf(tower) -> bool:
    return hasattr(tower, "model") and (hasattr(tower, "processor") or hasattr(tower, "tokenizer"))


def tower_spec_for(tower, folder: Path) -> str:
    """``hf:`` spec that rebuilds ``tower`` (same pooling / layer / normalisation) from ``folder``."""
    opts = {"pool": tower.pool, "modality": tower.modality}
    if getattr(tower, "layer", None) is not None:
        opts["layer"] = str(tower.layer)
    if tower.modality == "text":
        opts["normalize"] = "1" if tower.normalize else "0"
    return f"hf:{Path(folder).resolve()}?{urlencode(opts)}"


def _save_hf_tower(tower, folder: Path) -> None:
    folder = Path(folder)
    tmp = folder.parent / f".{folder.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tower.model.save_pretrained(tmp)
    (tower.processor if tower.modality == "audio" else tower.tokenizer).save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def save_model(model, path) -> Path:
    """``model.save_pretrained(path)``; fine-tuned towers (``model.trainable_towers``) are saved
    beside the heads as ``<path>/<kind>_tower`` and the saved config names them (absolute
    ``hf:`` paths), so ``SmoothClapModel.from_pretrained(path)`` rebuilds the fine-tuned model."""
    path = Path(path)
    trainable = tuple(getattr(model, "trainable_towers", ()))
    if not trainable:
        return model.save_pretrained(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    orig = (cfg.audio_tower, cfg.text_tower)
    try:
        for kind in trainable:
            tower = model._towers[kind]
            folder = path / f"{kind}_tower"
            _save_hf_tower(tower, folder)
            setattr(cfg, f"{kind}_tower", tower_spec_for(tower, folder))
        return model.save_pretrained(path)
    finally:
        cfg.audio_tower, cfg.text_tower = orig


class E2ENet(nn.Module):
    """What DDP wraps in e2e mode: heads + scale + the trainable towers.

    ``forward(audio_in, text_in)``: ``audio_in`` is a list of waveforms when the audio tower
    trains, else frozen features ``[b, audio_dim]``; ``text_in`` likewise (strings or ``[b, text_dim]``).
    Returns ``(z_a [b, d], z_t [b, d], scale)``.
    """

    def __init__(self, model, audio_tower=None, text_tower=None):
        super().__init__()
        self.model = model
        self.audio_tower = audio_tower
        self.text_tower = text_tower

    def forward(self, audio_in, text_in):
        fa = self.audio_tower.forward_waves(audio_in) if self.audio_tower is not None else audio_in
        ft = self.text_tower.forward_texts(text_in) if self.text_tower is not None else text_in
        return self.model.encode_audio_features(fa), self.model.encode_text_features(ft), self.model.scale


def _take(x, m: torch.Tensor):
    """Rows ``m`` of a tensor or list."""
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x[m.to(x.device)]
    return [x[k] for k in m.tolist()]


def _fingerprint(cfg: RunConfig, prepared) -> str:
    d = {"model": asdict(cfg.model), "loss": asdict(cfg.loss), "train": asdict(cfg.train),
         "towers": asdict(cfg.towers), "n": int(prepared.audio.shape[0]),
         "audio_sum": float(np.float64(prepared.audio.sum()))}
    for k in ("device", "epochs", "num_workers", "select_split", "select_labels", "select_templates"):
        d["train"].pop(k, None)
    d["towers"].pop("device", None)
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


# -- trainer ------------------------------------------------------------------------------------
class E2ETrainer:
    """State and one step of end-to-end training (used by :func:`train_e2e`; tests drive it directly).

    ``accumulate(epoch, idx, waves)`` runs forward + backward for global batch ``idx`` (gradients
    accumulate in ``.grad``; no optimizer step); ``step()`` applies and clears them.
    """

    def __init__(self, cfg: RunConfig, prepared, env: DistEnv | None = None):
        from .towers import build_tower
        from .train import build_model, uses_caption_as_description

        self.cfg, self.prepared = cfg, prepared
        self.env = env if env is not None else current_env(cfg.train.device)
        dev = self.device = self.env.device
        tc, tr = cfg.towers, cfg.train
        torch.manual_seed(tr.seed)
        model = self.model = build_model(cfg, prepared)
        model.fit_audio_standardizer(torch.from_numpy(prepared.audio))
        model.to(dev)
        self.train_audio, self.train_text = not tc.freeze_audio, not tc.freeze_text
        self.audio_tower = self.text_tower = None
        if self.train_audio or tr.crop_seconds is not None:
            self.audio_tower = build_tower(tc.audio, device=str(dev), shared=not self.train_audio)
        if self.train_text:
            self.text_tower = build_tower(tc.text, device=str(dev), shared=False)
        for kind, tower, trains in (("audio", self.audio_tower, self.train_audio),
                                    ("text", self.text_tower, self.train_text)):
            if tower is None:
                continue
            if trains and not _is_hf(tower):
                raise ValueError(f"towers.freeze_{kind}: false needs an hf: tower (or minilm-l6), "
                                 f"got {tower.spec!r}")
            tower.requires_grad_(trains)
            tower.train(trains)
        if self.audio_tower is not None and self.audio_tower.sample_rate != 16000:
            raise ValueError(f"{tc.audio}: e2e training expects a 16 kHz audio tower")
        model.trainable_towers = tuple(k for k, t in (("audio", self.train_audio), ("text", self.train_text)) if t)
        # Evaluation during training (model selection) uses the towers on the training device.
        if self.audio_tower is not None:
            model._towers["audio"] = self.audio_tower
        if self.text_tower is not None:
            model._towers["text"] = self.text_tower
        self.net = E2ENet(model, self.audio_tower if self.train_audio else None,
                          self.text_tower if self.train_text else None)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": tr.lr}]
        if self.train_audio:
            groups.append({"params": list(self.audio_tower.parameters()), "lr": tc.audio_lr})
        if self.train_text:
            groups.append({"params": list(self.text_tower.parameters()), "lr": tc.text_lr})
        self.opt = torch.optim.Adam(groups, lr=tr.lr, weight_decay=tr.weight_decay)
        self.ddp = wrap_ddp(self.net, self.env, find_unused_parameters=bool(model.trainable_towers))
        self.loss = GlobalBatchLoss(build_loss(cfg, prepared), self.env)
        self.amp = amp_dtype(tr.precision, dev)
        if tr.precision in ("bf16", "fp16") and dev.type != "cuda":
            log.info("train.precision=%s is ignored on %s (fp32)", tr.precision, dev)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        if self.env.enabled and self.env.rank > 0:
            torch.manual_seed(tr.seed + 7919 * self.env.rank)  # own dropout stream per process

        self.audio_feats = torch.from_numpy(prepared.audio)
        self.local = torch.from_numpy(prepared.local) if prepared.local is not None else None
        self.cap_emb = torch.from_numpy(prepared.caption_emb)
        self.desc = torch.from_numpy(prepared.desc_emb) if prepared.desc_emb is not None else None
        self.caption_desc = uses_caption_as_description(cfg, prepared)
        self.labels = torch.as_tensor(prepared.label_ids)
        self.dataset = CropDataset(prepared.table["file"].astype(str).tolist(), 16000, tr.crop_seconds, tr.seed)

    # -- data ---------------------------------------------------------------------------------
    @property
    def needs_audio(self) -> bool:
        """Whether the audio tower runs (else the cached whole-clip features are used)."""
        return self.audio_tower is not None

    def batches(self, epoch: int) -> list[torch.Tensor]:
        """The epoch's global batches (same seeded permutation as cached training). Batches with
        fewer clips than processes (or than 2) are dropped, so every process has work."""
        n = len(self.prepared.table)
        g = torch.Generator().manual_seed(self.cfg.train.seed * 100003 + epoch)
        perm = torch.randperm(n, generator=g)
        bs = self.cfg.train.batch_size
        keep = max(2, self.env.world_size)
        return [perm[b0 : b0 + bs] for b0 in range(0, n, bs) if len(perm[b0 : b0 + bs]) >= keep]

    def loader(self, epoch: int, batches: list[torch.Tensor]):
        """Iterator over this process's crops for ``batches``: one list of waveforms per batch."""
        if not self.needs_audio:
            return iter([None] * len(batches))
        keys = [[(epoch, int(i)) for i in local_slice(idx, self.env)[0]] for idx in batches]
        nw = self.cfg.train.num_workers
        dl = torch.utils.data.DataLoader(self.dataset, batch_sampler=keys, num_workers=nw, collate_fn=_collate,
                                         prefetch_factor=2 if nw > 0 else None)
        return ([w for _, w in items] for items in dl)

    def crops(self, epoch: int, idx) -> list[np.ndarray]:
        """This process's crops for global batch ``idx`` (no data loader)."""
        return [self.dataset[(epoch, int(i))][1] for i in local_slice(torch.as_tensor(idx), self.env)[0]]

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    # -- one batch ----------------------------------------------------------------------------------
    def accumulate(self, epoch: int, idx: torch.Tensor, waves: list | None = None) -> dict:
        """Forward + backward for global batch ``idx``; ``waves`` = this process's crops (computed
        here when None and the audio tower runs). Returns the loss output on the global batch."""
        env, dev, tr = self.env, self.device, self.cfg.train
        idx = torch.as_tensor(idx)
        mine, sizes = local_slice(idx, env)
        if min(sizes) < 1:
            raise ValueError(f"global batch of {len(idx)} is smaller than the {env.world_size} processes")
        cap = torch.as_tensor(self.prepared.caption_index[epoch % len(self.prepared.caption_index)])
        if self.needs_audio and waves is None:
            waves = self.crops(epoch, idx)
        b = len(mine)
        n_micro = max(1, min(tr.accum_freq, min(sizes)))  # the same on every process
        micro = list(torch.tensor_split(torch.arange(b), n_micro))

        # Inputs of the trainable part; frozen towers run here once, without gradients.
        if self.train_audio:
            audio_in = list(waves)
        elif self.needs_audio:
            with torch.no_grad(), self._autocast():
                audio_in = torch.cat([self.audio_tower.forward_waves(_take(waves, m)).float() for m in micro])
        else:
            audio_in = self.audio_feats[mine].to(dev)
        if self.train_text:
            text_in = [self.prepared.caption_texts[int(c)] for c in cap[mine]]
        else:
            text_in = self.cap_emb[cap[mine]].to(dev)
        local_b = self.local[mine].to(dev) if self.local is not None else None
        if self.desc is not None:
            desc_b = self.desc[mine].to(dev)
        elif self.caption_desc:
            desc_b = self.cap_emb[cap[mine]].to(dev)
        else:
            desc_b = None

        if n_micro == 1:
            with self._autocast():
                za, zt, s = self.ddp(audio_in, text_in)
            out = self.loss(za.float(), zt.float(), s.float(), local_audio=local_b, desc_text=desc_b, sizes=sizes)
            self._backward(out["loss"])
            return out

        # Pass 1: every micro-batch's features without gradients (RNG state kept per micro-batch).
        states, ca, ct = [], [], []
        with torch.no_grad():
            for m in micro:
                states.append(rng_state(dev))
                with self._autocast():
                    za_m, zt_m, _ = self.net(_take(audio_in, m), _take(text_in, m))
                ca.append(za_m.float())
                ct.append(zt_m.float())
        # Pass 2: recompute each micro-batch with gradients in place of its cached features.
        out = None
        for j, m in enumerate(micro):
            last = j == n_micro - 1
            set_rng_state(states[j], dev)
            sync = contextlib.nullcontext() if (last or not env.enabled) else self.ddp.no_sync()
            with sync:
                with self._autocast():
                    za_j, zt_j, s = self.ddp(_take(audio_in, m), _take(text_in, m))
                za = torch.cat(ca[:j] + [za_j.float()] + ca[j + 1 :])
                zt = torch.cat(ct[:j] + [zt_j.float()] + ct[j + 1 :])
                s = s.float() if last else s.float().detach()  # the scale's gradient once
                out = self.loss(za, zt, s, local_audio=local_b, desc_text=desc_b, sizes=sizes)
                self._backward(out["loss"])
        return out

    def step(self) -> None:
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def set_train(self) -> None:
        self.model.train()
        if self.audio_tower is not None:
            self.audio_tower.train(self.train_audio)
        if self.text_tower is not None:
            self.text_tower.train(self.train_text)

    # -- checkpoints --------------------------------------------------------------------------------
    def state(self, epoch: int, history: list, fingerprint: str, rngs: list | None) -> dict:
        st = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "epoch": epoch,
              "history": history, "fingerprint": fingerprint, "rng": rng_state(self.device),
              "towers": {}, "mode": "e2e"}
        if self.train_audio:
            st["towers"]["audio"] = self.audio_tower.state_dict()
        if self.train_text:
            st["towers"]["text"] = self.text_tower.state_dict()
        if self.scaler is not None:
            st["scaler"] = self.scaler.state_dict()
        if rngs is not None:
            st["rng_ranks"] = rngs
        return st

    def load(self, ck: dict) -> None:
        self.model.load_state_dict(ck["model"])
        if "audio" in ck["towers"]:
            self.audio_tower.load_state_dict(ck["towers"]["audio"])
        if "text" in ck["towers"]:
            self.text_tower.load_state_dict(ck["towers"]["text"])
        self.opt.load_state_dict(ck["optimizer"])
        if self.scaler is not None and "scaler" in ck:
            self.scaler.load_state_dict(ck["scaler"])
        ranks = ck.get("rng_ranks")
        if self.env.enabled and ranks is not None and len(ranks) == self.env.world_size:
            set_rng_state(ranks[self.env.rank], self.device)
        elif self.env.is_main:
            set_rng_state(ck["rng"], self.device)
        else:
            torch.manual_seed(self.cfg.train.seed + 7919 * self.env.rank + 104729 * int(ck["epoch"]))

    def finish(self) -> None:
        """Training over: everything to eval mode, no gradients; fine-tuned towers to the CPU."""
        self.model.eval()
        self.model.cpu()
        for kind, tower in (("audio", self.audio_tower), ("text", self.text_tower)):
            if tower is None:
                continue
            tower.requires_grad_(False)
            tower.eval()
            if kind in self.model.trainable_towers:
                tower.to("cpu")
                tower.device = "cpu"
            else:  # frozen: rebuilt lazily from its spec when needed
                self.model._towers.pop(kind, None)


def train_e2e(cfg: RunConfig, prepared, run_dir=None, progress: bool = True, resume: bool = True,
              callback=None, *, dist_env: DistEnv | None = None):
    """End-to-end training; same contract, files and resume as :func:`smoothclap.train.train`."""
    from .train import TrainResult

    t0 = time.perf_counter()
    tr = E2ETrainer(cfg, prepared, dist_env)
    env, main = tr.env, tr.env.is_main
    n = len(prepared.table)
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
            if getattr(prepared, "binner", None) is not None:
                atomic_write_json(Path(run_dir) / "caption_bins.json", prepared.binner.to_dict())
        if resume:
            ck = None
            if main and ckpt_path.exists():
                ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
                if ck.get("fingerprint") != fp:
                    log.warning("%s: checkpoint is from a different config or data; starting afresh", ckpt_path)
                    ck = None
            ck = broadcast_object(ck, env)
            if ck is not None:
                tr.load(ck)
                history, start_epoch = ck["history"], ck["epoch"]
                if main:
                    log.info("resuming %s from epoch %d", run_dir, start_epoch)
    resumed_from = start_epoch
    example: dict = {}
    epochs = cfg.train.epochs
    bar = tqdm(range(start_epoch, epochs), desc=f"train e2e beta={cfg.loss.beta:g}", unit="epoch",
               disable=not progress or not main, initial=start_epoch, total=epochs)
    for epoch in bar:
        tr.set_train()
        batches = tr.batches(epoch)
        sums: dict[str, float] = {}
        count = 0
        for idx, waves in zip(batches, tr.loader(epoch, batches)):
            tr.opt.zero_grad(set_to_none=True)
            out = tr.accumulate(epoch, idx, waves)
            tr.step()
            stats = {"loss": float(out["loss"].detach()), "kl": float(out["kl"])}
            stats.update(target_diagnostics(out["targets"], tr.labels[idx].to(tr.device)))
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            if epoch == epochs - 1 and not example and len(idx) == min(cfg.train.batch_size, n):
                t = out["targets"]
                example = {"y": t.y.cpu().numpy(), "q": None if t.q is None else t.q.cpu().numpy(),
                           "labels": [prepared.label_names[i] for i in tr.labels[idx].tolist()]}
        rec = {"epoch": epoch + 1, **{k: v / max(count, 1) for k, v in sums.items()},
               "scale": float(tr.model.scale.detach())}
        history.append(rec)
        bar.set_postfix(loss=f"{rec.get('loss', float('nan')):.3f}", scale=f"{rec['scale']:.1f}")
        if ckpt_path is not None:
            rngs = all_gather_object(rng_state(tr.device), env) if env.enabled else None
            if main:
                state = tr.state(epoch + 1, history, fp, rngs)
                atomic_save(ckpt_path, lambda t: torch.save(state, t))
        if callback is not None:
            callback(epoch + 1, rec, tr.model)
    bar.close()
    tr.finish()
    if run_dir is not None and main:
        save_model(tr.model, Path(run_dir) / "model")
        atomic_write_json(Path(run_dir) / "history.json", history)
    barrier(env)
    return TrainResult(model=tr.model, history=history, run_dir=Path(run_dir) if run_dir else None,
                       example_targets=example, seconds=time.perf_counter() - t0,
                       resumed_from_epoch=resumed_from)
