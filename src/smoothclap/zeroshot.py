"""Zero-shot classification with free-text labels: cosine similarity between audio embeddings and
label-prompt embeddings (inference is unchanged from CLAP).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

# Prompt template sets; "{label}" is replaced by the label's prompt word(s).
TEMPLATE_SETS: dict[str, list[str]] = {
    "bare": ["{label}"],
    "feeling": ["this person is feeling {label}."],
    "ensemble": [
        "{label}",
        "this person is feeling {label}.",
        "a {label} voice",
        "the speaker sounds {label}.",
        "speaker is {label}",
    ],
}


def resolve_templates(templates: str | Sequence[str] | None) -> list[str]:
    if templates is None:
        return TEMPLATE_SETS["bare"]
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return TEMPLATE_SETS[templates]
        if "{label}" in templates:
            return [templates]
        raise ValueError(f"unknown template set {templates!r}; known: {sorted(TEMPLATE_SETS)} "
                         "or a string containing {label}")
    out = list(templates)
    for t in out:
        if "{label}" not in t:
            raise ValueError(f"template {t!r} has no {{label}} placeholder")
    return out


class ZeroShotClassifier:
    """Classifier from label prompts.

    labels: class names as they appear in the data; prompts: optional map label -> prompt word(s)
    (defaults to the label itself); templates: a template-set name or list (averaged per label).
    """

    def __init__(self, model, labels: Sequence[str], prompts: dict[str, str] | None = None,
                 templates: str | Sequence[str] | None = None, text_features: np.ndarray | None = None):
        self.model = model
        self.labels = list(labels)
        self.prompts = {lab: (prompts or {}).get(lab, lab) for lab in self.labels}
        self.templates = resolve_templates(templates)
        self.texts = [[t.format(label=self.prompts[lab]) for t in self.templates] for lab in self.labels]
        self._text_features = text_features
        self.label_embeddings = self._build()

    def _build(self) -> torch.Tensor:
        """``[C, d]`` unit-norm label embeddings (template average, renormalised). Computed once."""
        flat = [t for group in self.texts for t in group]
        if self._text_features is not None:
            feats = torch.as_tensor(self._text_features, dtype=torch.float32)
        else:
            feats = self.model.tower("text").embed(flat)
        with torch.no_grad():
            self.model.eval()
            z = self.model.encode_text_features(feats)
        z = z.view(len(self.labels), len(self.templates), -1).mean(1)
        return torch.nn.functional.normalize(z, dim=-1)

    @torch.no_grad()
    def logits_from_features(self, audio_features: torch.Tensor) -> torch.Tensor:
        """audio tower features ``[N, audio_dim]`` -> logits ``[N, C]`` (scale * cosine)."""
        self.model.eval()
        za = self.model.encode_audio_features(torch.as_tensor(audio_features, dtype=torch.float32))
        return self.model.scale * za @ self.label_embeddings.T

    def predict_features(self, audio_features) -> tuple[list[str], np.ndarray]:
        """-> (predicted labels ``[N]``, probabilities ``[N, C]``)."""
        probs = torch.softmax(self.logits_from_features(audio_features), dim=-1).numpy()
        return [self.labels[i] for i in probs.argmax(1)], probs

    def predict(self, waves) -> tuple[list[str], np.ndarray]:
        """waves: mono 16 kHz arrays (see ``read_audio``) -> (labels ``[N]``, probabilities ``[N, C]``)."""
        return self.predict_features(self.model.tower("audio").embed(list(waves)))

    def predict_files(self, files: Sequence[str], *, cache_dir=None, batch_size: int = 16, skip=None,
                      progress: bool = False) -> tuple[list[str | None], np.ndarray, np.ndarray]:
        """Classify audio files end to end (the fast path for a folder of clips): the audio tower runs
        through :func:`smoothclap.embed.embed_audio_files` (length-sorted batches, reading overlapped
        with the forward, worker threads, optional cache); the label prompts were embedded once, when
        this classifier was built. Returns (labels ``[N]`` with None for skipped files, probabilities
        ``[N, C]`` with NaN rows for them, ok ``[N]``). Bad files raise unless ``skip.skip``."""
        from .embed import embed_audio_files

        feats, ok = embed_audio_files(self.model.tower("audio"), list(files), cache_dir=cache_dir,
                                      batch_size=batch_size, skip=skip, progress=progress, desc="classify")
        probs = np.full((len(ok), len(self.labels)), np.nan, dtype=np.float32)
        preds: list[str | None] = [None] * len(ok)
        keep = np.flatnonzero(ok)
        if len(keep):
            p_keep, pr = self.predict_features(feats[keep])
            probs[keep] = pr
            for i, lab in zip(keep, p_keep):
                preds[i] = lab
        return preds, probs, ok
