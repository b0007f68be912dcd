// fuzz_ckpt.c — libFuzzer target for the llama2.c checkpoint reader
// (trainer/ckpt.c).
//
// The input is a checkpoint file. ckpt_peek_llama2c and ckpt_read_llama2c
// must agree (same verdict, same config); an accepted file must be exactly
// as large as its header says, so the parameter buffer never exceeds the
// input (libFuzzer's -malloc_limit_mb catches any allocation a header alone
// could ask for). The floats read must be the file's bytes at the v0 offsets,
// and writing them back (ckpt_write_llama2c) must reproduce the file except
// for the regenerated freq_cis tables.
#include <stdint.h>
#include <string.h>

#include "ckpt.h"
#include "fuzz_common.h"
#include "model.h"

static FuzzFile input;
static char out_path[128];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_file_init(&input, "fuzz_ckpt_input");
    // tmpfs when available: the round trip fsyncs on every accepted input.
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    if (!dir) dir = "/tmp";
    snprintf(out_path, sizeof out_path, "%s/fuzz_ckpt_%d.bin", dir, (int)getpid());
    return 0;
}

static int same_config(const ModelConfig *a, const ModelConfig *b) {
    return a->dim == b->dim && a->hidden_dim == b->hidden_dim && a->n_layers == b->n_layers &&
           a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads &&
           a->vocab_size == b->vocab_size && a->seq_len == b->seq_len &&
           a->shared_classifier == b->shared_classifier;
}

static void check_roundtrip(const uint8_t *data, size_t size, const ModelConfig *c,
                            const float *params) {
    BsError err = {0};
    FUZZ_CHECK(ckpt_write_llama2c(out_path, c, params, &err) == 0, "write: %s", err.message);
    FILE *f = fopen(out_path, "rb");
    FUZZ_CHECK(f != NULL, "cannot reopen %s", out_path);
    uint8_t *back = malloc(size + 1);
    FUZZ_CHECK(back != NULL, "oom");
    size_t got = fread(back, 1, size + 1, f);
    fclose(f);
    unlink(out_path);
    FUZZ_CHECK(got == size, "rewritten file is %zu bytes, input %zu", got, size);
    size_t n = model_param_count(c);
    size_t before = c->shared_classifier ? n : n - (size_t)c->vocab_size * (size_t)c->dim;
    size_t freq = (size_t)c->seq_len * (size_t)(c->dim / c->n_heads);
    size_t head = 28 + before * 4, tail = head + freq * 4;
    FUZZ_CHECK(memcmp(back, data, head) == 0, "header or tensors differ after rewrite");
    FUZZ_CHECK(memcmp(back + tail, data + tail, size - tail) == 0, "wcls differs after rewrite");
    free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_file_set(&input, data, size);
    ModelConfig peek, read;
    BsError err = {0};
    float *params = (float *)1;
    int rc_peek = ckpt_peek_llama2c(input.path, &peek, &err);
    int rc_read = ckpt_read_llama2c(input.path, &read, &params, &err);
    FUZZ_CHECK(rc_peek == rc_read, "peek %d but read %d: %s", rc_peek, rc_read, err.message);
    if (rc_read != 0) {
        FUZZ_CHECK(params == NULL, "failed read left params");
        FUZZ_CHECK(strcmp(err.code, "model_invalid") == 0, "code %s: %s", err.code, err.message);
        return 0;
    }
    FUZZ_CHECK(same_config(&peek, &read), "peek and read disagree on the config");
    FUZZ_CHECK(model_config_validate(&read, &err) == 0, "accepted an invalid config: %s",
               err.message);
    size_t n = model_param_count(&read);
    FUZZ_CHECK(n * sizeof(float) + 28 <= size, "%zu params from a %zu-byte file", n, size);
    size_t before = read.shared_classifier ? n : n - (size_t)read.vocab_size * (size_t)read.dim;
    size_t freq = (size_t)read.seq_len * (size_t)(read.dim / read.n_heads);
    FUZZ_CHECK(28 + (n + freq) * 4 == size, "size %zu does not match the header", size);
    FUZZ_CHECK(memcmp(params, data + 28, before * 4) == 0, "tensors differ from the file");
    FUZZ_CHECK(memcmp(params + before, data + 28 + (before + freq) * 4, (n - before) * 4) == 0,
               "wcls differs from the file");
    check_roundtrip(data, size, &read, params);
    free(params);
    return 0;
}
