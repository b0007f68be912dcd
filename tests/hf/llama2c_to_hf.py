#!/usr/bin/env python3
"""llama2c_to_hf.py — an independent llama2.c -> Hugging Face converter, and
the hf_convert test that checks brewslm's HF loader and exporter against it.

  llama2c_to_hf.py convert MODEL.bin OUT_DIR
      Writes OUT_DIR/config.json + OUT_DIR/model.safetensors (F32) from a
      llama2.c "v0" checkpoint with the Python standard library only. q_proj
      and k_proj rows get transformers' convert_llama_weights_to_hf.py
      `permute`: w.view(heads, HS // 2, 2, dim).transpose(1, 2).reshape(...)

  llama2c_to_hf.py tokenizer TOKENIZER.bin OUT_DIR
      Writes OUT_DIR/tokenizer.json (a SentencePiece-style BPE with byte
      fallback, as transformers' LlamaConverter builds it: merges from the
      pieces' scores) + tokenizer_config.json (<s> / </s>) from a llama2.c
      tokenizer.bin; it encodes like the .bin (tests/test_hftok.c checks the
      same construction against llama2-tokenizer.bin). Importable:
      sentencepiece_tokenizer(), bytelevel_tokenizer() for other tests.

  llama2c_to_hf.py selftest
      The meson test hf_convert (needs BREWSLM_BUILD, run from the repo root).
      For ../shared/models/{stories260K,aidreams260K}.bin:
        1. convert with this script; `test_hf --compare` says brewslm's loader
           un-permutes it back to the .bin's parameters bit-identically;
        2. `test_hf --export` (the C exporter) writes the same tensors, byte
           for byte, and a config.json with the same fields;
        3. `brewslm generate --ids` gives the same greedy ids from the .bin,
           this script's folder and the C exporter's folder (and for
           aidreams260K, llama2.c run.c's ids from ../shared/README.md);
        4. with torch (Debian's python3-torch): a transformers-style Llama
           forward (rotate_half RoPE, repeat_kv) over each folder and a
           llama2.c-style forward (adjacent-pair RoPE) over the .bin give the
           same logits (float64) and the greedy ids of step 3; the C
           exporter's BF16 file equals torch's .to(torch.bfloat16) bits.
      Without torch, step 4 is reported as skipped and the rest still runs.
"""

import array
import json
import os
import struct
import subprocess
import sys
import tempfile

AIDREAMS_RUNC_IDS = [319, 459, 355, 260, 275, 429, 339, 315, 374, 327, 446, 262, 421, 392, 275]


# ---------------------------------------------------------------------------
# llama2.c v0 reading (stdlib)

