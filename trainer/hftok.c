// hftok.c — Hugging Face BPE tokenizers (tokenizer.json, or vocab.json +
// merges.txt), encoding and decoding as the Rust `tokenizers` crate does.
//
// The pipeline of TokenizerImpl::encode (add_special_tokens = False):
//   1. added tokens with normalized = false are split off the raw text
//      (Aho-Corasick leftmost-longest, then single_word / lstrip / rstrip);
//   2. every other segment is normalized, and added tokens with normalized =
//      true are split off the normalized text (matched in normalized form);
//   3. the pre-tokenizer cuts each remaining segment into words (empty words
//      dropped), ByteLevel mapping bytes to its printable alphabet;
//   4. BPE::merge_word + Word::merge_all turn each word into ids: one symbol
//      per character (byte fallback or unk when it is not in the vocabulary),
//      then the lowest-rank merge of adjacent symbols, leftmost on ties, until
//      none applies.
// Decoding maps ids to tokens (added tokens first) and runs the decoder chain
// (Decoder::decode_chain), or joins with " " when there is no decoder.
#include "hftok.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <limits.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define HF_MAX_VOCAB (1 << 24)              // ids beyond this are a malformed file
#define HF_MAX_FILE ((size_t)1 << 30)       // bytes of one tokenizer file
#define HF_MAX_TEXT ((size_t)(INT_MAX / 4)) // bytes of one text to encode

enum {
    ST_PREPEND = 1,  // normalizer Prepend
    ST_REPLACE,      // normalizer / decoder Replace
    ST_BYTELEVEL,    // pre-tokenizer / decoder ByteLevel
    ST_SPLIT,        // pre-tokenizer Split and Digits
    ST_METASPACE,    // pre-tokenizer / decoder Metaspace
    ST_BYTEFALLBACK, // decoder ByteFallback
    ST_FUSE,         // decoder Fuse
    ST_STRIP,        // decoder Strip
};
enum { BEH_REMOVED, BEH_ISOLATED, BEH_PREVIOUS, BEH_NEXT, BEH_CONTIGUOUS };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };

typedef struct {
    int type;
    char *str; // Prepend text, Replace content, Metaspace replacement
    size_t str_len;
    char *lit; // Replace: a String pattern (literal), else NULL
    size_t lit_len;
    pcre2_code *re; // Split / Replace regex; NULL with lit, or an empty String
    int behavior, invert;
    int add_prefix_space, use_regex; // ByteLevel
    int prepend_scheme, split;       // Metaspace
    uint32_t cp;                     // Strip content / Metaspace replacement
    int start, stop;                 // Strip
} Step;

typedef struct {
    Step *v;
    int n, cap;
} Steps;

typedef struct {
    char *content;
    size_t len;
    char *norm; // content run through the normalizer (matched when normalized)
    size_t norm_len;
    int id, special, normalized, lstrip, rstrip, single_word;
} Added;

// Added tokens of one matching set by first byte, longest first, so the first
// hit at a position is Aho-Corasick's leftmost-longest match there.
typedef struct {
    int *idx;
    int first[257]; // entries for byte b: idx[first[b] .. first[b + 1])
} AddedSet;

typedef struct {
    const char *key;
    size_t len;
    int id;
} StrSlot;

typedef struct {
    StrSlot *slots;
    size_t cap, n;
} StrMap;

typedef struct {
    uint64_t key; // (a << 32 | b) + 1; 0 marks an empty slot
    int rank, new_id;
} MergeSlot;

typedef struct {
    MergeSlot *slots;
    size_t cap, n;
} MergeMap;

struct HfTok {
    int size;
    char **model_tok; // (size) the model's token per id, NULL for holes
    int *added_of;    // (size) index into added, or -1
    StrMap vocab;     // model token -> id
    StrMap added_map; // added token content -> id
    MergeMap merges;
    int unk_id; // -1: no unk_token; -2: unk_token not in the vocabulary
    char *unk_name;
    int fuse_unk, byte_fallback, ignore_merges;
    int byte_id[256]; // id of "<0xNN>", -1 when absent
    Added *added;
    int n_added;
    AddedSet raw_set, norm_set;
    Steps norm, pre, dec;
    int has_decoder;
    int bos, eos;
    int strips_space; // the decoder drops a leading space of the text
    char **piece;     // (size) printable bytes per id
    pcre2_code *gpt2_re;
    pcre2_code *word_re;
    uint32_t byte_char[256]; // byte-level alphabet: byte -> code point
    short char_byte[324];    // and back (-1: not in the alphabet)
};

// ---------------------------------------------------------------------------
// Growable buffers

typedef struct {
    char *s;
    size_t n, cap;
} Buf;

static int buf_reserve(Buf *b, size_t extra) {
    if (extra > SIZE_MAX / 2 - b->n) return -1;
    size_t need = b->n + extra + 1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 32;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->s, cap);
    if (!p) return -1;
    // Terminated from its first allocation: an empty text reserved with
    // buf_reserve(b, 0) (a decode of no pieces) is "" and not stray bytes.
    p[b->n] = '\0';
    b->s = p;
    b->cap = cap;
    return 0;
}

static int buf_add(Buf *b, const char *s, size_t n) {
    if (buf_reserve(b, n) != 0) return -1;
    if (n) memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
    return 0;
}

typedef struct {
    int *v;
    size_t n, cap;
} IVec;

static int ivec_push(IVec *a, int x) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        if (cap > SIZE_MAX / sizeof(int)) return -1;
        int *p = realloc(a->v, cap * sizeof(int));
        if (!p) return -1;
        a->v = p;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return 0;
}

// A list of owned strings: decoder tokens, pre-tokenizer words.
typedef struct {
    char *s;
    size_t n;
    int origin; // the word starts at offset 0 of the original text
} Piece;

typedef struct {
    Piece *v;
    size_t n, cap;
} Pieces;

static int pieces_push(Pieces *p, const char *s, size_t n, int origin) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        if (cap > SIZE_MAX / sizeof(Piece)) return -1;
        Piece *v = realloc(p->v, cap * sizeof(Piece));
        if (!v) return -1;
        p->v = v;
        p->cap = cap;
    }
    char *c = malloc(n + 1);
    if (!c) return -1;
    if (n) memcpy(c, s, n);
    c[n] = '\0';
    p->v[p->n++] = (Piece){c, n, origin};
    return 0;
}

// Takes ownership of b's string.
static int pieces_push_buf(Pieces *p, Buf *b, int origin) {
    if (!b->s && buf_reserve(b, 0) != 0) return -1;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        if (cap > SIZE_MAX / sizeof(Piece)) return -1;
        Piece *v = realloc(p->v, cap * sizeof(Piece));
        if (!v) return -1;
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = (Piece){b->s, b->n, origin};
    *b = (Buf){0};
    return 0;
}

static void pieces_clear(Pieces *p) {
    for (size_t i = 0; i < p->n; i++)
        free(p->v[i].s);
    p->n = 0;
}

static void pieces_free(Pieces *p) {
    pieces_clear(p);
    free(p->v);
    *p = (Pieces){0};
}

typedef struct {
    size_t s, e;
    int flag; // is_match while finding, remove after a behavior applies
} Span;

typedef struct {
    Span *v;
    size_t n, cap;
} Spans;

static int spans_push(Spans *a, size_t s, size_t e, int flag) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 32;
        if (cap > SIZE_MAX / sizeof(Span)) return -1;
        Span *v = realloc(a->v, cap * sizeof(Span));
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = (Span){s, e, flag};
    return 0;
}

// ---------------------------------------------------------------------------
// UTF-8

// Length of the well-formed UTF-8 sequence at s (n bytes left), 0 if none
// (overlongs, surrogates and code points above U+10FFFF are ill-formed).
static size_t utf8_valid_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

static int utf8_valid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_valid_len(p + i, n - i);
        if (!l) return 0;
        i += l;
    }
    return 1;
}

// Byte length of the character starting with lead byte c (valid UTF-8).
static size_t utf8_len(unsigned char c) {
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

static uint32_t utf8_decode(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    switch (utf8_len(p[0])) {
    case 1:
        return p[0];
    case 2:
        return (uint32_t)(p[0] & 0x1F) << 6 | (p[1] & 0x3F);
    case 3:
        return (uint32_t)(p[0] & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
    default:
        return (uint32_t)(p[0] & 0x07) << 18 | (uint32_t)(p[1] & 0x3F) << 12 |
               (uint32_t)(p[2] & 0x3F) << 6 | (p[3] & 0x3F);
    }
}

static size_t utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

// Start of the character that ends at s[end] (exclusive), valid UTF-8.
static size_t utf8_prev(const char *s, size_t end) {
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    return i;
}

// Rust's String::from_utf8_lossy: each maximal ill-formed subpart becomes U+FFFD.
static int utf8_lossy(const char *s, size_t n, Buf *out) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_valid_len(p + i, n - i);
        if (l) {
            if (buf_add(out, s + i, l) != 0) return -1;
            i += l;
            continue;
        }
        // the longest prefix of a well-formed sequence starting here
        unsigned char c = p[i];
        size_t want = 0;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            want = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            want = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            want = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        }
        size_t k = 1;
        for (size_t j = 0; j < want && i + k < n; j++, k++) {
            unsigned char d = p[i + k];
            if (j == 0 ? (d < lo || d > hi) : (d & 0xC0) != 0x80) break;
        }
        if (buf_add(out, "\xEF\xBF\xBD", 3) != 0) return -1;
        i += k;
    }
    return buf_reserve(out, 0);
}

// Unicode White_Space (Rust char::is_whitespace).
static int is_white_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

// ---------------------------------------------------------------------------
// Hash maps

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t hash_u64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static size_t table_cap(size_t expected) {
    size_t cap = 16;
    while (cap < expected * 2 + 1) {
        if (cap > SIZE_MAX / 4 / sizeof(MergeSlot)) return 0;
        cap *= 2;
    }
    return cap;
}

static int strmap_init(StrMap *m, size_t expected) {
    m->cap = table_cap(expected);
    m->n = 0;
    m->slots = m->cap ? calloc(m->cap, sizeof(StrSlot)) : NULL;
    return m->slots ? 0 : -1;
}

static int strmap_get(const StrMap *m, const char *key, size_t len) {
    if (!m->slots) return -1;
    size_t mask = m->cap - 1;
    for (size_t i = hash_bytes(key, len) & mask;; i = (i + 1) & mask) {
        const StrSlot *s = &m->slots[i];
        if (!s->key) return -1;
        if (s->len == len && memcmp(s->key, key, len) == 0) return s->id;
    }
}

// Inserts or overwrites (a later duplicate key wins, as in a serde HashMap).
// key must outlive the map. The map never fills past half (sized at init).
static void strmap_put(StrMap *m, const char *key, size_t len, int id) {
    size_t mask = m->cap - 1;
    for (size_t i = hash_bytes(key, len) & mask;; i = (i + 1) & mask) {
        StrSlot *s = &m->slots[i];
        if (!s->key) {
            *s = (StrSlot){key, len, id};
            m->n++;
            return;
        }
        if (s->len == len && memcmp(s->key, key, len) == 0) {
            s->id = id;
            return;
        }
    }
}

