// tok.c — tokenizers. The llama2.c tokenizer.bin reader and encoder follow
// llama2.c run.c (build_tokenizer / encode / decode) so that ids agree with
// run.c bit for bit; the byte tokenizer serves models trained from scratch;
// Hugging Face tokenizers are hftok.c's, dispatched here by kind.
//
// Differences from run.c, all on inputs where run.c has undefined behaviour:
// malformed files are rejected instead of overrunning buffers, a vocabulary
// without a " " piece byte-encodes the dummy prefix instead of emitting -1,
// and duplicate pieces resolve to the lowest id instead of whichever bsearch
// happens to hit.
//
// Same ids, other means: pieces are found through a hash map rather than
// bsearch, and merges come from a heap rather than a rescan of every pair per
// merge (merge_pairs), so encoding is O(n log n) in the text length where
// run.c's is O(n^2).
#include "tok.h"

#include "hftok.h"

#include <assert.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

// A piece longer than this is not a real tokenizer (Llama 2's longest is 27
// bytes); the bound keeps 2 * max_token_length + 3 far from overflow.
#define TOK_MAX_PIECE_LEN (1 << 20)

// The llama2.c vocabulary reserves <unk>, <s>, </s> before the 256 byte pieces.
#define LLAMA2C_BOS 1
#define LLAMA2C_EOS 2
#define LLAMA2C_BYTE_OFFSET 3

enum { TOK_KIND_LLAMA2C = 1, TOK_KIND_BYTES = 2, TOK_KIND_HF = 3 };

struct Tokenizer {
    int kind;
    int vocab_size;
    int max_token_length;      // longest piece in bytes (llama2c only)
    char **vocab;              // (V) NUL-terminated pieces pointing into arena
    int *vocab_len;            // (V) strlen of each piece
    float *scores;             // (V) merge priority, higher merges first
    int *slots;                // (slot_mask + 1) piece id or -1: open-addressing hash map
    size_t slot_mask;          // slot count - 1, a power of two past 2 V
    char *arena;               // storage of all pieces
    char byte_pieces[256 * 2]; // "b\0" for each byte value, as run.c
    HfTok *hf;                 // Hugging Face tokenizer (TOK_KIND_HF)
};

static void init_byte_pieces(Tokenizer *t) {
    for (int i = 0; i < 256; i++) {
        t->byte_pieces[i * 2] = (char)(unsigned char)i;
        t->byte_pieces[i * 2 + 1] = '\0';
    }
}

// FNV-1a: the map is probed on every codepoint and every merge candidate,
// where bsearch's ~15 strcmp per lookup dominated encoding.
static size_t hash_bytes(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return (size_t)h;
}

// Fills the piece -> id map; ids go in ascending order and a string already
// present keeps its slot, so duplicates resolve to the lowest id.
static int build_map(Tokenizer *t) {
    // at most 4 V slots, so neither the doubling nor the byte count overflows
    if ((size_t)t->vocab_size > SIZE_MAX / 4 / sizeof *t->slots) return -1;
    size_t cap = 16;
    while (cap < (size_t)t->vocab_size * 2)
        cap *= 2;
    t->slots = malloc(cap * sizeof *t->slots);
    if (!t->slots) return -1;
    t->slot_mask = cap - 1;
    for (size_t i = 0; i < cap; i++)
        t->slots[i] = -1;
    for (int id = 0; id < t->vocab_size; id++) {
        size_t len = (size_t)t->vocab_len[id];
        size_t h = hash_bytes(t->vocab[id], len) & t->slot_mask;
        for (; t->slots[h] != -1; h = (h + 1) & t->slot_mask) {
            int o = t->slots[h];
            if ((size_t)t->vocab_len[o] == len && memcmp(t->vocab[o], t->vocab[id], len) == 0)
                break;
        }
        if (t->slots[h] == -1) t->slots[h] = id;
    }
    return 0;
}

