// preflight.c — decides before a run whether a recipe can run, as typed
// blockers, and estimates what it will cost (see preflight.h).
//
// Order: method availability, path confinement (every path resolved against
// data_root with symlinks followed), policy model (llama2.c file header,
// Hugging Face config.json + safetensors headers, or model_init), output
// format, reference model, tokenizer (the recipe's, else a Hugging Face model
// folder's own), chat template, lengths, data (loaded once with the recipe's
// own truncation, bad-row policy and chat template), schedule, memory. Checks
// that depend on an earlier failure are skipped rather than reported twice.
//
// Memory estimate (bytes), matching what train.c allocates at its peak:
//   4P policy weights + 4P gradients + 8P AdamW (m, v)          P = parameters
//   + 4P reference weights                                     (dpo)
//   + model_activation_bytes(cfg, n_tok, T, backward=1)        policy, train batch
//     (per token per layer the kept activations, the attention rows T x T,
//      the backward buffers, and the logits chunk rows x V, see model.c)
//   + model_activation_bytes(cfg, n_tok, T, backward=0)        reference forward
//                                                             (dpo, not precomputed)
//   + 4 x tokens of every loaded row (train + eval)
// with n_tok = the tokens of the per_device_train_batch_size largest rows
// (prompt + chosen and prompt + rejected for a pair) and T the longest
// sequence. When the data could not be loaded the worst case stands in:
// n_tok = batch x (2 for pairs) x max_length, T = max_length.
#include "preflight.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "brewslm_config.h"
#include "chat.h"
#include "ckpt.h"
#include "data.h"
#include "hf.h"
#include "model.h"
#include "tok.h"

#define SCAN_MAX_LINES 200        // rows the schema pre-scan looks at
#define SCAN_MAX_LINE (16u << 20) // longer lines end the pre-scan
#define JOB_REF_PREFIX "job:"

void preflight_add(PreflightReport *rep, int warning, const char *code, const char *field,
                   const char *hint, const char *fmt, ...) {
    int *n = warning ? &rep->n_warnings : &rep->n_blockers;
    // The last slot is kept so a full list still says that issues were dropped.
    if (*n >= PREFLIGHT_MAX_ISSUES) return;
    Blocker *b = warning ? &rep->warnings[*n] : &rep->blockers[*n];
    memset(b, 0, sizeof *b);
    if (*n == PREFLIGHT_MAX_ISSUES - 1) {
        snprintf(b->code, sizeof b->code, "%s", "too_many_issues");
        snprintf(b->message, sizeof b->message, "more issues were found than can be listed");
        (*n)++;
        return;
    }
    snprintf(b->code, sizeof b->code, "%s", code ? code : "");
    snprintf(b->field, sizeof b->field, "%s", field ? field : "");
    snprintf(b->hint, sizeof b->hint, "%s", hint ? hint : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->message, sizeof b->message, fmt, ap);
    va_end(ap);
    (*n)++;
}

// ---- paths ---------------------------------------------------------------------

typedef enum { PATH_OK, PATH_MISSING, PATH_OUTSIDE, PATH_DANGLING, PATH_TOO_LONG } PathState;

// Resolves p (relative to base, an absolute symlink-free directory) into out:
// realpath of the longest existing prefix, then the missing components
// appended; "." is dropped and ".." in the missing part pops a component and
// the result is resolved again (so "new/../link" still follows link). A
// component that exists only as a dangling symbolic link cannot be judged
// and is reported as PATH_DANGLING.
static PathState resolve_path(const char *base, const char *p, char out[PATH_MAX], int depth) {
    char full[PATH_MAX];
    int n = p[0] == '/' ? snprintf(full, sizeof full, "%s", p)
                        : snprintf(full, sizeof full, "%s/%s", base, p);
    if (n < 0 || (size_t)n >= sizeof full || depth > 8) return PATH_TOO_LONG;
    if (realpath(full, out)) return PATH_OK;
    // Walk up until a prefix exists; the tail is what is missing.
    char prefix[PATH_MAX];
    memcpy(prefix, full, (size_t)n + 1);
    char resolved[PATH_MAX];
    size_t cut = (size_t)n;
    for (;;) {
        while (cut > 0 && prefix[cut - 1] == '/')
            cut--; // trailing slashes
        while (cut > 0 && prefix[cut - 1] != '/')
            cut--;                          // the last component
        if (cut == 0) return PATH_TOO_LONG; // full is absolute: "/" always resolves
        prefix[cut] = '\0';
        // prefix now ends with '/'; check the component we just removed.
        struct stat lst;
        char comp_path[PATH_MAX];
        snprintf(comp_path, sizeof comp_path, "%s%s", prefix, full + cut);
        char *slash = strchr(comp_path + cut, '/');
        if (slash) *slash = '\0';
        if (lstat(comp_path, &lst) == 0 && S_ISLNK(lst.st_mode)) return PATH_DANGLING;
        if (realpath(prefix, resolved)) break;
    }
    // Rebuild: resolved + the tail components of full after cut.
    char result[PATH_MAX];
    snprintf(result, sizeof result, "%s", resolved);
    int popped = 0;
    const char *s = full + cut;
    while (*s) {
        while (*s == '/')
            s++;
        if (!*s) break;
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 1 && s[0] == '.') {
            // nothing
        } else if (len == 2 && s[0] == '.' && s[1] == '.') {
            char *last = strrchr(result, '/');
            if (last && last != result)
                *last = '\0';
            else
                snprintf(result, sizeof result, "/");
            popped = 1;
        } else {
            size_t rl = strlen(result);
            if (rl + 1 + len + 1 > sizeof result) return PATH_TOO_LONG;
            if (rl > 1) result[rl++] = '/';
            memcpy(result + rl, s, len);
            result[rl + len] = '\0';
        }
        s += len;
    }
    // After a ".." the rest may run through existing symlinks again.
    if (popped) return resolve_path("/", result, out, depth + 1);
    snprintf(out, PATH_MAX, "%s", result);
    return PATH_MISSING;
}

