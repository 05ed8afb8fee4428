"""Zero-shot inference from an ONNX export, without PyTorch (``smoothclap classify --backend onnx``).

An export (:func:`smoothclap.export.export_onnx`, ``smoothclap export --format onnx``) is a folder:

==================  ==================================================================================
``audio.onnx``      the audio tower and its pooling. whisper-tiny-en: ``mels`` ``[B, 80, T]`` float32
                    (log-mels zero-padded to the longest row, T <= 3000) + ``n_frames`` ``[B]`` int64
                    (real mel frames per row) -> ``features`` ``[B, audio_dim]`` (mean over the real
                    encoder frames). ``hf:`` wav2vec2-like towers: ``waves`` ``[B, S]`` float32 (the
                    feature extractor's output, zero-padded) + ``lengths`` ``[B]`` int64 -> ``features``.
``audio_head.onnx`` ``features`` ``[B, audio_dim]`` (after feature normalisation) -> ``embedding``
                    ``[B, embed_dim]``: input standardiser, ParaCLAP head, L2 norm.
``text.onnx``       ``input_ids``, ``attention_mask`` (+ ``token_type_ids`` where the tokenizer makes
                    them) ``[B, L]`` int64 -> ``features`` ``[B, text_dim]`` (the tower's pooling and,
                    for minilm-l6, its L2 norm).
``text_head.onnx``  ``features`` ``[B, text_dim]`` -> ``embedding`` ``[B, embed_dim]`` (head, L2 norm).
``tokenizer.json``  the text tower's tokenizer (``tokenizers`` library) with its truncation and padding.
``preprocess.json`` what runs around the graphs: the model's config (loudness, feature
                    normalisation), the logit scale, the front end's settings, graph inputs/outputs.
``preprocess.npz``  arrays: the mel filter bank and STFT window, the training statistics of feature
                    normalisation (``norm_mean``, ``norm_std``), the input standardiser.
==================  ==================================================================================

Batch and length axes are dynamic. What runs here in numpy mirrors the PyTorch path step by step:
loudness levelling, Whisper's log-mel front end (``transformers.WhisperFeatureExtractor``: reflect-
padded periodic-Hann STFT, n_fft 400, hop 160, Slaney mel bank, log10, 8-decade floor below the
clip's maximum, ``(x + 4) / 4``), computed per clip and per 30 s window; clips over 30 s split into
``ceil(T / 30 s)`` near-equal windows pooled over all their real frames; per-group feature
normalisation; template-averaged label embeddings; scaled cosine; softmax.

This module imports no PyTorch and no transformers (only numpy, onnxruntime, tokenizers, soundfile,
soxr, pandas and torch-free parts of smoothclap), so ``import smoothclap.onnx_runtime`` works in a
deployment without them.
"""
from __future__ import annotations

import json
import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np

from .audio import SAMPLE_RATE, header_seconds, normalize_loudness, read_audio, split_windows
from .classification import Classification
from .errors import BadInputError, SkipLog
from .normalize import normalize_groups
from .prompts import TEMPLATE_SETS, parse_labels, resolve_templates  # noqa: F401 - re-exported

log = logging.getLogger("smoothclap")

FORMAT = "smoothclap-onnx"
FORMAT_VERSION = 1
PREPROCESS_JSON = "preprocess.json"
PREPROCESS_NPZ = "preprocess.npz"
TOKENIZER_JSON = "tokenizer.json"
AUDIO_GRAPH = "audio.onnx"
AUDIO_HEAD_GRAPH = "audio_head.onnx"
TEXT_GRAPH = "text.onnx"
TEXT_HEAD_GRAPH = "text_head.onnx"
GRAPHS = (AUDIO_GRAPH, AUDIO_HEAD_GRAPH, TEXT_GRAPH, TEXT_HEAD_GRAPH)
#: What ``audio.onnx`` takes: Whisper log-mels computed here, or (wav2vec2-like) waveforms.
AUDIO_KINDS = ("whisper-log-mel", "waveform")

