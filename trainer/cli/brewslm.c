// brewslm.c — the command-line front end: `brewslm <train|preflight|generate|
// tokenize>`. train and preflight live here (they are thin shells over
// train_run and preflight_run); generate and tokenize are in cmd_tokgen.c.
// Messages go to stderr, results (preflight's JSON) to stdout.
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "blasenv.h"
#include "brewslm_config.h"
#include "ckpt.h"
#include "cmds.h"
#include "preflight.h"
#include "recipe.h"
#include "train.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_BLOCKED = 3 };

static const char *const k_usage =
    "usage: brewslm <command> [options]\n"
    "\n"
    "Tunes small Llama-architecture models (llama2.c files or Hugging Face folders) with SFT,\n"
    "DPO or ORPO on the CPU.\n"
    "\n"
    "commands:\n"
    "  train RECIPE       train (or resume) the run a recipe describes\n"
    "  preflight RECIPE   check a recipe without training; prints a JSON report\n"
    "  generate ...       sample text from a llama2.c model or Hugging Face folder\n"
    "  tokenize ...       show how a tokenizer encodes text\n"
    "\n"
    "options:\n"
    "  -h, --help         this text; `brewslm COMMAND --help` for a command\n"
    "  -V, --version      print the version\n";

static const char *const k_train_usage =
    "usage: brewslm train RECIPE [--threads N] [--output-dir DIR] [--no-preflight]\n"
    "\n"
    "Runs the recipe (JSON, or YAML: chosen by the .json/.yaml/.yml extension, else by\n"
    "content). Relative paths inside the recipe are relative to the current working\n"
    "directory, not to the recipe file.\n"
    "\n"
    "Outputs, under the output folder (the recipe's output_dir; default\n"
    "./runs/<recipe file name without extension>):\n"
    "  metrics.jsonl       one JSON object per logged row: {\"step\":N,\"loss\":...};\n"
    "                      eval rows carry eval_ names\n"
    "  checkpoints/        training state every save_steps (newest two kept)\n"
    "  final/model.bin     the tuned model in llama2.c format (output_format: llama2c,\n"
    "                      the default for a llama2.c or model_init start), or\n"
    "  final/              a Hugging Face folder: config.json, model.safetensors and the\n"
    "                      tokenizer's files (output_format: hf, the default for a\n"
    "                      Hugging Face model folder)\n"
    "Progress lines go to stderr. Running the same command again resumes from the\n"
    "newest checkpoint and continues exactly as an uninterrupted run.\n"
    "\n"
    "options:\n"
    "  --threads N        BLAS threads (overrides the recipe's threads)\n"
    "  --output-dir DIR   output folder (overrides the recipe's output_dir)\n"
    "  --no-preflight     skip the preflight checks before training\n"
    "  -h, --help         this text\n"
    "\n"
    "exit status: 0 finished; 1 training failed; 2 usage or recipe error; 3 preflight\n"
    "blocked the run; 130 (SIGINT) or 143 (SIGTERM): stopped by the signal after\n"
    "writing a checkpoint (rerun to resume). A second signal ends the process at once.\n";

static const char *const k_preflight_usage =
    "usage: brewslm preflight RECIPE [--data-root DIR]\n"
    "\n"
    "Checks files, data schema, model/tokenizer agreement, hyperparameters and memory,\n"
    "and prints {\"ok\",\"blockers\",\"warnings\",\"estimate\"} as JSON on stdout. Relative\n"
    "paths are relative to the current working directory.\n"
    "\n"
    "options:\n"
    "  --data-root DIR    refuse any path that resolves outside DIR\n"
    "  -h, --help         this text\n"
    "\n"
    "exit status: 0 no blockers; 3 blocked (the report says why); 1 internal error;\n"
    "2 usage error.\n";

static int is_help(const char *a) {
    return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0;
}

// ---------------------------------------------------------------------------
// recipe files