static int path_inside(const char *root, const char *p) {
    size_t rl = strlen(root);
    if (rl == 1 && root[0] == '/') return 1;
    return strncmp(p, root, rl) == 0 && (p[rl] == '\0' || p[rl] == '/');
}

static int is_job_ref(const char *s) {
    return s && strncmp(s, JOB_REF_PREFIX, strlen(JOB_REF_PREFIX)) == 0;
}

// "job:job_" + 16 lowercase hex digits.
static int job_ref_valid(const char *s) {
    const char *id = s + strlen(JOB_REF_PREFIX);
    if (strncmp(id, "job_", 4) != 0 || strlen(id) != 20) return 0;
    for (const char *c = id + 4; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'))) return 0;
    return 1;
}

// The files Hugging Face loaders and hf_export's tokenizer copy read from a
// folder: config.json, the weights (and their index), the tokenizer's files.
static int loader_file(const char *name) {
    static const char *const names[] = {
        "config.json",           "model.safetensors.index.json", "tokenizer.json",
        "tokenizer_config.json", "special_tokens_map.json",      "vocab.json",
        "merges.txt",            "tokenizer.model"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0) return 1;
    size_t n = strlen(name);
    return n > 12 && strcmp(name + n - 12, ".safetensors") == 0; // shards
}

int preflight_folder_confined(const char *root, const char *path, char *bad, size_t bad_len) {
    char dir[PATH_MAX];
    struct stat sb;
    if (bad_len) bad[0] = '\0';
    if (stat(path, &sb) != 0) return 1; // missing: the loaders report it
    size_t n = strlen(path);
    if (S_ISDIR(sb.st_mode)) {
        if (n >= sizeof dir) return 1;
        memcpy(dir, path, n + 1);
    } else if (n > 5 && strcmp(path + n - 5, ".json") == 0) { // tokenizer.json: its siblings
        const char *slash = strrchr(path, '/');
        if (!slash || (size_t)(slash - path) >= sizeof dir) return 1;
        size_t dl = slash == path ? 1 : (size_t)(slash - path);
        memcpy(dir, path, dl);
        dir[dl] = '\0';
    } else {
        return 1;
    }
    DIR *d = opendir(dir);
    if (!d) return 1;
    int ok = 1;
    struct dirent *de;
    while (ok && (de = readdir(d)) != NULL) {
        if (!loader_file(de->d_name)) continue;
        char p[PATH_MAX], real[PATH_MAX];
        struct stat lst, rst;
        if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, de->d_name) >= sizeof p) continue;
        if (lstat(p, &lst) != 0) continue;
        if (S_ISREG(lst.st_mode)) continue;
        // A symbolic link must stay inside root and lead to a regular file;
        // anything else (FIFO, device, folder) would block or fail a read.
        if (S_ISLNK(lst.st_mode) && realpath(p, real) && (!root || path_inside(root, real)) &&
            stat(real, &rst) == 0 && S_ISREG(rst.st_mode))
            continue;
        snprintf(bad, bad_len, "%s", p);
        ok = 0;
    }
    closedir(d);
    return ok;
}

typedef struct {
    const char *field;
    char **slot;
    int is_output; // may not exist yet
    int ok;        // resolved inside data_root (or no confinement)
    int exists;
} PathField;

// Rewrites *pf->slot into its resolved absolute form; a path outside root
// adds a blocker. Returns -1 only on allocation failure.
static int check_path(PathField *pf, const char *base, const char *root, PreflightReport *rep,
                      BsError *err) {
    const char *p = *pf->slot;
    pf->ok = 0;
    pf->exists = 0;
    if (!p || is_job_ref(p)) return 0;
    if (!p[0]) {
        preflight_add(rep, 0, "invalid_hyperparameter", pf->field, NULL, "%s is an empty path",
                      pf->field);
        return 0;
    }
    char out[PATH_MAX];
    PathState st = resolve_path(base, p, out, 0);
    if (st == PATH_TOO_LONG) {
        preflight_add(rep, 0, "invalid_hyperparameter", pf->field, NULL,
                      "%s \"%s\" is too long to resolve", pf->field, p);
        return 0;
    }
    if (st == PATH_DANGLING) {
        preflight_add(rep, 0, "path_outside_data_root", pf->field,
                      "point the path at a real file inside the data root",
                      "%s \"%s\" runs through a dangling symbolic link, so where it leads "
                      "cannot be checked",
                      pf->field, p);
        return 0;
    }
    if (root && !path_inside(root, out)) {
        preflight_add(rep, 0, "path_outside_data_root", pf->field,
                      "use a path inside the daemon's data root (relative paths are resolved "
                      "against it)",
                      "%s \"%s\" resolves to %s, outside the data root %s", pf->field, p, out,
                      root);
        return 0;
    }
    // A FIFO, socket or device would block (or never end) the first read:
    // only regular files and folders (HF model folders, output_dir) are paths.
    struct stat sb;
    if (st == PATH_OK && stat(out, &sb) == 0 && !S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode)) {
        preflight_add(rep, 0, pf->is_output ? "invalid_hyperparameter" : "dataset_not_found",
                      pf->field, "point the path at a regular file",
                      "%s \"%s\" is not a regular file or folder", pf->field, p);
        return 0;
    }
    // A Hugging Face folder (or the folder of a tokenizer .json) is read file
    // by file: each of those files must stay inside the data root as well.
    char bad[PATH_MAX];
    int is_dir = st == PATH_OK && stat(out, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (st == PATH_OK && !pf->is_output && (is_dir || strcmp(pf->field, "tokenizer") == 0) &&
        !preflight_folder_confined(root, out, bad, sizeof bad)) {
        preflight_add(rep, 0, "path_outside_data_root", pf->field,
                      "copy the files into the folder instead of linking them",
                      "%s \"%s\": %s is a symbolic link leading outside the data root (or to "
                      "something that is not a regular file)",
                      pf->field, p, bad);
        return 0;
    }
    char *copy = strdup(out);
    if (!copy) return bs_fail(err, "out_of_memory", pf->field, "cannot copy a path");
    free(*pf->slot);
    *pf->slot = copy;
    pf->ok = 1;
    pf->exists = st == PATH_OK;
    return 0;
}

