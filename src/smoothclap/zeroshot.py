"""Zero-shot classification with free-text labels: cosine similarity between audio embeddings and
label-prompt embeddings (inference is unchanged from CLAP).

:class:`ZeroShotModel` is the inference interface of every model kind (a smoothclap model, a
``hf-clap:`` baseline, an ONNX export): the end-to-end calls (``embed_audio``, ``embed_files``,
``file_features``, ``embed_text``) are written once, here, over what each kind provides (its
towers, ``encode_audio_features``, ``encode_text_features``, ``scale``).

:class:`ZeroShotClassifier` is the one inference path, for every model kind: ``predict``
(waveforms), ``predict_files`` (files, through the cached extraction pipeline
:func:`smoothclap.embed.embed_audio_files`), ``predict_features`` (raw tower features) all end in
the model's ``encode_audio_features``, with the same optional groups (speaker or corpus ids) for
its feature normalisation. :func:`smoothclap.classification.classify_files` (what ``smoothclap
classify`` and the web page run), :mod:`smoothclap.evaluate` and :mod:`smoothclap.tasks` score
with this classifier.

No PyTorch here: the classifier's arithmetic runs in numpy on whatever the model returns (numpy
arrays from an ONNX export, tensors from a PyTorch model), so an ONNX deployment needs no torch.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Sequence

import numpy as np

from .audio import normalize_loudness
from .prompts import TEMPLATE_SETS, parse_labels, resolve_templates  # noqa: F401


def as_array(x) -> np.ndarray:
    """float32 numpy array of what a model returns (a numpy array, or a torch tensor on any device)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x, dtype=np.float32)


def no_grad():
    """``torch.no_grad()`` when PyTorch is loaded (a PyTorch model may be in use), else nothing."""
    torch = sys.modules.get("torch")
    return torch.no_grad() if torch is not None else contextlib.nullcontext()


