"""Hugging Face CLAP (``transformers.ClapModel``) as a zero-shot baseline: ``hf-clap:<id or folder>``.

Any ``ClapModel`` checkpoint works: a hub id such as ``laion/clap-htsat-unfused``,
``laion/clap-htsat-fused`` or ``laion/larger_clap_general`` (only when a hub is reachable or the id is
already in the Hugging Face cache), or a local folder written with ``save_pretrained`` (model and
``ClapProcessor``). Audio and text towers of the same checkpoint share one loaded model
(:func:`load_clap` keeps a module-level cache).

Shapes and rates
----------------
* :class:`ClapAudioTower`: B mono float32 waveforms ``[T_i]`` at :attr:`~ClapAudioTower.sample_rate`
  (16 kHz, this project's convention) -> resampled with ``soxr`` (``"HQ"``) to the feature
  extractor's ``sampling_rate`` (48 kHz for LAION CLAP) -> ``ClapFeatureExtractor`` log-mels
  ``input_features`` ``[B, C, 1 + max_length // hop, n_mels]`` (LAION: ``[B, C, 1001, 64]``, 10 s at
  48 kHz, hop 480; ``C = 4`` for fused models, ``1`` for unfused ones) and ``is_longer`` ``[B, 1]``
  -> ``ClapModel.get_audio_features`` -> ``[B, projection_dim]`` (512 for LAION), L2-normalised.
* :class:`ClapTextTower`: B strings -> RoBERTa tokenizer (padding, truncation to
  ``min(model_max_length, max_position_embeddings - pad_token_id - 1)`` tokens, 512 for LAION) ->
  ``ClapModel.get_text_features`` -> ``[B, projection_dim]``, L2-normalised.
* :func:`clap_logit_scale`: ``exp(logit_scale_a)``, the factor ``ClapModel.forward`` multiplies the
  audio->text cosine similarities by (``logits_per_audio``); ``exp(logit_scale_t)`` scales
  ``logits_per_text``. Both are learned; they are ``1 / 0.07 = 14.29`` only at initialisation.

Truncation, padding and ``is_longer`` (part of :attr:`ClapAudioTower.cache_key`, keep stable)
-------------------------------------------------------------------------------------------------
The feature extractor's mode is chosen from the *model* config, not from the processor's saved
``truncation`` (a mismatch is logged and overridden, because it is silently wrong or crashes):

* ``audio_config.enable_fusion=True`` -> ``truncation="fusion"`` (HTK mel filters, 4 channels). A
  clip longer than ``max_length_s`` (10 s) gets a mel of the whole clip squeezed to 10 s plus 3 crops
  from its front / middle / back thirds, ``is_longer=True``; shorter clips are repeat-padded to 10 s
  and their mel is repeated 4 times, ``is_longer=False``. ``is_longer`` is passed to the model.
* ``enable_fusion=False`` -> ``truncation="rand_trunc"`` (Slaney mel filters, 1 channel): a longer
  clip is cut to one 10 s window, a shorter one is repeat-padded (the processor's ``padding``,
  ``"repeatpad"`` for LAION). ``is_longer`` is ignored by unfused models.

Determinism: the crop positions (fusion) and the window (rand_trunc) are drawn by the feature
extractor from NumPy's *global* RNG. Each clip is featurised on its own with the global RNG seeded to
``seed`` (default 0) and restored afterwards, under a lock, so a clip always gets the same crops --
whatever it is batched with and however often it is embedded -- and the features equal what
``processor(audios=[clip], truncation=..., sampling_rate=48000)`` returns after
``np.random.seed(seed)``. Because the global RNG is borrowed, the tower is not ``thread_safe``.

``is_longer`` for short clips of fused models: ``ClapFeatureExtractor`` (like LAION's HTSAT, where
it keeps the fusion layers in every DDP step) marks one *random* clip as longer whenever no clip of
the batch is, so a short clip would be fused with copies of itself or not depending on its batch
(and always, when embedded alone). This tower passes each clip's own flag instead (``is_longer`` is
True only for clips that really are longer than ``max_length``), so embeddings do not depend on the
batch. ``fuse_short=True`` (spec option ``?fuse_short=1``) marks every clip as longer, which
reproduces what one gets when embedding one short clip at a time with the plain processor.

Transformers 4.x / 5.x: ``get_audio_features`` / ``get_text_features`` return the projected embedding
as a tensor (4.x) or a ``BaseModelOutputWithPooling`` whose ``pooler_output`` is the projected,
already L2-normalised embedding (5.x, ``last_hidden_state`` is the encoder's); both are handled, and
the result is normalised once more (a no-op where it already is).

Licences (not verified here -- no hub or network was reachable when this was written): the LAION
CLAP checkpoints (``laion/clap-htsat-*``, ``laion/larger_clap_*``) are, as far as we recall, marked
Apache-2.0 on their model cards, like the LAION-AI/CLAP code; their training data (LAION-Audio-630K,
AudioSet, ...) has its own terms (partly CC-BY, partly research-only). Check the model card of the
checkpoint you use before relying on this.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .base import AudioTower, TextTower

log = logging.getLogger("smoothclap")

#: Weight files hashed for a local folder's :attr:`ClapBundle.weights_id` (shards included).
_WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "*.bin.index.json")

_BUNDLES: dict[tuple[str, str], "ClapBundle"] = {}
_BUNDLES_LOCK = threading.Lock()
_RNG_LOCK = threading.Lock()  # guards the borrowed global NumPy RNG (see module docstring)


def _looks_local(name: str) -> bool:
    """A filesystem path rather than a hub id (``org/name`` or ``name``)?"""
    p = Path(name).expanduser()
    return (p.exists() or name.startswith(("/", "~", "."))  # absolute, home, ./ ../
            or name.count("/") > 1 or (os.sep != "/" and os.sep in name))


def _sha1_files(files: Sequence[Path]) -> str:
    h = hashlib.sha1()
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def _hub_revision(repo_id: str) -> str | None:
    """The commit the Hugging Face cache resolved ``repo_id`` to (from its snapshot path), if known."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return None
    for fname in ("model.safetensors", "pytorch_model.bin", "config.json"):
        try:
            path = try_to_load_from_cache(repo_id, fname)
        except Exception:  # noqa: BLE001 - an odd id or cache layout: the revision is just unknown
            return None
        if isinstance(path, str):
            m = re.search(r"[\\/]snapshots[\\/]([0-9a-f]{40})[\\/]", path)
            if m:
                return m.group(1)
    return None