// ---- data pre-scan -------------------------------------------------------------

typedef struct {
    int first_text_line; // first row with text fields (needs a tokenizer), 0: none
    int first_row_line;  // first parseable object row
    int first_is_sft;    // that row has SFT keys and no chosen/rejected
    int first_is_pref;   // that row has chosen/rejected
} DataScan;

static int is_text_value(const cJSON *v) {
    return cJSON_IsString(v) || (cJSON_IsArray(v) && cJSON_IsObject(cJSON_GetArrayItem(v, 0)));
}

// Looks at the first rows only to tell apart failures data_load reports
// generically: text rows without a tokenizer, SFT rows given to a preference
// recipe (and the reverse). Unreadable files are left to data_load.
static void scan_data(const char *path, DataScan *sc) {
    memset(sc, 0, sizeof *sc);
    gzFile gz = gzopen(path, "rb");
    if (!gz) return;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    int line = 0, rows = 0;
    while (buf && rows < SCAN_MAX_LINES) {
        len = 0;
        int eof = 0;
        for (;;) { // one whole line into buf
            if (!gzgets(gz, buf + len, (int)(cap - len))) {
                eof = 1;
                break;
            }
            len += strlen(buf + len);
            if (len > 0 && buf[len - 1] == '\n') break;
            if (cap - len > 1) continue; // a NUL inside the line: gzgets stopped short
            if (cap >= SCAN_MAX_LINE) goto done;
            char *nb = realloc(buf, cap * 2);
            if (!nb) goto done;
            buf = nb;
            cap *= 2;
        }
        if (eof && len == 0) break;
        line++;
        cJSON *row = cJSON_ParseWithLength(buf, len);
        if (cJSON_IsObject(row)) {
            rows++;
            static const char *const text_keys[] = {"prompt",     "chosen", "rejected",
                                                    "completion", "text",   "messages"};
            for (size_t k = 0; k < sizeof text_keys / sizeof text_keys[0]; k++)
                if (!sc->first_text_line &&
                    is_text_value(cJSON_GetObjectItemCaseSensitive(row, text_keys[k])))
                    sc->first_text_line = line;
            if (!sc->first_row_line) {
                sc->first_row_line = line;
                int pref = cJSON_HasObjectItem(row, "chosen") ||
                           cJSON_HasObjectItem(row, "rejected") ||
                           cJSON_HasObjectItem(row, "chosen_ids") ||
                           cJSON_HasObjectItem(row, "rejected_ids");
                int sft = cJSON_HasObjectItem(row, "completion") ||
                          cJSON_HasObjectItem(row, "text") ||
                          cJSON_HasObjectItem(row, "messages") ||
                          cJSON_HasObjectItem(row, "completion_ids");
                sc->first_is_pref = pref;
                sc->first_is_sft = sft && !pref;
            }
        }
        cJSON_Delete(row);
        if (eof) break;
    }
done:
    free(buf);
    gzclose(gz);
}

// ---- model ---------------------------------------------------------------------

static int same_shape(const ModelConfig *a, const ModelConfig *b) {
    return a->dim == b->dim && a->hidden_dim == b->hidden_dim && a->n_layers == b->n_layers &&
           a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads &&
           a->vocab_size == b->vocab_size && a->seq_len == b->seq_len &&
           a->shared_classifier == b->shared_classifier;
}

// ---- estimate helpers ----------------------------------------------------------

static long long row_tokens(const Example *e, int pref) {
    return pref ? 2LL * e->n_prompt + e->n_chosen + e->n_rejected
                : (long long)e->n_prompt + e->n_chosen;
}

static int row_longest(const Example *e, int pref) {
    int a = e->n_prompt + e->n_chosen, b = pref ? e->n_prompt + e->n_rejected : 0;
    return a > b ? a : b;
}

static int cmp_ll_desc(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x < y) - (x > y);
}

// Tokens of the `batch` largest rows of ds and its longest sequence; every
// row's tokens summed into *all. -1 on allocation failure.
static int batch_tokens(const Dataset *ds, int pref, int batch, long long *n_tok, int *max_seq,
                        long long *all) {
    *n_tok = 0;
    *max_seq = 0;
    *all = 0;
    if (ds->n <= 0) return 0;
    long long *t = malloc((size_t)ds->n * sizeof *t);
    if (!t) return -1;
    for (int i = 0; i < ds->n; i++) {
        t[i] = row_tokens(&ds->rows[i], pref);
        *all += t[i];
        int l = row_longest(&ds->rows[i], pref);
        if (l > *max_seq) *max_seq = l;
    }
    qsort(t, (size_t)ds->n, sizeof *t, cmp_ll_desc);
    for (int i = 0; i < ds->n && i < batch; i++)
        *n_tok += t[i];
    free(t);
    return 0;
}

// a + b, saturating at LLONG_MAX (the estimate only needs to exceed limits).
static long long sat_add(long long a, long long b) {
    return (b > 0 && a > LLONG_MAX - b) ? LLONG_MAX : a + b;
}