// Returns the lowest id whose piece is the len bytes at str, or -1.
static int str_lookup(const Tokenizer *t, const char *str, size_t len) {
    for (size_t h = hash_bytes(str, len) & t->slot_mask; t->slots[h] != -1;
         h = (h + 1) & t->slot_mask) {
        int id = t->slots[h];
        if ((size_t)t->vocab_len[id] == len && memcmp(t->vocab[id], str, len) == 0) return id;
    }
    return -1;
}

static uint32_t rd_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int32_t rd_i32(const unsigned char *p) {
    uint32_t u = rd_u32(p);
    int32_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static float rd_f32(const unsigned char *p) {
    uint32_t u = rd_u32(p);
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

// Reads a whole tokenizer.bin into *buf (malloc'd, caller frees).
static int read_file(const char *path, unsigned char **buf, size_t *size, BsError *err) {
    char *b = NULL;
    if (bs_read_file(path, INT_MAX, "tokenizer", "io", "invalid_tokenizer", &b, size, err) != 0)
        return -1;
    *buf = (unsigned char *)b;
    return 0;
}

// Walks the records of a tokenizer.bin image: validates the framing of every
// entry and counts them. With t non-NULL (t->vocab_size entries allocated) it
// also copies the first t->vocab_size entries into t.
static int scan_records(const unsigned char *buf, size_t size, const char *path, Tokenizer *t,
                        int *count, BsError *err) {
    if (size < 4)
        return bs_fail(err, "invalid_tokenizer", path,
                       "tokenizer %s is truncated: no max_token_length header", path);
    int32_t max_len = rd_i32(buf);
    if (max_len <= 0 || max_len > TOK_MAX_PIECE_LEN)
        return bs_fail(err, "invalid_tokenizer", path,
                       "tokenizer %s has an invalid max_token_length %d", path, (int)max_len);
    size_t off = 4;
    int n = 0;
    char *dst = t ? t->arena : NULL;
    while (off < size) {
        if (n == INT_MAX)
            return bs_fail(err, "invalid_tokenizer", path, "tokenizer %s has too many entries",
                           path);
        if (size - off < 8)
            return bs_fail(err, "invalid_tokenizer", path,
                           "tokenizer %s is truncated inside entry %d", path, n);
        float score = rd_f32(buf + off);
        int32_t len = rd_i32(buf + off + 4);
        off += 8;
        if (isnan(score))
            return bs_fail(err, "invalid_tokenizer", path, "tokenizer %s entry %d has a NaN score",
                           path, n);
        if (len < 0 || len > max_len)
            return bs_fail(err, "invalid_tokenizer", path,
                           "tokenizer %s entry %d has length %d outside 0..%d", path, n, (int)len,
                           (int)max_len);
        if (size - off < (size_t)len)
            return bs_fail(err, "invalid_tokenizer", path,
                           "tokenizer %s is truncated inside entry %d", path, n);
        if (memchr(buf + off, '\0', (size_t)len))
            return bs_fail(err, "invalid_tokenizer", path,
                           "tokenizer %s entry %d contains a NUL byte", path, n);
        if (t && n < t->vocab_size) {
            memcpy(dst, buf + off, (size_t)len);
            dst[len] = '\0';
            t->vocab[n] = dst;
            t->vocab_len[n] = len;
            t->scores[n] = score;
            dst += len + 1;
        }
        off += (size_t)len;
        n++;
    }
    if (t) t->max_token_length = max_len;
    *count = n;
    return 0;
}

// Counts the entries of a llama2.c tokenizer.bin (validating its framing), for
// callers that have no model to take vocab_size from. 0 or -1 with err filled.
int tok_count_llama2c(const char *path, int *count, BsError *err) {
    unsigned char *buf = NULL;
    size_t size = 0;
    if (read_file(path, &buf, &size, err) != 0) return -1;
    int rc = scan_records(buf, size, path, NULL, count, err);
    free(buf);
    return rc;
}

int tok_load_llama2c(Tokenizer **out, const char *path, int vocab_size, BsError *err) {
    *out = NULL;
    if (vocab_size < LLAMA2C_EOS + 1)
        return bs_fail(err, "invalid_argument", "vocab_size",
                       "vocab_size %d is too small for a llama2.c tokenizer", vocab_size);
    unsigned char *buf = NULL;
    size_t size = 0;
    Tokenizer *t = NULL;
    if (read_file(path, &buf, &size, err) != 0) goto fail;
    t = calloc(1, sizeof *t);
    if (!t) {
        bs_fail(err, "out_of_memory", path, "cannot allocate a tokenizer");
        goto fail;
    }
    t->kind = TOK_KIND_LLAMA2C;
    t->vocab_size = vocab_size;
    init_byte_pieces(t);
    size_t v = (size_t)vocab_size;
    t->vocab = malloc(v * sizeof *t->vocab);
    t->vocab_len = malloc(v * sizeof *t->vocab_len);
    t->scores = malloc(v * sizeof *t->scores);
    // Each entry takes 8 + len bytes in the file and len + 1 in the arena.
    t->arena = malloc(size ? size : 1);
    if (!t->vocab || !t->vocab_len || !t->scores || !t->arena) {
        bs_fail(err, "out_of_memory", path, "cannot allocate a %d-entry vocabulary", vocab_size);
        goto fail;
    }
    int count = 0;
    if (scan_records(buf, size, path, t, &count, err) != 0) goto fail;
    if (count != vocab_size) {
        bs_fail(err, "tokenizer_mismatch", path,
                "tokenizer %s holds %d entries, expected vocab_size %d", path, count, vocab_size);
        goto fail;
    }
    if (build_map(t) != 0) {
        bs_fail(err, "out_of_memory", path, "cannot allocate the piece map of %d entries",
                vocab_size);
        goto fail;
    }
    free(buf);
    *out = t;
    return 0;
fail:
    free(buf);
    tok_free(t);
    return -1;
}

int tok_create_bytes(Tokenizer **out, BsError *err) {
    *out = NULL;
    Tokenizer *t = calloc(1, sizeof *t);
    if (!t) return bs_fail(err, "out_of_memory", "", "cannot allocate a tokenizer");
    t->kind = TOK_KIND_BYTES;
    t->vocab_size = TOK_BYTES_VOCAB;
    init_byte_pieces(t);
    *out = t;
    return 0;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int tok_path_is_hf(const char *path) {
    return path && (is_dir(path) || ends_with(path, ".json"));
}

// 1 when dir/name is a regular file.
static int dir_has_file(const char *dir, const char *name) {
    char path[4096];
    struct stat st;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) return 0;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int tok_dir_has_hf(const char *dir) {
    if (!dir || !is_dir(dir)) return 0;
    return dir_has_file(dir, "tokenizer.json") ||
           (dir_has_file(dir, "vocab.json") && dir_has_file(dir, "merges.txt"));
}

int tok_load(Tokenizer **out, const char *path, int vocab_size, BsError *err) {
    *out = NULL;
    if (!path) return bs_fail(err, "invalid_argument", "tokenizer", "no tokenizer path");
    if (!is_dir(path) && !ends_with(path, ".json")) {
        if (vocab_size <= 0 && tok_count_llama2c(path, &vocab_size, err) != 0) return -1;
        return tok_load_llama2c(out, path, vocab_size, err);
    }
    HfTok *hf = NULL;
    if (hftok_load(&hf, path, err) != 0) return -1;
    int size = hftok_size(hf);
    if (vocab_size > 0 && size > vocab_size) {
        hftok_free(hf);
        return bs_fail(err, "tokenizer_mismatch", path,
                       "tokenizer %s has ids up to %d, beyond the model's vocab_size %d", path,
                       size - 1, vocab_size);
    }
    Tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        hftok_free(hf);
        return bs_fail(err, "out_of_memory", path, "cannot allocate a tokenizer");
    }
    t->kind = TOK_KIND_HF;
    t->vocab_size = vocab_size > 0 ? vocab_size : size;
    t->hf = hf;
    init_byte_pieces(t);
    *out = t;
    return 0;
}

void tok_free(Tokenizer *t) {
    if (!t) return;
    hftok_free(t->hf);
    free(t->vocab);
    free(t->vocab_len);
    free(t->scores);
    free(t->slots);
    free(t->arena);
    free(t);
}

int tok_vocab_size(const Tokenizer *t) {
    return t->vocab_size;
}

int tok_bos(const Tokenizer *t) {
    if (t->kind == TOK_KIND_HF) return hftok_bos(t->hf);
    return t->kind == TOK_KIND_BYTES ? TOK_BYTES_BOS : LLAMA2C_BOS;
}

int tok_eos(const Tokenizer *t) {
    if (t->kind == TOK_KIND_HF) return hftok_eos(t->hf);
    return t->kind == TOK_KIND_BYTES ? TOK_BYTES_EOS : LLAMA2C_EOS;
}

// Hugging Face: the crate's ids, framed by BOS / EOS when asked and present.
static int encode_hf(const Tokenizer *t, const char *text, int add_bos, int add_eos, int **ids,
                     int *n, BsError *err) {
    int *body = NULL, nb = 0;
    if (hftok_encode(t->hf, text, &body, &nb, err) != 0) return -1;
    int bos = add_bos ? hftok_bos(t->hf) : -1, eos = add_eos ? hftok_eos(t->hf) : -1;
    if (nb > INT_MAX - 2) {
        free(body);
        return bs_fail(err, "invalid_argument", "text", "text encodes to too many tokens");
    }
    int total = nb + (bos >= 0) + (eos >= 0);
    int *all = malloc((size_t)(total ? total : 1) * sizeof *all);
    if (!all) {
        free(body);
        return bs_fail(err, "out_of_memory", "text", "cannot allocate %d token ids", total);
    }
    int k = 0;
    if (bos >= 0) all[k++] = bos;
    memcpy(all + k, body, (size_t)nb * sizeof *all);
    k += nb;
    if (eos >= 0) all[k++] = eos;
    free(body);
    *ids = all;
    *n = total;
    return 0;
}

// The id of the merged pair (a, b), or -1; buf holds 2 * max_token_length bytes.
static int pair_lookup(const Tokenizer *t, int a, int b, char *buf) {
    memcpy(buf, t->vocab[a], (size_t)t->vocab_len[a]);
    memcpy(buf + t->vocab_len[a], t->vocab[b], (size_t)t->vocab_len[b]);
    return str_lookup(t, buf, (size_t)t->vocab_len[a] + (size_t)t->vocab_len[b]);
}

// A merge candidate: symbols left and right (adjacent when pushed) would
// become id. The version stamps tell a stale candidate, one whose symbols
// changed or died after it was pushed, from a live one.
typedef struct {
    float score;
    int left, right, id;
    unsigned left_ver, right_ver;
} MergeCand;

// The symbols of the merge loop: a doubly linked list over tokens[], where
// the left symbol of a merge takes the merged id and the right one dies.
typedef struct {
    int *tokens;
    int *prev, *next; // -1 at the ends
    unsigned *ver;    // bumped whenever a symbol changes id or dies
    MergeCand *heap;
    size_t heap_n;
} MergeState;

// run.c's choice: the highest score, then the leftmost pair. Symbols keep
// their index in tokens[] for life and the list keeps index order, so index
// order is position order.
static int cand_before(const MergeCand *a, const MergeCand *b) {
    if (a->score != b->score) return a->score > b->score;
    return a->left < b->left;
}

static void heap_sift_down(MergeCand *h, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && cand_before(&h[l], &h[m])) m = l;
        if (r < n && cand_before(&h[r], &h[m])) m = r;
        if (m == i) return;
        MergeCand tmp = h[i];
        h[i] = h[m];
        h[m] = tmp;
        i = m;
    }
}

