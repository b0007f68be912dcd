// test_tok.c — tokenizers: known Llama 2 encodings, agreement with a direct
// transcription of llama2.c run.c's encode() on random, long and adversarial
// text (also under a made-up vocabulary full of equal scores), decode round
// trips (unicode, byte fallback), the byte tokenizer, and malformed files.
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"
#include "tok.h"

#define LLAMA2_TOK "../shared/models/llama2-tokenizer.bin"
#define AIDREAMS_TOK "../shared/models/aidreams260K-tok512.bin"

static void check_encoding(const Tokenizer *t, const char *text, int bos, int eos, const int *want,
                           int n_want) {
    BsError err = {0};
    int *ids = NULL, n = 0;
    int rc = tok_encode(t, text, bos, eos, &ids, &n, &err);
    CHECK_MSG(rc == 0, "encode(\"%s\"): %s", text, err.message);
    if (rc == 0 && !test_ids_equal(ids, n, want, n_want)) {
        CHECK_MSG(0, "encoding of \"%s\" differs", text);
        test_print_ids("  got ", ids, n);
        test_print_ids("  want", want, n_want);
    }
    free(ids);
}

static void check_round_trip(const Tokenizer *t, const char *text) {
    BsError err = {0};
    int *ids = NULL, n = 0;
    int rc = tok_encode(t, text, 1, 0, &ids, &n, &err);
    CHECK_MSG(rc == 0, "encode(\"%s\"): %s", text, err.message);
    if (rc != 0) return;
    char *back = tok_decode(t, ids, n, &err);
    CHECK_MSG(back != NULL, "decode: %s", err.message);
    if (back) CHECK_MSG(strcmp(back, text) == 0, "round trip \"%s\" -> \"%s\"", text, back);
    free(back);
    free(ids);
}

// ---------------------------------------------------------------------------
// Reference: llama2.c run.c's encode(), transcribed, over an independently
// parsed tokenizer.bin. run.c finds pieces by bsearch; here an FNV-1a hash
// table keeps the first (lowest) id of a string, the id tok.c documents for
// duplicates, and keeps the quadratic transcription fast enough for texts of
// a few KB.

typedef struct {
    int n;
    char **vocab;
    float *scores;
    int max_len;
    int *slots; // (cap) id or -1, open addressing
    size_t cap;
} RefVocab;

static size_t ref_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (size_t)h;
}

static int ref_load(RefVocab *r, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int32_t max_len;
    if (fread(&max_len, 4, 1, f) != 1) return fclose(f), -1;
    r->max_len = max_len;
    r->n = 0;
    r->vocab = NULL;
    r->scores = NULL;
    for (;;) {
        float score;
        int32_t len;
        if (fread(&score, 4, 1, f) != 1) break;
        if (fread(&len, 4, 1, f) != 1) return fclose(f), -1;
        r->vocab = realloc(r->vocab, (size_t)(r->n + 1) * sizeof *r->vocab);
        r->scores = realloc(r->scores, (size_t)(r->n + 1) * sizeof *r->scores);
        char *s = malloc((size_t)len + 1);
        if (!r->vocab || !r->scores || !s) return fclose(f), -1;
        if (len && fread(s, (size_t)len, 1, f) != 1) return fclose(f), -1;
        s[len] = '\0';
        r->vocab[r->n] = s;
        r->scores[r->n] = score;
        r->n++;
    }
    fclose(f);
    r->cap = 1;
    while (r->cap < (size_t)r->n * 2)
        r->cap *= 2;
    r->slots = malloc(r->cap * sizeof *r->slots);
    if (!r->slots) return -1;
    for (size_t i = 0; i < r->cap; i++)
        r->slots[i] = -1;
    for (int id = 0; id < r->n; id++) {
        size_t h = ref_hash(r->vocab[id]) & (r->cap - 1);
        while (r->slots[h] != -1 && strcmp(r->vocab[r->slots[h]], r->vocab[id]) != 0)
            h = (h + 1) & (r->cap - 1);
        if (r->slots[h] == -1) r->slots[h] = id;
    }
    return 0;
}