// "12.3 MiB" style, for messages.
static void human_bytes(long long b, char out[32]) {
    static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024.0 && u < 6)
        v /= 1024.0, u++;
    if (u == 0)
        snprintf(out, 32, "%lld bytes", b);
    else
        snprintf(out, 32, "%.1f %s", v, units[u]);
}

static long long act_bytes(const ModelConfig *c, long long n_tok, int T, int backward) {
    if (n_tok > INT_MAX) return LLONG_MAX;
    size_t b = model_activation_bytes(c, (int)n_tok, T, backward);
    return (b == SIZE_MAX || b > (size_t)LLONG_MAX) ? LLONG_MAX : (long long)b;
}

// ---- the checks ----------------------------------------------------------------

// Maps a data_load failure to a blocker on field.
static void data_blocker(PreflightReport *rep, const BsError *e, const char *field,
                         const char *path) {
    static const char *const known[] = {"dataset_not_found", "dataset_schema", "dataset_empty",
                                        "tokenizer_mismatch", "invalid_hyperparameter"};
    const char *code = "dataset_schema";
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(e->code, known[i]) == 0) code = known[i];
    const char *hint = strcmp(code, "dataset_not_found") == 0
                           ? "check the path (relative paths are resolved against the data root)"
                       : strcmp(code, "dataset_schema") == 0
                           ? "fix the row, or set bad_rows: skip to skip bad rows"
                           : NULL;
    if (strcmp(code, "dataset_not_found") == 0)
        preflight_add(rep, 0, code, field, hint, "%s %s: %s", field, path, e->message);
    else
        preflight_add(rep, 0, code, field, hint, "%s", e->message);
}

// Loads one data file and reports its problems; *loaded says whether ds
// holds rows to estimate from. -1 only on allocation failure.
static int check_data(const Recipe *r, const char *field, const char *path, int is_eval,
                      const Tokenizer *tok, int vocab, int max_len, const DataOptions *dopt,
                      Dataset *ds, int *loaded, PreflightReport *rep, BsError *err) {
    int pref = r->method != METHOD_SFT;
    *loaded = 0;
    DataScan sc;
    scan_data(path, &sc);
    if (!tok && sc.first_text_line && is_job_ref(r->model) && !r->tokenizer) {
        // The dependency may export a Hugging Face folder with its tokenizer;
        // the worker checks the rows again once the reference is resolved.
        preflight_add(rep, 1, "estimate_deferred", field, NULL,
                      "%s line %d has text: it is tokenized with the tokenizer of the model %s "
                      "produces, checked when that job has finished",
                      field, sc.first_text_line, r->model + strlen(JOB_REF_PREFIX));
        return 0;
    }
    if (!tok && sc.first_text_line) {
        preflight_add(rep, 0, "tokenizer_mismatch", "tokenizer",
                      "set tokenizer: to the model's tokenizer.bin or Hugging Face tokenizer "
                      "folder, or use pre-tokenized rows (prompt_ids, chosen_ids, "
                      "rejected_ids / completion_ids)",
                      "%s line %d has text but the recipe names no tokenizer (and the model is "
                      "not a byte-level model_init)",
                      field, sc.first_text_line);
        return 0;
    }
    BsError e = {0};
    if (data_load_ex(ds, path, r, tok, vocab, max_len, dopt, &e) != 0) {
        if (strcmp(e.code, "out_of_memory") == 0)
            return bs_fail(err, e.code, field, "%s", e.message);
        if (strcmp(e.code, "dataset_schema") == 0 && pref && sc.first_is_sft) {
            preflight_add(rep, 0, "dataset_schema", field,
                          "give rows of {prompt, chosen, rejected} (or {chosen, rejected}), or "
                          "use method: sft",
                          "line %d: the rows are SFT rows and lack chosen/rejected; method %s "
                          "needs preference rows",
                          sc.first_row_line, recipe_method_name(r->method));
        } else if (strcmp(e.code, "dataset_schema") == 0 && !pref && sc.first_is_pref) {
            preflight_add(rep, 0, "dataset_schema", field,
                          "give rows of {prompt, completion} or {text}, or use method: dpo/orpo",
                          "line %d: the rows are preference rows (chosen/rejected); method sft "
                          "needs {prompt, completion}, {text} or {messages}",
                          sc.first_row_line);
        } else {
            data_blocker(rep, &e, field, path);
        }
        return 0;
    }
    if (ds->n == 0) {
        if (ds->n_bad > 0 && ds->n_dropped == 0) {
            if (pref && sc.first_is_sft)
                preflight_add(rep, 0, "dataset_schema", field,
                              "give rows of {prompt, chosen, rejected}, or use method: sft",
                              "line %d: the rows are SFT rows and lack chosen/rejected; method "
                              "%s needs preference rows",
                              sc.first_row_line, recipe_method_name(r->method));
            else
                preflight_add(rep, 0, "dataset_schema", field, "fix the rows' format",
                              "line %d: %s (all %d rows were refused)", ds->first_bad_line,
                              ds->first_bad_reason, ds->n_bad);
        } else if (is_eval) {
            preflight_add(rep, 1, "dataset_empty", field, NULL,
                          "%s has no usable rows (%d lines, %d refused, %d dropped after "
                          "truncation): there will be no evaluation",
                          field, ds->n_lines, ds->n_bad, ds->n_dropped);
        } else {
            preflight_add(rep, 0, "dataset_empty", field,
                          "add rows, or raise max_length so rows keep a completion",
                          "%s has no usable rows (%d lines, %d refused, %d dropped after "
                          "truncation)",
                          field, ds->n_lines, ds->n_bad, ds->n_dropped);
        }
        return 0;
    }
    *loaded = 1;
    if (ds->n_bad > 0)
        preflight_add(rep, 1, "bad_rows_skipped", field, NULL,
                      "%d of %d rows were refused and will be skipped; first: line %d: %s",
                      ds->n_bad, ds->n_lines, ds->first_bad_line, ds->first_bad_reason);
    if (ds->n_truncated > 0)
        preflight_add(rep, 1, "rows_truncated", field, NULL,
                      "%d of %d rows are longer than max_length %d and will be truncated "
                      "(prompts to at most %d tokens)",
                      ds->n_truncated, ds->n, max_len,
                      r->max_prompt_length < max_len ? r->max_prompt_length : max_len / 2);
    if (ds->n_dropped > 0)
        preflight_add(rep, 1, "rows_dropped", field, NULL,
                      "%d rows have nothing left to learn from after truncation and are dropped",
                      ds->n_dropped);
    return 0;
}

