"""Training bundles whose embeddings stay in the cache: cached training whose memory does not grow
with the corpus.

:func:`from_cache` builds a :class:`~smoothclap.trainer.bundle.Prepared` from embeddings already in
the embedding cache (written by ``smoothclap embed``, an earlier :func:`~smoothclap.trainer.bundle.prepare`,
or anything that ``put``s rows under the cache's content keys), without reading audio or running a
tower when everything is there. Above :data:`DISK_ABOVE` bytes of embedding rows (or with
``in_memory=False``) the bundle's ``audio`` (and ``local`` when it is the audio tower's own
embedding) and ``caption_emb`` are :class:`CachedRows`: row sources
(:class:`~smoothclap.normalize.RowSource`) that read the rows a batch needs from the cache's shards
(:meth:`smoothclap.cache.ArrayCache.locate`, ``mapped=False``: ``pread``, checksum-checked) and
hold 12 bytes per row. The trainer then never holds them whole:

* feature normalisation fits its statistics in chunks (:meth:`SmoothClapModel.fit_normalization`,
  :func:`smoothclap.normalize.moments`: float64, row order, the bits of the whole-array
  computation) and z-scores each batch as it is read (:class:`smoothclap.normalize.ZScored`);
* :class:`~smoothclap.trainer.steps.CachedStep` gathers a batch's features and caption embeddings
  per step, :class:`~smoothclap.trainer.bundle.BatchBuilder` its target sources (L2-normalised per
  batch: the same rows as normalising all of them first);
* the checkpoint fingerprint sums the features in blocks (:func:`~smoothclap.trainer.checkpoint.float32_sum`).

Why read the cache's shards and not a copy: the rows are already on disk, checksummed, in files of
65,536 rows; a run-local copy would cost a second write of every row per run, and no transformation
has to be materialised (feature normalisation is an affine map per group, applied per batch). Why
``pread`` and not memory maps: a mapped page that a batch touched counts in the process's resident
set until it is unmapped (with fault-around, 64 KiB per row gathered), so over one epoch a memory map
makes the resident set as large as the data; pages read with ``pread`` stay in the kernel's page
cache, shared and reclaimable, and the resident set stays flat. A batch costs one ``pread`` per
row (runs of consecutive rows in one), a few microseconds each (``benchmarks/bench_scale.py``).

What stays in memory per clip (a bundle on disk): the table (file names, labels, and the other
columns given), ``label_ids`` (8 B), one caption index per epoch (8 B each), the trained-clip
record (8 B), the row handles (12 B for the audio rows, 12 B per distinct caption), and during an
epoch the permutation (8 B); the bundle's embeddings themselves take none. The cache's index of
the folders read (32 B per entry) is released once the rows are located, and the heap that
building the bundle used transiently (key lists, Arrow buffers of dropped tables) is handed back
to the OS before training; the trainer does the same after its set-up passes over the rows.

Configurations this entry point cannot build (they need eGeMAPS features or a classifier over all
features, i.e. :func:`~smoothclap.trainer.bundle.prepare`): ``captions.variables`` (use a caption
column or label-only captions), ``loss.text_target: description*`` with ``gamma > 0``,
``loss.local_source: posteriors``, another ``towers.local`` tower.
"""
from __future__ import annotations

import logging
import time
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from ..audio import SAMPLE_RATE, content_hash, hash_prefix
from ..cache import EmbeddingCache, Located, audio_key, cache_root, text_key
from ..captions import CaptionBuilder
from ..config import RunConfig
from ..embed import preprocessing_key, release_memory
from ..errors import BadInputError, SkipLog
from ..normalize import RowSource
from ..targets import apply_target_options
from .bundle import Prepared, _captions, _check_table, encode_labels, needs_desc, needs_local, prepare

log = logging.getLogger("smoothclap")

#: ``in_memory=None`` (auto): embedding rows (audio + distinct captions) larger than this stay on disk.
DISK_ABOVE = 256 << 20
#: Files embedded per call when ``from_cache`` computes missing rows with a real tower.
EMBED_CHUNK = 4096