static int mergemap_init(MergeMap *m, size_t expected) {
    m->cap = table_cap(expected);
    m->n = 0;
    m->slots = m->cap ? calloc(m->cap, sizeof(MergeSlot)) : NULL;
    return m->slots ? 0 : -1;
}

static const MergeSlot *mergemap_get(const MergeMap *m, int a, int b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t mask = m->cap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        const MergeSlot *s = &m->slots[i];
        if (s->key == 0) return NULL;
        if (s->key == key) return s;
    }
}

// A later duplicate pair overwrites the earlier rank, as the crate's HashMap.
static void mergemap_put(MergeMap *m, int a, int b, int rank, int new_id) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t mask = m->cap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        MergeSlot *s = &m->slots[i];
        if (s->key == 0 || s->key == key) {
            if (s->key == 0) m->n++;
            *s = (MergeSlot){key, rank, new_id};
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Regular expressions

// Patterns are written for Oniguruma (the tokenizers crate's engine). Where
// its Unicode classes differ from PCRE2's (with UCP) they are spelled out:
//   \s  Oniguruma: White_Space (9-D, 85, Zs, Zl, Zp); PCRE2 adds U+180E
//   \w  Oniguruma: Letter | Mark | Number | Connector_Punctuation
//   \h  Oniguruma: a hexadecimal digit (PCRE2: horizontal space)
// (\W and \H inside a class stay PCRE2's; no tokenizer we know uses them.)
static char *onig_to_pcre2(const char *pat, size_t len, size_t *out_len) {
    Buf b = {0};
    int in_class = 0;
    for (size_t i = 0; i < len; i++) {
        if (pat[i] == '\\' && i + 1 < len) {
            char c = pat[i + 1];
            const char *rep = NULL;
            switch (c) {
            case 's':
                rep = "\\p{White_Space}";
                break;
            case 'S':
                rep = "\\P{White_Space}";
                break;
            case 'w':
                rep = in_class ? "\\p{L}\\p{M}\\p{N}\\p{Pc}" : "[\\p{L}\\p{M}\\p{N}\\p{Pc}]";
                break;
            case 'W':
                rep = in_class ? NULL : "[^\\p{L}\\p{M}\\p{N}\\p{Pc}]";
                break;
            case 'h':
                rep = in_class ? "0-9a-fA-F" : "[0-9a-fA-F]";
                break;
            case 'H':
                rep = in_class ? NULL : "[^0-9a-fA-F]";
                break;
            }
            if (rep ? buf_add(&b, rep, strlen(rep)) : buf_add(&b, pat + i, 2)) goto oom;
            i++;
            continue;
        }
        if (pat[i] == '[' && !in_class) {
            in_class = 1;
            // a ']' right after '[' or '[^' is a literal member
            size_t k = i + 1 < len && pat[i + 1] == '^' ? i + 2 : i + 1;
            if (k < len && pat[k] == ']') {
                if (buf_add(&b, pat + i, k - i + 1) != 0) goto oom;
                i = k;
                continue;
            }
        } else if (pat[i] == '[' && i + 1 < len && pat[i + 1] == ':') { // [:alpha:] in a class
            const char *end = strstr(pat + i + 2, ":]");
            size_t k = end && (size_t)(end - pat) < len ? (size_t)(end - pat) + 1 : i;
            if (buf_add(&b, pat + i, k - i + 1) != 0) goto oom;
            i = k;
            continue;
        } else if (pat[i] == ']' && in_class) {
            in_class = 0;
        }
        if (buf_add(&b, pat + i, 1) != 0) goto oom;
    }
    if (buf_reserve(&b, 0) != 0) goto oom;
    *out_len = b.n;
    return b.s;
oom:
    free(b.s);
    return NULL;
}

static pcre2_code *re_compile(const char *pat, size_t len, int literal, const char *param,
                              BsError *err) {
    size_t plen = len;
    char *rewritten = literal ? NULL : onig_to_pcre2(pat, len, &plen);
    if (!literal && !rewritten) {
        bs_fail(err, "out_of_memory", param, "cannot allocate a regular expression");
        return NULL;
    }
    int ecode = 0;
    PCRE2_SIZE eoff = 0;
    // PCRE2_LITERAL takes no UCP (nor needs it)
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)(literal ? pat : rewritten), plen, opts, &ecode, &eoff, NULL);
    free(rewritten);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ecode, msg, sizeof msg);
        bs_fail(err, "tokenizer_unsupported", param,
                "%s: the pattern \"%.120s\" does not compile with PCRE2 (%s at offset %zu)", param,
                pat, (const char *)msg, (size_t)eoff);
        return NULL;
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); // falls back to the interpreter
    return re;
}

// The crate's Pattern::find_matches: spans covering s, each a match or the
// gap between matches. An empty string gives one empty non-match; a NULL
// regex (an empty String pattern) matches nothing.
static int find_spans(const pcre2_code *re, const char *s, size_t n, pcre2_match_data *md,
                      Spans *out, BsError *err) {
    out->n = 0;
    if (n == 0 || !re) return spans_push(out, 0, n, 0) == 0 ? 0 : -1;
    size_t prev = 0, off = 0;
    while (off <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return bs_fail(err, "invalid_text", "text", "regular expression failed: %s",
                           (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms < prev) ms = prev; // \K can report a start before the search offset
        if (me < ms) me = ms;
        if (prev != ms && spans_push(out, prev, ms, 0) != 0) return -1;
        if (spans_push(out, ms, me, 1) != 0) return -1;
        prev = me;
        if (me == ms) {
            if (me >= n) break;
            off = me + utf8_len((unsigned char)s[me]);
        } else {
            off = me;
        }
    }
    if (prev != n && spans_push(out, prev, n, 0) != 0) return -1;
    return 0;
}

// NormalizedString::split: applies a delimiter behavior to the spans
// (flag = is_match) and leaves flag = remove on the result.
static int apply_behavior(const Spans *in, int behavior, int invert, Spans *out) {
    out->n = 0;
    int prev = 0;
    switch (behavior) {
    case BEH_ISOLATED:
    case BEH_REMOVED:
        for (size_t i = 0; i < in->n; i++) {
            int m = in->v[i].flag ^ invert;
            if (spans_push(out, in->v[i].s, in->v[i].e, behavior == BEH_REMOVED && m) != 0)
                return -1;
        }
        return 0;
    case BEH_CONTIGUOUS:
        for (size_t i = 0; i < in->n; i++) {
            int m = in->v[i].flag ^ invert;
            if (m == prev && out->n)
                out->v[out->n - 1].e = in->v[i].e;
            else if (spans_push(out, in->v[i].s, in->v[i].e, 0) != 0)
                return -1;
            prev = m;
        }
        return 0;
    case BEH_PREVIOUS:
        for (size_t i = 0; i < in->n; i++) {
            int m = in->v[i].flag ^ invert;
            if (m && !prev && out->n)
                out->v[out->n - 1].e = in->v[i].e;
            else if (spans_push(out, in->v[i].s, in->v[i].e, 0) != 0)
                return -1;
            prev = m;
        }
        return 0;
    default: // BEH_NEXT: the same fold from the right
        for (size_t k = in->n; k-- > 0;) {
            int m = in->v[k].flag ^ invert;
            if (m && !prev && out->n)
                out->v[out->n - 1].s = in->v[k].s;
            else if (spans_push(out, in->v[k].s, in->v[k].e, 0) != 0)
                return -1;
            prev = m;
        }
        for (size_t i = 0, j = out->n ? out->n - 1 : 0; i < j; i++, j--) {
            Span t = out->v[i];
            out->v[i] = out->v[j];
            out->v[j] = t;
        }
        return 0;
    }
}

// ---------------------------------------------------------------------------
// Byte-level alphabet (GPT-2's bytes_to_unicode): printable bytes stand for
// themselves, the other 68 for U+0100.. in byte order.

static void init_byte_level(HfTok *h) {
    int n = 0;
    for (int i = 0; i < 324; i++)
        h->char_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        uint32_t c = printable ? (uint32_t)b : 256u + (uint32_t)n++;
        h->byte_char[b] = c;
        h->char_byte[c] = (short)b;
    }
}

// ---------------------------------------------------------------------------
// Encoding

typedef struct {
    int id, prev, next;
    size_t len;
} Sym;

typedef struct {
    int rank, pos, new_id;
} Cand;

typedef struct {
    const HfTok *h;
    pcre2_match_data *md;
    IVec out;
    Sym *sym;
    size_t sym_cap;
    Cand *heap;
    size_t heap_cap, heap_n;
    Spans spans, spans2;
    BsError *err;
} Enc;

static int cand_before(const Cand *a, const Cand *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(Enc *e, Cand c) {
    size_t i = e->heap_n++;
    e->heap[i] = c;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&e->heap[i], &e->heap[p])) break;
        Cand t = e->heap[i];
        e->heap[i] = e->heap[p];
        e->heap[p] = t;
        i = p;
    }
}

static Cand heap_pop(Enc *e) {
    Cand top = e->heap[0];
    e->heap[0] = e->heap[--e->heap_n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < e->heap_n && cand_before(&e->heap[l], &e->heap[m])) m = l;
        if (r < e->heap_n && cand_before(&e->heap[r], &e->heap[m])) m = r;
        if (m == i) break;
        Cand t = e->heap[i];
        e->heap[i] = e->heap[m];
        e->heap[m] = t;
        i = m;
    }
    return top;
}

static int enc_oom(Enc *e) {
    return bs_fail(e->err, "out_of_memory", "text", "cannot allocate tokenizer work space");
}

static void sym_add(Enc *e, int *ns, int id, size_t len) {
    int i = *ns;
    if (i > 0) e->sym[i - 1].next = i;
    e->sym[i] = (Sym){id, i - 1, -1, len};
    (*ns)++;
}