// Loads a Hugging Face tokenizer for a model of vocab ids (0: unknown) into
// *tok and its vocabulary into *vocab; a failure becomes a blocker and leaves
// *tok NULL. -1 only on allocation failure.
static int check_hf_tokenizer(const char *path, int vocab, Tokenizer **tok, int *vocab_out,
                              PreflightReport *rep, BsError *err) {
    BsError e = {0};
    *tok = NULL;
    if (tok_load(tok, path, vocab, &e) != 0) {
        if (strcmp(e.code, "out_of_memory") == 0)
            return bs_fail(err, e.code, "tokenizer", "%s", e.message);
        if (strcmp(e.code, "tokenizer_unsupported") == 0)
            // The field is the tokenizer.json component brewslm lacks ("model.type", ...).
            preflight_add(rep, 0, "tokenizer_unsupported", e.param[0] ? e.param : "tokenizer",
                          "use a BPE tokenizer.json (byte-level or SentencePiece-style), or a "
                          "llama2.c tokenizer.bin",
                          "%s", e.message);
        else
            preflight_add(rep, 0, "tokenizer_mismatch", "tokenizer",
                          "give the tokenizer the model was trained with", "%s", e.message);
        return 0;
    }
    *vocab_out = tok_vocab_size(*tok);
    return 0;
}