class CacheTower(NamedTuple):
    """What :func:`from_cache` needs of a tower: the key of its cache folder (the tower's
    ``cache_key``; for a shipped tower, its spec) and, for an audio tower, the sample rate in its
    cache keys. A stand-in for a built tower when the rows are all cached."""

    cache_key: str
    sample_rate: int = SAMPLE_RATE


class CachedRows(RowSource):
    """``[N, dim]`` float32 rows of the embedding cache, read on demand (``rows[idx]``) from its
    shards with ``pread``, checked against their checksums (:class:`smoothclap.cache.Located`,
    ``mapped=False``); a row changed since it was located raises
    :class:`~smoothclap.cache.CacheCorruptError`. Holds 12 bytes per row; picklable."""

    def __init__(self, located: Located):
        if located.mapped:
            raise ValueError("CachedRows reads with pread: locate(keys, mapped=False)")
        if not located.found.all():
            raise ValueError(f"{int((~located.found).sum())} of {len(located)} keys are not in the cache")
        self.located = located
        self.shape = (len(located), int(located.dim))

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(len(self)))
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return self.located.rows(idx.reshape(-1)).astype(np.float32, copy=False)


def unsupported_on_disk(cfg: RunConfig, need_local: bool, need_desc: bool) -> str | None:
    lc = cfg.loss
    if cfg.train.augment_views or cfg.train.single_clip_rows:
        return ("train.augment_views / train.single_clip_rows: their extra rows live in an in-memory bundle: use "
                "train.bundle: memory")
    if cfg.captions.variables:
        return ("captions.variables needs eGeMAPS features: set captions.variables: [] (captions from the labels, "
                "or the table's caption column)")
    if need_desc and lc.text_target != "caption":
        return f"loss.text_target={lc.text_target} needs eGeMAPS descriptions: use loss.text_target: caption"
    if need_local and lc.local_source == "posteriors":
        return "loss.local_source=posteriors fits a classifier on all features: use prepare()"
    if need_local and cfg.towers.local not in (None, cfg.towers.audio):
        return "towers.local (another tower than the audio tower): use prepare()"
    return None


def _locate(cache: EmbeddingCache, keys: Sequence[str], dim: int | None) -> Located:
    return cache.locate(keys, dim, mapped=False)


def _audio_rows(cfg: RunConfig, table: pd.DataFrame, cache_dir, hashes, audio_tower, skip: SkipLog,
                progress: bool) -> tuple[pd.DataFrame, list, "CachedRows"]:
    """Stage 1 of :func:`from_cache`: each clip's audio row in the cache (computed with a built tower
    when missing and the hashes were computed here); clips without one are bad clips. Returns the
    table of the clips kept, their hashes and their rows."""
    files = table["file"].astype(str).tolist()
    hashed_here = hashes is None
    if hashed_here:
        hashes = [content_hash(f, skip) for f in files]
    elif len(hashes) != len(files):
        raise BadInputError("from_cache", f"{len(hashes)} hashes for {len(files)} clips")
    pre = preprocessing_key(getattr(audio_tower, "sample_rate", SAMPLE_RATE), cfg.model.loudness)
    keys = [audio_key(h, pre) if h is not None else "" for h in hashes]
    acache = EmbeddingCache(cache_dir, audio_tower.cache_key)
    dim = getattr(audio_tower, "dim", None) if hasattr(audio_tower, "embed") else None
    hashed = np.array([h is not None for h in hashes], dtype=bool)
    loc = _locate(acache, keys, dim)
    found = loc.found & hashed
    if hashed_here and hasattr(audio_tower, "embed") and not found.all():
        from ..embed import embed_audio_files

        todo = [i for i in np.flatnonzero(~found).tolist() if hashes[i] is not None]
        tc = cfg.towers
        for a in range(0, len(todo), EMBED_CHUNK):  # written to the cache; the arrays are dropped
            part = todo[a : a + EMBED_CHUNK]
            embed_audio_files(audio_tower, [files[i] for i in part], cache_dir=cache_dir, batch_size=tc.batch_size,
                              progress=progress, workers=tc.embed_workers, trim_every=tc.trim_every,
                              loudness=cfg.model.loudness, skip=skip)
        loc = _locate(acache, keys, dim)
        found = loc.found & hashed
    missing = [i for i in np.flatnonzero(~found).tolist() if hashes[i] is not None]
    if missing:
        if not skip.skip:
            raise BadInputError(files[missing[0]], f"{len(missing)} training clip(s) have no embedding in the cache "
                                f"{acache.dir} (run `smoothclap embed` first, or set data.skip_bad)")
        for i in missing:
            skip.handle(BadInputError(files[i], "no embedding in the cache"))
    keep = np.flatnonzero(found)
    if len(keep) < 2:
        raise BadInputError("training table", f"only {len(keep)} usable training clips in the cache")
    if len(keep) < len(table):
        table = table.iloc[keep].reset_index(drop=True)
        keys = [keys[i] for i in keep.tolist()]
        hashes = [hashes[i] for i in keep.tolist()]
        loc = _locate(acache, keys, dim)
    acache.close()  # the rows are located: the folder's index (32 B per entry) is not needed to read them
    return table, hashes, CachedRows(loc)


