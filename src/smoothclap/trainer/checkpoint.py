"""One checkpoint format, one fingerprint, one resume path.

``<run>/checkpoint.pt`` is written atomically after every epoch: model state (heads, scale,
statistics), fine-tuned tower states, optimizer and gradient-scaler states, the epoch, the history,
the RNG states of every process, and the run's fingerprint. It holds only tensors and plain Python
values, so it is read with ``torch.load(weights_only=True)``: loading never executes code from the
file. A checkpoint whose fingerprint differs from the run being started belongs to another run:
it is refused (:class:`RunFolderError`), never overwritten.
"""
from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import torch
import yaml

from ..errors import BadInputError
from ..io import atomic_save

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 2

#: Settings that do not change what training computes: left out of the fingerprint, so a run
#: resumes across them ("epochs": a finished run can be extended by raising it).
NOT_COMPUTATION = {
    "train": ("device", "epochs", "num_workers", "select_split", "select_labels", "select_templates",
              "dist_timeout_min"),
    "towers": ("device", "batch_size", "embed_workers", "trim_every"),
}
_SECTIONS = ("towers", "model", "loss", "captions", "train")


class RunFolderError(BadInputError):
    """The run folder holds a run of another configuration (or data): refused, not overwritten."""


def config_fingerprint(cfg) -> dict:
    """The parts of a run config that change what training computes (see :data:`NOT_COMPUTATION`)."""
    d = {s: getattr(cfg, s).to_dict() for s in _SECTIONS}
    for section, keys in NOT_COMPUTATION.items():
        for k in keys:
            d[section].pop(k, None)
    d["loss"].pop("preset", None)  # the values it filled in are there
    return d


#: Elements per block summed at once by :func:`float32_sum` over rows read on demand.
SUM_BLOCK = 1 << 20


def float32_sum(x, block: int | None = None) -> np.float32:
    """``x.sum()`` of float32 rows ``x`` ``[N, k]`` (an array, or a
    :class:`~smoothclap.normalize.RowSource` read ``block`` elements at a time, default
    :data:`SUM_BLOCK`): the same value.

    NumPy sums a contiguous float32 array pairwise over its flat elements: a range of ``n > 128``
    elements is the sum of its first ``n2 = n // 2 - (n // 2) % 8`` elements and of the rest,
    smaller ranges are summed in 8 lanes. The same halving is done here until a range holds at
    most ``block`` elements; NumPy sums each such range itself (the same code on the same
    elements), so the result is bit-identical to ``np.asarray(x).sum()``
    (``tests/test_scale_training.py``)."""
    if isinstance(x, np.ndarray):
        return x.sum()
    block = int(block or SUM_BLOCK)
    n_rows, k = int(x.shape[0]), int(x.shape[1])

    def part(lo: int, n: int) -> np.float32:
        if n <= max(block, 128):  # (NumPy splits only ranges of more than 128 elements)
            r0, r1 = lo // k, -(-(lo + n) // k)
            flat = np.asarray(x[r0:r1], dtype=np.float32).reshape(-1)
            a = lo - r0 * k
            return np.add.reduce(flat[a : a + n])
        n2 = n // 2
        n2 -= n2 % 8
        return np.float32(part(lo, n2) + part(lo + n2, n - n2))

    return part(0, n_rows * k) if n_rows * k else np.float32(0)


def _joined_sha1(texts: list[str], index: np.ndarray, chunk: int = 1 << 14) -> str:
    """sha1 hex of ``"\\n".join(texts[i] for i in index)`` encoded as UTF-8, hashed in chunks of
    ``chunk`` strings: at 1M clips the joined text and its bytes would be 100+ MiB at once."""
    h = hashlib.sha1()
    for a in range(0, len(index), chunk):
        part = "\n".join(texts[int(i)] for i in index[a : a + chunk])
        h.update((part if a == 0 else "\n" + part).encode())
    return h.hexdigest()


