"""SmoothCLAP model: frozen towers + ParaCLAP projection heads + learnable logit scale.

Only the heads, the scale and the (fitted, not learned) input standardisation are saved; towers
are rebuilt from their spec strings, so a saved model is a few MB of ``config.json`` +
``model.safetensors`` (Hugging Face style ``save_pretrained`` / ``from_pretrained``).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .io import atomic_save, atomic_write_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


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
    audio_tower: str = "whisper-tiny-en"
    text_tower: str = "minilm-l6"
    audio_dim: int = 384
    text_dim: int = 384
    embed_dim: int = 768
    dropout: float = 0.5
    init_scale: float = 1.0 / 0.07
    max_scale: float = 100.0
    standardize_audio: bool = True
    feature_norm_group: str | None = None  # see ModelConfig.feature_norm_group
    # Provenance, recorded so reports can say what trained the model (never used for inference).
    trained_on: list | None = None
    loss: dict | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "SmoothClapConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class SmoothClapModel(nn.Module):
    """Heads and scale over frozen tower embeddings.

    ``encode_audio_features`` ``[B, audio_dim] -> [B, embed_dim]`` (unit norm);
    ``encode_text_features`` ``[B, text_dim] -> [B, embed_dim]`` (unit norm).
    ``embed_audio`` / ``embed_text`` run the towers first (built lazily from their specs).
    """

    def __init__(self, config: SmoothClapConfig):
        super().__init__()
        self.config = config
        self.audio_head = ProjectionHead(config.audio_dim, config.embed_dim, config.dropout)
        self.text_head = ProjectionHead(config.text_dim, config.embed_dim, config.dropout)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.init_scale)))
        # Fitted on training embeddings (not learned); identity until fitted.
        self.register_buffer("audio_mean", torch.zeros(config.audio_dim))
        self.register_buffer("audio_std", torch.ones(config.audio_dim))
        self._towers: dict[str, nn.Module] = {}

    # -- scale and heads ---------------------------------------------------------------------
    @property
    def scale(self) -> torch.Tensor:
        """s = exp(log-scale), clamped at ``max_scale`` (CLIP)."""
        return self.logit_scale.exp().clamp(max=self.config.max_scale)

    def fit_audio_standardizer(self, feats: torch.Tensor) -> None:
        """feats ``[N, audio_dim]`` training embeddings -> stored mean / std."""
        if not self.config.standardize_audio:
            return
        feats = feats.float()
        self.audio_mean.copy_(feats.mean(0))
        self.audio_std.copy_(feats.std(0).clamp_min(1e-6))

    def encode_audio_features(self, feats: torch.Tensor) -> torch.Tensor:
        x = (feats.float() - self.audio_mean) / self.audio_std
        return F.normalize(self.audio_head(x), dim=-1)

    def encode_text_features(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_head(feats.float()), dim=-1)

    # -- towers --------------------------------------------------------------------------------
    def tower(self, kind: str):
        """The frozen audio or text tower (built on first use from the config's spec)."""
        if kind not in self._towers:
            from .towers import build_tower

            spec = self.config.audio_tower if kind == "audio" else self.config.text_tower
            self._towers[kind] = build_tower(spec)
        return self._towers[kind]

    @torch.no_grad()
    def embed_audio(self, waves: Sequence[np.ndarray]) -> torch.Tensor:
        """waves: B mono 16 kHz arrays -> ``[B, embed_dim]`` unit-norm embeddings."""
        self.eval()
        return self.encode_audio_features(self.tower("audio").embed(waves))

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """texts: B strings -> ``[B, embed_dim]`` unit-norm embeddings."""
        self.eval()
        return self.encode_text_features(self.tower("text").embed(list(texts)))

    # -- persistence ---------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_save(path / WEIGHTS_NAME, lambda t: save_file(state, t, metadata={"format": "pt"}))
        atomic_write_json(path / CONFIG_NAME, asdict(self.config))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str = "cpu") -> "SmoothClapModel":
        path = Path(path)
        cfg_file, w_file = path / CONFIG_NAME, path / WEIGHTS_NAME
        for f in (cfg_file, w_file):
            if not f.exists():
                raise FileNotFoundError(f"{f}: not found (is {path} a saved smoothclap model?)")
        model = cls(SmoothClapConfig.from_dict(json.loads(cfg_file.read_text())))
        model.load_state_dict(load_file(str(w_file), device=map_location))
        model.eval()
        return model
