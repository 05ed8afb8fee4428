"""Test helpers: tiny randomly initialised stand-ins of the paper's tower classes (Wav2Vec2Model,
BertModel) saved to local folders, and short generated clips. No hub, no downloads."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

SR = 16000
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "speaker", "is", "angry", "happy", "sad", "neutral", "and",
         "has", "a", "high", "low", "normal", "pitch", "loud", "quiet", "voice", "the", "fast", "slow", ","]


def tiny_wav2vec2(path: Path, seed: int = 0, hidden: int = 32) -> Path:
    """A 2-layer Wav2Vec2Model (no dropout, no time masking, no layer drop) + feature extractor."""
    import torch
    import transformers as tf

    cfg = tf.Wav2Vec2Config(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
                            hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                            final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0, mask_feature_prob=0.0)
    torch.manual_seed(seed)
    tf.Wav2Vec2Model(cfg).save_pretrained(path)
    tf.Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(path)
    return Path(path)


def tiny_bert(path: Path, seed: int = 0, hidden: int = 24) -> Path:
    """A 2-layer BertModel (no dropout) + a word-level fast tokenizer."""
    import torch
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                      cls_token="[CLS]", sep_token="[SEP]")
    cfg = tf.BertConfig(vocab_size=len(vocab) + 2, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=64, pad_token_id=0,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    tf.BertModel(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return Path(path)


LABELS = ("angry", "happy", "sad", "neutral")
_F0 = {"angry": 220.0, "happy": 260.0, "sad": 140.0, "neutral": 180.0}
_AMP = {"angry": 0.5, "happy": 0.35, "sad": 0.12, "neutral": 0.2}


def clip(label: str, seconds: float, seed: int) -> np.ndarray:
    """A voiced-sounding clip: harmonics of a gliding f0 with amplitude modulation and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = _F0[label] * (1 + 0.05 * rng.standard_normal()) * (1 + 0.08 * np.sin(2 * np.pi * (1.5 + rng.random()) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum((0.6 ** k) * np.sin(k * phase) for k in range(1, 6))
    env = 0.6 + 0.4 * np.sin(2 * np.pi * (3 + rng.random()) * t) ** 2
    x = _AMP[label] * env * x / np.max(np.abs(x)) + 0.01 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def write_clips(root: Path, n: int, *, seconds=(1.0, 1.6), seed: int = 0, names=None) -> pd.DataFrame:
    """``n`` clips cycling through :data:`LABELS` under ``root``; a table (file, label, speaker)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        name = names[i] if names is not None else f"clip{i:03d}.wav"
        f = root / name
        f.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(f), clip(label, float(rng.uniform(*seconds)), seed * 1000 + i), SR, subtype="PCM_16")
        rows.append({"file": str(f), "label": label, "speaker": f"s{i % 3}"})
    return pd.DataFrame(rows)