// BPE::tokenize of one word w (n > 0 bytes of valid UTF-8).
static int bpe_word(Enc *e, const char *w, size_t n) {
    const HfTok *h = e->h;
    if (h->ignore_merges) {
        int id = strmap_get(&h->vocab, w, n);
        if (id >= 0) return ivec_push(&e->out, id) == 0 ? 0 : enc_oom(e);
    }
    if (n > e->sym_cap) {
        free(e->sym);
        free(e->heap);
        e->sym_cap = n;
        e->heap_cap = 3 * n + 1;
        e->sym = malloc(n * sizeof *e->sym);
        e->heap = malloc(e->heap_cap * sizeof *e->heap);
        if (!e->sym || !e->heap) {
            e->sym_cap = 0;
            return enc_oom(e);
        }
    }
    int ns = 0;
    int unk = 0; // a pending unknown run of unk_len bytes
    size_t unk_len = 0;
    for (size_t i = 0; i < n;) {
        size_t cl = utf8_len((unsigned char)w[i]);
        int id = strmap_get(&h->vocab, w + i, cl);
        if (id >= 0) {
            if (unk) sym_add(e, &ns, h->unk_id, unk_len);
            unk = 0;
            sym_add(e, &ns, id, cl);
            i += cl;
            continue;
        }
        if (h->byte_fallback) {
            size_t k = 0;
            while (k < cl && h->byte_id[(unsigned char)w[i + k]] >= 0)
                k++;
            if (k == cl) {
                // the crate leaves a pending unk run in place here
                for (k = 0; k < cl; k++)
                    sym_add(e, &ns, h->byte_id[(unsigned char)w[i + k]], 1);
                i += cl;
                continue;
            }
        }
        if (h->unk_id == -2)
            return bs_fail(e->err, "invalid_tokenizer", "model.unk_token",
                           "unk_token \"%.60s\" is not in the vocabulary", h->unk_name);
        if (h->unk_id >= 0) {
            if (unk && h->fuse_unk) {
                unk_len += cl;
            } else {
                if (unk) sym_add(e, &ns, h->unk_id, unk_len);
                unk = 1;
                unk_len = cl;
            }
        } // no unk_token: the character is dropped, as the crate does
        i += cl;
    }
    if (unk) sym_add(e, &ns, h->unk_id, unk_len);

    // Word::merge_all
    Sym *sym = e->sym;
    e->heap_n = 0;
    for (int i = 0; i + 1 < ns; i++) {
        const MergeSlot *m = mergemap_get(&h->merges, sym[i].id, sym[i + 1].id);
        if (m) heap_push(e, (Cand){m->rank, i, m->new_id});
    }
    while (e->heap_n > 0) {
        Cand top = heap_pop(e);
        Sym *cur = &sym[top.pos];
        if (cur->len == 0 || cur->next == -1) continue;
        int nx = cur->next;
        Sym right = sym[nx];
        const MergeSlot *m = mergemap_get(&h->merges, cur->id, right.id);
        if (!m || m->new_id != top.new_id) continue; // a stale candidate
        cur->id = top.new_id;
        cur->len += right.len;
        cur->next = right.next;
        sym[nx].len = 0;
        if (right.next > -1) sym[right.next].prev = top.pos;
        if (cur->prev >= 0) {
            m = mergemap_get(&h->merges, sym[cur->prev].id, cur->id);
            if (m) heap_push(e, (Cand){m->rank, cur->prev, m->new_id});
        }
        if (cur->next >= 0) {
            m = mergemap_get(&h->merges, cur->id, sym[cur->next].id);
            if (m) heap_push(e, (Cand){m->rank, top.pos, m->new_id});
        }
    }
    for (int i = 0; i < ns; i++)
        if (sym[i].len != 0 && ivec_push(&e->out, sym[i].id) != 0) return enc_oom(e);
    return 0;
}

// Cuts every piece of *ws by spans from re, with a behavior; empty results go.
static int split_pieces(Enc *e, Pieces *ws, const pcre2_code *re, int behavior, int invert) {
    Pieces out = {0};
    for (size_t k = 0; k < ws->n; k++) {
        Piece *p = &ws->v[k];
        if (find_spans(re, p->s, p->n, e->md, &e->spans, e->err) != 0) goto fail;
        if (apply_behavior(&e->spans, behavior, invert, &e->spans2) != 0) goto oom;
        for (size_t i = 0; i < e->spans2.n; i++) {
            Span sp = e->spans2.v[i];
            if (sp.flag || sp.e == sp.s) continue;
            if (pieces_push(&out, p->s + sp.s, sp.e - sp.s, p->origin && sp.s == 0) != 0) goto oom;
        }
    }
    pieces_free(ws);
    *ws = out;
    return 0;
oom:
    enc_oom(e);
fail:
    pieces_free(&out);
    return -1;
}

// Every occurrence of a literal in s replaced by rep (non-overlapping, left to right).
static int replace_literal(const char *s, size_t n, const char *lit, size_t lit_len,
                           const char *rep, size_t rep_len, Buf *out) {
    size_t i = 0;
    if (lit_len == 0) return buf_add(out, s, n);
    while (i < n) {
        const char *hit = memmem(s + i, n - i, lit, lit_len);
        if (!hit) break;
        size_t at = (size_t)(hit - s);
        if (buf_add(out, s + i, at - i) != 0 || buf_add(out, rep, rep_len) != 0) return -1;
        i = at + lit_len;
    }
    return buf_add(out, s + i, n - i);
}

// A Replace step on one string (valid UTF-8 for a regex pattern).
static int replace_step(const Step *st, const char *s, size_t n, pcre2_match_data *md, Spans *spans,
                        Buf *out, BsError *err) {
    if (st->lit || !st->re)
        return replace_literal(s, n, st->lit, st->lit_len, st->str, st->str_len, out) == 0
                   ? 0
                   : bs_fail(err, "out_of_memory", "text", "cannot allocate replaced text");
    if (find_spans(st->re, s, n, md, spans, err) != 0) return -1;
    for (size_t i = 0; i < spans->n; i++) {
        Span sp = spans->v[i];
        int rc = sp.flag ? buf_add(out, st->str, st->str_len) : buf_add(out, s + sp.s, sp.e - sp.s);
        if (rc != 0) return bs_fail(err, "out_of_memory", "text", "cannot allocate replaced text");
    }
    return buf_reserve(out, 0) == 0 ? 0 : bs_fail(err, "out_of_memory", "text", "out of memory");
}

// The normalizer on one segment; *out receives the normalized text.
static int normalize(const HfTok *h, const char *s, size_t n, pcre2_match_data *md, Spans *spans,
                     Buf *out, BsError *err) {
    Buf cur = {0};
    if (buf_add(&cur, s, n) != 0) goto oom;
    for (int k = 0; k < h->norm.n; k++) {
        const Step *st = &h->norm.v[k];
        Buf next = {0};
        if (st->type == ST_PREPEND) {
            if (cur.n == 0) continue; // Prepend leaves an empty string alone
            if (buf_add(&next, st->str, st->str_len) != 0 || buf_add(&next, cur.s, cur.n) != 0) {
                free(next.s);
                goto oom;
            }
        } else if (replace_step(st, cur.s, cur.n, md, spans, &next, err) != 0) {
            free(next.s);
            free(cur.s);
            return -1;
        }
        free(cur.s);
        cur = next;
    }
    *out = cur;
    return 0;
oom:
    free(cur.s);
    return bs_fail(err, "out_of_memory", "text", "cannot allocate normalized text");
}

// Maps the bytes of every piece to the byte-level alphabet.
static int byte_level_map(const HfTok *h, Pieces *ws) {
    for (size_t k = 0; k < ws->n; k++) {
        Piece *p = &ws->v[k];
        Buf b = {0};
        if (buf_reserve(&b, p->n * 2) != 0) return -1;
        for (size_t i = 0; i < p->n; i++)
            b.n += utf8_encode(h->byte_char[(unsigned char)p->s[i]], b.s + b.n);
        b.s[b.n] = '\0';
        free(p->s);
        p->s = b.s;
        p->n = b.n;
    }
    return 0;
}

// The pre-tokenizer on one normalized segment, then BPE on each word.
static int pre_tokenize_and_encode(Enc *e, const char *s, size_t n, int origin) {
    const HfTok *h = e->h;
    Pieces ws = {0};
    if (n == 0) return 0;
    if (pieces_push(&ws, s, n, origin) != 0) goto oom;
    for (int k = 0; k < h->pre.n; k++) {
        const Step *st = &h->pre.v[k];
        if (st->type == ST_SPLIT) {
            if (split_pieces(e, &ws, st->re, st->behavior, st->invert) != 0) goto fail;
        } else if (st->type == ST_BYTELEVEL) {
            if (st->add_prefix_space) {
                for (size_t i = 0; i < ws.n; i++) {
                    Piece *p = &ws.v[i];
                    if (p->n == 0 || p->s[0] == ' ') continue;
                    char *grown = malloc(p->n + 2);
                    if (!grown) goto oom;
                    grown[0] = ' ';
                    memcpy(grown + 1, p->s, p->n + 1);
                    free(p->s);
                    p->s = grown;
                    p->n++;
                }
            }
            if (st->use_regex && split_pieces(e, &ws, h->gpt2_re, BEH_ISOLATED, 0) != 0) goto fail;
            if (byte_level_map(h, &ws) != 0) goto oom;
        } else { // ST_METASPACE
            for (size_t i = 0; i < ws.n; i++) {
                Piece *p = &ws.v[i];
                Buf b = {0};
                int prepend = 0;
                if (st->prepend_scheme != PREPEND_NEVER) {
                    // the check runs after the replacement: a leading space counts
                    int starts = p->n > 0 &&
                                 (p->s[0] == ' ' ||
                                  (p->n >= st->str_len && memcmp(p->s, st->str, st->str_len) == 0));
                    prepend =
                        p->n > 0 && !starts && (st->prepend_scheme == PREPEND_ALWAYS || p->origin);
                }
                if ((prepend && buf_add(&b, st->str, st->str_len) != 0) ||
                    replace_literal(p->s, p->n, " ", 1, st->str, st->str_len, &b) != 0) {
                    free(b.s);
                    goto oom;
                }
                free(p->s);
                p->s = b.s;
                p->n = b.n;
            }
            if (st->split && split_pieces(e, &ws, st->re, BEH_NEXT, 0) != 0) goto fail;
        }
    }
    for (size_t i = 0; i < ws.n; i++)
        if (ws.v[i].n > 0 && bpe_word(e, ws.v[i].s, ws.v[i].n) != 0) goto fail;
    pieces_free(&ws);
    return 0;
oom:
    enc_oom(e);
fail:
    pieces_free(&ws);
    return -1;
}

static int word_char_at(const HfTok *h, const char *s, size_t n, pcre2_match_data *md) {
    int rc =
        pcre2_match(h->word_re, (PCRE2_SPTR)s, n, 0, PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, md, NULL);
    return rc >= 0;
}

// AddedVocabulary::find_matches over one matching set: spans with the added
// token id, or -1 for the text between tokens.
static int added_split(Enc *e, const AddedSet *set, int normalized, const char *s, size_t n,
                       Spans *out) {
    const HfTok *h = e->h;
    out->n = 0;
    size_t start_offset = 0, i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        int hit = -1;
        for (int k = set->first[c]; k < set->first[c + 1]; k++) {
            const Added *a = &h->added[set->idx[k]];
            const char *tok = normalized ? a->norm : a->content;
            size_t tl = normalized ? a->norm_len : a->len;
            if (tl <= n - i && memcmp(s + i, tok, tl) == 0) {
                hit = set->idx[k];
                break;
            }
        }
        if (hit < 0) {
            i++;
            continue;
        }
        const Added *a = &h->added[hit];
        size_t start = i, stop = i + (normalized ? a->norm_len : a->len);
        i = stop;
        if (a->single_word) {
            int start_space = start == 0 || !word_char_at(h, s + utf8_prev(s, start),
                                                          start - utf8_prev(s, start), e->md);
            int stop_space = stop == n || !word_char_at(h, s + stop, n - stop, e->md);
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0 && is_white_space(utf8_decode(s + utf8_prev(s, ns))))
                ns = utf8_prev(s, ns);
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n && is_white_space(utf8_decode(s + stop)))
                stop += utf8_len((unsigned char)s[stop]);
            if (stop > i) i = stop;
        }
        if (start_offset < start && spans_push(out, start_offset, start, -1) != 0) return -1;
        if (spans_push(out, start, stop, a->id) != 0) return -1;
        start_offset = stop;
    }
    if (start_offset < n && spans_push(out, start_offset, n, -1) != 0) return -1;
    return 0;
}

