"""The Hugging Face Hub: fetch models by repo id, push them, and the model card they carry.

``SmoothClapModel.from_pretrained("<org>/<name>")`` downloads through ``huggingface_hub``
(:func:`model_folder`: its cache, revisions, ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` as that library
handles them) as well as loading folders; ``model.push_to_hub("<org>/<name>")`` uploads
(:func:`push_folder`). ``save_pretrained`` writes a model card (``README.md``, :func:`model_card`):
the Hub's metadata block (licence, tags, datasets, results) and what the model is made of: its
towers and their licences, the loss settings, the corpora it was trained on and the zero-shot
results recorded for it (``results.json``, :func:`record_results`).
"""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Sequence

import yaml

from .errors import BadInputError

#: The files of a model folder (``SmoothClapModel.save_pretrained``).
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BINS_NAME = "caption_bins.json"  # the training captions' eGeMAPS bins (describing new clips alike)
RESULTS_NAME = "results.json"
CARD_NAME = "README.md"
#: What trained the model, by content: the sorted 8-byte sha1 prefixes of its training clips
#: (``smoothclap.evaluate.check_clips_not_trained_on``; models saved before it have none).
TRAINED_CLIPS_NAME = "trained_clips.safetensors"

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_repo_id(spec: str) -> bool:
    """``"org/name"``: one slash, no path syntax (a folder that exists is never a repo id)."""
    s = str(spec)
    return bool(_REPO_ID.match(s)) and not Path(s).expanduser().exists() and ".." not in s


def model_folder(spec: str | Path, revision: str | None = None, token: str | None = None) -> Path:
    """A local model folder: ``spec`` itself, or the snapshot of Hub repo ``spec`` (downloaded into,
    or found offline in, the Hugging Face cache)."""
    p = Path(spec).expanduser()
    if p.exists() or not is_repo_id(str(spec)):
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=str(spec), revision=revision, token=token,
                                      allow_patterns=["*.json", "*.safetensors", "*.md", "*_tower/*", "*.txt",
                                                      "*.model"]))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, no access: one clear line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInputError(spec, f"not a local folder, and not on the Hugging Face Hub or in its cache "
                            f"({type(e).__name__}: {first[:300]})") from None


