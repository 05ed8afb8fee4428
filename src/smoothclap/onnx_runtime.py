"""Zero-shot inference from an ONNX export, without PyTorch (``smoothclap classify --model EXPORT``).

An export (:func:`smoothclap.export.export_onnx`, ``smoothclap export --format onnx``) is a folder:

==================  ==================================================================================
``audio.onnx``      the audio tower with its front end and pooling: ``waves`` ``[B, S]`` float32
                    (zero-padded, loudness applied) + ``lengths`` ``[B]`` int64 -> whisper-tiny-en:
                    ``sums`` ``[B, audio_dim]`` (over the real encoder frames of each row; the
                    log-mels are computed in the graph) and ``frames`` ``[B]`` (``pool=meanstd``:
                    float64 ``sums`` and ``squares`` ``[B, layers, 384]``); ``hf:``
                    wav2vec2-like towers: ``features`` ``[B, audio_dim]``.
``audio_head.onnx`` ``features`` ``[B, audio_dim]`` (after feature normalisation) -> ``embedding``
                    ``[B, embed_dim]``: input standardiser, ParaCLAP head, L2 norm.
``text.onnx``       ``input_ids``, ``attention_mask`` (+ ``token_type_ids`` where the tokenizer makes
                    them) ``[B, L]`` int64 -> ``features`` ``[B, text_dim]`` (the tower's pooling and,
                    for minilm-l6, its L2 norm).
``text_head.onnx``  ``features`` ``[B, text_dim]`` -> ``embedding`` ``[B, embed_dim]`` (head, L2 norm).
``tokenizer.json``  the text tower's tokenizer (``tokenizers`` library) with its truncation and padding.
``preprocess.json`` the model's config (loudness, feature normalisation, ``trained_on``), the logit
                    scale, the towers' settings (windows of long clips), graph inputs/outputs.
``preprocess.npz``  the training statistics of feature normalisation (``norm_mean``, ``norm_std``;
                    ``neutral_offset``, ``neutral_scale`` for adapting on neutral clips) and, where
                    the model records them, its training clips (``trained_clips``).
==================  ==================================================================================

:class:`OnnxModel` is a :class:`smoothclap.zeroshot.ZeroShotModel` like any other model kind: its
towers (:class:`OnnxAudioTower`, :class:`OnnxTextTower`) run the graphs, and everything around
them is the library's own code, shared with PyTorch: file reading, batching, worker threads, the
cache and bad-file handling (:func:`smoothclap.embed.embed_audio_files`), loudness, windows of
long clips (:func:`smoothclap.audio.split_windows` / :func:`~smoothclap.audio.pool_windows`,
:func:`~smoothclap.audio.pool_moments`),
per-group feature normalisation (:func:`smoothclap.normalize.normalize_groups`) and the classifier
(:class:`smoothclap.zeroshot.ZeroShotClassifier`, :func:`~smoothclap.classification.classify_files`).
:func:`smoothclap.models.load_model` opens an export folder, so ``classify``, ``evaluate``, the
task runner and ``serve`` take one wherever they take a model folder.

This module imports no PyTorch and no transformers (only numpy, onnxruntime, tokenizers, soundfile,
soxr, pandas and torch-free parts of smoothclap), so ``import smoothclap.onnx_runtime`` works in a
deployment without them.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import shutil
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Sequence

import numpy as np

from .audio import file_hash, pool_moments, pool_windows, split_windows
from .embed import ForwardPlan
from .errors import BadInputError
from .io import atomic_folder
from .normalize import EPS, normalize_groups
from .zeroshot import ZeroShotModel

log = logging.getLogger("smoothclap")

FORMAT = "smoothclap-onnx"
#: 2: the audio graphs take waveforms (front ends inside); 1 took log-mels computed outside.
FORMAT_VERSION = 2
PREPROCESS_JSON = "preprocess.json"
PREPROCESS_NPZ = "preprocess.npz"
TOKENIZER_JSON = "tokenizer.json"
AUDIO_GRAPH = "audio.onnx"
AUDIO_HEAD_GRAPH = "audio_head.onnx"
TEXT_GRAPH = "text.onnx"
TEXT_HEAD_GRAPH = "text_head.onnx"
GRAPHS = (AUDIO_GRAPH, AUDIO_HEAD_GRAPH, TEXT_GRAPH, TEXT_HEAD_GRAPH)

#: Upper bound on worker threads that each run whole audio batches (as ``smoothclap.embed``).
MAX_WORKERS = 4
TEXT_BATCH = 64


#: How the runtime pools an audio graph's per-window outputs (``audio.windows.pool``): the mean
#: (``sums``, ``frames``), or the mean and std (``sums``, ``squares``, ``frames``).
WINDOW_POOLS = {"mean": {"sums", "frames"}, "meanstd": {"sums", "squares", "frames"}}

#: The text graph's inputs the runtime can feed (``text.inputs`` of ``preprocess.json``).
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_MISSING = object()
_EXPECTED = {
    "an integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "a number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    "a string": lambda v: isinstance(v, str),
    "a mapping": lambda v: isinstance(v, dict),
    "a list of strings": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
}


def _field(pre: Path, d: dict, key: str, expected: str, default=_MISSING):
    """``d[last part of key]`` checked to be ``expected`` (a key of ``_EXPECTED``); ``default`` when
    absent (or null) and optional. BadInputError ``<pre>: <key>: <reason>`` otherwise."""
    name = key.rsplit(".", 1)[-1]
    v = d.get(name)
    if v is None:
        if default is not _MISSING:
            return default
        if name not in d:
            raise BadInputError(pre, f"{key}: required")
    if not _EXPECTED[expected](v):
        raise BadInputError(pre, f"{key}: expected {expected}, got {v!r}")
    return v


def _positive(pre: Path, d: dict, key: str, default=_MISSING) -> int:
    v = _field(pre, d, key, "an integer", default)
    if v < 1:
        raise BadInputError(pre, f"{key}: {v!r}: must be >= 1")
    return v


def _inside(pre: Path, key: str, value) -> str:
    """A file path of ``preprocess.json``: a name inside the export folder (relative, no ``..``),
    never a path elsewhere on the machine."""
    if not isinstance(value, str) or not value:
        raise BadInputError(pre, f"{key}: expected a file name inside the export folder, got {value!r}")
    if "\0" in value:
        raise BadInputError(pre, f"{key}: {value!r} holds a NUL character")
    if (PurePosixPath(value).is_absolute() or PureWindowsPath(value).drive
            or PureWindowsPath(value).is_absolute() or ".." in re.split(r"[\\/]", value)):
        raise BadInputError(pre, f"{key}: {value!r} points outside the export folder (file paths in "
                            f"{PREPROCESS_JSON} name files inside it: no absolute path, no '..')")
    return value


def _graph_name(pre: Path, section: dict, key: str, expected: str) -> None:
    """``<section>.graph``, where given: the graph file this format puts there."""
    if section.get("graph") is None:
        return
    name = _inside(pre, f"{key}.graph", section["graph"])
    if name != expected:
        raise BadInputError(pre, f"{key}.graph: unknown graph {name!r} (this format keeps it in {expected!r})")


def _check_audio_meta(pre: Path, audio: dict, dim: int) -> None:
    _field(pre, audio, "audio.spec", "a string")
    if _positive(pre, audio, "audio.dim") != dim:
        raise BadInputError(pre, f"audio.dim: {audio['dim']}, but the model's config.audio_dim is {dim}")
    audio["sample_rate"] = _positive(pre, audio, "audio.sample_rate", 16000)  # null or absent: the default
    windows = _field(pre, audio, "audio.windows", "a mapping", None)
    if windows is not None:
        hi = _positive(pre, windows, "audio.windows.max_samples")
        lo = _positive(pre, windows, "audio.windows.min_samples")
        if lo > hi:
            raise BadInputError(pre, f"audio.windows.min_samples: {lo} is more than max_samples ({hi})")
        windows["pool"] = _field(pre, windows, "audio.windows.pool", "a string", "mean")  # absent: older exports
        if windows["pool"] not in WINDOW_POOLS:
            raise BadInputError(pre, f"audio.windows.pool: unknown pooling {windows['pool']!r} "
                                f"(known: {', '.join(WINDOW_POOLS)})")
    _graph_name(pre, audio, "audio", AUDIO_GRAPH)


def _tokenizer_name(text: dict):
    return TOKENIZER_JSON if text.get("tokenizer") is None else text["tokenizer"]


def _check_text_meta(pre: Path, text: dict, dim: int) -> None:
    _field(pre, text, "text.spec", "a string")
    if _positive(pre, text, "text.dim") != dim:
        raise BadInputError(pre, f"text.dim: {text['dim']}, but the model's config.text_dim is {dim}")
    _inside(pre, "text.tokenizer", _tokenizer_name(text))
    text["prefix"] = _field(pre, text, "text.prefix", "a string", "")
    inputs = _field(pre, text, "text.inputs", "a list of strings")
    unknown = [n for n in inputs if n not in TEXT_INPUTS]
    if unknown:
        raise BadInputError(pre, f"text.inputs: unknown graph input(s) {unknown}; known: {', '.join(TEXT_INPUTS)}")
    if not {"input_ids", "attention_mask"} <= set(inputs):
        raise BadInputError(pre, f"text.inputs: {inputs} lacks input_ids / attention_mask")
    _graph_name(pre, text, "text", TEXT_GRAPH)


def check_meta(pre: Path, meta: dict, config) -> None:
    """Every key of ``preprocess.json`` (``pre``) the runtime reads, against ``config`` (the model's
    config it holds): present, of its type, a known value, file paths inside the export folder.
    BadInputError ``<pre>: <key>: <reason>``, never a KeyError later. Optional keys the towers read
    that are absent or null get their default in ``meta``."""
    scale = _field(pre, meta, "scale", "a number")
    if scale <= 0:
        raise BadInputError(pre, f"scale: {scale!r}: must be > 0")
    if _positive(pre, meta, "embed_dim") != config.embed_dim:
        raise BadInputError(pre, f"embed_dim: {meta['embed_dim']}, but the model's config.embed_dim is "
                            f"{config.embed_dim}")
    _check_audio_meta(pre, _field(pre, meta, "audio", "a mapping"), config.audio_dim)
    _check_text_meta(pre, _field(pre, meta, "text", "a mapping"), config.text_dim)
    for key, graph in (("audio_head", AUDIO_HEAD_GRAPH), ("text_head", TEXT_HEAD_GRAPH)):
        _graph_name(pre, _field(pre, meta, key, "a mapping", {}), key, graph)
    _field(pre, meta, "caption_bins", "a mapping", None)


def check_arrays(npz: Path, arrays: dict[str, np.ndarray], config) -> None:
    """``preprocess.npz``: the feature-normalisation statistics a model with
    ``feature_norm_group`` needs (``[audio_dim]``), and where present the neutral statistics
    (``[audio_dim]``) and the record of its training clips (``trained_clips``, uint64 ``[N]``)."""
    for name in ("norm_mean", "norm_std", "neutral_offset", "neutral_scale"):
        a = arrays.get(name)
        if a is None:
            if config.feature_norm_group and name.startswith("norm"):
                raise BadInputError(npz, f"{name}: required (the model normalises features per "
                                    f"{config.feature_norm_group!r})")
        elif a.dtype.kind != "f" or a.shape != (config.audio_dim,):
            raise BadInputError(npz, f"{name}: expected float [{config.audio_dim}], got {a.dtype} {list(a.shape)}")
    clips = arrays.get("trained_clips")
    if clips is not None and (clips.dtype != np.uint64 or clips.ndim != 1):
        raise BadInputError(npz, f"trained_clips: expected uint64 [N] (the record of the training clips), got "
                            f"{clips.dtype} {list(clips.shape)}")


def _check_sessions(pre: Path, meta: dict, sessions: dict) -> None:
    """The graphs take and give what ``preprocess.json`` says: the audio graph's outputs fit
    ``audio.windows`` (sums + frames for windowed towers, features otherwise), the text graph's
    inputs are ``text.inputs``."""
    outs = {o.name for o in sessions[AUDIO_GRAPH].get_outputs()}
    windows = meta["audio"].get("windows")
    want = WINDOW_POOLS[windows["pool"]] if windows is not None else {"features"}
    if not want <= outs:
        raise BadInputError(pre, f"audio.windows: {meta['audio'].get('windows')!r} needs the outputs "
                            f"{sorted(want)} of {AUDIO_GRAPH}, which gives {sorted(outs)}")
    ins = sorted(i.name for i in sessions[TEXT_GRAPH].get_inputs())
    if ins != sorted(meta["text"]["inputs"]):
        raise BadInputError(pre, f"text.inputs: {meta['text']['inputs']}, but {TEXT_GRAPH} takes {ins}")


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _padded(waves: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The audio graph's inputs: waveforms zero-padded to the longest + their lengths."""
    lengths = np.array([len(w) for w in waves], dtype=np.int64)
    x = np.zeros((len(waves), int(lengths.max())), dtype=np.float32)
    for j, w in enumerate(waves):
        x[j, : len(w)] = w
    return {"waves": x, "lengths": lengths}


