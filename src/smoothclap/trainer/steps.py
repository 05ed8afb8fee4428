"""The interchangeable steps of the one training loop (:mod:`smoothclap.trainer.loop`).

A step knows where a batch's tower features come from and which parameters train; the loop does
everything else (batches, the loss on the batch structure, micro-batches, optimizer, checkpoints).

* :class:`CachedStep` (``train.mode: cached``, the default): one fixed frozen embedding per clip,
  computed once (the bundle); only the heads and the scale train. Each epoch is a few matrix
  products.
* :class:`EndToEndStep` (``train.mode: e2e``): the towers run inside the loop, giving

  - **random crops** of ``train.crop_seconds`` (the paper: 5 s), drawn per (seed, epoch, clip), so
    they do not depend on the number of processes or data-loader workers; clips shorter than the
    crop are used whole;
  - **unfrozen towers** (``towers.freeze_audio: false`` / ``freeze_text: false``; ``hf:`` towers and
    ``minilm-l6``) with their own learning rates (``towers.audio_lr`` / ``text_lr``). A frozen tower
    runs in eval mode under ``torch.no_grad`` with ``requires_grad=False``: it never receives
    gradients. A frozen text tower is not run at all: its caption embeddings are the cached ones;
  - **mixed precision** on CUDA (``train.precision``: auto = bf16 where supported, else fp16 with a
    gradient scaler); the loss is computed in fp32. On CPU this is a no-op (fp32).

  The soft targets' sources stay frozen: q_a2a uses the cached local-feature embeddings of the
  whole clip (by default the *initial* audio tower's, even when the audio tower is being
  fine-tuned), q_t2t the cached description embeddings. With ``model.feature_norm_group`` the
  features of each crop are normalised with its group's training statistics.
"""
from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch
from torch import nn

from ..audio import read_audio
from ..normalize import group_codes, is_row_source, moments


log = logging.getLogger("smoothclap")


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``train.precision`` on ``device``; None = full fp32 (always on CPU)."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def random_crop(wave: np.ndarray, crop_samples: int | None, rng: np.random.Generator) -> np.ndarray:
    """A random window of ``crop_samples`` samples (the whole clip when it is not longer)."""
    if crop_samples is None or len(wave) <= crop_samples:
        return wave
    start = int(rng.integers(0, len(wave) - crop_samples + 1))
    return wave[start : start + crop_samples]


class CropDataset(torch.utils.data.Dataset):
    """Key ``(epoch, i)`` -> ``(i, crop of clip i)``; the crop depends only on (seed, epoch, i)."""

    def __init__(self, files, sample_rate: int, crop_seconds: float | None, seed: int, loudness: str | None = None):
        self.files = [str(f) for f in files]
        self.sample_rate = sample_rate
        self.crop = None if crop_seconds is None else int(round(crop_seconds * sample_rate))
        self.seed = seed
        self.loudness = loudness

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key):
        epoch, i = key
        wave = read_audio(self.files[i], sample_rate=self.sample_rate, loudness=self.loudness)
        return i, random_crop(wave, self.crop, np.random.default_rng([self.seed, epoch, i]))


def _collate(items):
    return items


class HeadsNet(nn.Module):
    """What DDP wraps: (audio input, text input) -> ``(z_a [b, d], z_t [b, d], scale)``.

    ``audio_in`` is normalised features ``[b, audio_dim]``, or waveforms when the audio tower trains
    (then ``audio_norm`` ``(mean [b, audio_dim], std [b, audio_dim])`` normalises its output);
    ``text_in`` is text features ``[b, text_dim]``, or strings when the text tower trains.
    """

    def __init__(self, model, audio_tower=None, text_tower=None):
        super().__init__()
        self.model = model
        self.audio_tower = audio_tower
        self.text_tower = text_tower

    def forward(self, audio_in, text_in, audio_norm=None):
        fa = self.audio_tower.forward_waves(audio_in) if self.audio_tower is not None else audio_in
        if audio_norm is not None:
            fa = (fa.float() - audio_norm[0]) / audio_norm[1]
        ft = self.text_tower.forward_texts(text_in) if self.text_tower is not None else text_in
        return self.model.project_audio(fa), self.model.encode_text_features(ft), self.model.scale


