"""The one training loop, for every step (:mod:`smoothclap.trainer.steps`) and every process count.

Input is a :class:`~smoothclap.trainer.bundle.Prepared` bundle. Each epoch: a seeded permutation,
global batches of ``train.batch_size`` (a last batch too small for a contrastive problem, or
smaller than the number of processes, is dropped), the step's inputs, the model's projections, the
batch structure (projections + target sources from :class:`BatchBuilder`) into the SmoothCLAP loss
(beta = 0: CLAP), an optimizer step. Seeded and deterministic; the run folder holds
``config.yaml``, ``checkpoint.pt`` (written atomically after every epoch; an interrupted run
resumes), ``history.json`` and ``model/``.

Gradient accumulation that keeps the contrastive batch (``train.accum_freq``, as open_clip's
``accum_freq``): the batch is split into micro-batches; a first pass without gradients collects
every micro-batch's features, then each micro-batch is recomputed with gradients and put in place
of its cached features, and the loss on the whole batch is backpropagated. The RNG state of each
micro-batch's first pass is restored for its second, so dropout masks match and the summed
gradients equal those of one pass over the whole batch. The logit scale takes its gradient from
one micro-step only (open_clip counts it ``accum_freq`` times).

Launched by ``torchrun`` (several processes, GPUs or machines) the same loop trains with
DistributedDataParallel: every process draws the same permutation, takes its contiguous slice of
each global batch, and the loss is computed on the gathered global batch
(:class:`~smoothclap.trainer.distributed.GlobalBatchLoss`), so the soft targets and the gradients
are those of the single-process run on the whole batch. Only rank 0 writes files; every rank
resumes from rank 0's checkpoint.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..adapt import neutral_rows
from ..config import RunConfig, SmoothClapConfig, validate
from ..embed import release_memory
from ..io import atomic_write_json
from ..losses import target_diagnostics
from ..model import SmoothClapModel
from ..targets import build_loss
from .bundle import BatchBuilder, Prepared, as_recorded, as_unseen, norm_groups, nuisance_groups
from .checkpoint import (CHECKPOINT_NAME, RunFolderError, check_run_folder, fingerprint, load_checkpoint,
                         rng_state, save_checkpoint, set_rng_state)
from .distributed import (DistEnv, GlobalBatchLoss, all_gather_object, barrier, broadcast_object, current_env,
                          local_slice, wrap_ddp)
from .steps import CachedStep, EndToEndStep

log = logging.getLogger("smoothclap")


@dataclass
class TrainResult:
    model: SmoothClapModel
    history: list[dict]
    run_dir: Path | None
    example_targets: dict = field(default_factory=dict)  # one batch's y, q, labels for the heatmap
    seconds: float = 0.0
    resumed_from_epoch: int = 0


def build_model(cfg: RunConfig, prepared: Prepared) -> SmoothClapModel:
    """An untrained model for ``cfg`` with the bundle's feature sizes and provenance."""
    mc = SmoothClapConfig(**cfg.model.to_dict(), audio_tower=cfg.towers.audio, text_tower=cfg.towers.text,
                          audio_dim=int(prepared.audio.shape[1]), text_dim=int(prepared.caption_emb.shape[1]),
                          inference=cfg.inference, trained_on=list(prepared.trained_on), loss=cfg.loss.to_dict())
    model = SmoothClapModel(mc)
    model.trained_clips = getattr(prepared, "trained_clips", None)
    return model


def validated(cfg: RunConfig) -> RunConfig:
    """``cfg`` checked again (its fields may have been set after it was built)."""
    return validate(RunConfig, cfg.to_dict())


def _take(x, m: torch.Tensor):
    """Rows ``m`` of a tensor, a list or a (mean, std) pair."""
    if x is None:
        return None
    if isinstance(x, tuple):
        return tuple(_take(v, m) for v in x)
    if isinstance(x, torch.Tensor):
        return x[m.to(x.device)]
    return [x[k] for k in m.tolist()]