int hftok_encode(const HfTok *h, const char *text, int **ids, int *n, BsError *err) {
    *ids = NULL;
    *n = 0;
    if (!text) return bs_fail(err, "invalid_argument", "text", "text is NULL");
    size_t len = strlen(text);
    if (len > HF_MAX_TEXT)
        return bs_fail(err, "invalid_argument", "text", "text of %zu bytes is too long", len);
    if (!utf8_valid(text, len))
        return bs_fail(err, "invalid_text", "text", "text is not valid UTF-8");
    int rc = -1;
    Enc e = {.h = h, .err = err};
    Spans raw = {0}, sub = {0};
    Buf norm = {0};
    e.md = pcre2_match_data_create(1, NULL);
    if (!e.md) goto oom;
    if (added_split(&e, &h->raw_set, 0, text, len, &raw) != 0) goto oom;
    for (size_t i = 0; i < raw.n; i++) {
        Span r = raw.v[i];
        if (r.flag >= 0) {
            if (ivec_push(&e.out, r.flag) != 0) goto oom;
            continue;
        }
        free(norm.s);
        norm = (Buf){0};
        if (normalize(h, text + r.s, r.e - r.s, e.md, &e.spans, &norm, err) != 0) goto done;
        if (added_split(&e, &h->norm_set, 1, norm.s, norm.n, &sub) != 0) goto oom;
        for (size_t j = 0; j < sub.n; j++) {
            Span q = sub.v[j];
            int origin = r.s == 0 && q.s == 0;
            if (q.flag >= 0) {
                if (ivec_push(&e.out, q.flag) != 0) goto oom;
            } else if (pre_tokenize_and_encode(&e, norm.s + q.s, q.e - q.s, origin) != 0) {
                goto done;
            }
        }
    }
    if (e.out.n > (size_t)INT_MAX) {
        bs_fail(err, "invalid_argument", "text", "text encodes to too many tokens");
        goto done;
    }
    if (!e.out.v && !(e.out.v = malloc(sizeof(int)))) goto oom; // no ids: still a buffer
    *ids = e.out.v;
    *n = (int)e.out.n;
    e.out.v = NULL;
    rc = 0;
    goto done;
oom:
    enc_oom(&e);
done:
    free(e.out.v);
    free(norm.s);
    free(raw.v);
    free(sub.v);
    free(e.spans.v);
    free(e.spans2.v);
    free(e.sym);
    free(e.heap);
    pcre2_match_data_free(e.md);
    return rc;
}

// ---------------------------------------------------------------------------
// Decoding

static const char *token_str(const HfTok *h, int id) {
    int a = h->added_of[id];
    return a >= 0 ? h->added[a].content : h->model_tok[id];
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// The byte of a "<0xNN>" token (u8::from_str_radix on NN), or -1.
static int fallback_byte(const Piece *t) {
    if (t->n != 6 || memcmp(t->s, "<0x", 3) != 0 || t->s[5] != '>') return -1;
    int hi = t->s[3] == '+' ? 0 : hex_digit(t->s[3]), lo = hex_digit(t->s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static int flush_bytes(Pieces *out, Buf *bytes, int raw) {
    if (bytes->n == 0) return 0;
    int rc = 0;
    if (raw || utf8_valid(bytes->s, bytes->n)) {
        rc = pieces_push(out, bytes->s, bytes->n, 0);
    } else {
        for (size_t i = 0; i < bytes->n && rc == 0; i++)
            rc = pieces_push(out, "\xEF\xBF\xBD", 3, 0);
    }
    bytes->n = 0;
    return rc;
}

// Decoder::decode_chain for every step of the decoder. raw serves a single
// printable piece: bytes stay bytes (no U+FFFD), Strip is skipped and
// Metaspace treats the token as not the first of a text.
static int decode_chain(const HfTok *h, Pieces *toks, int raw, pcre2_match_data *md, Spans *spans,
                        BsError *err) {
    for (int k = 0; k < h->dec.n; k++) {
        const Step *st = &h->dec.v[k];
        Pieces out = {0};
        Buf b = {0};
        switch (st->type) {
        case ST_BYTELEVEL:
            for (size_t i = 0; i < toks->n; i++) {
                const Piece *t = &toks->v[i];
                size_t mark = b.n;
                int all = utf8_valid(t->s, t->n);
                for (size_t j = 0; all && j < t->n; j += utf8_len((unsigned char)t->s[j])) {
                    uint32_t c = utf8_decode(t->s + j);
                    if (c >= 324 || h->char_byte[c] < 0) {
                        all = 0;
                        break;
                    }
                    char byte = (char)h->char_byte[c];
                    if (buf_add(&b, &byte, 1) != 0) goto oom;
                }
                if (!all) { // a token outside the alphabet stays as its bytes
                    b.n = mark;
                    if (buf_add(&b, t->s, t->n) != 0) goto oom;
                }
            }
            if (raw) {
                if (pieces_push(&out, b.s ? b.s : "", b.n, 0) != 0) goto oom;
            } else {
                Buf l = {0};
                if (utf8_lossy(b.s ? b.s : "", b.n, &l) != 0 || pieces_push_buf(&out, &l, 0) != 0) {
                    free(l.s);
                    goto oom;
                }
            }
            break;
        case ST_REPLACE:
            for (size_t i = 0; i < toks->n; i++) {
                const Piece *t = &toks->v[i];
                b = (Buf){0};
                if (!st->lit && st->re && !utf8_valid(t->s, t->n)) {
                    if (buf_add(&b, t->s, t->n) != 0) goto oom;
                } else if (replace_step(st, t->s, t->n, md, spans, &b, err) != 0) {
                    free(b.s);
                    pieces_free(&out);
                    return -1;
                }
                if (pieces_push_buf(&out, &b, 0) != 0) goto oom;
            }
            break;
        case ST_BYTEFALLBACK:
            for (size_t i = 0; i < toks->n; i++) {
                int byte = fallback_byte(&toks->v[i]);
                if (byte >= 0) {
                    char c = (char)byte;
                    if (buf_add(&b, &c, 1) != 0) goto oom;
                    continue;
                }
                if (flush_bytes(&out, &b, raw) != 0 ||
                    pieces_push(&out, toks->v[i].s, toks->v[i].n, 0) != 0)
                    goto oom;
            }
            if (flush_bytes(&out, &b, raw) != 0) goto oom;
            break;
        case ST_FUSE:
            for (size_t i = 0; i < toks->n; i++)
                if (buf_add(&b, toks->v[i].s, toks->v[i].n) != 0) goto oom;
            if (pieces_push(&out, b.s ? b.s : "", b.n, 0) != 0) goto oom;
            break;
        case ST_STRIP:
            for (size_t i = 0; i < toks->n; i++) {
                const Piece *t = &toks->v[i];
                size_t from = 0, to = t->n;
                if (!raw && utf8_valid(t->s, t->n)) {
                    for (int c = 0; c < st->start && from < t->n; c++) {
                        if (utf8_decode(t->s + from) != st->cp) break;
                        from += utf8_len((unsigned char)t->s[from]);
                    }
                    for (int c = 0; c < st->stop && to > from; c++) {
                        size_t p = utf8_prev(t->s, to);
                        if (utf8_decode(t->s + p) != st->cp) break;
                        to = p;
                    }
                }
                if (pieces_push(&out, t->s + from, to - from, 0) != 0) goto oom;
            }
            break;
        default: // ST_METASPACE
            for (size_t i = 0; i < toks->n; i++) {
                const Piece *t = &toks->v[i];
                b = (Buf){0};
                int drop = i == 0 && !raw && st->prepend_scheme != PREPEND_NEVER;
                if (!utf8_valid(t->s, t->n)) {
                    if (buf_add(&b, t->s, t->n) != 0) goto oom;
                } else {
                    for (size_t j = 0; j < t->n;) {
                        size_t cl = utf8_len((unsigned char)t->s[j]);
                        int rc = 0;
                        if (utf8_decode(t->s + j) != st->cp)
                            rc = buf_add(&b, t->s + j, cl);
                        else if (!drop)
                            rc = buf_add(&b, " ", 1);
                        if (rc != 0) goto oom;
                        j += cl;
                    }
                }
                if (pieces_push_buf(&out, &b, 0) != 0) goto oom;
            }
            break;
        }
        free(b.s);
        pieces_free(toks);
        *toks = out;
        continue;
    oom:
        free(b.s);
        pieces_free(&out);
        return bs_fail(err, "out_of_memory", "", "cannot allocate decoded text");
    }
    return 0;
}

static char *join_pieces(const Pieces *p, const char *sep, BsError *err) {
    Buf b = {0};
    for (size_t i = 0; i < p->n; i++) {
        if ((i > 0 && buf_add(&b, sep, strlen(sep)) != 0) ||
            buf_add(&b, p->v[i].s, p->v[i].n) != 0 || buf_reserve(&b, 0) != 0) {
            free(b.s);
            bs_fail(err, "out_of_memory", "", "cannot allocate decoded text");
            return NULL;
        }
    }
    if (!b.s && buf_reserve(&b, 0) != 0) {
        bs_fail(err, "out_of_memory", "", "cannot allocate decoded text");
        return NULL;
    }
    return b.s;
}

char *hftok_decode(const HfTok *h, const int *ids, int n, int skip_bos_eos, BsError *err) {
    Pieces toks = {0};
    Spans spans = {0};
    char *out = NULL;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) {
        bs_fail(err, "out_of_memory", "", "cannot allocate decoded text");
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= h->size) {
            bs_fail(err, "invalid_token", "ids", "token id %d at position %d is outside 0..%d", id,
                    i, h->size - 1);
            goto done;
        }
        if (skip_bos_eos && (id == h->bos || id == h->eos)) continue;
        const char *t = token_str(h, id);
        if (!t) continue; // the crate skips ids it has no token for
        if (pieces_push(&toks, t, strlen(t), 0) != 0) {
            bs_fail(err, "out_of_memory", "", "cannot allocate decoded text");
            goto done;
        }
    }
    if (h->has_decoder) {
        if (decode_chain(h, &toks, 0, md, &spans, err) != 0) goto done;
        out = join_pieces(&toks, "", err);
    } else {
        out = join_pieces(&toks, " ", err);
    }
done:
    pieces_free(&toks);
    free(spans.v);
    pcre2_match_data_free(md);
    return out;
}

const char *hftok_piece(const HfTok *h, int id, int *strips_leading_space) {
    if (strips_leading_space) *strips_leading_space = h->strips_space;
    if (id < 0 || id >= h->size) return NULL;
    return h->piece[id] ? h->piece[id] : "";
}

const char *hftok_token(const HfTok *h, int id) {
    if (id < 0 || id >= h->size) return NULL;
    return token_str(h, id);
}

int hftok_token_id(const HfTok *h, const char *token) {
    size_t n = strlen(token);
    int id = strmap_get(&h->added_map, token, n);
    return id >= 0 ? id : strmap_get(&h->vocab, token, n);
}

int hftok_size(const HfTok *h) {
    return h->size;
}

int hftok_bos(const HfTok *h) {
    return h->bos;
}

int hftok_eos(const HfTok *h) {
    return h->eos;
}

// ---------------------------------------------------------------------------
// Loading

static void step_free(Step *st) {
    free(st->str);
    free(st->lit);
    pcre2_code_free(st->re);
}

static void steps_free(Steps *s) {
    for (int i = 0; i < s->n; i++)
        step_free(&s->v[i]);
    free(s->v);
    *s = (Steps){0};
}

// Appends st (taking its allocations); on failure they are freed.
static int steps_push(Steps *s, Step *st, BsError *err) {
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 4;
        Step *v = realloc(s->v, (size_t)cap * sizeof *v);
        if (!v) {
            step_free(st);
            return bs_fail(err, "out_of_memory", "", "cannot allocate a tokenizer step");
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = *st;
    return 0;
}

void hftok_free(HfTok *h) {
    if (!h) return;
    for (int i = 0; h->model_tok && i < h->size; i++)
        free(h->model_tok[i]);
    for (int i = 0; h->piece && i < h->size; i++)
        free(h->piece[i]);
    free(h->model_tok);
    free(h->piece);
    free(h->added_of);
    free(h->vocab.slots);
    free(h->added_map.slots);
    free(h->merges.slots);
    free(h->unk_name);
    for (int i = 0; i < h->n_added; i++) {
        free(h->added[i].content);
        free(h->added[i].norm);
    }
    free(h->added);
    free(h->raw_set.idx);
    free(h->norm_set.idx);
    steps_free(&h->norm);
    steps_free(&h->pre);
    steps_free(&h->dec);
    pcre2_code_free(h->gpt2_re);
    pcre2_code_free(h->word_re);
    free(h);
}

// Reads a whole tokenizer file (at most HF_MAX_FILE bytes), NUL-terminated.
static int read_all(const char *path, char **buf, size_t *len, BsError *err) {
    return bs_read_file(path, HF_MAX_FILE, "tokenizer file", "io", "invalid_tokenizer", buf, len,
                        err);
}

static cJSON *parse_json_file(const char *path, BsError *err) {
    char *buf = NULL;
    size_t len = 0;
    if (read_all(path, &buf, &len, err) != 0) return NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!root) {
        size_t at = end && end >= buf && end <= buf + len ? (size_t)(end - buf) : 0;
        bs_fail(err, "invalid_tokenizer", path,
                "%s is not valid JSON (truncated or malformed near byte %zu of %zu)", path, at,
                len);
    }
    free(buf);
    return root;
}

static const cJSON *item(const cJSON *o, const char *key) {
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}

// A JSON boolean at key, def when absent or null.
static int get_bool(const cJSON *o, const char *key, int def, const char *param, int *out,
                    BsError *err) {
    const cJSON *v = item(o, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(v))
        return bs_fail(err, "invalid_tokenizer", param, "%s.%s must be true or false", param, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static int get_int(const cJSON *v, long lo, long hi, long *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= (double)lo && d <= (double)hi) || d != (double)(long)d) return -1;
    *out = (long)d;
    return 0;
}

static char *dup_n(const char *s, size_t n) {
    char *c = malloc(n + 1);
    if (!c) return NULL;
    memcpy(c, s, n);
    c[n] = '\0';
    return c;
}

// A required string holding exactly one character; its code point.
static int get_char(const cJSON *o, const char *key, const char *def, const char *param, char **str,
                    uint32_t *cp, BsError *err) {
    const cJSON *v = item(o, key);
    const char *s = def;
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v))
            return bs_fail(err, "invalid_tokenizer", param, "%s.%s must be a string", param, key);
        s = v->valuestring;
    }
    if (!s) return bs_fail(err, "invalid_tokenizer", param, "%s needs %s", param, key);
    size_t n = strlen(s);
    if (n == 0 || !utf8_valid(s, n) || utf8_len((unsigned char)s[0]) != n)
        return bs_fail(err, "invalid_tokenizer", param,
                       "%s.%s must be one character, got \"%.40s\"", param, key, s);
    *cp = utf8_decode(s);
    if (str && !(*str = dup_n(s, n)))
        return bs_fail(err, "out_of_memory", param, "cannot allocate %s", param);
    return 0;
}

