"""Soft-target construction from a run config: target geometry and the loss the trainer uses.

Raw frozen embeddings are so similar (mean pairwise cosine 0.87-0.96 within a corpus, see
``docs/method.md``) that q at tau 0.07 is nearly uniform, i.e. label smoothing. The options here
change that:

* ``target_standardize``: centre / z-score / whiten the local-feature and description embeddings
  with training statistics (globally or per corpus / speaker) before the cosine;
* ``calibrate``: choose tau_a / tau_t on training batches so q reaches a chosen mean diagonal
  mass or effective number of neighbours, instead of a fixed 0.07;
* ``topk``: sparsify q to each row's k most similar clips.

All of it shapes targets only; inference (cosine between audio and prompt) is unchanged.
"""
from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import torch

from .losses import SmoothClapLoss, similarity_targets
from .normalize import group_ids, standardize

log = logging.getLogger("smoothclap")


def apply_target_options(cfg, prepared):
    """Return ``prepared`` with its local and description embeddings standardised as
    ``cfg.loss.target_standardize`` asks (statistics from these training clips only)."""
    lc = cfg.loss
    if lc.target_standardize == "none":
        return prepared
    groups = None
    if lc.target_standardize_group:
        col = lc.target_standardize_group
        if col not in prepared.table.columns:
            raise ValueError(f"loss.target_standardize_group={col!r}: the training table has no such column")
        groups = group_ids(prepared.table, col)  # missing values: one group "?"
    changes = {}
    if prepared.local is not None:
        changes["local"] = standardize(prepared.local, lc.target_standardize, groups)
    if prepared.desc_emb is not None:
        changes["desc_emb"] = standardize(prepared.desc_emb, lc.target_standardize, groups)
    return dataclasses.replace(prepared, **changes)


def target_statistic(emb: torch.Tensor, tau: float, batches: list[torch.Tensor], kind: str,
                     topk: int | None = None) -> float:
    """Mean over ``batches`` (index tensors) of q's diagonal mass ("diag") or its effective
    number of neighbours exp(row entropy) ("neighbours") at temperature ``tau``."""
    vals = []
    for idx in batches:
        q = similarity_targets(emb[idx], tau, topk)
        if kind == "diag":
            vals.append(float(q.diagonal().mean()))
        else:
            ent = -(torch.xlogy(q, q)).sum(1).mean()
            vals.append(float(ent.exp()))
    return float(np.mean(vals))


def calibrate_tau(emb: np.ndarray, kind: str, value: float, batch_size: int, seed: int = 0,
                  topk: int | None = None, n_batches: int = 24, lo: float = 1e-3, hi: float = 10.0) -> float:
    """Temperature at which q over random training batches of ``batch_size`` reaches ``value``:
    a mean diagonal mass (kind "diag", in (1/B, 1)) or an effective number of neighbours
    (kind "neighbours", in (1, B)). Bisection in log tau (both statistics are monotone in tau)."""
    e = torch.as_tensor(emb, dtype=torch.float32)
    n = len(e)
    b = min(batch_size, n)
    g = torch.Generator().manual_seed(seed)
    batches = [torch.randperm(n, generator=g)[:b] for _ in range(n_batches)]
    if kind == "diag" and not 1.0 / b < value < 1.0:
        raise ValueError(f"calibrate_value for diag must lie in (1/B, 1) = ({1 / b:.3f}, 1), got {value}")
    if kind == "neighbours" and not 1.0 < value < b:
        raise ValueError(f"calibrate_value for neighbours must lie in (1, B) = (1, {b}), got {value}")
    # diag falls with tau, neighbours rises: search f(tau) - value with the right sign
    sign = -1.0 if kind == "diag" else 1.0
    a, z = math.log(lo), math.log(hi)
    for _ in range(40):
        mid = 0.5 * (a + z)
        f = sign * (target_statistic(e, math.exp(mid), batches, kind, topk) - value)
        if f > 0:
            z = mid
        else:
            a = mid
    return float(math.exp(0.5 * (a + z)))