static void ref_free(RefVocab *r) {
    for (int i = 0; i < r->n; i++)
        free(r->vocab[i]);
    free(r->vocab);
    free(r->scores);
    free(r->slots);
}

static int ref_lookup(const RefVocab *r, const char *s) {
    for (size_t h = ref_hash(s) & (r->cap - 1); r->slots[h] != -1; h = (h + 1) & (r->cap - 1))
        if (strcmp(r->vocab[r->slots[h]], s) == 0) return r->slots[h];
    return -1;
}

static int ref_encode(const RefVocab *r, const char *text, int bos, int eos, int *tokens) {
    char *buf = malloc((size_t)r->max_len * 2 + 3);
    int n = 0;
    size_t str_len = 0;
    if (bos) tokens[n++] = 1;
    if (text[0] != '\0') tokens[n++] = ref_lookup(r, " ");
    for (const char *c = text; *c != '\0'; c++) {
        if ((*c & 0xC0) != 0x80) str_len = 0;
        buf[str_len++] = *c;
        buf[str_len] = '\0';
        if ((*(c + 1) & 0xC0) == 0x80 && str_len < 4) continue;
        int id = ref_lookup(r, buf);
        if (id != -1) {
            tokens[n++] = id;
        } else {
            for (size_t i = 0; i < str_len; i++)
                tokens[n++] = (unsigned char)buf[i] + 3;
        }
        str_len = 0;
    }
    while (1) {
        float best_score = -1e10;
        int best_id = -1, best_idx = -1;
        for (int i = 0; i < n - 1; i++) {
            sprintf(buf, "%s%s", r->vocab[tokens[i]], r->vocab[tokens[i + 1]]);
            int id = ref_lookup(r, buf);
            if (id != -1 && r->scores[id] > best_score) {
                best_score = r->scores[id];
                best_id = id;
                best_idx = i;
            }
        }
        if (best_idx == -1) break;
        tokens[best_idx] = best_id;
        for (int i = best_idx + 1; i < n - 1; i++)
            tokens[i] = tokens[i + 1];
        n--;
    }
    if (eos) tokens[n++] = 2;
    free(buf);
    return n;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    return test_rng_u32(&rng_state);
}

// A growing NUL-terminated string for generated texts.
typedef struct {
    char *s;
    size_t n, cap;
} Text;

static void text_add(Text *t, const char *piece) {
    size_t m = strlen(piece);
    if (t->n + m + 1 > t->cap) {
        while (t->n + m + 1 > t->cap)
            t->cap = t->cap ? t->cap * 2 : 256;
        t->s = realloc(t->s, t->cap);
        if (!t->s) abort();
    }
    memcpy(t->s + t->n, piece, m + 1);
    t->n += m;
}

static void text_repeat(Text *t, const char *piece, int times) {
    for (int i = 0; i < times; i++)
        text_add(t, piece);
}

// ASCII words, spaces, newlines, accented letters, CJK, emoji, private-use
// and stray continuation bytes (byte fallback), runs of one character.
// clang-format off
static const char *units[] = {
    "the", " ", "  ", "\n", "Hello", "world", "ing", "a", "e", "\xC3\xA9", "\xC3\xB6",
    "\xE6\x97\xA5", "\xE6\x9C\xAC", "\xF0\x9F\x98\x80", "\xF0\x9F\x9A\x80", ",", ".", "Once",
    "\x80", "x", "Z", "7", "\t", "\xE2\x80\x94", "==", "xx", "\n\nHuman:", "\n\nAssistant:",
    "\xEE\x80\x80", "\xF0\x9F\xA7\xAA", "\xC3", "\xFF", "aaaa", "    ", "-", "'"};
// clang-format on
#define N_UNITS ((int)(sizeof units / sizeof units[0]))