// {"String": s} or {"Regex": r} into st: Replace keeps a String literal
// (lit), Split compiles it as a literal regex; a regex compiles with PCRE2.
static int get_pattern(const cJSON *o, const char *param, int for_split, Step *st, BsError *err) {
    char p[128];
    snprintf(p, sizeof p, "%s.pattern", param);
    const cJSON *pat = item(o, "pattern");
    const cJSON *s = item(pat, "String"), *r = item(pat, "Regex");
    if (cJSON_IsString(s)) {
        size_t n = strlen(s->valuestring);
        if (!utf8_valid(s->valuestring, n))
            return bs_fail(err, "invalid_tokenizer", p, "%s is not valid UTF-8", p);
        if (!for_split) {
            if (!(st->lit = dup_n(s->valuestring, n)))
                return bs_fail(err, "out_of_memory", p, "cannot allocate %s", p);
            st->lit_len = n;
            return 0;
        }
        if (n == 0) return 0; // an empty String matches nothing
        st->re = re_compile(s->valuestring, n, 1, p, err);
        return st->re ? 0 : -1;
    }
    if (cJSON_IsString(r)) {
        size_t n = strlen(r->valuestring);
        if (!utf8_valid(r->valuestring, n))
            return bs_fail(err, "invalid_tokenizer", p, "%s is not valid UTF-8", p);
        st->re = re_compile(r->valuestring, n, 0, p, err);
        return st->re ? 0 : -1;
    }
    return bs_fail(err, "invalid_tokenizer", p, "%s must be {\"String\": ...} or {\"Regex\": ...}",
                   p);
}

static int get_content(const cJSON *o, const char *key, const char *param, Step *st, BsError *err) {
    const cJSON *v = item(o, key);
    if (!cJSON_IsString(v))
        return bs_fail(err, "invalid_tokenizer", param, "%s.%s must be a string", param, key);
    size_t n = strlen(v->valuestring);
    if (!utf8_valid(v->valuestring, n))
        return bs_fail(err, "invalid_tokenizer", param, "%s.%s is not valid UTF-8", param, key);
    if (!(st->str = dup_n(v->valuestring, n)))
        return bs_fail(err, "out_of_memory", param, "cannot allocate %s", param);
    st->str_len = n;
    return 0;
}

// The object's "type" string, or NULL after filling err.
static const char *get_type(const cJSON *o, const char *param, BsError *err) {
    const cJSON *t = item(o, "type");
    if (!cJSON_IsString(t)) {
        bs_fail(err, "invalid_tokenizer", param, "%s must be an object with a \"type\" string",
                param);
        return NULL;
    }
    return t->valuestring;
}

static int unsupported(BsError *err, const char *param, const char *what, const char *type,
                       const char *supported) {
    char p[128];
    snprintf(p, sizeof p, "%s.type", param);
    return bs_fail(err, "tokenizer_unsupported", p, "%s \"%.60s\" is not supported (%s: %s)", p,
                   type, what, supported);
}

static int get_prepend_scheme(const cJSON *o, const char *param, int *out, BsError *err) {
    const cJSON *ps = item(o, "prepend_scheme");
    if (cJSON_IsString(ps)) {
        const char *s = ps->valuestring;
        if (strcmp(s, "always") == 0)
            *out = PREPEND_ALWAYS;
        else if (strcmp(s, "first") == 0)
            *out = PREPEND_FIRST;
        else if (strcmp(s, "never") == 0)
            *out = PREPEND_NEVER;
        else
            return bs_fail(err, "invalid_tokenizer", param,
                           "%s.prepend_scheme \"%.40s\" is not always, first or never", param, s);
        return 0;
    }
    int add = 1; // the older form: add_prefix_space
    if (get_bool(o, "add_prefix_space", 1, param, &add, err) != 0) return -1;
    *out = add ? PREPEND_ALWAYS : PREPEND_NEVER;
    return 0;
}

// One step of a normalizer / pre-tokenizer / decoder / post-processor
// chain; arg is the parser's own (the post-processor's PostTokens).
typedef int (*StepParser)(HfTok *h, const cJSON *n, const char *param, void *arg, BsError *err);

// A "Sequence" node: fn on each element of the list n[key], named
// param.key[i] in errors.
static int parse_sequence(HfTok *h, const cJSON *n, const char *key, const char *param,
                          StepParser fn, void *arg, BsError *err) {
    const cJSON *arr = item(n, key);
    if (!cJSON_IsArray(arr))
        return bs_fail(err, "invalid_tokenizer", param, "%s.%s must be a list", param, key);
    int i = 0;
    for (const cJSON *c = arr->child; c; c = c->next, i++) {
        char p[128];
        snprintf(p, sizeof p, "%s.%s[%d]", param, key, i);
        if (fn(h, c, p, arg, err) != 0) return -1;
    }
    return 0;
}

static int parse_normalizer(HfTok *h, const cJSON *n, const char *param, void *arg, BsError *err) {
    (void)arg;
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = get_type(n, param, err);
    if (!type) return -1;
    Step st = {0};
    if (strcmp(type, "Sequence") == 0)
        return parse_sequence(h, n, "normalizers", param, parse_normalizer, NULL, err);
    if (strcmp(type, "Prepend") == 0) {
        st.type = ST_PREPEND;
        if (get_content(n, "prepend", param, &st, err) != 0) goto fail;
    } else if (strcmp(type, "Replace") == 0) {
        st.type = ST_REPLACE;
        if (get_pattern(n, param, 0, &st, err) != 0 || get_content(n, "content", param, &st, err))
            goto fail;
    } else {
        return unsupported(err, param, "normalizers", type, "Sequence, Prepend, Replace");
    }
    return steps_push(&h->norm, &st, err);
fail:
    step_free(&st);
    return -1;
}

static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int parse_pre_tokenizer(HfTok *h, const cJSON *n, const char *param, void *arg,
                               BsError *err) {
    (void)arg;
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = get_type(n, param, err);
    if (!type) return -1;
    Step st = {0};
    if (strcmp(type, "Sequence") == 0)
        return parse_sequence(h, n, "pretokenizers", param, parse_pre_tokenizer, NULL, err);
    if (strcmp(type, "ByteLevel") == 0) {
        st.type = ST_BYTELEVEL;
        if (get_bool(n, "add_prefix_space", 1, param, &st.add_prefix_space, err) != 0 ||
            get_bool(n, "use_regex", 1, param, &st.use_regex, err) != 0)
            goto fail;
        if (st.use_regex && !h->gpt2_re &&
            !(h->gpt2_re = re_compile(GPT2_PATTERN, strlen(GPT2_PATTERN), 0, param, err)))
            goto fail;
    } else if (strcmp(type, "Split") == 0) {
        st.type = ST_SPLIT;
        const cJSON *b = item(n, "behavior");
        static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                      "Contiguous"};
        st.behavior = -1;
        for (int i = 0; i < 5 && cJSON_IsString(b); i++)
            if (strcmp(b->valuestring, names[i]) == 0) st.behavior = i;
        if (st.behavior < 0) {
            bs_fail(err, "invalid_tokenizer", param,
                    "%s.behavior must be Removed, Isolated, MergedWithPrevious, MergedWithNext "
                    "or Contiguous",
                    param);
            goto fail;
        }
        if (get_bool(n, "invert", 0, param, &st.invert, err) != 0 ||
            get_pattern(n, param, 1, &st, err) != 0)
            goto fail;
    } else if (strcmp(type, "Digits") == 0) {
        // char::is_numeric per character: Isolated, or runs (Contiguous)
        int individual = 0;
        if (get_bool(n, "individual_digits", 0, param, &individual, err) != 0) goto fail;
        const char *re = individual ? "\\p{N}" : "\\p{N}+";
        st.type = ST_SPLIT;
        st.behavior = BEH_ISOLATED;
        if (!(st.re = re_compile(re, strlen(re), 0, param, err))) goto fail;
    } else if (strcmp(type, "Metaspace") == 0) {
        st.type = ST_METASPACE;
        if (get_char(n, "replacement", "\xE2\x96\x81", param, &st.str, &st.cp, err) != 0 ||
            get_prepend_scheme(n, param, &st.prepend_scheme, err) != 0 ||
            get_bool(n, "split", 1, param, &st.split, err) != 0)
            goto fail;
        st.str_len = strlen(st.str);
        if (!(st.re = re_compile(st.str, st.str_len, 1, param, err))) goto fail;
    } else {
        return unsupported(err, param, "pre-tokenizers", type,
                           "Sequence, ByteLevel, Split, Digits, Metaspace");
    }
    return steps_push(&h->pre, &st, err);
