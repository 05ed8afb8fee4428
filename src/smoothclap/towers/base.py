"""One interface for all frozen encoders ("towers").

Audio towers map a list of mono 16 kHz waveforms to ``[B, dim]`` embeddings; text towers map a list
of strings to ``[B, dim]``. Towers are named by spec strings (see :func:`smoothclap.towers.build_tower`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn


class AudioTower(nn.Module):
    """Frozen audio encoder. Subclasses set ``spec``, ``dim`` and implement :meth:`forward_waves`."""

    modality = "audio"
    spec: str = ""
    dim: int = 0
    sample_rate: int = 16000

    @property
    def cache_key(self) -> str:
        """Identifies the tower and its preprocessing in the embedding cache."""
        return self.spec

    def forward_waves(self, waves: Sequence[np.ndarray]) -> torch.Tensor:
        """waves: B arrays ``[T_i]`` float32 at 16 kHz -> ``[B, dim]`` float32 (on CPU)."""
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, waves: Sequence[np.ndarray]) -> torch.Tensor:
        self.eval()
        return self.forward_waves(waves).float().cpu()


class TextTower(nn.Module):
    """Frozen text encoder. Subclasses set ``spec``, ``dim`` and implement :meth:`forward_texts`."""

    modality = "text"
    spec: str = ""
    dim: int = 0

    @property
    def cache_key(self) -> str:
        return self.spec

    def forward_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """texts: B strings -> ``[B, dim]`` float32."""
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        self.eval()
        return self.forward_texts(list(texts)).float().cpu()


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden ``[B, T, D]``, mask ``[B, T]`` (1 = real) -> ``[B, D]`` mean over real positions."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
