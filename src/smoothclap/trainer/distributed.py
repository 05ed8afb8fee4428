"""Several processes, GPUs or machines with PyTorch's own engine (``torch.distributed``, ``torchrun``).

Launch any command with ``torchrun`` instead of ``python`` and it runs distributed::

    torchrun --nproc-per-node 8 -m smoothclap train --config paper
    torchrun --nproc-per-node 8 -m smoothclap embed --corpus msp-podcast --data-root D --tower T

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` / ``MASTER_PORT``;
:func:`init_distributed` reads them (NCCL on CUDA, gloo on CPU). Without them everything here is a
no-op and a command runs as one process.

Training (DistributedDataParallel). Every process draws the same seeded permutation, so all know
each global batch; process r takes the r-th contiguous slice of it. :class:`GlobalBatchLoss`
gathers the projected features of all processes *with gradients* (:func:`gather_with_grad`:
all_gather forward, all_reduce of the incoming gradient backward, as
``torch.distributed.nn.functional.all_gather``; slices may differ in size) and the soft-target
sources (local-feature and description embeddings, no gradients), so every process computes the
same global logits, the same global targets and the same loss. With DDP averaging gradients over
processes this gives exactly the gradient of the single-process loss on the concatenated batch:
process r's features receive ``W * dL/dz_r`` from the backward all_reduce, DDP divides by ``W``.

Extraction (:func:`embed_sharded`): process r embeds files ``r::W``; every item goes into the
per-item atomic embedding cache as soon as its batch is done (a killed run keeps them and a rerun
computes only what is missing); rank 0 gathers the shards into the full array.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..device import resolve_device

log = logging.getLogger("smoothclap")

#: minutes a process waits in a collective (e.g. while rank 0 prepares data) before failing
#: (``train.dist_timeout_min`` in a run config).
DEFAULT_TIMEOUT_MIN = 180.0


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: rank, world size, local rank on its machine, torch device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _device_for(device: str | None, local_rank: int, distributed: bool) -> torch.device:
    dev = resolve_device(device)
    # One GPU per process: "auto" / "cuda" mean this process's GPU (cuda:LOCAL_RANK).
    if dev.type == "cuda" and dev.index is None and (distributed or "LOCAL_RANK" in os.environ):
        dev = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return dev


def init_distributed(device: str | None = "auto", backend: str | None = None,
                     timeout_min: float | None = None) -> DistEnv:
    """Join the process group ``torchrun`` set up (reads RANK / WORLD_SIZE / LOCAL_RANK).

    Returns a single-process :class:`DistEnv` when not launched by torchrun (or WORLD_SIZE=1).
    Backend: NCCL for CUDA devices, gloo otherwise. Idempotent.
    """
    world = env_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device_for(device, local_rank, world > 1)
    if world <= 1:
        return DistEnv(0, 1, 0, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        minutes = DEFAULT_TIMEOUT_MIN if timeout_min is None else timeout_min
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=minutes))
        log.info("rank %d/%d (local %d) on %s, backend %s", rank, world, local_rank, dev, backend)
    return DistEnv(rank, world, local_rank, dev)


def current_env(device: str | None = "auto") -> DistEnv:
    """The DistEnv of an already initialised process group (or single-process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank,
                       _device_for(device, local_rank, True))
    return DistEnv(0, 1, 0, resolve_device(device))


def cleanup() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if not env.enabled:
        return
    if env.device.type == "cuda":
        dist.barrier(device_ids=[env.device.index])
    else:
        dist.barrier()


def broadcast_object(obj, env: DistEnv, src: int = 0):
    """Rank ``src``'s (picklable) ``obj`` on every process."""
    if not env.enabled:
        return obj
    box = [obj if env.rank == src else None]
    dist.broadcast_object_list(box, src=src, device=env.device if env.device.type == "cuda" else None)
    return box[0]


def all_gather_object(obj, env: DistEnv) -> list:
    if not env.enabled:
        return [obj]
    out = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


# -- batches --------------------------------------------------------------------------------------
def local_slice(idx: torch.Tensor, env: DistEnv) -> tuple[torch.Tensor, list[int]]:
    """This process's contiguous slice of global batch ``idx`` and the sizes of all slices.

    Slices are contiguous, so gathering them in rank order gives back ``idx``'s order: the global
    logits and targets are laid out exactly as in a single-process run on the whole batch.
    """
    if not env.enabled:
        return idx, [len(idx)]
    parts = torch.tensor_split(idx, env.world_size)
    return parts[env.rank], [len(p) for p in parts]