fail:
    step_free(&st);
    return -1;
}

static int parse_decoder(HfTok *h, const cJSON *n, const char *param, void *arg, BsError *err) {
    (void)arg;
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = get_type(n, param, err);
    if (!type) return -1;
    h->has_decoder = 1;
    Step st = {0};
    if (strcmp(type, "Sequence") == 0)
        return parse_sequence(h, n, "decoders", param, parse_decoder, NULL, err);
    if (strcmp(type, "ByteLevel") == 0) {
        st.type = ST_BYTELEVEL;
    } else if (strcmp(type, "Replace") == 0) {
        st.type = ST_REPLACE;
        if (get_pattern(n, param, 0, &st, err) != 0 || get_content(n, "content", param, &st, err))
            goto fail;
    } else if (strcmp(type, "ByteFallback") == 0) {
        st.type = ST_BYTEFALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        st.type = ST_FUSE;
    } else if (strcmp(type, "Strip") == 0) {
        st.type = ST_STRIP;
        long a = 0, b = 0;
        if (get_char(n, "content", NULL, param, NULL, &st.cp, err) != 0) goto fail;
        if (get_int(item(n, "start"), 0, INT_MAX, &a) != 0 ||
            get_int(item(n, "stop"), 0, INT_MAX, &b) != 0) {
            bs_fail(err, "invalid_tokenizer", param, "%s.start and .stop must be counts", param);
            goto fail;
        }
        st.start = (int)a;
        st.stop = (int)b;
        if (st.cp == ' ' && st.start > 0) h->strips_space = 1;
    } else if (strcmp(type, "Metaspace") == 0) {
        st.type = ST_METASPACE;
        if (get_char(n, "replacement", "\xE2\x96\x81", param, NULL, &st.cp, err) != 0 ||
            get_prepend_scheme(n, param, &st.prepend_scheme, err) != 0)
            goto fail;
        if (st.prepend_scheme != PREPEND_NEVER) h->strips_space = 1;
    } else {
        return unsupported(err, param, "decoders", type,
                           "Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace");
    }
    return steps_push(&h->dec, &st, err);
fail:
    step_free(&st);
    return -1;
}

// The ids a TemplateProcessing special token name stands for.
static int template_ids(const cJSON *pp, const char *name, const char *param, const cJSON **ids,
                        BsError *err) {
    const cJSON *sp = item(item(pp, "special_tokens"), name);
    *ids = item(sp, "ids");
    if (!cJSON_IsArray(*ids))
        return bs_fail(err, "invalid_tokenizer", param,
                       "%s.special_tokens has no ids for \"%.60s\"", param, name);
    return 0;
}

// The BOS / EOS of a post-processor: the special tokens before and after $A
// in TemplateProcessing's single template (one token each at most).
typedef struct {
    int bos, eos; // token ids, or -1
} PostTokens;

static int parse_post_processor(HfTok *h, const cJSON *n, const char *param, void *arg,
                                BsError *err) {
    PostTokens *pt = arg;
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = get_type(n, param, err);
    if (!type) return -1;
    if (strcmp(type, "Sequence") == 0)
        return parse_sequence(h, n, "processors", param, parse_post_processor, pt, err);
    if (strcmp(type, "ByteLevel") == 0) return 0; // offsets only
    if (strcmp(type, "TemplateProcessing") != 0)
        return unsupported(err, param, "post-processors (BERT/RoBERTa-style pairs are not)", type,
                           "TemplateProcessing, ByteLevel, Sequence");
    const cJSON *single = item(n, "single");
    if (!cJSON_IsArray(single))
        return bs_fail(err, "invalid_tokenizer", param, "%s.single must be a list", param);
    int seen_a = 0, n_before = 0, n_after = 0, before = -1, after = -1;
    for (const cJSON *c = single->child; c; c = c->next) {
        const cJSON *seq = item(c, "Sequence"), *spt = item(c, "SpecialToken");
        if (seq) {
            seen_a = 1;
            continue;
        }
        const cJSON *name = item(spt, "id");
        if (!cJSON_IsString(name))
            return bs_fail(err, "invalid_tokenizer", param,
                           "%s.single items must be {\"SpecialToken\": {\"id\": ...}} or "
                           "{\"Sequence\": ...}",
                           param);
        const cJSON *ids = NULL;
        if (template_ids(n, name->valuestring, param, &ids, err) != 0) return -1;
        for (const cJSON *x = ids->child; x; x = x->next) {
            long id;
            if (get_int(x, 0, h->size - 1, &id) != 0)
                return bs_fail(err, "invalid_tokenizer", param,
                               "%s names an id for \"%.60s\" outside the vocabulary", param,
                               name->valuestring);
            if (seen_a) {
                n_after++;
                after = (int)id;
            } else {
                n_before++;
                before = (int)id;
            }
        }
    }
    if (n_before > 1 || n_after > 1) {
        char p[128];
        snprintf(p, sizeof p, "%s.single", param);
        return bs_fail(err, "tokenizer_unsupported", p,
                       "%s adds %d tokens before and %d after the text; one BOS and one EOS at "
                       "most are supported",
                       p, n_before, n_after);
    }
    if (n_before) pt->bos = before;
    if (n_after) pt->eos = after;
    return 0;
}

// Builds the first-byte index of the added tokens of one kind (normalized or not).
static int build_set(HfTok *h, AddedSet *set, int normalized, BsError *err) {
    int count = 0;
    for (int i = 0; i < h->n_added; i++)
        if (h->added[i].normalized == normalized) count++;
    set->idx = malloc((size_t)(count ? count : 1) * sizeof *set->idx);
    if (!set->idx) return bs_fail(err, "out_of_memory", "", "cannot allocate added tokens");
    int counts[256] = {0};
    for (int i = 0; i < h->n_added; i++) {
        const Added *a = &h->added[i];
        if (a->normalized != normalized) continue;
        const char *s = normalized ? a->norm : a->content;
        if ((normalized ? a->norm_len : a->len) > 0) counts[(unsigned char)s[0]]++;
    }
    set->first[0] = 0;
    for (int b = 0; b < 256; b++)
        set->first[b + 1] = set->first[b] + counts[b];
    int fill[256];
    memcpy(fill, set->first, sizeof fill);
    for (int i = 0; i < h->n_added; i++) {
        const Added *a = &h->added[i];
        if (a->normalized != normalized || (normalized ? a->norm_len : a->len) == 0) continue;
        const char *s = normalized ? a->norm : a->content;
        set->idx[fill[(unsigned char)s[0]]++] = i;
    }
    // longest first within each bucket (insertion sort: buckets are small)
    for (int b = 0; b < 256; b++) {
        for (int i = set->first[b] + 1; i < set->first[b + 1]; i++) {
            int x = set->idx[i], j = i;
            size_t lx = normalized ? h->added[x].norm_len : h->added[x].len;
            while (j > set->first[b]) {
                int y = set->idx[j - 1];
                size_t ly = normalized ? h->added[y].norm_len : h->added[y].len;
                if (ly >= lx) break;
                set->idx[j] = y;
                j--;
            }
            set->idx[j] = x;
        }
    }
    return 0;
}

// Registers an added token (content owned by the caller, copied).
static int add_token(HfTok *h, const char *content, int id, int special, int normalized, int lstrip,
                     int rstrip, int single_word, BsError *err) {
    size_t len = strlen(content);
    if (len == 0) return 0; // the crate ignores empty added tokens
    if (id < 0 || id >= h->size)
        return bs_fail(err, "invalid_tokenizer", "added_tokens", "added token id %d is invalid",
                       id);
    if (!utf8_valid(content, len))
        return bs_fail(err, "invalid_tokenizer", "added_tokens",
                       "added token %d is not valid UTF-8", id);
    Added *a = &h->added[h->n_added];
    *a = (Added){.len = len,
                 .id = id,
                 .special = special,
                 .normalized = normalized,
                 .lstrip = lstrip,
                 .rstrip = rstrip,
                 .single_word = single_word};
    if (!(a->content = dup_n(content, len)))
        return bs_fail(err, "out_of_memory", "added_tokens", "cannot allocate added tokens");
    h->n_added++;
    if (h->added_of[id] >= 0 && strcmp(h->added[h->added_of[id]].content, content) != 0)
        return bs_fail(err, "invalid_tokenizer", "added_tokens",
                       "added tokens \"%.40s\" and \"%.40s\" share id %d",
                       h->added[h->added_of[id]].content, content, id);
    h->added_of[id] = h->n_added - 1;
    strmap_put(&h->added_map, a->content, len, id);
    return 0;
}

// Computes the normalized form of every normalized added token.
static int normalize_added(HfTok *h, BsError *err) {
    Spans spans = {0};
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    int rc = md ? 0 : bs_fail(err, "out_of_memory", "", "out of memory");
    for (int i = 0; rc == 0 && i < h->n_added; i++) {
        Added *a = &h->added[i];
        if (!a->normalized) continue;
        Buf b = {0};
        rc = normalize(h, a->content, a->len, md, &spans, &b, err);
        a->norm = b.s;
        a->norm_len = b.n;
    }
    free(spans.v);
    pcre2_match_data_free(md);
    return rc;
}

// Allocates the id tables once the size is known.
static int alloc_tables(HfTok *h, long max_id, size_t n_vocab, size_t n_added, BsError *err) {
    if (max_id < 0)
        return bs_fail(err, "invalid_tokenizer", "model.vocab", "the vocabulary is empty");
    h->size = (int)max_id + 1;
    h->model_tok = calloc((size_t)h->size, sizeof *h->model_tok);
    h->piece = calloc((size_t)h->size, sizeof *h->piece);
    h->added_of = malloc((size_t)h->size * sizeof *h->added_of);
    h->added = calloc(n_added ? n_added : 1, sizeof *h->added);
    if (!h->model_tok || !h->piece || !h->added_of || !h->added ||
        strmap_init(&h->vocab, n_vocab) != 0 || strmap_init(&h->added_map, n_added) != 0)
        return bs_fail(err, "out_of_memory", "", "cannot allocate a %d-token vocabulary", h->size);
    for (int i = 0; i < h->size; i++)
        h->added_of[i] = -1;
    return 0;
}

