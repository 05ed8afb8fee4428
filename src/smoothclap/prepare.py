"""Corpus table -> features and captions -> cached frozen-tower embeddings (a training bundle).

Everything the trainer needs is computed here once and cached on disk: audio-tower embeddings,
local-feature embeddings for q_a2a, eGeMAPS functionals and their quantile bins (fitted on the
training table only), one caption per clip per epoch (template drawn with an epoch-seeded rng),
the text embedding of each distinct caption string, and the description embeddings for q_t2t.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .config import RunConfig
from .device import resolve_device
from .embed import embed_audio_files, embed_texts
from .errors import SkipLog
from .paraling import CaptionBuilder, ParalingBinner
from .targets import apply_target_options, group_ids, standardize

log = logging.getLogger("smoothclap")


@dataclass
class Prepared:
    """Training bundle. N clips kept, M distinct caption strings, E epochs of captions."""

    table: pd.DataFrame                  # N rows (bad clips removed), index 0..N-1
    audio: np.ndarray                    # [N, audio_dim] audio-tower embeddings
    local: np.ndarray | None             # [N, local_dim] local-feature embeddings (q_a2a) or None
    caption_texts: list[str]             # [M] distinct captions
    caption_emb: np.ndarray              # [M, text_dim]
    caption_index: list[np.ndarray]      # E arrays [N]: caption of clip i in epoch e
    desc_texts: list[str] | None         # [N] descriptions (q_t2t) or None
    desc_emb: np.ndarray | None          # [N, text_dim] or None
    label_ids: np.ndarray                # [N] int, for diagnostics only
    label_names: list[str]
    binner: ParalingBinner | None
    trained_on: list[str]
    skipped: SkipLog = field(default_factory=SkipLog)
    timings: dict = field(default_factory=dict)


def needs_local(cfg: RunConfig) -> bool:
    return cfg.loss.beta > 0 and cfg.loss.gamma < 1


def needs_desc(cfg: RunConfig) -> bool:
    return cfg.loss.beta > 0 and cfg.loss.gamma > 0


def prepare(cfg: RunConfig, table: pd.DataFrame, *, cache_dir=None, progress: bool = True,
            skip: SkipLog | None = None, binner: ParalingBinner | None = None,
            need_local: bool | None = None, need_desc: bool | None = None) -> Prepared:
    """Build the training bundle for ``table`` (columns: file, label; optional gender, speaker,
    corpus, arousal, valence). ``binner`` given = reuse its fitted bins; else fit on ``table``.
    ``need_local`` / ``need_desc`` force the soft-target sources on (e.g. to share one bundle
    between a CLAP and a SmoothCLAP run); by default they follow ``cfg.loss``."""
    from .towers import build_tower

    for col in ("file", "label"):
        if col not in table.columns:
            raise ValueError(f"training table lacks column {col!r} (has {list(table.columns)})")
    skip = skip if skip is not None else SkipLog(skip=cfg.data.skip_bad)
    timings: dict[str, float] = {}
    table = table.reset_index(drop=True)
    files = table["file"].astype(str).tolist()
    ok = np.ones(len(files), dtype=bool)

    t = time.perf_counter()
    # frozen towers run on the configured device (GPU when there is one); embeddings come back to CPU
    device = str(resolve_device(cfg.towers.device))
    audio_tower = build_tower(cfg.towers.audio, device=device)
    audio, a_ok = embed_audio_files(audio_tower, files, cache_dir=cache_dir, batch_size=cfg.towers.batch_size,
                                    skip=skip, progress=progress, desc=f"audio {cfg.towers.audio}")
    ok &= a_ok
    timings["audio_embeddings"] = time.perf_counter() - t

    need_local = needs_local(cfg) if need_local is None else need_local
    need_desc = needs_desc(cfg) if need_desc is None else need_desc
    local = None
    if need_local:
        spec = cfg.towers.local or cfg.towers.audio
        if spec == cfg.towers.audio:
            local = audio  # the paper's default: the audio tower's own frozen embedding
        else:
            t = time.perf_counter()
            local, l_ok = embed_audio_files(build_tower(spec, device=device), files, cache_dir=cache_dir,
                                            batch_size=cfg.towers.batch_size, skip=skip, progress=progress,
                                            desc=f"local {spec}")
            ok &= l_ok
            timings["local_embeddings"] = time.perf_counter() - t

    cc = cfg.captions
    bins = pd.DataFrame(index=range(len(files)))
    if cc.variables:
        from .paraling import extract_egemaps

        t = time.perf_counter()
        feats = extract_egemaps(files, cache_dir=cache_dir, num_workers=cfg.train.num_workers, skip=skip,
                                progress=progress)
        timings["egemaps"] = time.perf_counter() - t
        present = np.array([f in feats.index for f in files])
        ok &= present
        feats = feats.reindex(files)
    keep = np.flatnonzero(ok)
    if len(keep) < 2:
        raise ValueError(f"only {len(keep)} usable training clips after skipping bad files")
    table = table.iloc[keep].reset_index(drop=True)
    audio = audio[keep]
    local = local[keep] if local is not None else None
    if cfg.model.feature_norm_group:
        audio = standardize(audio, "zscore", group_ids(table, cfg.model.feature_norm_group))
    if cc.variables:
        feats = feats.iloc[keep].reset_index(drop=True)
        if cc.group_by:
            if cc.group_by not in table.columns:
                raise ValueError(f"captions.group_by={cc.group_by!r} but the table has no such column")
            feats[cc.group_by] = table[cc.group_by].to_numpy()
        if binner is None:
            binner = ParalingBinner.from_config(cc).fit(feats)
        bins = binner.transform(feats).reset_index(drop=True)
    else:
        binner = None
        bins = pd.DataFrame(index=range(len(table)))

    builder = CaptionBuilder(cc)
    labels = table["label"].astype(str).tolist()
    extra = {k: (table[k].tolist() if k in table.columns else None) for k in ("gender", "arousal", "valence")}
    epochs = max(1, cfg.train.epochs)
    per_epoch = [builder.captions(bins, labels, rng=np.random.default_rng([cfg.train.seed, e]), **extra)
                 for e in range(epochs)]
    caption_texts = sorted({c for caps in per_epoch for c in caps})
    pos = {c: i for i, c in enumerate(caption_texts)}
    caption_index = [np.array([pos[c] for c in caps], dtype=np.int64) for caps in per_epoch]

    t = time.perf_counter()
    text_tower = build_tower(cfg.towers.text, device=device)
    caption_emb = embed_texts(text_tower, caption_texts, cache_dir=cache_dir, progress=progress,
                              desc=f"captions {cfg.towers.text}")
    desc_texts = desc_emb = None
    if need_desc and cfg.loss.text_target != "caption":
        if not cc.variables:
            raise ValueError("loss.text_target=description needs eGeMAPS variables (captions.variables)")
        with_label = cfg.loss.text_target == "description+label"
        desc_texts = builder.descriptions(bins, labels if with_label else None)
        desc_emb = embed_texts(text_tower, desc_texts, cache_dir=cache_dir, progress=progress,
                               desc="descriptions")
    timings["text_embeddings"] = time.perf_counter() - t

    label_names = sorted(set(labels))
    label_ids = np.array([label_names.index(x) for x in labels], dtype=np.int64)
    trained_on = sorted(table["corpus"].astype(str).unique()) if "corpus" in table.columns else ["(table)"]
    if skip.count:
        log.warning("skipped %d bad clip(s) while preparing training data", skip.count)
    prepared = Prepared(table=table, audio=audio.astype(np.float32),
                        local=None if local is None else local.astype(np.float32),
                        caption_texts=caption_texts, caption_emb=caption_emb, caption_index=caption_index,
                        desc_texts=desc_texts, desc_emb=desc_emb, label_ids=label_ids, label_names=label_names,
                        binner=binner, trained_on=trained_on, skipped=skip, timings=timings)
    return apply_target_options(cfg, prepared)
