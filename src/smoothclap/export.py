"""ONNX export of a smoothclap model (``smoothclap export --model DIR --format onnx --out DIR``).

:func:`export_onnx` writes the folder that :mod:`smoothclap.onnx_runtime` runs without PyTorch (its
module docstring lists the files, the graphs' inputs and outputs, and what runs in numpy around
them). The split follows the model (:mod:`smoothclap.model`):

* ``audio.onnx``: the audio tower and its pooling only. Feature normalisation with groups needs the
  statistics of all clips scored together, so it runs in numpy between this graph and
  ``audio_head.onnx`` (input standardiser + head + L2 norm).
* ``text.onnx``: token ids -> the text tower's pooled features; ``text_head.onnx``: head + L2 norm.
* Preprocessing that is not a tensor program stays in numpy, exported as data: Whisper's log-mel
  front end (mel filter bank, STFT window and settings; per clip, per 30 s window, so a clip's
  features do not depend on the clips batched with it), loudness levelling, the tokenizer
  (``tokenizer.json``), the statistics, the logit scale.

Supported towers: audio ``whisper-tiny-en`` (input: padded log-mels + real frame counts) and
``hf:`` wav2vec2-like folders with a ``Wav2Vec2FeatureExtractor`` (input: normalised, zero-padded
waveforms + lengths); text ``minilm-l6``, ``e5-small`` and ``hf:`` folders of plain transformers
text models with a fast tokenizer. Other towers raise :class:`~smoothclap.errors.BadInputError`.

Exporters: opset 18 and above use PyTorch's default ``torch.export``-based exporter (dynamo, needs
``onnxscript``); opset 17 uses the TorchScript exporter, because the dynamo exporter cannot convert
these graphs below 18. Every export is checked before it is moved into place: onnxruntime must
reproduce the PyTorch embeddings of a few generated clips and prompts (``verify``).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import BadInputError
from .onnx_runtime import (AUDIO_GRAPH, AUDIO_HEAD_GRAPH, FORMAT, FORMAT_VERSION, PREPROCESS_JSON, PREPROCESS_NPZ,
                           TEXT_GRAPH, TEXT_HEAD_GRAPH, TOKENIZER_JSON)

log = logging.getLogger("smoothclap")

SUPPORTED = ("ONNX export supports the audio towers whisper-tiny-en and hf:<wav2vec2-like folder> and the text "
             "towers minilm-l6, e5-small and hf:<BERT-like folder>")
TEXT_SPECS = ("minilm-l6", "e5-small")  # HFTextTower over a bundled / built folder
#: Largest |ONNX - PyTorch| on the generated check inputs that an export may show (the test asks 1e-4
#: on real clips; this only catches a broken exporter).
VERIFY_TOL = 1e-3
MIN_OPSET = 17


# -- graphs ---------------------------------------------------------------------------------------------
def _masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class _WhisperGraph(nn.Module):
    """``mels [B, 80, T]`` + ``n_frames [B]`` -> mean over the real encoder frames ``[B, 384]``:
    :meth:`smoothclap.towers.whisper.WhisperTinyEnTower.encode_mels` (final layer only) with its
    padding masks always on (for an unpadded row they change nothing), then the tower's pooling."""

    def __init__(self, encoder):
        super().__init__()
        self.enc = encoder

    def forward(self, mels: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        enc = self.enc
        T = mels.shape[2]
        x = F.gelu(enc.conv1(mels))
        mel_mask = torch.arange(T, device=mels.device)[None, :] < n_frames[:, None]
        x = x * mel_mask[:, None, :].to(x.dtype)  # what conv2 sees at the end of a lone clip
        x = F.gelu(enc.conv2(x)).permute(0, 2, 1)  # [B, T2, D]
        T2 = x.shape[1]
        h = x + enc.embed_positions.weight[:T2]
        frame_mask = torch.arange(T2, device=mels.device)[None, :] < ((n_frames + 1) // 2)[:, None]
        attn = torch.zeros(frame_mask.shape[0], 1, 1, T2, dtype=h.dtype, device=h.device)
        attn = attn.masked_fill(~frame_mask[:, None, None, :], torch.finfo(h.dtype).min)
        for layer in enc.layers:
            h = layer(h, attn)
            if isinstance(h, tuple):  # older transformers return tuples
                h = h[0]
        return _masked_mean(enc.layer_norm(h), frame_mask)


class _HFAudioGraph(nn.Module):
    """``waves [B, S]`` (feature-extractor output, zero-padded) + ``lengths [B]`` -> pooled features,
    as :meth:`smoothclap.towers.hf.HFAudioTower.forward_waves`."""

    def __init__(self, tower):
        super().__init__()
        self.model = tower.model
        self.pool, self.layer = tower.pool, tower.layer
        self.use_mask = bool(getattr(tower.processor, "return_attention_mask", False))

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        S = waves.shape[1]
        sample_mask = (torch.arange(S, device=waves.device)[None, :] < lengths[:, None]).long()
        kw = {"attention_mask": sample_mask} if self.use_mask else {}
        out = self.model(waves, output_hidden_states=self.layer is not None, **kw)
        h = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
        if self.pool == "cls":
            return h[:, 0]
        frames = self.model._get_feat_extract_output_lengths(lengths)
        frame_mask = torch.arange(h.shape[1], device=h.device)[None, :] < frames[:, None]
        return _masked_mean(h, frame_mask)


class _TextGraph(nn.Module):
    """Token ids (+ mask, + token types) -> pooled text features, as
    :meth:`smoothclap.towers.hf.HFTextTower.forward_texts` after its tokenizer."""

    def __init__(self, tower, token_types: bool):
        super().__init__()
        self.model = tower.model
        self.pool, self.layer, self.normalize = tower.pool, tower.layer, tower.normalize
        self.token_types = token_types

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kw = {"token_type_ids": token_type_ids} if self.token_types else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         output_hidden_states=self.layer is not None, **kw)
        h = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
        emb = h[:, 0] if self.pool == "cls" else _masked_mean(h, attention_mask)
        return F.normalize(emb, dim=-1) if self.normalize else emb


class _AudioHead(nn.Module):
    """Normalised features -> unit-norm embedding (``SmoothClapModel.project_audio``)."""

    def __init__(self, model):
        super().__init__()
        self.head = model.audio_head
        self.register_buffer("mean", model.audio_mean.detach().clone().float())
        self.register_buffer("std", model.audio_std.detach().clone().float())

    def forward(self, features):
        return F.normalize(self.head((features - self.mean) / self.std), dim=-1)


class _TextHead(nn.Module):
    """Text-tower features -> unit-norm embedding (``SmoothClapModel.encode_text_features``)."""

    def __init__(self, model):
        super().__init__()
        self.head = model.text_head

    def forward(self, features):
        return F.normalize(self.head(features), dim=-1)


# -- exporter -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_exporter():
    """The exporters' known noise (torchvision not installed, legacy-exporter deprecation, tracer
    warnings about Python booleans that are constant here, dynamic-axis renaming) at debug level."""
    names = ["torch.onnx", "torch.onnx._internal.exporter._registration", "torch.export", "torch._dynamo",
             "onnxscript", "onnx_ir"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, lv in zip(loggers, levels):
                lg.setLevel(lv)
    for w in caught:
        log.debug("onnx export: %s: %s", w.category.__name__, str(w.message).splitlines()[0])


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            axes: dict[str, dict[int, tuple[str, int, int | None]]], opset: int) -> str:
    """Export ``module(*args)`` to ``path`` with dynamic ``axes`` (input name -> {axis: (name, min,
    max)}; outputs get a dynamic batch). Returns the exporter used."""
    module.eval()
    with _quiet_exporter(), torch.no_grad():
        if opset >= 18:
            dims: dict[str, torch.export.Dim] = {}

            def dim(name, lo, hi):
                if name not in dims:
                    dims[name] = torch.export.Dim(name, min=lo, max=hi) if hi else torch.export.Dim(name, min=lo)
                return dims[name]

            shapes = tuple({ax: dim(*spec) for ax, spec in axes.get(name, {}).items()} or None for name in inputs)
            torch.onnx.export(module, args, str(path), dynamo=True, external_data=False, verbose=False,
                              input_names=inputs, output_names=outputs, dynamic_shapes=shapes,
                              opset_version=opset, optimize=True)
            exporter = "dynamo"
        else:
            dyn = {name: {ax: spec[0] for ax, spec in a.items()} for name, a in axes.items()}
            dyn.update({name: {0: "batch"} for name in outputs})
            torch.onnx.export(module, args, str(path), dynamo=False, input_names=inputs, output_names=outputs,
                              dynamic_axes=dyn, opset_version=opset, do_constant_folding=True)
            exporter = "torchscript"
    import onnx

    onnx.checker.check_model(str(path))
    return exporter


# -- towers ------------------------------------------------------------------------------------------
def _unsupported(where, kind: str, spec: str) -> BadInputError:
    return BadInputError(where, f"{SUPPORTED}; this model's {kind} tower is {spec!r}")


def _audio_tower(model, where):
    from .towers import parse_spec

    spec = model.config.audio_tower
    base, _ = parse_spec(spec)
    if base == "whisper-tiny-en" or (base.startswith("hf:") and "+" not in base):
        tower = model.tower("audio")
    else:
        raise _unsupported(where, "audio", spec)
    from .towers.hf import HFAudioTower
    from .towers.whisper import WhisperTinyEnTower

    if type(tower) is WhisperTinyEnTower:
        return "whisper", tower
    if type(tower) is HFAudioTower:
        from transformers import Wav2Vec2FeatureExtractor

        if type(tower.processor) is not Wav2Vec2FeatureExtractor:
            raise BadInputError(where, f"{SUPPORTED}; the audio tower {spec!r} has a "
                                f"{type(tower.processor).__name__} (only Wav2Vec2FeatureExtractor is exported)")
        return "hf", tower
    raise _unsupported(where, "audio", spec)


def _text_tower(model, where):
    from .towers import parse_spec

    spec = model.config.text_tower
    base, _ = parse_spec(spec)
    if not (base in TEXT_SPECS or base.startswith("hf:")):
        raise _unsupported(where, "text", spec)
    tower = model.tower("text")
    from .towers.hf import HFTextTower

    if type(tower) is not HFTextTower:
        raise _unsupported(where, "text", spec)
    if getattr(tower.tokenizer, "backend_tokenizer", None) is None:
        raise BadInputError(where, f"{SUPPORTED}; the text tower {spec!r} has no fast tokenizer (tokenizer.json)")
    return tower


def _write_tokenizer(tower, path: Path) -> None:
    from tokenizers import Tokenizer

    tok = tower.tokenizer
    t = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    t.enable_truncation(max_length=int(tower.max_length), strategy="longest_first",
                        direction=getattr(tok, "truncation_side", "right"))
    if tok.pad_token is None:
        raise BadInputError(tower.spec, "the text tower's tokenizer has no padding token")
    t.enable_padding(direction=getattr(tok, "padding_side", "right"), pad_id=int(tok.pad_token_id),
                     pad_type_id=int(getattr(tok, "pad_token_type_id", 0) or 0), pad_token=str(tok.pad_token))
    t.save(str(path))


# -- checks -------------------------------------------------------------------------------------------
def _check_waves() -> list[np.ndarray]:
    """Generated voiced-sounding clips of unequal length (1.3 s and 2.2 s)."""
    rng = np.random.default_rng(0)
    out = []
    for sec, f0 in ((1.3, 140.0), (2.2, 210.0)):
        t = np.arange(int(sec * 16000)) / 16000
        ph = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / 16000
        x = sum(np.sin(k * ph) / k for k in range(1, 12)) * (0.4 + 0.6 * np.sin(2 * np.pi * 0.7 * t) ** 2)
        out.append((0.3 * x / np.abs(x).max() + 0.01 * rng.standard_normal(t.size)).astype(np.float32))
    return out


CHECK_TEXTS = ["angry", "this person is feeling happy.", "the speaker sounds sad and a little tired today."]
LONG_TEXT = " ".join(["very"] * 300) + " long"  # truncated at the tower's max_length


def _verify(folder: Path, model, text_tower) -> dict:
    """Run the export with onnxruntime on generated clips and prompts; compare with PyTorch."""
    from .onnx_runtime import OnnxModel

    om = OnnxModel.load(folder, workers=1)
    texts = list(CHECK_TEXTS)
    max_pos = getattr(text_tower.model.config, "max_position_embeddings", None)
    if max_pos is None or max_pos >= text_tower.max_length:  # else the tower itself fails on long texts
        texts.append(LONG_TEXT)
    enc = text_tower.tokenizer([text_tower.prefix + t for t in texts], padding=True, truncation=True,
                               max_length=text_tower.max_length, return_tensors="np")
    feeds = om.tokenize(texts)
    for k, v in feeds.items():
        if k not in enc or not np.array_equal(np.asarray(enc[k]), v):
            raise RuntimeError(f"ONNX export: tokenizer.json does not reproduce the tower's tokenizer ({k})")
    waves = _check_waves()
    with torch.no_grad():
        za = model.embed_audio(waves).numpy()
        zt = model.embed_text(texts).numpy()
    diffs = {"audio": float(np.abs(om.embed_audio(waves) - za).max()),
             "text": float(np.abs(om.embed_text(texts) - zt).max())}
    if not all(np.isfinite(v) and v <= VERIFY_TOL for v in diffs.values()):
        raise RuntimeError(f"ONNX export does not reproduce PyTorch: max |difference| {diffs} > {VERIFY_TOL}")
    return diffs


# -- the export ---------------------------------------------------------------------------------------
def _load_model(model_dir):
    from .model import SmoothClapModel

    if isinstance(model_dir, SmoothClapModel):
        return model_dir, str(model_dir.base_dir or "model")
    return SmoothClapModel.from_pretrained(model_dir), str(model_dir)


def export_onnx(model_dir, out_dir, *, opset: int = 18, verify: bool = True) -> Path:
    """Export a saved model (a folder written by ``SmoothClapModel.save_pretrained``, or a loaded
    :class:`~smoothclap.model.SmoothClapModel`) to ``out_dir`` for :mod:`smoothclap.onnx_runtime`.

    ``opset``: 18 (default; PyTorch's dynamo exporter) or 17 (TorchScript exporter). ``verify``:
    check the written graphs against PyTorch before moving the folder into place. The folder is
    written next to ``out_dir`` under a temporary name and renamed when complete, so ``out_dir`` is
    either absent, the previous export, or the new one; an existing ``out_dir`` that is not an
    ONNX export is never replaced. Returns ``out_dir``.
    """
    opset = int(opset)
    if opset < MIN_OPSET:
        raise BadInputError("opset", f"ONNX export needs opset >= {MIN_OPSET}, got {opset}")
    out = Path(out_dir).expanduser()
    if out.exists() and not (out.is_dir() and ((out / PREPROCESS_JSON).exists() or not any(out.iterdir()))):
        raise BadInputError(out, "exists and is not an ONNX export (refusing to replace it)")
    model, where = _load_model(model_dir)
    model.eval()
    kind, audio = _audio_tower(model, where)
    text = _text_tower(model, where)
    t0 = time.perf_counter()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        meta = _write(tmp, model, kind, audio, text, opset)
        if verify:
            meta["verified_max_abs_diff"] = _verify(tmp, model, text)
            (tmp / PREPROCESS_JSON).write_text(json.dumps(meta, indent=2, default=str))
        old = out.parent / f".{out.name}.old{os.getpid()}"
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s to %s (opset %d, %s exporter) in %.1f s", where, out, opset, meta["exporter"],
             time.perf_counter() - t0)
    return out


