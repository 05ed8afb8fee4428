"""ONNX export of a smoothclap model (``smoothclap export --model DIR --format onnx --out DIR``).

:func:`export_onnx` writes the folder that :mod:`smoothclap.onnx_runtime` runs without PyTorch (its
module docstring lists the files and the graphs' inputs and outputs). The split follows the model
(:mod:`smoothclap.model`):

* ``audio.onnx``: the audio tower with its own front end and pooling, on zero-padded waveforms +
  lengths. Whisper's log-mels (what ``transformers.WhisperFeatureExtractor`` computes per clip:
  reflect-padded periodic-Hann STFT, mel bank, log10, 8-decade floor below the clip's maximum)
  are torch ops of the graph (:class:`_WhisperLogMel`), so the runtime has no front end of its
  own; wav2vec2-like towers normalise each clip inside the graph too. Clips over 30 s are split
  into windows by :func:`smoothclap.audio.split_windows` and pooled by
  :func:`smoothclap.audio.pool_windows`, as in the PyTorch tower (the Whisper graph returns the
  per-window sums over real frames and their counts; with ``pool=meanstd`` float64 sums and sums
  of squares per layer, pooled by :func:`smoothclap.audio.pool_moments`).
* ``audio_head.onnx``: input standardiser + head + L2 norm. Feature normalisation with groups
  needs the statistics of all clips scored together, so it runs in numpy between the two graphs.
* ``text.onnx``: token ids -> the text tower's pooled features; ``text_head.onnx``: head + L2 norm.
* Data: the tokenizer (``tokenizer.json``), the statistics, the logit scale, the model's config.

Each supported tower has a named exporter (:func:`export_whisper_audio`, :func:`export_hf_audio`,
:func:`export_hf_text`, named by the tower registry :mod:`smoothclap.towers.registry`): ``audio`` ``whisper-tiny-en`` and ``hf:``
wav2vec2-like folders with a ``Wav2Vec2FeatureExtractor``; ``text`` ``minilm-l6``, ``e5-small``
and ``hf:`` folders of plain transformers text models with a fast tokenizer. Other towers raise
:class:`~smoothclap.errors.BadInputError`.

Exporters: opset 18 and above use PyTorch's default ``torch.export``-based exporter (dynamo, needs
``onnxscript``); opset 17 uses the TorchScript exporter, because the dynamo exporter cannot convert
these graphs below 18. Every export is checked before it is moved into place: onnxruntime must
reproduce the PyTorch embeddings of a few generated clips and prompts (``verify``).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import BadInputError
from .io import atomic_folder
from .onnx_runtime import (AUDIO_GRAPH, AUDIO_HEAD_GRAPH, FORMAT, FORMAT_VERSION, PREPROCESS_JSON, PREPROCESS_NPZ,
                           TEXT_GRAPH, TEXT_HEAD_GRAPH, TOKENIZER_JSON, replaceable_export)

log = logging.getLogger("smoothclap")

SUPPORTED = ("ONNX export supports the audio towers whisper-tiny-en and hf:<wav2vec2-like folder> and the text "
             "towers minilm-l6, e5-small and hf:<BERT-like folder>")
#: Largest |ONNX - PyTorch| on the generated check inputs that an export may show (the tests ask
#: 1e-5 on real clips; this only catches a broken exporter).
VERIFY_TOL = 1e-3
MIN_OPSET = 17
BATCH = ("batch", 1, None)  # a dynamic batch axis: (name, min, max)


# -- graphs ---------------------------------------------------------------------------------------------
def _masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


def _sample_mask(waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[B, S]`` True on each row's real samples."""
    return torch.arange(waves.shape[1], device=waves.device)[None, :] < lengths[:, None]


