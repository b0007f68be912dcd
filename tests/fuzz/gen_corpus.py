#!/usr/bin/env python3
"""gen_corpus.py — writes the binary seed inputs of the fuzz targets (tiny
llama2.c tokenizers and checkpoints, a gzip'd JSONL file) into OUTDIR/<target>/
and large replay-only regression inputs into OUTDIR/<target>-replay/.

They are generated at test time rather than committed so the repository holds
no opaque blobs; Python's standard library only. Usage: gen_corpus.py OUTDIR
"""
import gzip
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


if __name__ == "__main__":
    main()
