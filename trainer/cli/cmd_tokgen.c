// cmd_tokgen.c — the `tokenize` and `generate` subcommands: text to ids with a
// llama2.c, Hugging Face or byte tokenizer, and sampling from a llama2.c
// checkpoint or a Hugging Face model folder (with its own tokenizer when it
// has one) printed the way run.c prints it (or as JSON ids).
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "cmds.h"
#include "generate.h"
#include "hf.h"
#include "tok.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

static const char TOKENIZE_USAGE[] =
    "usage: brewslm tokenize --tokenizer PATH|bytes [--vocab-size V] [--no-bos] [--eos]\n"
    "                        [--] TEXT\n"
    "\n"
    "Encodes TEXT and prints its token ids as a JSON array, BOS first (when the\n"
    "tokenizer has one and the text does not already start with it).\n"
    "\n"
    "  --tokenizer PATH   a llama2.c tokenizer.bin, a Hugging Face tokenizer folder (or its\n"
    "                     tokenizer.json, or a model folder holding one), or `bytes`\n"
    "  --vocab-size V     the model's vocabulary: a tokenizer.bin must hold exactly V\n"
    "                     entries, a Hugging Face one at most V (default: its own size)\n"
    "  --no-bos           do not prepend BOS\n"
    "  --eos              append EOS\n";

static const char GENERATE_USAGE[] =
    "usage: brewslm generate --model PATH [--tokenizer PATH|bytes]\n"
    "                        [--prompt TEXT | --prompt-ids 1,2,3] [--max-new-tokens N]\n"
    "                        [--temperature X] [--top-p P] [--seed S] [--ids]\n"
    "\n"
    "Samples a continuation from a model as llama2.c's run.c does and\n"
    "prints the prompt and the generated text. Generation stops at BOS (and at EOS for\n"
    "Hugging Face and byte tokenizers) or when the model's seq_len is reached.\n"
    "\n"
    "  --model PATH         llama2.c checkpoint (.bin) or Hugging Face model folder\n"
    "                       (config.json + safetensors, Llama/Mistral)\n"
    "  --tokenizer PATH     llama2.c tokenizer.bin matching the model's vocab, a Hugging\n"
    "                       Face tokenizer folder or tokenizer.json, or `bytes`; default:\n"
    "                       the model folder's own tokenizer.json when it has one\n"
    "  --prompt TEXT        prompt text, encoded with BOS (needs --tokenizer; default \"\")\n"
    "  --prompt-ids LIST    comma-separated prompt ids, used as given (default: BOS)\n"
    "  --max-new-tokens N   at most N generated ids (default 256)\n"
    "  --temperature X      0 = greedy (default 1.0)\n"
    "  --top-p P            nucleus mass; 0 or 1 = plain sampling (default 0.9)\n"
    "  --seed S             random seed for sampling (default 42)\n"
    "  --ids                print {\"prompt_ids\":[...],\"ids\":[...]} instead of text\n"
    "                       (always, when there is no --tokenizer)\n";

// Matches argv[*i] against --name or --name=value; stores the value (the next
// argument for the first form) and advances *i. Returns 1 on a match, 0 when
// argv[*i] is another option, -1 when the value is missing.
static int take_value(int argc, char **argv, int *i, const char *name, const char **value) {
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n) != 0) return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0') return 0;
    if (*i + 1 >= argc) return -1;
    *value = argv[++*i];
    return 1;
}