def _write(folder: Path, model, kind: str, audio, text, opset: int) -> dict:
    from . import __version__

    cfg = model.config
    arrays: dict[str, np.ndarray] = {
        "norm_mean": model.norm_mean.detach().cpu().numpy().astype(np.float32),
        "norm_std": model.norm_std.detach().cpu().numpy().astype(np.float32),
        "audio_mean": model.audio_mean.detach().cpu().numpy().astype(np.float32),
        "audio_std": model.audio_std.detach().cpu().numpy().astype(np.float32),
    }
    batch = ("batch", 1, None)
    if kind == "whisper":
        from .towers.whisper import MAX_SAMPLES, MIN_SAMPLES, SAMPLE_RATE

        enc = audio._ensure_loaded()
        fe = audio._fe
        max_frames = 2 * int(enc.config.max_source_positions)
        n_mels = int(enc.config.num_mel_bins)
        # example: two rows, the second padded (so the masked path is what gets traced)
        example = (torch.randn(2, n_mels, 317), torch.tensor([317, 250]))
        exporter = _export(_WhisperGraph(enc), example, folder / AUDIO_GRAPH, ["mels", "n_frames"], ["features"],
                           {"mels": {0: batch, 2: ("frames", 2, max_frames)}, "n_frames": {0: batch}}, opset)
        arrays["mel_filters"] = np.asarray(fe.mel_filters, dtype=np.float32)  # [n_fft // 2 + 1, n_mels]
        arrays["mel_window"] = torch.hann_window(fe.n_fft).numpy().astype(np.float32)  # periodic, as the extractor
        audio_meta = {
            "kind": "whisper-log-mel", "spec": audio.spec, "dim": int(audio.dim), "sample_rate": SAMPLE_RATE,
            "n_fft": int(fe.n_fft), "hop_length": int(fe.hop_length), "n_mels": n_mels, "window": "hann (periodic)",
            "stft": "centred, reflect padding, last frame dropped", "log_floor": 1e-10, "dynamic_range": 8.0,
            "offset": 4.0, "divisor": 4.0, "max_samples": MAX_SAMPLES, "min_samples": MIN_SAMPLES,
            "max_frames": max_frames, "long_clips": "ceil(T / max_samples) near-equal windows, mean over all "
            "real encoder frames",
            "inputs": {"mels": "[batch, n_mels, frames] float32, zero-padded", "n_frames": "[batch] int64"},
            "outputs": {"features": "[batch, dim] float32"},
        }
    else:
        proc = audio.processor
        example = (torch.randn(2, 16000), torch.tensor([16000, 11000]))
        exporter = _export(_HFAudioGraph(audio), example, folder / AUDIO_GRAPH, ["waves", "lengths"], ["features"],
                           {"waves": {0: batch, 1: ("samples", 400, None)}, "lengths": {0: batch}}, opset)
        audio_meta = {
            "kind": "waveform", "spec": audio.spec, "dim": int(audio.dim), "sample_rate": 16000,
            "do_normalize": bool(getattr(proc, "do_normalize", True)),
            "padding_value": float(getattr(proc, "padding_value", 0.0)),
            "attention_mask": bool(getattr(proc, "return_attention_mask", False)),
            "inputs": {"waves": "[batch, samples] float32 (zero mean, unit variance per clip), zero-padded",
                       "lengths": "[batch] int64"},
            "outputs": {"features": "[batch, dim] float32"},
        }
    head_in = {"features": {0: batch}}
    _export(_AudioHead(model), (torch.randn(2, cfg.audio_dim),), folder / AUDIO_HEAD_GRAPH, ["features"],
            ["embedding"], head_in, opset)

    _write_tokenizer(text, folder / TOKENIZER_JSON)
    token_types = "token_type_ids" in getattr(text.tokenizer, "model_input_names", [])
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else [])
    ex = text.tokenizer(["a happy voice", "this person is feeling very sad today."], padding=True, truncation=True,
                        max_length=text.max_length, return_tensors="pt")
    max_pos = int(getattr(text.model.config, "max_position_embeddings", 0) or 0) or None
    tokens = ("tokens", 1, max_pos)
    _export(_TextGraph(text, token_types), tuple(ex[n] for n in names), folder / TEXT_GRAPH, names, ["features"],
            {n: {0: batch, 1: tokens} for n in names}, opset)
    _export(_TextHead(model), (torch.randn(2, cfg.text_dim),), folder / TEXT_HEAD_GRAPH, ["features"],
            ["embedding"], head_in, opset)

    np.savez(folder / PREPROCESS_NPZ, **arrays)
    meta = {
        "format": FORMAT, "version": FORMAT_VERSION, "smoothclap": __version__, "torch": torch.__version__,
        "opset": opset, "exporter": exporter,
        "config": asdict(cfg),
        "scale": float(model.scale.detach().cpu()),
        "embed_dim": int(cfg.embed_dim),
        "audio": {**audio_meta, "graph": AUDIO_GRAPH},
        "audio_head": {"graph": AUDIO_HEAD_GRAPH, "inputs": {"features": "[batch, audio_dim] float32, normalised"},
                       "outputs": {"embedding": "[batch, embed_dim] float32, unit norm"},
                       "contains": "input standardiser (audio_mean, audio_std), head, L2 norm"},
        "text": {"spec": text.spec, "dim": int(text.dim), "graph": TEXT_GRAPH, "tokenizer": TOKENIZER_JSON,
                 "max_length": int(text.max_length), "prefix": text.prefix, "pool": text.pool,
                 "normalize": bool(text.normalize), "inputs": names, "outputs": {"features": "[batch, text_dim]"}},
        "text_head": {"graph": TEXT_HEAD_GRAPH, "inputs": {"features": "[batch, text_dim] float32"},
                      "outputs": {"embedding": "[batch, embed_dim] float32, unit norm"}},
        "arrays": {k: list(v.shape) for k, v in arrays.items()},
    }
    if getattr(model, "caption_bins", None) is not None:
        meta["caption_bins"] = model.caption_bins
    (folder / PREPROCESS_JSON).write_text(json.dumps(meta, indent=2, default=str))
    return meta


__all__ = ["export_onnx", "SUPPORTED"]
