// fuzz_tok.c — libFuzzer target for the tokenizers (trainer/tok.c).
//
// The input is a llama2.c tokenizer.bin. It is counted (tok_count_llama2c)
// and loaded with a few vocab sizes: the counted one must load, any other
// must be refused; a file that cannot be counted must not load at all. Each
// loaded tokenizer encodes a fixed text and a text made of the input's own
// bytes (so the pieces it merges are ones the file defines), and decodes
// those ids and ids drawn from the input. Encoded ids must lie in the
// vocabulary, end with EOS when asked and number at most len + 3. The byte tokenizer must
// round-trip the input text exactly.
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "tok.h"

#define MAX_TEXT 256 // llama2.c merging is quadratic in the text length

static FuzzFile input;
static Tokenizer *bytes_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    BsError err = {0};
    fuzz_file_init(&input, "fuzz_tok_input");
    FUZZ_CHECK(tok_create_bytes(&bytes_tok, &err) == 0, "%s", err.message);
    return 0;
}

static void check_encode(const Tokenizer *t, const char *text, int bos, int eos) {
    int *ids = NULL, n = 0;
    BsError err = {0};
    int v = tok_vocab_size(t);
    if (tok_encode(t, text, bos, eos, &ids, &n, &err) != 0) {
        // Only a vocabulary without byte-fallback pieces can refuse a text.
        FUZZ_CHECK(strcmp(err.code, "unencodable_text") == 0, "encode failed: %s: %s", err.code,
                   err.message);
        FUZZ_CHECK(ids == NULL && n == 0, "failed encode returned ids");
        return;
    }
    size_t len = strlen(text);
    FUZZ_CHECK(n >= 0 && (size_t)n <= len + 3, "%d ids for %zu bytes", n, len);
    FUZZ_CHECK(ids != NULL, "no ids");
    for (int i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < v, "id %d outside [0, %d)", ids[i], v);
    // No BOS check: run.c merges BOS like any token, so a vocabulary holding
    // BOS's piece + the next piece (an empty BOS piece, say) absorbs it.
    // EOS is appended after merging and always ends the ids.
    if (bos) FUZZ_CHECK(n > 0, "no ids with BOS");
    if (eos) FUZZ_CHECK(n > 0 && ids[n - 1] == tok_eos(t), "no EOS");
    if (!bos && !eos && len > 0) FUZZ_CHECK(n > 0, "non-empty text encoded to nothing");
    char *back = tok_decode(t, ids, n, &err);
    FUZZ_CHECK(back != NULL, "decode of encoded ids failed: %s", err.message);
    free(back);
    free(ids);
}

static void exercise(const Tokenizer *t, const uint8_t *data, size_t size, const char *text) {
    int v = tok_vocab_size(t);
    check_encode(t, "Hello world", 1, 0);
    check_encode(t, "", 1, 1);
    check_encode(t, text, 1, 1);
    check_encode(t, text, 0, 0);
    // Ids from the input, plus the edges of the vocabulary.
    int ids[66];
    int n = 0;
    ids[n++] = 0;
    ids[n++] = v - 1;
    for (size_t i = 0; i + 1 < size && n < 66; i += 2)
        ids[n++] = (int)((data[i] | (unsigned)data[i + 1] << 8) % (unsigned)v);
    BsError err = {0};
    char *s = tok_decode(t, ids, n, &err);
    FUZZ_CHECK(s != NULL, "decode of in-range ids failed: %s", err.message);
    free(s);
    int bad[2] = {1, v};
    FUZZ_CHECK(tok_decode(t, bad, 2, &err) == NULL, "decode accepted id %d", v);
    int prev = -1;
    for (int i = 0; i < n; i++) {
        FUZZ_CHECK(tok_piece(t, prev, ids[i]) != NULL, "no piece for id %d", ids[i]);
        prev = ids[i];
    }
    FUZZ_CHECK(tok_piece(t, 1, v) == NULL && tok_piece(t, 1, -1) == NULL, "piece out of range");
}

static void check_bytes_roundtrip(const char *text) {
    size_t len = strlen(text);
    int *ids = NULL, n = 0;
    BsError err = {0};
    FUZZ_CHECK(tok_encode(bytes_tok, text, 1, 1, &ids, &n, &err) == 0, "%s", err.message);
    FUZZ_CHECK((size_t)n == len + 2, "%d ids for %zu bytes", n, len);
    FUZZ_CHECK(ids[0] == TOK_BYTES_BOS && ids[n - 1] == TOK_BYTES_EOS, "BOS/EOS missing");
    for (size_t i = 0; i < len; i++)
        FUZZ_CHECK(ids[i + 1] == (unsigned char)text[i], "byte %zu encoded as %d", i, ids[i + 1]);
    char *back = tok_decode(bytes_tok, ids, n, &err);
    FUZZ_CHECK(back != NULL && strcmp(back, text) == 0, "byte tokenizer round trip failed");
    free(back);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // The text: the input's bytes after the header, NULs dropped.
    char text[MAX_TEXT + 1];
    size_t tl = 0;
    for (size_t i = size > 4 ? 4 : 0; i < size && tl < MAX_TEXT; i++)
        if (data[i]) text[tl++] = (char)data[i];
    text[tl] = '\0';
    check_bytes_roundtrip(text);

    fuzz_file_set(&input, data, size);
    BsError err = {0};
    int count = -1;
    int counted = tok_count_llama2c(input.path, &count, &err) == 0;
    if (counted) FUZZ_CHECK(count >= 0, "count %d", count);
    int sizes[4] = {counted ? count : 512, counted ? count + 1 : 3, 3, 512};
    for (int i = 0; i < 4; i++) {
        Tokenizer *t = NULL;
        int rc = tok_load_llama2c(&t, input.path, sizes[i], &err);
        int should = counted && count >= 3 && sizes[i] == count;
        FUZZ_CHECK((rc == 0) == should, "load with vocab %d: rc %d (counted %d, count %d): %s",
                   sizes[i], rc, counted, count, rc ? err.message : "");
        if (rc != 0) {
            FUZZ_CHECK(t == NULL, "failed load returned a tokenizer");
            continue;
        }
        FUZZ_CHECK(tok_vocab_size(t) == sizes[i], "vocab %d", tok_vocab_size(t));
        exercise(t, data, size, text);
        tok_free(t);
    }
    return 0;
}