static char *read_file(const char *path, size_t *len, BsError *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        bs_fail(err, "io", "recipe", "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        if (cap > (64u << 20)) { // a recipe is a few hundred bytes
            free(buf);
            buf = NULL;
            fclose(f);
            bs_fail(err, "invalid_recipe", "recipe", "%s is larger than 64 MiB", path);
            return NULL;
        }
        cap *= 2;
        char *q = realloc(buf, cap + 1);
        if (!q) {
            free(buf);
            buf = NULL;
        } else {
            buf = q;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) {
        bs_fail(err, "out_of_memory", "recipe", "cannot read %s", path);
        return NULL;
    }
    if (bad) {
        free(buf);
        bs_fail(err, "io", "recipe", "cannot read %s", path);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

static int load_recipe(const char *path, Recipe *r, BsError *err) {
    size_t len = 0;
    char *text = read_file(path, &len, err);
    if (!text) return -1;
    RecipeFormat fmt = RECIPE_AUTO;
    if (ends_with(path, ".json"))
        fmt = RECIPE_JSON;
    else if (ends_with(path, ".yaml") || ends_with(path, ".yml"))
        fmt = RECIPE_YAML;
    int rc = recipe_parse(text, len, fmt, r, err);
    free(text);
    return rc;
}

// ./runs/<basename without extension>; malloc'd.
static char *default_output_dir(const char *recipe_path) {
    const char *base = strrchr(recipe_path, '/');
    base = base ? base + 1 : recipe_path;
    size_t n = strlen(base);
    const char *dot = strrchr(base, '.');
    if (dot && dot != base) n = (size_t)(dot - base);
    if (n == 0) {
        base = "recipe";
        n = strlen(base);
    }
    size_t cap = n + 8;
    char *out = malloc(cap);
    if (out) snprintf(out, cap, "runs/%.*s", (int)n, base);
    return out;
}

static void print_error(const char *what, const BsError *e) {
    fprintf(stderr, "brewslm: %s: %s%s%s [%s]\n", what, e->param, e->param[0] ? ": " : "",
            e->message, e->code);
}

// ---------------------------------------------------------------------------
// train

static volatile sig_atomic_t g_signal;

static void on_signal(int sig) {
    g_signal = sig;
}

typedef struct {
    char metrics_path[4096];
    FILE *metrics;
    int resumed;
    int failed;
} TrainCli;

static void hook_log(void *user, const char *line) {
    (void)user;
    fprintf(stderr, "%s\n", line);
}

static int hook_should_stop(void *user) {
    (void)user;
    return g_signal != 0;
}

// Shortest decimal that reads back as the same double; non-finite -> null.
static void put_number(FILE *f, double x) {
    if (x != x || x == 1.0 / 0.0 || x == -1.0 / 0.0) {
        fputs("null", f);
        return;
    }
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) break;
    }
    fputs(buf, f);
}

static void put_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static int hook_metrics(void *user, const MetricRow *row) {
    TrainCli *c = user;
    if (!c->metrics) {
        // A fresh run starts the file over; a resumed one appends to the rows
        // on_resume kept.
        c->metrics = fopen(c->metrics_path, c->resumed ? "a" : "w");
        if (!c->metrics) {
            fprintf(stderr, "brewslm: cannot write %s: %s\n", c->metrics_path, strerror(errno));
            c->failed = 1;
            return -1;
        }
    }
    FILE *f = c->metrics;
    fprintf(f, "{\"step\":%d", row->step);
    for (int i = 0; i < row->n; i++) {
        fputc(',', f);
        put_string(f, row->name[i]);
        fputc(':', f);
        put_number(f, row->value[i]);
    }
    fputs("}\n", f);
    if (fflush(f) != 0 || ferror(f)) {
        fprintf(stderr, "brewslm: cannot write %s: %s\n", c->metrics_path, strerror(errno));
        c->failed = 1;
        return -1;
    }
    return 0;
}

