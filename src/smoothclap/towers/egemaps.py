"""eGeMAPSv02 functionals as an audio tower (88-d; standardised downstream with training
statistics, see ``SmoothClapModel.fit_normalization``).

openSMILE is licensed by audEERING for research / non-commercial use only; it is an optional
extra (``pip install 'smoothclap[egemaps]'``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import SkipLog
from .base import AudioTower


class EGeMAPSTower(AudioTower):
    def __init__(self, feature_set: str = "eGeMAPSv02"):
        super().__init__()
        from ..egemaps import egemaps_feature_names

        self.feature_set = feature_set
        self.columns = egemaps_feature_names(feature_set)
        self.spec = "egemaps" if feature_set == "eGeMAPSv02" else f"egemaps?set={feature_set}"
        self.dim = len(self.columns)

    def forward_waves(self, waves: Sequence[np.ndarray]) -> torch.Tensor:
        """B arrays ``[T_i]`` -> ``[B, 88]`` (in this process; corpora go through ``embed_files``)."""
        from ..egemaps import _get_smile

        smile = _get_smile(self.feature_set)
        rows = [smile.process_signal(w, self.sample_rate)[self.columns].to_numpy()[0] for w in waves]
        return torch.as_tensor(np.stack(rows), dtype=torch.float32)

    def embed_files(self, files: Sequence[str], *, cache_dir=None, skip: SkipLog | None = None,
                    progress: bool = True, num_workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """Parallel, cached extraction over files -> ``([N, 88], ok [N])`` (NaN rows where skipped)."""
        from ..egemaps import extract_egemaps

        df = extract_egemaps(list(files), cache_dir=cache_dir, num_workers=num_workers, skip=skip,
                             progress=progress, feature_set=self.feature_set)
        df = df.reindex([str(f) for f in files])
        out = df[self.columns].to_numpy(dtype=np.float32)
        return out, np.isfinite(out).all(1)
