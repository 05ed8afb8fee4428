"""Experiments built on the library and the trainer: the cross-corpus LOCO benchmark
(:mod:`.loco`), the soft-target ablation (:mod:`.ablation`), the offline demo (:mod:`.demo`), the
synthetic espeak-ng corpus (:mod:`.synth`) and their reports (:mod:`.report`). Nothing in the
library or the trainer imports this package."""
