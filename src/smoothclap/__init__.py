"""smoothclap: emotion-aware audio-text (CLAP) models with SmoothCLAP soft contrastive targets.

>>> from smoothclap import SmoothClapModel, ZeroShotClassifier, read_audio   # doctest: +SKIP

Layers (``docs/architecture.md``): the library (this package's modules), the trainer
(:mod:`smoothclap.trainer`) and the experiments (:mod:`smoothclap.experiments`); imports run only
downward. The names below load on first use, so a submodule that needs no PyTorch (the ONNX
runtime, audio reading) can be imported without it.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "read_audio": "audio", "BadInputError": "errors", "SkipLog": "errors", "ConfigError": "config",
    "RunConfig": "config", "load_config": "config", "ClipLoss": "losses", "SmoothClapLoss": "losses",
    "SmoothClapConfig": "model", "SmoothClapModel": "model", "load_model": "models",
    "ZeroShotClassifier": "zeroshot", "classify_files": "classification", "adapt_model": "adapt",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'smoothclap' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
