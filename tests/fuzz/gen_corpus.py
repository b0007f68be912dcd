#!/usr/bin/env python3
"""gen_corpus.py — writes the binary seed inputs of the fuzz targets (tiny
llama2.c tokenizers and checkpoints, a gzip'd JSONL file, safetensors files,
Hugging Face tokenizers) into OUTDIR/<target>/ and large replay-only
regression inputs into OUTDIR/<target>-replay/.

They are generated at test time rather than committed so the repository holds
no opaque blobs; Python's standard library only. Usage: gen_corpus.py OUTDIR
"""
import gzip
import json
import math
import os
import struct
import sys


def write(path, data):
    # Atomic, since the replay and fuzz tests of one target may run at once.
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def tokenizer(pieces, max_len=None):
    """llama2.c tokenizer.bin: int32 max_token_length, then per entry
    float32 score, int32 length, bytes."""
    enc = [(s, p.encode("utf-8") if isinstance(p, str) else p) for s, p in pieces]
    if max_len is None:
        max_len = max(len(b) for _, b in enc) if enc else 1
    out = struct.pack("<i", max_len)
    for score, b in enc:
        out += struct.pack("<fi", score, len(b)) + b
    return out


def llama_pieces(merges):
    pieces = [(0.0, "<unk>"), (0.0, "<s>"), (0.0, "</s>")]
    pieces += [(0.0, "<0x%02X>" % i) for i in range(256)]
    pieces += [(-float(i), m) for i, m in enumerate(merges)]
    return pieces


def checkpoint(dim, hidden, layers, heads, kv_heads, vocab, seq, shared=True, seed=1):
    """llama2.c v0 checkpoint with deterministic small weights."""
    hs = dim // heads
    kvd = kv_heads * hs
    n = (vocab * dim + layers * dim + layers * dim * dim + 2 * layers * kvd * dim
         + layers * dim * dim + layers * dim + 3 * layers * hidden * dim + dim)
    vals = [((i * 7919 + seed * 104729) % 2001 - 1000) / 1000.0 for i in range(n)]
    freq = []
    for half in ("real", "imag"):
        for t in range(seq):
            for i in range(hs // 2):
                theta = t / (10000.0 ** (2 * i / hs))
                freq.append(math.cos(theta) if half == "real" else math.sin(theta))
    out = struct.pack("<7i", dim, hidden, layers, heads, kv_heads, vocab if shared else -vocab, seq)
    out += struct.pack("<%df" % n, *vals) + struct.pack("<%df" % len(freq), *freq)
    if not shared:
        out += struct.pack("<%df" % (vocab * dim), *vals[: vocab * dim])
    return out


ST_DTYPES = {"BOOL": ("?", 1), "U8": ("B", 1), "I8": ("b", 1), "F8_E5M2": ("B", 1),
             "F8_E4M3": ("B", 1), "I16": ("h", 2), "U16": ("H", 2), "F16": ("e", 2),
             "BF16": (None, 2), "I32": ("i", 4), "U32": ("I", 4), "F32": ("f", 4),
             "F64": ("d", 8), "I64": ("q", 8), "U64": ("Q", 8)}


def st_values(dtype, vals):
    fmt, size = ST_DTYPES[dtype]
    if dtype == "BF16":
        return b"".join(struct.pack("<I", struct.unpack("<I", struct.pack("<f", v))[0])[2:]
                        for v in vals)
    if dtype == "BOOL":
        vals = [bool(int(v) % 2) for v in vals]
    elif dtype not in ("F16", "F32", "F64"):
        vals = [int(v) % 100 for v in vals]
    return struct.pack("<%d%s" % (len(vals), fmt), *vals)


def safetensors(tensors, metadata=None, pad=0, order=None):
    """A safetensors file: tensors is [(name, dtype, shape, values)], laid out
    in list order (or `order`, a permutation of the data), header padded."""
    header, data, off = {}, b"", 0
    blobs = [(n, d, s, st_values(d, v)) for n, d, s, v in tensors]
    for k in (order or range(len(blobs))):
        n, d, s, b = blobs[k]
        header[n] = {"dtype": d, "shape": s, "data_offsets": [off, off + len(b)]}
        data += b
        off += len(b)
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, ensure_ascii=False).encode() + b" " * pad
    return struct.pack("<Q", len(h)) + h + data


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def hf_tiny(dtype="F32", tied=False, inv_freq=False):
    """The Llama fuzz_safetensors.c configures: hidden 4, intermediate 8, 1
    layer, 2 heads, 1 kv head, vocab 6."""
    D, H, V, KVD = 4, 8, 6, 2
    shapes = [("model.embed_tokens.weight", [V, D]),
              ("model.layers.0.input_layernorm.weight", [D]),
              ("model.layers.0.self_attn.q_proj.weight", [D, D]),
              ("model.layers.0.self_attn.k_proj.weight", [KVD, D]),
              ("model.layers.0.self_attn.v_proj.weight", [KVD, D]),
              ("model.layers.0.self_attn.o_proj.weight", [D, D]),
              ("model.layers.0.post_attention_layernorm.weight", [D]),
              ("model.layers.0.mlp.gate_proj.weight", [H, D]),
              ("model.layers.0.mlp.down_proj.weight", [D, H]),
              ("model.layers.0.mlp.up_proj.weight", [H, D]),
              ("model.norm.weight", [D])]
    if not tied:
        shapes.append(("lm_head.weight", [V, D]))
    if inv_freq:
        shapes.append(("model.layers.0.self_attn.rotary_emb.inv_freq", [1]))
    out, k = [], 0
    for name, shape in shapes:
        vals = [((k + i) * 37 % 17 - 8) / 8.0 for i in range(numel(shape))]
        k += numel(shape)
        out.append((name, "F32" if name.endswith("inv_freq") else dtype, shape, vals))
    return out


