"""SmoothCLAP model: everything between a waveform and its embedding.

The model owns, in this order (``docs/architecture.md``):

1. **loudness** normalisation of the waveform (``config.loudness``: none, ``peak`` or ``rms:<dBFS>``);
2. the **towers** (audio and text encoders, built lazily from their spec strings; fine-tuned towers
   are part of the model and saved inside its folder);
3. **feature normalisation** of the audio-tower features (``config.feature_norm_group``): z-scored
   within each group (corpus or speaker) when the caller gives groups, else with the stored
   training statistics, then the input standardiser fitted on training features;
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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .audio import normalize_loudness
from .errors import BadInputError
from .io import atomic_save, atomic_write_json, atomic_write_text
from .normalize import EPS, normalize_groups, standardize

log = logging.getLogger("smoothclap")

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BINS_NAME = "caption_bins.json"  # the training captions' eGeMAPS bins (describing new clips alike)

#: Fewest clips a group needs to be standardised on its own statistics; smaller groups (a single
#: clip, say) use the stored training statistics instead.
MIN_GROUP_CLIPS = 8


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


@dataclass
class SmoothClapConfig:
    """What a saved model is (``config.json``). Tower specs may be relative to the model folder
    (``hf:./audio_tower?...``: a fine-tuned tower saved inside it)."""

    audio_tower: str = "whisper-tiny-en"
    text_tower: str = "minilm-l6"
    audio_dim: int = 384
    text_dim: int = 384
    embed_dim: int = 768
    dropout: float = 0.5
    init_scale: float = 1.0 / 0.07
    max_scale: float = 100.0
    standardize_audio: bool = True
    # Cross-corpus normalisation (ModelConfig.feature_norm_group): z-score audio-tower features
    # within each group ("corpus" / "speaker" column) in training and, without labels, at test time.
    feature_norm_group: str | None = None
    min_group_clips: int = MIN_GROUP_CLIPS
    # Waveform level before the audio tower: None | "peak" | "rms:<dBFS>".
    loudness: str | None = None
    # Provenance, recorded so reports can say what trained the model (never used for inference).
    trained_on: list | None = None
    loss: dict | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "SmoothClapConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class ZeroShotModel:
    """What every zero-shot entry point uses of a model (:class:`SmoothClapModel`, and
    :class:`smoothclap.baselines.ClapBaseline` for any Hugging Face ``ClapModel``).

    Subclasses provide ``config`` (with ``trained_on``, ``feature_norm_group``, ``loudness``),
    ``scale``, ``tower(kind)``, ``file_features``, ``encode_audio_features(raw, groups)`` and
    ``encode_text_features(feats)``; the end-to-end calls below are the same for all.
    """

    caption_bins: dict | None = None

    def tower_features(self, waves: Sequence[np.ndarray]) -> torch.Tensor:
        """B waveforms -> raw audio-tower features ``[B, audio_dim]`` (loudness applied, no grad)."""
        mode = getattr(self.config, "loudness", None)
        waves = [np.asarray(w, dtype=np.float32) for w in waves]
        if mode not in (None, "none"):
            waves = [normalize_loudness(w, mode) for w in waves]
        return self.tower("audio").embed(waves)

    def file_features(self, files: Sequence[str], *, cache_dir=None, batch_size: int = 16, skip=None,
                      progress: bool = False, desc: str | None = None, workers: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Raw audio-tower features of files through the cached extraction pipeline
        (:func:`smoothclap.embed.embed_audio_files`, with this model's loudness): ``([N, audio_dim]``
        float32 with NaN rows for skipped files, ``ok [N])``."""
        from .embed import embed_audio_files

        return embed_audio_files(self.tower("audio"), [str(f) for f in files], cache_dir=cache_dir,
                                 batch_size=batch_size, skip=skip, progress=progress, desc=desc or "audio",
                                 workers=workers, loudness=getattr(self.config, "loudness", None))

    @torch.no_grad()
    def embed_audio(self, waves: Sequence[np.ndarray], groups=None) -> torch.Tensor:
        """B mono 16 kHz waveforms (+ optional groups ``[B]``) -> ``[B, embed_dim]`` unit-norm embeddings."""
        self.eval()
        return self.encode_audio_features(self.tower_features(waves), groups)

    @torch.no_grad()
    def embed_files(self, files: Sequence[str], groups=None, **kw) -> tuple[torch.Tensor, np.ndarray]:
        """Audio files (+ optional groups ``[N]``) -> (``[N, embed_dim]`` with NaN rows for skipped
        files, ok ``[N]``). Keywords go to :meth:`file_features` (cache_dir, skip, progress, ...)."""
        self.eval()
        raw, ok = self.file_features(files, **kw)
        keep = np.flatnonzero(ok)
        out = None
        if len(keep):
            g = None if groups is None else np.asarray(list(groups), dtype=object)[keep]
            z = self.encode_audio_features(raw[keep], g).cpu()
            out = torch.full((len(ok), z.shape[1]), float("nan"))
            out[torch.as_tensor(keep)] = z
        else:
            out = torch.full((len(ok), 1), float("nan"))
        return out, ok

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """B strings -> ``[B, embed_dim]`` unit-norm embeddings."""
        self.eval()
        return self.encode_text_features(self.tower("text").embed(list(texts)))


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
        self._towers: dict[str, nn.Module] = {}
        self._trainable: set[str] = set()
        # ParalingBinner state of the training captions (smoothclap.bins), or None
        self.caption_bins = None
        # zero-shot results recorded for the model (smoothclap.hub.record_results), for its card
        self.results: list[dict] = []

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
    def fit_normalization(self, raw: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """Fit the statistics on training features ``raw`` ``[N, audio_dim]`` (``groups`` ``[N]``:
        each clip's group, needed when ``config.feature_norm_group`` is set) and return the
        normalised features ``[N, audio_dim]`` float32 that the heads train on."""
        raw = np.asarray(raw, dtype=np.float32)
        x = raw
        if self.config.feature_norm_group:
            if groups is None:
                raise ValueError(f"model.feature_norm_group={self.config.feature_norm_group!r}: the training "
                                 "table needs that column")
            x = standardize(raw, "zscore", np.asarray(groups))
            r = raw.astype(np.float64)
            self.norm_mean.copy_(torch.from_numpy(r.mean(0)))
            self.norm_std.copy_(torch.from_numpy(np.maximum(r.std(0), EPS)))
        if self.config.standardize_audio:
            t = torch.from_numpy(x).float()
            self.audio_mean.copy_(t.mean(0))
            self.audio_std.copy_(t.std(0).clamp_min(1e-6))
        return x

    def normalize_audio_features(self, raw, groups: Sequence | np.ndarray | None = None) -> torch.Tensor:
        """Raw tower features ``[N, audio_dim]`` -> what the input standardiser expects ``[N, audio_dim]``.

        Without ``config.feature_norm_group``: unchanged. With it: clips of each group in ``groups``
        (``[N]``, e.g. speaker ids) are z-scored with that group's own statistics (groups of fewer
        than ``config.min_group_clips`` clips, and all clips when ``groups`` is None, use the stored
        training statistics instead: a single clip has no statistics of its own).
        """
        if not self.config.feature_norm_group:
            return torch.as_tensor(np.asarray(raw, dtype=np.float32) if not torch.is_tensor(raw) else raw,
                                   dtype=torch.float32)
        x = raw.detach().cpu().numpy() if torch.is_tensor(raw) else raw
        return torch.from_numpy(normalize_groups(x, groups, self.config.min_group_clips,
                                                 self.norm_mean.cpu().numpy(), self.norm_std.cpu().numpy()))

    # -- 4. heads ------------------------------------------------------------------------------------------
    def project_audio(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised features ``[B, audio_dim]`` -> ``[B, embed_dim]`` unit norm (input standardiser + head)."""
        x = (x.float() - self.audio_mean) / self.audio_std
        return F.normalize(self.audio_head(x), dim=-1)

    def encode_audio_features(self, raw, groups=None) -> torch.Tensor:
        """Raw audio-tower features ``[B, audio_dim]`` (+ optional groups ``[B]``) -> ``[B, embed_dim]``."""
        x = self.normalize_audio_features(raw, groups).to(self.audio_mean.device)
        return self.project_audio(x)

    def encode_text_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Text-tower features ``[B, text_dim]`` -> ``[B, embed_dim]`` unit norm."""
        return F.normalize(self.text_head(torch.as_tensor(feats).float()), dim=-1)

    def copy(self) -> "SmoothClapModel":
        """A CPU copy of the heads and statistics that shares the towers (e.g. to evaluate during
        training without touching the trained model)."""
        m = SmoothClapModel(copy.deepcopy(self.config), self.base_dir)
        m.load_state_dict({k: v.detach().cpu() for k, v in self.state_dict().items()})
        m._towers, m._trainable = dict(self._towers), set(self._trainable)
        m.caption_bins, m.results = self.caption_bins, list(self.results)
        m.eval()
        return m

    # -- persistence --------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors``, the fine-tuned towers, the caption bins, the
        recorded results and a model card (``README.md``) to ``path``."""
        from .hub import CARD_NAME, RESULTS_NAME, model_card

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cfg = asdict(self.config)
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
        from .hub import model_folder, read_results

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
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise BadInputError(w_file, f"weights do not fit the config ({str(e).splitlines()[0]})") from None
        model.results = read_results(path)
        bins = path / BINS_NAME
        if bins.exists():
            try:
                model.caption_bins = json.loads(bins.read_text())
            except ValueError as e:
                raise BadInputError(bins, f"corrupted caption bins ({e})") from None
        model.eval()
        return model


def record_results(folder: str | Path, results: Sequence[dict]) -> Path:
    """Add task results (one dict each: task, uar, wa, macro_f1, n, chance_uar, protocol, corpus)
    to a model folder's ``results.json`` (a task's newer result replaces its older one) and
    rewrite its model card. Returns the card's path."""
    from .hub import CARD_NAME, RESULTS_NAME, model_card, read_results

    folder = Path(folder)
    keep = ("task", "corpus", "n", "uar", "wa", "macro_f1", "chance_uar", "protocol", "trained_on")
    old = {r["task"]: r for r in read_results(folder)}
    for r in results:
        old[r["task"]] = {k: r[k] for k in keep if k in r}
    rows = list(old.values())
    atomic_write_json(folder / RESULTS_NAME, rows)
    config = SmoothClapConfig.from_dict(json.loads((folder / CONFIG_NAME).read_text()))
    return atomic_write_text(folder / CARD_NAME, model_card(config, rows, name=folder.name))