// Random text of 1..max_units units.
static void random_text(Text *t, int max_units) {
    t->n = 0;
    text_add(t, "");
    int n = 1 + (int)(rnd() % (uint32_t)max_units);
    for (int i = 0; i < n; i++)
        text_add(t, units[rnd() % N_UNITS]);
}

// Adversarial text number k of a few KB: long runs of one unit (overlapping
// equal-score candidates, merges that cascade), a repeated dialogue line,
// byte-fallback and emoji runs, and runs mixed with random units.
static void adversarial_text(Text *t, int k) {
    t->n = 0;
    text_add(t, "");
    // clang-format off
    static const char *runs[] = {
        "a", " ", "=", "\n", "x", "e", "\xC3\xA9", "\xF0\x9F\x98\x80", "\x80", "ab", "aab",
        "\n\nHuman: x", "\xE6\x97\xA5", "\xEE\x80\x80", " the", "0", "\t", "\xFF"};
    // clang-format on
    int n_runs = (int)(sizeof runs / sizeof runs[0]);
    if (k < n_runs) {
        text_repeat(t, runs[k], 1 + (int)(1500 / strlen(runs[k])));
        return;
    }
    size_t target = 1000 + rnd() % 2500;
    while (t->n < target) {
        if (rnd() % 2)
            text_repeat(t, runs[rnd() % n_runs], 1 + (int)(rnd() % 200));
        else
            text_add(t, units[rnd() % N_UNITS]);
    }
}

// Compares tok_encode with the reference on one text, random BOS / EOS.
// Returns 1 on agreement, printing the first few disagreements.
static int agrees_with_reference(const Tokenizer *t, const RefVocab *r, const char *text,
                                 int *mismatches) {
    int bos = (int)(rnd() & 1), eos = (int)(rnd() & 1);
    int *ref_ids = malloc((strlen(text) + 3) * sizeof *ref_ids);
    if (!ref_ids) abort();
    int nref = ref_encode(r, text, bos, eos, ref_ids);
    int *ids = NULL, n = 0;
    BsError err = {0};
    CHECK_MSG(tok_encode(t, text, bos, eos, &ids, &n, &err) == 0, "%s", err.message);
    int ok = test_ids_equal(ids, n, ref_ids, nref);
    if (!ok && (*mismatches)++ < 3) {
        fprintf(stderr, "mismatch on \"%.200s\"%s (%zu bytes)\n", text,
                strlen(text) > 200 ? "..." : "", strlen(text));
        int i = 0;
        while (i < n && i < nref && ids[i] == ref_ids[i])
            i++;
        fprintf(stderr, "  first difference at id %d of %d / %d\n", i, n, nref);
    }
    free(ids);
    free(ref_ids);
    return ok;
}

// fixed strings, `trials` short random ones, `long_trials` random ones of up
// to a few KB and `adversarial` adversarial ones.
static void check_against_reference(const Tokenizer *t, const char *path, int trials,
                                    int long_trials, int adversarial) {
    RefVocab r = {0};
    if (ref_load(&r, path) != 0) {
        CHECK_MSG(0, "cannot read %s", path);
        return;
    }
    Text text = {0};
    int mismatches = 0;
    // Runs of one character make equal-score merge candidates overlap, where
    // only run.c's leftmost-first choice gives its ids.
    static const char *fixed[] = {"=====", "xxxxxxx", "aaaaa", "   x", "eeee ee", "\x80\x80\x80"};
    int n_fixed = (int)(sizeof fixed / sizeof fixed[0]);
    for (int k = 0; k < n_fixed; k++)
        agrees_with_reference(t, &r, fixed[k], &mismatches);
    for (int k = 0; k < trials; k++) {
        random_text(&text, 40);
        agrees_with_reference(t, &r, text.s, &mismatches);
    }
    for (int k = 0; k < long_trials; k++) {
        random_text(&text, 700);
        agrees_with_reference(t, &r, text.s, &mismatches);
    }
    for (int k = 0; k < adversarial; k++) {
        adversarial_text(&text, k);
        agrees_with_reference(t, &r, text.s, &mismatches);
    }
    CHECK_INT_EQ(mismatches, 0);
    free(text.s);
    ref_free(&r);
}