class OnnxAudioTower:
    """``audio.onnx`` behind the audio-tower interface of :mod:`smoothclap.towers` (``spec``,
    ``dim``, ``sample_rate``, ``cache_key``, ``thread_safe``, ``embed``), so the extraction pipeline
    runs it as any tower. Its cache key names the graph's bytes (``onnx:<spec>:<sha1[:12]>``):
    entries never mix with the PyTorch tower's, nor with another export's."""

    modality = "audio"
    thread_safe = True  # onnxruntime sessions may run in several threads at once

    def __init__(self, path: Path, session, meta: dict, workers: int):
        self.path, self.session, self.meta = path, session, meta
        self.spec = str(meta["spec"])
        self.dim = int(meta["dim"])
        self.sample_rate = int(meta["sample_rate"])  # check_meta fills the default
        self.windows = meta.get("windows")  # None: the graph takes a clip of any length whole
        self.workers = workers
        self._key: str | None = None

    @property
    def cache_key(self) -> str:
        if self._key is None:  # hashed on first use: loading stays fast without a cache
            self._key = f"onnx:{self.spec}:{file_hash(self.path)[:12]}"
        return self._key

    def forward_plan(self, workers: int | None = None) -> ForwardPlan:
        """``workers`` batches at once (default: the count the model was loaded with); each session
        call already uses its intra-op threads, so no thread setting per worker."""
        return ForwardPlan(max(1, int(workers)) if workers else self.workers, None)

    def embed(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """B mono waveforms -> ``[B, dim]`` float32 features."""
        waves = [np.asarray(w, dtype=np.float32).reshape(-1) for w in waves]
        if not waves:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.windows is None:
            return self.session.run(["features"], _padded(waves))[0].astype(np.float32)
        segs, owner = [], []
        for i, w in enumerate(waves):
            for seg in split_windows(w, self.windows["max_samples"], self.windows["min_samples"], what=self.spec):
                segs.append(seg)
                owner.append(i)
        # Windows are independent (masked), so a long clip's windows run in batches of their own
        # length instead of padding every short clip of the batch to 30 s.
        meanstd = self.windows.get("pool", "mean") == "meanstd"
        names = ["sums", "squares", "frames"] if meanstd else ["sums", "frames"]
        outs: list[np.ndarray] = []  # per output [len(segs), ...], of the graph's dtype
        order = sorted(range(len(segs)), key=lambda j: len(segs[j]))
        for b in range(0, len(order), len(waves)):
            idx = order[b : b + len(waves)]
            got = self.session.run(names, _padded([segs[j] for j in idx]))
            if not outs:
                outs = [np.zeros((len(segs), *g.shape[1:]), dtype=g.dtype) for g in got]
            for o, g in zip(outs, got):
                o[idx] = g
        if meanstd:  # [S, L, 384] float64 each -> [B, L * 768]: per layer mean then std
            return pool_moments(*outs, owner, len(waves)).reshape(len(waves), -1).astype(np.float32)
        return pool_windows(*outs, owner, len(waves))


class OnnxTextTower:
    """``tokenizer.json`` + ``text.onnx`` behind the text-tower interface (``spec``, ``dim``, ``embed``)."""

    modality = "text"
    thread_safe = True

    def __init__(self, session, tokenizer, meta: dict, batch_size: int = TEXT_BATCH):
        self.session, self.tokenizer, self.meta = session, tokenizer, meta
        self.spec = str(meta["spec"])
        self.dim = int(meta["dim"])
        self.prefix = meta["prefix"]
        self.batch_size = max(1, int(batch_size))

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """B strings -> the text graph's inputs (``[B, L]`` int64, padded to the longest, truncated
        at the tower's ``max_length``)."""
        enc = self.tokenizer.encode_batch([self.prefix + t for t in texts])
        feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
        if "token_type_ids" in self.meta["inputs"]:
            feeds["token_type_ids"] = np.array([e.type_ids for e in enc], dtype=np.int64)
        return feeds

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """B strings -> ``[B, dim]`` float32 (each distinct string once; batches of similar length)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        uniq = sorted(dict.fromkeys(texts), key=len)
        table: dict[str, np.ndarray] = {}
        for b in range(0, len(uniq), self.batch_size):
            chunk = uniq[b : b + self.batch_size]
            table.update(zip(chunk, self.session.run(["features"], self.tokenize(chunk))[0]))
        return np.stack([table[t] for t in texts]).astype(np.float32)


class OnnxModel(ZeroShotModel):
    """A smoothclap model from its ONNX export: the model interface of
    :class:`smoothclap.model.SmoothClapModel` (:class:`~smoothclap.zeroshot.ZeroShotModel`:
    ``config``, ``scale``, ``tower``, ``file_features``, ``embed_audio``, ``embed_files``,
    ``embed_text``, ``encode_audio_features``, ``encode_text_features``), on numpy arrays. Load
    with :meth:`load` (or :func:`smoothclap.models.load_model`).

    Threads: ``workers`` audio batches run at once (the extraction pipeline's worker threads), each
    session call with ``threads // workers`` onnxruntime intra-op threads (default ``workers =
    min(threads, 4)``, ``threads`` = the CPUs this process may use), as the PyTorch pipeline does.
    """

    def __init__(self, folder: Path, meta: dict, config, arrays: dict[str, np.ndarray], sessions: dict, tokenizer,
                 threads: int, workers: int):
        self.folder = folder
        self.meta = meta
        self.config = config
        self.scale = float(meta["scale"])
        self.arrays = arrays
        self.sessions = sessions
        self.threads, self.workers = threads, workers
        self.embed_dim = int(meta["embed_dim"])
        self.caption_bins = meta.get("caption_bins")
        self.trained_clips = arrays.get("trained_clips")  # content prefixes of the training clips, if recorded
        self._towers = {"audio": OnnxAudioTower(folder / AUDIO_GRAPH, sessions[AUDIO_GRAPH], meta["audio"], workers),
                        "text": OnnxTextTower(sessions[TEXT_GRAPH], tokenizer, meta["text"])}

    def tower(self, kind: str):
        """The audio or text tower (:class:`OnnxAudioTower`, :class:`OnnxTextTower`)."""
        if kind not in self._towers:
            raise ValueError(f"tower kind must be audio or text, got {kind!r}")
        return self._towers[kind]

    # -- loading ---------------------------------------------------------------------------------------
    @staticmethod
    def read_meta(folder: Path) -> dict:
        """``preprocess.json`` of an export folder, checked (BadInputError saying what is wrong)."""
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
        version = _field(pre, meta, "version", "an integer")
        if version > FORMAT_VERSION:
            raise BadInputError(pre, f"export format version {version} is newer than this smoothclap reads "
                                f"({FORMAT_VERSION}); upgrade smoothclap")
        if version < FORMAT_VERSION:
            raise BadInputError(pre, f"export format version {version} is older than this smoothclap reads "
                                f"({FORMAT_VERSION}: audio graphs take waveforms); export the model again "
                                "with 'smoothclap export --model DIR --format onnx --out DIR'")
        return meta

    @classmethod
    def load(cls, export_dir: str | os.PathLike, *, threads: int | None = None, workers: int | None = None,
             intra_op_threads: int | None = None, providers: Sequence[str] | None = None) -> "OnnxModel":
        """Load an export folder. ``threads``: CPU threads in all (default: the CPUs this process
        may use); ``workers``: audio batches at once (default ``min(threads, 4)``; 1 = one batch at
        a time over all threads); ``intra_op_threads``: onnxruntime threads of the audio graph
        (default ``threads // workers``); ``providers``: onnxruntime execution providers (default CPU)."""
        from .config import ConfigError, SmoothClapConfig

        folder = Path(export_dir).expanduser()
        meta = cls.read_meta(folder)
        pre = folder / PREPROCESS_JSON
        try:  # the same config object as the PyTorch model's: every setting evaluate / tasks read
            config = SmoothClapConfig.from_dict(_field(pre, meta, "config", "a mapping"))
        except ConfigError as e:
            raise BadInputError(pre, f"config.{e.key}: {e.reason}") from None
        check_meta(pre, meta, config)
        try:
            with np.load(folder / PREPROCESS_NPZ, allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k]) for k in z.files}
        except (OSError, ValueError, EOFError) as e:
            raise BadInputError(folder / PREPROCESS_NPZ, f"missing or corrupted arrays ({e})") from None
        check_arrays(folder / PREPROCESS_NPZ, arrays, config)
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
        _check_sessions(pre, meta, sessions)
        tok_path = folder / _tokenizer_name(meta["text"])
        try:
            tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as e:  # noqa: BLE001 - tokenizers raises its own exception types
            raise BadInputError(tok_path, f"missing or corrupted tokenizer ({e})") from None
        return cls(folder, meta, config, arrays, sessions, tokenizer, total, workers)

    def neutral_statistics(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(neutral_offset, neutral_scale)`` ``[audio_dim]`` float64, or None when the export has
        none (see :meth:`smoothclap.model.SmoothClapModel.fit_neutral_statistics`)."""
        scale = self.arrays.get("neutral_scale")
        if scale is None or not (scale > 0).any():
            return None
        return np.asarray(self.arrays["neutral_offset"], np.float64), np.asarray(scale, np.float64)

    def with_feature_statistics(self, mean: np.ndarray, std: np.ndarray | None = None,
                                adapted: dict | None = None) -> "OnnxModel":
        """A copy (sharing the graphs and tokenizer) whose single-clip statistics (``norm_mean``,
        ``norm_std`` ``[audio_dim]``) are ``mean`` and ``std`` (None: kept), recording ``adapted`` in
        ``config.adapted``, as :meth:`smoothclap.model.SmoothClapModel.with_feature_statistics`."""
        out = copy.copy(self)
        out.config = copy.deepcopy(self.config)
        out.config.adapted = adapted
        out.arrays = {**self.arrays, "norm_mean": np.asarray(mean, dtype=np.float32)}
        if std is not None:
            out.arrays["norm_std"] = np.maximum(np.asarray(std), EPS).astype(np.float32)
        out.meta = {**self.meta, "config": out.config.to_dict()}
        return out

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write this export, with its own statistics and config, to the folder ``path``: the graphs
        and tokenizer hard-linked (or copied) from the folder it was loaded from, ``preprocess.json``
        and ``preprocess.npz`` written anew; the folder is written beside ``path`` and renamed into
        place (:func:`smoothclap.io.atomic_folder`). An existing ``path`` that is neither empty nor an
        export is never replaced."""
        out = replaceable_export(path)
        with atomic_folder(out) as tmp:
            shutil.copytree(self.folder, tmp, dirs_exist_ok=True, copy_function=_link_or_copy,
                            ignore=shutil.ignore_patterns(PREPROCESS_JSON, PREPROCESS_NPZ, ".*"))
            np.savez(tmp / PREPROCESS_NPZ, **self.arrays)
            (tmp / PREPROCESS_JSON).write_text(json.dumps(self.meta, indent=2, default=str))
        return out

    # -- feature normalisation and heads --------------------------------------------------------------
    def normalize_audio_features(self, raw, groups: Sequence | np.ndarray | None = None) -> np.ndarray:
        """Raw tower features ``[N, audio_dim]`` -> normalised features (see
        :meth:`smoothclap.model.SmoothClapModel.normalize_audio_features`: per-group z-score for
        groups of at least ``config.min_group_clips`` clips, the stored training statistics for
        smaller groups and when ``groups`` is None; unchanged without ``config.feature_norm_group``)."""
        x = np.asarray(raw, dtype=np.float32)
        if not self.config.feature_norm_group:
            return x
        return normalize_groups(x, groups, self.config.min_group_clips, self.arrays["norm_mean"], self.arrays["norm_std"],
                                self.config.group_shrink)

    def _head(self, graph: str, x) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not len(x):
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self.sessions[graph].run(["embedding"], {"features": x})[0]

    def encode_audio_features(self, raw, groups=None) -> np.ndarray:
        """Raw audio-tower features ``[B, audio_dim]`` (+ optional groups ``[B]``) -> ``[B, embed_dim]``."""
        return self._head(AUDIO_HEAD_GRAPH, self.normalize_audio_features(raw, groups))

    def encode_text_features(self, feats) -> np.ndarray:
        """Text-tower features ``[B, text_dim]`` -> ``[B, embed_dim]`` unit norm."""
        return self._head(TEXT_HEAD_GRAPH, feats)


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link where the file system allows one (graphs are never rewritten in place), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def replaceable_export(path) -> Path:
    """``path`` as a folder an export may be written to: absent, empty or an export already;
    BadInputError for anything else (never replaced)."""
    out = Path(path).expanduser()
    if out.exists() and not (is_export(out) or (out.is_dir() and not any(out.iterdir()))):
        raise BadInputError(out, "exists and is not an ONNX export (refusing to replace it)")
    return out


def load_model(export_dir, **kw) -> OnnxModel:
    """:meth:`OnnxModel.load` (:func:`smoothclap.models.load_model` opens exports too)."""
    return OnnxModel.load(export_dir, **kw)


def is_export(path) -> bool:
    """True when ``path`` is a folder holding an ONNX export (``preprocess.json``)."""
    try:
        p = Path(path).expanduser()
        return p.is_dir() and (p / PREPROCESS_JSON).exists()
    except (TypeError, ValueError, OSError):
        return False


__all__ = ["OnnxModel", "OnnxAudioTower", "OnnxTextTower", "load_model", "is_export", "check_meta", "check_arrays",
           "FORMAT", "FORMAT_VERSION"]
