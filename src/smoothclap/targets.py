"""Soft-target construction from a run config: which loss object the trainer uses.

Kept apart from the trainer so target options (standardisation, temperature calibration,
top-k sparsification) evolve without touching the training loop.
"""
from __future__ import annotations

from .losses import SmoothClapLoss


def build_loss(cfg, prepared=None) -> SmoothClapLoss:
    """The SmoothCLAP loss for ``cfg.loss`` (beta = 0: CLAP)."""
    lc = cfg.loss
    return SmoothClapLoss(lc.beta, lc.gamma, lc.tau_a, lc.tau_t)