def fingerprint(cfg, prepared) -> str:
    """Identifies what a checkpoint was trained on (config and data); resume only when it matches.
    The bundle's audio may be rows read on demand (a memory-flat bundle): they are summed in
    blocks, to the same value (:func:`float32_sum`)."""
    d = config_fingerprint(cfg)
    # the first epoch's captions identify the caption settings and bins; later epochs only extend
    # them (a finished run can be extended by raising train.epochs)
    captions = _joined_sha1(prepared.caption_texts, prepared.caption_index[0])
    # the labels too: with captions that never name the emotion they reach training only through
    # the targets, and which clips are unlabelled (-1) changes the targets
    labels = np.ascontiguousarray(prepared.label_ids, dtype=np.int64)
    d["data"] = {"n": int(prepared.audio.shape[0]), "audio_sum": float(np.float64(float32_sum(prepared.audio))),
                 "captions": captions,
                 "labels": hashlib.sha1(labels.tobytes() + "\n".join(prepared.label_names).encode()).hexdigest()}
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def check_run_folder(run_dir, cfg) -> None:
    """Before any work: refuse a run folder that holds a checkpoint of a run with another config
    (the data is checked against the checkpoint once it is prepared)."""
    run_dir = Path(run_dir)
    old_cfg = run_dir / "config.yaml"
    if not (run_dir / CHECKPOINT_NAME).exists() or not old_cfg.exists():
        return
    from ..config import ConfigError, RunConfig, validate

    try:
        old = validate(RunConfig, yaml.safe_load(old_cfg.read_text()) or {})
    except (ConfigError, yaml.YAMLError, OSError) as e:
        raise RunFolderError(old_cfg, f"cannot read the config of the run already in this folder ({e})") from None
    a, b = config_fingerprint(old), config_fingerprint(cfg)
    diff = sorted(f"{s}.{k}" for s in a for k in set(a[s]) | set(b[s]) if a[s].get(k) != b[s].get(k))
    if diff:
        raise RunFolderError(run_dir, f"holds a run with other settings ({', '.join(diff[:6])}"
                             f"{' ...' if len(diff) > 6 else ''}); choose another output folder (--out) "
                             "or remove this one")


def next_free_folder(run_dir) -> Path:
    """``<run_dir>-2``, ``-3``, ...: the first that does not exist yet."""
    run_dir = Path(run_dir)
    k = 2
    while (cand := run_dir.with_name(f"{run_dir.name}-{k}")).exists():
        k += 1
    return cand


# -- RNG states as tensors and plain values (weights_only-loadable) ----------------------------------------
def rng_state(device: torch.device | None = None) -> dict:
    """Torch (CPU and, on CUDA, this device's) and NumPy global RNG states."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    st = {"torch": torch.get_rng_state(), "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                                                    "pos": int(pos), "has_gauss": int(has_gauss),
                                                    "gauss": float(gauss)}}
    if device is not None and device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: dict, device: torch.device | None = None) -> None:
    torch.set_rng_state(st["torch"])
    n = st.get("numpy")
    if n is not None:
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in st and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(st["cuda"], device)


# -- files ----------------------------------------------------------------------------------------------
def save_checkpoint(path, state: dict) -> Path:
    """Write ``state`` atomically (``{"format": FORMAT, ...}`` added)."""
    state = {"format": FORMAT, **state}
    return atomic_save(path, lambda t: torch.save(state, t))


def load_checkpoint(path, expected_fingerprint: str) -> dict | None:
    """The checkpoint at ``path`` (None when there is none). Nothing in the file is executed
    (``weights_only=True``); a file that is not a smoothclap checkpoint, or is corrupted, raises
    :class:`~smoothclap.errors.BadInputError`; one of another run raises :class:`RunFolderError`."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInputError(path, f"not a loadable smoothclap checkpoint (refused or corrupted: {first[:200]})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT or "fingerprint" not in ck:
        raise BadInputError(path, "not a smoothclap checkpoint of this version (remove it to start afresh)")
    if ck["fingerprint"] != expected_fingerprint:
        raise RunFolderError(path, "is from a run with other settings or other data; choose another output "
                             "folder (--out) or remove this one")
    return ck