BYTES_TO_UNICODE = None


def byte_level_char(b):
    """GPT-2's bytes_to_unicode: printable bytes stand for themselves, the
    rest map to U+0100 + n in byte order."""
    global BYTES_TO_UNICODE
    if BYTES_TO_UNICODE is None:
        keep = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD))
                + list(range(0xAE, 0x100)))
        BYTES_TO_UNICODE, n = {}, 0
        for c in range(256):
            if c in keep:
                BYTES_TO_UNICODE[c] = chr(c)
            else:
                BYTES_TO_UNICODE[c] = chr(0x100 + n)
                n += 1
    return BYTES_TO_UNICODE[b]


def byte_level_vocab(words):
    """Byte-level vocabulary (every byte, then merged words) and the merges
    that build each word left to right."""
    vocab = {byte_level_char(b): b for b in range(256)}
    merges = []
    for w in words:
        pieces = [byte_level_char(b) for b in w.encode()]
        cur = pieces[0]
        for p in pieces[1:]:
            merges.append((cur, p))
            cur += p
            if cur not in vocab:
                vocab[cur] = len(vocab)
    return vocab, merges


def hftok_input(tokenizer, config=None, special_map=None, text=None, merges_txt=None):
    """fuzz_hftok.c's input: files separated by NUL bytes."""
    extras = [config, special_map, text, merges_txt]
    while extras and extras[-1] is None:
        extras.pop()
    parts = []
    # Sections are positional: one before a later one is empty when absent.
    for x in [tokenizer] + extras:
        if x is None:
            x = b""
        elif isinstance(x, str):
            x = x.encode()
        elif not isinstance(x, bytes):
            x = json.dumps(x, ensure_ascii=False).encode()
        parts.append(x)
    return b"\0".join(parts)