@dataclass
class ClapBundle:
    """A loaded CLAP checkpoint: ``model`` (``ClapModel``, eval, frozen, float32 on ``device``) and
    ``processor`` (``ClapProcessor``: ``.feature_extractor`` + ``.tokenizer``)."""

    name: str
    model: object
    processor: object
    device: str = "cpu"
    local: bool = False
    _weights_id: str | None = field(default=None, repr=False)

    @property
    def feature_extractor(self):
        return self.processor.feature_extractor

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def enable_fusion(self) -> bool:
        return bool(getattr(self.model.config.audio_config, "enable_fusion", False))

    @property
    def projection_dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def weights_id(self) -> str:
        """Identifies the weights: ``sha1:<hex>`` of the weight file(s) of a local folder,
        ``rev:<commit>`` for a hub id whose cached revision is known, else ``id:<name>``."""
        if self._weights_id is None:
            if self.local:
                folder = Path(self.name)
                files = sorted({p for pat in _WEIGHT_PATTERNS for p in folder.glob(pat) if p.is_file()})
                self._weights_id = f"sha1:{_sha1_files(files)}" if files else f"id:{self.name}"
            else:
                rev = _hub_revision(self.name)
                self._weights_id = f"rev:{rev}" if rev else f"id:{self.name}"
        return self._weights_id


def load_clap(name_or_path: str | Path, device: str = "cpu", shared: bool = True) -> ClapBundle:
    """Load ``ClapModel`` + ``ClapProcessor`` from a hub id or a local ``save_pretrained`` folder.

    With ``shared`` (default) one bundle per (checkpoint, device) is kept for the process, so the audio
    and text towers of one checkpoint share the model. Raises ``OSError`` naming the checkpoint and
    saying whether it was a local folder (missing / incomplete) or a hub id that could not be loaded
    (no hub reachable and not in the Hugging Face cache).
    """
    import transformers

    name = str(name_or_path)
    local = _looks_local(name)
    src = str(Path(name).expanduser().resolve()) if local else name
    key = (src, str(device))
    if shared:
        with _BUNDLES_LOCK:
            if key in _BUNDLES:
                return _BUNDLES[key]
    from ..errors import ModelFilesError
    from .hf import check_model_folder

    if local and not Path(src).is_dir():
        raise ModelFilesError(name, f"cannot load CLAP model: local folder {src} does not exist")
    if local:
        check_model_folder(src, "CLAP model")  # safetensors weights only: never a pickle
    try:
        processor = transformers.ClapProcessor.from_pretrained(src)
        model = transformers.ClapModel.from_pretrained(src, use_safetensors=True)
    except OSError as e:
        where = (f"local folder {src}: needs config.json, the weights and the ClapProcessor files "
                 "(save_pretrained of both)" if local else
                 "hub id: no model hub is reachable offline and it is not in the Hugging Face cache; "
                 "use a local folder saved with save_pretrained")
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFilesError(name, f"cannot load CLAP model ({where}): {first[:300]}") from e
    if not isinstance(model.config, transformers.ClapConfig):  # pragma: no cover - from_pretrained checks
        raise ValueError(f"{name!r} is not a CLAP checkpoint (model_type {model.config.model_type!r})")
    model = model.float().to(device).eval().requires_grad_(False)
    bundle = ClapBundle(name=src, model=model, processor=processor, device=str(device), local=local)
    fe, acfg = bundle.feature_extractor, model.config.audio_config
    if int(fe.feature_size) != int(acfg.num_mel_bins):
        raise ValueError(f"{name!r}: feature extractor makes {fe.feature_size} mel bins, "
                         f"the audio model expects {acfg.num_mel_bins}")
    if shared:
        with _BUNDLES_LOCK:
            bundle = _BUNDLES.setdefault(key, bundle)
    return bundle


