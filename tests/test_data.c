// test_data.c — JSONL loading: every row kind (with the byte tokenizer, whose
// ids are the bytes themselves, so expected ids are written out by hand),
// TRL's implicit-prompt split, the prompt/completion token boundary with the
// Llama 2 tokenizer, truncation (keep_start / keep_end), dropped and bad rows
// with their line numbers, gzip, the real HH-RLHF harmless-base test split,
// and conversational rows through the chat templates with a Hugging Face
// byte-level tokenizer (BOS only when the text lacks it, EOS only when the
// completion lacks it, none when the tokenizer has none).
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "data.h"
#include "test_util.h"

#define BOS TOK_BYTES_BOS
#define EOS TOK_BYTES_EOS

static char tmpdir[256];

static Recipe make_recipe(DataKind kind, const char *train_file) {
    Recipe r;
    recipe_defaults(&r, kind == DATA_SFT ? METHOD_SFT : METHOD_DPO);
    r.train_file = (char *)train_file; // not owned: never recipe_free'd here
    return r;
}

// ids == expected[0..n)
static int ids_eq(const int *ids, int n, const int *expected, int n_expected) {
    if (n != n_expected) return 0;
    for (int i = 0; i < n; i++)
        if (ids[i] != expected[i]) return 0;
    return 1;
}

// ids == [BOS?] + bytes of s + [EOS?]
static int ids_are_text(const int *ids, int n, int bos, const char *s, int eos) {
    int want = (int)strlen(s) + (bos ? 1 : 0) + (eos ? 1 : 0);
    if (n != want) return 0;
    int k = 0;
    if (bos && ids[k++] != BOS) return 0;
    for (const char *p = s; *p; p++)
        if (ids[k++] != (unsigned char)*p) return 0;
    if (eos && ids[k] != EOS) return 0;
    return 1;
}