def hftok_seeds(out):
    d = os.path.join(out, "hftok")
    words = [" the", " hello", "Hello", " world", "123", " \u00e9t\u00e9", "ing"]
    vocab, merges = byte_level_vocab(words)
    eot = len(vocab)
    gpt2 = {"version": "1.0",
            "added_tokens": [{"id": eot, "content": "<|endoftext|>", "special": True,
                              "normalized": False, "lstrip": False, "rstrip": False,
                              "single_word": False}],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                              "use_regex": True},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": True,
                               "trim_offsets": False, "use_regex": True},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                        "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": "", "end_of_word_suffix": "",
                      "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                      "merges": ["%s %s" % m for m in merges]}}
    write(os.path.join(d, "gpt2-bytelevel.bin"),
          hftok_input(gpt2, text="Hello world, the 12345 <|endoftext|> \u00e9t\u00e9!"))

    # Llama 3: Split regex + ByteLevel without regex, merges as pairs,
    # ignore_merges, a TemplateProcessing BOS, tokenizer_config naming both.
    l3 = json.loads(json.dumps(gpt2))
    bos = eot + 1
    l3["added_tokens"] = [
        {"id": eot, "content": "<|end_of_text|>", "special": True, "normalized": False},
        {"id": bos, "content": "<|begin_of_text|>", "special": True, "normalized": False},
        {"id": bos + 1, "content": "<|eot_id|>", "special": True, "normalized": False,
         "lstrip": True, "rstrip": True}]
    l3["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?"
                                               "\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                                               "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "Digits", "individual_digits": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
         "use_regex": False}]}
    l3["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [], "special_tokens": {"<|begin_of_text|>": {
             "id": "<|begin_of_text|>", "ids": [bos], "tokens": ["<|begin_of_text|>"]}}}]}
    l3["model"]["merges"] = [list(m) for m in merges]
    l3["model"]["ignore_merges"] = True
    write(os.path.join(d, "llama3-split.bin"),
          hftok_input(l3, config={"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
                      text="<|begin_of_text|>I'm here 2024 <|eot_id|>\n\nok"))

    # Llama 2 / TinyLlama: SentencePiece-style BPE with byte fallback.
    sp = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    pieces = ["\u2581", "H", "e", "l", "o", "w", "r", "d", "\u2581H", "\u2581He", "ll",
              "\u2581Hell", "\u2581Hello", "\u2581w", "\u2581wor", "or", "ld", "\u2581world", "t",
              "\u2581t"]
    spv = {p: i for i, p in enumerate(sp + pieces)}
    sp_merges = ["\u2581 H", "\u2581H e", "l l", "\u2581He ll", "\u2581Hell o", "\u2581 w",
                 "o r", "\u2581w or", "l d", "\u2581wor ld", "\u2581 t"]
    llama2 = {"version": "1.0",
              "added_tokens": [{"id": i, "content": c, "special": True, "normalized": False}
                               for i, c in enumerate(["<unk>", "<s>", "</s>"])],
              "normalizer": {"type": "Sequence", "normalizers": [
                  {"type": "Prepend", "prepend": "\u2581"},
                  {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
              "pre_tokenizer": None,
              "post_processor": {"type": "TemplateProcessing",
                                 "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                            {"Sequence": {"id": "A", "type_id": 0}}],
                                 "pair": [], "special_tokens": {
                                     "<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
              "decoder": {"type": "Sequence", "decoders": [
                  {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                  {"type": "ByteFallback"}, {"type": "Fuse"},
                  {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
              "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                        "continuing_subword_prefix": None, "end_of_word_suffix": None,
                        "fuse_unk": True, "byte_fallback": True, "vocab": spv,
                        "merges": sp_merges}}
    write(os.path.join(d, "llama2-sp.bin"),
          hftok_input(llama2, config={"bos_token": {"content": "<s>", "__type": "AddedToken"},
                                      "eos_token": "</s>", "add_bos_token": True},
                      text="Hello world \u00e9 \U0001F600 <s>t</s>"))
    # The same with a Metaspace pre-tokenizer / decoder and a special_tokens_map.
    meta = json.loads(json.dumps(llama2))
    meta["normalizer"] = None
    meta["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581",
                             "prepend_scheme": "first", "split": True}
    meta["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": True},
        {"type": "ByteFallback"}, {"type": "Fuse"}]}
    write(os.path.join(d, "metaspace.bin"),
          hftok_input(meta, config=b"", special_map={"bos_token": "<s>", "eos_token": "</s>"},
                      text="  Hello  world"))
    # GPT-2 files: vocab.json + merges.txt (fifth section).
    merges_txt = "#version: 0.2\n" + "".join("%s %s\n" % m for m in merges)
    v2 = dict(vocab)
    v2["<|endoftext|>"] = eot
    write(os.path.join(d, "gpt2-files.bin"),
          hftok_input(v2, text="Hello the world", merges_txt=merges_txt))
    # Replace normalizer with a regex, a Strip/Replace decoder chain, no unk.
    odd = json.loads(json.dumps(gpt2))
    odd["normalizer"] = {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}
    odd["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithNext",
         "invert": False},
        {"type": "ByteLevel", "add_prefix_space": True, "use_regex": False}]}
    odd["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "ByteLevel"}, {"type": "Replace", "pattern": {"String": "  "}, "content": " "},
        {"type": "Strip", "content": " ", "start": 0, "stop": 1}]}
    write(os.path.join(d, "replace-split.bin"), hftok_input(odd, text="a  b\t\tc\n"))


def safetensors_seeds(out):
    d = os.path.join(out, "safetensors")
    write(os.path.join(d, "hf-untied-f32.safetensors"), safetensors(hf_tiny("F32")))
    write(os.path.join(d, "hf-tied-bf16.safetensors"),
          safetensors(hf_tiny("BF16", tied=True), metadata={"format": "pt"}, pad=5))
    t = hf_tiny("F16", tied=True, inv_freq=True)
    write(os.path.join(d, "hf-f16-shuffled.safetensors"),
          safetensors(t, order=list(reversed(range(len(t))))))
    every = [("t_%s" % dt.lower(), dt, [2, 3], [1.5, -2.0, 0.0, 65504.0, 1e-7, -0.25])
             for dt in ST_DTYPES]
    write(os.path.join(d, "every-dtype.safetensors"),
          safetensors(every, metadata={"format": "pt", "note": "\u00e9\n\"quoted\""}))
    write(os.path.join(d, "edge-shapes.safetensors"),
          safetensors([("scalar", "F32", [], [3.0]), ("empty", "F16", [0, 4], []),
                       ("zero-dim", "I64", [3, 0, 2], []), ("a.b/c d\u00e9", "BF16", [1], [2.0]),
                       ("nd", "F32", [1, 1, 1, 1, 1, 1, 1, 2], [1.0, 2.0])]))
    write(os.path.join(d, "empty.safetensors"), safetensors([], metadata={}))
    write(os.path.join(d, "no-tensors.safetensors"), safetensors([]))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_corpus.py OUTDIR")
    out = sys.argv[1]

    merges = [" ", "H", "e", "l", "o", "w", "r", "d", "He", "ll", "llo", "Hello", " w", " wor",
              "or", "ld", " world", "é", "\U0001F600", "<0x", "<0x4", "ab>", " "]
    tok = os.path.join(out, "tok")
    write(os.path.join(tok, "llama-bytes.bin"), tokenizer(llama_pieces(merges)))
    # No byte-fallback pieces: most texts are unencodable.
    write(os.path.join(tok, "no-bytes.bin"),
          tokenizer([(0.0, "<unk>"), (0.0, "<s>"), (0.0, "</s>"), (-1.0, " "), (-2.0, "a"),
                     (-3.0, " a"), (-4.0, "aa")]))
    # Empty pieces, duplicates, a NaN-free negative score, max_len larger than any piece.
    write(os.path.join(tok, "odd.bin"),
          tokenizer([(0.0, ""), (1.0, "<s>"), (2.0, ""), (-1e30, "x"), (5.0, "x"),
                     (3.0, "<0x41>"), (0.5, "<0x")], max_len=64))
    write(os.path.join(tok, "three.bin"), tokenizer([(0.0, "<unk>"), (0.0, "<s>"), (0.0, "</s>")]))

    ckpt = os.path.join(out, "ckpt")
    write(os.path.join(ckpt, "tiny-shared.bin"), checkpoint(4, 8, 1, 2, 1, 8, 4))
    write(os.path.join(ckpt, "tiny-unshared.bin"), checkpoint(4, 8, 1, 2, 2, 6, 2, shared=False))
    write(os.path.join(ckpt, "tiny-2layer.bin"), checkpoint(8, 16, 2, 2, 2, 5, 3, seed=2))
    write(os.path.join(ckpt, "header-only.bin"), struct.pack("<7i", 4, 8, 1, 2, 1, 8, 4))

    # Replay only (too large to mutate): long message lists, which data.c
    # once indexed from the list head for every message (quadratic: about
    # 20 s per load at 40,000 messages). Replayed under every setting, the
    # old code runs past run.sh's 60 s per-input timeout.
    n = 30000
    user = '{"role": "user", "content": "x"}, ' * (n - 1)
    lines = ['{"messages": [%s{"role": "assistant", "content": "y"}]}' % user,
             '{"chosen": [%s{"role": "assistant", "content": "y"}], '
             '"rejected": [%s{"role": "assistant", "content": "z"}]}' % (user, user)]
    write(os.path.join(out, "data-replay", "many-messages.jsonl"),
          ("\n".join(lines) + "\n").encode())

    rows = (b'{"prompt": "Hi", "chosen": " there", "rejected": " go"}\n'
            b'{"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5]}\n'
            b'{"prompt": "p", "completion": "c"}\n')
    write(os.path.join(out, "data", "rows.jsonl.gz"), gzip.compress(rows, mtime=0))

    safetensors_seeds(out)
    hftok_seeds(out)


if __name__ == "__main__":
    main()