// ---------------------------------------------------------------------------

static int write_bytes(char *path, const void *data, size_t len) {
    strcpy(path, "/tmp/test_tok_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    int ok = write(fd, data, len) == (ssize_t)len;
    close(fd);
    return ok ? 0 : -1;
}

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz);
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)sz;
    return b;
}

static void test_llama2(void) {
    BsError err = {0};
    Tokenizer *t = NULL;
    CHECK_MSG(tok_load_llama2c(&t, LLAMA2_TOK, 32000, &err) == 0, "%s", err.message);
    if (!t) return;
    CHECK_INT_EQ(tok_vocab_size(t), 32000);
    CHECK_INT_EQ(tok_bos(t), 1);
    CHECK_INT_EQ(tok_eos(t), 2);

    // Known Llama 2 sentencepiece encodings.
    check_encoding(t, "Hello world", 1, 0, (int[]){1, 15043, 3186}, 3);
    check_encoding(t, "Hello world", 0, 1, (int[]){15043, 3186, 2}, 3);
    check_encoding(t, "Once upon a time", 1, 0, (int[]){1, 9038, 2501, 263, 931}, 5);
    // U+1F600 is not a piece: the dummy prefix then its 4 bytes + 3 (byte fallback)
    check_encoding(t, "\xF0\x9F\x98\x80", 1, 0,
                   (int[]){1, 29871, 0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3}, 6);
    // empty text: no dummy prefix
    check_encoding(t, "", 1, 0, (int[]){1}, 1);
    check_encoding(t, "", 1, 1, (int[]){1, 2}, 2);
    int *ids = NULL, n = -1;
    CHECK(tok_encode(t, "", 0, 0, &ids, &n, &err) == 0);
    CHECK_INT_EQ(n, 0);
    char *s = tok_decode(t, ids, n, &err);
    CHECK(s && s[0] == '\0');
    free(s);
    free(ids);

    check_round_trip(t, "Hello world");
    check_round_trip(t, "héllo wörld — 日本語 😀🚀 ok");
    check_round_trip(t, "tabs\tand\nnewlines\n\n  double  spaces");
    check_round_trip(t, "ﬁ ∑ ∞ 🧪🫖");

    // decode: BOS/EOS dropped, space after BOS stripped, <0xNN> bytes joined
    int seq[] = {1, 29871, 0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3, 3186, 2};
    s = tok_decode(t, seq, 8, &err);
    CHECK(s && strcmp(s, "\xF0\x9F\x98\x80 world") == 0);
    free(s);
    s = tok_decode(t, (int[]){15043, 3186}, 2, &err);
    CHECK(s && strcmp(s, " Hello world") == 0); // no BOS: nothing stripped, as run.c
    free(s);
    CHECK(strcmp(tok_piece(t, 1, 15043), "Hello") == 0);
    CHECK(strcmp(tok_piece(t, 15043, 3186), " world") == 0);
    CHECK(strcmp(tok_piece(t, 0, 0x41 + 3), "A") == 0);
    CHECK(tok_piece(t, 1, 32000) == NULL);
    bs_error_clear(&err);
    CHECK(tok_decode(t, (int[]){1, 32000}, 2, &err) == NULL);
    CHECK(strcmp(err.code, "invalid_token") == 0);

    check_against_reference(t, LLAMA2_TOK, 20, 4, 22);
    tok_free(t);
}