// Keeps the rows of metrics.jsonl up to the resumed step: the trainer logs the
// later ones again, identically.
static void hook_resume(void *user, int resumed_step) {
    TrainCli *c = user;
    c->resumed = 1;
    BsError err = {0};
    size_t len = 0;
    char *text = read_file(c->metrics_path, &len, &err);
    if (!text) return; // no metrics yet: nothing to trim
    char *out = malloc(len + 1);
    size_t n = 0;
    if (!out) {
        free(text);
        return;
    }
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        size_t l = nl ? (size_t)(nl - line) : strlen(line);
        char saved = line[l];
        line[l] = '\0';
        cJSON *o = cJSON_Parse(line);
        const cJSON *step = o ? cJSON_GetObjectItemCaseSensitive(o, "step") : NULL;
        if (cJSON_IsNumber(step) && step->valuedouble <= resumed_step) {
            memcpy(out + n, line, l);
            n += l;
            out[n++] = '\n';
        }
        cJSON_Delete(o);
        line[l] = saved;
        line += l + (nl ? 1 : 0);
    }
    if (ckpt_write_file_atomic(c->metrics_path, out, n, &err) != 0)
        fprintf(stderr, "brewslm: cannot trim %s: %s\n", c->metrics_path, err.message);
    free(out);
    free(text);
}

static int set_string(char **field, const char *value) {
    char *s = strdup(value);
    if (!s) return -1;
    free(*field);
    *field = s;
    return 0;
}

static int cmd_train(int argc, char **argv) {
    const char *recipe_path = NULL, *output_dir = NULL;
    int threads = 0, preflight = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(k_train_usage, stdout);
            return EXIT_OK;
        } else if (strcmp(a, "--threads") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 1024) {
                fprintf(stderr, "brewslm train: --threads needs a number in [1, 1024]\n");
                return EXIT_USAGE;
            }
            threads = (int)v;
        } else if (strcmp(a, "--output-dir") == 0 && i + 1 < argc) {
            output_dir = argv[++i];
        } else if (strcmp(a, "--no-preflight") == 0) {
            preflight = 0;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "brewslm train: unknown or incomplete option %s\n%s", a, k_train_usage);
            return EXIT_USAGE;
        } else if (!recipe_path) {
            recipe_path = a;
        } else {
            fprintf(stderr, "brewslm train: one recipe only\n");
            return EXIT_USAGE;
        }
    }
    if (!recipe_path) {
        fputs(k_train_usage, stderr);
        return EXIT_USAGE;
    }

    Recipe r;
    BsError err = {0};
    if (load_recipe(recipe_path, &r, &err) != 0) {
        print_error(recipe_path, &err);
        return strcmp(err.code, "io") == 0 ? EXIT_FAIL : EXIT_USAGE;
    }
    int rc = EXIT_FAIL;
    if (threads > 0) r.threads = threads;
    if (output_dir) {
        if (set_string(&r.output_dir, output_dir) != 0) goto out;
    } else if (!r.output_dir) {
        char *d = default_output_dir(recipe_path);
        if (!d) goto out;
        r.output_dir = d;
    }

    if (preflight) {
        PreflightOptions opt = {NULL, 0, BREWSLM_PREFERENCE};
        PreflightReport rep;
        memset(&rep, 0, sizeof rep);
        if (preflight_run(&r, &opt, &rep, &err) != 0) {
            print_error("preflight", &err);
            goto out;
        }
        for (int i = 0; i < rep.n_warnings; i++)
            fprintf(stderr, "warning: %s: %s\n", rep.warnings[i].field, rep.warnings[i].message);
        if (rep.n_blockers > 0) {
            for (int i = 0; i < rep.n_blockers; i++) {
                const Blocker *b = &rep.blockers[i];
                fprintf(stderr, "blocked [%s] %s: %s%s%s\n", b->code, b->field, b->message,
                        b->hint[0] ? " — " : "", b->hint);
            }
            rc = EXIT_BLOCKED;
            goto out;
        }
    }

    TrainCli cli = {0};
    if ((size_t)snprintf(cli.metrics_path, sizeof cli.metrics_path, "%s/metrics.jsonl",
                         r.output_dir) >= sizeof cli.metrics_path) {
        fprintf(stderr, "brewslm: output_dir path too long\n");
        goto out;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND; // a second signal takes the default action
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    TrainHooks hooks = {0};
    hooks.user = &cli;
    hooks.on_log = hook_log;
    hooks.on_metrics = hook_metrics;
    hooks.should_stop = hook_should_stop;
    hooks.on_resume = hook_resume;
    TrainResult res;
    fprintf(stderr, "brewslm: output in %s\n", r.output_dir);
    int trc = train_run(&r, &hooks, &res, &err);
    if (cli.metrics && fclose(cli.metrics) != 0 && !cli.failed) {
        fprintf(stderr, "brewslm: cannot write %s\n", cli.metrics_path);
        trc = -1;
    }
    if (trc != 0) {
        print_error("train", &err);
        goto out;
    }
    if (res.stopped) {
        int sig = g_signal;
        fprintf(stderr, "brewslm: stopped at step %d/%d; run the same command to resume\n",
                res.step, res.total_steps);
        rc = 128 + (sig ? sig : SIGTERM);
        goto out;
    }
    fprintf(stderr, "brewslm: done: %s\n", res.final_model);
    rc = EXIT_OK;
out:
    recipe_free(&r);
    return rc;
}