# -- gathering --------------------------------------------------------------------------------------
def _padded_all_gather(x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    m = max(max(sizes), 1)
    if x.shape[0] < m:
        x = torch.cat([x, x.new_zeros((m - x.shape[0], *x.shape[1:]))])
    x = x.contiguous()
    bufs = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(bufs, x)
    return torch.cat([b[:n] for b, n in zip(bufs, sizes)])


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, sizes, rank):
        ctx.sizes, ctx.rank = list(sizes), rank
        return _padded_all_gather(x, sizes)

    @staticmethod
    def backward(ctx, grad):
        g = grad.contiguous().clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return g[start : start + ctx.sizes[ctx.rank]], None, None


def gather_with_grad(x: torch.Tensor, sizes: Sequence[int], env: DistEnv) -> torch.Tensor:
    """Concatenate every process's ``x`` ``[sizes[r], ...]`` in rank order -> ``[sum(sizes), ...]``.

    Differentiable: the backward pass sums the gradient of the gathered tensor over processes
    (all_reduce) and hands each process the rows of its own slice.
    """
    if not env.enabled:
        return x
    return _GatherWithGrad.apply(x, list(sizes), env.rank)


@torch.no_grad()
def gather_tensor(x: torch.Tensor | None, sizes: Sequence[int], env: DistEnv) -> torch.Tensor | None:
    """Like :func:`gather_with_grad` but without gradient (target sources, diagnostics)."""
    if x is None or not env.enabled:
        return x
    return _padded_all_gather(x.detach(), sizes)


class GlobalBatchLoss(nn.Module):
    """Distributed-aware wrapper of the trainer's loss object (``targets.build_loss``).

    ``forward(sizes=None, **batch)`` takes this process's slice of the batch structure (the
    projected features ``z_audio`` / ``z_text`` ``[b_r, d]``, the ``scale``, and every target
    source ``[b_r, k]`` the batch builder made) and ``sizes`` (all slices' lengths), gathers every
    tensor into the global batch (``z_*`` with gradients, the rest without) and returns the
    wrapped loss's output on the global batch: identical on every process. Non-tensors and the
    scale pass through. Single-process: the loss itself.
    """

    def __init__(self, loss_fn: nn.Module, env: DistEnv):
        super().__init__()
        self.loss_fn = loss_fn
        self.env = env

    def forward(self, sizes=None, **batch) -> dict:
        if not self.env.enabled:
            return self.loss_fn(**batch)
        if sizes is None:
            sizes = [int(s) for s in all_gather_object(int(batch["z_audio"].shape[0]), self.env)]
        out = {}
        for k, v in batch.items():
            if k == "scale" or not torch.is_tensor(v):
                out[k] = v
            elif k.startswith("z_"):
                out[k] = gather_with_grad(v, sizes, self.env)
            else:
                out[k] = gather_tensor(v, sizes, self.env)
        return self.loss_fn(**out)


