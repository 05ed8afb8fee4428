"""One entry for every kind of model the zero-shot paths take."""
from __future__ import annotations

from pathlib import Path

from .errors import BadInputError


def load_model(spec: str | Path, device: str = "cpu"):
    """A model for zero-shot use (a :class:`smoothclap.zeroshot.ZeroShotModel`):

    * ``hf-clap:<hub id or folder>``: any Hugging Face ``ClapModel``
      (:class:`smoothclap.baselines.ClapBaseline`);
    * an ONNX export folder (one holding ``preprocess.json``, written by ``smoothclap export``):
      :class:`smoothclap.onnx_runtime.OnnxModel`, on onnxruntime's CPU provider, without PyTorch;
    * a smoothclap model (a folder, or a Hub id): :meth:`smoothclap.model.SmoothClapModel.from_pretrained`.
    """
    spec = str(spec)
    if spec.startswith("hf-clap:"):
        from .baselines import ClapBaseline

        return ClapBaseline(spec, device=device)
    from .onnx_runtime import is_export

    if is_export(spec):
        if str(device) != "cpu":
            raise BadInputError(spec, f"an ONNX export runs on the CPU (onnxruntime), not on {device!r}")
        from .onnx_runtime import OnnxModel

        return OnnxModel.load(spec)
    from .model import SmoothClapModel

    return SmoothClapModel.from_pretrained(spec, map_location=device)