// ---------------------------------------------------------------------------
// preflight

static int cmd_preflight(int argc, char **argv) {
    const char *recipe_path = NULL, *data_root = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(k_preflight_usage, stdout);
            return EXIT_OK;
        } else if (strcmp(a, "--data-root") == 0 && i + 1 < argc) {
            data_root = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "brewslm preflight: unknown or incomplete option %s\n%s", a,
                    k_preflight_usage);
            return EXIT_USAGE;
        } else if (!recipe_path) {
            recipe_path = a;
        } else {
            fprintf(stderr, "brewslm preflight: one recipe only\n");
            return EXIT_USAGE;
        }
    }
    if (!recipe_path) {
        fputs(k_preflight_usage, stderr);
        return EXIT_USAGE;
    }
    PreflightReport rep;
    memset(&rep, 0, sizeof rep);
    Recipe r;
    BsError err = {0};
    int parsed = load_recipe(recipe_path, &r, &err) == 0;
    if (!parsed) {
        // A recipe that does not parse is a blocker like any other, so the
        // report stays the one machine-readable answer.
        preflight_add(&rep, 0, err.code, err.param[0] ? err.param : "recipe",
                      "fix the recipe and run preflight again", "%s", err.message);
    } else {
        PreflightOptions opt = {data_root, 0, BREWSLM_PREFERENCE};
        if (preflight_run(&r, &opt, &rep, &err) != 0) {
            print_error("preflight", &err);
            recipe_free(&r);
            return EXIT_FAIL;
        }
        recipe_free(&r);
    }
    char *json = preflight_to_json(&rep);
    if (!json) {
        fprintf(stderr, "brewslm preflight: out of memory\n");
        return EXIT_FAIL;
    }
    puts(json);
    free(json);
    if (fflush(stdout) != 0) return EXIT_FAIL;
    return rep.n_blockers > 0 ? EXIT_BLOCKED : EXIT_OK;
}

// ---------------------------------------------------------------------------

int main(int argc, char **argv) {
    blasenv_select_kernels(argv);
    if (argc < 2) {
        fputs(k_usage, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (is_help(cmd) || strcmp(cmd, "help") == 0) {
        fputs(k_usage, stdout);
        return EXIT_OK;
    }
    if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0) {
        printf("brewslm %s\n", BREWSLM_VERSION);
        return EXIT_OK;
    }
    if (strcmp(cmd, "train") == 0) return cmd_train(argc - 1, argv + 1);
    if (strcmp(cmd, "preflight") == 0) return cmd_preflight(argc - 1, argv + 1);
    if (strcmp(cmd, "generate") == 0) return cmd_generate(argc - 1, argv + 1);
    if (strcmp(cmd, "tokenize") == 0) return cmd_tokenize(argc - 1, argv + 1);
    fprintf(stderr, "brewslm: unknown command '%s'\n%s", cmd, k_usage);
    return EXIT_USAGE;
}
