"""SmoothCLAP model: everything between a waveform and its embedding.

The model owns, in this order (``docs/architecture.md``):

1. **loudness** normalisation of the waveform (``config.loudness``: none, ``peak`` or ``rms:<dBFS>``);
2. the **towers** (audio and text encoders, built lazily from their spec strings; fine-tuned towers
   are part of the model and saved inside its folder);
3. **feature normalisation** of the audio-tower features (``config.feature_norm_group``): z-scored
   within each group (corpus or speaker) when the caller gives groups, else with the stored
   training statistics; then, with ``config.nuisance_dims``, the principal directions of the
   training speakers' (or corpora's) means removed; with ``config.whiten``, the features
   whitened by the training clips' within-emotion covariance; then the input standardiser
   fitted on training features;
4. the ParaCLAP **heads** and the learnable logit **scale**.

Every entry point (``ZeroShotClassifier``, ``classify``, ``evaluate``, the task runner, the
trainer's model selection) goes through :meth:`SmoothClapModel.encode_audio_features`, so the same
clips with the same grouping give the same embedding everywhere. A saved model is a folder:
``config.json`` + ``model.safetensors`` (heads, scale, statistics) and, for fine-tuned towers,
``audio_tower/`` / ``text_tower/`` named in the config relative to the folder, so a moved folder
still loads (Hugging Face style ``save_pretrained`` / ``from_pretrained``).
"""
from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import ConfigError, SmoothClapConfig
from .errors import BadInputError
from .hub import (BINS_NAME, CARD_NAME, CONFIG_NAME, RESULTS_NAME, TRAINED_CLIPS_NAME, WEIGHTS_NAME,  # noqa: F401
                  load_trained_clips, model_card, read_results, save_trained_clips)
from .io import atomic_save, atomic_write_json, atomic_write_text
from .normalize import (EPS, Projected, ZScored, fallback_from_groups, group_codes, group_directions, is_row_source,
                        moments, normalize_groups, remove_directions, unseen_group_codes, within_class_whitening)
from .zeroshot import ZeroShotModel  # the inference interface (torch-free); re-exported here

log = logging.getLogger("smoothclap")
#: At most this many labelled training clips (a seeded sample) estimate ``model.whiten``'s
#: covariance: plenty for a 1920-d covariance, and bounded however many clips train.
WHITEN_ROWS = 50_000


class ProjectionHead(nn.Module):
    """ParaCLAP head: e1 = W1 x; out = LayerNorm(e1 + Dropout(W2 GELU(e1))). ``[B, d_in] -> [B, d]``."""

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.5):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.drop = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.linear1(x)
        return self.layer_norm(e1 + self.drop(self.linear2(F.gelu(e1))))


