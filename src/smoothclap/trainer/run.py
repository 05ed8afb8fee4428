"""``smoothclap train``: a run config in, a trained model and its run folder out."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_root
from ..config import RunConfig
from ..errors import BadInputError, SkipLog
from ..io import atomic_write_json
from .bundle import Prepared
from .checkpoint import RunFolderError, check_run_folder, next_free_folder
from .data import load_sources
from .distributed import cleanup, init_distributed, prepare_distributed, warm_audio_cache
from .loop import TrainResult, train, validated
from .selection import DevSelector


@dataclass
class TrainingRun:
    """What :func:`run_training` did (on rank 0; other ranks get None)."""

    result: TrainResult
    prepared: Prepared
    out_dir: Path
    world_size: int
    skipped: list            # (path, reason): rows skipped while reading + clips skipped in preparation
    selection: dict | None   # the best epoch of model selection, when train.select_split is set


def run_training(cfg: RunConfig, *, progress: bool = True, new_folder: bool = False) -> TrainingRun | None:
    """Read the training data of ``cfg.data`` (every source, rows of ``data.split``), set up model
    selection on ``train.select_split``, build the training bundle (frozen towers once, into the
    cache; split over the processes under ``torchrun``) and train into ``cfg.out_dir``. Settings and
    the run folder are checked before any work: a folder holding a run of other settings (or data)
    is refused, or, with ``new_folder``, left alone and the run goes to ``<out_dir>-2`` (-3, ...)."""
    cfg = validated(cfg)
    out_dir = Path(cfg.out_dir)
    for p in (out_dir, *out_dir.parents):
        if p.exists() and not p.is_dir():
            raise BadInputError(p, "exists and is not a folder (out_dir, --out: the run folder)")
    try:
        check_run_folder(out_dir, cfg)
    except RunFolderError:
        if not new_folder:
            raise
        out_dir = next_free_folder(out_dir)
    env = init_distributed(cfg.train.device, timeout_min=cfg.train.dist_timeout_min)
    try:
        read = SkipLog(skip=cfg.data.skip_bad)  # what reading the training data left out
        table = load_sources(cfg.data, cfg.data.split, skips=read)
        cache_dir = cache_root(cfg.cache_dir)
        show = progress and env.is_main
        callback = None
        if cfg.train.select_split:
            try:
                dev = load_sources(cfg.data, cfg.train.select_split, labels=cfg.train.select_labels,
                                   labelled_only=True)
            except BadInputError as e:
                raise BadInputError(e.path, f"model selection (train.select_split): {e.reason}") from None
            if env.enabled or env.device.type == "cuda":  # selection features: computed once, on the devices
                warm_audio_cache(cfg.towers.audio, dev["file"].astype(str).tolist(), env, cache_dir=cache_dir,
                                 batch_size=cfg.towers.batch_size, progress=show, desc="audio (selection)",
                                 loudness=cfg.model.loudness)
            callback = DevSelector(dev, out_dir, labels=cfg.train.select_labels, templates=cfg.train.select_templates,
                                   cache_dir=cache_dir, env=env, skip_bad=cfg.data.skip_bad)
        skip = SkipLog(skip=cfg.data.skip_bad)
        prepared = prepare_distributed(cfg, table, env, cache_dir=cache_dir, progress=show, skip=skip)
        del table  # the bundle holds the rows it kept; at scale the rest is memory training does not need
        try:
            res = train(cfg, prepared, run_dir=out_dir, progress=show, callback=callback, dist_env=env)
        except RunFolderError:  # same settings, other data
            if not new_folder:
                raise
            out_dir = next_free_folder(out_dir)
            if callback is not None:
                callback.run_dir = out_dir
            res = train(cfg, prepared, run_dir=out_dir, progress=show, callback=callback, dist_env=env)
        if not env.is_main:
            return None
        skipped = list(read.items) + list(prepared.skipped.items)
        atomic_write_json(out_dir / "skipped.json", {"count": len(skipped),
                                                      "files": [{"file": p, "reason": r} for p, r in skipped]})
        return TrainingRun(result=res, prepared=prepared, out_dir=out_dir, world_size=env.world_size,
                           skipped=skipped, selection=callback.best if callback is not None else None)
    finally:
        cleanup()
