"""One entry for every kind of model the zero-shot paths take."""
from __future__ import annotations

from pathlib import Path


def load_model(spec: str | Path, device: str = "cpu"):
    """A model for zero-shot use: ``hf-clap:<hub id or folder>`` (any Hugging Face ``ClapModel``,
    :class:`smoothclap.baselines.ClapBaseline`) or a smoothclap model (a folder, or a Hub id:
    :meth:`smoothclap.model.SmoothClapModel.from_pretrained`)."""
    spec = str(spec)
    if spec.startswith("hf-clap:"):
        from .baselines import ClapBaseline

        return ClapBaseline(spec, device=device)
    from .model import SmoothClapModel

    return SmoothClapModel.from_pretrained(spec, map_location=device)
