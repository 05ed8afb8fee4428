"""Corpus table -> features and captions -> cached frozen-tower embeddings: the training bundle,
and the batch builder that hands the loss what it needs.

Everything the trainer needs is computed here once and cached on disk: raw audio-tower features,
local-feature embeddings for q_a2a, eGeMAPS functionals and their quantile bins (fitted on the
training table only), one caption per clip per epoch (template drawn with an epoch-seeded rng),
the text embedding of each distinct caption string, and the description embeddings for q_t2t.
Feature normalisation is the model's (:meth:`SmoothClapModel.fit_normalization`); the bundle
carries each clip's group for it.

To add a soft-target source: compute it per clip in :func:`prepare` (a field of
:class:`Prepared`), hand it out per batch in :meth:`BatchBuilder.sources`, and read it in the loss
(:mod:`smoothclap.losses`). Nothing else changes: the distributed loss gathers every tensor it is
given, and the loop passes the batch dict through.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..bins import ParalingBinner
from ..cache import cache_root
from ..captions import CaptionBuilder
from ..config import RunConfig
from ..device import resolve_device
from ..embed import embed_audio_files, embed_texts
from ..errors import BadInputError, SkipLog
from ..losses import UNLABELLED, unit_rows
from ..normalize import group_ids, is_row_source
from ..targets import apply_target_options

log = logging.getLogger("smoothclap")


@dataclass
class Prepared:
    """Training bundle. N clips kept, M distinct caption strings, E epochs of captions."""

    table: pd.DataFrame                  # N rows (bad clips removed), index 0..N-1
    # The embeddings below are arrays in memory (prepare), or row sources (normalize.RowSource:
    # rows read per batch from the cache, trainer.mapped.from_cache) that the trainer never holds
    # whole: index them with an index array, never iterate them.
    audio: np.ndarray                    # [N, audio_dim] raw audio-tower features
    local: np.ndarray | None             # [N, local_dim] local-feature embeddings (q_a2a) or None
    caption_texts: list[str]             # [M] distinct captions
    caption_emb: np.ndarray              # [M, text_dim]
    caption_index: list[np.ndarray]      # E arrays [N]: caption of clip i in epoch e
    desc_texts: list[str] | None         # [N] descriptions (q_t2t) or None
    desc_emb: np.ndarray | None          # [N, text_dim] or None
    label_ids: np.ndarray                # [N] int (-1: unlabelled), for label targets and diagnostics
    label_names: list[str]
    binner: ParalingBinner | None
    trained_on: list[str]
    skipped: SkipLog = field(default_factory=SkipLog)
    timings: dict = field(default_factory=dict)
    # [K] sorted uint64: 8-byte sha1 prefixes of the clips' contents (what the model records of
    # its training data, smoothclap.evaluate.check_clips_not_trained_on); None: not computed
    trained_clips: np.ndarray | None = None


def norm_groups(cfg: RunConfig, prepared: Prepared) -> np.ndarray | None:
    """``[N]`` group of each clip for ``model.feature_norm_group`` (None without it)."""
    col = cfg.model.feature_norm_group
    if not col:
        return None
    g = group_ids(prepared.table, col)
    if g is None:
        raise BadInputError("training table", f"model.feature_norm_group={col!r} but the table has no {col!r} column")
    return g


def nuisance_groups(cfg: RunConfig, prepared: Prepared) -> np.ndarray | None:
    """``[N]`` group of each clip for ``model.nuisance_dims`` (None without it): its
    ``model.nuisance_group``, within its corpus when the table has one (speaker ids repeat across
    corpora)."""
    mc = cfg.model
    if not mc.nuisance_dims:
        return None
    g = group_ids(prepared.table, mc.nuisance_group)
    if g is None:
        raise BadInputError("training table", f"model.nuisance_dims needs the table's {mc.nuisance_group!r} column")
    corpus = group_ids(prepared.table, "corpus")
    if corpus is None or mc.nuisance_group == "corpus":
        return g
    return np.array([f"{c}/{v}" for c, v in zip(corpus, g)], dtype=object)


def needs_local(cfg: RunConfig, table: pd.DataFrame | None = None) -> bool:
    """Local features for q_a2a. Label targets need them only for the rows of unlabelled clips
    (:func:`smoothclap.losses.label_targets`), so only when ``table`` has unlabelled rows."""
    lc = cfg.loss
    if not (lc.beta > 0 and lc.gamma < 1):
        return False
    if lc.local_source != "labels":
        return True
    from ..corpora import labelled_mask

    return table is not None and not labelled_mask(table).all()


def needs_desc(cfg: RunConfig) -> bool:
    return cfg.loss.beta > 0 and cfg.loss.gamma > 0


def uses_caption_as_description(cfg: RunConfig, prepared: Prepared) -> bool:
    """``loss.text_target: caption``: q_t2t comes from the (frozen) caption embeddings."""
    return prepared.desc_emb is None and cfg.loss.text_target == "caption" and needs_desc(cfg)


def _check_table(cfg: RunConfig, table: pd.DataFrame) -> None:
    from ..corpora import check_whole_files

    for col in ("file", "label"):
        if col not in table.columns:
            raise BadInputError("training table", f"lacks column {col!r} (has {list(table.columns)})")
    check_whole_files(table, "training")
    for key, col in (("model.feature_norm_group", cfg.model.feature_norm_group),
                     ("model.nuisance_group", cfg.model.nuisance_group if cfg.model.nuisance_dims else None),
                     ("captions.group_by", cfg.captions.group_by),
                     ("loss.target_standardize_group", cfg.loss.target_standardize_group)):
        if not col:
            continue
        if col not in table.columns:
            raise BadInputError(key, f"{col!r}: the training table has no {col!r} column")
        from ..values import is_missing

        missing = sum(1 for v in table[col] if is_missing(v))
        if missing == len(table):
            raise BadInputError(key, f"{col!r}: the training table's {col!r} column is empty in every row "
                                f"(a {col} per clip is needed to group by it; or set {key}: null)")
        if missing:
            log.warning("%s=%s: %d of %d training clips have no %s; they form one group", key, col, missing,
                        len(table), col)


def prepare(cfg: RunConfig, table: pd.DataFrame, *, cache_dir=None, progress: bool = True,
            skip: SkipLog | None = None, binner: ParalingBinner | None = None,
            need_local: bool | None = None, need_desc: bool | None = None) -> Prepared:
    """Build the training bundle for ``table`` (columns: file, label; optional gender, speaker,
    corpus, arousal, valence). ``binner`` given = reuse its fitted bins; else fit on ``table``.
    ``need_local`` / ``need_desc`` force the soft-target sources on (e.g. to share one bundle
    between a CLAP and a SmoothCLAP run); by default they follow ``cfg.loss``.

    Stages: frozen features of every clip (:func:`_clip_features`), the clips every stage could
    use, eGeMAPS bins, captions (:func:`_captions`), text embeddings (:func:`_text_embeddings`).
    A clip bad for any tower (or for eGeMAPS) is one skipped clip, counted once in ``skip``.
    """
    from ..corpora import labelled_mask, unlabel

    _check_table(cfg, table)
    skip = skip if skip is not None else SkipLog(skip=cfg.data.skip_bad)
    cache_dir = cache_root(cache_dir)
    table = table.reset_index(drop=True)
    # one marker for unlabelled rows: label None, `labelled` False, no emotion annotation left
    table = unlabel(table, ~labelled_mask(table))
    need_local = needs_local(cfg, table) if need_local is None else need_local
    need_desc = needs_desc(cfg) if need_desc is None else need_desc
    timings: dict[str, float] = {}
    audio, local, feats, ok, views = _clip_features(cfg, table, cache_dir, progress, need_local, skip, timings)
    keep = np.flatnonzero(ok)
    if len(keep) < 2:
        raise BadInputError("training table", f"only {len(keep)} usable training clips after skipping bad files")
    table = table.iloc[keep].reset_index(drop=True)
    audio = audio[keep]
    local = local[keep] if local is not None else None
    feats = feats.iloc[keep].reset_index(drop=True) if feats is not None else None
    if views:
        table, audio, local, feats = _with_views(cfg, table, audio, local, feats, [v[keep] for v in views])
    if cfg.train.single_clip_rows:  # every row again, to be normalised as a clip of an unseen group
        table, local, feats = _repeat_rows(table, local, feats, UNSEEN_COLUMN, [False, True])
        audio = np.concatenate([audio, audio])
    labels, label_names, label_ids = encode_labels(table)
    if local is not None and cfg.loss.local_source == "posteriors":
        local = emotion_targets(cfg, table, local, label_ids)
    cc = cfg.captions
    if cc.variables:
        if cc.group_by:
            feats[cc.group_by] = table[cc.group_by].to_numpy()
        if binner is None:  # bins of the clips as recorded (views and copies share their clip's functionals)
            recorded = as_recorded(table)
            binner = ParalingBinner.from_config(cc).fit(feats if recorded is None else feats[recorded])
        bins = binner.transform(feats).reset_index(drop=True)
    else:
        binner, bins = None, pd.DataFrame(index=range(len(table)))
    builder = CaptionBuilder(cc)
    # captions name the emotion of labelled clips only (never with captions.emotion_word: false)
    caption_labels = labels if cc.emotion_word else [None] * len(labels)
    caption_texts, caption_index = _captions(cfg, builder, table, bins, caption_labels)
    t = time.perf_counter()
    caption_emb, desc_texts, desc_emb = _text_embeddings(cfg, builder, caption_texts, bins, labels, need_desc,
                                                         cache_dir, progress)
    timings["text_embeddings"] = time.perf_counter() - t
    trained_on = sorted(table["corpus"].astype(str).unique()) if "corpus" in table.columns else ["(table)"]
    if skip.count:
        log.warning("skipped %d bad clip(s) while preparing training data", skip.count)
    from ..audio import content_prefixes

    # every kept clip was read (and, with a cache, hashed) above: file_hash remembers it
    prefixes, hashed = content_prefixes(table["file"].astype(str).tolist())
    prepared = Prepared(table=table, audio=audio.astype(np.float32),
                        local=None if local is None else local.astype(np.float32),
                        caption_texts=caption_texts, caption_emb=caption_emb, caption_index=caption_index,
                        desc_texts=desc_texts, desc_emb=desc_emb, label_ids=label_ids, label_names=label_names,
                        binner=binner, trained_on=trained_on, skipped=skip, timings=timings,
                        trained_clips=np.unique(prefixes[hashed]))
    return apply_target_options(cfg, prepared)


#: The bundle's column that tells a clip as recorded (0) from its augmented views (1, 2, ...).
VIEW_COLUMN = "augment_view"
#: The bundle's column marking the copies of ``train.single_clip_rows`` (normalised as a clip of a
#: group the model never saw).
UNSEEN_COLUMN = "as_unseen_group"


def _with_views(cfg: RunConfig, table: pd.DataFrame, audio: np.ndarray, local: np.ndarray | None, feats,
                views: list[np.ndarray]):
    """The bundle's rows with ``train.augment_views`` V: the N clips as recorded, then V blocks of
    their views (``[N * (1 + V), ...]``; column :data:`VIEW_COLUMN` 0..V). A view keeps its clip's
    labels, speaker and corpus, and its eGeMAPS bins (captions describe the voice as recorded); its
    local features are its own when they are the audio tower's, else its clip's."""
    own_local = local is not None and cfg.towers.local in (None, cfg.towers.audio)
    rows, local, feats = _repeat_rows(table, local, feats, VIEW_COLUMN, list(range(len(views) + 1)))
    audio_all = np.concatenate([audio, *views])
    return rows, audio_all, audio_all if own_local else local, feats


def _repeat_rows(table: pd.DataFrame, local, feats, column: str, values: list):
    """``table``, ``local`` and ``feats`` (each N rows, or None) stacked once per value in ``values``
    (``[N * len(values), ...]``), the table's ``column`` set to that block's value."""
    k = len(values)
    rows = pd.concat([table.assign(**{column: v}) for v in values], ignore_index=True)
    local = None if local is None else np.concatenate([local] * k)
    feats = None if feats is None else pd.concat([feats] * k, ignore_index=True)
    return rows, local, feats


def as_recorded(table: pd.DataFrame) -> np.ndarray | None:
    """``[N]`` bool: the bundle rows that are clips as recorded and normalised with their own group
    (not augmented views, not ``train.single_clip_rows`` copies): the rows every statistic is
    fitted on. None when the bundle has neither."""
    if VIEW_COLUMN not in table.columns and UNSEEN_COLUMN not in table.columns:
        return None
    out = np.ones(len(table), dtype=bool)
    if VIEW_COLUMN in table.columns:
        out &= table[VIEW_COLUMN].to_numpy() == 0
    if UNSEEN_COLUMN in table.columns:
        out &= ~table[UNSEEN_COLUMN].to_numpy(dtype=bool)
    return out


def as_unseen(table: pd.DataFrame) -> np.ndarray | None:
    """``[N]`` bool: the ``train.single_clip_rows`` copies, or None without them."""
    return table[UNSEEN_COLUMN].to_numpy(dtype=bool) if UNSEEN_COLUMN in table.columns else None


def _clip_features(cfg: RunConfig, table: pd.DataFrame, cache_dir, progress: bool, need_local: bool,
                   skip: SkipLog, timings: dict):
    """Frozen features of every clip: (audio ``[N, audio_dim]``, local ``[N, k]`` or None, eGeMAPS
    functionals (DataFrame indexed by file, or None), ok ``[N]``: usable by every stage, the
    ``train.augment_views`` views' audio features (a list of ``[N, audio_dim]``, empty without
    views)). Each bad clip goes into ``skip`` once, whichever stages it failed in."""
    from ..towers import build_tower

    files = table["file"].astype(str).tolist()
    tc = cfg.towers
    kw = dict(cache_dir=cache_dir, batch_size=tc.batch_size, progress=progress, workers=tc.embed_workers,
              trim_every=tc.trim_every, loudness=cfg.model.loudness)
    stages: list[SkipLog] = []

    def stage_skip() -> SkipLog:
        stages.append(SkipLog(skip=skip.skip))
        return stages[-1]

    t = time.perf_counter()
    # frozen towers run on the configured device (GPU when there is one); embeddings come back to CPU
    device = str(resolve_device(tc.device))
    tower = build_tower(tc.audio, device=device)
    audio, ok = embed_audio_files(tower, files, skip=stage_skip(), desc=f"audio {tc.audio}", **kw)
    timings["audio_embeddings"] = time.perf_counter() - t
    views = []
    if cfg.train.augment_views:
        from ..augment import views as augmentations

        t = time.perf_counter()
        for aug in augmentations(cfg.train.augment, cfg.train.augment_views):
            v, v_ok = embed_audio_files(tower, files, skip=stage_skip(), augment=aug,
                                        desc=f"audio {tc.audio} view {aug.view}/{cfg.train.augment_views}", **kw)
            views.append(v)
            ok = ok & v_ok
        timings["augmented_views"] = time.perf_counter() - t
    local = None
    if need_local:
        spec = tc.local or tc.audio
        if spec == tc.audio:
            local = audio  # the paper's default: the audio tower's own frozen embedding
        else:
            t = time.perf_counter()
            local, l_ok = embed_audio_files(build_tower(spec, device=device), files, skip=stage_skip(),
                                            desc=f"local {spec}", **kw)
            ok = ok & l_ok
            timings["local_embeddings"] = time.perf_counter() - t
    feats = None
    if cfg.captions.variables:
        from ..egemaps import extract_egemaps

        t = time.perf_counter()
        feats = extract_egemaps(files, cache_dir=cache_dir, num_workers=cfg.train.num_workers, skip=stage_skip(),
                                progress=progress)
        timings["egemaps"] = time.perf_counter() - t
        ok = ok & np.array([f in feats.index for f in files])
        feats = feats.reindex(files)
    seen: set[str] = set()
    for s in stages:
        for path, reason in s.items:
            if path not in seen:
                seen.add(path)
                skip.items.append((path, reason))
    return audio, local, feats, ok, views


def encode_labels(table: pd.DataFrame) -> tuple[list, list[str], np.ndarray]:
    """(each row's label or None when unlabelled ``[N]``, the sorted label names, label ids ``[N]``
    int64 with :data:`~smoothclap.losses.UNLABELLED` for unlabelled rows)."""
    from ..corpora import labelled_mask

    labels = [str(x) if has else None for x, has in zip(table["label"], labelled_mask(table))]
    label_names = sorted({x for x in labels if x is not None})
    pos = {x: i for i, x in enumerate(label_names)}
    return labels, label_names, np.array([UNLABELLED if x is None else pos[x] for x in labels], dtype=np.int64)


def _captions(cfg: RunConfig, builder: CaptionBuilder, table: pd.DataFrame, bins: pd.DataFrame,
              labels: list) -> tuple[list[str], list[np.ndarray]]:
    """Every epoch's caption of every clip: (M distinct caption strings, E arrays ``[N]`` of indices
    into them). A fresh caption per clip and epoch, or (``captions.pool_size`` K) one of K variants
    per clip drawn each epoch; a manifest's own ``caption`` column wins over generated ones.
    ``labels[i]`` None: clip i's generated captions have no emotion word (an unlabelled clip, or
    ``captions.emotion_word: false``): its paralinguistic phrases alone."""
    from ..values import is_missing

    cc, seed = cfg.captions, cfg.train.seed
    n = len(labels)
    extra = {k: (table[k].tolist() if k in table.columns else None) for k in ("gender", "arousal", "valence")}
    given = ([None if is_missing(c) else str(c).strip() for c in table["caption"]] if "caption" in table.columns
             else [None] * n)
    rows = np.arange(n)
    if n and all(g is not None for g in given):
        rows = rows[:0]  # every clip has its own caption: nothing to generate (at 1M clips, most of the time)
    elif any(x is None for x in labels):
        # a clip without an emotion word needs phrases (or its own caption): find those that have none
        recs = bins.to_dict(orient="records")
        arousal, valence = extra["arousal"], extra["valence"]
        can = np.array([labels[i] is not None or bool(builder.phrases(
            recs[i], arousal=None if arousal is None else arousal[i],
            valence=None if valence is None else valence[i])) for i in range(n)], dtype=bool)
        bad = [i for i in range(n) if not can[i] and given[i] is None]
        if bad:
            why = "captions.emotion_word is false" if not cc.emotion_word else "they are unlabelled"
            vars_ = "captions.variables is empty" if not cc.variables else "their eGeMAPS bins are missing"
            raise BadInputError("training table", f"{len(bad)} training clip(s) (e.g. {table['file'].iloc[bad[0]]}) "
                                f"cannot be captioned: {why}, so their captions describe the voice alone, but they "
                                f"have no paralinguistic phrases ({vars_}) and no caption of their own; set "
                                "captions.variables, or give them a caption")
        rows = np.flatnonzero(can)  # clips with a given caption and nothing to generate from keep theirs
    if len(rows) < n:
        sub_bins = bins.iloc[rows].reset_index(drop=True)
        sub_labels = [labels[i] for i in rows]
        sub_extra = {k: None if v is None else [v[i] for i in rows] for k, v in extra.items()}
    else:
        sub_bins, sub_labels, sub_extra = bins, labels, extra

    def generate(rng) -> list:
        made = builder.captions(sub_bins, sub_labels, rng=rng, **sub_extra) if len(rows) else []
        out = [None] * n
        for i, c in zip(rows, made):
            out[i] = c
        return out

    epochs = max(1, cfg.train.epochs)
    if cc.pool_size is None:
        per_epoch = [generate(np.random.default_rng([seed, e])) for e in range(epochs)]
    else:
        pool = [generate(np.random.default_rng([seed, 1 << 20, k])) for k in range(cc.pool_size)]
        draws = [np.random.default_rng([seed, 1 << 21, e]).integers(cc.pool_size, size=n) for e in range(epochs)]
        per_epoch = [[pool[k][i] for i, k in enumerate(d)] for d in draws]
    per_epoch = [[g if g is not None else c for g, c in zip(given, caps)] for caps in per_epoch]
    texts = sorted({c for caps in per_epoch for c in caps})
    pos = {c: i for i, c in enumerate(texts)}
    return texts, [np.array([pos[c] for c in caps], dtype=np.int64) for caps in per_epoch]


def _text_embeddings(cfg: RunConfig, builder: CaptionBuilder, caption_texts: list[str], bins: pd.DataFrame,
                     labels: list, need_desc: bool, cache_dir, progress: bool):
    """(caption embeddings ``[M, text_dim]``, descriptions ``[N]`` or None, their embeddings
    ``[N, text_dim]`` or None): the frozen text tower, each distinct string once. Descriptions
    start with the emotion word with ``loss.text_target: description+label`` or
    ``captions.description_include_label``, for labelled clips only (``labels[i]`` None: none)."""
    from ..towers import build_tower

    tc = cfg.towers
    text_tower = build_tower(tc.text, device=str(resolve_device(tc.device)))
    kw = dict(cache_dir=cache_dir, progress=progress, workers=tc.embed_workers, trim_every=tc.trim_every)
    caption_emb = embed_texts(text_tower, caption_texts, desc=f"captions {tc.text}", **kw)
    if not need_desc or cfg.loss.text_target == "caption":
        return caption_emb, None, None
    if not cfg.captions.variables:
        raise BadInputError("training table", "loss.text_target=description needs eGeMAPS variables "
                            "(captions.variables)")
    with_label = cfg.loss.text_target == "description+label" or cfg.captions.description_include_label
    if with_label and not cfg.captions.description_include_label:
        builder = CaptionBuilder(cfg.captions.model_copy(update={"description_include_label": True}))
    desc_texts = builder.descriptions(bins, labels if with_label else None)
    return caption_emb, desc_texts, embed_texts(text_tower, desc_texts, desc="descriptions", **kw)


def emotion_targets(cfg: RunConfig, table: pd.DataFrame, features: np.ndarray, label_ids: np.ndarray) -> np.ndarray:
    """``loss.local_source: posteriors``: the q_a2a source ``[N, k]`` from an emotion model fitted on
    the training clips only, cross-fitted out-of-fold by speaker (:func:`smoothclap.targets.crossfit_posteriors`):
    label posteriors, or predicted arousal / valence / dominance (``loss.posterior_kind: dimensional``).
    Only labelled clips (``label_ids`` >= 0) are fitted on and cross-fitted; unlabelled clips are in
    no fold and get the predictions of a model fitted on every labelled clip."""
    from ..targets import crossfit_dimensions, crossfit_posteriors

    labelled = np.asarray(label_ids) >= 0
    if not labelled.any():
        raise BadInputError("training table", "loss.local_source=posteriors needs labelled clips (every training "
                            "clip is unlabelled; use loss.local_source: tower)")
    if "speaker" not in table.columns or table["speaker"][labelled].isna().all():
        raise BadInputError("training table", "loss.local_source=posteriors needs a speaker column (the classifier "
                            "is cross-fitted by speaker)")
    groups = table["speaker"].astype(str).to_numpy()
    lc = cfg.loss
    if lc.posterior_kind == "dimensional":
        ratings = {c: pd.to_numeric(table[c], errors="coerce") for c in ("arousal", "valence", "dominance")
                   if c in table.columns}
        cols = [c for c, v in ratings.items() if v[labelled].notna().all()]
        if not cols:
            raise BadInputError("training table", "loss.posterior_kind=dimensional needs numeric arousal / valence / "
                                "dominance columns on every labelled clip")
        values = np.stack([ratings[c].to_numpy(dtype=np.float64) for c in cols], 1)
        out, _ = crossfit_dimensions(features, values, groups, lc.posterior_folds, labelled=labelled)
    else:
        out, _ = crossfit_posteriors(features, label_ids, groups, lc.posterior_folds, seed=cfg.train.seed)
    log.info("q_a2a from cross-fitted %s targets (%d speaker folds; %d unlabelled clips predicted by a model of "
             "all labelled clips)", lc.posterior_kind, lc.posterior_folds, int((~labelled).sum()))
    return out


def _unit_source(x):
    """A target source with its rows L2-normalised: an array in memory once for all rows, a row
    source (a memory-flat bundle, :mod:`smoothclap.trainer.mapped`) per batch as its rows are read
    (:func:`_unit_take`; rows are normalised independently, so the values are the same)."""
    if x is None or is_row_source(x):
        return x
    return unit_rows(torch.from_numpy(x))


def _unit_take(src, idx: torch.Tensor) -> torch.Tensor:
    if isinstance(src, torch.Tensor):
        return src[idx]
    return unit_rows(torch.from_numpy(np.ascontiguousarray(src[idx.cpu().numpy()])))


class BatchBuilder:
    """What the loss needs for one batch, as one dict (the batch structure, as open_clip passes
    model outputs to its loss): the frozen target sources of clips ``idx`` in ``epoch``, their
    rows L2-normalised once here (``sources_normalized``) instead of once per batch."""

    def __init__(self, cfg: RunConfig, prepared: Prepared):
        self.prepared = prepared
        p = prepared
        self.labels = torch.as_tensor(p.label_ids) if cfg.loss.local_source == "labels" else None
        self.local = _unit_source(p.local)
        self.desc = _unit_source(p.desc_emb)
        self.cap_unit = _unit_source(p.caption_emb) if uses_caption_as_description(cfg, p) else None

    def caption_ids(self, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        """``[b]`` caption index of each clip in ``epoch``."""
        ci = self.prepared.caption_index
        return torch.as_tensor(ci[epoch % len(ci)])[idx]

    def sources(self, idx: torch.Tensor, epoch: int, device) -> dict:
        """Target sources of clips ``idx`` ``[b]``: ``local_audio`` ``[b, k_a]``, ``desc_text``
        ``[b, k_t]``, ``labels`` ``[b]`` (label targets, -1 for unlabelled clips; None where unused) and
        ``sources_normalized``."""
        if self.desc is not None:
            desc = _unit_take(self.desc, idx)
        elif self.cap_unit is not None:
            desc = _unit_take(self.cap_unit, self.caption_ids(idx, epoch))
        else:
            desc = None
        return {"local_audio": None if self.local is None else _unit_take(self.local, idx).to(device),
                "desc_text": None if desc is None else desc.to(device), "sources_normalized": True,
                "labels": None if self.labels is None else self.labels[idx].to(device)}