static void heap_sift_up(MergeCand *h, size_t i) {
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&h[i], &h[p])) return;
        MergeCand tmp = h[i];
        h[i] = h[p];
        h[p] = tmp;
        i = p;
    }
}

// Pushes the candidate for the pair (left, right) when run.c would ever
// merge it: its piece exists with a score above run.c's -1e10 floor. The heap
// has room for every push (see merge_pairs), so this cannot fail.
static void cand_push(const Tokenizer *t, MergeState *s, int left, int right, char *buf) {
    int id = pair_lookup(t, s->tokens[left], s->tokens[right], buf);
    if (id == -1 || !(t->scores[id] > -1e10f)) return;
    s->heap[s->heap_n] = (MergeCand){t->scores[id], left, right, id, s->ver[left], s->ver[right]};
    heap_sift_up(s->heap, s->heap_n++);
}

// run.c encode() merges, on each pass, the adjacent pair with the highest
// score (above -1e10, leftmost on ties) until none is left; a pass there is a
// scan of every pair, so the loop is quadratic in the text length. Here the
// same choice comes from a max-heap of candidates keyed (score desc, position
// asc) over a linked list of symbols, with stale candidates skipped when
// popped: each merge is O(log n) and the ids are run.c's, merge for merge.
static int merge_pairs(const Tokenizer *t, int *tokens, int *n_tokens, char *buf, BsError *err) {
    int n = *n_tokens;
    if (n < 2) return 0;
    int rc = -1;
    MergeState s = {.tokens = tokens};
    // n - 1 initial candidates and at most 2 per merge, of which there are at
    // most n - 1: 3n bounds the heap.
    size_t un = (size_t)n;
    if (un > SIZE_MAX / 3 / sizeof(MergeCand))
        return bs_fail(err, "invalid_argument", "text", "text of %d tokens is too long", n);
    s.prev = malloc(un * sizeof *s.prev);
    s.next = malloc(un * sizeof *s.next);
    s.ver = calloc(un, sizeof *s.ver);
    s.heap = malloc(3 * un * sizeof *s.heap);
    if (!s.prev || !s.next || !s.ver || !s.heap) {
        bs_fail(err, "out_of_memory", "text", "cannot allocate the merge state for %d tokens", n);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        s.prev[i] = i - 1;
        s.next[i] = i + 1 < n ? i + 1 : -1;
    }
    for (int i = 0; i + 1 < n; i++)
        cand_push(t, &s, i, i + 1, buf);

    while (s.heap_n > 0) {
        MergeCand c = s.heap[0];
        s.heap[0] = s.heap[--s.heap_n];
        heap_sift_down(s.heap, s.heap_n, 0);
        // A symbol's version moves on every change of its id and on its
        // death, so equal stamps mean both symbols are as they were when the
        // pair was pushed, and so still adjacent.
        if (s.ver[c.left] != c.left_ver || s.ver[c.right] != c.right_ver) continue;
        int l = c.left, r = c.right;
        assert(s.next[l] == r);
        tokens[l] = c.id;
        s.ver[l]++;
        s.ver[r]++;
        s.next[l] = s.next[r];
        if (s.next[l] != -1) s.prev[s.next[l]] = l;
        if (s.prev[l] != -1) cand_push(t, &s, s.prev[l], l, buf);
        if (s.next[l] != -1) cand_push(t, &s, l, s.next[l], buf);
    }
    // Symbol 0 never dies (only right symbols do), so the list starts there;
    // live indices only grow along it, so compacting in place is safe.
    int k = 0;
    for (int i = 0; i != -1; i = s.next[i])
        tokens[k++] = tokens[i];
    *n_tokens = k;
    rc = 0;
done:
    free(s.prev);
    free(s.next);
    free(s.ver);
    free(s.heap);
    return rc;
}

