"""A clip's paralinguistic description, as a model's training captions would phrase it.

``describe_files(model, files)`` extracts eGeMAPS (openSMILE), bins each variable with the
thresholds fitted on the model's training data (``model.caption_bins``, saved in the model
folder) and writes the description: "high pitch, low pitch variation, loud, normal jitter, low
shimmer, short". openSMILE is licensed for research / non-commercial use only.
"""
from __future__ import annotations

from typing import Sequence

from .errors import SkipLog


def can_describe(model) -> bool:
    """Whether ``model`` has training caption bins and openSMILE is installed."""
    if getattr(model, "caption_bins", None) is None:
        return False
    try:
        import opensmile  # noqa: F401
    except ImportError:
        return False
    return True


def describe_files(model, files: Sequence[str], *, cache_dir=None, skip: SkipLog | None = None,
                   num_workers: int = 1) -> list[str | None]:
    """One description per file (None for a file skipped by ``skip``); raises when the model has
    no caption bins (see :func:`can_describe`)."""
    from .bins import ParalingBinner
    from .captions import CaptionBuilder, CaptionConfig
    from .egemaps import extract_egemaps

    if getattr(model, "caption_bins", None) is None:
        raise ValueError("this model has no caption bins (trained without eGeMAPS captions)")
    binner = ParalingBinner.from_dict(model.caption_bins)
    files = [str(f) for f in files]
    feats = extract_egemaps(files, cache_dir=cache_dir, num_workers=num_workers, skip=skip, progress=False)
    if binner.group_by is not None:  # clips of unknown group: the global thresholds
        feats[binner.group_by] = "?"
    bins = binner.transform(feats)
    builder = CaptionBuilder(CaptionConfig(variables=list(binner.variables)))
    text = dict(zip(bins.index, builder.descriptions(bins)))
    return [text.get(f) for f in files]