int preflight_run(Recipe *r, const PreflightOptions *opt, PreflightReport *rep, BsError *err) {
    memset(rep, 0, sizeof *rep);
    PreflightOptions defaults = {NULL, 0, BREWSLM_PREFERENCE};
    if (!opt) opt = &defaults;
    int pref = r->method != METHOD_SFT;
    int dpo = r->method == METHOD_DPO;
    Tokenizer *tok = NULL;
    Dataset train = {0}, eval = {0};
    int train_loaded = 0, eval_loaded = 0;
    int ret = -1;

    // 1. The preference trainer must be built in.
    if (pref && !(opt->preference_enabled && BREWSLM_PREFERENCE))
        preflight_add(rep, 0, "missing_dependency", "method",
                      "rebuild brewslm with -Dpreference=enabled",
                      "method %s needs the preference trainer, which this build does not include",
                      recipe_method_name(r->method));

    // 2. Paths: resolved, confined, rewritten.
    char root[PATH_MAX], cwd[PATH_MAX];
    const char *base;
    if (opt->data_root) {
        if (!realpath(opt->data_root, root))
            return bs_fail(err, "io", "data_root", "data root %s cannot be resolved: %s",
                           opt->data_root, strerror(errno));
        base = root;
    } else {
        if (!getcwd(cwd, sizeof cwd))
            return bs_fail(err, "io", "", "cannot read the working directory: %s", strerror(errno));
        base = cwd;
    }
    PathField pf[] = {
        {"model", &r->model, 0, 0, 0},         {"reference_model", &r->reference_model, 0, 0, 0},
        {"tokenizer", &r->tokenizer, 0, 0, 0}, {"train_file", &r->train_file, 0, 0, 0},
        {"eval_file", &r->eval_file, 0, 0, 0}, {"output_dir", &r->output_dir, 1, 0, 0},
    };
    enum { PF_MODEL, PF_REF, PF_TOK, PF_TRAIN, PF_EVAL, PF_OUT, PF_N };
    for (int i = 0; i < PF_N; i++)
        if (check_path(&pf[i], base, opt->data_root ? root : NULL, rep, err) != 0) goto out;

    // 3. Policy model.
    ModelConfig cfg;
    int have_cfg = 0;
    BsError e = {0};
    if (is_job_ref(r->model)) {
        if (!job_ref_valid(r->model))
            preflight_add(rep, 0, "model_not_found", "model",
                          "write job:<id> with the id of an earlier job (job_ + 16 hex digits)",
                          "model \"%s\" is not a valid job reference", r->model);
        else
            preflight_add(rep, 1, "estimate_deferred", "model", NULL,
                          "model comes from %s: its parameters and memory are checked when that "
                          "job has finished",
                          r->model + strlen(JOB_REF_PREFIX));
    } else if (r->model) {
        if (pf[PF_MODEL].ok) {
            if (ckpt_peek_model(r->model, &cfg, &e) == 0) {
                have_cfg = 1;
            } else if (strcmp(e.code, "model_not_found") == 0) {
                preflight_add(rep, 0, "model_not_found", "model",
                              "check the path (relative paths are resolved against the data "
                              "root)",
                              "%s", e.message);
            } else if (strcmp(e.code, "model_unsupported") == 0) {
                // The field is the config.json key (or tensor) the trainer cannot honour.
                preflight_add(rep, 0, "model_unsupported", e.param[0] ? e.param : "model",
                              "brewslm trains Llama / Mistral models with plain RoPE, no biases "
                              "and SiLU; convert or choose another model",
                              "%s", e.message);
            } else {
                preflight_add(rep, 0, "model_invalid", "model",
                              "give a llama2.c v0 checkpoint (model.bin as written by export.py) "
                              "or a Hugging Face folder (config.json + model.safetensors)",
                              "%s", e.message);
            }
        }
    } else if (r->has_model_init) {
        recipe_model_init_config(&r->model_init, &cfg);
        if (model_config_validate(&cfg, &e) == 0)
            have_cfg = 1;
        else
            preflight_add(rep, 0, "model_invalid", "model_init", NULL, "model_init: %s", e.message);
    } else {
        preflight_add(rep, 0, "model_not_found", "model",
                      "set model: or model_init:", "the recipe names no model");
    }

    // Output format: a llama2.c checkpoint has no place for rms_norm_eps or
    // rope_theta (run.c assumes 1e-5 and 10000), so it is refused rather
    // than silently changing the model.
    int model_is_hf =
        r->model && !is_job_ref(r->model) && pf[PF_MODEL].ok && hf_is_model_dir(r->model);
    OutputFormat out_fmt = r->output_format != OUTPUT_AUTO ? r->output_format
                           : model_is_hf                   ? OUTPUT_HF
                                                           : OUTPUT_LLAMA2C;
    if (have_cfg && out_fmt == OUTPUT_LLAMA2C && (cfg.norm_eps != 1e-5f || cfg.rope_theta != 1e4f))
        preflight_add(rep, 0, "invalid_hyperparameter", "output_format",
                      "set output_format: hf (or leave it out: a Hugging Face model is exported "
                      "as hf by default)",
                      "the model has rms_norm_eps %g and rope_theta %g, which a llama2.c "
                      "checkpoint cannot carry (it assumes 1e-05 and 10000)",
                      (double)cfg.norm_eps, (double)cfg.rope_theta);

    // 4. Reference model (DPO only).
    if (r->reference_model && !dpo) {
        preflight_add(rep, 1, "ignored_field", "reference_model", NULL,
                      "reference_model is only used by method dpo; %s ignores it",
                      recipe_method_name(r->method));
    } else if (r->reference_model && is_job_ref(r->reference_model)) {
        if (!job_ref_valid(r->reference_model))
            preflight_add(rep, 0, "missing_dependency", "reference_model",
                          "write job:<id> with the id of an earlier job (job_ + 16 hex digits)",
                          "reference_model \"%s\" is not a valid job reference",
                          r->reference_model);
    } else if (r->reference_model && pf[PF_REF].ok) {
        ModelConfig rc;
        bs_error_clear(&e);
        if (ckpt_peek_model(r->reference_model, &rc, &e) != 0) {
            if (strcmp(e.code, "model_not_found") == 0)
                preflight_add(rep, 0, "missing_dependency", "reference_model",
                              "provide the reference checkpoint, or drop reference_model to "
                              "use a frozen copy of the starting model",
                              "DPO reference model: %s", e.message);
            else if (strcmp(e.code, "model_unsupported") == 0)
                preflight_add(rep, 0, "model_unsupported", e.param[0] ? e.param : "reference_model",
                              NULL, "reference_model: %s", e.message);
            else
                preflight_add(rep, 0, "model_invalid", "reference_model", NULL, "%s", e.message);
        } else if (have_cfg && !same_shape(&rc, &cfg)) {
            preflight_add(rep, 0, "model_invalid", "reference_model",
                          "the reference must have the policy's architecture",
                          "reference_model has dim %d hidden %d layers %d heads %d/%d vocab %d "
                          "seq_len %d; the policy has dim %d hidden %d layers %d heads %d/%d "
                          "vocab %d seq_len %d",
                          rc.dim, rc.hidden_dim, rc.n_layers, rc.n_heads, rc.n_kv_heads,
                          rc.vocab_size, rc.seq_len, cfg.dim, cfg.hidden_dim, cfg.n_layers,
                          cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size, cfg.seq_len);
        }
    }
    if (r->precompute_ref_log_probs && !dpo)
        preflight_add(rep, 1, "ignored_field", "precompute_ref_log_probs", NULL,
                      "precompute_ref_log_probs only applies to method dpo");

    // 5. Tokenizer: a llama2.c file's entries must equal the model's
    // vocabulary; a Hugging Face tokenizer may hold fewer ids, never more.
    // Without tokenizer: a Hugging Face model folder's own tokenizer (train.c).
    int tok_ok = 1, vocab = have_cfg ? cfg.vocab_size : 0;
    const char *tok_path = NULL; // what the run will load; NULL: none or bytes
    if (r->tokenizer) {
        tok_ok = 0;
        if (pf[PF_TOK].ok) {
            int count = 0;
            bs_error_clear(&e);
            if (pf[PF_TOK].exists) tok_path = r->tokenizer;
            if (!pf[PF_TOK].exists) {
                preflight_add(rep, 0, "model_not_found", "tokenizer",
                              "check the path (relative paths are resolved against the data "
                              "root)",
                              "tokenizer file %s does not exist", r->tokenizer);
            } else if (tok_path_is_hf(r->tokenizer)) {
                if (check_hf_tokenizer(r->tokenizer, have_cfg ? cfg.vocab_size : 0, &tok, &vocab,
                                       rep, err) < 0)
                    goto out;
                tok_ok = tok != NULL;
            } else if (tok_count_llama2c(r->tokenizer, &count, &e) != 0) {
                if (strcmp(e.code, "out_of_memory") == 0) {
                    bs_fail(err, e.code, "tokenizer", "%s", e.message);
                    goto out;
                }
                preflight_add(rep, 0, "tokenizer_mismatch", "tokenizer",
                              "give the llama2.c tokenizer.bin that belongs to the model", "%s",
                              e.message);
            } else if (have_cfg && count != cfg.vocab_size) {
                preflight_add(rep, 0, "tokenizer_mismatch", "tokenizer",
                              "give the tokenizer the model was trained with",
                              "tokenizer %s has %d entries but the model's vocab_size is %d",
                              r->tokenizer, count, cfg.vocab_size);
            } else {
                // Without a known model (a job reference, or a model blocked above)
                // the file's own size stands in; the job checks it again at start.
                int v = have_cfg ? cfg.vocab_size : count;
                bs_error_clear(&e);
                if (tok_load_llama2c(&tok, r->tokenizer, v, &e) != 0) {
                    if (strcmp(e.code, "out_of_memory") == 0) {
                        bs_fail(err, e.code, "tokenizer", "%s", e.message);
                        goto out;
                    }
                    preflight_add(rep, 0, "tokenizer_mismatch", "tokenizer", NULL, "%s", e.message);
                } else {
                    vocab = v;
                    tok_ok = 1;
                }
            }
        }
    } else if (model_is_hf && tok_dir_has_hf(r->model)) {
        tok_path = r->model;
        if (check_hf_tokenizer(r->model, have_cfg ? cfg.vocab_size : 0, &tok, &vocab, rep, err) < 0)
            goto out;
        tok_ok = tok != NULL;
    } else if (recipe_uses_byte_tokenizer(r)) {
        if (have_cfg && cfg.vocab_size != TOK_BYTES_VOCAB) {
            tok_ok = 0;
            preflight_add(rep, 0, "tokenizer_mismatch", "tokenizer", NULL,
                          "the byte tokenizer has %d ids but the model's vocab_size is %d",
                          TOK_BYTES_VOCAB, cfg.vocab_size);
        } else if (tok_create_bytes(&tok, err) != 0) {
            goto out;
        }
    }

    // Chat template for conversational rows: auto reads the tokenizer's
    // tokenizer_config.json; its warning is reported when rows use it (below).
    char tpl_warning[512];
    DataOptions dopt = {.chat_template =
                            data_chat_template(r, tok_path, tpl_warning, sizeof tpl_warning)};

    // 6. Lengths: max_length is capped to the model's positions.
    int max_len = r->max_length;
    if (have_cfg && cfg.seq_len < max_len) max_len = cfg.seq_len;
    int lengths_ok = 1;
    if (max_len < 2) {
        lengths_ok = 0;
        preflight_add(rep, 0, "invalid_hyperparameter", "max_length",
                      "use a model with a longer seq_len",
                      "max_length capped to the model's seq_len is %d: no room for a prompt "
                      "and a completion",
                      max_len);
    } else if (r->max_prompt_length >= max_len) {
        // data.c gives the prompt half the room then; not fatal, but not what was asked.
        preflight_add(rep, 1, "invalid_hyperparameter", "max_prompt_length",
                      "set max_length and max_prompt_length below the model's seq_len",
                      "max_prompt_length %d is not below max_length %d capped to the model's "
                      "seq_len; prompts will get at most %d tokens when a row is too long",
                      r->max_prompt_length, max_len, max_len / 2);
    }

    // 7. Data.
    int data_vocab = vocab > 0 ? vocab : INT_MAX; // unknown model: ids checked when it runs
    if (r->train_file && pf[PF_TRAIN].ok && tok_ok && lengths_ok) {
        if (!pf[PF_TRAIN].exists)
            preflight_add(rep, 0, "dataset_not_found", "train_file",
                          "check the path (relative paths are resolved against the data root)",
                          "train_file %s does not exist", r->train_file);
        else if (check_data(r, "train_file", r->train_file, 0, tok, data_vocab, max_len, &dopt,
                            &train, &train_loaded, rep, err) != 0)
            goto out;
    } else if (!r->train_file) {
        preflight_add(rep, 0, "dataset_not_found", "train_file",
                      "set train_file:", "the recipe names no train_file");
    }
    if (r->eval_file && pf[PF_EVAL].ok && tok_ok && lengths_ok) {
        if (!pf[PF_EVAL].exists)
            preflight_add(rep, 0, "dataset_not_found", "eval_file",
                          "check the path, or drop eval_file", "eval_file %s does not exist",
                          r->eval_file);
        else if (check_data(r, "eval_file", r->eval_file, 1, tok, data_vocab, max_len, &dopt, &eval,
                            &eval_loaded, rep, err) != 0)
            goto out;
    } else if (!r->eval_file) {
        preflight_add(rep, 1, "no_eval_file", "eval_file", NULL,
                      "no eval_file: the run reports training metrics only");
        if (r->eval_steps > 0)
            preflight_add(rep, 1, "ignored_field", "eval_steps", NULL,
                          "eval_steps %d has no effect without eval_file", r->eval_steps);
    }

    if (tpl_warning[0] && (train_loaded ? train.n_chat : 0) + (eval_loaded ? eval.n_chat : 0) > 0)
        preflight_add(rep, 1,
                      dopt.chat_template == CHAT_PLAIN ? "chat_template_fallback"
                                                       : "chat_template_approximate",
                      "chat_template",
                      "set chat_template: chatml, llama2, zephyr or plain to choose explicitly",
                      "%s", tpl_warning);

    // 8. Schedule, as train.c computes it.
    rep->train_rows = train_loaded ? train.n : 0;
    if (train_loaded) {
        long long B = r->per_device_train_batch_size, A = r->gradient_accumulation_steps;
        long long n_batches = (train.n + B - 1) / B;
        long long spe = n_batches / A > 1 ? n_batches / A : 1;
        double total = r->max_steps > 0 ? (double)r->max_steps : ceil(r->num_train_epochs * spe);
        if (!(total >= 1) || total > INT_MAX) {
            preflight_add(rep, 0, "invalid_hyperparameter", "num_train_epochs",
                          "lower num_train_epochs or set max_steps",
                          "num_train_epochs %g gives %.0f optimizer steps (must be 1..%d)",
                          r->num_train_epochs, total, INT_MAX);
        } else {
            rep->steps = (long long)total;
        }
        if (B > train.n)
            preflight_add(rep, 1, "batch_larger_than_data", "per_device_train_batch_size", NULL,
                          "per_device_train_batch_size %lld is larger than the %d usable rows: "
                          "every step sees the whole data set",
                          B, train.n);
        if (n_batches < A)
            preflight_add(rep, 1, "accumulation_larger_than_data", "gradient_accumulation_steps",
                          NULL,
                          "gradient_accumulation_steps %lld exceeds the %lld micro-batches of an "
                          "epoch: each step accumulates %lld",
                          A, n_batches, n_batches);
        if (rep->steps > 0 && r->warmup_steps > rep->steps)
            preflight_add(rep, 1, "warmup_longer_than_run", "warmup_steps", NULL,
                          "warmup_steps %d is longer than the run's %lld steps: the learning "
                          "rate never reaches its peak",
                          r->warmup_steps, rep->steps);
    }

    // 9. Memory.
    if (have_cfg) {
        long long P = (long long)model_param_count(&cfg);
        rep->parameters = P;
        int B = r->per_device_train_batch_size, BE = r->per_device_eval_batch_size;
        long long n_tok = 0, n_tok_eval = 0, all = 0, all_eval = 0;
        int T = 0, T_eval = 0;
        if (train_loaded) {
            if (batch_tokens(&train, pref, B, &n_tok, &T, &all) != 0) goto oom;
        } else {
            n_tok = (long long)B * (pref ? 2 : 1) * max_len;
            T = max_len;
        }
        if (eval_loaded && batch_tokens(&eval, pref, BE, &n_tok_eval, &T_eval, &all_eval) != 0)
            goto oom;
        long long mem = 16 * P; // weights, gradients, AdamW m and v, fp32
        if (dpo) mem = sat_add(mem, 4 * P);
        long long act = act_bytes(&cfg, n_tok, T, 1);
        if (eval_loaded) {
            long long ae = act_bytes(&cfg, n_tok_eval, T_eval, 0);
            if (ae > act) act = ae;
        }
        mem = sat_add(mem, act);
        if (dpo && !r->precompute_ref_log_probs) mem = sat_add(mem, act_bytes(&cfg, n_tok, T, 0));
        mem = sat_add(mem, 4 * sat_add(all, all_eval));
        rep->memory_bytes = mem;
        // Without data the estimate is a worst case: not a reason to block.
        if (train_loaded && opt->memory_limit_bytes > 0 && mem > opt->memory_limit_bytes) {
            char need[32], limit[32];
            human_bytes(mem, need);
            human_bytes(opt->memory_limit_bytes, limit);
            preflight_add(rep, 0, "insufficient_memory", "per_device_train_batch_size",
                          dpo && !r->precompute_ref_log_probs
                              ? "lower per_device_train_batch_size or max_length, or set "
                                "precompute_ref_log_probs: true"
                              : "lower per_device_train_batch_size or max_length, or use a "
                                "smaller model",
                          "the run needs about %s (%lld parameters, a batch of %lld tokens) "
                          "but the limit is %s",
                          need, P, n_tok, limit);
        }
    }
    ret = 0;
    goto out;
oom:
    bs_fail(err, "out_of_memory", "", "cannot allocate the memory estimate");
out:
    tok_free(tok);
    data_free(&train);
    data_free(&eval);
    return ret;
}