// Fills the model vocabulary from a {token: id} object.
static int fill_vocab(HfTok *h, const cJSON *vocab, const char *param, BsError *err) {
    for (const cJSON *c = vocab->child; c; c = c->next) {
        long id;
        const char *tok = c->string;
        size_t len = tok ? strlen(tok) : 0;
        if (!tok || get_int(c, 0, h->size - 1, &id) != 0)
            return bs_fail(err, "invalid_tokenizer", param, "%s[\"%.40s\"] must be an id", param,
                           tok ? tok : "");
        if (!utf8_valid(tok, len))
            return bs_fail(err, "invalid_tokenizer", param, "%s has a token that is not UTF-8",
                           param);
        if (h->model_tok[id])
            return bs_fail(err, "invalid_tokenizer", param,
                           "%s gives id %ld to both \"%.40s\" and \"%.40s\"", param, id,
                           h->model_tok[id], tok);
        if (!(h->model_tok[id] = dup_n(tok, len)))
            return bs_fail(err, "out_of_memory", param, "cannot allocate the vocabulary");
        strmap_put(&h->vocab, h->model_tok[id], len, (int)id);
    }
    return 0;
}

// One merge "a b" of rank `rank`: both parts and their concatenation must be
// tokens of the model vocabulary (the crate's MergeTokenOutOfVocabulary).
static int add_merge(HfTok *h, const char *a, size_t al, const char *b, size_t bl, int rank,
                     const char *param, Buf *tmp, BsError *err) {
    int ia = strmap_get(&h->vocab, a, al), ib = strmap_get(&h->vocab, b, bl);
    tmp->n = 0;
    if (buf_add(tmp, a, al) != 0 || buf_add(tmp, b, bl) != 0)
        return bs_fail(err, "out_of_memory", param, "cannot allocate merges");
    int inew = strmap_get(&h->vocab, tmp->s, tmp->n);
    if (ia < 0 || ib < 0 || inew < 0) {
        const char *miss = ia < 0 ? a : ib < 0 ? b : tmp->s;
        int ml = (int)(ia < 0 ? al : ib < 0 ? bl : tmp->n);
        return bs_fail(err, "invalid_tokenizer", param,
                       "%s[%d] (\"%.*s\" + \"%.*s\") names \"%.*s\", which is not in the "
                       "vocabulary",
                       param, rank, (int)(al > 40 ? 40 : al), a, (int)(bl > 40 ? 40 : bl), b,
                       ml > 40 ? 40 : ml, miss);
    }
    mergemap_put(&h->merges, ia, ib, rank, inew);
    return 0;
}

static int finish_model(HfTok *h, BsError *err) {
    char name[8];
    for (int b = 0; b < 256; b++) {
        snprintf(name, sizeof name, "<0x%02X>", b);
        h->byte_id[b] = strmap_get(&h->vocab, name, 6);
    }
    const char *w = "[\\p{Alphabetic}\\p{N}_]";
    if (!(h->word_re = re_compile(w, strlen(w), 0, "added_tokens", err))) return -1;
    return 0;
}

// The id of a special token named in a config (a string or {"content": s}):
// 1 and *out set, 0 when the key is absent (null counts as absent), -1 on error.
static int config_token(const HfTok *h, const cJSON *cfg, const char *key, const char *path,
                        int *out, BsError *err) {
    const cJSON *v = item(cfg, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsObject(v)) v = item(v, "content");
    if (!cJSON_IsString(v))
        return bs_fail(err, "invalid_tokenizer", key, "%s in %s must be a string", key, path);
    int id = hftok_token_id(h, v->valuestring);
    if (id < 0)
        return bs_fail(err, "invalid_tokenizer", key, "%s \"%.60s\" in %s is not a token", key,
                       v->valuestring, path);
    *out = id;
    return 1;
}

// A JSON file of dir, or NULL when it does not exist (*failed: it exists but
// does not parse, err filled).
static cJSON *load_config(const char *dir, const char *name, char *path, size_t path_len,
                          int *failed, BsError *err) {
    snprintf(path, path_len, "%s/%s", dir, name);
    struct stat st;
    if (stat(path, &st) != 0) return NULL;
    cJSON *cfg = parse_json_file(path, err);
    if (!cfg) *failed = 1;
    return cfg;
}

// The special tokens transformers' tokenizer classes default to when the
// config leaves bos_token / eos_token out.
static const struct {
    const char *cls, *bos, *eos;
} CLASS_DEFAULTS[] = {
    {"GPT2Tokenizer", "<|endoftext|>", "<|endoftext|>"},
    {"GPT2TokenizerFast", "<|endoftext|>", "<|endoftext|>"},
    {"LlamaTokenizer", "<s>", "</s>"},
    {"LlamaTokenizerFast", "<s>", "</s>"},
    {"CodeLlamaTokenizer", "<s>", "</s>"},
    {"CodeLlamaTokenizerFast", "<s>", "</s>"},
};

// BOS / EOS as transformers finds them: tokenizer_config.json, then
// special_tokens_map.json, then the tokenizer class's defaults; after those
// the post-processor template, and for EOS a special added token with a
// conventional end name.
static int finish_specials(HfTok *h, const char *dir, int tpl_bos, int tpl_eos, int gpt2_style,
                           int *add_prefix_space, BsError *err) {
    char cpath[4096], mpath[4096];
    int failed = 0, bos = -1, eos = -1, ret = -1;
    cJSON *cfg = load_config(dir, "tokenizer_config.json", cpath, sizeof cpath, &failed, err);
    cJSON *map =
        failed ? NULL
               : load_config(dir, "special_tokens_map.json", mpath, sizeof mpath, &failed, err);
    const char *cls = NULL;
    if (failed) goto done;
    const cJSON *c = item(cfg, "tokenizer_class");
    if (cJSON_IsString(c)) cls = c->valuestring;
    if (!cls && gpt2_style) cls = "GPT2Tokenizer";
    static const char *keys[2] = {"bos_token", "eos_token"};
    int *dst[2] = {&bos, &eos};
    for (int k = 0; k < 2; k++) {
        int r = config_token(h, cfg, keys[k], cpath, dst[k], err);
        if (r == 0 && !item(cfg, keys[k])) r = config_token(h, map, keys[k], mpath, dst[k], err);
        if (r < 0) goto done;
        if (r == 0 && !item(cfg, keys[k]) && !item(map, keys[k])) {
            for (size_t i = 0; cls && i < sizeof CLASS_DEFAULTS / sizeof CLASS_DEFAULTS[0]; i++) {
                if (strcmp(cls, CLASS_DEFAULTS[i].cls) != 0) continue;
                const char *name = k == 0 ? CLASS_DEFAULTS[i].bos : CLASS_DEFAULTS[i].eos;
                *dst[k] = hftok_token_id(h, name);
            }
        }
    }
    if (add_prefix_space && get_bool(cfg, "add_prefix_space", 0, cpath, add_prefix_space, err))
        goto done;
    if (bos < 0) bos = tpl_bos;
    if (eos < 0) eos = tpl_eos;
    static const char *ends[] = {"</s>", "<|endoftext|>", "<|end_of_text|>", "<|im_end|>", "<eos>"};
    for (int i = 0; eos < 0 && i < 5; i++) {
        int id = strmap_get(&h->added_map, ends[i], strlen(ends[i]));
        if (id >= 0 && h->added[h->added_of[id]].special) eos = id;
    }
    h->bos = bos;
    h->eos = eos;
    ret = 0;
done:
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    return ret;
}

static int build_pieces(HfTok *h, BsError *err) {
    Pieces toks = {0};
    Spans spans = {0};
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    int rc = md ? 0 : bs_fail(err, "out_of_memory", "", "out of memory");
    for (int id = 0; rc == 0 && id < h->size; id++) {
        const char *t = token_str(h, id);
        // An id without a token (a hole in the vocabulary) prints nothing:
        // every decoder maps "" to "", so the chain is not run for it (a
        // sparse vocabulary with one large id would run it for every hole).
        if (!t) continue;
        pieces_clear(&toks);
        if (pieces_push(&toks, t, strlen(t), 0) != 0) {
            rc = bs_fail(err, "out_of_memory", "", "out of memory");
            break;
        }
        if (h->has_decoder && (rc = decode_chain(h, &toks, 1, md, &spans, err)) != 0) break;
        // A NUL byte ends the piece, as run.c prints <0x00>.
        if (!(h->piece[id] = join_pieces(&toks, "", err))) rc = -1;
    }
    pieces_free(&toks);
    free(spans.v);
    pcre2_match_data_free(md);
    return rc;
}

// The directory part of a file path ("." when none), malloc'd.
static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return dup_n(".", 1);
    return dup_n(path, slash == path ? 1 : (size_t)(slash - path));
}