#: Upper bound on worker threads that each run whole audio batches (as ``smoothclap.embed``).
MAX_WORKERS = 4
TEXT_BATCH = 64


# -- Whisper front end in numpy ---------------------------------------------------------------------
def whisper_windows(wave: np.ndarray, max_samples: int, min_samples: int) -> list[np.ndarray]:
    """The windows ``WhisperTinyEnTower`` encodes (:func:`smoothclap.audio.split_windows`)."""
    return split_windows(wave, max_samples, min_samples, what="whisper-tiny-en")


def whisper_log_mel(wave: np.ndarray, mel_filters: np.ndarray, window: np.ndarray, hop: int = 160,
                    floor: float = 1e-10, dynamic_range: float = 8.0, offset: float = 4.0,
                    divisor: float = 4.0) -> np.ndarray:
    """One clip ``[S]`` -> log-mel ``[n_mels, S // hop]`` float32, as ``WhisperFeatureExtractor``
    (``padding="longest"``, one clip): centred STFT with reflect padding, power spectrum, mel bank
    ``mel_filters`` ``[n_fft // 2 + 1, n_mels]``, log10 floored at ``floor`` and at ``dynamic_range``
    below the clip's maximum, then ``(x + offset) / divisor``; the last STFT frame is dropped.
    Computed in float32, as the extractor's torch path (max |difference| about 2e-5 on real clips)."""
    n_fft = len(window)
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    n = x.size // hop
    x = np.pad(x, n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop][:n]
    spec = np.fft.rfft(frames * window, axis=-1)
    power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
    # einsum without BLAS: a multithreaded BLAS call this small is slow on a busy machine (and
    # competes with onnxruntime's threads); this loop is ~0.5 ms per clip
    mel = np.einsum("fb,bm->fm", power, mel_filters, optimize=False)
    lg = np.log10(np.maximum(mel, floor))
    lg = np.maximum(lg, lg.max() - dynamic_range)
    return np.ascontiguousarray(((lg + offset) / divisor).T, dtype=np.float32)


