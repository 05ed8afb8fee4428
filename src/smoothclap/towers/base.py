"""One interface for all encoders ("towers").

Audio towers map a list of mono 16 kHz waveforms to ``[B, dim]`` embeddings; text towers map a list
of strings to ``[B, dim]``. Towers are named by spec strings (see :func:`smoothclap.towers.build_tower`)
and declare their own properties:

* ``thread_safe``: ``embed`` may run in several threads at once (the extraction pipeline then runs
  several batches in parallel on CPU, :func:`smoothclap.embed.forward_plan`);
* ``trainable``: the tower can be fine-tuned end to end (``towers.freeze_audio: false``);
* ``save(folder)``: how a fine-tuned tower is written into a model folder (trainable towers only).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn


class _Tower(nn.Module):
    modality = ""
    spec: str = ""
    dim: int = 0
    thread_safe: bool = False
    trainable: bool = False

    @property
    def cache_key(self) -> str:
        """Identifies the tower and its weights in the embedding cache."""
        return self.spec

    def save(self, folder: str | Path) -> str:
        """Write this (fine-tuned) tower into ``folder``; return the spec that rebuilds it from
        ``hf:<folder>`` (its query part, e.g. ``"?pool=mean&modality=audio"``)."""
        raise NotImplementedError(f"tower {self.spec!r} cannot be saved (it is not trainable)")


class AudioTower(_Tower):
    """Audio encoder. Subclasses set ``spec``, ``dim`` and implement :meth:`forward_waves`."""

    modality = "audio"
    sample_rate: int = 16000

    def forward_waves(self, waves: Sequence[np.ndarray]) -> torch.Tensor:
        """waves: B arrays ``[T_i]`` float32 at 16 kHz -> ``[B, dim]`` float32."""
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, waves: Sequence[np.ndarray]) -> torch.Tensor:
        """waves: B arrays ``[T_i]`` -> ``[B, dim]`` float32 on the CPU, eval mode, no gradient."""
        self.eval()
        return self.forward_waves(waves).float().cpu()


class TextTower(_Tower):
    """Text encoder. Subclasses set ``spec``, ``dim`` and implement :meth:`forward_texts`."""

    modality = "text"

    def forward_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """texts: B strings -> ``[B, dim]`` float32."""
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """texts: B strings -> ``[B, dim]`` float32 on the CPU, eval mode, no gradient."""
        self.eval()
        return self.forward_texts(list(texts)).float().cpu()


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden ``[B, T, D]``, mask ``[B, T]`` (1 = real) -> ``[B, D]`` mean over real positions."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
