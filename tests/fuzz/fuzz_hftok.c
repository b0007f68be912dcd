// fuzz_hftok.c — libFuzzer target for the Hugging Face tokenizers
// (trainer/hftok.c) and their Tokenizer wrapper (trainer/tok.c tok_load).
//
// The input is up to five files separated by NUL bytes (JSON text holds no
// raw NUL):
//     tokenizer.json [NUL tokenizer_config.json [NUL special_tokens_map.json
//     [NUL text [NUL merges.txt]]]]
// An empty section means "no such file". With a fifth section the first is
// read as GPT-2's vocab.json and the fifth as its merges.txt (the folder is
// loaded); otherwise the first is a tokenizer.json (loaded by file name).
//
// A refusal must be invalid_tokenizer, tokenizer_unsupported or io (a side
// file that is not JSON). A loaded tokenizer encodes a few fixed texts, the
// text section and the tokenizer file's own first bytes (so its pieces
// appear): ids must lie in [0, size), decode must accept them; decode must
// accept any in-range id and refuse size; every token's string must map back
// to a token with that string; BOS/EOS must be -1 or ids. tok_load of the
// same path with a padded vocabulary must agree with hftok: the same ids plus
// BOS / EOS, and padding ids decoding to nothing.
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"
#include "hftok.h"
#include "tok.h"

#define MAX_TEXT 512
#define PAD 3

static char dir[256], json_path[320], cfg_path[320], map_path[320], vocab_path[320],
    merges_path[320];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "%s", fuzz_tmp_dir("fuzz_hftok"));
    snprintf(json_path, sizeof json_path, "%s/tokenizer.json", dir);
    snprintf(cfg_path, sizeof cfg_path, "%s/tokenizer_config.json", dir);
    snprintf(map_path, sizeof map_path, "%s/special_tokens_map.json", dir);
    snprintf(vocab_path, sizeof vocab_path, "%s/vocab.json", dir);
    snprintf(merges_path, sizeof merges_path, "%s/merges.txt", dir);
    return 0;
}

// Writes data[0..n) to path, or removes path when there is no section.
static void put(const char *path, const uint8_t *data, size_t n, int present) {
    if (!present) {
        FUZZ_CHECK(unlink(path) == 0 || errno == ENOENT, "unlink %s", path);
        return;
    }
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL && (n == 0 || fwrite(data, 1, n, f) == n) && fclose(f) == 0,
               "cannot write %s", path);
}

static void check_ids(const HfTok *h, const int *ids, int n) {
    int size = hftok_size(h);
    for (int i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < size, "id %d outside [0, %d)", ids[i], size);
    BsError err = {0};
    for (int skip = 0; skip < 2; skip++) {
        char *s = hftok_decode(h, ids, n, skip, &err);
        FUZZ_CHECK(s != NULL, "decode of encoded ids failed: %s", err.message);
        free(s);
    }
}

static void check_encode(const HfTok *h, const Tokenizer *t, const char *text) {
    int *ids = NULL, n = -1;
    BsError err = {0};
    int valid = fuzz_utf8_valid((const uint8_t *)text, strlen(text));
    int rc = hftok_encode(h, text, &ids, &n, &err);
    FUZZ_DEBUG("encode '%.40s': %d ids%s%s", text, n, rc ? " error: " : "", rc ? err.message : "");
    if (rc != 0) {
        FUZZ_CHECK(ids == NULL && n == 0, "failed encode returned ids");
        // Valid text fails only on a regex runtime error or an unk token the
        // vocabulary lacks.
        FUZZ_CHECK(!valid ? strcmp(err.code, "invalid_text") == 0
                          : strcmp(err.code, "invalid_text") == 0 ||
                                strcmp(err.code, "invalid_tokenizer") == 0,
                   "encode failed: %s: %s", err.code, err.message);
        int *tids = NULL, tn = 0;
        FUZZ_CHECK(tok_encode(t, text, 1, 1, &tids, &tn, &err) != 0, "tok_encode disagrees");
        return;
    }
    FUZZ_CHECK(valid, "encoded text that is not UTF-8");
    FUZZ_CHECK(ids != NULL && n >= 0, "no ids");
    check_ids(h, ids, n);
    // The wrapper: the same ids framed by BOS / EOS when the tokenizer has them.
    int *tids = NULL, tn = 0;
    FUZZ_CHECK(tok_encode(t, text, 1, 1, &tids, &tn, &err) == 0, "tok_encode: %s", err.message);
    int bos = hftok_bos(h), eos = hftok_eos(h), k = 0;
    FUZZ_CHECK(tn == n + (bos >= 0) + (eos >= 0), "tok_encode gave %d ids for %d", tn, n);
    if (bos >= 0) FUZZ_CHECK(tids[k++] == bos, "no BOS first");
    FUZZ_CHECK(n == 0 || memcmp(tids + k, ids, (size_t)n * sizeof *ids) == 0,
               "tok_encode ids differ from hftok_encode");
    if (eos >= 0) FUZZ_CHECK(tids[tn - 1] == eos, "no EOS last");
    char *s = tok_decode(t, tids, tn, &err);
    FUZZ_CHECK(s != NULL, "tok_decode of encoded ids: %s", err.message);
    free(s);
    free(tids);
    free(ids);
}