# -- wav2vec2-like front end in numpy ---------------------------------------------------------------
def zero_mean_unit_var(wave: np.ndarray) -> np.ndarray:
    """``Wav2Vec2FeatureExtractor``'s per-clip normalisation (float32, over the real samples)."""
    v = np.asarray(wave, dtype=np.float32)
    return (v - v.mean()) / np.sqrt(v.var() + 1e-7)


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _l2(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` divided by their norm (as ``torch.nn.functional.normalize``)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class OnnxModel:
    """A smoothclap model from its ONNX export: the same zero-shot interface as
    :class:`smoothclap.model.SmoothClapModel` where it matters (``config``, ``scale``,
    ``embed_audio``, ``embed_files``, ``embed_text``, ``file_features``,
    ``normalize_audio_features``, ``encode_audio_features``, ``encode_text_features``), on numpy
    arrays. Load with :meth:`load`.

    Threads: ``workers`` audio batches run at once, each in its own thread with ``threads //
    workers`` onnxruntime intra-op threads (default ``workers = min(threads, 4)``, ``threads`` =
    the CPUs this process may use), as the PyTorch extraction pipeline does; reading and the
    numpy front end of a batch run in its worker, so they overlap the other workers' forwards.
    """

    def __init__(self, folder: Path, meta: dict, arrays: dict[str, np.ndarray], sessions: dict, tokenizer,
                 threads: int, workers: int):
        self.folder = folder
        self.meta = meta
        self.config = SimpleNamespace(**meta["config"])
        self.scale = float(meta["scale"])
        self.arrays = arrays
        self.sessions = sessions
        self.tokenizer = tokenizer
        self.threads, self.workers = threads, workers
        self.audio = meta["audio"]
        self.text = meta["text"]
        self.audio_dim = int(self.audio["dim"])
        self.text_dim = int(self.text["dim"])
        self.embed_dim = int(meta["embed_dim"])
        self.caption_bins = meta.get("caption_bins")

    # -- loading ---------------------------------------------------------------------------------------
    @classmethod
    def load(cls, export_dir: str | os.PathLike, *, threads: int | None = None, workers: int | None = None,
             intra_op_threads: int | None = None, providers: Sequence[str] | None = None) -> "OnnxModel":
        """Load an export folder. ``threads``: CPU threads in all (default: the CPUs this process
        may use); ``workers``: audio batches at once (default ``min(threads, 4)``; 1 = one batch at
        a time over all threads); ``intra_op_threads``: onnxruntime threads of the audio graph
        (default ``threads // workers``); ``providers``: onnxruntime execution providers (default CPU)."""
        folder = Path(export_dir).expanduser()
        if not folder.is_dir():
            raise BadInputError(folder, "ONNX export folder not found" if not folder.exists() else "not a folder")
        pre = folder / PREPROCESS_JSON
        if not pre.exists():
            raise BadInputError(folder, f"not a smoothclap ONNX export (no {PREPROCESS_JSON}; write one with "
                                "'smoothclap export --model DIR --format onnx --out DIR')")
        try:
            meta = json.loads(pre.read_text())
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError(f"format is not {FORMAT!r}")
        except (ValueError, TypeError) as e:
            raise BadInputError(pre, f"corrupted export description ({e})") from None
        if int(meta.get("version", 0)) > FORMAT_VERSION:
            raise BadInputError(pre, f"export format version {meta.get('version')} is newer than this smoothclap "
                                f"reads ({FORMAT_VERSION}); upgrade smoothclap")
        kind = meta.get("audio", {}).get("kind")
        if kind not in AUDIO_KINDS:
            raise BadInputError(pre, f"unknown audio front end {kind!r} (known: {', '.join(AUDIO_KINDS)})")
        try:
            with np.load(folder / PREPROCESS_NPZ, allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k]) for k in z.files}
        except (OSError, ValueError) as e:
            raise BadInputError(folder / PREPROCESS_NPZ, f"missing or corrupted arrays ({e})") from None
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("the ONNX backend needs onnxruntime: pip install 'smoothclap[onnx]'") from e
        try:
            from tokenizers import Tokenizer
        except ImportError as e:  # pragma: no cover
            raise ImportError("the ONNX backend needs tokenizers: pip install tokenizers") from e
        total = max(1, int(threads) if threads else _cpu_count())
        workers = max(1, min(int(workers), total) if workers else min(total, MAX_WORKERS))
        per = max(1, int(intra_op_threads) if intra_op_threads else total // workers)
        providers = list(providers) if providers else ["CPUExecutionProvider"]

        def session(name: str, intra: int):
            path = folder / name
            if not path.exists():
                raise BadInputError(path, "not found (incomplete ONNX export)")
            so = ort.SessionOptions()
            so.intra_op_num_threads = intra
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.log_severity_level = 3
            if intra > 1:  # don't spin in barriers on a shared machine (see smoothclap.embed)
                so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            try:
                return ort.InferenceSession(str(path), sess_options=so, providers=providers)
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
                raise BadInputError(path, f"corrupted ONNX graph ({e.__class__.__name__}: "
                                    f"{str(e).splitlines()[0] if str(e) else ''})") from None

        sessions = {AUDIO_GRAPH: session(AUDIO_GRAPH, per), AUDIO_HEAD_GRAPH: session(AUDIO_HEAD_GRAPH, 1),
                    TEXT_GRAPH: session(TEXT_GRAPH, total), TEXT_HEAD_GRAPH: session(TEXT_HEAD_GRAPH, 1)}
        tok_path = folder / meta["text"].get("tokenizer", TOKENIZER_JSON)
        try:
            tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as e:  # noqa: BLE001 - tokenizers raises its own exception types
            raise BadInputError(tok_path, f"missing or corrupted tokenizer ({e})") from None
        return cls(folder, meta, arrays, sessions, tokenizer, total, workers)

    def eval(self) -> "OnnxModel":  # the zero-shot callers of the torch path call it
        return self

    # -- audio: waveforms -> raw tower features -----------------------------------------------------
    def _audio_segments(self, waves: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
        a = self.audio
        if a["kind"] != "whisper-log-mel":
            return [np.asarray(w, dtype=np.float32).reshape(-1) for w in waves], list(range(len(waves)))
        segs, owner = [], []
        filt, win = self.arrays["mel_filters"], self.arrays["mel_window"]
        for i, w in enumerate(waves):
            for seg in whisper_windows(w, a["max_samples"], a["min_samples"]):
                segs.append(whisper_log_mel(seg, filt, win, a["hop_length"], a["log_floor"], a["dynamic_range"],
                                            a["offset"], a["divisor"]))
                owner.append(i)
        return segs, owner

    def _run_audio(self, segs: list[np.ndarray]) -> np.ndarray:
        """Segments (log-mels or waveforms) -> pooled features ``[S, dim]`` of one padded batch."""
        sess = self.sessions[AUDIO_GRAPH]
        if self.audio["kind"] == "whisper-log-mel":
            lens = np.array([m.shape[1] for m in segs], dtype=np.int64)
            mels = np.zeros((len(segs), segs[0].shape[0], int(lens.max())), dtype=np.float32)
            for j, m in enumerate(segs):
                mels[j, :, : m.shape[1]] = m
            return sess.run(["features"], {"mels": mels, "n_frames": lens})[0]
        lens = np.array([len(w) for w in segs], dtype=np.int64)
        x = np.full((len(segs), int(lens.max())), float(self.audio.get("padding_value", 0.0)), dtype=np.float32)
        for j, w in enumerate(segs):
            x[j, : len(w)] = zero_mean_unit_var(w) if self.audio.get("do_normalize", True) else w
        return sess.run(["features"], {"waves": x, "lengths": lens})[0]

    def _features(self, waves: Sequence[np.ndarray], max_batch: int = 16) -> np.ndarray:
        """Waveforms (loudness already applied) -> raw tower features ``[B, audio_dim]`` float32."""
        if not len(waves):
            return np.zeros((0, self.audio_dim), dtype=np.float32)
        segs, owner = self._audio_segments(waves)
        if len(segs) == len(waves):  # no long clip: one window per clip, one batch
            return self._run_audio(segs).astype(np.float32)
        # Windows are independent (masked), so a long clip's 30 s windows run in batches of their own
        # length instead of padding every short clip of the batch to 30 s.
        order = sorted(range(len(segs)), key=lambda j: segs[j].shape[-1])
        per_seg = np.zeros((len(segs), self.audio_dim), dtype=np.float32)
        step = max(1, int(max_batch))
        for b in range(0, len(order), step):
            idx = order[b : b + step]
            per_seg[idx] = self._run_audio([segs[j] for j in idx])
        # a long clip: mean over all real encoder frames of all its windows
        counts = np.array([(m.shape[1] + 1) // 2 for m in segs], dtype=np.float64)
        tot = np.zeros((len(waves), self.audio_dim), dtype=np.float64)
        cnt = np.zeros(len(waves), dtype=np.float64)
        np.add.at(tot, owner, per_seg.astype(np.float64) * counts[:, None])
        np.add.at(cnt, owner, counts)
        return (tot / np.maximum(cnt, 1.0)[:, None]).astype(np.float32)

    def tower_features(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """B mono 16 kHz waveforms -> raw audio-tower features ``[B, audio_dim]`` (loudness applied)."""
        mode = getattr(self.config, "loudness", None)
        waves = [np.asarray(w, dtype=np.float32) for w in waves]
        if mode not in (None, "none"):
            waves = [normalize_loudness(w, mode) for w in waves]
        return self._features(waves)

    def file_features(self, files: Sequence[str], *, batch_size: int = 16, skip: SkipLog | None = None,
                      progress: bool = False, desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw audio-tower features of files: ``([N, audio_dim]`` float32 with NaN rows for skipped
        files, ``ok [N])``. Files are sorted by header duration and batched (``batch_size``) so a
        batch holds clips of near-equal length; ``workers`` batches run at once. Bad files raise
        :class:`BadInputError` (in length order, as the PyTorch path) unless ``skip.skip``."""
        skip = skip if skip is not None else SkipLog(skip=False)
        files = [str(f) for f in files]
        n = len(files)
        out = np.full((n, self.audio_dim), np.nan, dtype=np.float32)
        ok = np.zeros(n, dtype=bool)
        members: dict[str, list[int]] = {}  # a file named twice is computed once
        for i, f in enumerate(files):
            members.setdefault(f, []).append(i)
        todo = [g[0] for g in members.values()]
        if not todo:
            return out, ok
        todo.sort(key=lambda i: header_seconds(files[i]))
        batch_size = max(1, int(batch_size))
        batches = [todo[b : b + batch_size] for b in range(0, len(todo), batch_size)]
        loud = getattr(self.config, "loudness", None)

        def work(batch):
            idx, waves, errs = [], [], []
            for i in batch:
                try:
                    waves.append(read_audio(files[i], sample_rate=SAMPLE_RATE, loudness=loud))
                    idx.append(i)
                except BadInputError as e:
                    errs.append((i, e))
            return idx, self._features(waves, batch_size), errs

        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc=desc or "audio (onnx)", unit="clip")
        ex = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="smoothclap-onnx")
        pending: deque = deque()
        it = iter(batches)
        try:
            for b in it:
                pending.append(ex.submit(work, b))
                if len(pending) > self.workers:
                    break
            while pending:
                idx, feats, errs = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(ex.submit(work, nxt))
                for i, err in errs:
                    for j in members[files[i]]:
                        skip.handle(err if j == i else BadInputError(files[j], err.reason))
                for i, v in zip(idx, feats):
                    if not np.all(np.isfinite(v)):
                        for j in members[files[i]]:
                            skip.handle(BadInputError(files[j], f"{self.audio['spec']} produced non-finite features"))
                        continue
                    for j in members[files[i]]:
                        out[j], ok[j] = v, True
                if bar is not None:
                    bar.update(sum(len(members[files[i]]) for i in idx) + sum(len(members[files[i]]) for i, _ in errs))
        finally:
            for f in pending:
                f.cancel()
            ex.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar.close()
        return out, ok

    # -- audio: feature normalisation and head ------------------------------------------------------
    def normalize_audio_features(self, raw, groups: Sequence | np.ndarray | None = None) -> np.ndarray:
        """Raw tower features ``[N, audio_dim]`` -> normalised features (see
        :meth:`smoothclap.model.SmoothClapModel.normalize_audio_features`: per-group z-score for
        groups of at least ``config.min_group_clips`` clips, the stored training statistics for
        smaller groups and when ``groups`` is None; unchanged without ``config.feature_norm_group``)."""
        x = np.asarray(raw, dtype=np.float32)
        if not self.config.feature_norm_group:
            return x
        return normalize_groups(x, groups, self.config.min_group_clips, self.arrays["norm_mean"], self.arrays["norm_std"])

    def project_audio(self, x: np.ndarray) -> np.ndarray:
        """Normalised features ``[B, audio_dim]`` -> ``[B, embed_dim]`` unit norm (standardiser + head)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not len(x):
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self.sessions[AUDIO_HEAD_GRAPH].run(["embedding"], {"features": x})[0]

    def encode_audio_features(self, raw, groups=None) -> np.ndarray:
        """Raw audio-tower features ``[B, audio_dim]`` (+ optional groups ``[B]``) -> ``[B, embed_dim]``."""
        return self.project_audio(self.normalize_audio_features(raw, groups))

    def embed_audio(self, waves: Sequence[np.ndarray], groups=None) -> np.ndarray:
        """B mono 16 kHz waveforms (+ optional groups ``[B]``) -> ``[B, embed_dim]`` unit-norm embeddings."""
        return self.encode_audio_features(self.tower_features(list(waves)), groups)

    def embed_files(self, files: Sequence[str], groups=None, *, batch_size: int = 16, skip: SkipLog | None = None,
                    progress: bool = False, desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Audio files (+ optional groups ``[N]``) -> (``[N, embed_dim]`` float32 with NaN rows for
        skipped files, ok ``[N]``); the groups of the files read feed the feature normalisation."""
        raw, ok = self.file_features(files, batch_size=batch_size, skip=skip, progress=progress, desc=desc)
        keep = np.flatnonzero(ok)
        if not len(keep):
            return np.full((len(ok), 1), np.nan, dtype=np.float32), ok
        g = None if groups is None else np.asarray(list(groups), dtype=object)[keep]
        z = self.encode_audio_features(raw[keep], g)
        out = np.full((len(ok), z.shape[1]), np.nan, dtype=np.float32)
        out[keep] = z
        return out, ok

    # -- text -----------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """B strings -> the text graph's inputs (``[B, L]`` int64, padded to the longest, truncated
        at the tower's ``max_length``)."""
        prefix = self.text.get("prefix", "")
        enc = self.tokenizer.encode_batch([prefix + t for t in texts])
        feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
        if "token_type_ids" in self.text["inputs"]:
            feeds["token_type_ids"] = np.array([e.type_ids for e in enc], dtype=np.int64)
        return feeds

    def text_features(self, texts: Sequence[str], batch_size: int = TEXT_BATCH) -> np.ndarray:
        """B strings -> text-tower features ``[B, text_dim]`` (each distinct string once; batches of
        similar length)."""
        texts = list(texts)
        uniq = sorted(dict.fromkeys(texts), key=len)
        table: dict[str, np.ndarray] = {}
        for b in range(0, len(uniq), max(1, int(batch_size))):
            chunk = uniq[b : b + batch_size]
            feats = self.sessions[TEXT_GRAPH].run(["features"], self.tokenize(chunk))[0]
            table.update(zip(chunk, feats))
        if not texts:
            return np.zeros((0, self.text_dim), dtype=np.float32)
        return np.stack([table[t] for t in texts]).astype(np.float32)

    def encode_text_features(self, feats) -> np.ndarray:
        """Text-tower features ``[B, text_dim]`` -> ``[B, embed_dim]`` unit norm."""
        x = np.ascontiguousarray(feats, dtype=np.float32)
        if not len(x):
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self.sessions[TEXT_HEAD_GRAPH].run(["embedding"], {"features": x})[0]

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """B strings -> ``[B, embed_dim]`` unit-norm embeddings."""
        return self.encode_text_features(self.text_features(texts))


# -- zero-shot classification -------------------------------------------------------------------------
class OnnxZeroShotClassifier:
    """:class:`smoothclap.zeroshot.ZeroShotClassifier` on an :class:`OnnxModel` (numpy arrays):
    label prompts embedded once (template average, renormalised), logits = scale * cosine."""

    def __init__(self, model: OnnxModel, labels: Sequence[str], prompts: dict[str, str] | None = None,
                 templates: str | Sequence[str] | None = None):
        self.model = model
        self.labels = list(labels)
        self.prompts = {lab: (prompts or {}).get(lab, lab) for lab in self.labels}
        self.templates = resolve_templates(templates)
        self.texts = [[t.format(label=self.prompts[lab]) for t in self.templates] for lab in self.labels]
        flat = [t for group in self.texts for t in group]
        z = model.embed_text(flat).reshape(len(self.labels), len(self.templates), -1).mean(1)
        self.label_embeddings = _l2(z).astype(np.float32)

    def logits(self, z_audio: np.ndarray) -> np.ndarray:
        """Audio embeddings ``[N, d]`` (unit norm) -> logits ``[N, C]``."""
        return (np.float32(self.model.scale) * np.asarray(z_audio, dtype=np.float32)) @ self.label_embeddings.T

    def _result(self, z_audio: np.ndarray) -> tuple[list[str], np.ndarray]:
        lg = self.logits(z_audio).astype(np.float64)
        e = np.exp(lg - lg.max(1, keepdims=True))
        probs = (e / e.sum(1, keepdims=True)).astype(np.float32)
        return [self.labels[i] for i in probs.argmax(1)], probs

    def predict_features(self, audio_features, groups=None) -> tuple[list[str], np.ndarray]:
        """Raw audio-tower features ``[N, audio_dim]`` -> (labels ``[N]``, probabilities ``[N, C]``)."""
        return self._result(self.model.encode_audio_features(audio_features, groups))

    def predict(self, waves, groups=None) -> tuple[list[str], np.ndarray]:
        """Mono 16 kHz waveforms -> (labels ``[N]``, probabilities ``[N, C]``)."""
        return self._result(self.model.embed_audio(list(waves), groups))

    def predict_files(self, files: Sequence[str], groups=None, *, batch_size: int = 16, skip=None,
                      progress: bool = False) -> tuple[list[str | None], np.ndarray, np.ndarray]:
        """Files -> (labels with None for skipped files, probabilities with NaN rows, ok ``[N]``)."""
        z, ok = self.model.embed_files(list(files), groups, batch_size=batch_size, skip=skip, progress=progress,
                                       desc="classify (onnx)")
        probs = np.full((len(ok), len(self.labels)), np.nan, dtype=np.float32)
        preds: list[str | None] = [None] * len(ok)
        keep = np.flatnonzero(ok)
        if len(keep):
            p_keep, pr = self._result(z[keep])
            probs[keep] = pr
            for i, lab in zip(keep, p_keep):
                preds[i] = lab
        return preds, probs, ok


def classify_files(model, files: Sequence[str], labels: Sequence[str], *, groups=None, prompts=None,
                   templates=None, batch_size: int = 16, skip_bad: bool = False,
                   progress: bool = False) -> Classification:
    """Rank free-text ``labels`` for each audio file with an ONNX export (``smoothclap classify
    --backend onnx``): the same table as :func:`smoothclap.zeroshot.classify_files`.

    ``model``: an :class:`OnnxModel` or an export folder. ``groups`` ``[N]`` (speaker or corpus per
    file, optional) feeds the model's feature normalisation. Bad files raise unless ``skip_bad``.
    """
    import pandas as pd

    if not isinstance(model, OnnxModel):
        model = OnnxModel.load(model)
    files = [str(f) for f in files]
    if groups is not None and len(groups) != len(files):
        raise BadInputError("groups", f"{len(groups)} groups for {len(files)} files (one per file)")
    skip = SkipLog(skip=skip_bad)
    clf = OnnxZeroShotClassifier(model, labels, prompts=prompts, templates=templates)
    preds, probs, ok = clf.predict_files(files, groups, batch_size=batch_size, skip=skip, progress=progress)
    df = pd.DataFrame({"file": files, "group": list(groups) if groups is not None else None, "pred": preds})
    for j, lab in enumerate(clf.labels):
        df[f"p_{lab}"] = probs[:, j]
    return Classification(table=df, labels=clf.labels, skipped=skip)


def load_model(export_dir, **kw) -> OnnxModel:
    """:meth:`OnnxModel.load` (the ONNX counterpart of :func:`smoothclap.model.load_model`)."""
    return OnnxModel.load(export_dir, **kw)


def is_export(path) -> bool:
    """True when ``path`` is a folder holding an ONNX export (``preprocess.json``)."""
    p = Path(path).expanduser()
    return p.is_dir() and (p / PREPROCESS_JSON).exists()


__all__ = ["OnnxModel", "OnnxZeroShotClassifier", "Classification", "classify_files", "load_model", "is_export",
           "whisper_log_mel", "whisper_windows", "FORMAT", "FORMAT_VERSION"]
