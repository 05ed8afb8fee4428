"""Test helpers: tiny randomly initialised stand-ins of the paper's tower classes (Wav2Vec2Model,
BertModel) saved to local folders, and short generated clips. No hub, no downloads."""
from __future__ import annotations

import math
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


# -- a tiny Hugging Face ClapModel (hf-clap: baselines) ----------------------------------------------
CORPUS = ["a dog barks loudly", "the sound of rain on a roof", "a person speaks angrily", "happy music plays",
          "a cat meows", "a calm voice", "sad slow speech"]
TEXTS = ["a dog barks", "rain", "an angry voice shouting at someone in a loud room"]
LOG_SCALE_A, LOG_SCALE_T = math.log(20.0), math.log(10.0)


def tiny_tokenizer():
    """A byte-level BPE RoBERTa-style fast tokenizer trained on a few sentences (no download)."""
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return tf.RobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                   model_max_length=64)


def tiny_clap(path, *, fusion: bool, seed: int = 0, hub_layout: bool = False):
    """A tiny ClapModel (RoBERTa 2x32, HTSAT depths (1, 1), dims 8/16, projection 16) + processor.

    The feature extractor is LAION's (48 kHz, 10 s, 64 mels, hop 480), so the HTSAT input must stay
    ``spec_size=256`` (``spec_size ** 2 / 64 >= 1001`` frames). ``hub_layout`` saves feature extractor
    and tokenizer separately (``preprocessor_config.json``, as LAION's hub repos) with the extractor's
    default ``truncation="fusion"``; otherwise ``ClapProcessor.save_pretrained`` with the truncation
    that fits the model.
    """
    import torch
    import transformers as tf

    tokenizer = tiny_tokenizer()
    tcfg = tf.ClapTextConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=66, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0)
    # hidden_size must be patch_embeds_hidden_size * 2 ** (len(depths) - 1) (the last stage's width)
    acfg = tf.ClapAudioConfig(spec_size=256, num_mel_bins=64, window_size=8, patch_embeds_hidden_size=8,
                              hidden_size=16, depths=[1, 1], num_attention_heads=[1, 1], mlp_ratio=1.0,
                              enable_fusion=fusion, fusion_type="aff_2d" if fusion else None,
                              hidden_dropout_prob=0.0)
    cfg = tf.ClapConfig(text_config=tcfg.to_dict(), audio_config=acfg.to_dict(), projection_dim=16)
    torch.manual_seed(seed)
    model = tf.ClapModel(cfg)
    with torch.no_grad():
        model.logit_scale_a.fill_(LOG_SCALE_A)
        model.logit_scale_t.fill_(LOG_SCALE_T)
    model.save_pretrained(path)
    if hub_layout:
        tf.ClapFeatureExtractor(frequency_min=50).save_pretrained(path)
        tokenizer.save_pretrained(path)
    else:
        fe = tf.ClapFeatureExtractor(frequency_min=50, truncation="fusion" if fusion else "rand_trunc")
        tf.ClapProcessor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(path)
    return path