static int load_tokenizer_json(HfTok *h, const char *path, const char *dir, BsError *err) {
    cJSON *root = parse_json_file(path, err);
    if (!root) return -1;
    int rc = -1;
    PostTokens tpl = {-1, -1};
    Buf tmp = {0};
    if (!cJSON_IsObject(root)) {
        bs_fail(err, "invalid_tokenizer", path, "%s is not a JSON object", path);
        goto done;
    }
    const cJSON *model = item(root, "model");
    if (!cJSON_IsObject(model)) {
        bs_fail(err, "invalid_tokenizer", "model", "%s has no \"model\" object", path);
        goto done;
    }
    const cJSON *type = item(model, "type");
    const cJSON *merges = item(model, "merges");
    if (type && !cJSON_IsString(type)) {
        bs_fail(err, "invalid_tokenizer", "model.type", "model.type must be a string");
        goto done;
    }
    if (type ? strcmp(type->valuestring, "BPE") != 0 : !merges) {
        bs_fail(err, "tokenizer_unsupported", "model.type",
                "model.type \"%.40s\" is not supported: only BPE tokenizers are (WordPiece, "
                "Unigram and WordLevel are not)",
                type ? type->valuestring : "(none)");
        goto done;
    }
    const cJSON *vocab = item(model, "vocab");
    if (!cJSON_IsObject(vocab)) {
        bs_fail(err, "invalid_tokenizer", "model.vocab", "%s has no model.vocab object", path);
        goto done;
    }
    if (!cJSON_IsArray(merges)) {
        bs_fail(err, "invalid_tokenizer", "model.merges", "%s has no model.merges list", path);
        goto done;
    }
    const cJSON *added = item(root, "added_tokens");
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added)) {
        bs_fail(err, "invalid_tokenizer", "added_tokens", "added_tokens must be a list");
        goto done;
    }
    // the size: the highest id of the vocabulary and the added tokens
    long max_id = -1, id;
    size_t n_vocab = 0, n_added = 0;
    for (const cJSON *c = vocab->child; c; c = c->next, n_vocab++) {
        if (get_int(c, 0, HF_MAX_VOCAB - 1, &id) != 0) {
            bs_fail(err, "invalid_tokenizer", "model.vocab",
                    "model.vocab[\"%.40s\"] must be an id in 0..%d", c->string ? c->string : "",
                    HF_MAX_VOCAB - 1);
            goto done;
        }
        if (id > max_id) max_id = id;
    }
    for (const cJSON *c = added ? added->child : NULL; c; c = c->next, n_added++) {
        if (get_int(item(c, "id"), 0, HF_MAX_VOCAB - 1, &id) != 0 ||
            !cJSON_IsString(item(c, "content"))) {
            bs_fail(err, "invalid_tokenizer", "added_tokens",
                    "added_tokens[%zu] needs an id in 0..%d and a content string", n_added,
                    HF_MAX_VOCAB - 1);
            goto done;
        }
        if (id > max_id) max_id = id;
    }
    if (alloc_tables(h, max_id, n_vocab, n_added, err) != 0 ||
        fill_vocab(h, vocab, "model.vocab", err) != 0 ||
        parse_normalizer(h, item(root, "normalizer"), "normalizer", NULL, err) != 0)
        goto done;
    for (const cJSON *c = added ? added->child : NULL; c; c = c->next) {
        int special = 0, normalized = 1, lstrip = 0, rstrip = 0, single_word = 0;
        get_int(item(c, "id"), 0, HF_MAX_VOCAB - 1, &id);
        if (get_bool(c, "special", 0, "added_tokens", &special, err) != 0 ||
            get_bool(c, "normalized", 1, "added_tokens", &normalized, err) != 0 ||
            get_bool(c, "lstrip", 0, "added_tokens", &lstrip, err) != 0 ||
            get_bool(c, "rstrip", 0, "added_tokens", &rstrip, err) != 0 ||
            get_bool(c, "single_word", 0, "added_tokens", &single_word, err) != 0 ||
            add_token(h, item(c, "content")->valuestring, (int)id, special, normalized, lstrip,
                      rstrip, single_word, err) != 0)
            goto done;
    }
    if (normalize_added(h, err) != 0 || build_set(h, &h->raw_set, 0, err) != 0 ||
        build_set(h, &h->norm_set, 1, err) != 0)
        goto done;

    // BPE options
    const cJSON *unk = item(model, "unk_token");
    const cJSON *dropout = item(model, "dropout");
    const cJSON *prefix = item(model, "continuing_subword_prefix");
    const cJSON *suffix = item(model, "end_of_word_suffix");
    if (dropout && !cJSON_IsNull(dropout)) {
        bs_fail(err, "tokenizer_unsupported", "model.dropout",
                "model.dropout is set: BPE dropout samples tokenizations and is not supported");
        goto done;
    }
    if ((cJSON_IsString(prefix) && prefix->valuestring[0]) ||
        (cJSON_IsString(suffix) && suffix->valuestring[0])) {
        bs_fail(err, "tokenizer_unsupported",
                cJSON_IsString(prefix) && prefix->valuestring[0] ? "model.continuing_subword_prefix"
                                                                 : "model.end_of_word_suffix",
                "subword prefixes and suffixes (WordPiece-style BPE) are not supported");
        goto done;
    }
    if (get_bool(model, "fuse_unk", 0, "model", &h->fuse_unk, err) != 0 ||
        get_bool(model, "byte_fallback", 0, "model", &h->byte_fallback, err) != 0 ||
        get_bool(model, "ignore_merges", 0, "model", &h->ignore_merges, err) != 0)
        goto done;
    h->unk_id = -1;
    if (unk && !cJSON_IsNull(unk)) {
        if (!cJSON_IsString(unk)) {
            bs_fail(err, "invalid_tokenizer", "model.unk_token",
                    "model.unk_token must be a string");
            goto done;
        }
        if (!(h->unk_name = dup_n(unk->valuestring, strlen(unk->valuestring)))) goto oom;
        h->unk_id = strmap_get(&h->vocab, unk->valuestring, strlen(unk->valuestring));
        if (h->unk_id < 0) h->unk_id = -2;
    }

    // merges, ranked by position
    int n_merges = cJSON_GetArraySize(merges), rank = 0;
    if (mergemap_init(&h->merges, (size_t)n_merges) != 0) goto oom;
    for (const cJSON *c = merges->child; c; c = c->next, rank++) {
        const char *a = NULL, *b = NULL;
        size_t al = 0, bl = 0;
        if (cJSON_IsString(c)) {
            const char *s = c->valuestring, *sp = strchr(s, ' ');
            if (sp) {
                a = s;
                al = (size_t)(sp - s);
                b = sp + 1;
                bl = strlen(b);
            }
        } else if (cJSON_IsArray(c) && cJSON_GetArraySize(c) == 2 && cJSON_IsString(c->child) &&
                   cJSON_IsString(c->child->next)) {
            a = c->child->valuestring;
            al = strlen(a);
            b = c->child->next->valuestring;
            bl = strlen(b);
        }
        if (!a) {
            bs_fail(err, "invalid_tokenizer", "model.merges",
                    "model.merges[%d] must be \"a b\" or [\"a\", \"b\"]", rank);
            goto done;
        }
        if (add_merge(h, a, al, b, bl, rank, "model.merges", &tmp, err) != 0) goto done;
    }
    if (finish_model(h, err) != 0 ||
        parse_pre_tokenizer(h, item(root, "pre_tokenizer"), "pre_tokenizer", NULL, err) != 0 ||
        parse_decoder(h, item(root, "decoder"), "decoder", NULL, err) != 0 ||
        parse_post_processor(h, item(root, "post_processor"), "post_processor", &tpl, err) != 0 ||
        finish_specials(h, dir, tpl.bos, tpl.eos, 0, NULL, err) != 0 || build_pieces(h, err) != 0)
        goto done;
    rc = 0;
    goto done;
oom:
    bs_fail(err, "out_of_memory", path, "cannot allocate the tokenizer");
done:
    free(tmp.s);
    cJSON_Delete(root);
    return rc;
}

// GPT-2 style: vocab.json + merges.txt, byte-level, <|endoftext|> special.
static int load_gpt2_files(HfTok *h, const char *dir, BsError *err) {
    char vpath[4096], mpath[4096];
    snprintf(vpath, sizeof vpath, "%s/vocab.json", dir);
    snprintf(mpath, sizeof mpath, "%s/merges.txt", dir);
    cJSON *vocab = parse_json_file(vpath, err);
    if (!vocab) return -1;
    char *mbuf = NULL;
    size_t mlen = 0;
    int rc = -1;
    Buf tmp = {0};
    if (!cJSON_IsObject(vocab)) {
        bs_fail(err, "invalid_tokenizer", vpath, "%s is not a {token: id} object", vpath);
        goto done;
    }
    if (read_all(mpath, &mbuf, &mlen, err) != 0) goto done;
    long max_id = -1, id;
    size_t n_vocab = 0;
    for (const cJSON *c = vocab->child; c; c = c->next, n_vocab++) {
        if (get_int(c, 0, HF_MAX_VOCAB - 1, &id) != 0) {
            bs_fail(err, "invalid_tokenizer", vpath, "%s[\"%.40s\"] must be an id in 0..%d", vpath,
                    c->string ? c->string : "", HF_MAX_VOCAB - 1);
            goto done;
        }
        if (id > max_id) max_id = id;
    }
    if (alloc_tables(h, max_id, n_vocab, 4, err) != 0 || fill_vocab(h, vocab, vpath, err) != 0)
        goto done;
    h->unk_id = -1;
    size_t lines = 1;
    for (size_t i = 0; i < mlen; i++)
        lines += mbuf[i] == '\n';
    if (mergemap_init(&h->merges, lines) != 0) {
        bs_fail(err, "out_of_memory", mpath, "cannot allocate merges");
        goto done;
    }
    int rank = 0;
    for (size_t i = 0; i < mlen;) {
        size_t e = i;
        while (e < mlen && mbuf[e] != '\n')
            e++;
        size_t le = e > i && mbuf[e - 1] == '\r' ? e - 1 : e;
        const char *line = mbuf + i;
        size_t ll = le - i;
        i = e + 1;
        if (ll == 0 || (ll >= 8 && memcmp(line, "#version", 8) == 0)) continue;
        const char *sp = memchr(line, ' ', ll);
        if (!sp || !utf8_valid(line, ll)) {
            bs_fail(err, "invalid_tokenizer", mpath, "%s line %d is not \"a b\"", mpath, rank + 1);
            goto done;
        }
        size_t al = (size_t)(sp - line);
        if (add_merge(h, line, al, sp + 1, ll - al - 1, rank++, mpath, &tmp, err) != 0) goto done;
    }
    // The slow GPT2Tokenizer never splits <|endoftext|>: a special added token.
    int eot = strmap_get(&h->vocab, "<|endoftext|>", 13);
    if (eot >= 0 && add_token(h, "<|endoftext|>", eot, 1, 0, 0, 0, 0, err) != 0) goto done;
    int add_prefix_space = 0;
    if (build_set(h, &h->raw_set, 0, err) != 0 || build_set(h, &h->norm_set, 1, err) != 0 ||
        finish_model(h, err) != 0 ||
        finish_specials(h, dir, -1, -1, 1, &add_prefix_space, err) != 0)
        goto done;
    if (!(h->gpt2_re = re_compile(GPT2_PATTERN, strlen(GPT2_PATTERN), 0, "pre_tokenizer", err)))
        goto done;
    Step pre = {.type = ST_BYTELEVEL, .add_prefix_space = add_prefix_space, .use_regex = 1};
    Step dec = {.type = ST_BYTELEVEL};
    if (steps_push(&h->pre, &pre, err) != 0 || steps_push(&h->dec, &dec, err) != 0) goto done;
    h->has_decoder = 1;
    if (build_pieces(h, err) != 0) goto done;
    rc = 0;
done:
    free(tmp.s);
    free(mbuf);
    cJSON_Delete(vocab);
    return rc;
}

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int hftok_load(HfTok **out, const char *path, BsError *err) {
    *out = NULL;
    HfTok *h = calloc(1, sizeof *h);
    char *dir = NULL;
    char file[4096];
    if (!h) return bs_fail(err, "out_of_memory", path, "cannot allocate a tokenizer");
    h->bos = h->eos = h->unk_id = -1;
    init_byte_level(h);
    struct stat st;
    if (stat(path, &st) != 0) {
        bs_fail(err, "io", path, "cannot open tokenizer %s", path);
        goto fail;
    }
    int rc;
    if (S_ISDIR(st.st_mode)) {
        if (!(dir = dup_n(path, strlen(path)))) goto oom;
        snprintf(file, sizeof file, "%s/tokenizer.json", path);
        if (is_file(file)) {
            rc = load_tokenizer_json(h, file, dir, err);
        } else {
            char v[4096], m[4096];
            snprintf(v, sizeof v, "%s/vocab.json", path);
            snprintf(m, sizeof m, "%s/merges.txt", path);
            if (!is_file(v) || !is_file(m)) {
                bs_fail(err, "io", path,
                        "%s holds neither tokenizer.json nor vocab.json + merges.txt", path);
                goto fail;
            }
            rc = load_gpt2_files(h, dir, err);
        }
    } else {
        if (!(dir = dir_of(path))) goto oom;
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        rc = strcmp(base, "vocab.json") == 0 ? load_gpt2_files(h, dir, err)
                                             : load_tokenizer_json(h, path, dir, err);
    }
    if (rc != 0) goto fail;
    free(dir);
    *out = h;
    return 0;
oom:
    bs_fail(err, "out_of_memory", path, "cannot allocate a tokenizer");
fail:
    free(dir);
    hftok_free(h);
    return -1;
}
