"""In-corpus ceilings of the offline audio towers: how much emotion a speaker-independent linear
probe finds in each tower's frozen features of a corpus (issue 17).

A zero-shot model trained on other corpora rarely beats a linear probe trained on the corpus
itself with the same features, so the probe bounds what a recipe can reach there. For each corpus
and tower (Whisper tiny.en, its encoder layers concatenated as in ``--config recommended``;
openSMILE eGeMAPSv02 and ComParE_2016, research / non-commercial licence; Whisper + ComParE
concatenated) it prints the probe's UAR (:func:`smoothclap.experiments.loco.linear_probe`:
``GroupKFold`` by speaker, standardiser + logistic regression) and chance. Features go through the
embedding cache (ComParE is extracted cold the first time, at about 60x real time per core).

    .venv/bin/python benchmarks/probe_towers.py                      # turevdb emovo
    .venv/bin/python benchmarks/probe_towers.py --corpora emodb,ravdess,tess,emovo,turevdb
"""
from __future__ import annotations

import numpy as np

from _common import machine, parser, write_result

TOWERS = {"whisper (all layers)": "whisper-tiny-en?layers=all", "eGeMAPSv02": "egemaps",
          "ComParE_2016": "egemaps?set=ComParE_2016"}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--corpora", default="turevdb,emovo", help="comma-separated corpus names")
    args = p.parse_args()
    from smoothclap.cache import cache_root
    from smoothclap.embed import embed_audio_files
    from smoothclap.experiments.loco import linear_probe, load_corpus
    from smoothclap.towers import build_tower

    rows = []
    for name in args.corpora.split(","):
        table = load_corpus(name.strip(), args.data).reset_index(drop=True)
        files = table["file"].astype(str).tolist()
        feats = {k: embed_audio_files(build_tower(s), files, cache_dir=cache_root(None), progress=False)[0]
                 for k, s in TOWERS.items()}
        feats["whisper + ComParE"] = np.concatenate([feats["whisper (all layers)"], feats["ComParE_2016"]], 1)
        chance = 1.0 / table["label"].nunique()
        for tower, x in feats.items():
            r = linear_probe(x, table["label"], table["speaker"])
            rows.append({"corpus": name, "tower": tower, "dim": int(x.shape[1]), "probe_uar": r["uar"],
                         "chance": chance, "x_chance": r["uar"] / chance})
            print(f"{name:<10s} {tower:<22s} {x.shape[1]:>5d}-d  probe UAR {r['uar']:.3f}  "
                  f"({r['uar'] / chance:.2f}x chance)", flush=True)
    write_result("probe_towers", {"rows": rows, "machine": machine()}, args.out)


if __name__ == "__main__":
    main()