// ---- JSON ----------------------------------------------------------------------

static int add_issues(cJSON *o, const char *key, const Blocker *list, int n) {
    cJSON *arr = cJSON_AddArrayToObject(o, key);
    if (!arr) return -1;
    for (int i = 0; i < n; i++) {
        cJSON *b = cJSON_CreateObject();
        if (!b || !cJSON_AddItemToArray(arr, b)) {
            cJSON_Delete(b);
            return -1;
        }
        const Blocker *x = &list[i];
        if (!cJSON_AddStringToObject(b, "code", x->code) ||
            !(x->field[0] ? cJSON_AddStringToObject(b, "field", x->field)
                          : cJSON_AddNullToObject(b, "field")) ||
            !cJSON_AddStringToObject(b, "message", x->message) ||
            !(x->hint[0] ? cJSON_AddStringToObject(b, "hint", x->hint)
                         : cJSON_AddNullToObject(b, "hint")))
            return -1;
    }
    return 0;
}

char *preflight_to_json(const PreflightReport *rep) {
    cJSON *o = cJSON_CreateObject();
    char *s = NULL;
    if (!o || !cJSON_AddBoolToObject(o, "ok", rep->n_blockers == 0)) goto out;
    if (add_issues(o, "blockers", rep->blockers, rep->n_blockers) != 0) goto out;
    if (add_issues(o, "warnings", rep->warnings, rep->n_warnings) != 0) goto out;
    cJSON *est = cJSON_AddObjectToObject(o, "estimate");
    if (!est || !cJSON_AddNumberToObject(est, "parameters", (double)rep->parameters) ||
        !cJSON_AddNumberToObject(est, "memory_bytes", (double)rep->memory_bytes) ||
        !cJSON_AddNumberToObject(est, "train_rows", (double)rep->train_rows) ||
        !cJSON_AddNumberToObject(est, "steps", (double)rep->steps))
        goto out;
    s = cJSON_PrintUnformatted(o);
out:
    cJSON_Delete(o);
    return s;
}
