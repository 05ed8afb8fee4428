"""Probe (issue 17): two feature treatments tried against the single-clip gap, without changing the library.

Single clips (no groups: ``classify FILE``, the page, the API) fall back to the training
statistics, and score about .10 below whole corpora under per-corpus normalisation. Two candidates
that need no test statistics, patched in at run time (this script only; the library is unchanged):

* ``speaker-projection``: no per-group z-scoring; instead the between-speaker directions of the
  training features (the SVD of the training speakers' mean features, all ``n_speakers - 1`` of
  them) are projected out, with the training mean removed, at training and at inference alike.
  Scored on the held-out corpora (five-corpus LOCO, ``--config recommended``): a diagnostic, not a
  choice (settings are chosen on training corpora only).
* ``meanstd``: Whisper's all-layer features pooled as mean and standard deviation over the real
  frames (3840-d instead of 1920-d), per-corpus normalisation as in ``recommended``; validated by
  inner leave-one-corpus-out on the training corpora (the scheme that simulates a new corpus's
  single clips), then scored on the held-out corpora. Its embeddings go to their own cache folder
  (``--cache-dir``, default a temporary folder), never into the user's cache: the patched tower
  keeps the spec of the mean-pooled one.

Prints the LOCO table (and, for ``meanstd``, the validation scores per fold: robust, whole,
skewed, single). Compare with ``smoothclap benchmark loco --config recommended`` and with the
inner-LOCO validation in BENCHMARKS.md ("Would a validation that sees new corpora choose
differently?").

    .venv/bin/python benchmarks/probe_single_clip.py speaker-projection   # ~10 min warm
    .venv/bin/python benchmarks/probe_single_clip.py meanstd              # ~20 min (features cold)
"""
from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

from smoothclap.experiments.loco import run_loco
from smoothclap.experiments.settings import LocoConfig

_STATE: dict = {}


def _project(x: np.ndarray) -> np.ndarray:
    mu, v = _STATE["mu"], _STATE["V"]
    c = np.asarray(x, dtype=np.float64) - mu
    return (c - (c @ v.T) @ v).astype(np.float32)


def patch_speaker_projection() -> tuple[str, ...]:
    """Model normalisation replaced: fit = speaker-mean directions out, applied to every clip alike."""
    from smoothclap import model as M

    def fit(self, raw, groups=None):  # groups: the training clips' speakers (feature_norm_group=speaker)
        x = np.asarray(raw, dtype=np.float64)
        names, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        mu = x.mean(0)
        means = np.stack([x[inv == i].mean(0) for i in range(len(names))]) - mu
        _STATE.update(mu=mu, V=np.linalg.svd(means, full_matrices=False)[2][: len(names) - 1])
        y = _project(x)
        if self.config.standardize_audio:
            t = y.astype(np.float64)
            self.audio_mean.copy_(torch.from_numpy(t.mean(0)))
            self.audio_std.copy_(torch.from_numpy(t.std(0, ddof=1)).float().clamp_min(1e-6))
        return y

    def normalize(self, raw, groups=None):  # no test statistics: groups are ignored
        x = raw.detach().cpu().numpy() if torch.is_tensor(raw) else raw
        return torch.from_numpy(_project(x))

    M.SmoothClapModel.fit_normalization = fit
    M.SmoothClapModel.normalize_audio_features = normalize
    return ("model.feature_norm_group=speaker",)


def patch_meanstd() -> None:
    """Whisper with ``layers``: mean and std over real frames per layer (``[B, L, 768]``)."""
    from smoothclap.towers import whisper as W

    init = W.WhisperTinyEnTower.__init__

    def new_init(self, *a, **kw):
        init(self, *a, **kw)
        if self.layers is not None:
            self.dim = 2 * 384 * len(self.layers)

    def forward_hidden(self, waves, layers=True):
        self._ensure_loaded()
        segs, owner = [], []
        for i, w in enumerate(waves):
            for seg in self._windows(w):
                segs.append(self.log_mel(seg))
                owner.append(i)
        lens = [m.shape[1] for m in segs]
        mels = np.zeros((len(segs), segs[0].shape[0], max(lens)), dtype=np.float32)
        for j, m in enumerate(segs):
            mels[j, :, : m.shape[1]] = m
        states, mask = self.encode_mels(torch.from_numpy(mels), lens, all_layers=layers)
        hid = torch.stack(states, 1).double()
        m = mask.to(hid.dtype)
        s1 = torch.einsum("sltd,st->sld", hid, m).numpy()
        s2 = torch.einsum("sltd,st->sld", hid * hid, m).numpy()
        n = len(waves)
        t1, t2, c = np.zeros((n, *s1.shape[1:])), np.zeros((n, *s1.shape[1:])), np.zeros(n)
        np.add.at(t1, owner, s1)
        np.add.at(t2, owner, s2)
        np.add.at(c, owner, m.sum(1).numpy())
        mean = t1 / c[:, None, None]
        std = np.sqrt(np.maximum(t2 / c[:, None, None] - mean ** 2, 0))
        return torch.from_numpy(np.concatenate([mean, std], -1).astype(np.float32))

    W.WhisperTinyEnTower.__init__ = new_init
    W.WhisperTinyEnTower.forward_hidden = forward_hidden
    W.WhisperTinyEnTower.forward_waves = lambda self, waves: forward_hidden(self, waves)[:, list(self.layers)].flatten(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variant", choices=["speaker-projection", "meanstd"])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--cache-dir", default=None, help="meanstd: its own cache (default: a temporary folder)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    common = dict(data_root=args.data_root, config="recommended", probe=False, save_models=False, progress=False,
                  out_dir=args.out or tempfile.mkdtemp(prefix=f"probe_{args.variant}."))
    if args.variant == "speaker-projection":
        lc = LocoConfig(overrides=patch_speaker_projection(), **common)
    else:
        patch_meanstd()
        lc = LocoConfig(validate=True, validation_scheme="corpus", validation_seeds=(0,),
                        grid={"whisper all layers mean+std, corpus-norm": [
                            "towers.audio=whisper-tiny-en?layers=all", "model.feature_norm_group=corpus"]},
                        cache_dir=args.cache_dir or tempfile.mkdtemp(prefix="probe_meanstd_cache."), **common)
    res = run_loco(lc)
    print(res.get("table_md", ""))
    for corpus, r in res["heldout"].items():
        for name, cand in ((r.get("validation") or {}).get("candidates") or {}).items():
            folds = cand["per_fold"]
            print(f"validation, held out {corpus}: {name}: robust {cand['score']:.3f}; " + ", ".join(
                f"{p} {np.mean([f[p] for f in folds]):.3f}" for p in ("whole", "skewed", "single")))


if __name__ == "__main__":
    main()