static int parse_int(const char *s, long lo, long hi, long *out) {
    errno = 0;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_float(const char *s, float *out) {
    errno = 0;
    char *end = NULL;
    float v = strtof(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

// Parses "1,2,3" into a malloc'd array (caller frees).
static int parse_id_list(const char *s, int **ids, int *n) {
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    int *out = malloc(cap * sizeof *out);
    if (!out) return -1;
    int k = 0;
    const char *p = s;
    for (;;) {
        while (*p == ' ')
            p++;
        errno = 0;
        char *end = NULL;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v > INT_MAX) goto fail;
        out[k++] = (int)v;
        p = end;
        while (*p == ' ')
            p++;
        if (*p == '\0') break;
        if (*p != ',') goto fail;
        p++;
    }
    *ids = out;
    *n = k;
    return 0;
fail:
    free(out);
    return -1;
}

static void print_id_array(const int *ids, int n) {
    putchar('[');
    for (int i = 0; i < n; i++)
        printf(i ? ",%d" : "%d", ids[i]);
    putchar(']');
}

static int is_bytes(const char *tokenizer) {
    return strcmp(tokenizer, "bytes") == 0;
}

// Loads the named tokenizer (tok_load: a folder or .json file is a Hugging
// Face tokenizer); vocab_size <= 0 takes the tokenizer's own size.
static int load_tokenizer(Tokenizer **tok, const char *path, int vocab_size, BsError *err) {
    if (is_bytes(path)) return tok_create_bytes(tok, err);
    return tok_load(tok, path, vocab_size, err);
}

// Encodes text: with add_bos, tok_encode_bos (BOS unless the text already
// starts with it, the rule the training data follows).
static int encode_text(const Tokenizer *tok, const char *text, int add_bos, int add_eos, int **ids,
                       int *n, BsError *err) {
    if (add_bos) return tok_encode_bos(tok, text, add_eos, ids, n, err);
    return tok_encode(tok, text, 0, add_eos, ids, n, err);
}

static int fail_runtime(const char *cmd, const BsError *err) {
    fprintf(stderr, "brewslm %s: %s (%s)\n", cmd, err->message, err->code);
    return EXIT_RUNTIME;
}

static int fail_usage(const char *cmd, const char *what, const char *arg) {
    fprintf(stderr, "brewslm %s: %s%s%s\nTry 'brewslm %s --help'.\n", cmd, what, arg ? " " : "",
            arg ? arg : "", cmd);
    return EXIT_USAGE;
}

int cmd_tokenize(int argc, char **argv) {
    const char *tokenizer = NULL, *text = NULL, *v = NULL;
    long vocab_size = 0;
    int add_bos = 1, add_eos = 0, only_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r;
        if (only_positional || a[0] != '-' || a[1] == '\0') {
            if (text) return fail_usage("tokenize", "unexpected argument", a);
            text = a;
        } else if (strcmp(a, "--") == 0) {
            only_positional = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(TOKENIZE_USAGE, stdout);
            return 0;
        } else if (strcmp(a, "--no-bos") == 0) {
            add_bos = 0;
        } else if (strcmp(a, "--eos") == 0) {
            add_eos = 1;
        } else if ((r = take_value(argc, argv, &i, "--tokenizer", &tokenizer)) != 0) {
            if (r < 0) return fail_usage("tokenize", "missing value for", a);
        } else if ((r = take_value(argc, argv, &i, "--vocab-size", &v)) != 0) {
            if (r < 0) return fail_usage("tokenize", "missing value for", a);
            if (parse_int(v, 1, INT_MAX, &vocab_size) != 0)
                return fail_usage("tokenize", "--vocab-size must be a positive integer, got", v);
        } else {
            return fail_usage("tokenize", "unknown option", a);
        }
    }
    if (!tokenizer) return fail_usage("tokenize", "--tokenizer is required", NULL);
    if (!text) return fail_usage("tokenize", "TEXT is required", NULL);
    if (is_bytes(tokenizer) && vocab_size != 0 && vocab_size != TOK_BYTES_VOCAB)
        return fail_usage("tokenize", "the byte tokenizer has 259 ids; --vocab-size does not match",
                          NULL);

    BsError err = {0};
    Tokenizer *tok = NULL;
    int *ids = NULL, n = 0;
    if (load_tokenizer(&tok, tokenizer, (int)vocab_size, &err) != 0 ||
        encode_text(tok, text, add_bos, add_eos, &ids, &n, &err) != 0) {
        tok_free(tok);
        return fail_runtime("tokenize", &err);
    }
    print_id_array(ids, n);
    putchar('\n');
    free(ids);
    tok_free(tok);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "brewslm tokenize: cannot write to stdout\n");
        return EXIT_RUNTIME;
    }
    return 0;
}

typedef struct {
    const Tokenizer *tok;
    int prev;
} Printer;

// Prints a piece as run.c's safe_printf does, except that bytes >= 0x80 pass:
// byte-fallback pieces of one UTF-8 character reassemble on the terminal.
static void print_piece(Printer *p, int id) {
    const char *piece = tok_piece(p->tok, p->prev, id);
    p->prev = id;
    if (!piece || piece[0] == '\0') return;
    unsigned char c = (unsigned char)piece[0];
    if (piece[1] == '\0' && (c < 0x20 || c == 0x7f) && c != '\n' && c != '\t' && c != '\r') return;
    fputs(piece, stdout);
    fflush(stdout);
}

static int on_token(void *user, int id) {
    print_piece(user, id);
    return 0;
}