def read_llama2c(path):
    with open(path, "rb") as f:
        raw = f.read()
    dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hs = dim // heads
    kvd = kv_heads * hs
    floats = array.array("f")
    floats.frombytes(raw[28:])
    if sys.byteorder != "little":
        floats.byteswap()
    pos = 0

    def take(n):
        nonlocal pos
        out = floats[pos:pos + n]
        pos += n
        return out

    t = {}
    t["tok_emb"] = take(vocab * dim)
    for name, n in (("rms_att", dim), ("wq", dim * dim), ("wk", kvd * dim), ("wv", kvd * dim),
                    ("wo", dim * dim), ("rms_ffn", dim), ("w1", hidden * dim),
                    ("w2", dim * hidden), ("w3", hidden * dim)):
        t[name] = [take(n) for _ in range(layers)]
    t["rms_final"] = take(dim)
    take(seq * hs // 2)  # freq_cis_real
    take(seq * hs // 2)  # freq_cis_imag
    t["wcls"] = t["tok_emb"] if shared else take(vocab * dim)
    if pos != len(floats):
        raise ValueError(f"{path}: {len(floats) - pos} floats left over")
    cfg = dict(dim=dim, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
               vocab=vocab, seq=seq, shared=shared)
    return cfg, t


def permute(w, n_heads, rows, cols):
    """HF's permute: view(heads, HS/2, 2, cols).transpose(1, 2) -> (rows, cols)."""
    hs = rows // n_heads
    out = array.array("f", bytes(4 * rows * cols))
    for h in range(n_heads):
        for i in range(hs // 2):
            for two in range(2):
                src = (h * hs + 2 * i + two) * cols
                dst = (h * hs + two * (hs // 2) + i) * cols
                out[dst:dst + cols] = w[src:src + cols]
    return out


def hf_tensors(cfg, t):
    """[(name, shape, array('f'))] in transformers' names, HF row order."""
    d, h, kvd = cfg["dim"], cfg["hidden"], cfg["kv_heads"] * (cfg["dim"] // cfg["heads"])
    out = [("model.embed_tokens.weight", [cfg["vocab"], d], t["tok_emb"])]
    for l in range(cfg["layers"]):
        p = f"model.layers.{l}."
        out += [
            (p + "input_layernorm.weight", [d], t["rms_att"][l]),
            (p + "self_attn.q_proj.weight", [d, d], permute(t["wq"][l], cfg["heads"], d, d)),
            (p + "self_attn.k_proj.weight", [kvd, d],
             permute(t["wk"][l], cfg["kv_heads"], kvd, d)),
            (p + "self_attn.v_proj.weight", [kvd, d], t["wv"][l]),
            (p + "self_attn.o_proj.weight", [d, d], t["wo"][l]),
            (p + "post_attention_layernorm.weight", [d], t["rms_ffn"][l]),
            (p + "mlp.gate_proj.weight", [h, d], t["w1"][l]),
            (p + "mlp.up_proj.weight", [h, d], t["w3"][l]),
            (p + "mlp.down_proj.weight", [d, h], t["w2"][l]),
        ]
    out.append(("model.norm.weight", [d], t["rms_final"]))
    if not cfg["shared"]:
        out.append(("lm_head.weight", [cfg["vocab"], d], t["wcls"]))
    return out


def hf_config(cfg):
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": cfg["dim"] // cfg["heads"],
        "hidden_act": "silu",
        "hidden_size": cfg["dim"],
        "initializer_range": 0.02,
        "intermediate_size": cfg["hidden"],
        "max_position_embeddings": cfg["seq"],
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": cfg["heads"],
        "num_hidden_layers": cfg["layers"],
        "num_key_value_heads": cfg["kv_heads"],
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": cfg["shared"],
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": cfg["vocab"],
    }


def write_safetensors(path, tensors):
    """F32 tensors in the given order (deliberately not sorted, unlike brewslm)."""
    header, offset = {}, 0
    for name, shape, data in tensors:
        n = 4 * len(data)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for _, _, data in tensors:
            a = array.array("f", data)
            if sys.byteorder != "little":
                a.byteswap()
            f.write(a.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def convert(bin_path, out_dir):
    cfg, t = read_llama2c(bin_path)
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), hf_tensors(cfg, t))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(cfg), f, indent=2, sort_keys=True)
        f.write("\n")


# ---------------------------------------------------------------------------
# tokenizers (stdlib): tokenizer.json + tokenizer_config.json

def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)
        f.write("\n")


def _added(i, content):
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def sentencepiece_tokenizer(bin_path, out_dir, chat_template=None):
    """tokenizer.json from a llama2.c tokenizer.bin: <unk> <s> </s> specials,
    "▁" for spaces, merges for every split of a piece into two pieces, ordered
    by the piece's score (transformers' SentencePieceExtractor), Prepend +
    Replace normalizer and the Llama decoder chain (legacy Llama layout)."""
    with open(bin_path, "rb") as f:
        raw = f.read()
    pos, pieces, scores = 4, [], []
    while pos < len(raw):
        score, n = struct.unpack("<fi", raw[pos:pos + 8])
        pieces.append(raw[pos + 8:pos + 8 + n].decode("utf-8"))
        scores.append(score)
        pos += 8 + n
    meta = ["<unk>", "<s>", "</s>"] + [p.replace(" ", "\u2581") for p in pieces[3:]]
    ids = {}
    for i, m in enumerate(meta):
        ids.setdefault(m, i)
    rows = []
    for i in range(3, len(meta)):
        p = meta[i]
        for k in range(1, len(p)):
            left, right = ids.get(p[:k]), ids.get(p[k:])
            if left is not None and right is not None:
                rows.append((-scores[i], i, left, right))
    rows.sort()
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added(i, meta[i]) for i in range(3)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True,
                  "vocab": {m: i for m, i in sorted(ids.items(), key=lambda x: x[1])},
                  "merges": ["%s %s" % (meta[l], meta[r]) for _, _, l, r in rows]},
    }
    os.makedirs(out_dir, exist_ok=True)
    _write_json(os.path.join(out_dir, "tokenizer.json"), tok)
    cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
           "eos_token": "</s>", "unk_token": "<unk>",
           "tokenizer_class": "LlamaTokenizer"}
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    _write_json(os.path.join(out_dir, "tokenizer_config.json"), cfg)


