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

    def embed_files(self, files: Sequence[str], *, cache_dir=None, skip=None, progress: bool = True,
                    **kw) -> tuple[np.ndarray, np.ndarray]:
        """Each part through the cached corpus path (``embed_audio_files``), side by side: the
        concatenation reuses the parts' caches instead of recomputing every tower."""
        from ..embed import embed_audio_files

        outs, ok = [], np.ones(len(files), dtype=bool)
        for t in self.parts:
            e, o = embed_audio_files(t, list(files), cache_dir=cache_dir, skip=skip, progress=progress)
            outs.append(e)
            ok &= o
        out = np.concatenate(outs, axis=1).astype(np.float32)
        out[~ok] = np.nan
        return out, ok