def wrap_ddp(module: nn.Module, env: DistEnv, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel around ``module`` (returned unchanged when single-process)."""
    if not env.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    import inspect

    kw = {"device_ids": [env.device.index]} if env.device.type == "cuda" else {}
    # Buffers (input standardisation, tower position ids) never change during training: no sync
    # before every forward (torch >= 2.13 names it forward_sync_buffers, broadcast_buffers before).
    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
        kw["forward_sync_buffers"] = False
    else:
        kw["broadcast_buffers"] = False
    return DDP(module, find_unused_parameters=find_unused_parameters, **kw)


# -- sharded extraction ---------------------------------------------------------------------------
def embed_sharded(tower, files: Sequence[str], *, env: DistEnv, cache_dir=None, batch_size: int = 16,
                  skip=None, progress: bool = True, desc: str | None = None, gather: bool = True, **kw):
    """:func:`smoothclap.embed.embed_audio_files` split over processes (``kw``: its options).

    Process r embeds ``files[r::W]``, writing each item to the cache (atomically) as soon as its
    batch is done; a rerun after a crash computes only the items not yet cached. With ``gather``
    rank 0 returns the full ``(emb [N, dim], ok [N])`` (the other ranks ``(None, None)``) and the
    skipped files of all ranks are merged into rank 0's ``skip``; without it every rank returns
    ``(None, None)`` after a barrier (cache warm-up). Single-process: the plain function.
    """
    from ..embed import embed_audio_files
    from ..errors import SkipLog

    files = [str(f) for f in files]
    if not env.enabled:
        return embed_audio_files(tower, files, cache_dir=cache_dir, batch_size=batch_size, skip=skip,
                                 progress=progress, desc=desc, **kw)
    skip = skip if skip is not None else SkipLog(skip=False)
    mine = list(range(env.rank, len(files), env.world_size))
    own_skip = SkipLog(skip=skip.skip)
    emb, ok = embed_audio_files(tower, [files[i] for i in mine], cache_dir=cache_dir, batch_size=batch_size,
                                skip=own_skip, progress=progress,
                                desc=(desc or f"embed {tower.spec}") + f" [rank {env.rank}/{env.world_size}]", **kw)
    if not gather:
        skip.items.extend(own_skip.items)
        barrier(env)
        return None, None
    payload = (mine, emb, ok, own_skip.items)
    parts = [None] * env.world_size if env.is_main else None
    dist.gather_object(payload, parts, dst=0)
    if not env.is_main:
        skip.items.extend(own_skip.items)
        return None, None
    dim = next((p[1].shape[1] for p in parts if p[1].ndim == 2), emb.shape[1])
    out = np.full((len(files), dim), np.nan, dtype=np.float32)
    all_ok = np.zeros(len(files), dtype=bool)
    for idx, e, o, items in parts:
        if len(idx):
            out[idx], all_ok[idx] = e, o
        skip.items.extend(items)
    return out, all_ok


def warm_audio_cache(spec: str, files: Sequence[str], env: DistEnv, *, cache_dir, batch_size: int = 16,
                     progress: bool = True, desc: str | None = None, **kw) -> None:
    """Embed ``files`` with tower ``spec`` on this process's device, split over the processes, into
    the cache (bad files are left for the caller to report). Every process returns after a barrier."""
    from ..errors import SkipLog
    from ..towers import build_tower

    tower = build_tower(spec, device=str(env.device), shared=False)
    embed_sharded(tower, files, env=env, cache_dir=cache_dir, batch_size=batch_size, skip=SkipLog(skip=True),
                  progress=progress and env.is_main, desc=desc or f"audio {spec}", gather=False, **kw)
    del tower
    barrier(env)


def prepare_distributed(cfg, table, env: DistEnv, *, cache_dir=None, progress: bool = True, skip=None):
    """:func:`smoothclap.trainer.bundle.prepare` for a (possibly) distributed run.

    1. Every process embeds its shard of the clips with the audio (and local-feature) tower on its
       own device and, when captions use eGeMAPS, extracts its shard of the functionals; all go
       into the cache. (Single-process on CUDA this also moves that extraction to the GPU.)
    2. Rank 0 runs ``prepare`` (everything audio-side now comes from the cache) and sends the
       bundle to the other processes, so all train on identical data.
    Multi-machine runs should give every machine the same ``cache_dir`` (shared storage): rank 0
    recomputes what it cannot see.
    """
    from ..cache import cache_root
    from ..errors import SkipLog
    from .bundle import needs_local
    from .mapped import build_bundle

    cache_dir = cache_root(cache_dir)
    skip = skip if skip is not None else SkipLog(skip=cfg.data.skip_bad)
    if not env.enabled and env.device.type == "cpu":
        return build_bundle(cfg, table, cache_dir=cache_dir, progress=progress, skip=skip)
    if cache_dir is not None:
        files = table["file"].astype(str).tolist()
        specs = [cfg.towers.audio]
        if needs_local(cfg, table) and cfg.towers.local and cfg.towers.local != cfg.towers.audio:
            specs.append(cfg.towers.local)
        for spec in specs:
            warm_audio_cache(spec, files, env, cache_dir=cache_dir, batch_size=cfg.towers.batch_size,
                             progress=progress, loudness=cfg.model.loudness, workers=cfg.towers.embed_workers,
                             trim_every=cfg.towers.trim_every)
        if cfg.captions.variables and env.enabled:
            from ..egemaps import extract_egemaps

            extract_egemaps(files[env.rank :: env.world_size], cache_dir=cache_dir, num_workers=cfg.train.num_workers,
                            skip=SkipLog(skip=True), progress=progress and env.is_main)
            barrier(env)
    prepared = None
    if env.is_main:
        prepared = build_bundle(cfg, table, cache_dir=cache_dir, progress=progress, skip=skip)
    return broadcast_object(prepared, env)


# -- the embed command -------------------------------------------------------------------------------
@dataclass
class EmbedRun:
    """What :func:`embed_corpus` did (rank 0; other ranks get None)."""

    embeddings: np.ndarray          # [N, dim], NaN rows for skipped clips
    ok: np.ndarray                  # [N]
    seconds: float
    world_size: int
    skipped: list                   # (path, reason) of the table's reading and of the audio
    output: str | None = None


def _embed_listing(read, emb: np.ndarray, ok: np.ndarray, reasons: list[str]):
    """(array, listing) that :func:`embed_corpus` writes: for a manifest's rows (``read``, a
    :class:`~smoothclap.corpora.Table`, every kept row still there) one row per manifest row, with
    the rows left out while reading as NaN rows and their reason; else one row per clip."""
    import pandas as pd

    files = read.rows["file"].astype(str).tolist()
    rows = read.manifest_rows()
    if rows is None:
        listing = pd.DataFrame({"row": np.arange(1, len(files) + 1), "file": files, "ok": ok, "reason": reasons})
        return emb, listing
    n = int(read.n_rows)
    emb_out = np.full((n, emb.shape[1]), np.nan, dtype=np.float32)
    idx = rows - 1
    emb_out[idx] = emb
    listing = pd.DataFrame({"row": np.arange(1, n + 1), "file": [""] * n, "ok": [False] * n, "reason": [""] * n})
    for r, reason in read.row_errors.items():
        listing.loc[r - 1, "reason"] = reason
    listing.loc[idx, "file"] = files
    listing.loc[idx, "ok"] = ok
    listing.loc[idx, "reason"] = reasons
    return emb_out, listing


def embed_corpus(table, spec: str, *, device: str = "auto", cache_dir=None, batch_size: int = 16,
                 skip_bad: bool = False, progress: bool = True, output=None, loudness: str | None = None,
                 workers: int | None = None) -> EmbedRun | None:
    """``smoothclap embed``: run tower ``spec`` over the table's files once, into the cache (under
    ``torchrun`` split over the processes, see :func:`embed_sharded`). ``table``: a
    :class:`~smoothclap.corpora.Table` (or a DataFrame, which skipped nothing). With ``output`` rank 0
    writes the array (``.npy``, atomically) and ``<output>.files.csv`` beside it: one row per
    array row (row, file, ok, reason). For a manifest the array has one row per manifest row, in
    its order: rows skipped while reading the manifest are NaN like clips skipped while embedding."""
    import time

    from ..cache import cache_root
    from ..corpora import Table, check_whole_files
    from ..errors import SkipLog
    from ..io import atomic_save, atomic_write_text
    from ..towers import build_tower

    read = Table.of(table)
    env = init_distributed(device)
    try:
        skip = SkipLog(skip=skip_bad)
        t = time.perf_counter()
        check_whole_files(read.rows, "embedding", source=read.source)
        tower = build_tower(spec, device=str(env.device))
        files = read.rows["file"].astype(str).tolist()
        emb, ok = embed_sharded(tower, files, env=env, cache_dir=cache_root(cache_dir), batch_size=batch_size,
                                skip=skip, progress=progress and env.is_main, loudness=loudness, workers=workers)
        if not env.is_main:
            return None
        run = EmbedRun(embeddings=emb, ok=ok, seconds=time.perf_counter() - t, world_size=env.world_size,
                       skipped=list(read.skipped.items) + list(skip.items))
        if output:
            out = str(output)
            why = dict(skip.items)
            emb_out, listing = _embed_listing(read, emb, ok, [why.get(f, "") for f in files])

            def write(tmp):
                with open(tmp, "wb") as f:
                    np.save(f, emb_out, allow_pickle=False)

            atomic_save(out, write)
            atomic_write_text(f"{out}.files.csv", listing.to_csv(index=False))
            run.output = out
        return run
    finally:
        cleanup()