class Trainer:
    """Model, step, optimizer and loss of one run; :meth:`fit` is the loop (:func:`train` calls it;
    tests drive :meth:`accumulate` directly). ``accumulate(epoch, idx)`` runs forward + backward
    for global batch ``idx`` (gradients accumulate in ``.grad``); :meth:`step` applies them."""

    def __init__(self, cfg: RunConfig, prepared: Prepared, env: DistEnv | None = None):
        self.cfg, self.prepared = cfg, prepared
        self.env = env if env is not None else current_env(cfg.train.device)
        self.device = self.env.device
        tr = cfg.train
        torch.manual_seed(tr.seed)
        self.model = build_model(cfg, prepared)
        if prepared.binner is not None:  # so the model can describe new clips as its captions did
            self.model.caption_bins = prepared.binner.to_dict()
        # statistics of the clips as recorded: augmented views are normalised like their clips,
        # single-clip copies as clips of an unseen group
        groups, recorded = norm_groups(cfg, prepared), as_recorded(prepared.table)
        features = self.model.fit_normalization(prepared.audio, groups, recorded, as_unseen(prepared.table),
                                                nuisance_groups(cfg, prepared), prepared.label_ids)
        if groups is not None and "label" in prepared.table.columns:  # for adapting on neutral clips
            self.model.fit_neutral_statistics(prepared.audio, groups, neutral_rows(prepared.table["label"], groups),
                                              recorded)
        self.model.to(self.device)
        step_cls = CachedStep if tr.mode == "cached" else EndToEndStep
        self.step_impl = step_cls(cfg, prepared, self.model, features, self.env)
        self.opt = torch.optim.Adam(self.step_impl.param_groups(), lr=tr.lr, weight_decay=tr.weight_decay,
                                    foreach=True)
        self.ddp = wrap_ddp(self.step_impl.net, self.env, find_unused_parameters=self.step_impl.find_unused)
        self.loss = GlobalBatchLoss(build_loss(cfg, prepared), self.env)
        self.batch = BatchBuilder(cfg, prepared)
        self.scaler = torch.amp.GradScaler("cuda") if self.step_impl.amp == torch.float16 else None
        self.labels = torch.as_tensor(prepared.label_ids)
        if self.env.enabled and self.env.rank > 0:
            torch.manual_seed(tr.seed + 7919 * self.env.rank)  # own dropout stream per process

    # -- properties used by tests and tools -----------------------------------------------------------
    @property
    def audio_tower(self):
        return getattr(self.step_impl, "audio_tower", None)

    @property
    def text_tower(self):
        return getattr(self.step_impl, "text_tower", None)

    # -- batches ------------------------------------------------------------------------------------
    def batches(self, epoch: int) -> list[torch.Tensor]:
        """The epoch's global batches (a seeded permutation). Batches with fewer clips than
        processes (or than 2) are dropped, so every process has work."""
        n = len(self.prepared.table)
        g = torch.Generator().manual_seed(self.cfg.train.seed * 100003 + epoch)
        perm = torch.randperm(n, generator=g)
        bs = self.cfg.train.batch_size
        keep = max(2, self.env.world_size)
        return [perm[b0 : b0 + bs] for b0 in range(0, n, bs) if len(perm[b0 : b0 + bs]) >= keep]

    def _loss(self, za, zt, s, sources: dict, sizes) -> dict:
        return self.loss(sizes=sizes, z_audio=za.float(), z_text=zt.float(), scale=s.float(), **sources)

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def accumulate(self, epoch: int, idx, data=None) -> dict:
        """Forward + backward for global batch ``idx``; ``data`` = this process's loaded inputs (its
        crops in e2e mode; made here when None). Returns the loss output on the global batch."""
        env, tr = self.env, self.cfg.train
        idx = torch.as_tensor(idx)
        mine, sizes = local_slice(idx, env)
        if min(sizes) < 1:
            raise ValueError(f"global batch of {len(idx)} is smaller than the {env.world_size} processes")
        n_micro = max(1, min(tr.accum_freq, min(sizes)))  # the same on every process
        micro = list(torch.tensor_split(torch.arange(len(mine)), n_micro))
        cap = self.batch.caption_ids(mine, epoch)
        audio_in, text_in, norm = self.step_impl.inputs(epoch, mine, cap, data, micro)
        sources = self.batch.sources(mine, epoch, self.device)

        if n_micro == 1:
            with self.step_impl.autocast():
                za, zt, s = self.ddp(audio_in, text_in, norm)
            out = self._loss(za, zt, s, sources, sizes)
            self._backward(out["loss"])
            return out

        # Pass 1: every micro-batch's features without gradients (RNG state kept per micro-batch).
        states, ca, ct = [], [], []
        with torch.no_grad():
            for m in micro:
                states.append(rng_state(self.device))
                with self.step_impl.autocast():
                    za_m, zt_m, _ = self.step_impl.net(_take(audio_in, m), _take(text_in, m), _take(norm, m))
                ca.append(za_m.float())
                ct.append(zt_m.float())
        # Pass 2: recompute each micro-batch with gradients in place of its cached features.
        out = None
        for j, m in enumerate(micro):
            last = j == n_micro - 1
            set_rng_state(states[j], self.device)
            sync = contextlib.nullcontext() if (last or not env.enabled) else self.ddp.no_sync()
            with sync:
                with self.step_impl.autocast():
                    za_j, zt_j, s = self.ddp(_take(audio_in, m), _take(text_in, m), _take(norm, m))
                za = torch.cat(ca[:j] + [za_j.float()] + ca[j + 1 :])
                zt = torch.cat(ct[:j] + [zt_j.float()] + ct[j + 1 :])
                s = s.float() if last else s.float().detach()  # the scale's gradient once
                out = self._loss(za, zt, s, sources, sizes)
                self._backward(out["loss"])
        return out

    def step(self) -> None:
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    # -- checkpoints ----------------------------------------------------------------------------------
    def state(self, epoch: int, history: list, fp: str, rngs: list | None) -> dict:
        st = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "epoch": epoch,
              "history": history, "fingerprint": fp, "rng": rng_state(self.device), "mode": self.cfg.train.mode,
              "towers": self.step_impl.state()}
        if self.scaler is not None:
            st["scaler"] = self.scaler.state_dict()
        if rngs is not None:
            st["rng_ranks"] = rngs
        return st

    def load(self, ck: dict) -> None:
        # checkpoints written before the neutral statistics: those just fitted (the same rows)
        fitted = {k: getattr(self.model, k) for k in ("neutral_offset", "neutral_scale")}
        self.model.load_state_dict({**fitted, **ck["model"]})
        self.step_impl.load(ck.get("towers", {}))
        self.opt.load_state_dict(ck["optimizer"])
        if self.scaler is not None and "scaler" in ck:
            self.scaler.load_state_dict(ck["scaler"])
        ranks = ck.get("rng_ranks")
        if self.env.enabled and ranks is not None and len(ranks) == self.env.world_size:
            set_rng_state(ranks[self.env.rank], self.device)
        elif self.env.is_main:
            set_rng_state(ck["rng"], self.device)
        else:  # resumed with another number of processes: fresh per-rank dropout streams
            torch.manual_seed(self.cfg.train.seed + 7919 * self.env.rank + 104729 * int(ck["epoch"]))

    # -- the loop ---------------------------------------------------------------------------------------
    def _resume(self, run_dir: Path | None, fp: str, load: bool = True) -> tuple[list[dict], int]:
        """Prepare the run folder and (``load``) its checkpoint, if any: (history, first epoch to train)."""
        if run_dir is None:
            return [], 0
        cfg, env = self.cfg, self.env
        ck = None
        if env.is_main:
            check_run_folder(run_dir, cfg)
            ck = load_checkpoint(run_dir / CHECKPOINT_NAME, fp) if load else None
            if ck is not None and int(ck["epoch"]) > cfg.train.epochs:
                raise RunFolderError(run_dir, f"holds a run already trained for {int(ck['epoch'])} epochs; "
                                     f"train.epochs={cfg.train.epochs} cannot shorten it (its model stays as it is): "
                                     "choose another output folder (--out) or raise train.epochs")
        ck = broadcast_object(ck, env)  # every rank resumes from rank 0's checkpoint
        if env.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            cfg.dump(run_dir / "config.yaml")
            if self.prepared.binner is not None:  # caption bins, fitted on training data only
                atomic_write_json(run_dir / "caption_bins.json", self.prepared.binner.to_dict())
        if ck is None:
            return [], 0
        self.load(ck)
        if env.is_main:
            log.info("resuming %s from epoch %d", run_dir, int(ck["epoch"]))
        return ck["history"], int(ck["epoch"])

    def _epoch(self, epoch: int, example: dict) -> dict:
        """Train one epoch; returns its record (means of the batch statistics, the scale). The
        statistics stay on the device until the end of the epoch (no synchronisation per step). A
        statistic a batch cannot define (NaN: target precision without two labelled clips) is left
        out of its mean (0 when no batch defines it)."""
        n, bs = len(self.prepared.table), self.cfg.train.batch_size
        self.step_impl.set_train()
        batches = self.batches(epoch)
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, torch.Tensor] = {}
        for idx, data in zip(batches, self.step_impl.loader(epoch, batches)):
            self.opt.zero_grad(set_to_none=True)
            out = self.accumulate(epoch, idx, data)
            self.step()
            stats = {"loss": out["loss"].detach(), "kl": out["kl"],
                     **target_diagnostics(out["targets"], self.labels[idx].to(self.device))}
            for k, v in stats.items():  # summed in float64, as Python floats were
                v = v.double()
                ok = ~torch.isnan(v)
                v = torch.where(ok, v, torch.zeros_like(v))
                sums[k] = sums[k] + v if k in sums else v
                counts[k] = counts[k] + ok.double() if k in counts else ok.double()
            if epoch == self.cfg.train.epochs - 1 and not example and len(idx) == min(bs, n):
                t = out["targets"]
                example.update(y=t.y.cpu().numpy(), q=None if t.q is None else t.q.cpu().numpy(),
                               labels=[self.prepared.label_names[i] if i >= 0 else "(unlabelled)"
                                       for i in self.labels[idx].tolist()])
        if not batches:
            raise ValueError(f"epoch {epoch + 1}: no batch of at least {max(2, self.env.world_size)} clips "
                             f"({n} clips, train.batch_size {bs})")
        # one transfer per epoch
        means = torch.stack(list(sums.values())).cpu() / torch.stack(list(counts.values())).cpu().clamp_min(1.0)
        return {"epoch": epoch + 1, **dict(zip(sums, means.tolist())), "scale": float(self.model.scale.detach())}

    def fit(self, run_dir=None, progress: bool = True, resume: bool = True, callback=None) -> TrainResult:
        t0 = time.perf_counter()
        cfg, env = self.cfg, self.env
        if len(self.prepared.table) < 2:
            raise ValueError(f"need at least 2 training clips, got {len(self.prepared.table)}")
        run_dir = Path(run_dir) if run_dir is not None else None
        fp = fingerprint(cfg, self.prepared)
        release_memory()  # the set-up's passes over the rows (statistics, fingerprint) freed their chunks
        history, start_epoch = self._resume(run_dir, fp, load=resume)
        example: dict = {}
        label = f"train{' e2e' if cfg.train.mode == 'e2e' else ''} beta={cfg.loss.beta:g}"
        bar = tqdm(range(start_epoch, cfg.train.epochs), desc=label, unit="epoch", initial=start_epoch,
                   total=cfg.train.epochs, disable=not progress or not env.is_main)
        for epoch in bar:
            rec = self._epoch(epoch, example)
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", scale=f"{rec['scale']:.1f}")
            if run_dir is not None:
                rngs = all_gather_object(rng_state(self.device), env) if env.enabled else None
                if env.is_main:
                    save_checkpoint(run_dir / CHECKPOINT_NAME, self.state(epoch + 1, history, fp, rngs))
            if callback is not None:
                callback(epoch + 1, rec, self.model)
        bar.close()
        self.step_impl.finish()
        self.model.eval()
        self.model.cpu()
        if run_dir is not None and env.is_main:
            self.model.save_pretrained(run_dir / "model")
            atomic_write_json(run_dir / "history.json", history)
        barrier(env)
        return TrainResult(model=self.model, history=history, run_dir=run_dir, example_targets=example,
                           seconds=time.perf_counter() - t0, resumed_from_epoch=start_epoch)


