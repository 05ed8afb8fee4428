"""Any Hugging Face ``transformers.ClapModel`` as a zero-shot model: ``hf-clap:<hub id or folder>``.

:class:`ClapBaseline` has the inference interface of :class:`smoothclap.model.SmoothClapModel`
(:class:`~smoothclap.zeroshot.ZeroShotModel`), so everything that scores a smoothclap model scores a
CLAP baseline the same way, on the same tasks, with the same prompts and templates: ``evaluate
--task``, ``evaluate --manifest``, ``classify``, ``benchmark loco --baseline``. The model's own
processor prepares its input (its sample rate, its tokenizer; see :mod:`smoothclap.towers.hf_clap`);
its projections are the embeddings (no heads, no feature normalisation) and its learned
``exp(logit_scale_a)`` is the scale.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .zeroshot import ZeroShotModel

PREFIX = "hf-clap:"


@dataclass
class ClapBaselineConfig:
    """What reports and checks read of a model's config."""

    name: str
    audio_tower: str
    text_tower: str
    embed_dim: int
    trained_on: list = field(default_factory=list)  # unknown: a CLAP checkpoint's own training data
    feature_norm_group: str | None = None
    loudness: str | None = None


class ClapBaseline(ZeroShotModel):
    """A ``ClapModel`` checkpoint (hub id or local folder) behind the zero-shot model interface."""

    def __init__(self, name: str, device: str = "cpu"):
        from .towers.hf_clap import ClapAudioTower, ClapTextTower, clap_logit_scale, load_clap

        name = name[len(PREFIX):] if name.startswith(PREFIX) else name
        bundle = load_clap(name, device=device)
        spec = f"{PREFIX}{name}"
        self._towers = {"audio": ClapAudioTower(name, spec=f"{spec}?modality=audio", device=device, bundle=bundle),
                        "text": ClapTextTower(name, spec=f"{spec}?modality=text", device=device, bundle=bundle)}
        self.config = ClapBaselineConfig(name=spec, audio_tower=self._towers["audio"].spec,
                                         text_tower=self._towers["text"].spec, embed_dim=bundle.projection_dim)
        self._scale = torch.tensor(clap_logit_scale(bundle, "audio"))

    @classmethod
    def from_pretrained(cls, name: str, device: str = "cpu") -> "ClapBaseline":
        return cls(name, device)

    @property
    def scale(self) -> torch.Tensor:
        return self._scale

    def tower(self, kind: str):
        return self._towers[kind]

    def encode_audio_features(self, raw, groups=None) -> torch.Tensor:
        """The tower's output already is the projected audio embedding ``[B, d]``."""
        return F.normalize(torch.as_tensor(raw, dtype=torch.float32), dim=-1)

    def encode_text_features(self, feats) -> torch.Tensor:
        return F.normalize(torch.as_tensor(feats, dtype=torch.float32), dim=-1)
