"""The shipped ``paper`` config: the paper's setting, and an end-to-end offline run of it with tiny randomly
initialised stand-ins of the same model classes (Wav2Vec2Model, BertModel) saved to local folders
and an MSP-Podcast fixture tree in the release layout (Audios/, Labels/labels_consensus.csv)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from smoothclap.config import load_config  # noqa: E402

PAPER = "paper"  # the shipped config, by name


def test_paper_config_values():
    cfg = load_config(PAPER)
    assert cfg.towers.audio == "hf:audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim?pool=mean"
    assert cfg.towers.text == "hf:bert-base-uncased?pool=cls"
    assert cfg.towers.local is None and cfg.towers.freeze_audio and cfg.towers.freeze_text
    assert cfg.model.embed_dim == 768
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.epochs) == (1e-3, 32, 10)
    assert cfg.train.mode == "e2e" and cfg.train.crop_seconds == 5.0
    assert (cfg.data.corpus, cfg.data.split, cfg.train.select_split) == ("msp-podcast", "train", "development")
    assert (cfg.loss.beta, cfg.loss.gamma) == (0.5, 0.1)  # the reported main run
    assert "pitch" in cfg.captions.variables


# (file, EmoClass, arousal, valence, speaker, gender, split)
_ROWS = [(f"MSP-PODCAST_{i // 4 + 1:04d}_{i:04d}.wav", "AHSN"[i % 4], 3 + i % 3, 2 + i % 4, str(10 + i % 3),
          ["Female", "Male"][i % 2], "Train") for i in range(12)]
_ROWS += [(f"MSP-PODCAST_0100_{i:04d}.wav", "AHSN"[i % 4], 4, 4, "Unknown", "Unknown", "Development") for i in range(6)]
_ROWS += [("MSP-PODCAST_0200_0001.wav", "X", 4, 4, "20", "Male", "Train"),       # no agreement: left out
          ("MSP-PODCAST_0200_0002.wav", "O", 4, 4, "20", "Male", "Development"),  # "other": not scored
          ("MSP-PODCAST_0300_0001.wav", "S", 2, 2, "21", "Female", "Test1")]


def make_msp_tree(root: Path) -> Path:
    import soundfile as sf

    from tiny_models import SR, clip

    code = {"A": "angry", "H": "happy", "S": "sad", "N": "neutral", "X": "neutral", "O": "neutral"}
    lines = ["FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"]
    for i, (name, c, act, val, spk, gen, split) in enumerate(_ROWS):
        f = root / "Audios" / name
        f.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(f), clip(code[c], 0.9 + 0.05 * (i % 8), seed=100 + i), SR, subtype="PCM_16")
        lines.append(f"{name},{c},{act},{val},4,{spk},{gen},{split}")
    (root / "Labels").mkdir(parents=True, exist_ok=True)
    (root / "Labels" / "labels_consensus.csv").write_text("\n".join(lines) + "\n")
    return root


def test_paper_config_end_to_end_offline(tmp_path):
    pytest.importorskip("opensmile")  # the paper's captions are binned eGeMAPS
    from tiny_models import tiny_bert, tiny_wav2vec2

    from smoothclap.cli import main
    from smoothclap.model import SmoothClapModel

    w2v, bert = tiny_wav2vec2(tmp_path / "wav2vec2"), tiny_bert(tmp_path / "bert")
    msp = make_msp_tree(tmp_path / "MSP-Podcast")
    run = tmp_path / "run"
    sets = [f"towers.audio=hf:{w2v}?pool=mean", f"towers.text=hf:{bert}?pool=cls", f"data.root={msp}",
            f"cache_dir={tmp_path / 'cache'}", "train.epochs=2", "train.batch_size=4", "train.num_workers=0",
            "train.crop_seconds=0.5", "train.device=cpu"]
    argv = ["-q", "train", "--config", str(PAPER), "--out", str(run)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0

    cfg = load_config(run / "config.yaml")
    assert cfg.train.mode == "e2e" and cfg.model.embed_dim == 768 and cfg.train.select_split == "development"
    hist = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2] and all("select_uar" in h for h in hist)
    sel = json.loads((run / "selection.json").read_text())
    assert sel["n"] == 6 and "other" not in sel["labels"]  # development rows, scored classes only
    assert [e["epoch"] for e in sel["epochs"]] == [1, 2]
    assert sel["best"]["uar"] == max(e["uar"] for e in sel["epochs"])
    best = SmoothClapModel.from_pretrained(run / "best_model")
    assert best.config.embed_dim == 768 and best.config.trained_on == ["msp-podcast"]
    assert best.config.audio_tower == f"hf:{w2v}?pool=mean"  # frozen towers: named, not copied
    caps = json.loads((run / "caption_bins.json").read_text())
    assert caps  # bins fitted on the training split only

    # the evaluation step after training (here: the fixture's test split, via the generic command)
    assert main(["-q", "evaluate", "--model", str(run / "best_model"), "--corpus", "msp-podcast",
                 "--data-root", str(msp), "--split", "test1", "--labels", "angry,happy,sad,neutral",
                 "--allow-trained-corpus", "--cache-dir", str(tmp_path / "cache")]) == 0