static void test_aidreams(void) {
    BsError err = {0};
    Tokenizer *t = NULL;
    int count = 0;
    CHECK_MSG(tok_count_llama2c(AIDREAMS_TOK, &count, &err) == 0, "%s", err.message);
    CHECK_INT_EQ(count, 512);
    CHECK_MSG(tok_load_llama2c(&t, AIDREAMS_TOK, 512, &err) == 0, "%s", err.message);
    if (!t) return;
    check_round_trip(t, "Echoes of vectors unfold, a gentle hum");
    check_round_trip(t, "ünïcödé 🎉 falls back to bytes");
    check_against_reference(t, AIDREAMS_TOK, 300, 6, 22);
    tok_free(t);

    // one entry more or fewer than the file holds
    bs_error_clear(&err);
    CHECK(tok_load_llama2c(&t, AIDREAMS_TOK, 513, &err) == -1 && t == NULL);
    CHECK_MSG(strcmp(err.code, "tokenizer_mismatch") == 0, "code %s", err.code);
    bs_error_clear(&err);
    CHECK(tok_load_llama2c(&t, AIDREAMS_TOK, 511, &err) == -1 && t == NULL);
    CHECK_MSG(strcmp(err.code, "tokenizer_mismatch") == 0, "code %s", err.code);
    bs_error_clear(&err);
    CHECK(tok_load_llama2c(&t, LLAMA2_TOK, 512, &err) == -1);
    CHECK_MSG(strcmp(err.code, "tokenizer_mismatch") == 0, "code %s", err.code);
}

static void test_malformed(void) {
    size_t len = 0;
    unsigned char *img = slurp(AIDREAMS_TOK, &len);
    CHECK(img != NULL && len > 100);
    if (!img) return;
    char path[64];
    BsError err;
    Tokenizer *t = NULL;

    // cut inside an entry's payload, inside a header, and inside the file header
    size_t cuts[] = {len - 1, len - 3 - 4, 2};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        CHECK(write_bytes(path, img, cuts[k]) == 0);
        bs_error_clear(&err);
        CHECK(tok_load_llama2c(&t, path, 512, &err) == -1 && t == NULL);
        CHECK_MSG(strcmp(err.code, "invalid_tokenizer") == 0, "cut %zu: code %s", cuts[k],
                  err.code);
        unlink(path);
    }

    // an entry longer than max_token_length, and a negative length
    unsigned char *bad = malloc(len);
    memcpy(bad, img, len);
    int32_t big = 11, neg = -1;
    memcpy(bad + 4 + 4, &big, 4); // entry 0 length field
    CHECK(write_bytes(path, bad, len) == 0);
    bs_error_clear(&err);
    CHECK(tok_load_llama2c(&t, path, 512, &err) == -1);
    CHECK_MSG(strcmp(err.code, "invalid_tokenizer") == 0, "code %s", err.code);
    unlink(path);
    memcpy(bad, img, len);
    memcpy(bad, &neg, 4); // max_token_length
    CHECK(write_bytes(path, bad, len) == 0);
    bs_error_clear(&err);
    CHECK(tok_load_llama2c(&t, path, 512, &err) == -1);
    CHECK_MSG(strcmp(err.code, "invalid_tokenizer") == 0, "code %s", err.code);
    unlink(path);
    free(bad);
    free(img);

    bs_error_clear(&err);
    CHECK(tok_load_llama2c(&t, "../shared/models/does-not-exist.bin", 512, &err) == -1);
    CHECK(strcmp(err.code, "io") == 0);
}