class SmoothClapModel(nn.Module, ZeroShotModel):
    """Towers, feature normalisation, heads and scale (see the module docstring).

    ``encode_audio_features(raw [B, audio_dim], groups=None) -> [B, embed_dim]`` (unit norm);
    ``encode_text_features(feats [B, text_dim]) -> [B, embed_dim]`` (unit norm);
    ``embed_audio(waves, groups=None)`` / ``embed_files(files, groups=None)`` / ``embed_text(texts)``
    run the towers first.
    """

    def __init__(self, config: SmoothClapConfig, base_dir: str | Path | None = None):
        super().__init__()
        self.config = config
        self.base_dir = Path(base_dir) if base_dir is not None else None  # where relative towers live
        self.audio_head = ProjectionHead(config.audio_dim, config.embed_dim, config.dropout)
        self.text_head = ProjectionHead(config.text_dim, config.embed_dim, config.dropout)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.init_scale)))
        # Fitted on training features (not learned); identity until fitted.
        # norm_*: raw training statistics, the fallback of feature normalisation without groups;
        # audio_*: the input standardiser, fitted after feature normalisation.
        self.register_buffer("norm_mean", torch.zeros(config.audio_dim))
        self.register_buffer("norm_std", torch.ones(config.audio_dim))
        self.register_buffer("audio_mean", torch.zeros(config.audio_dim))
        self.register_buffer("audio_std", torch.ones(config.audio_dim))
        # neutral_*: where a group's unemotional clips sit within it (fit_neutral_statistics), for
        # adapting on neutral clips only; zeros: not fitted
        self.register_buffer("neutral_offset", torch.zeros(config.audio_dim))
        self.register_buffer("neutral_scale", torch.zeros(config.audio_dim))
        if config.nuisance_dims:  # orthonormal [audio_dim, k] directions removed before the head; zeros: none
            self.register_buffer("nuisance_basis", torch.zeros(config.audio_dim, config.nuisance_dims))
        if config.whiten != "none":  # [audio_dim, audio_dim] applied after them; identity until fitted
            self.register_buffer("whiten_matrix", torch.eye(config.audio_dim))
        self._towers: dict[str, nn.Module] = {}
        self._trainable: set[str] = set()
        # ParalingBinner state of the training captions (smoothclap.bins), or None
        self.caption_bins = None
        # zero-shot results recorded for the model (smoothclap.hub.record_results), for its card
        self.results: list[dict] = []
        # what trained it, by content: sorted uint64 8-byte sha1 prefixes of its training clips
        # (smoothclap.audio.content_prefixes), or None (not recorded: models saved before it)
        self.trained_clips: np.ndarray | None = None

    # -- scale --------------------------------------------------------------------------------------
    @property
    def scale(self) -> torch.Tensor:
        """s = exp(log-scale), clamped at ``max_scale`` (CLIP)."""
        return self.logit_scale.exp().clamp(max=self.config.max_scale)

    # -- 2. towers ------------------------------------------------------------------------------------
    def tower(self, kind: str):
        """The audio or text tower (built on first use from the config's spec, on the CPU)."""
        if kind not in ("audio", "text"):
            raise ValueError(f"tower kind must be audio or text, got {kind!r}")
        if kind not in self._towers:
            from .towers import build_tower

            spec = self.config.audio_tower if kind == "audio" else self.config.text_tower
            self._towers[kind] = build_tower(spec, base_dir=self.base_dir)
        return self._towers[kind]

    def set_tower(self, kind: str, tower, trainable: bool = False) -> None:
        """Use ``tower`` as the ``kind`` tower; ``trainable``: it is being fine-tuned, so it is part
        of this model and :meth:`save_pretrained` writes it into the model folder."""
        if trainable and not getattr(tower, "trainable", False):
            raise ValueError(f"tower {tower.spec!r} cannot be fine-tuned (use an hf: tower or minilm-l6)")
        self._towers[kind] = tower
        (self._trainable.add if trainable else self._trainable.discard)(kind)

    def release_tower(self, kind: str) -> None:
        """Forget a frozen tower (rebuilt from its spec when next needed)."""
        if kind not in self._trainable:
            self._towers.pop(kind, None)

    @property
    def trainable_towers(self) -> tuple[str, ...]:
        return tuple(k for k in ("audio", "text") if k in self._trainable)

    # -- 3. feature normalisation -------------------------------------------------------------------------
    def fit_normalization(self, raw, groups: np.ndarray | None = None, fit_rows: np.ndarray | None = None,
                          unseen_rows: np.ndarray | None = None, nuisance: np.ndarray | None = None,
                          classes: np.ndarray | None = None):
        """Fit the statistics on training features ``raw`` ``[N, audio_dim]`` (``groups`` ``[N]``:
        each clip's group, needed when ``config.feature_norm_group`` is set) and return the
        normalised features ``[N, audio_dim]`` float32 that the heads train on. ``fit_rows``
        ``[N]`` bool: the rows the statistics come from (e.g. the clips as recorded, not their
        augmented views; every group must keep a row); all rows are normalised with them.
        ``unseen_rows`` ``[N]`` bool: rows z-scored as a clip of a group the model never saw (a
        single clip from a new corpus): with the ``fallback_stats`` of the other groups only.
        ``nuisance`` ``[N]``: each clip's ``config.nuisance_group`` (needed with
        ``config.nuisance_dims``): the principal directions of these groups' means, with the features
        z-scored by the statistics a clip without a group gets (as they are without feature
        normalisation; so they hold between-corpus as well as between-speaker offsets), are stored
        and removed in :meth:`project_audio`; the returned features still hold them (the heads see
        them removed). ``classes`` ``[N]`` int (-1: unlabelled; needed with ``config.whiten``):
        each clip's emotion, whose within-class covariance (the fit rows z-scored as a clip
        without a group is, directions removed) is whitened in :meth:`project_audio`.

        ``raw`` may be a :class:`~smoothclap.normalize.RowSource` (rows read on demand, e.g. from the
        embedding cache): it is read in chunks and never held whole, and the features come back
        as a row source too (:class:`~smoothclap.normalize.ZScored`: each batch normalised as it
        is read), so memory does not grow with N. Every statistic is accumulated in float64 in
        row order (:func:`~smoothclap.normalize.moments`), which gives the same bits as over the
        whole array at once, so an array and a row source of the same rows train identically.
        The input standardiser's mean / std (unbiased) are computed in float64 too and stored as
        float32 (before: torch float32 reductions, a few float32 ulps away)."""
        if not is_row_source(raw):
            raw = np.asarray(raw, dtype=np.float32)
        if (fit_rows is not None or unseen_rows is not None) and is_row_source(raw):
            raise ValueError("fit_rows / unseen_rows need features in memory, not a row source")
        if unseen_rows is not None and not self.config.feature_norm_group:
            raise ValueError("unseen_rows need model.feature_norm_group (a clip of an unseen group)")
        fit = None if fit_rows is None else np.asarray(fit_rows, dtype=bool)
        on = raw if fit is None else raw[fit]  # the rows the statistics come from
        x = raw
        if self.config.feature_norm_group:
            if groups is None:
                raise ValueError(f"model.feature_norm_group={self.config.feature_norm_group!r}: the training "
                                 "table needs that column")
            _, codes = group_codes(groups)
            if fit is not None and len(np.unique(codes[fit])) != codes.max() + 1:
                raise ValueError("fit_rows leaves a feature-normalisation group without rows")
            fit_codes = codes if fit is None else codes[fit]
            mean, std = moments(on, fit_codes)
            std = np.maximum(std, EPS)
            x = ZScored(raw, codes, mean, std)  # = standardize(raw, "zscore", groups)
            if unseen_rows is not None:
                x = ZScored(raw, *unseen_group_codes(codes, np.asarray(unseen_rows, dtype=bool), mean, std,
                                                     np.bincount(fit_codes), self.config.fallback_stats))
            if self.config.fallback_stats in ("groups", "shrunk"):
                # the average group: a group-less clip reaches the heads at the scale they trained at
                fallback = fallback_from_groups(mean, std, None, self.config.fallback_stats)
            else:  # all training clips: its std also holds the between-group spread
                m, s = moments(on)
                fallback = m[0], s[0]
            if not is_row_source(raw):
                x = np.asarray(x)
            self.norm_mean.copy_(torch.from_numpy(fallback[0]))
            self.norm_std.copy_(torch.from_numpy(np.maximum(fallback[1], EPS)))
        basis = self._fit_nuisance(on, nuisance, fit) if self.config.nuisance_dims else None
        matrix = self._fit_whitening(on, classes, fit, basis) if self.config.whiten != "none" else None
        if self.config.standardize_audio:
            src = x if fit is None else np.asarray(x)[fit]
            mean, std = moments(src if basis is None and matrix is None else Projected(src, basis, matrix), ddof=1)
            self.audio_mean.copy_(torch.from_numpy(mean[0]))
            self.audio_std.copy_(torch.from_numpy(std[0]).float().clamp_min(1e-6))
        return x

    def fit_neutral_statistics(self, raw, groups, neutral, fit_rows: np.ndarray | None = None) -> int:
        """Store where the unemotional clips of a training group sit within it, so that a model can
        be adapted on neutral clips alone (:func:`smoothclap.adapt.adapted_copy`, ``reference="neutral"``).

        ``raw`` ``[N, audio_dim]`` (an array or a row source), ``groups`` ``[N]`` (each clip's
        ``config.feature_norm_group``), ``neutral`` ``[N]`` bool (the clips of the group's
        unemotional label, :func:`smoothclap.adapt.neutral_rows`), ``fit_rows`` as in
        :meth:`fit_normalization`. Over the groups with at least ``config.min_group_clips`` neutral
        clips: ``neutral_offset`` = mean of (neutral clips' mean - group mean) / group std, and
        ``neutral_scale`` = mean of neutral clips' std / group std (``[audio_dim]`` each). Returns
        the number of groups used; with none, both stay zero (not fitted)."""
        fit = None if fit_rows is None else np.asarray(fit_rows, dtype=bool)
        x = raw if fit is None else np.asarray(raw, dtype=np.float32)[fit]
        groups, neutral = np.asarray(groups), np.asarray(neutral, dtype=bool)
        if fit is not None:
            groups, neutral = groups[fit], neutral[fit]
        _, codes = group_codes(groups)
        use = np.flatnonzero(np.bincount(codes[neutral], minlength=codes.max() + 1) >= self.config.min_group_clips)
        if not len(use):
            return 0
        mean, std = moments(x, codes)
        rank = np.full(codes.max() + 1, len(use))
        rank[use] = np.arange(len(use))
        # one code per group used for its neutral clips, one more for every other row
        n_mean, n_std = moments(x, np.where(neutral, rank[codes], len(use)))
        std = np.maximum(std[use], EPS)
        self.neutral_offset.copy_(torch.from_numpy((n_mean[: len(use)] - mean[use]) / std).mean(0))
        self.neutral_scale.copy_(torch.from_numpy(n_std[: len(use)] / std).mean(0).clamp_min(EPS))
        return len(use)

    def neutral_statistics(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(neutral_offset, neutral_scale)`` ``[audio_dim]`` float64, or None when not fitted."""
        if not bool((self.neutral_scale > 0).any()):
            return None
        return self.neutral_offset.double().cpu().numpy(), self.neutral_scale.double().cpu().numpy()

    def _fit_nuisance(self, on, nuisance, fit) -> np.ndarray:
        """Fit and store ``nuisance_basis`` ``[audio_dim, k]`` from the raw rows ``on`` (the fit rows)."""
        if nuisance is None:
            raise ValueError(f"model.nuisance_dims={self.config.nuisance_dims} needs each clip's "
                             f"{self.config.nuisance_group!r} (the groups whose directions are removed)")
        nuisance = np.asarray(nuisance, dtype=object)
        _, codes = group_codes(nuisance if fit is None else nuisance[fit])
        means, _ = moments(on, codes)  # [S, audio_dim] raw group means
        scaled = (means - self.norm_mean.double().numpy()) / self.norm_std.double().numpy()
        basis = group_directions(scaled, self.config.nuisance_dims)
        self.nuisance_basis.copy_(torch.from_numpy(basis))
        return basis

    def _fit_whitening(self, on, classes, fit, basis) -> np.ndarray:
        """Fit and store ``whiten_matrix`` ``[audio_dim, audio_dim]`` from the raw fit rows ``on``:
        their labelled rows (at most :data:`WHITEN_ROWS`, a seeded sample) z-scored with the
        statistics a clip without a group gets and with ``basis`` removed, as :meth:`project_audio`
        sees a single clip."""
        if classes is None:
            raise ValueError(f"model.whiten={self.config.whiten!r} needs each training clip's emotion")
        classes = np.asarray(classes)
        classes = classes if fit is None else classes[fit]
        rows = np.flatnonzero(classes >= 0)
        if len(np.unique(classes[rows])) < 2:
            raise BadInputError("training table", f"model.whiten={self.config.whiten!r} needs labelled clips of at "
                                "least two emotions")
        if len(rows) > WHITEN_ROWS:
            rows = np.sort(np.random.default_rng(0).choice(rows, WHITEN_ROWS, replace=False))
        x = np.asarray(on[rows], dtype=np.float64)
        if self.config.feature_norm_group:
            x = (x - self.norm_mean.double().numpy()) / self.norm_std.double().numpy()
        if basis is not None:
            x = remove_directions(x, basis)
        matrix = within_class_whitening(x, classes[rows])
        self.whiten_matrix.copy_(torch.from_numpy(matrix))
        return matrix

    def normalize_audio_features(self, raw, groups: Sequence | np.ndarray | None = None) -> torch.Tensor:
        """Raw tower features ``[N, audio_dim]`` -> what the input standardiser expects ``[N, audio_dim]``.

        Without ``config.feature_norm_group``: unchanged. With it: clips of each group in ``groups``
        (``[N]``, e.g. speaker ids) are z-scored with that group's own statistics (groups of fewer
        than ``config.min_group_clips`` clips, and all clips when ``groups`` is None, use the stored
        training statistics instead: a single clip has no statistics of its own). With
        ``config.group_shrink``, each group's statistics are shrunk toward those of all the clips
        given (:func:`~smoothclap.normalize.shrunk_zscore`).
        """
        if not self.config.feature_norm_group:
            return torch.as_tensor(np.asarray(raw, dtype=np.float32) if not torch.is_tensor(raw) else raw,
                                   dtype=torch.float32)
        x = raw.detach().cpu().numpy() if torch.is_tensor(raw) else raw
        return torch.from_numpy(normalize_groups(x, groups, self.config.min_group_clips,
                                                 self.norm_mean.cpu().numpy(), self.norm_std.cpu().numpy(),
                                                 self.config.group_shrink))

    # -- 4. heads ------------------------------------------------------------------------------------------
    def project_audio(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised features ``[B, audio_dim]`` -> ``[B, embed_dim]`` unit norm (the nuisance
        directions removed when ``config.nuisance_dims``, whitened when ``config.whiten``, input
        standardiser, head)."""
        x = x.float()
        if self.config.nuisance_dims:
            x = x - (x @ self.nuisance_basis) @ self.nuisance_basis.T
        if self.config.whiten != "none":
            x = x @ self.whiten_matrix
        x = (x - self.audio_mean) / self.audio_std
        return F.normalize(self.audio_head(x), dim=-1)

    def _check_dim(self, kind: str, feats) -> None:
        """Tower features of another size than the config says (a config.json naming another tower
        than the one the heads were trained on): bad input naming the config, not a shape error."""
        want = self.config.audio_dim if kind == "audio" else self.config.text_dim
        got = tuple(feats.shape)[-1] if getattr(feats, "ndim", 0) >= 1 else None
        if got is not None and got != want:
            spec = self.config.audio_tower if kind == "audio" else self.config.text_tower
            where = self.base_dir / CONFIG_NAME if self.base_dir is not None else "model config"
            raise BadInputError(where, f"{kind}_tower {spec!r} gives {got}-d features, but {kind}_dim is {want} "
                                "(the heads were trained on another tower)")

    def encode_audio_features(self, raw, groups=None) -> torch.Tensor:
        """Raw audio-tower features ``[B, audio_dim]`` (+ optional groups ``[B]``) -> ``[B, embed_dim]``."""
        self._check_dim("audio", raw if hasattr(raw, "shape") else np.asarray(raw))
        x = self.normalize_audio_features(raw, groups).to(self.audio_mean.device)
        return self.project_audio(x)

    def encode_text_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Text-tower features ``[B, text_dim]`` -> ``[B, embed_dim]`` unit norm."""
        self._check_dim("text", feats if hasattr(feats, "shape") else np.asarray(feats))
        return F.normalize(self.text_head(torch.as_tensor(feats).float()), dim=-1)

    def copy(self) -> "SmoothClapModel":
        """A CPU copy of the heads and statistics that shares the towers (e.g. to evaluate during
        training without touching the trained model)."""
        m = SmoothClapModel(copy.deepcopy(self.config), self.base_dir)
        m.load_state_dict({k: v.detach().cpu() for k, v in self.state_dict().items()})
        m._towers, m._trainable = dict(self._towers), set(self._trainable)
        m.caption_bins, m.results = self.caption_bins, list(self.results)
        m.trained_clips = self.trained_clips
        m.eval()
        return m

    def with_feature_statistics(self, mean: np.ndarray, std: np.ndarray | None = None,
                                adapted: dict | None = None) -> "SmoothClapModel":
        """A :meth:`copy` whose single-clip statistics (``norm_mean``, ``norm_std`` ``[audio_dim]``)
        are ``mean`` and ``std`` (None: the stored std kept), recording ``adapted`` in
        ``config.adapted`` (:mod:`smoothclap.adapt`)."""
        out = self.copy()
        out.norm_mean.copy_(torch.as_tensor(np.asarray(mean), dtype=torch.float32))
        if std is not None:
            out.norm_std.copy_(torch.as_tensor(np.maximum(np.asarray(std), EPS), dtype=torch.float32))
        out.config.adapted = adapted
        return out

    # -- persistence --------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors``, the fine-tuned towers, the caption bins, the
        recorded results and a model card (``README.md``) to ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cfg = self.config.to_dict()
        for kind in self.trainable_towers:
            folder = f"{kind}_tower"
            query = self._towers[kind].save(path / folder)
            cfg[f"{kind}_tower"] = f"hf:./{folder}{query}"
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_save(path / WEIGHTS_NAME, lambda t: save_file(state, t, metadata={"format": "pt"}))
        if self.caption_bins is not None:
            atomic_write_json(path / BINS_NAME, self.caption_bins)
        if self.results:
            atomic_write_json(path / RESULTS_NAME, self.results)
        if self.trained_clips is not None:
            save_trained_clips(path / TRAINED_CLIPS_NAME, self.trained_clips)
        elif (path / TRAINED_CLIPS_NAME).exists():  # another model's record: not this one's
            (path / TRAINED_CLIPS_NAME).unlink()
        atomic_write_text(path / CARD_NAME, model_card(SmoothClapConfig.from_dict(cfg), self.results, name=path.name))
        atomic_write_json(path / CONFIG_NAME, cfg)
        return path

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool = False,
                    commit_message: str = "Upload smoothclap model") -> str:
        """Upload this model (as :meth:`save_pretrained` writes it) to the Hugging Face Hub repo
        ``repo_id``; returns the commit URL."""
        from .hub import push_model

        return push_model(self, repo_id, token=token, private=private, commit_message=commit_message)

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str = "cpu", *, revision: str | None = None,
                        token: str | None = None) -> "SmoothClapModel":
        """Load a model folder written by :meth:`save_pretrained`, or a Hugging Face Hub repo
        (``"<org>/<name>"``, optionally at ``revision``; through huggingface_hub's cache, offline
        with ``HF_HUB_OFFLINE=1``). Nothing in the files is executed."""
        from .hub import model_folder

        path = model_folder(path, revision=revision, token=token)
        if not path.is_dir():
            raise BadInputError(path, "model folder not found" if not path.exists() else "not a folder")
        cfg_file, w_file = path / CONFIG_NAME, path / WEIGHTS_NAME
        for f in (cfg_file, w_file):
            if not f.exists():
                raise BadInputError(f, f"not found (is {path} a saved smoothclap model?)")
        try:
            data = json.loads(cfg_file.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            config = SmoothClapConfig.from_dict(data)
        except ConfigError as e:
            raise BadInputError(cfg_file, f"not a usable model config: {e.key}: {e.reason}") from None
        except (ValueError, TypeError) as e:
            raise BadInputError(cfg_file, f"corrupted model config ({e})") from None
        model = cls(config, base_dir=path.resolve())
        try:
            state = load_file(str(w_file), device=map_location)
        except (SafetensorError, OSError, ValueError) as e:
            raise BadInputError(w_file, f"corrupted weights ({e})") from None
        if "norm_mean" not in state:  # saved before feature normalisation kept its own statistics
            if config.feature_norm_group:
                log.warning("%s: no stored training statistics for feature normalisation; clips scored "
                            "without groups are not normalised", path)
            state["norm_mean"], state["norm_std"] = model.norm_mean.clone(), model.norm_std.clone()
        for k in ("neutral_offset", "neutral_scale"):  # saved before they were fitted: not fitted
            state.setdefault(k, getattr(model, k).clone())
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise BadInputError(w_file, f"weights do not fit the config ({str(e).splitlines()[0]})") from None
        model.results = read_results(path)
        if (path / TRAINED_CLIPS_NAME).exists():
            model.trained_clips = load_trained_clips(path / TRAINED_CLIPS_NAME)
        bins = path / BINS_NAME
        if bins.exists():
            try:
                model.caption_bins = json.loads(bins.read_text())
            except ValueError as e:
                raise BadInputError(bins, f"corrupted caption bins ({e})") from None
        model.eval()
        return model