def recipe(model, key: str):
    """The model's stored inference recipe value ``key`` (``templates``, ``prompt_language``;
    :class:`smoothclap.config.InferenceConfig`), or None (models without one, e.g. baselines)."""
    inference = getattr(getattr(model, "config", None), "inference", None)
    return getattr(inference, key, None)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` divided by their norm (as ``torch.nn.functional.normalize``)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class ZeroShotModel:
    """What every zero-shot entry point uses of a model (:class:`smoothclap.model.SmoothClapModel`,
    :class:`smoothclap.baselines.ClapBaseline`, :class:`smoothclap.onnx_runtime.OnnxModel`).

    Subclasses provide ``config`` (with ``trained_on``, ``feature_norm_group``, ``loudness``),
    ``scale``, ``tower(kind)`` (an audio tower with ``spec``, ``dim``, ``sample_rate``,
    ``cache_key``, ``embed(waves)``; a text tower with ``embed(texts)``),
    ``encode_audio_features(raw, groups)`` and ``encode_text_features(feats)``; the end-to-end
    calls below are the same for all. Embeddings come back as the model computes them (tensors
    for PyTorch models, arrays for an export); :meth:`embed_files` returns numpy arrays.
    """

    caption_bins: dict | None = None

    def eval(self):
        return self

    def tower_features(self, waves: Sequence[np.ndarray]):
        """B waveforms -> raw audio-tower features ``[B, audio_dim]`` (loudness applied, no grad)."""
        mode = getattr(self.config, "loudness", None)
        waves = [np.asarray(w, dtype=np.float32) for w in waves]
        if mode not in (None, "none"):
            waves = [normalize_loudness(w, mode) for w in waves]
        with no_grad():
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

    def embed_audio(self, waves: Sequence[np.ndarray], groups=None):
        """B mono 16 kHz waveforms (+ optional groups ``[B]``) -> ``[B, embed_dim]`` unit-norm embeddings."""
        self.eval()
        with no_grad():
            return self.encode_audio_features(self.tower_features(waves), groups)

    def embed_files(self, files: Sequence[str], groups=None, **kw) -> tuple[np.ndarray, np.ndarray]:
        """Audio files (+ optional groups ``[N]``) -> (``[N, embed_dim]`` float32 with NaN rows for
        skipped files, ok ``[N]``); the groups of the files read feed the feature normalisation.
        Keywords go to :meth:`file_features` (cache_dir, skip, progress, ...)."""
        self.eval()
        raw, ok = self.file_features(files, **kw)
        keep = np.flatnonzero(ok)
        if not len(keep):
            return np.full((len(ok), 1), np.nan, dtype=np.float32), ok
        g = None if groups is None else np.asarray(list(groups), dtype=object)[keep]
        with no_grad():
            z = as_array(self.encode_audio_features(raw[keep], g))
        out = np.full((len(ok), z.shape[1]), np.nan, dtype=np.float32)
        out[keep] = z
        return out, ok

    def embed_text(self, texts: Sequence[str]):
        """B strings -> ``[B, embed_dim]`` unit-norm embeddings."""
        self.eval()
        with no_grad():
            return self.encode_text_features(self.tower("text").embed(list(texts)))


class ZeroShotClassifier:
    """Classifier from label prompts, for any :class:`ZeroShotModel`.

    labels: class names as they appear in the data; prompts: optional map label -> prompt word(s)
    (defaults to the label itself); templates: a template-set name or list (averaged per label).
    The label prompts are embedded once, here. Results are numpy arrays.
    """

    def __init__(self, model, labels: Sequence[str], prompts: dict[str, str] | None = None,
                 templates: str | Sequence[str] | None = None, text_features: np.ndarray | None = None):
        self.model = model
        self.labels = list(labels)
        self.prompts = {lab: (prompts or {}).get(lab, lab) for lab in self.labels}
        # None: the templates the model was trained to be used with (its recipe), else bare words
        self.templates = resolve_templates(templates if templates is not None else recipe(model, "templates"))
        self.texts = [[t.format(label=self.prompts[lab]) for t in self.templates] for lab in self.labels]
        self._text_features = text_features
        self.label_embeddings = self._build()

    def _build(self) -> np.ndarray:
        """``[C, d]`` unit-norm label embeddings (template average, renormalised)."""
        flat = [t for group in self.texts for t in group]
        self.model.eval()
        with no_grad():
            if self._text_features is not None:
                z = self.model.encode_text_features(np.asarray(self._text_features, dtype=np.float32))
            else:
                z = self.model.embed_text(flat)
        z = as_array(z).reshape(len(self.labels), len(self.templates), -1).mean(1)
        return l2_normalize(z).astype(np.float32)

    # -- the one path: embeddings -> logits -> probabilities ----------------------------------------------
    def logits(self, z_audio) -> np.ndarray:
        """Audio embeddings ``[N, d]`` (unit norm) -> logits ``[N, C]`` (scale * cosine)."""
        return (as_array(self.model.scale) * as_array(z_audio)) @ self.label_embeddings.T

    def _result(self, z_audio) -> tuple[list[str], np.ndarray]:
        lg = self.logits(z_audio).astype(np.float64)
        e = np.exp(lg - lg.max(1, keepdims=True))
        probs = (e / e.sum(1, keepdims=True)).astype(np.float32)
        return [self.labels[i] for i in probs.argmax(1)], probs

    def _encode(self, audio_features, groups):
        self.model.eval()
        with no_grad():
            return self.model.encode_audio_features(audio_features, groups)

    def logits_from_features(self, audio_features, groups=None) -> np.ndarray:
        """Raw audio-tower features ``[N, audio_dim]`` (+ groups ``[N]``) -> logits ``[N, C]``."""
        return self.logits(self._encode(audio_features, groups))

    def predict_features(self, audio_features, groups=None) -> tuple[list[str], np.ndarray]:
        """Raw audio-tower features ``[N, audio_dim]`` -> (predicted labels ``[N]``, probabilities ``[N, C]``)."""
        return self._result(self._encode(audio_features, groups))

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
            p_keep, pr = self._result(z[keep])
            probs[keep] = pr
            for i, lab in zip(keep, p_keep):
                preds[i] = lab
        return preds, probs, ok