// A made-up llama2.c vocabulary whose merge scores come from a handful of
// values (so most candidates tie), including -0.0 against 0.0, run.c's -1e10
// floor (never merged, as nothing else below it), -inf and +inf: every string
// of 2..4 characters over {a, b, c, space, é} is a piece, so merges cascade.
// Texts over that alphabet plus byte-fallback characters must encode as the
// run.c transcription does. A few pieces that only resemble "<0xNN>" check
// that tok_piece turns just the real ones into bytes; duplicate pieces with
// other scores check that the lowest id (and its score) is the one used.
static void test_equal_scores(void) {
    // clang-format off
    static const char *alphabet[] = {"a", "b", "c", " ", "\xC3\xA9"};
    static const char *text_units[] = {"a", "b", "c", " ", "\xC3\xA9", "d", "\xF0\x9F\x98\x80",
                                       "\x80", "aaaa", "    "};
    static const float score_set[] = {0.0f, -0.0f, 1.0f, 1.0f, 2.0f, -1e10f, -1e11f,
                                      -INFINITY, INFINITY, -3.5f};
    // clang-format on
    const int n_alpha = 5, n_scores = (int)(sizeof score_set / sizeof score_set[0]);
    for (int vocab_seed = 0; vocab_seed < 4; vocab_seed++) {
        // header, <unk> <s> </s>, 256 byte pieces, then the alphabet's strings
        size_t cap = 1 << 16, len = 0;
        unsigned char *img = malloc(cap);
        if (!img) abort();
        int32_t max_len = 8, n_entries = 0;
        memcpy(img, &max_len, 4);
        len = 4;
        char piece[16];
#define ADD_PIECE(str, score)                                                                      \
    do {                                                                                           \
        float sc_ = (score);                                                                       \
        int32_t l_ = (int32_t)strlen(str);                                                         \
        memcpy(img + len, &sc_, 4);                                                                \
        memcpy(img + len + 4, &l_, 4);                                                             \
        memcpy(img + len + 8, (str), (size_t)l_);                                                  \
        len += 8 + (size_t)l_;                                                                     \
        n_entries++;                                                                               \
    } while (0)
        ADD_PIECE("<unk>", 0.0f);
        ADD_PIECE("<s>", 0.0f);
        ADD_PIECE("</s>", 0.0f);
        for (int b = 0; b < 256; b++) {
            snprintf(piece, sizeof piece, "<0x%02X>", b);
            ADD_PIECE(piece, 0.0f);
        }
        for (int k = 1; k <= 4; k++) {
            int combos = 1;
            for (int i = 0; i < k; i++)
                combos *= n_alpha;
            for (int c = 0; c < combos; c++) {
                piece[0] = '\0';
                for (int i = 0, v = c; i < k; i++, v /= n_alpha)
                    strcat(piece, alphabet[v % n_alpha]);
                ADD_PIECE(piece, score_set[rnd() % (uint32_t)n_scores]);
            }
        }
        // duplicates: the lowest id wins (tok.h), so these never appear
        ADD_PIECE("ab", 5.0f);
        ADD_PIECE("b a", INFINITY);
        ADD_PIECE("c", 0.0f);
        // pieces that only look like byte pieces, for tok_piece
        ADD_PIECE("<0x", 0.0f);
        ADD_PIECE("<0x4", 0.0f);
        ADD_PIECE("<0x4G>", 0.0f);
        ADD_PIECE(" <0x41>", 0.0f);
        ADD_PIECE("<0x41>>", 0.0f);
#undef ADD_PIECE
        char path[64];
        CHECK(write_bytes(path, img, len) == 0);
        free(img);
        BsError err = {0};
        Tokenizer *t = NULL;
        RefVocab r = {0};
        CHECK_MSG(tok_load_llama2c(&t, path, n_entries, &err) == 0, "%s", err.message);
        CHECK(ref_load(&r, path) == 0 && r.n == n_entries);
        unlink(path);
        if (!t || r.n != n_entries) {
            tok_free(t);
            ref_free(&r);
            return;
        }
        int last = n_entries - 1;
        CHECK(strcmp(tok_piece(t, 0, last - 4), "<0x") == 0);
        CHECK(strcmp(tok_piece(t, 0, last - 3), "<0x4") == 0);
        CHECK(strcmp(tok_piece(t, 0, last - 2), "<0x4G>") == 0);
        CHECK(strcmp(tok_piece(t, 1, last - 1), "A") == 0); // BOS strips the space
        CHECK(strcmp(tok_piece(t, 0, last - 1), " <0x41>") == 0);
        CHECK(strcmp(tok_piece(t, 0, last), "<0x41>>") == 0);
        CHECK(strcmp(tok_piece(t, 0, 3 + 0x41), "A") == 0);
        Text text = {0};
        int mismatches = 0;
        for (int k = 0; k < 43; k++) {
            text.n = 0;
            text_add(&text, "");
            int units_n = k < 40 ? 1 + (int)(rnd() % 60) : 300 + (int)(rnd() % 700);
            for (int i = 0; i < units_n; i++)
                text_add(&text, text_units[rnd() % (sizeof text_units / sizeof text_units[0])]);
            agrees_with_reference(t, &r, text.s, &mismatches);
        }
        CHECK_MSG(mismatches == 0, "vocabulary %d: %d mismatches", vocab_seed, mismatches);
        free(text.s);
        ref_free(&r);
        tok_free(t);
    }
}