def push_folder(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = False,
                commit_message: str = "Upload smoothclap model", revision: str | None = None) -> str:
    """Create ``repo_id`` (if needed) and upload ``folder``; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                             commit_message=commit_message, revision=revision)
    return str(getattr(info, "commit_url", info))


def push_model(model, repo_id: str, **kw) -> str:
    """``model.save_pretrained`` into a temporary folder, then :func:`push_folder`."""
    with tempfile.TemporaryDirectory(prefix="smoothclap-push-") as tmp:
        model.save_pretrained(tmp)
        return push_folder(tmp, repo_id, **kw)


# -- the model card -----------------------------------------------------------------------------------
def tower_licence(spec: str) -> tuple[str, str, str | None]:
    """(description, licence, SPDX id) of a tower spec (:mod:`smoothclap.towers.registry`); parts of
    concatenations joined."""
    from .towers.registry import MODEL_LICENCES, entry

    base = spec.split("?")[0]
    if base in MODEL_LICENCES:
        return MODEL_LICENCES[base]
    if base.startswith("hf:./"):
        return "a fine-tuned tower saved in this folder", "that of the model it was fine-tuned from", None
    if "+" in base and not base.startswith("hf"):
        parts = [tower_licence(p) for p in base.split("+")]
        spdx = parts[0][2] if all(p[2] == parts[0][2] for p in parts) else None
        return " + ".join(p[0] for p in parts), "; ".join(p[1] for p in parts), spdx
    e = entry(base)
    if e is None or e.scheme:
        return base, "see the model card of its source", None
    return e.description, e.licence, e.spdx


def model_card(config, results: Sequence[dict] | None = None, name: str | None = None) -> str:
    """``README.md`` for a model folder: the Hub metadata block, then what the model is."""
    results = list(results or [])
    towers = {"audio": config.audio_tower, "text": config.text_tower}
    lic = {k: tower_licence(v) for k, v in towers.items()}
    nc = any(spdx is None and ("non-commercial" in text.lower()) for _, text, spdx in lic.values())
    meta: dict = {
        "license": "cc-by-nc-sa-4.0" if nc else "apache-2.0",
        "library_name": "smoothclap",
        "pipeline_tag": "zero-shot-audio-classification",
        "tags": ["smoothclap", "clap", "audio", "speech-emotion-recognition", "zero-shot-audio-classification"],
    }
    trained = [str(c) for c in (config.trained_on or [])]
    if trained:
        meta["datasets"] = trained
    if results:
        meta["model-index"] = [{"name": name or "smoothclap", "results": [
            {"task": {"type": "zero-shot-audio-classification", "name": "zero-shot emotion recognition"},
             "dataset": {"name": r["task"], "type": r.get("corpus", r["task"])},
             "metrics": [{"type": "uar", "name": "UAR", "value": round(float(r["uar"]), 4)}]} for r in results]}]
    loss = config.loss or {}
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
             f"# {name or 'smoothclap model'}", "",
             "An emotion-aware audio-text (CLAP) model trained with "
             "[smoothclap](https://pypi.org/project/smoothclap/): frozen encoders (\"towers\"), ParaCLAP "
             "projection heads and a learned scale, trained "
             + ("with SmoothCLAP's soft contrastive targets." if loss.get("beta") else "with the CLAP (InfoNCE) loss."),
             "", "## Use", "", "```python",
             "from smoothclap import SmoothClapModel, ZeroShotClassifier, read_audio",
             f"model = SmoothClapModel.from_pretrained(\"{name or '<this repo>'}\")",
             "clf = ZeroShotClassifier(model, [\"angry\", \"happy\", \"sad\", \"neutral\"])",
             "labels, probs = clf.predict([read_audio(\"clip.wav\")])",
             "```", "", "## What it is made of", "",
             "| part | spec | licence |", "| --- | --- | --- |"]
    for kind, spec in towers.items():
        desc, text, _ = lic[kind]
        lines.append(f"| {kind} tower ({desc}) | `{spec}` | {text} |")
    lines += [f"| heads and scale (this folder) | d = {config.embed_dim} | {meta['license']} |", "",
              "The towers' weights are not part of this folder (unless fine-tuned: `*_tower/`); their "
              "licences apply to using the model. Training captions were made from eGeMAPS features "
              "(openSMILE: research / non-commercial use only).", "",
              (f"Feature normalisation: {config.feature_norm_group} (per-group z-score"
               + (f", each group shrunk toward all the clips scored with it by {config.group_shrink} clips"
                  if getattr(config, "group_shrink", 0) else "") +
               f"; without groups the stored training statistics, `{config.fallback_stats}`). "
               if config.feature_norm_group
               else "Feature normalisation: none. ") +
              (f"Adapted (`smoothclap adapt`): clips scored alone use the statistics ({config.adapted.get('statistics')}) "
               f"of {config.adapted.get('clips')} unlabelled "
               f"{'neutral clips (corrected by the neutral statistics) ' if config.adapted.get('reference') == 'neutral' else 'clips '}"
               "of one recording setting instead"
               + (f" (content sha1 `{config.adapted['reference_sha1']}`). " if config.adapted.get("reference_sha1")
                  else ". ")
               if getattr(config, "adapted", None) else "") +
              (f"{config.nuisance_dims} principal directions of the training {config.nuisance_group}s' means are "
               "removed before the head. " if config.nuisance_dims else "") +
              ("The features are whitened by the training clips' within-emotion covariance. "
               if getattr(config, "whiten", "none") != "none" else "") +
              f"Loudness: {config.loudness or 'as recorded'}.", "",
              "## Training", "",
              f"- corpora: {', '.join(trained) or 'unknown'}",
              "- loss: " + (", ".join(f"{k} {v}" for k, v in loss.items()
                                      if k in ("preset", "beta", "gamma", "tau_a", "tau_t", "text_target")
                                      and v is not None) or "unknown"), ""]
    lines += ["## Zero-shot results recorded for it", ""]
    if results:
        lines += ["| task | n | UAR | WA | macro-F1 | chance | protocol |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in results:
            lines.append(f"| {r['task']} | {r.get('n', '')} | {r['uar']:.3f} | {r.get('wa', float('nan')):.3f} | "
                         f"{r.get('macro_f1', float('nan')):.3f} | {r.get('chance_uar', float('nan')):.3f} | "
                         f"{r.get('protocol', '')} |")
        lines += ["", "(`smoothclap evaluate --task ... --record`; corpora the model was trained on are not "
                  "scored zero-shot.)"]
    else:
        lines.append("None yet (`smoothclap evaluate --model DIR --task ... --record` adds them).")
    return "\n".join(lines) + "\n"


def read_results(folder: str | Path) -> list[dict]:
    f = Path(folder) / RESULTS_NAME
    if not f.exists():
        return []
    try:
        data = json.loads(f.read_text())
    except ValueError as e:
        raise BadInputError(f, f"corrupted results ({e})") from None
    return list(data) if isinstance(data, list) else []


def record_results(folder: str | Path, results: Sequence[dict]) -> Path:
    """Add task results (one dict each: task, uar, wa, macro_f1, n, chance_uar, protocol, corpus)
    to a model folder's ``results.json`` (a task's newer result replaces its older one) and
    rewrite its model card. Returns the card's path."""
    from .config import SmoothClapConfig
    from .io import atomic_write_json, atomic_write_text

    folder = Path(folder)
    keep = ("task", "corpus", "n", "uar", "wa", "macro_f1", "chance_uar", "protocol", "trained_on")
    old = {r["task"]: r for r in read_results(folder)}
    for r in results:
        old[r["task"]] = {k: r[k] for k in keep if k in r}
    rows = list(old.values())
    atomic_write_json(folder / RESULTS_NAME, rows)
    config = SmoothClapConfig.from_dict(json.loads((folder / CONFIG_NAME).read_text()))
    return atomic_write_text(folder / CARD_NAME, model_card(config, rows, name=folder.name))