class _WhisperLogMel(nn.Module):
    """``waves [B, S]`` (zero-padded) + ``lengths [B]`` -> log-mels ``[B, n_mels, S // hop]``
    (zero beyond each row's ``lengths // hop`` real frames) and those frame counts: per row what
    ``WhisperFeatureExtractor`` computes for that clip alone (``padding="longest"``): centred STFT
    with reflect padding at the row's own ends (a gather), periodic Hann window, n_fft 400, hop 160
    (a strided convolution with the windowed DFT basis), power, Slaney mel bank, log10 floored at
    1e-10 and 8 decades below the row's maximum, ``(x + 4) / 4``; the last STFT frame dropped.
    Differences to the extractor are float32 rounding (max about 5e-5 on log-mels)."""

    def __init__(self, mel_filters: np.ndarray, n_fft: int = 400, hop: int = 160):
        super().__init__()
        self.n_fft, self.hop = int(n_fft), int(hop)
        win = torch.hann_window(self.n_fft, dtype=torch.float64)  # periodic, as the extractor
        k = torch.arange(self.n_fft // 2 + 1, dtype=torch.float64)[:, None]
        n = torch.arange(self.n_fft, dtype=torch.float64)[None, :]
        angle = 2 * math.pi * k * n / self.n_fft
        basis = torch.cat([win * torch.cos(angle), -win * torch.sin(angle)])  # [2 * bins, n_fft]
        self.register_buffer("basis", basis.float()[:, None, :])
        self.register_buffer("mel", torch.as_tensor(np.asarray(mel_filters, dtype=np.float32).T.copy()))

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        S, half = waves.shape[1], self.n_fft // 2
        L = lengths[:, None]
        i = (torch.arange(S + 2 * half, device=waves.device) - half)[None, :].abs()  # reflect at the start
        i = torch.where(i >= L, 2 * (L - 1) - i, i).clamp(0, S - 1)  # ... and at the row's own end
        spec = F.conv1d(torch.gather(waves, 1, i)[:, None, :], self.basis, stride=self.hop)
        T, bins = S // self.hop, self.mel.shape[1]
        re, im = spec[:, :bins, :T], spec[:, bins:, :T]
        log_spec = torch.log10(torch.clamp(torch.matmul(self.mel, re * re + im * im), min=1e-10))
        n_frames = lengths // self.hop
        real = (torch.arange(T, device=waves.device)[None, :] < n_frames[:, None])[:, None, :]
        top = log_spec.masked_fill(~real, float("-inf")).amax(dim=(1, 2), keepdim=True)
        log_spec = (torch.maximum(log_spec, top - 8.0) + 4.0) / 4.0
        return log_spec * real.to(log_spec.dtype), n_frames


class _WhisperGraph(nn.Module):
    """``waves [B, S]`` + ``lengths [B]`` -> per-row sums over the real encoder frames ``[B, dim]``
    and their counts ``[B]``: the log-mel front end (:class:`_WhisperLogMel`), then
    :meth:`smoothclap.towers.whisper.WhisperTinyEnTower.encode_mels` with its padding masks always
    on (for an unpadded row they change nothing); the final layer (384), or the states ``layers``
    (0 = the embedding output, 4 = the last layer after the final layer norm) concatenated. With
    ``pool="meanstd"``: (sums ``[B, L, 384]``, sums of squares ``[B, L, 384]``, counts ``[B]``),
    the sums in float64, for :func:`smoothclap.audio.pool_moments`."""

    def __init__(self, encoder, front: _WhisperLogMel, layers: tuple[int, ...] | None = None, pool: str = "mean"):
        super().__init__()
        self.enc, self.front = encoder, front
        self.layers = tuple(layers) if layers is not None else (len(encoder.layers),)
        self.pool = pool

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        enc = self.enc
        mels, n_frames = self.front(waves, lengths)
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
        states = [h]
        for i, layer in enumerate(enc.layers):
            h = layer(h, attn)
            if isinstance(h, tuple):  # older transformers return tuples
                h = h[0]
            states.append(enc.layer_norm(h) if i == len(enc.layers) - 1 else h)
        m = frame_mask.to(h.dtype)[:, :, None]
        if self.pool == "meanstd":
            hs = torch.stack([states[k] for k in self.layers], 1).double()  # [B, L, T2, D]
            m64 = m.double()[:, None]  # [B, 1, T2, 1]
            return (hs * m64).sum(2), (hs * hs * m64).sum(2), m.sum((1, 2))
        return torch.cat([(states[k] * m).sum(1) for k in self.layers], dim=1), m.sum((1, 2))


class _HFAudioGraph(nn.Module):
    """``waves [B, S]`` (zero-padded) + ``lengths [B]`` -> pooled features, as
    :meth:`smoothclap.towers.hf.HFAudioTower.forward_waves` with its ``Wav2Vec2FeatureExtractor``
    (per-clip zero mean and unit variance over the real samples, padding value) in the graph."""

    def __init__(self, tower):
        super().__init__()
        proc = tower.processor
        self.model = tower.model
        self.pool, self.layer = tower.pool, tower.layer
        self.use_mask = bool(getattr(proc, "return_attention_mask", False))
        self.do_normalize = bool(getattr(proc, "do_normalize", True))
        self.padding_value = float(getattr(proc, "padding_value", 0.0))

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        real = _sample_mask(waves, lengths)
        if self.do_normalize:
            m = real.to(waves.dtype)
            n = m.sum(1, keepdim=True).clamp_min(1.0)
            mean = (waves * m).sum(1, keepdim=True) / n
            var = (((waves - mean) * m) ** 2).sum(1, keepdim=True) / n
            waves = (waves - mean) / torch.sqrt(var + 1e-7)
        waves = torch.where(real, waves, torch.full_like(waves, self.padding_value))
        kw = {"attention_mask": real.long()} if self.use_mask else {}
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
    """Normalised features -> unit-norm embedding: ``SmoothClapModel.project_audio`` itself (the
    nuisance directions removed, input standardiser, head), so the graph is what PyTorch computes."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, features):
        return self.model.project_audio(features)


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


# -- per-tower exporters (what a tower registry can point at) -------------------------------------------
#: Waveform inputs of every audio graph.
AUDIO_INPUTS = {"waves": "[batch, samples] float32, zero-padded (loudness already applied)",
                "lengths": "[batch] int64, real samples per row"}


def export_whisper_audio(tower, folder: Path, opset: int) -> dict:
    """``audio.onnx`` for :class:`~smoothclap.towers.whisper.WhisperTinyEnTower`: waveforms ->
    log-mels (in the graph) -> encoder -> per-window sums over the real frames + frame counts
    (``pool=meanstd``: float64 sums and sums of squares per layer). Returns the ``audio`` entry of
    ``preprocess.json`` (``windows.pool`` says how the runtime pools the windows)."""
    from .towers.whisper import MAX_SAMPLES, MIN_SAMPLES, SAMPLE_RATE

    enc = tower._ensure_loaded()
    fe = tower._fe
    pool = tower.pool
    graph = _WhisperGraph(enc, _WhisperLogMel(fe.mel_filters, fe.n_fft, fe.hop_length), tower.layers, pool)
    # example: two rows, the second padded (so the masked path is what gets traced)
    example = (0.1 * torch.randn(2, 16000), torch.tensor([16000, 11000]))
    outputs = ["sums", "squares", "frames"] if pool == "meanstd" else ["sums", "frames"]
    _export(graph, example, folder / AUDIO_GRAPH, ["waves", "lengths"], outputs,
            {"waves": {0: BATCH, 1: ("samples", MIN_SAMPLES, MAX_SAMPLES)}, "lengths": {0: BATCH}}, opset)
    if pool == "meanstd":
        pooling = ("per layer: mean, then population std (sqrt(max(E[h^2] - E[h]^2, 0))) over all real encoder "
                   "frames of a clip's windows, in float64 (audio.pool_moments)")
        described = {"sums": "[batch, layers, 384] float64, sum over the real encoder frames",
                     "squares": "[batch, layers, 384] float64, sum of squares over the real encoder frames",
                     "frames": "[batch] float32, real encoder frames"}
    else:
        pooling = "mean over all real encoder frames of a clip's windows (audio.pool_windows)"
        described = {"sums": "[batch, dim] float32, sum over the real encoder frames",
                     "frames": "[batch] float32, real encoder frames"}
    return {
        "spec": tower.spec, "dim": int(tower.dim), "sample_rate": SAMPLE_RATE,
        "front_end": "in the graph: WhisperFeatureExtractor's log-mels per row (n_fft %d, hop %d, %d mels)"
                     % (fe.n_fft, fe.hop_length, fe.feature_size),
        "windows": {"max_samples": MAX_SAMPLES, "min_samples": MIN_SAMPLES, "pool": pool, "pooling": pooling},
        "inputs": AUDIO_INPUTS,
        "outputs": described,
    }


def check_hf_audio(tower, where) -> None:
    """An ``hf:`` audio tower exports when its processor is a ``Wav2Vec2FeatureExtractor``."""
    from transformers import Wav2Vec2FeatureExtractor

    if type(tower.processor) is not Wav2Vec2FeatureExtractor:
        raise BadInputError(where, f"{SUPPORTED}; the audio tower {tower.spec!r} has a "
                            f"{type(tower.processor).__name__} (only Wav2Vec2FeatureExtractor is exported)")


def export_hf_audio(tower, folder: Path, opset: int) -> dict:
    """``audio.onnx`` for :class:`~smoothclap.towers.hf.HFAudioTower` (wav2vec2-like): waveforms ->
    per-clip normalisation (in the graph) -> model -> pooled features."""
    example = (0.1 * torch.randn(2, 16000), torch.tensor([16000, 11000]))
    _export(_HFAudioGraph(tower), example, folder / AUDIO_GRAPH, ["waves", "lengths"], ["features"],
            {"waves": {0: BATCH, 1: ("samples", 400, None)}, "lengths": {0: BATCH}}, opset)
    proc = tower.processor
    return {
        "spec": tower.spec, "dim": int(tower.dim), "sample_rate": 16000,
        "front_end": "in the graph: Wav2Vec2FeatureExtractor (do_normalize=%s, padding_value=%s)"
                     % (bool(getattr(proc, "do_normalize", True)), float(getattr(proc, "padding_value", 0.0))),
        "attention_mask": bool(getattr(proc, "return_attention_mask", False)), "pool": tower.pool,
        "inputs": AUDIO_INPUTS, "outputs": {"features": "[batch, dim] float32"},
    }


def check_hf_text(tower, where) -> None:
    """An ``hf:`` text tower exports when it has a fast tokenizer (``tokenizer.json``)."""
    if getattr(tower.tokenizer, "backend_tokenizer", None) is None:
        raise BadInputError(where, f"{SUPPORTED}; the text tower {tower.spec!r} has no fast tokenizer "
                            "(tokenizer.json)")


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


def export_hf_text(tower, folder: Path, opset: int) -> dict:
    """``text.onnx`` + ``tokenizer.json`` for :class:`~smoothclap.towers.hf.HFTextTower` (minilm-l6,
    e5-small, ``hf:`` BERT-like): token ids -> pooled features. Returns the ``text`` entry."""
    _write_tokenizer(tower, folder / TOKENIZER_JSON)
    token_types = "token_type_ids" in getattr(tower.tokenizer, "model_input_names", [])
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else [])
    ex = tower.tokenizer(["a happy voice", "this person is feeling very sad today."], padding=True,
                         truncation=True, max_length=tower.max_length, return_tensors="pt")
    max_pos = int(getattr(tower.model.config, "max_position_embeddings", 0) or 0) or None
    _export(_TextGraph(tower, token_types), tuple(ex[n] for n in names), folder / TEXT_GRAPH, names, ["features"],
            {n: {0: BATCH, 1: ("tokens", 1, max_pos)} for n in names}, opset)
    return {"spec": tower.spec, "dim": int(tower.dim), "tokenizer": TOKENIZER_JSON,
            "max_length": int(tower.max_length), "prefix": tower.prefix, "pool": tower.pool,
            "normalize": bool(tower.normalize), "inputs": names, "outputs": {"features": "[batch, text_dim]"}}


def export_heads(model, folder: Path, opset: int) -> dict:
    """``audio_head.onnx`` and ``text_head.onnx``; returns their ``preprocess.json`` entries."""
    cfg = model.config
    _export(_AudioHead(model), (torch.randn(2, cfg.audio_dim),), folder / AUDIO_HEAD_GRAPH, ["features"],
            ["embedding"], {"features": {0: BATCH}}, opset)
    _export(_TextHead(model), (torch.randn(2, cfg.text_dim),), folder / TEXT_HEAD_GRAPH, ["features"],
            ["embedding"], {"features": {0: BATCH}}, opset)
    unit = "[batch, embed_dim] float32, unit norm"
    return {"audio_head": {"graph": AUDIO_HEAD_GRAPH, "outputs": {"embedding": unit},
                           "inputs": {"features": "[batch, audio_dim] float32, normalised"},
                           "contains": "nuisance directions removed (model.nuisance_dims), input standardiser "
                           "(audio_mean, audio_std), head, L2 norm"},
            "text_head": {"graph": TEXT_HEAD_GRAPH, "inputs": {"features": "[batch, text_dim] float32"},
                          "outputs": {"embedding": unit}}}


Exporter = Callable[[object, Path, int], dict]


def _unsupported(where, kind: str, spec: str) -> BadInputError:
    return BadInputError(where, f"{SUPPORTED}; this model's {kind} tower is {spec!r}")


def _tower_exporter(model, kind: str, where) -> tuple[object, Exporter]:
    """(the model's ``kind`` tower, its exporter: the tower registry's export hook); BadInputError
    naming the tower when it has none (checked before the tower is built, e.g. openSMILE)."""
    from .towers import parse_spec
    from .towers.registry import entry

    spec = model.config.audio_tower if kind == "audio" else model.config.text_tower
    e = entry(parse_spec(spec)[0])
    export = e.export_hook(kind) if e is not None else None
    if export is None:
        raise _unsupported(where, kind, spec)
    tower = model.tower(kind)
    check = {export_hf_audio: check_hf_audio, export_hf_text: check_hf_text}.get(export)
    if check is not None:
        check(tower, where)
    return tower, export


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
    feeds = om.tower("text").tokenize(texts)
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
    out = replaceable_export(out_dir)
    model, where = _load_model(model_dir)
    model.eval()
    audio = _tower_exporter(model, "audio", where)
    text = _tower_exporter(model, "text", where)
    t0 = time.perf_counter()

    with atomic_folder(out) as tmp:
        meta = _write(tmp, model, audio, text, opset)
        if verify:
            meta["verified_max_abs_diff"] = _verify(tmp, model, text[0])
            (tmp / PREPROCESS_JSON).write_text(json.dumps(meta, indent=2, default=str))
    log.info("exported %s to %s (opset %d, %s exporter) in %.1f s", where, out, opset, meta["exporter"],
             time.perf_counter() - t0)
    return out


def _write(folder: Path, model, audio: tuple[object, Exporter], text: tuple[object, Exporter], opset: int) -> dict:
    """Every file of the export into ``folder``; returns what ``preprocess.json`` holds."""
    from . import __version__

    (audio_tower, export_audio), (text_tower, export_text) = audio, text
    arrays = {name: getattr(model, name).detach().cpu().numpy().astype(np.float32)
              for name in ("norm_mean", "norm_std", "neutral_offset", "neutral_scale", "audio_mean", "audio_std")}
    if getattr(model, "trained_clips", None) is not None:  # what evaluate refuses to score as zero-shot
        arrays["trained_clips"] = np.asarray(model.trained_clips, dtype=np.uint64)
    meta = {
        "format": FORMAT, "version": FORMAT_VERSION, "smoothclap": __version__, "torch": torch.__version__,
        "opset": opset, "exporter": "dynamo" if opset >= 18 else "torchscript",
        "config": model.config.to_dict(),
        "scale": float(model.scale.detach().cpu()),
        "embed_dim": int(model.config.embed_dim),
        "audio": {**export_audio(audio_tower, folder, opset), "graph": AUDIO_GRAPH},
        "text": {**export_text(text_tower, folder, opset), "graph": TEXT_GRAPH},
        **export_heads(model, folder, opset),
        "arrays": {k: list(v.shape) for k, v in arrays.items()},
    }
    np.savez(folder / PREPROCESS_NPZ, **arrays)
    if getattr(model, "caption_bins", None) is not None:
        meta["caption_bins"] = model.caption_bins
    (folder / PREPROCESS_JSON).write_text(json.dumps(meta, indent=2, default=str))
    return meta


__all__ = ["export_onnx", "export_whisper_audio", "export_hf_audio", "export_hf_text", "export_heads", "SUPPORTED"]