def _gpt2_byte_chars():
    """GPT-2's bytes_to_unicode: byte b -> the character standing for it."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


def bytelevel_tokenizer(out_dir, added=(), eos_token=None, chat_template=None):
    """A byte-level BPE without merges (ids 0..255 are the bytes) plus the
    added special tokens `added` (ids 256...), no BOS (as Qwen's); eos_token
    names one of them."""
    chars = _gpt2_byte_chars()
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added(256 + i, a) for i, a in enumerate(added)],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False,
                           "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": False,
                  "vocab": {chars[b]: b for b in range(256)}, "merges": []},
    }
    os.makedirs(out_dir, exist_ok=True)
    _write_json(os.path.join(out_dir, "tokenizer.json"), tok)
    cfg = {"bos_token": None, "eos_token": eos_token, "model_max_length": 32768,
           "tokenizer_class": "Qwen2Tokenizer"}
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    _write_json(os.path.join(out_dir, "tokenizer_config.json"), cfg)


# ---------------------------------------------------------------------------
# independent safetensors reading (stdlib)

def read_safetensors(path):
    """{name: (dtype, shape, raw bytes)}"""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, en = e["data_offsets"]
        out[name] = (e["dtype"], e["shape"], raw[base + b:base + en])
    return out


# ---------------------------------------------------------------------------
# torch forwards (float64)

def torch_weights(path, torch):
    w = {}
    for name, (dtype, shape, data) in read_safetensors(path).items():
        assert dtype == "F32", (name, dtype)
        w[name] = torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(shape).double()
    return w


def hf_forward(w, c, ids, torch):
    """transformers' LlamaModel math: rotate_half RoPE on HF-ordered q/k."""
    F = torch.nn.functional
    T, D, nh, nkv = len(ids), c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hs = D // nh
    eps = c["rms_norm_eps"]
    inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, hs, 2, dtype=torch.int64).double() / hs))
    freqs = torch.outer(torch.arange(T).double(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()

    def rms(x, g):
        return g * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def rotate_half(x):
        return torch.cat((-x[..., hs // 2:], x[..., :hs // 2]), dim=-1)

    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(T, nh, hs).transpose(0, 1)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(T, nkv, hs).transpose(0, 1)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(T, nkv, hs).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nh // nkv, dim=0)  # repeat_kv
        v = v.repeat_interleave(nh // nkv, dim=0)
        att = F.softmax(q @ k.transpose(1, 2) / hs ** 0.5 + mask, dim=-1)
        x = x + (att @ v).transpose(0, 1).reshape(T, D) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        gate = F.silu(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T)
        x = x + gate @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    lm = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
    return x @ lm.T


def llama2c_forward(cfg, t, ids, torch):
    """llama2.c model.py math: adjacent-pair (complex) RoPE on llama2.c-ordered q/k."""
    F = torch.nn.functional
    T, D, nh, nkv = len(ids), cfg["dim"], cfg["heads"], cfg["kv_heads"]
    hs, H, L = D // nh, cfg["hidden"], cfg["layers"]

    def m(a, r, c):
        return torch.tensor(list(a), dtype=torch.float64).reshape(r, c)

    def vec(a):
        return torch.tensor(list(a), dtype=torch.float64)

    freqs = 1.0 / (10000.0 ** (torch.arange(0, hs, 2).double() / hs))
    ang = torch.outer(torch.arange(T).double(), freqs)  # (T, hs/2)
    cos, sin = ang.cos()[None], ang.sin()[None]

    def rope(x):  # (heads, T, hs), pairs (2i, 2i+1)
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)

    def rms(x, g):
        return g * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))

    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    kvd = nkv * hs
    x = m(t["tok_emb"], cfg["vocab"], D)[torch.tensor(ids)]
    for l in range(L):
        h = rms(x, vec(t["rms_att"][l]))
        q = rope((h @ m(t["wq"][l], D, D).T).view(T, nh, hs).transpose(0, 1))
        k = rope((h @ m(t["wk"][l], kvd, D).T).view(T, nkv, hs).transpose(0, 1))
        v = (h @ m(t["wv"][l], kvd, D).T).view(T, nkv, hs).transpose(0, 1)
        k = k.repeat_interleave(nh // nkv, dim=0)
        v = v.repeat_interleave(nh // nkv, dim=0)
        att = F.softmax(q @ k.transpose(1, 2) / hs ** 0.5 + mask, dim=-1)
        x = x + (att @ v).transpose(0, 1).reshape(T, D) @ m(t["wo"][l], D, D).T
        h = rms(x, vec(t["rms_ffn"][l]))
        g = F.silu(h @ m(t["w1"][l], H, D).T) * (h @ m(t["w3"][l], H, D).T)
        x = x + g @ m(t["w2"][l], D, H).T
    x = rms(x, vec(t["rms_final"]))
    return x @ m(t["wcls"], cfg["vocab"], D).T


# ---------------------------------------------------------------------------
# selftest

class Failures:
    def __init__(self):
        self.n = 0

    def check(self, ok, what):
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if not ok:
            self.n += 1


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return r.returncode, r.stdout, r.stderr


def greedy_ids(brewslm, model, n):
    rc, out, err = run([brewslm, "generate", "--model", model, "--temperature", "0",
                        "--max-new-tokens", str(n), "--ids"])
    if rc != 0:
        print(err, file=sys.stderr)
        return None
    return json.loads(out)["ids"]


def selftest():
    build = os.environ.get("BREWSLM_BUILD")
    if not build:
        print("BREWSLM_BUILD is not set (run through meson test)", file=sys.stderr)
        return 1
    brewslm = os.path.join(build, "brewslm")
    test_hf = os.path.join(build, "tests", "test_hf")
    for exe in (brewslm, test_hf):
        if not os.access(exe, os.X_OK):
            print(f"{exe} is not built", file=sys.stderr)
            return 1
    try:
        import torch
    except ImportError:
        torch = None
    fails = Failures()
    with tempfile.TemporaryDirectory(prefix="brewslm_hfconv_") as tmp:
        for name in ("stories260K", "aidreams260K"):
            bin_path = os.path.join("..", "shared", "models", name + ".bin")
            py_dir = os.path.join(tmp, name + "-py")
            c_dir = os.path.join(tmp, name + "-c")
            c16_dir = os.path.join(tmp, name + "-c16")
            convert(bin_path, py_dir)

            # 1. the C loader un-permutes the independent conversion exactly
            rc, _, err = run([test_hf, "--compare", bin_path, py_dir])
            fails.check(rc == 0, f"{name}: brewslm reads this script's folder back to the .bin "
                                 f"bit-identically {err.strip()}")

            # 2. the C exporter writes the same tensors and config
            rc, _, err = run([test_hf, "--export", bin_path, c_dir])
            fails.check(rc == 0, f"{name}: C export {err.strip()}")
            py_t = read_safetensors(os.path.join(py_dir, "model.safetensors"))
            c_t = read_safetensors(os.path.join(c_dir, "model.safetensors"))
            fails.check(sorted(py_t) == sorted(c_t), f"{name}: same tensor names")
            same = all(py_t[k] == c_t.get(k) for k in py_t)
            fails.check(same, f"{name}: C exporter's tensors equal this script's byte for byte "
                              f"(dtype, shape, data)")
            with open(os.path.join(py_dir, "config.json")) as f:
                py_cfg = json.load(f)
            with open(os.path.join(c_dir, "config.json")) as f:
                c_cfg = json.load(f)
            differ = sorted(k for k in set(py_cfg) | set(c_cfg) if py_cfg.get(k) != c_cfg.get(k))
            fails.check(not differ, f"{name}: C exporter's config.json equals this script's "
                                    f"{differ or ''}")

            # 3. same greedy ids from all three
            ids_bin = greedy_ids(brewslm, bin_path, 24)
            ids_py = greedy_ids(brewslm, py_dir, 24)
            ids_c = greedy_ids(brewslm, c_dir, 24)
            fails.check(ids_bin is not None and len(ids_bin) > 0 and ids_bin == ids_py == ids_c,
                        f"{name}: brewslm generate ids equal for .bin / script folder / C folder "
                        f"{ids_bin} {ids_py} {ids_c}")
            if name == "aidreams260K":
                fails.check(ids_py is not None and ids_py[:15] == AIDREAMS_RUNC_IDS,
                            f"{name}: ids from the HF folder equal llama2.c run.c's")

            # 4. torch: HF math over the folders == llama2.c math over the .bin
            if torch is None:
                print(f"skip {name}: torch is not importable by {sys.executable}; "
                      f"the forward-pass comparison did not run", flush=True)
                continue
            cfg, t = read_llama2c(bin_path)
            seq = [1] + (ids_bin or [])
            ref = llama2c_forward(cfg, t, seq, torch)
            for label, d in (("script", py_dir), ("C", c_dir)):
                w = torch_weights(os.path.join(d, "model.safetensors"), torch)
                with open(os.path.join(d, "config.json")) as f:
                    hc = json.load(f)
                logits = hf_forward(w, hc, seq, torch)
                diff = (logits - ref).abs().max().item()
                fails.check(diff < 1e-9, f"{name}: HF rotate-half forward over the {label} "
                                         f"folder equals the llama2.c forward (max |dlogit| "
                                         f"{diff:.2e})")
            # teacher-forced argmax where the top two are clearly apart
            top2 = ref.topk(2, dim=-1)
            agree = all(int(top2.indices[i, 0]) == seq[i + 1]
                        for i in range(len(seq) - 1)
                        if float(top2.values[i, 0] - top2.values[i, 1]) > 1e-4)
            fails.check(agree, f"{name}: torch greedy ids equal brewslm's")
            # BF16: the C exporter's bits equal torch's rounding
            rc, _, err = run([test_hf, "--export", bin_path, c16_dir, "--bf16"])
            fails.check(rc == 0, f"{name}: C BF16 export {err.strip()}")
            c16 = read_safetensors(os.path.join(c16_dir, "model.safetensors"))
            bad = []
            for k, (dtype, shape, data) in py_t.items():
                f32 = torch.frombuffer(bytearray(data), dtype=torch.float32)
                want = f32.to(torch.bfloat16).view(torch.int16).numpy().tobytes()
                got = c16[k]
                if got[0] != "BF16" or got[1] != shape or got[2] != want:
                    bad.append(k)
            fails.check(not bad, f"{name}: BF16 export equals torch .to(torch.bfloat16) {bad[:3]}")
    print(f"hf_convert: {fails.n} failed", flush=True)
    return 1 if fails.n else 0


def main(argv):
    if len(argv) == 4 and argv[1] == "convert":
        convert(argv[2], argv[3])
        return 0
    if len(argv) == 4 and argv[1] == "tokenizer":
        sentencepiece_tokenizer(argv[2], argv[3])
        return 0
    if len(argv) == 2 and argv[1] == "selftest":
        return selftest()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