def resident(x, as_float32: bool = False):
    """An in-memory array as a tensor (sharing its memory), a row source
    (:class:`~smoothclap.normalize.RowSource`: rows read on demand) as it is."""
    if is_row_source(x):
        return x
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32) if as_float32 else x)


def gather(x, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` of a tensor, or of a row source (only those rows are read): the same values."""
    if isinstance(x, torch.Tensor):
        return x[idx]
    return torch.from_numpy(np.ascontiguousarray(x[idx.cpu().numpy()], dtype=np.float32))


class CachedStep:
    """Heads and scale on the bundle's cached features (normalised once by the model). Features
    and caption embeddings held in memory are tensors indexed per batch; a memory-flat bundle's
    (row sources, :mod:`smoothclap.trainer.mapped`) are read per batch, only the batch's rows."""

    find_unused = False
    amp = None

    def __init__(self, cfg, prepared, model, features, env):
        self.cfg, self.prepared, self.model, self.env = cfg, prepared, model, env
        self.device = env.device
        self.audio = resident(features, as_float32=True)
        self.cap_emb = resident(prepared.caption_emb)
        self.net = HeadsNet(model)

    def param_groups(self) -> list[dict]:
        return [{"params": [p for p in self.model.parameters() if p.requires_grad], "lr": self.cfg.train.lr}]

    def loader(self, epoch: int, batches):
        return iter([None] * len(batches))

    def inputs(self, epoch: int, mine: torch.Tensor, cap: torch.Tensor, data, chunks=None) -> tuple:
        """(audio input ``[b, audio_dim]``, text input ``[b, text_dim]``, None) of this process's clips."""
        return gather(self.audio, mine).to(self.device), gather(self.cap_emb, cap).to(self.device), None

    def autocast(self):
        return contextlib.nullcontext()

    def set_train(self) -> None:
        self.model.train()

    def state(self) -> dict:
        return {}

    def load(self, towers: dict) -> None:
        pass

    def finish(self) -> None:
        pass


class EndToEndStep:
    """Towers in the loop (see the module docstring)."""

    def __init__(self, cfg, prepared, model, features, env):
        from ..towers import build_tower

        self.cfg, self.prepared, self.model, self.env = cfg, prepared, model, env
        dev = self.device = env.device
        tc, tr = cfg.towers, cfg.train
        self.train_audio, self.train_text = not tc.freeze_audio, not tc.freeze_text
        self.audio_tower = self.text_tower = None
        if self.train_audio or tr.crop_seconds is not None:
            self.audio_tower = build_tower(tc.audio, device=str(dev), shared=not self.train_audio)
        if self.train_text:
            self.text_tower = build_tower(tc.text, device=str(dev), shared=False)
        for kind, tower, trains in (("audio", self.audio_tower, self.train_audio),
                                    ("text", self.text_tower, self.train_text)):
            if tower is None:
                continue
            if trains and not getattr(tower, "trainable", False):
                raise ValueError(f"towers.freeze_{kind}: false needs an hf: tower (or minilm-l6), "
                                 f"got {tower.spec!r}")
            tower.requires_grad_(trains)
            tower.train(trains)
            # the model owns its towers; evaluation during training uses them on the training device
            model.set_tower(kind, tower, trainable=trains)
        if self.audio_tower is not None and self.audio_tower.sample_rate != 16000:
            raise ValueError(f"{tc.audio}: e2e training expects a 16 kHz audio tower")
        self.net = HeadsNet(model, self.audio_tower if self.train_audio else None,
                            self.text_tower if self.train_text else None)
        self.find_unused = bool(model.trainable_towers)
        self.amp = amp_dtype(tr.precision, dev)
        if tr.precision in ("bf16", "fp16") and dev.type != "cuda":
            log.info("train.precision=%s is ignored on %s (fp32)", tr.precision, dev)
        self.audio_feats = resident(features, as_float32=True)
        self.cap_emb = resident(prepared.caption_emb)
        # normalisation statistics of the tower's output: each group's, from training features
        # (normalize.group_stats), as float32 per group and each clip's group
        self.norm = None
        if model.config.feature_norm_group and self.audio_tower is not None:
            from ..normalize import EPS
            from .bundle import norm_groups

            _, codes = group_codes(norm_groups(cfg, prepared))
            mean, std = moments(prepared.audio, codes)
            self.norm = (torch.from_numpy(mean.astype(np.float32)),
                         torch.from_numpy(np.maximum(std, EPS).astype(np.float32)), torch.from_numpy(codes))
        self.dataset = CropDataset(prepared.table["file"].astype(str).tolist(), 16000, tr.crop_seconds, tr.seed,
                                   loudness=model.config.loudness)

    def param_groups(self) -> list[dict]:
        tc, tr = self.cfg.towers, self.cfg.train
        groups = [{"params": [p for p in self.model.parameters() if p.requires_grad], "lr": tr.lr}]
        if self.train_audio:
            groups.append({"params": list(self.audio_tower.parameters()), "lr": tc.audio_lr})
        if self.train_text:
            groups.append({"params": list(self.text_tower.parameters()), "lr": tc.text_lr})
        return groups

    @property
    def needs_audio(self) -> bool:
        """Whether the audio tower runs (else the cached whole-clip features are used)."""
        return self.audio_tower is not None

    def loader(self, epoch: int, batches: list[torch.Tensor]):
        """Iterator over this process's crops for ``batches``: one list of waveforms per batch."""
        from .distributed import local_slice

        if not self.needs_audio:
            return iter([None] * len(batches))
        keys = [[(epoch, int(i)) for i in local_slice(idx, self.env)[0]] for idx in batches]
        nw = self.cfg.train.num_workers
        dl = torch.utils.data.DataLoader(self.dataset, batch_sampler=keys, num_workers=nw, collate_fn=_collate,
                                         prefetch_factor=2 if nw > 0 else None)
        return ([w for _, w in items] for items in dl)

    def crops(self, epoch: int, mine: torch.Tensor) -> list[np.ndarray]:
        """Crops of clips ``mine`` (no data loader)."""
        return [self.dataset[(epoch, int(i))][1] for i in mine]

    def inputs(self, epoch: int, mine: torch.Tensor, cap: torch.Tensor, waves, chunks=None) -> tuple:
        """(audio input, text input, audio normalisation) of this process's clips ``mine``: frozen
        towers run here once, without gradients, one micro-batch (``chunks``: index tensors into
        ``mine``) at a time."""
        dev = self.device
        if self.needs_audio and waves is None:
            waves = self.crops(epoch, mine)
        if self.norm is not None:
            g = self.norm[2][mine]
            norm = (self.norm[0][g].to(dev), self.norm[1][g].to(dev))
        else:
            norm = None
        if self.train_audio:
            audio_in = list(waves)
        elif self.needs_audio:
            chunks = chunks if chunks is not None else [torch.arange(len(waves))]
            with torch.no_grad(), self.autocast():
                fa = torch.cat([self.audio_tower.forward_waves([waves[k] for k in c.tolist()]).float()
                                for c in chunks])
            audio_in = fa if norm is None else (fa - norm[0]) / norm[1]
            norm = None
        else:
            audio_in = gather(self.audio_feats, mine).to(dev)
        if self.train_text:
            text_in = [self.prepared.caption_texts[int(c)] for c in cap]
        else:
            text_in = gather(self.cap_emb, cap).to(dev)
        return audio_in, text_in, norm

    def autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def set_train(self) -> None:
        self.model.train()
        if self.audio_tower is not None:
            self.audio_tower.train(self.train_audio)
        if self.text_tower is not None:
            self.text_tower.train(self.train_text)

    def state(self) -> dict:
        st = {}
        if self.train_audio:
            st["audio"] = self.audio_tower.state_dict()
        if self.train_text:
            st["text"] = self.text_tower.state_dict()
        return st

    def load(self, towers: dict) -> None:
        if "audio" in towers:
            self.audio_tower.load_state_dict(towers["audio"])
        if "text" in towers:
            self.text_tower.load_state_dict(towers["text"])

    def finish(self) -> None:
        """Training over: towers to eval mode, no gradients; fine-tuned towers to the CPU, frozen
        ones released (rebuilt lazily from their spec when needed)."""
        for kind, tower in (("audio", self.audio_tower), ("text", self.text_tower)):
            if tower is None:
                continue
            tower.requires_grad_(False)
            tower.eval()
            if kind in self.model.trainable_towers:
                tower.to("cpu")
                tower.device = "cpu"
            else:
                self.model.release_tower(kind)