int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *tokenizer = NULL, *prompt = NULL, *prompt_ids = NULL, *v = NULL;
    long max_new = 256, seed = 42;
    float temperature = 1.0f, top_p = 0.9f;
    int want_ids = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(GENERATE_USAGE, stdout);
            return 0;
        } else if (strcmp(a, "--ids") == 0) {
            want_ids = 1;
        } else if ((r = take_value(argc, argv, &i, "--model", &model)) != 0 ||
                   (r = take_value(argc, argv, &i, "--tokenizer", &tokenizer)) != 0 ||
                   (r = take_value(argc, argv, &i, "--prompt", &prompt)) != 0 ||
                   (r = take_value(argc, argv, &i, "--prompt-ids", &prompt_ids)) != 0) {
            if (r < 0) return fail_usage("generate", "missing value for", a);
        } else if ((r = take_value(argc, argv, &i, "--max-new-tokens", &v)) != 0) {
            if (r < 0) return fail_usage("generate", "missing value for", a);
            if (parse_int(v, 1, INT_MAX, &max_new) != 0)
                return fail_usage("generate", "--max-new-tokens must be a positive integer, got",
                                  v);
        } else if ((r = take_value(argc, argv, &i, "--temperature", &v)) != 0) {
            if (r < 0) return fail_usage("generate", "missing value for", a);
            if (parse_float(v, &temperature) != 0 || temperature < 0)
                return fail_usage("generate", "--temperature must be a number >= 0, got", v);
        } else if ((r = take_value(argc, argv, &i, "--top-p", &v)) != 0) {
            if (r < 0) return fail_usage("generate", "missing value for", a);
            if (parse_float(v, &top_p) != 0 || top_p < 0 || top_p > 1)
                return fail_usage("generate", "--top-p must be a number in [0, 1], got", v);
        } else if ((r = take_value(argc, argv, &i, "--seed", &v)) != 0) {
            if (r < 0) return fail_usage("generate", "missing value for", a);
            if (parse_int(v, 1, LONG_MAX, &seed) != 0)
                return fail_usage("generate", "--seed must be a positive integer, got", v);
        } else {
            return fail_usage("generate", "unknown argument", a);
        }
    }
    if (!model) return fail_usage("generate", "--model is required", NULL);
    // A Hugging Face model folder usually carries its tokenizer.
    if (!tokenizer && hf_is_model_dir(model) && tok_dir_has_hf(model)) tokenizer = model;
    if (prompt && prompt_ids)
        return fail_usage("generate", "--prompt and --prompt-ids are mutually exclusive", NULL);
    if (prompt && !tokenizer) return fail_usage("generate", "--prompt needs --tokenizer", NULL);
    if (!tokenizer) want_ids = 1;

    int rc = EXIT_RUNTIME;
    BsError err = {0};
    ModelConfig cfg;
    float *params = NULL;
    Tokenizer *tok = NULL;
    int *ids = NULL, n_ids = 0, *gen = NULL, n_gen = 0;
    if (ckpt_read_model(model, &cfg, &params, &err) != 0) goto fail;
    if (tokenizer) {
        if (is_bytes(tokenizer) && cfg.vocab_size != TOK_BYTES_VOCAB) {
            bs_fail(&err, "tokenizer_mismatch", "tokenizer",
                    "the byte tokenizer has %d ids but the model's vocab_size is %d",
                    TOK_BYTES_VOCAB, cfg.vocab_size);
            goto fail;
        }
        if (load_tokenizer(&tok, tokenizer, cfg.vocab_size, &err) != 0) goto fail;
    }
    if (prompt_ids) {
        if (parse_id_list(prompt_ids, &ids, &n_ids) != 0) {
            free(params);
            tok_free(tok);
            return fail_usage("generate", "--prompt-ids must be comma-separated ids, got",
                              prompt_ids);
        }
    } else if (tok) {
        if (encode_text(tok, prompt ? prompt : "", 1, 0, &ids, &n_ids, &err) != 0) goto fail;
        if (n_ids == 0) {
            bs_fail(&err, "invalid_token", "prompt",
                    "the prompt encodes to no ids and the tokenizer has no BOS: give a prompt");
            goto fail;
        }
    } else {
        ids = malloc(sizeof *ids);
        if (!ids) {
            bs_fail(&err, "out_of_memory", "", "cannot allocate the prompt");
            goto fail;
        }
        ids[0] = 1; // llama2.c's BOS
        n_ids = 1;
    }

    GenerateOptions opt = {
        .max_new_tokens = (int)max_new,
        .temperature = temperature,
        .top_p = top_p,
        .seed = (unsigned long long)seed,
        // run.c stops at BOS only; Hugging Face and byte tokenizers also at EOS
        // (the training data ends every completion with it).
        .eos_id = tok && (is_bytes(tokenizer) || tok_path_is_hf(tokenizer)) ? tok_eos(tok) : -1,
        .bos_id = tok ? tok_bos(tok) : 1, // -1: the tokenizer has no BOS, none stops
    };
    int bos = tok ? tok_bos(tok) : 1;
    int skip = n_ids > 0 && ids[0] == bos ? 1 : 0;
    Printer printer = {.tok = tok, .prev = skip ? ids[0] : -1};
    if (!want_ids) {
        // run.c prints the prompt after its first id (BOS), then each sample
        for (int i = skip; i < n_ids; i++) {
            if (ids[i] < 0 || ids[i] >= cfg.vocab_size) break; // generate() reports it
            print_piece(&printer, ids[i]);
        }
        opt.on_token = on_token;
        opt.user = &printer;
    }
    if (generate(&cfg, params, ids, n_ids, &opt, &gen, &n_gen, &err) != 0) {
        if (!want_ids) putchar('\n');
        goto fail;
    }
    if (want_ids) {
        fputs("{\"prompt_ids\":", stdout);
        print_id_array(ids, n_ids);
        fputs(",\"ids\":", stdout);
        print_id_array(gen, n_gen);
        fputs("}\n", stdout);
    } else {
        putchar('\n');
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        bs_fail(&err, "io", "stdout", "cannot write to stdout");
        goto fail;
    }
    rc = 0;
    goto done;
fail:
    fail_runtime("generate", &err);
done:
    free(gen);
    free(ids);
    tok_free(tok);
    free(params);
    return rc;
}