static void exercise(const HfTok *h, const Tokenizer *t, const char *own_text, const char *text) {
    int size = hftok_size(h);
    FUZZ_CHECK(size >= 0, "size %d", size);
    FUZZ_CHECK(tok_vocab_size(t) == size + PAD, "tok vocab %d for %d", tok_vocab_size(t), size);
    int bos = hftok_bos(h), eos = hftok_eos(h);
    FUZZ_CHECK(bos >= -1 && bos < size && eos >= -1 && eos < size, "bos %d eos %d of %d", bos, eos,
               size);
    FUZZ_CHECK(tok_bos(t) == bos && tok_eos(t) == eos, "tok_bos / tok_eos differ");
    static const char *fixed[] = {"", "Hello world", "  two  spaces\tand\nnewline 123 4567",
                                  "caf\xc3\xa9 \xe2\x96\x81 \xf0\x9f\x98\x80 <s></s><|endoftext|>",
                                  "\xff\xfe not UTF-8"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        check_encode(h, t, fixed[i]);
    check_encode(h, t, own_text);
    if (text) check_encode(h, t, text);

    // Every id decodes; an id past the end does not.
    BsError err = {0};
    int ids[64], n = 0;
    for (int i = 0; i < size && n < 32; i += 1 + size / 32)
        ids[n++] = i;
    if (size > 0) ids[n++] = size - 1;
    char *s = hftok_decode(h, ids, n, 0, &err);
    FUZZ_CHECK(s != NULL, "decode of in-range ids failed: %s", err.message);
    free(s);
    int bad = size;
    FUZZ_CHECK(hftok_decode(h, &bad, 1, 0, &err) == NULL, "decode accepted id %d", size);
    bad = -1;
    FUZZ_CHECK(hftok_decode(h, &bad, 1, 0, &err) == NULL, "decode accepted id -1");
    // Padding ids (past the tokenizer, inside the model) decode to nothing.
    int padded[2] = {size, size + PAD - 1};
    s = tok_decode(t, padded, 2, &err);
    FUZZ_CHECK(s != NULL && s[0] == '\0', "padding ids decoded to '%s'", s ? s : "(null)");
    free(s);
    padded[0] = size + PAD;
    FUZZ_CHECK(tok_decode(t, padded, 1, &err) == NULL, "tok_decode accepted id %d", size + PAD);

    for (int i = 0; i < n; i++) {
        int strips = 0;
        FUZZ_CHECK(hftok_piece(h, ids[i], &strips) != NULL || hftok_token(h, ids[i]) == NULL,
                   "token %d has no piece", ids[i]);
        FUZZ_CHECK(tok_piece(t, bos, ids[i]) != NULL, "tok_piece(%d)", ids[i]);
        const char *tok = hftok_token(h, ids[i]);
        if (!tok) continue;
        int back = hftok_token_id(h, tok);
        FUZZ_CHECK(back >= 0 && back < size, "token %d '%s' maps to %d", ids[i], tok, back);
        const char *again = hftok_token(h, back);
        FUZZ_CHECK(again && strcmp(again, tok) == 0, "token %d '%s' maps to %d '%s'", ids[i], tok,
                   back, again ? again : "(null)");
    }
    int strips = 0;
    FUZZ_CHECK(hftok_piece(h, size, &strips) == NULL, "piece past the end");
    FUZZ_CHECK(hftok_token(h, -1) == NULL && hftok_token(h, size) == NULL, "token out of range");
    FUZZ_CHECK(tok_piece(t, -1, size + PAD) == NULL, "tok_piece past the end");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // Sections at the NULs.
    const uint8_t *sec[5] = {0};
    size_t len[5] = {0};
    int n_sec = 0;
    size_t start = 0;
    for (size_t i = 0; i <= size && n_sec < 5; i++) {
        if (i == size || data[i] == 0) {
            sec[n_sec] = data + start;
            len[n_sec] = (n_sec == 4 ? size : i) - start;
            n_sec++;
            start = i + 1;
        }
    }
    int gpt2 = n_sec == 5;
    put(json_path, sec[0], len[0], !gpt2);
    put(vocab_path, sec[0], len[0], gpt2);
    put(merges_path, sec[4], len[4], gpt2);
    put(cfg_path, sec[1], len[1], n_sec > 1 && len[1] > 0);
    put(map_path, sec[2], len[2], n_sec > 2 && len[2] > 0);
    char text[MAX_TEXT + 1], own[MAX_TEXT + 1];
    int has_text = n_sec > 3;
    if (has_text) {
        size_t n = len[3] < MAX_TEXT ? len[3] : MAX_TEXT;
        memcpy(text, sec[3], n);
        text[n] = '\0';
    }
    size_t on = len[0] < MAX_TEXT ? len[0] : MAX_TEXT;
    memcpy(own, sec[0], on);
    own[on] = '\0';

    const char *path = gpt2 ? dir : json_path;
    HfTok *h = (HfTok *)1;
    BsError err = {0};
    int rc = hftok_load(&h, path, &err);
    Tokenizer *t = NULL;
    BsError terr = {0};
    int trc = -1;
    if (rc == 0) trc = tok_load(&t, path, hftok_size(h) + PAD, &terr);
    FUZZ_DEBUG("hftok_load %s: %d %s %s", gpt2 ? "gpt2 files" : "tokenizer.json", rc,
               rc ? err.code : "", rc ? err.message : "");
    if (rc != 0) {
        FUZZ_CHECK(h == NULL, "failed load returned a tokenizer");
        FUZZ_CHECK(strcmp(err.code, "invalid_tokenizer") == 0 ||
                       strcmp(err.code, "tokenizer_unsupported") == 0 ||
                       strcmp(err.code, "io") == 0,
                   "code %s: %s", err.code, err.message);
        return 0;
    }
    FUZZ_CHECK(trc == 0, "hftok_load accepted what tok_load refused: %s", terr.message);
    exercise(h, t, own, has_text ? text : NULL);
    tok_free(t);
    hftok_free(h);
    return 0;
}
