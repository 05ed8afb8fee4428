"""smoothclap: emotion-aware audio-text (CLAP) models with SmoothCLAP soft contrastive targets.

>>> from smoothclap import SmoothClapModel, ZeroShotClassifier, read_audio   # doctest: +SKIP

Layers (``docs/architecture.md``): the library (this package's modules), the trainer
(:mod:`smoothclap.trainer`) and the experiments (:mod:`smoothclap.experiments`); imports run only
downward.
"""

__version__ = "0.1.0"

from .audio import read_audio  # noqa: F401
from .config import ConfigError, RunConfig, load_config  # noqa: F401
from .errors import BadInputError, SkipLog  # noqa: F401
from .losses import ClipLoss, SmoothClapLoss  # noqa: F401
from .model import SmoothClapConfig, SmoothClapModel  # noqa: F401
from .zeroshot import ZeroShotClassifier, classify_files  # noqa: F401