// run.c encode(): BOS, the dummy prefix, one token per codepoint (or its
// bytes), then the merges.
static int encode_llama2c(const Tokenizer *t, const char *text, int add_bos, int add_eos,
                          int *tokens, int *n_tokens, BsError *err) {
    int n = 0;
    char *buf = malloc((size_t)t->max_token_length * 2 + 3);
    if (!buf) return bs_fail(err, "out_of_memory", "", "cannot allocate the merge buffer");

    if (add_bos) tokens[n++] = LLAMA2C_BOS;
    // sentencepiece's add_dummy_prefix, applied only to non-empty text as run.c
    if (text[0] != '\0') {
        int id = str_lookup(t, " ", 1);
        if (id == -1) id = ' ' + LLAMA2C_BYTE_OFFSET;
        if (id >= t->vocab_size) goto unencodable;
        tokens[n++] = id;
    }
    // One token per UTF-8 codepoint when the vocabulary has it, else its bytes.
    size_t str_len = 0;
    for (const char *c = text; *c != '\0'; c++) {
        if ((*c & 0xC0) != 0x80) str_len = 0; // ASCII or a leading byte starts a codepoint
        buf[str_len++] = *c;
        if ((*(c + 1) & 0xC0) == 0x80 && str_len < 4) continue;
        int id = str_lookup(t, buf, str_len);
        if (id != -1) {
            tokens[n++] = id;
        } else {
            for (size_t i = 0; i < str_len; i++) {
                int b = (unsigned char)buf[i] + LLAMA2C_BYTE_OFFSET;
                if (b >= t->vocab_size) goto unencodable;
                tokens[n++] = b;
            }
        }
        str_len = 0; // a run of stray continuation bytes starts over
    }

    if (merge_pairs(t, tokens, &n, buf, err) != 0) goto fail;

    if (add_eos) tokens[n++] = LLAMA2C_EOS;
    *n_tokens = n;
    free(buf);
    return 0;
unencodable:
    bs_fail(err, "unencodable_text", "text",
            "the %d-entry vocabulary has no byte-fallback pieces for this text", t->vocab_size);
fail:
    free(buf);
    return -1;
}

