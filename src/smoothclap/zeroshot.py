"""Zero-shot classification with free-text labels: cosine similarity between audio embeddings and
label-prompt embeddings (inference is unchanged from CLAP).

:class:`ZeroShotClassifier` is the one inference path: ``predict`` (waveforms), ``predict_files``
(files, through the cached extraction pipeline), ``predict_features`` (raw tower features) all
end in :meth:`smoothclap.model.SmoothClapModel.encode_audio_features`, with the same optional
groups (speaker or corpus ids) for the model's feature normalisation. :func:`classify_files` is
what ``smoothclap classify`` runs; :mod:`smoothclap.evaluate` and :mod:`smoothclap.tasks` score
with the same classifier.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .classification import Classification
from .errors import BadInputError, SkipLog
from .prompts import TEMPLATE_SETS, parse_labels, resolve_templates  # noqa: F401

class ZeroShotClassifier:
    """Classifier from label prompts.

    labels: class names as they appear in the data; prompts: optional map label -> prompt word(s)
    (defaults to the label itself); templates: a template-set name or list (averaged per label).
    The label prompts are embedded once, here.
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
        """``[C, d]`` unit-norm label embeddings (template average, renormalised)."""
        flat = [t for group in self.texts for t in group]
        with torch.no_grad():
            self.model.eval()
            if self._text_features is not None:
                z = self.model.encode_text_features(torch.as_tensor(self._text_features, dtype=torch.float32))
            else:
                z = self.model.embed_text(flat)
        z = z.view(len(self.labels), len(self.templates), -1).mean(1)
        return torch.nn.functional.normalize(z, dim=-1)

    # -- the one path: embeddings -> logits -> probabilities ----------------------------------------------
    @torch.no_grad()
    def logits(self, z_audio: torch.Tensor) -> torch.Tensor:
        """Audio embeddings ``[N, d]`` (unit norm) -> logits ``[N, C]`` (scale * cosine)."""
        return self.model.scale.detach().cpu() * z_audio.cpu() @ self.label_embeddings.T.cpu()

    def _result(self, z_audio: torch.Tensor) -> tuple[list[str], np.ndarray]:
        probs = torch.softmax(self.logits(z_audio), dim=-1).numpy()
        return [self.labels[i] for i in probs.argmax(1)], probs

    @torch.no_grad()
    def logits_from_features(self, audio_features, groups=None) -> torch.Tensor:
        """Raw audio-tower features ``[N, audio_dim]`` (+ groups ``[N]``) -> logits ``[N, C]``."""
        self.model.eval()
        return self.logits(self.model.encode_audio_features(audio_features, groups))

    def predict_features(self, audio_features, groups=None) -> tuple[list[str], np.ndarray]:
        """Raw audio-tower features ``[N, audio_dim]`` -> (predicted labels ``[N]``, probabilities ``[N, C]``)."""
        self.model.eval()
        with torch.no_grad():
            return self._result(self.model.encode_audio_features(audio_features, groups))

    def predict(self, waves, groups=None) -> tuple[list[str], np.ndarray]:
        """Mono 16 kHz waveforms (see ``read_audio``) -> (labels ``[N]``, probabilities ``[N, C]``)."""
        return self._result(self.model.embed_audio(list(waves), groups))

    def predict_files(self, files: Sequence[str], groups=None, *, cache_dir=None, batch_size: int = 16,
                      skip=None, progress: bool = False) -> tuple[list[str | None], np.ndarray, np.ndarray]:
        """Classify audio files end to end (the fast path for a folder of clips: length-sorted
        batches, reading overlapped with the forward, worker threads, optional cache). Returns
        (labels ``[N]`` with None for skipped files, probabilities ``[N, C]`` with NaN rows for
        them, ok ``[N]``). Bad files raise unless ``skip.skip``."""
        z, ok = self.model.embed_files(list(files), groups, cache_dir=cache_dir, batch_size=batch_size,
                                       skip=skip, progress=progress, desc="classify")
        probs = np.full((len(ok), len(self.labels)), np.nan, dtype=np.float32)
        preds: list[str | None] = [None] * len(ok)
        keep = np.flatnonzero(ok)
        if len(keep):
            p_keep, pr = self._result(z[torch.as_tensor(keep)])
            probs[keep] = pr
            for i, lab in zip(keep, p_keep):
                preds[i] = lab
        return preds, probs, ok


def classify_files(model, files: Sequence[str], labels: Sequence[str], *, groups=None, prompts=None,
                   templates=None, cache_dir=None, batch_size: int = 16, skip_bad: bool = False,
                   progress: bool = False) -> Classification:
    """Rank free-text ``labels`` for each audio file (``smoothclap classify``).

    ``groups`` ``[N]`` (speaker or corpus per file, optional) feeds the model's feature
    normalisation; without it the model uses its stored training statistics, so even a single clip
    is scored as the heads were trained. Bad files raise unless ``skip_bad``.
    """
    files = [str(f) for f in files]
    if groups is not None and len(groups) != len(files):
        raise BadInputError("groups", f"{len(groups)} groups for {len(files)} files (one per file)")
    skip = SkipLog(skip=skip_bad)
    clf = ZeroShotClassifier(model, labels, prompts=prompts, templates=templates)
    preds, probs, ok = clf.predict_files(files, groups, cache_dir=cache_dir, batch_size=batch_size, skip=skip,
                                         progress=progress)
    df = pd.DataFrame({"file": files, "group": list(groups) if groups is not None else None, "pred": preds})
    for j, lab in enumerate(clf.labels):
        df[f"p_{lab}"] = probs[:, j]
    return Classification(table=df, labels=clf.labels, skipped=skip)