def clap_logit_scale(bundle: ClapBundle, direction: str = "audio") -> float:
    """The temperature CLAP uses for zero-shot classification: ``exp(logit_scale_a)``, by which
    ``ClapModel.forward`` multiplies audio->text cosine similarities (``logits_per_audio = audio @
    text.T * exp(logit_scale_a)``, softmax over the label texts). ``direction="text"`` gives
    ``exp(logit_scale_t)`` (``logits_per_text``)."""
    if direction not in ("audio", "text"):
        raise ValueError(f"direction must be audio or text, got {direction!r}")
    p = bundle.model.logit_scale_a if direction == "audio" else bundle.model.logit_scale_t
    return float(p.detach().float().exp().item())


def _pooled(out) -> torch.Tensor:
    """``get_*_features`` output -> ``[B, D]``: a tensor (transformers 4.x) or ``pooler_output``
    (5.x: a ``BaseModelOutputWithPooling`` whose pooler output is the projected embedding)."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None and isinstance(out, (tuple, list)):
        pooled = out[1] if len(out) > 1 else out[0]
    if pooled is None:
        raise TypeError(f"unexpected CLAP features output {type(out).__name__}")
    return pooled


class _ClapTower:
    thread_safe = False
    trainable = False

    def _init_common(self, name, spec, device, bundle):
        self.bundle = bundle if bundle is not None else load_clap(name, device=device)
        self.model = self.bundle.model  # registered: .to() moves it; shared with the other tower
        self.spec = spec or f"hf-clap:{name}"
        self.device = str(self.bundle.device)
        self.dim = self.bundle.projection_dim

    @property
    def cache_key(self) -> str:
        return self._key


class ClapAudioTower(_ClapTower, AudioTower):
    """Projected CLAP audio embedding ``[B, projection_dim]`` (L2-normalised) of 16 kHz waveforms.

    ``forward_waves``: B arrays ``[T_i]`` -> ``[B, projection_dim]``. See the module docstring for
    resampling, truncation / padding and ``is_longer``.
    """

    def __init__(self, name: str | Path, spec: str | None = None, device: str = "cpu", seed: int = 0,
                 fuse_short: bool = False, sample_rate: int = 16000, bundle: ClapBundle | None = None):
        super().__init__()
        self._init_common(str(name), spec, device, bundle)
        self.seed, self.fuse_short, self.sample_rate = int(seed), bool(fuse_short), int(sample_rate)
        fe = self.bundle.feature_extractor
        self.model_rate = int(fe.sampling_rate)
        self.truncation = "fusion" if self.bundle.enable_fusion else "rand_trunc"
        if getattr(fe, "truncation", None) != self.truncation:
            log.warning("%s: feature extractor truncation=%r does not fit audio_config.enable_fusion=%s; "
                        "using truncation=%r", self.spec, getattr(fe, "truncation", None),
                        self.bundle.enable_fusion, self.truncation)
        self.max_samples = int(fe.nb_max_samples)
        self.hop = int(fe.hop_length)
        fe_cfg = {k: v for k, v in sorted(fe.to_dict().items()) if not k.startswith("_")}
        fe_hash = hashlib.sha1(json.dumps(fe_cfg, sort_keys=True, default=str).encode()).hexdigest()[:10]
        self._key = (f"{self.spec}|audio|{self.bundle.weights_id}|fe={fe_hash}|{self.sample_rate}->"
                     f"{self.model_rate}|{self.truncation}|seed={self.seed}"
                     f"{'|fuse_short' if self.fuse_short else ''}|v1")

    def is_longer(self, n_samples: int) -> bool:
        """Whether a clip of ``n_samples`` (at the model rate) really is longer than ``max_length``:
        the extractor's own per-clip flag (fusion: more mel frames than ``1 + max_length // hop``;
        rand_trunc: more samples than ``max_length``), before its random batch-level flip."""
        if n_samples <= self.max_samples:
            return False
        if self.truncation == "fusion":  # 1 + n // hop centred STFT frames vs the 10 s chunk
            return n_samples // self.hop != self.max_samples // self.hop
        return True

    def resample(self, wave: np.ndarray) -> np.ndarray:
        """One 16 kHz clip -> float32 at the feature extractor's rate (soxr ``HQ``)."""
        x = np.asarray(wave, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"{self.spec}: waveforms must be mono 1-d arrays, got shape {x.shape}")
        if x.size == 0:
            raise ValueError(f"{self.spec}: empty waveform")
        if self.sample_rate == self.model_rate:
            return x
        import soxr

        return soxr.resample(x, self.sample_rate, self.model_rate).astype(np.float32, copy=False)

    def features(self, waves: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """16 kHz waveforms -> ``{"input_features": [B, C, F, M], "is_longer": [B, 1] bool}`` (CPU),
        each clip featurised alone with the global NumPy RNG seeded to :attr:`seed`."""
        fe = self.bundle.feature_extractor
        feats, longer = [], []
        for wave in waves:
            x = self.resample(wave)
            with _RNG_LOCK:
                state = np.random.get_state()
                try:
                    np.random.seed(self.seed)
                    enc = fe([x], sampling_rate=self.model_rate, truncation=self.truncation, return_tensors="pt")
                finally:
                    np.random.set_state(state)
            feats.append(enc["input_features"])
            longer.append(self.fuse_short or self.is_longer(len(x)))
        return {"input_features": torch.cat(feats, 0).float(),
                "is_longer": torch.tensor(longer, dtype=torch.bool).reshape(-1, 1)}

    def forward_waves(self, waves: Sequence[np.ndarray]) -> torch.Tensor:
        enc = self.features(list(waves))
        out = self.model.get_audio_features(input_features=enc["input_features"].to(self.device),
                                            is_longer=enc["is_longer"].to(self.device))
        return F.normalize(_pooled(out).float(), dim=-1)


class ClapTextTower(_ClapTower, TextTower):
    """Projected CLAP text embedding ``[B, projection_dim]`` (L2-normalised).

    ``forward_texts``: B strings -> ``[B, projection_dim]``.
    """

    def __init__(self, name: str | Path, spec: str | None = None, device: str = "cpu",
                 max_length: int | None = None, bundle: ClapBundle | None = None):
        super().__init__()
        self._init_common(str(name), spec, device, bundle)
        self.tokenizer = self.bundle.tokenizer
        tcfg = self.model.config.text_config
        limit = int(tcfg.max_position_embeddings) - int(tcfg.pad_token_id or 0) - 1  # RoBERTa positions
        tok_max = getattr(self.tokenizer, "model_max_length", None) or limit
        self.max_length = int(max_length) if max_length is not None else int(min(limit, tok_max))
        self._key = f"{self.spec}|text|{self.bundle.weights_id}|max_length={self.max_length}|v1"

    def forward_texts(self, texts: Sequence[str]) -> torch.Tensor:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        out = self.model.get_text_features(input_ids=enc["input_ids"].to(self.device),
                                           attention_mask=enc["attention_mask"].to(self.device))
        return F.normalize(_pooled(out).float(), dim=-1)


def build_hf_clap_tower(name: str, opts: dict[str, str], spec: str, device: str = "cpu",
                        modality: str | None = None):
    """``hf-clap:<id or folder>?modality=audio|text`` (options: ``seed=0``, ``fuse_short=0|1`` for
    audio; ``max_length=N`` for text) -> :class:`ClapAudioTower` or :class:`ClapTextTower`.
    ``modality`` (the kind of tower wanted, when the caller knows it) overrides the option."""
    modality = modality or opts.get("modality")
    if modality == "audio":
        return ClapAudioTower(name, spec=spec, device=device, seed=int(opts.get("seed", 0)),
                              fuse_short=opts.get("fuse_short", "0") == "1")
    if modality == "text":
        ml = opts.get("max_length")
        return ClapTextTower(name, spec=spec, device=device, max_length=int(ml) if ml else None)
    raise ValueError(f"{spec}: say which CLAP tower is meant: ?modality=audio or ?modality=text "
                     f"(got {modality!r})")