int tok_encode(const Tokenizer *t, const char *text, int add_bos, int add_eos, int **ids, int *n,
               BsError *err) {
    *ids = NULL;
    *n = 0;
    if (!text) return bs_fail(err, "invalid_argument", "text", "text is NULL");
    if (t->kind == TOK_KIND_HF) return encode_hf(t, text, add_bos, add_eos, ids, n, err);
    size_t len = strlen(text);
    // BOS + dummy prefix + at most one token per byte + EOS
    if (len > (size_t)INT_MAX - 3)
        return bs_fail(err, "invalid_argument", "text", "text of %zu bytes is too long", len);
    int *tokens = malloc((len + 3) * sizeof *tokens);
    if (!tokens)
        return bs_fail(err, "out_of_memory", "text", "cannot allocate %zu token ids", len + 3);
    int count = 0;
    if (t->kind == TOK_KIND_BYTES) {
        if (add_bos) tokens[count++] = TOK_BYTES_BOS;
        for (size_t i = 0; i < len; i++)
            tokens[count++] = (unsigned char)text[i];
        if (add_eos) tokens[count++] = TOK_BYTES_EOS;
    } else if (encode_llama2c(t, text, add_bos, add_eos, tokens, &count, err) != 0) {
        free(tokens);
        return -1;
    }
    *ids = tokens;
    *n = count;
    return 0;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int tok_encode_bos(const Tokenizer *t, const char *text, int add_eos, int **ids, int *n,
                   BsError *err) {
    if (tok_encode(t, text, 0, add_eos, ids, n, err) != 0) return -1;
    int bos = tok_bos(t);
    if (bos < 0 || (*n > 0 && (*ids)[0] == bos)) return 0;
    int *v = *n < INT_MAX ? realloc(*ids, ((size_t)*n + 1) * sizeof *v) : NULL;
    if (!v) {
        free(*ids);
        *ids = NULL;
        *n = 0;
        return bs_fail(err, "out_of_memory", "", "cannot allocate token ids");
    }
    memmove(v + 1, v, (size_t)*n * sizeof *v);
    v[0] = bos;
    *ids = v;
    (*n)++;
    return 0;
}

const char *tok_piece(const Tokenizer *t, int prev, int token) {
    if (token < 0 || token >= t->vocab_size) return NULL;
    if (t->kind == TOK_KIND_HF) {
        int strips = 0;
        const char *p = hftok_piece(t->hf, token, &strips);
        if (!p) return ""; // padding past the tokenizer
        // like the decoder's Strip at the start of a text, after BOS
        if (strips && prev >= 0 && prev == hftok_bos(t->hf) && p[0] == ' ') p++;
        return p;
    }
    if (t->kind == TOK_KIND_BYTES) return token < 256 ? t->byte_pieces + token * 2 : "";
    const char *piece = t->vocab[token];
    int len = t->vocab_len[token];
    // sentencepiece's decoder strips the dummy-prefix space after BOS
    if (prev == LLAMA2C_BOS && piece[0] == ' ') {
        piece++;
        len--;
    }
    // the length first: a short piece such as "<0x" ends before piece[5]
    if (len == 6 && piece[0] == '<' && piece[1] == '0' && piece[2] == 'x' && piece[5] == '>') {
        int hi = hex_value(piece[3]), lo = hex_value(piece[4]);
        if (hi >= 0 && lo >= 0) return t->byte_pieces + (hi * 16 + lo) * 2;
    }
    return piece;
}

// Hugging Face: ids past the tokenizer (model padding) are dropped, as the
// crate drops ids it has no token for.
static char *decode_hf(const Tokenizer *t, const int *ids, int n, BsError *err) {
    int size = hftok_size(t->hf), k = 0;
    int *kept = malloc((size_t)(n > 0 ? n : 1) * sizeof *kept);
    if (!kept) {
        bs_fail(err, "out_of_memory", "", "cannot allocate the decoded ids");
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->vocab_size) {
            free(kept);
            bs_fail(err, "invalid_token", "ids", "token id %d at position %d is outside 0..%d",
                    ids[i], i, t->vocab_size - 1);
            return NULL;
        }
        if (ids[i] < size) kept[k++] = ids[i];
    }
    char *s = hftok_decode(t->hf, kept, k, 1, err);
    free(kept);
    return s;
}