// For information only (timings vary with the machine, so nothing is
// asserted on them): encoding 200 KB of dialogue, which a merge loop that
// rescans every pair, as run.c's does, takes tens of seconds over. The ids
// must still decode back to the text.
static void report_long_text_time(void) {
    BsError err = {0};
    Tokenizer *t = NULL;
    CHECK_MSG(tok_load_llama2c(&t, LLAMA2_TOK, 32000, &err) == 0, "%s", err.message);
    if (!t) return;
    Text text = {0};
    while (text.n < 200000)
        text_add(&text, "\n\nHuman: x");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int *ids = NULL, n = 0;
    int rc = tok_encode(t, text.s, 1, 0, &ids, &n, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK_MSG(rc == 0, "%s", err.message);
    printf("tok: encoding %zu bytes took %.3f s (%d ids)\n", text.n,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec), n);
    char *back = rc == 0 ? tok_decode(t, ids, n, &err) : NULL;
    CHECK(back && strcmp(back, text.s) == 0);
    free(back);
    free(ids);
    free(text.s);
    tok_free(t);
}

static void test_bytes(void) {
    BsError err = {0};
    Tokenizer *t = NULL;
    CHECK(tok_create_bytes(&t, &err) == 0);
    if (!t) return;
    CHECK_INT_EQ(tok_vocab_size(t), TOK_BYTES_VOCAB);
    CHECK_INT_EQ(tok_bos(t), TOK_BYTES_BOS);
    CHECK_INT_EQ(tok_eos(t), TOK_BYTES_EOS);
    const char *text = "h\xC3\xA9 \xF0\x9F\x98\x80\n";
    int want[] = {256, 'h', 0xC3, 0xA9, ' ', 0xF0, 0x9F, 0x98, 0x80, '\n', 257};
    check_encoding(t, text, 1, 1, want, 11);
    check_encoding(t, "", 0, 0, NULL, 0);
    check_encoding(t, "", 1, 0, (int[]){256}, 1);
    char *s = tok_decode(t, (int[]){256, 'h', 258, 'i', 257, 258}, 6, &err);
    CHECK(s && strcmp(s, "hi") == 0);
    free(s);
    check_round_trip(t, text);
    check_round_trip(t, " leading space stays");
    CHECK(strcmp(tok_piece(t, 256, 'x'), "x") == 0);
    CHECK(strcmp(tok_piece(t, 0, TOK_BYTES_EOS), "") == 0);
    CHECK(tok_piece(t, 0, TOK_BYTES_VOCAB) == NULL);
    bs_error_clear(&err);
    CHECK(tok_decode(t, (int[]){-1}, 1, &err) == NULL);
    CHECK(strcmp(err.code, "invalid_token") == 0);
    tok_free(t);
}

int main(void) {
    test_llama2();
    test_aidreams();
    test_malformed();
    test_equal_scores();
    test_bytes();
    report_long_text_time();
    return test_summary("tok");
}
