// fuzz_data.c — libFuzzer target for the JSONL data loader (trainer/data.c).
//
// The input is one data file (plain JSONL, or gzip: zlib reads both), loaded
// from a memfd under a fixed table of settings: preference and SFT rows, with
// the byte tokenizer, a tiny llama2.c tokenizer that merges across the
// prompt/completion boundary, and no tokenizer (pre-tokenized rows only), at
// small max_length values with both truncation modes and both bad-row
// policies (three settings per input while fuzzing, all in a replay).
// Properties of a successful load, from data.h's contract: every
// line is kept, refused or dropped; every kept row has a non-empty completion
// (both for preference), fits max_length after truncation and only holds ids
// in [0, vocab); SFT rows have no rejected part. A failed load leaves an
// empty dataset and an error code.
#include <stdint.h>
#include <string.h>

#include "data.h"
#include "fuzz_common.h"
#include "tok.h"

enum { T_NONE, T_BYTES, T_LLAMA };

typedef struct {
    DataKind kind;
    int tok;
    int vocab; // 0: the tokenizer's own
    int max_length;
    int max_prompt_length;
    TruncationMode trunc;
    BadRowPolicy bad;
} Config;

static const Config configs[] = {
    {DATA_PREFERENCE, T_BYTES, 0, 2, 512, TRUNC_KEEP_END, BAD_ROWS_SKIP},
    {DATA_PREFERENCE, T_BYTES, 0, 7, 3, TRUNC_KEEP_START, BAD_ROWS_SKIP},
    {DATA_PREFERENCE, T_BYTES, 200, 64, 8, TRUNC_KEEP_END, BAD_ROWS_ERROR},
    {DATA_PREFERENCE, T_NONE, 64, 5, 512, TRUNC_KEEP_END, BAD_ROWS_SKIP},
    {DATA_PREFERENCE, T_NONE, 259, 64, 8, TRUNC_KEEP_START, BAD_ROWS_ERROR},
    {DATA_PREFERENCE, T_LLAMA, 0, 16, 6, TRUNC_KEEP_END, BAD_ROWS_SKIP},
    {DATA_SFT, T_BYTES, 0, 2, 512, TRUNC_KEEP_START, BAD_ROWS_SKIP},
    {DATA_SFT, T_BYTES, 0, 9, 4, TRUNC_KEEP_END, BAD_ROWS_ERROR},
    {DATA_SFT, T_NONE, 64, 3, 1, TRUNC_KEEP_END, BAD_ROWS_SKIP},
    {DATA_SFT, T_NONE, 259, 64, 512, TRUNC_KEEP_START, BAD_ROWS_SKIP},
    {DATA_SFT, T_LLAMA, 0, 16, 6, TRUNC_KEEP_START, BAD_ROWS_SKIP},
};

#define N_CONFIGS (sizeof configs / sizeof configs[0])
#define CONFIGS_PER_INPUT 3
#define LLAMA_MAX_INPUT (64 * 1024)

static FuzzFile input;
static Tokenizer *bytes_tok, *llama_tok;
static int all_configs; // FUZZ_ALL_CONFIGS set (run.sh replay): every input under every config