TARGETS_NAME = "target_sources.npz"


def pin_target_sources(run_dir: Path, prepared: Prepared, env: DistEnv) -> Prepared:
    """The run's computed q_a2a source (cross-fitted posteriors) is saved in the run folder; a
    resumed or repeated run uses the saved one, so its targets cannot drift (a new scikit-learn,
    say). A saved source of another shape belongs to other data: the run folder check refuses it."""
    import dataclasses

    from ..io import atomic_save

    path = run_dir / TARGETS_NAME
    local = None
    if env.is_main:
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                local = z["local"]
            if local.shape != prepared.local.shape:
                from .checkpoint import RunFolderError

                raise RunFolderError(path, f"holds targets of shape {local.shape}, this run makes "
                                     f"{prepared.local.shape}: another run's folder")
        else:
            def write(tmp):
                with open(tmp, "wb") as f:
                    np.savez(f, local=prepared.local)

            atomic_save(path, write)
    local = broadcast_object(local, env)
    return prepared if local is None else dataclasses.replace(prepared, local=local.astype(np.float32))


@contextlib.contextmanager
def _threads(n: int | None):
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(cfg: RunConfig, prepared: Prepared, run_dir: str | Path | None = None, progress: bool = True,
          resume: bool = True, callback=None, *, dist_env: DistEnv | None = None) -> TrainResult:
    """Train on ``prepared`` with ``cfg`` (cached or end-to-end, one or many processes); returns
    the model and the per-epoch history.

    ``callback(epoch, record, model)`` runs after each epoch's checkpoint (e.g. model selection),
    on every process. ``dist_env`` (default: the initialised process group, if any) makes it
    distributed; ``train.batch_size`` is then the global batch. A ``run_dir`` holding a run of
    other settings is refused (:class:`~smoothclap.trainer.checkpoint.RunFolderError`).
    """
    cfg = validated(cfg)
    env = dist_env if dist_env is not None else current_env(cfg.train.device)
    if run_dir is not None and cfg.loss.local_source == "posteriors" and prepared.local is not None:
        if env.is_main:
            check_run_folder(Path(run_dir), cfg)  # never pin another run's targets
        prepared = pin_target_sources(Path(run_dir), prepared, env)
    # Heads on cached embeddings are small matrix products: on CPU one intra-op thread is
    # several times faster than two fighting over the cores (measured: 3.5x, benchmarks/).
    one = cfg.train.mode == "cached" and env.device.type == "cpu"
    with _threads(1 if one else None):
        return Trainer(cfg, prepared, env).fit(run_dir, progress, resume, callback)