static void print_ids(const char *what, const int *ids, int n) {
    fprintf(stderr, "  %s (%d):", what, n);
    for (int i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

#define CHECK_TEXT(ids, n, bos, s, eos)                                                            \
    do {                                                                                           \
        int _ok = ids_are_text(ids, n, bos, s, eos);                                               \
        CHECK_MSG(_ok, "ids are not %s%s%s", bos ? "BOS+" : "", #s, eos ? "+EOS" : "");            \
        if (!_ok) print_ids("got", ids, n);                                                        \
    } while (0)

#define CHECK_IDS(ids, n, ...)                                                                     \
    do {                                                                                           \
        const int _e[] = {__VA_ARGS__};                                                            \
        int _ok = ids_eq(ids, n, _e, (int)(sizeof _e / sizeof _e[0]));                             \
        CHECK_MSG(_ok, "ids differ from {%s}", #__VA_ARGS__);                                      \
        if (!_ok) print_ids("got", ids, n);                                                        \
    } while (0)

static int load(Dataset *ds, const char *path, const Recipe *r, const Tokenizer *tok, int vocab,
                int max_length, BsError *err) {
    bs_error_clear(err);
    int rc = data_load(ds, path, r, tok, vocab, max_length, err);
    if (rc != 0)
        fprintf(stderr, "  data_load(%s): %s [%s] %s\n", path, err->code, err->param, err->message);
    return rc;
}

static void test_implicit_prompt_split(void) {
    struct {
        const char *c, *r;
        size_t want;
    } cases[] = {
        // HH style: the space before the differing word belongs to the completions.
        {"\n\nHuman: hi\n\nAssistant: Sure", "\n\nHuman: hi\n\nAssistant: No", 23},
        {"The sky is blue.", "The sky is green.", 10}, // TRL's docstring example
        {"abc", "abd", 2},
        {"caf\xC3\xA9", "caf\xC3\xA8", 3}, // differing UTF-8 continuation: split before 'é'
        {"abc", "abcd", 2},                // nothing differs: TRL's index ends at min_len - 1
        {"a\xC3\xA9", "a\xC3\xA9z", 1},    // ... counted in characters, not bytes
        {"x", "y", 0},
        {"same", "same", 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t got = data_implicit_prompt_len(cases[i].c, strlen(cases[i].c), cases[i].r,
                                              strlen(cases[i].r));
        CHECK_MSG(got == cases[i].want, "case %zu: split at %zu, want %zu", i, got, cases[i].want);
    }
    const char *c = cases[0].c;
    CHECK(memcmp(c, "\n\nHuman: hi\n\nAssistant:", 23) == 0 && strcmp(c + 23, " Sure") == 0);
}

static void test_preference_text(const Tokenizer *bytes) {
    BsError err;
    Dataset ds;
    Recipe r = make_recipe(DATA_PREFERENCE, "tests/data/pref_explicit.jsonl");
    if (load(&ds, "tests/data/pref_explicit.jsonl", &r, bytes, TOK_BYTES_VOCAB, 1024, &err) == 0) {
        CHECK_INT_EQ(ds.n, 2);
        CHECK_INT_EQ(ds.n_lines, 2);
        CHECK_INT_EQ(ds.n_bad + ds.n_truncated + ds.n_dropped, 0);
        if (ds.n == 2) {
            CHECK_TEXT(ds.rows[0].prompt, ds.rows[0].n_prompt, 1, "Q: 2+2?", 0);
            CHECK_TEXT(ds.rows[0].chosen, ds.rows[0].n_chosen, 0, " 4", 1);
            CHECK_TEXT(ds.rows[0].rejected, ds.rows[0].n_rejected, 0, " 5", 1);
            CHECK_INT_EQ(ds.rows[0].line, 1);
            // Empty explicit prompt: just BOS.
            CHECK_IDS(ds.rows[1].prompt, ds.rows[1].n_prompt, BOS);
            CHECK_TEXT(ds.rows[1].chosen, ds.rows[1].n_chosen, 0, "yes", 1);
            CHECK_TEXT(ds.rows[1].rejected, ds.rows[1].n_rejected, 0, "no", 1);
        }
        data_free(&ds);
    } else {
        CHECK(0);
    }

    r.train_file = "tests/data/pref_implicit.jsonl";
    if (load(&ds, r.train_file, &r, bytes, TOK_BYTES_VOCAB, 1024, &err) == 0) {
        CHECK_INT_EQ(ds.n, 3);
        if (ds.n == 3) {
            CHECK_TEXT(ds.rows[0].prompt, ds.rows[0].n_prompt, 1, "\n\nHuman: hi\n\nAssistant:", 0);
            CHECK_TEXT(ds.rows[0].chosen, ds.rows[0].n_chosen, 0, " Sure", 1);
            CHECK_TEXT(ds.rows[0].rejected, ds.rows[0].n_rejected, 0, " No", 1);
            CHECK_TEXT(ds.rows[1].prompt, ds.rows[1].n_prompt, 1, "The sky is", 0);
            CHECK_TEXT(ds.rows[1].chosen, ds.rows[1].n_chosen, 0, " blue.", 1);
            CHECK_TEXT(ds.rows[1].rejected, ds.rows[1].n_rejected, 0, " green.", 1);
            CHECK_TEXT(ds.rows[2].prompt, ds.rows[2].n_prompt, 1, "caf", 0);
            CHECK_TEXT(ds.rows[2].chosen, ds.rows[2].n_chosen, 0, "\xC3\xA9 au lait", 1);
            CHECK_TEXT(ds.rows[2].rejected, ds.rows[2].n_rejected, 0, "\xC3\xA8 noir", 1);
        }
        data_free(&ds);
    } else {
        CHECK(0);
    }

    // Conversational rows render to the HH format.
    r.train_file = "tests/data/pref_conv.jsonl";
    if (load(&ds, r.train_file, &r, bytes, TOK_BYTES_VOCAB, 1024, &err) == 0) {
        CHECK_INT_EQ(ds.n, 4);
        CHECK_INT_EQ(ds.n_bad, 0);
        if (ds.n == 4) {
            for (int i = 0; i < 2; i++) { // explicit and implicit prompt: the same tokens
                CHECK_TEXT(ds.rows[i].prompt, ds.rows[i].n_prompt, 1,
                           "\n\nHuman: hi\n\nAssistant:", 0);
                CHECK_TEXT(ds.rows[i].chosen, ds.rows[i].n_chosen, 0, " Sure", 1);
                CHECK_TEXT(ds.rows[i].rejected, ds.rows[i].n_rejected, 0, " No", 1);
            }
            CHECK_TEXT(ds.rows[2].prompt, ds.rows[2].n_prompt, 1,
                       "\n\nSystem: Be brief.\n\nHuman: Name a color\n\nAssistant: Red"
                       "\n\nHuman: Another\n\nAssistant:",
                       0);
            CHECK_TEXT(ds.rows[2].chosen, ds.rows[2].n_chosen, 0, " Blue", 1);
            CHECK_TEXT(ds.rows[2].rejected, ds.rows[2].n_rejected, 0, " I refuse", 1);
            CHECK_TEXT(ds.rows[3].prompt, ds.rows[3].n_prompt, 1, "\n\nHuman: x\n\nAssistant:", 0);
            CHECK_TEXT(ds.rows[3].chosen, ds.rows[3].n_chosen, 0, " a\n\nHuman: b\n\nAssistant: c",
                       1);
            CHECK_TEXT(ds.rows[3].rejected, ds.rows[3].n_rejected, 0, " d", 1);
        }
        data_free(&ds);
    } else {
        CHECK(0);
    }

    // Without a tokenizer, text rows are bad rows (pre-tokenized ones load).
    r.train_file = "tests/data/pref_explicit.jsonl";
    if (load(&ds, r.train_file, &r, NULL, 512, 1024, &err) == 0) {
        CHECK_INT_EQ(ds.n, 0);
        CHECK_INT_EQ(ds.n_bad, 2);
        CHECK(strstr(ds.first_bad_reason, "tokenizer") != NULL);
        data_free(&ds);
    } else {
        CHECK(0);
    }
    // A model vocabulary smaller than the tokenizer's refuses ids beyond it.
    if (load(&ds, r.train_file, &r, bytes, 200, 1024, &err) == 0) {
        CHECK_INT_EQ(ds.n, 0);
        CHECK_INT_EQ(ds.n_bad, 2); // BOS = 256 >= 200
        data_free(&ds);
    } else {
        CHECK(0);
    }
}

static void test_pretokenized_truncation(void) {
    BsError err;
    Dataset ds;
    Recipe r = make_recipe(DATA_PREFERENCE, "tests/data/pref_ids.jsonl");
    r.max_prompt_length = 4;
    for (int mode = 0; mode < 2; mode++) {
        r.truncation_mode = mode ? TRUNC_KEEP_START : TRUNC_KEEP_END;
        if (load(&ds, r.train_file, &r, NULL, 100, 10, &err) != 0) {
            CHECK(0);
            continue;
        }
        CHECK_INT_EQ(ds.n_lines, 10);
        CHECK_INT_EQ(ds.n, 6);
        CHECK_INT_EQ(ds.n_truncated, 3);
        CHECK_INT_EQ(ds.n_dropped, 1);
        CHECK_INT_EQ(ds.n_bad, 3);
        CHECK_INT_EQ(ds.first_bad_line, 7);
        CHECK(strstr(ds.first_bad_reason, "chosen_ids[0] = 100") != NULL);
        if (ds.n == 6) {
            const Example *e = ds.rows;
            // line 1: 8 + 3 > 10 -> prompt cut to 4 tokens
            if (mode)
                CHECK_IDS(e[0].prompt, e[0].n_prompt, 1, 2, 3, 4);
            else
                CHECK_IDS(e[0].prompt, e[0].n_prompt, 5, 6, 7, 8);
            CHECK_IDS(e[0].chosen, e[0].n_chosen, 11, 12, 13);
            CHECK_IDS(e[0].rejected, e[0].n_rejected, 21, 22);
            // line 2: prompt 2 <= 4 stays; 2 + 10 > 10 -> completions cut to 10 - 4 = 6
            CHECK_IDS(e[1].prompt, e[1].n_prompt, 1, 2);
            CHECK_IDS(e[1].chosen, e[1].n_chosen, 30, 31, 32, 33, 34, 35);
            CHECK_IDS(e[1].rejected, e[1].n_rejected, 40, 41, 42);
            // line 3: both cuts
            if (mode)
                CHECK_IDS(e[2].prompt, e[2].n_prompt, 1, 2, 3, 4);
            else
                CHECK_IDS(e[2].prompt, e[2].n_prompt, 3, 4, 5, 6);
            CHECK_IDS(e[2].chosen, e[2].n_chosen, 50, 51, 52, 53, 54, 55);
            CHECK_IDS(e[2].rejected, e[2].n_rejected, 60);
            // line 4: fits
            CHECK_IDS(e[3].prompt, e[3].n_prompt, 1, 2, 3);
            CHECK_IDS(e[3].chosen, e[3].n_chosen, 70, 71);
            CHECK_INT_EQ(e[3].line, 4);
            // line 10: exactly max_length, untouched
            CHECK_IDS(e[4].prompt, e[4].n_prompt, 1, 2, 3, 4, 5);
            CHECK_IDS(e[4].chosen, e[4].n_chosen, 80, 81, 82, 83, 84);
            CHECK_INT_EQ(e[4].line, 10);
            // line 11: an empty prompt is allowed for pre-tokenized rows
            CHECK_INT_EQ(e[5].n_prompt, 0);
            CHECK_IDS(e[5].rejected, e[5].n_rejected, 91, 92);
            for (int i = 0; i < ds.n; i++) {
                int longer = e[i].n_chosen > e[i].n_rejected ? e[i].n_chosen : e[i].n_rejected;
                CHECK(e[i].n_prompt + longer <= 10);
            }
        }
        data_free(&ds);
    }
    // max_prompt_length >= the (model-capped) max_length: the prompt gets half.
    r.max_prompt_length = 512;
    r.truncation_mode = TRUNC_KEEP_END;
    if (load(&ds, r.train_file, &r, NULL, 100, 10, &err) == 0) {
        if (ds.n == 6) {
            CHECK_IDS(ds.rows[0].prompt, ds.rows[0].n_prompt, 4, 5, 6, 7, 8);
            CHECK_IDS(ds.rows[1].chosen, ds.rows[1].n_chosen, 30, 31, 32, 33, 34);
        } else {
            CHECK(0);
        }
        data_free(&ds);
    } else {
        CHECK(0);
    }
    // The error policy stops at the first bad row with its line number.
    r.bad_rows = BAD_ROWS_ERROR;
    CHECK(data_load(&ds, r.train_file, &r, NULL, 100, 10, &err) == -1);
    CHECK(strcmp(err.code, "dataset_schema") == 0);
    CHECK(strcmp(err.param, "train_file") == 0);
    CHECK_MSG(strncmp(err.message, "line 7: ", 8) == 0, "%s", err.message);
    CHECK(ds.rows == NULL && ds.n == 0);
    data_free(&ds);
}

static void test_sft(const Tokenizer *bytes) {
    BsError err;
    Dataset ds;
    Recipe r = make_recipe(DATA_SFT, "tests/data/sft_rows.jsonl");
    CHECK_INT_EQ(r.data, DATA_SFT);
    if (load(&ds, r.train_file, &r, bytes, TOK_BYTES_VOCAB, 1024, &err) == 0) {
        CHECK_INT_EQ(ds.n_lines, 8);
        CHECK_INT_EQ(ds.n, 5);
        CHECK_INT_EQ(ds.n_dropped, 1);
        CHECK_INT_EQ(ds.n_bad, 2);
        CHECK_INT_EQ(ds.first_bad_line, 7);
        if (ds.n == 5) {
            const Example *e = ds.rows;
            CHECK_TEXT(e[0].prompt, e[0].n_prompt, 1, "2+2=", 0);
            CHECK_TEXT(e[0].chosen, e[0].n_chosen, 0, "4", 1);
            CHECK(e[0].rejected == NULL && e[0].n_rejected == 0);
            CHECK_IDS(e[1].prompt, e[1].n_prompt, BOS);
            CHECK_TEXT(e[1].chosen, e[1].n_chosen, 0, "hello", 1);
            for (int i = 2; i < 4; i++) {
                CHECK_TEXT(e[i].prompt, e[i].n_prompt, 1, "\n\nHuman: hi\n\nAssistant:", 0);
                CHECK_TEXT(e[i].chosen, e[i].n_chosen, 0, " Sure", 1);
            }
            CHECK_IDS(e[4].prompt, e[4].n_prompt, 1, 2, 3, 4, 5, 6, 7, 8);
            CHECK_IDS(e[4].chosen, e[4].n_chosen, 9, 10, 11, 12, 13, 14);
        }
        data_free(&ds);
    } else {
        CHECK(0);
    }
    // SFT truncation follows the same rule (rejected empty).
    r.max_prompt_length = 4;
    if (load(&ds, r.train_file, &r, bytes, TOK_BYTES_VOCAB, 10, &err) == 0) {
        if (ds.n == 5) {
            const Example *e = ds.rows;
            CHECK_INT_EQ(ds.n_truncated, 3);
            CHECK_TEXT(e[2].prompt, e[2].n_prompt, 0, "ant:", 0); // keep_end of the prompt
            CHECK_TEXT(e[2].chosen, e[2].n_chosen, 0, " Sure", 1);
            CHECK_IDS(e[4].prompt, e[4].n_prompt, 5, 6, 7, 8);
            CHECK_IDS(e[4].chosen, e[4].n_chosen, 9, 10, 11, 12, 13, 14);
        } else {
            CHECK(0);
        }
        data_free(&ds);
    } else {
        CHECK(0);
    }
}

static void test_bad_rows(const Tokenizer *bytes) {
    BsError err;
    Dataset ds;
    Recipe r = make_recipe(DATA_PREFERENCE, "train.jsonl");
    r.eval_file = "tests/data/bad_rows.jsonl";
    if (load(&ds, r.eval_file, &r, bytes, TOK_BYTES_VOCAB, 1024, &err) == 0) {
        CHECK_INT_EQ(ds.n_lines, 12);
        CHECK_INT_EQ(ds.n, 3);
        CHECK_INT_EQ(ds.n_bad, 9);
        CHECK_INT_EQ(ds.first_bad_line, 3);
        CHECK_MSG(strstr(ds.first_bad_reason, "invalid JSON") != NULL, "%s", ds.first_bad_reason);
        if (ds.n == 3) {
            CHECK_INT_EQ(ds.rows[0].line, 1);
            CHECK_INT_EQ(ds.rows[1].line, 10);
            CHECK_INT_EQ(ds.rows[2].line, 14);
            CHECK_TEXT(ds.rows[1].prompt, ds.rows[1].n_prompt, 1, "a", 0);
            CHECK_TEXT(ds.rows[1].chosen, ds.rows[1].n_chosen, 0, "b", 1);
        }
        data_free(&ds);
    } else {
        CHECK(0);
    }
    r.bad_rows = BAD_ROWS_ERROR;
    CHECK(data_load(&ds, r.eval_file, &r, bytes, TOK_BYTES_VOCAB, 1024, &err) == -1);
    CHECK(strcmp(err.code, "dataset_schema") == 0);
    CHECK_MSG(strcmp(err.param, "eval_file") == 0, "param %s", err.param);
    CHECK_MSG(strncmp(err.message, "line 3: invalid JSON", 20) == 0, "%s", err.message);
    data_free(&ds);

    // Each bad line alone, with the reason it must give.
    struct {
        const char *row, *reason;
    } cases[] = {
        {"[1, 2]", "JSON object"},
        {"{\"prompt\": \"a\", \"chosen\": \"b\"}", "needs"},
        {"{\"prompt\": \"a\", \"chosen\": 5, \"rejected\": \"c\"}", "both be strings"},
        {"{\"prompt\": 7, \"chosen\": \"b\", \"rejected\": \"c\"}", "prompt must be a string"},
        {"{\"prompt\": \"a\", \"chosen\": \"\", \"rejected\": \"c\"}", "chosen is empty"},
        {"{\"chosen\": [{\"role\": \"robot\", \"content\": \"x\"}], \"rejected\": []}", "robot"},
        {"{\"chosen\": [{\"role\": \"user\"}], \"rejected\": [{\"role\": \"user\"}]}", "content"},
        {"{\"prompt_ids\": [1], \"chosen_ids\": [2]}", "rejected_ids"},
        {"{\"prompt_ids\": [1], \"chosen_ids\": [2], \"rejected_ids\": [300]}", "rejected_ids[0]"},
        {"{\"prompt_ids\": \"1\", \"chosen_ids\": [2], \"rejected_ids\": [3]}", "prompt_ids must"},
        {"{\"prompt\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", "
         "\"content\": \"a\"}], \"chosen\": [{\"role\": \"assistant\", \"content\": \"b\"}], "
         "\"rejected\": [{\"role\": \"assistant\", \"content\": \"c\"}]}",
         "ends with an assistant"},
        {"{\"prompt\": [{\"role\": \"user\", \"content\": \"q\"}], \"chosen\": [{\"role\": "
         "\"user\", "
         "\"content\": \"b\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"c\"}]}",
         "continue with an assistant"},
        {"{\"chosen\": \"x\", \"rejected\": \"y\"} {}", "invalid JSON"},
    };
    char path[512];
    snprintf(path, sizeof path, "%s/one.jsonl", tmpdir);
    r.bad_rows = BAD_ROWS_SKIP;
    r.train_file = path;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f = fopen(path, "w");
        CHECK(f != NULL);
        if (!f) return;
        fprintf(f, "\n{\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"}\n%s\n",
                cases[i].row);
        fclose(f);
        if (load(&ds, path, &r, bytes, 259, 1024, &err) == 0) {
            CHECK_MSG(ds.n == 1 && ds.n_bad == 1 && ds.first_bad_line == 3,
                      "case %zu: n=%d bad=%d line=%d", i, ds.n, ds.n_bad, ds.first_bad_line);
            CHECK_MSG(strstr(ds.first_bad_reason, cases[i].reason) != NULL,
                      "case %zu: reason '%s' lacks '%s'", i, ds.first_bad_reason, cases[i].reason);
            data_free(&ds);
        } else {
            CHECK(0);
        }
    }

    // Missing file, directory.
    CHECK(data_load(&ds, "tests/data/no-such-file.jsonl", &r, bytes, 259, 1024, &err) == -1);
    CHECK(strcmp(err.code, "dataset_not_found") == 0);
    CHECK(data_load(&ds, "tests/data", &r, bytes, 259, 1024, &err) == -1);
    CHECK(strcmp(err.code, "dataset_not_found") == 0);
    // An empty file loads with zero rows: the caller decides (dataset_empty).
    FILE *f = fopen(path, "w");
    if (f) fclose(f);
    if (load(&ds, path, &r, bytes, 259, 1024, &err) == 0) {
        CHECK(ds.n == 0 && ds.n_lines == 0 && ds.n_bad == 0);
        data_free(&ds);
    } else {
        CHECK(0);
    }
}

// gzip and plain give the same rows; CRLF, a BOM and a missing final newline are fine.
static void test_gzip_and_line_endings(const Tokenizer *bytes) {
    BsError err;
    Dataset a, b;
    char path[512];
    const char *text =
        "\xEF\xBB\xBF{\"prompt\": \"a\", \"chosen\": \" b\", \"rejected\": \" c\"}\r\n"
        "\r\n"
        "{\"chosen\": \"xy\", \"rejected\": \"xz\"}";
    snprintf(path, sizeof path, "%s/rows.jsonl.gz", tmpdir);
    gzFile gz = gzopen(path, "wb");
    CHECK(gz != NULL);
    if (!gz) return;
    CHECK(gzwrite(gz, text, (unsigned)strlen(text)) == (int)strlen(text));
    gzclose(gz);
    Recipe r = make_recipe(DATA_PREFERENCE, path);
    if (load(&a, path, &r, bytes, 259, 1024, &err) != 0) {
        CHECK(0);
        return;
    }
    CHECK_INT_EQ(a.n, 2);
    CHECK_INT_EQ(a.n_lines, 2);
    CHECK_INT_EQ(a.n_bad, 0);
    if (a.n == 2) {
        CHECK_TEXT(a.rows[0].prompt, a.rows[0].n_prompt, 1, "a", 0);
        CHECK_TEXT(a.rows[0].rejected, a.rows[0].n_rejected, 0, " c", 1);
        CHECK_TEXT(a.rows[1].prompt, a.rows[1].n_prompt, 1, "x", 0);
        CHECK_INT_EQ(a.rows[1].line, 3);
    }
    snprintf(path, sizeof path, "%s/rows.jsonl", tmpdir);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(text, 1, strlen(text), f);
        fclose(f);
    }
    r.train_file = path;
    if (load(&b, path, &r, bytes, 259, 1024, &err) == 0) {
        CHECK_INT_EQ(b.n, a.n);
        for (int i = 0; i < a.n && i < b.n; i++) {
            CHECK(
                ids_eq(a.rows[i].prompt, a.rows[i].n_prompt, b.rows[i].prompt, b.rows[i].n_prompt));
            CHECK(
                ids_eq(a.rows[i].chosen, a.rows[i].n_chosen, b.rows[i].chosen, b.rows[i].n_chosen));
        }
        data_free(&b);
    } else {
        CHECK(0);
    }
    data_free(&a);

    // A corrupt gzip stream is a dataset_schema error, not a crash or silent EOF.
    snprintf(path, sizeof path, "%s/corrupt.jsonl.gz", tmpdir);
    gz = gzopen(path, "wb");
    if (gz) {
        for (int i = 0; i < 2000; i++)
            gzprintf(gz, "{\"prompt\": \"row %d\", \"chosen\": \" y\", \"rejected\": \" n\"}\n", i);
        gzclose(gz);
    }
    f = fopen(path, "r+b");
    if (f) { // truncate the compressed stream halfway
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fclose(f);
        CHECK(truncate(path, size / 2) == 0);
    }
    r.train_file = path;
    CHECK(data_load(&a, path, &r, bytes, 259, 1024, &err) == -1);
    CHECK_MSG(strcmp(err.code, "dataset_schema") == 0, "%s: %s", err.code, err.message);
}

// A line over 64 MiB is a bad row (its bytes are not kept), then loading goes on.
static void test_huge_line(const Tokenizer *bytes) {
    BsError err;
    Dataset ds;
    char path[512];
    snprintf(path, sizeof path, "%s/huge.jsonl.gz", tmpdir);
    gzFile gz = gzopen(path, "wb1");
    CHECK(gz != NULL);
    if (!gz) return;
    size_t mib = (size_t)1 << 20;
    char *block = malloc(mib);
    if (!block) {
        gzclose(gz);
        CHECK(0);
        return;
    }
    memset(block, 'x', mib);
    gzputs(gz, "{\"text\": \"");
    for (int i = 0; i < 65; i++)
        gzwrite(gz, block, (unsigned)mib);
    gzputs(gz, "\"}\n{\"text\": \"ok\"}\n");
    gzclose(gz);
    free(block);
    Recipe r = make_recipe(DATA_SFT, path);
    if (load(&ds, path, &r, bytes, 259, 1024, &err) == 0) {
        CHECK_INT_EQ(ds.n, 1);
        CHECK_INT_EQ(ds.n_bad, 1);
        CHECK_INT_EQ(ds.first_bad_line, 1);
        CHECK(strstr(ds.first_bad_reason, "64 MiB") != NULL);
        if (ds.n == 1) CHECK_INT_EQ(ds.rows[0].line, 2);
        data_free(&ds);
    } else {
        CHECK(0);
    }
    r.bad_rows = BAD_ROWS_ERROR;
    CHECK(data_load(&ds, path, &r, bytes, 259, 1024, &err) == -1);
    CHECK(strcmp(err.code, "dataset_schema") == 0 && strncmp(err.message, "line 1:", 7) == 0);
    unlink(path);
}

// The Llama 2 tokenizer: the prompt/completion boundary rule when the prompt's
// last token merges with the completion ("Hello world" is 1, 15043, 3186).
static void test_llama2_boundary(const Tokenizer *llama) {
    BsError err;
    Dataset ds;
    char path[512];
    snprintf(path, sizeof path, "%s/merge.jsonl", tmpdir);
    FILE *f = fopen(path, "w");
    if (!f) {
        CHECK(0);
        return;
    }
    fprintf(f, "{\"prompt\": \"Hello wor\", \"chosen\": \"ld\", \"rejected\": \" there\"}\n");
    fprintf(f, "{\"prompt\": \"Hello\", \"chosen\": \" world\", \"rejected\": \" world\"}\n");
    fclose(f);
    int *pw = NULL, *pt = NULL, np = 0, nt = 0;
    CHECK(tok_encode(llama, "Hello wor", 1, 0, &pw, &np, &err) == 0);
    CHECK(tok_encode(llama, "Hello wor there", 1, 0, &pt, &nt, &err) == 0);
    Recipe r = make_recipe(DATA_PREFERENCE, path);
    if (load(&ds, path, &r, llama, 32000, 1024, &err) == 0 && ds.n == 2) {
        const Example *e = ds.rows;
        // "Hello wor" + "ld" encodes as "Hello world": the prompt's last token
        // merged, so the chosen boundary moves back one; the common prompt is
        // BOS "▁Hello" and the rejected completion starts with the prompt's "▁wor".
        CHECK(np == 3 && pw[0] == 1 && pw[1] == 15043 && pw[2] != 3186);
        CHECK_IDS(e[0].prompt, e[0].n_prompt, 1, 15043);
        CHECK_IDS(e[0].chosen, e[0].n_chosen, 3186, 2);
        CHECK_INT_EQ(e[0].n_rejected, nt - 2 + 1); // encode("Hello wor there")[2:] + EOS
        if (e[0].n_rejected == nt - 1 && nt > 2) {
            CHECK(ids_eq(e[0].rejected, nt - 2, pt + 2, nt - 2));
            CHECK_INT_EQ(e[0].rejected[nt - 2], 2);
        }
        // No merge: prompt = encode(prompt) exactly.
        CHECK_IDS(e[1].prompt, e[1].n_prompt, 1, 15043);
        CHECK_IDS(e[1].chosen, e[1].n_chosen, 3186, 2);
        data_free(&ds);
    } else {
        CHECK(0);
    }
    free(pw);
    free(pt);
}

// Reads line `want` (1-based) of a gzip JSONL file, parsed.
static cJSON *read_gz_row(const char *path, int want) {
    gzFile gz = gzopen(path, "rb");
    if (!gz) return NULL;
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    int line = 1, c;
    cJSON *row = NULL;
    while (buf && (c = gzgetc(gz)) != -1) {
        if (c == '\n') {
            if (line == want) break;
            line++;
            n = 0;
            continue;
        }
        if (line == want && n + 1 < cap) buf[n++] = (char)c;
    }
    if (buf) row = cJSON_ParseWithLength(buf, n);
    free(buf);
    gzclose(gz);
    return row;
}

static void test_hh_rlhf(const Tokenizer *llama) {
    const char *path = "../shared/data/hh-rlhf-harmless-base-test.jsonl.gz";
    BsError err;
    Dataset ds;
    Recipe r = make_recipe(DATA_PREFERENCE, path);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = load(&ds, path, &r, llama, 32000, 512, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(rc == 0);
    if (rc) return;
    printf("hh-rlhf harmless-base test: %d lines, %d rows, %d bad, %d truncated, %d dropped "
           "(%.2f s)\n",
           ds.n_lines, ds.n, ds.n_bad, ds.n_truncated, ds.n_dropped,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    CHECK_INT_EQ(ds.n_lines, 2312);
    CHECK_INT_EQ(ds.n_bad, 0);
    CHECK_INT_EQ(ds.n + ds.n_dropped, 2312);
    CHECK_INT_EQ(ds.n_dropped, 0);
    CHECK(ds.n_truncated > 0);
    long long total_tokens = 0;
    for (int i = 0; i < ds.n; i++) {
        const Example *e = &ds.rows[i];
        int longer = e->n_chosen > e->n_rejected ? e->n_chosen : e->n_rejected;
        CHECK(e->n_prompt + longer <= 512);
        CHECK(e->n_chosen > 0 && e->n_rejected > 0);
        total_tokens += e->n_prompt + e->n_chosen + e->n_rejected;
    }
    printf("hh-rlhf: %lld tokens in %d rows\n", total_tokens, ds.n);
    // Independent checks on the first 40 untruncated rows, from the raw text:
    // BOS first, EOS last; prompt + chosen is exactly the encoding of the whole
    // chosen text (+ EOS), likewise for rejected; the prompt decodes to TRL's
    // implicit prompt (the character-level common prefix, which often runs into
    // the shared first words of the replies), less at most the one token the
    // boundary rule moves into the completions.
    int checked = 0, at_assistant = 0;
    for (int i = 0; i < ds.n && checked < 40; i++) {
        const Example *e = &ds.rows[i];
        int longer = e->n_chosen > e->n_rejected ? e->n_chosen : e->n_rejected;
        if (e->n_prompt + longer >= 450) continue;
        checked++;
        cJSON *row = read_gz_row(path, e->line);
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(row, "chosen");
        const cJSON *rj = cJSON_GetObjectItemCaseSensitive(row, "rejected");
        if (!cJSON_IsString(c) || !cJSON_IsString(rj)) {
            CHECK(0);
            cJSON_Delete(row);
            continue;
        }
        CHECK(e->prompt[0] == 1);
        CHECK(e->chosen[e->n_chosen - 1] == 2 && e->rejected[e->n_rejected - 1] == 2);
        const char *texts[2] = {c->valuestring, rj->valuestring};
        const int *comp[2] = {e->chosen, e->rejected};
        const int ncomp[2] = {e->n_chosen, e->n_rejected};
        for (int k = 0; k < 2; k++) {
            int *ids = NULL, n = 0;
            if (tok_encode(llama, texts[k], 1, 1, &ids, &n, &err) != 0) {
                CHECK(0);
                continue;
            }
            CHECK_INT_EQ(n, e->n_prompt + ncomp[k]);
            if (n == e->n_prompt + ncomp[k])
                CHECK(ids_eq(ids, e->n_prompt, e->prompt, e->n_prompt) &&
                      ids_eq(ids + e->n_prompt, ncomp[k], comp[k], ncomp[k]));
            free(ids);
        }
        size_t split =
            data_implicit_prompt_len(texts[0], strlen(texts[0]), texts[1], strlen(texts[1]));
        char *p = tok_decode(llama, e->prompt, e->n_prompt, &err);
        CHECK(p != NULL);
        if (p) {
            size_t n = strlen(p);
            CHECK_MSG(n <= split && split - n <= 16 && memcmp(p, texts[0], n) == 0,
                      "line %d: prompt of %zu bytes vs split %zu", e->line, n, split);
            if (n >= 12 && strcmp(p + n - 12, "\n\nAssistant:") == 0) at_assistant++;
        }
        free(p);
        cJSON_Delete(row);
    }
    CHECK_INT_EQ(checked, 40);
    CHECK(at_assistant > 0);
    printf("hh-rlhf: %d of %d checked prompts end exactly at \"\\n\\nAssistant:\"\n", at_assistant,
           checked);
    data_free(&ds);
}

// A byte-level tokenizer.json (ids 0..255 are the bytes, GPT-2's alphabet, no
// merges) with added tokens <s> 256, </s> 257, <|im_start|> 258, <|im_end|>
// 259, in tmpdir/name; config is tokenizer_config.json's text.
static const char *write_bytelevel(const char *name, const char *config) {
    static char dir[512];
    char path[600];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
    if (mkdir(dir, 0755) != 0) return NULL;
    cJSON *root = cJSON_CreateObject();
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    static const char *const specials[] = {"<s>", "</s>", "<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 4; i++) {
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", 256 + i);
        cJSON_AddStringToObject(a, "content", specials[i]);
        cJSON_AddBoolToObject(a, "special", 1);
        cJSON_AddBoolToObject(a, "normalized", 0);
        cJSON_AddItemToArray(added, a);
    }
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "ByteLevel");
    cJSON_AddBoolToObject(pre, "add_prefix_space", 0);
    cJSON_AddBoolToObject(pre, "use_regex", 1);
    cJSON *dec = cJSON_AddObjectToObject(root, "decoder");
    cJSON_AddStringToObject(dec, "type", "ByteLevel");
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int b = 0, n = 0; b < 256; b++) { // GPT-2 bytes_to_unicode
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        unsigned c = keep ? (unsigned)b : 256u + (unsigned)n++;
        char u[4] = {0};
        if (c < 0x80) {
            u[0] = (char)c;
        } else {
            u[0] = (char)(0xC0 | (c >> 6));
            u[1] = (char)(0x80 | (c & 0x3F));
        }
        cJSON_AddNumberToObject(vocab, u, b);
    }
    cJSON_AddArrayToObject(model, "merges");
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    int ok = f && text && fputs(text, f) >= 0;
    if (f) ok = fclose(f) == 0 && ok;
    free(text);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    f = fopen(path, "w");
    ok = ok && f && fputs(config, f) >= 0;
    if (f) ok = fclose(f) == 0 && ok;
    return ok ? dir : NULL;
}

// ids[from..] == the bytes of s; returns from + strlen(s), or -1.
static int bytes_at(const int *ids, int n, int from, const char *s) {
    for (const char *p = s; *p; p++, from++)
        if (from >= n || ids[from] != (unsigned char)*p) return -1;
    return from;
}

static void test_chat_templates(void) {
    enum { S = 256, E = 257, IS = 258, IE = 259 };
    const char *with_bos = write_bytelevel(
        "bl-bos", "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"chat_template\": "
                  "\"{{ bos_token }}[INST] <<SYS>> ... [/INST]\"}");
    char bos_dir[512];
    snprintf(bos_dir, sizeof bos_dir, "%s", with_bos ? with_bos : "");
    const char *no_bos = write_bytelevel(
        "bl-nobos", "{\"bos_token\": null, \"eos_token\": \"<|im_end|>\", \"chat_template\": "
                    "\"{% for m in messages %}<|im_start|>{{ m.role }}...{% endfor %}\"}");
    CHECK(with_bos && no_bos);
    if (!with_bos || !no_bos) return;
    BsError err;
    Tokenizer *tb = NULL, *tn = NULL;
    CHECK(tok_load(&tb, bos_dir, 260, &err) == 0);
    CHECK(tok_load(&tn, no_bos, 260, &err) == 0);
    if (!tb || !tn) {
        tok_free(tb);
        tok_free(tn);
        return;
    }
    CHECK_INT_EQ(tok_bos(tb), S);
    CHECK_INT_EQ(tok_eos(tb), E);
    CHECK_INT_EQ(tok_bos(tn), -1);
    CHECK_INT_EQ(tok_eos(tn), IE);

    // auto: chat_detect on the tokenizer folder; an explicit value wins.
    Recipe r = make_recipe(DATA_PREFERENCE, NULL);
    char warning[512];
    CHECK_INT_EQ(data_chat_template(&r, bos_dir, warning, sizeof warning), CHAT_LLAMA2);
    CHECK(warning[0] == '\0');
    CHECK_INT_EQ(data_chat_template(&r, no_bos, warning, sizeof warning), CHAT_CHATML);
    CHECK_INT_EQ(data_chat_template(&r, NULL, warning, sizeof warning), CHAT_PLAIN);
    CHECK(warning[0] == '\0');
    CHECK_INT_EQ(
        data_chat_template(&r, "../shared/models/aidreams260K-tok512.bin", warning, sizeof warning),
        CHAT_PLAIN);
    r.chat_template = CHAT_ZEPHYR;
    CHECK_INT_EQ(data_chat_template(&r, no_bos, warning, sizeof warning), CHAT_ZEPHYR);
    r.chat_template = CHAT_AUTO;

    char path[512];
    snprintf(path, sizeof path, "%s/chat.jsonl", tmpdir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs("{\"prompt\": [{\"role\": \"user\", \"content\": \"hi\"}], \"chosen\": [{\"role\": "
          "\"assistant\", \"content\": \"A\"}], \"rejected\": [{\"role\": \"assistant\", "
          "\"content\": \"B\"}]}\n"
          "{\"prompt\": \"q\", \"chosen\": \" x\", \"rejected\": \" y\"}\n",
          f);
    fclose(f);
    r.train_file = path;

    // llama2: "<s>[INST] hi [/INST]" + " A </s>": the text's <s> is the only
    // BOS and its </s> the only EOS; the string row gets BOS and EOS added.
    Dataset ds;
    DataOptions opt = {.chat_template = CHAT_LLAMA2};
    bs_error_clear(&err);
    if (data_load_ex(&ds, path, &r, tb, 260, 1024, &opt, &err) == 0) {
        CHECK_INT_EQ(ds.n, 2);
        CHECK_INT_EQ(ds.n_chat, 1);
        if (ds.n == 2) {
            const Example *e = &ds.rows[0];
            CHECK(e->n_prompt > 1 && e->prompt[0] == S &&
                  bytes_at(e->prompt, e->n_prompt, 1, "[INST] hi [/INST]") == e->n_prompt);
            CHECK(e->n_chosen == 4 && bytes_at(e->chosen, e->n_chosen, 0, " A ") == 3 &&
                  e->chosen[3] == E);
            CHECK(e->n_rejected == 4 && bytes_at(e->rejected, e->n_rejected, 0, " B ") == 3 &&
                  e->rejected[3] == E);
            e = &ds.rows[1];
            CHECK(e->n_prompt == 2 && e->prompt[0] == S && e->prompt[1] == 'q');
            CHECK(e->n_chosen == 3 && e->chosen[0] == ' ' && e->chosen[1] == 'x' &&
                  e->chosen[2] == E);
        }
        data_free(&ds);
    } else {
        fprintf(stderr, "  llama2: %s\n", err.message);
        CHECK(0);
    }

    // chatml with a tokenizer without BOS: no BOS anywhere, EOS <|im_end|> appended
    // after the template's trailing "\n".
    opt.chat_template = CHAT_CHATML;
    bs_error_clear(&err);
    if (data_load_ex(&ds, path, &r, tn, 260, 1024, &opt, &err) == 0) {
        CHECK_INT_EQ(ds.n, 2);
        CHECK_INT_EQ(ds.n_chat, 1);
        if (ds.n == 2) {
            const Example *e = &ds.rows[0];
            int k = e->n_prompt > 0 && e->prompt[0] == IS ? 1 : -1;
            if (k > 0) k = bytes_at(e->prompt, e->n_prompt, k, "user\nhi");
            if (k > 0 && k < e->n_prompt && e->prompt[k] == IE)
                k = bytes_at(e->prompt, e->n_prompt, k + 1, "\n");
            else
                k = -1;
            if (k > 0 && k < e->n_prompt && e->prompt[k] == IS)
                k = bytes_at(e->prompt, e->n_prompt, k + 1, "assistant\n");
            else
                k = -1;
            CHECK_MSG(k == e->n_prompt, "chatml prompt ids");
            if (k != e->n_prompt) print_ids("prompt", e->prompt, e->n_prompt);
            CHECK_IDS(e->chosen, e->n_chosen, 'A', IE, '\n', IE);
            CHECK_IDS(e->rejected, e->n_rejected, 'B', IE, '\n', IE);
            e = &ds.rows[1];
            CHECK_IDS(e->prompt, e->n_prompt, 'q');
            CHECK_IDS(e->chosen, e->n_chosen, ' ', 'x', IE);
        }
        data_free(&ds);
    } else {
        fprintf(stderr, "  chatml: %s\n", err.message);
        CHECK(0);
    }

    // data_load (no options) renders the recipe's template; auto there is plain.
    bs_error_clear(&err);
    if (data_load(&ds, path, &r, tb, 260, 1024, &err) == 0) {
        if (ds.n == 2) {
            const Example *e = &ds.rows[0];
            CHECK(e->n_prompt > 0 && e->prompt[0] == S &&
                  bytes_at(e->prompt, e->n_prompt, 1, "\n\nHuman: hi\n\nAssistant:") ==
                      e->n_prompt);
            CHECK_IDS(e->chosen, e->n_chosen, ' ', 'A', E);
        } else {
            CHECK(0);
        }
        data_free(&ds);
    } else {
        CHECK(0);
    }
    // llama2 refuses roles that do not alternate: the row is bad, with the reason.
    f = fopen(path, "w");
    if (f) {
        fputs("{\"chosen\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"user\", "
              "\"content\": \"b\"}, {\"role\": \"assistant\", \"content\": \"c\"}], "
              "\"rejected\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": "
              "\"user\", \"content\": \"b\"}, {\"role\": \"assistant\", \"content\": "
              "\"d\"}]}\n",
              f);
        fclose(f);
    }
    opt.chat_template = CHAT_LLAMA2;
    if (data_load_ex(&ds, path, &r, tb, 260, 1024, &opt, &err) == 0) {
        CHECK(ds.n == 0 && ds.n_bad == 1 && strstr(ds.first_bad_reason, "llama2") != NULL);
        data_free(&ds);
    } else {
        CHECK(0);
    }
    tok_free(tb);
    tok_free(tn);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/brewslm-test-data-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    Tokenizer *bytes = NULL, *llama = NULL;
    BsError err;
    if (tok_create_bytes(&bytes, &err) != 0) {
        fprintf(stderr, "tok_create_bytes: %s\n", err.message);
        return 1;
    }
    test_implicit_prompt_split();
    test_preference_text(bytes);
    test_pretokenized_truncation();
    test_sft(bytes);
    test_bad_rows(bytes);
    test_gzip_and_line_endings(bytes);
    test_huge_line(bytes);
    test_chat_templates();
    if (tok_load_llama2c(&llama, "../shared/models/llama2-tokenizer.bin", 32000, &err) == 0) {
        test_llama2_boundary(llama);
        test_hh_rlhf(llama);
        tok_free(llama);
    } else {
        fprintf(stderr, "llama2 tokenizer: %s\n", err.message);
        CHECK(0);
    }
    tok_free(bytes);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_summary("data");
}