_CLIPS_KEY = "sha1_prefix"


def save_trained_clips(path: str | Path, prefixes) -> Path:
    """Write the record of a model's training clips (:data:`~smoothclap.hub.TRAINED_CLIPS_NAME`):
    one safetensors tensor ``sha1_prefix`` ``[N]`` uint64, sorted and distinct (8 bytes a clip)."""
    import numpy as np
    from safetensors.numpy import save_file as save_numpy

    from .io import atomic_save

    arr = np.unique(np.asarray(prefixes, dtype=np.uint64))
    return atomic_save(path, lambda t: save_numpy({_CLIPS_KEY: arr}, t, metadata={
        "format": "smoothclap-trained-clips", "hash": "sha1 of the file's bytes, first 8 bytes, big-endian"}))


def load_trained_clips(path: str | Path):
    """The record :func:`save_trained_clips` wrote; BadInputError when it is not one."""
    import numpy as np
    from safetensors import SafetensorError
    from safetensors.numpy import load_file as load_numpy

    try:
        arr = load_numpy(str(path))[_CLIPS_KEY]
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise BadInputError(path, f"corrupted record of the training clips ({type(e).__name__}: {e})") from None
    if arr.dtype != np.uint64 or arr.ndim != 1:
        raise BadInputError(path, f"corrupted record of the training clips ({arr.dtype} {list(arr.shape)}, "
                            "expected uint64 [N])")
    return np.unique(arr)