def _caption_rows(cfg: RunConfig, caption_texts: list[str], cache_dir, text_tower, progress: bool) -> "CachedRows":
    """Stage 2 of :func:`from_cache`: the cache rows of the distinct captions (computed with a built
    text tower when missing; an error otherwise)."""
    tcache = EmbeddingCache(cache_dir, text_tower.cache_key)
    tdim = getattr(text_tower, "dim", None) if hasattr(text_tower, "embed") else None
    tkeys = [text_key(c) for c in caption_texts]
    loc = _locate(tcache, tkeys, tdim)
    if not loc.found.all() and hasattr(text_tower, "embed"):
        from ..embed import embed_texts

        tc = cfg.towers
        todo = [caption_texts[i] for i in np.flatnonzero(~loc.found).tolist()]
        for a in range(0, len(todo), EMBED_CHUNK):
            embed_texts(text_tower, todo[a : a + EMBED_CHUNK], cache_dir=cache_dir, progress=progress,
                        workers=tc.embed_workers, trim_every=tc.trim_every)
        loc = _locate(tcache, tkeys, tdim)
    if not loc.found.all():
        i = int(np.flatnonzero(~loc.found)[0])
        raise BadInputError("from_cache", f"{int((~loc.found).sum())} of {len(caption_texts)} captions have no "
                            f"embedding in the cache {tcache.dir} (e.g. {caption_texts[i]!r})")
    tcache.close()
    return CachedRows(loc)