// A llama2.c tokenizer.bin image: <unk>, <s>, </s>, the 256 <0xNN> byte
// pieces, then merges chosen to split HH-style rows at odd places (": " and
// "t:" straddle "Assistant:" + " completion").
static void build_llama_tok(void) {
    // clang-format off
    static const char *const merges[] = {
        " ", "a", "e", "t", "n", "ab", "Human", ":", ": ", "t:", "\n", "\n\n", "Assistant",
        " S", "Sure", "é", " the", "he", "the", "ant", "Assis", "ss", "\xf0\x9f\x98\x80"};
    // clang-format on
    size_t n_merges = sizeof merges / sizeof merges[0];
    uint8_t buf[8192];
    size_t off = 0;
    int32_t max_len = 16;
    memcpy(buf + off, &max_len, 4), off += 4;
    char piece[32];
    for (int i = 0; i < 259 + (int)n_merges; i++) {
        if (i == 0)
            snprintf(piece, sizeof piece, "<unk>");
        else if (i == 1)
            snprintf(piece, sizeof piece, "<s>");
        else if (i == 2)
            snprintf(piece, sizeof piece, "</s>");
        else if (i < 259)
            snprintf(piece, sizeof piece, "<0x%02X>", i - 3);
        else
            snprintf(piece, sizeof piece, "%s", merges[i - 259]);
        float score = i < 259 ? 0.0f : -(float)(i - 259);
        int32_t len = (int32_t)strlen(piece);
        FUZZ_CHECK(off + 8 + (size_t)len <= sizeof buf, "tokenizer image too large");
        memcpy(buf + off, &score, 4), off += 4;
        memcpy(buf + off, &len, 4), off += 4;
        memcpy(buf + off, piece, (size_t)len), off += (size_t)len;
    }
    FuzzFile f;
    fuzz_file_init(&f, "fuzz_data_tok");
    fuzz_file_set(&f, buf, off);
    BsError err = {0};
    FUZZ_CHECK(tok_load_llama2c(&llama_tok, f.path, 259 + (int)n_merges, &err) == 0, "%s",
               err.message);
    close(f.fd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    BsError err = {0};
    fuzz_file_init(&input, "fuzz_data_input");
    all_configs = getenv("FUZZ_ALL_CONFIGS") != NULL;
    FUZZ_CHECK(tok_create_bytes(&bytes_tok, &err) == 0, "%s", err.message);
    build_llama_tok();
    return 0;
}

static void check_dataset(const Dataset *ds, const Config *c, int vocab) {
    if (c->bad == BAD_ROWS_ERROR)
        FUZZ_CHECK(ds->n_bad == 0, "n_bad %d with bad_rows: error", ds->n_bad);
    FUZZ_CHECK(ds->n + ds->n_bad + ds->n_dropped == ds->n_lines,
               "rows %d + bad %d + dropped %d != lines %d", ds->n, ds->n_bad, ds->n_dropped,
               ds->n_lines);
    FUZZ_CHECK((ds->n_bad == 0) == (ds->first_bad_line == 0), "first_bad_line %d with n_bad %d",
               ds->first_bad_line, ds->n_bad);
    FUZZ_CHECK(ds->n == 0 || ds->rows != NULL, "rows missing");
    int prev_line = 0;
    for (int i = 0; i < ds->n; i++) {
        const Example *ex = &ds->rows[i];
        FUZZ_CHECK(ex->line > prev_line, "row %d line %d after line %d", i, ex->line, prev_line);
        prev_line = ex->line;
        FUZZ_CHECK(ex->n_prompt >= 0 && ex->n_chosen > 0, "row %d: prompt %d chosen %d", i,
                   ex->n_prompt, ex->n_chosen);
        if (c->kind == DATA_PREFERENCE)
            FUZZ_CHECK(ex->n_rejected > 0 && ex->rejected, "row %d: rejected %d", i,
                       ex->n_rejected);
        else
            FUZZ_CHECK(ex->n_rejected == 0 && !ex->rejected, "SFT row %d has a rejected part", i);
        int longer = ex->n_chosen > ex->n_rejected ? ex->n_chosen : ex->n_rejected;
        FUZZ_CHECK(ex->n_prompt + longer <= c->max_length, "row %d: %d + %d > max_length %d", i,
                   ex->n_prompt, longer, c->max_length);
        const int *seqs[3] = {ex->prompt, ex->chosen, ex->rejected};
        const int lens[3] = {ex->n_prompt, ex->n_chosen, ex->n_rejected};
        for (int s = 0; s < 3; s++) {
            FUZZ_CHECK(lens[s] == 0 || seqs[s], "row %d: sequence %d missing", i, s);
            for (int j = 0; j < lens[s]; j++)
                FUZZ_CHECK(seqs[s][j] >= 0 && seqs[s][j] < vocab, "row %d: id %d outside [0, %d)",
                           i, seqs[s][j], vocab);
        }
    }
}

// Each load allocates zlib's and the reader's 256 KiB buffers, so while
// fuzzing an input runs under CONFIGS_PER_INPUT consecutive configs starting
// at one picked by its hash (a mutation moves it to others); a replay runs
// all of them.
static size_t first_config(const uint8_t *data, size_t size) {
    uint32_t h = 2166136261u; // FNV-1a
    for (size_t j = 0; j < size; j++)
        h = (h ^ data[j]) * 16777619u;
    return h % N_CONFIGS;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_file_set(&input, data, size);
    size_t first = first_config(data, size);
    for (size_t i = 0; i < N_CONFIGS; i++) {
        if (!all_configs && (i + N_CONFIGS - first) % N_CONFIGS >= CONFIGS_PER_INPUT) continue;
        const Config *c = &configs[i];
        // llama2.c's merge loop is quadratic in the text length (a 200 KB text
        // takes seconds), which would hide data.c's own cost on large replays.
        if (c->tok == T_LLAMA && size > LLAMA_MAX_INPUT) continue;
        const Tokenizer *tok = c->tok == T_BYTES ? bytes_tok : c->tok == T_LLAMA ? llama_tok : NULL;
        int vocab = c->vocab ? c->vocab : tok_vocab_size(tok);
        Recipe r;
        recipe_defaults(&r, c->kind == DATA_SFT ? METHOD_SFT : METHOD_DPO);
        r.max_length = c->max_length;
        r.max_prompt_length = c->max_prompt_length;
        r.truncation_mode = c->trunc;
        r.bad_rows = c->bad;
        r.train_file = input.path; // not owned: never recipe_free'd
        Dataset ds;
        BsError err = {0};
        if (data_load(&ds, input.path, &r, tok, vocab, c->max_length, &err) == 0) {
            check_dataset(&ds, c, vocab);
        } else {
            FUZZ_CHECK(err.code[0] != '\0', "failure without an error code");
            FUZZ_CHECK(ds.n == 0 && ds.rows == NULL, "failed load left %d rows", ds.n);
            FUZZ_CHECK(strcmp(err.param, "train_file") == 0, "error param '%s'", err.param);
        }
        data_free(&ds);
    }
    return 0;
}
