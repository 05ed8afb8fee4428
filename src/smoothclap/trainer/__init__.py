"""The trainer: one training loop with interchangeable steps, checkpoints and resume, distributed
through ``torchrun``.

* :mod:`.bundle`: corpus table -> frozen-tower embeddings and captions (the training bundle) and
  the batch builder that hands the loss its batch structure;
* :mod:`.mapped`: a training bundle from embeddings already cached, left on disk and read per
  batch (memory flat in the corpus size);
* :mod:`.loop`: the one loop (:func:`train`), micro-batches, history, run folder;
* :mod:`.steps`: where features come from (cached frozen embeddings, or towers end to end);
* :mod:`.checkpoint`: the checkpoint format, its fingerprint, resume;
* :mod:`.distributed`: process groups, the global-batch loss, sharded extraction;
* :mod:`.selection`: model selection on a held-out split;
* :mod:`.data`, :mod:`.run`: a run config's data and the ``smoothclap train`` command.

The trainer uses the library (:mod:`smoothclap`) and never the experiments.
"""
from .bundle import BatchBuilder, Prepared, prepare
from .loop import TrainResult, Trainer, build_model, train
from .mapped import from_cache
from .run import TrainingRun, run_training

__all__ = ["BatchBuilder", "Prepared", "TrainResult", "Trainer", "TrainingRun", "build_model", "from_cache",
           "prepare", "run_training", "train"]