char *tok_decode(const Tokenizer *t, const int *ids, int n, BsError *err) {
    if (t->kind == TOK_KIND_HF) return decode_hf(t, ids, n, err);
    size_t cap = 64, len = 0;
    char *out = malloc(cap);
    if (!out) {
        bs_fail(err, "out_of_memory", "", "cannot allocate the decoded text");
        return NULL;
    }
    int prev = -1;
    for (int i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->vocab_size) {
            free(out);
            bs_fail(err, "invalid_token", "ids", "token id %d at position %d is outside 0..%d", id,
                    i, t->vocab_size - 1);
            return NULL;
        }
        const char *piece;
        size_t plen;
        if (id == tok_bos(t) || id == tok_eos(t) ||
            (t->kind == TOK_KIND_BYTES && id == TOK_BYTES_PAD)) {
            piece = "";
            plen = 0;
        } else if (t->kind == TOK_KIND_BYTES) {
            // byte 0 is a real byte here, so no strlen
            piece = t->byte_pieces + id * 2;
            plen = 1;
        } else {
            piece = tok_piece(t, prev, id);
            // <0x00> decodes to an empty C string, as run.c prints it
            plen = strlen(piece);
        }
        prev = id;
        if (len + plen + 1 > cap) {
            while (len + plen + 1 > cap)
                cap *= 2;
            char *grown = realloc(out, cap);
            if (!grown) {
                free(out);
                bs_fail(err, "out_of_memory", "", "cannot grow the decoded text to %zu bytes", cap);
                return NULL;
            }
            out = grown;
        }
        memcpy(out + len, piece, plen);
        len += plen;
    }
    out[len] = '\0';
    return out;
}