def build_loss(cfg, prepared=None) -> SmoothClapLoss:
    """The SmoothCLAP loss for ``cfg.loss`` (beta = 0: CLAP), with calibrated temperatures when
    ``cfg.loss.calibrate`` asks for them (needs ``prepared``). Chosen taus: ``loss.tau_a/tau_t``."""
    lc = cfg.loss
    tau_a, tau_t = lc.tau_a, lc.tau_t
    if lc.calibrate != "none" and lc.beta > 0:
        if prepared is None:
            raise ValueError("temperature calibration needs the training bundle")
        bs, seed = cfg.train.batch_size, cfg.train.seed
        if prepared.local is not None and lc.gamma < 1:
            tau_a = calibrate_tau(prepared.local, lc.calibrate, lc.calibrate_value, bs, seed, lc.topk)
        if prepared.desc_emb is not None and lc.gamma > 0:
            tau_t = calibrate_tau(prepared.desc_emb, lc.calibrate, lc.calibrate_value, bs, seed, lc.topk)
        log.info("calibrated temperatures (%s = %g): tau_a = %.4f, tau_t = %.4f",
                 lc.calibrate, lc.calibrate_value, tau_a, tau_t)
    return SmoothClapLoss(lc, tau_a=tau_a, tau_t=tau_t)


# -- emotion-aware q_a2a sources -------------------------------------------------------------------------
def _speaker_folds(groups: np.ndarray, n_folds: int):
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups).astype(str)
    k = min(int(n_folds), len(np.unique(groups)))
    if k < 2:
        raise ValueError("cross-fitted targets need at least 2 speakers (a speaker column) in the training table")
    return list(GroupKFold(n_splits=k).split(np.zeros(len(groups)), groups=groups))


def _fit_rows(labelled: np.ndarray, groups: np.ndarray, n_folds: int):
    """(train rows, predicted rows) of each fit: speaker folds over the ``labelled`` rows, each
    predicting its fold from the other folds' labelled rows, then one fit on every labelled row
    predicting the unlabelled rows (if any). No row is ever predicted by a fit that saw its label."""
    idx = np.flatnonzero(labelled)
    if not len(idx):
        raise ValueError("cross-fitted targets need labelled training clips (every clip is unlabelled)")
    fits = [(idx[tr], idx[te]) for tr, te in _speaker_folds(np.asarray(groups)[idx], n_folds)]
    unl = np.flatnonzero(~labelled)
    return fits, ((idx, unl) if len(unl) else None)


def crossfit_posteriors(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_folds: int = 5,
                        C: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold emotion posteriors: features ``[N, k]``, integer labels ``[N]`` (-1: an
    unlabelled clip), speaker ``groups`` ``[N]`` -> (posteriors ``[N, n_classes]`` float32, fold of
    each clip ``[N]``, -1 for unlabelled clips).

    A standardised logistic regression is fitted on the labelled clips of all speakers but those of
    one fold (GroupKFold by speaker, over the labelled clips only) and predicts that fold, so no
    clip's posterior comes from a model that saw its label (nor its speaker). Unlabelled clips are
    in no fold: a model fitted on every labelled clip predicts them (they have no label to see).
    Classes missing from a fold's training part get probability 0. Deterministic for the same
    inputs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    labelled = y >= 0
    fits, rest = _fit_rows(labelled, groups, n_folds)
    n_classes = int(y[labelled].max()) + 1
    out = np.zeros((len(y), n_classes), dtype=np.float32)
    fold = np.full(len(y), -1, dtype=np.int64)
    for f, (tr, te) in enumerate(fits + ([rest] if rest is not None else [])):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000, random_state=seed))
        clf.fit(x[tr], y[tr])
        out[np.ix_(te, clf.classes_)] = clf.predict_proba(x[te])
        if f < len(fits):
            fold[te] = f
    return out, fold


def crossfit_dimensions(features: np.ndarray, targets: np.ndarray, groups: np.ndarray, n_folds: int = 5,
                        alpha: float = 1.0, labelled: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictions of dimensional ratings (arousal / valence / dominance): features
    ``[N, k]``, ratings ``[N, m]`` -> (z-scored predictions ``[N, m]`` float32, folds ``[N]``), by
    standardised ridge regressions fitted on the other speakers' clips (GroupKFold). ``labelled``
    ``[N]`` bool (default: every row): the rows whose ratings are used, cross-fitted as above; the
    other rows (their ratings ignored, fold -1) are predicted by a fit on every labelled row."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    labelled = np.ones(len(t), dtype=bool) if labelled is None else np.asarray(labelled, dtype=bool)
    fits, rest = _fit_rows(labelled, groups, n_folds)
    out = np.zeros(t.shape, dtype=np.float64)
    fold = np.full(len(t), -1, dtype=np.int64)
    for f, (tr, te) in enumerate(fits + ([rest] if rest is not None else [])):
        reg = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x[tr], t[tr])
        out[te] = reg.predict(x[te])
        if f < len(fits):
            fold[te] = f
    return standardize(out, "zscore"), fold