def from_cache(cfg: RunConfig, table: pd.DataFrame, *, cache_dir, hashes: Sequence[str] | None = None,
               towers: tuple | None = None, in_memory: bool | None = None, skip: SkipLog | None = None,
               progress: bool = True) -> Prepared:
    """The training bundle of ``table`` (columns: file, label; optional caption, speaker, corpus,
    gender, arousal, valence, labelled) from the embedding cache under ``cache_dir``; see the
    module docstring for what is read on demand and what stays in memory.

    ``hashes``: each clip's content hash (sha1 hex of its bytes, :func:`smoothclap.audio.file_hash`),
    which with the preprocessing names its cache entry; None: every file is hashed (read once).
    ``towers``: ``(audio, text)``, built towers or :class:`CacheTower` stand-ins (default: built
    from ``cfg.towers``). Rows missing from the cache are computed with a built tower (audio: only
    when the hashes were computed here), else they are bad clips (``skip``, ``cfg.data.skip_bad``)
    or, for captions, an error. ``in_memory``: True = read the rows into arrays (the plain path,
    fastest for small corpora), False = leave them on disk, None = by size (:data:`DISK_ABOVE`).
    """
    from ..corpora import labelled_mask, unlabel

    t0 = time.perf_counter()
    cache_dir = cache_root(cache_dir)
    if cache_dir is None:
        raise BadInputError("from_cache", "needs a cache_dir")
    _check_table(cfg, table)
    skip = skip if skip is not None else SkipLog(skip=cfg.data.skip_bad)
    table = table.reset_index(drop=True)
    table = unlabel(table, ~labelled_mask(table))  # as prepare: one marker for unlabelled rows
    need_local, need_desc = needs_local(cfg, table), needs_desc(cfg)
    why = unsupported_on_disk(cfg, need_local, need_desc)
    if why:
        raise BadInputError("from_cache", why)
    if towers is None:
        from ..device import resolve_device
        from ..towers import build_tower

        device = str(resolve_device(cfg.towers.device))
        towers = (build_tower(cfg.towers.audio, device=device), build_tower(cfg.towers.text, device=device))
    audio_tower, text_tower = towers
    timings: dict[str, float] = {}

    t_audio = time.perf_counter()
    table, hashes, audio = _audio_rows(cfg, table, cache_dir, hashes, audio_tower, skip, progress)
    timings["audio_locate"] = time.perf_counter() - t_audio

    # -- labels and captions (as prepare) ----------------------------------------------------------------
    labels, label_names, label_ids = encode_labels(table)
    cc = cfg.captions
    bins = pd.DataFrame(index=range(len(table)))
    caption_labels = labels if cc.emotion_word else [None] * len(labels)
    t = time.perf_counter()
    caption_texts, caption_index = _captions(cfg, CaptionBuilder(cc), table, bins, caption_labels)
    del labels, caption_labels
    timings["captions"] = time.perf_counter() - t

    t = time.perf_counter()
    caption_emb = _caption_rows(cfg, caption_texts, cache_dir, text_tower, progress)
    timings["caption_locate"] = time.perf_counter() - t

    if in_memory is None:
        in_memory = audio.nbytes + caption_emb.nbytes <= DISK_ABOVE
    if in_memory:
        audio, caption_emb = np.asarray(audio), np.asarray(caption_emb)
    trained_on = sorted(table["corpus"].astype(str).unique()) if "corpus" in table.columns else ["(table)"]
    trained = np.unique(np.fromiter((hash_prefix(h) for h in hashes), dtype=np.uint64, count=len(hashes)))
    del hashes
    release_memory(tables=True)  # the lists and tables dropped above: hand their heap back before training
    timings["from_cache"] = time.perf_counter() - t0
    log.info("training bundle from the cache: %d clips, %d captions, embeddings %s (%.1f s)", len(table),
             len(caption_texts), "in memory" if in_memory else "read per batch from the cache", timings["from_cache"])
    prepared = Prepared(table=table, audio=audio, local=audio if need_local else None, caption_texts=caption_texts,
                        caption_emb=caption_emb, caption_index=caption_index, desc_texts=None, desc_emb=None,
                        label_ids=label_ids, label_names=label_names, binner=None, trained_on=trained_on,
                        skipped=skip, timings=timings, trained_clips=trained)
    return apply_target_options(cfg, prepared)


def build_bundle(cfg: RunConfig, table: pd.DataFrame, *, cache_dir, progress: bool, skip: SkipLog) -> Prepared:
    """The training bundle as ``train.bundle`` asks: in memory (:func:`~smoothclap.trainer.bundle.prepare`)
    or left in the embedding cache (:func:`from_cache`; ``auto``: when the settings allow it, on disk
    above :data:`DISK_ABOVE` bytes of rows)."""
    where = cfg.train.bundle if cfg.train.mode == "cached" else "memory"
    if where == "auto" and unsupported_on_disk(cfg, needs_local(cfg, table), needs_desc(cfg)):
        where = "memory"
    if where == "memory":
        return prepare(cfg, table, cache_dir=cache_dir, progress=progress, skip=skip)
    if cache_dir is None:
        raise BadInputError("train.bundle", f"{where}: needs an embedding cache (cache_dir)")
    return from_cache(cfg, table, cache_dir=cache_dir, in_memory=None if where == "auto" else False, skip=skip,
                      progress=progress)


__all__ = ["CacheTower", "CachedRows", "DISK_ABOVE", "build_bundle", "from_cache"]
