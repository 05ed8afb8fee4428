"""Concatenation of audio towers, e.g. ``whisper-tiny-en+egemaps``."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from .base import AudioTower


class ConcatAudioTower(AudioTower):
    """``[B, sum(dims)]``: each part's embedding side by side (standardise downstream)."""

    def __init__(self, towers: list[AudioTower]):
        super().__init__()
        self.parts = nn.ModuleList(towers)
        self.spec = "+".join(t.spec for t in towers)
        self.dim = sum(t.dim for t in towers)

    def forward_waves(self, waves: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.cat([t.forward_waves(waves).float() for t in self.parts], dim=-1)
