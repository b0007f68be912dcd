// generate_route.c — POST /v1/jobs/{id}/generate (see generate_route.h): checks
// the body, finds the job's base or final weights and its tokenizer with the
// rules the worker used to train it (daemon/scheduler.c resolve_ref,
// trainer/train.c load_policy / load_tokenizer), and samples with generate().
#include "generate_route.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "ckpt.h"
#include "db.h"
#include "generate.h"
#include "hf.h"
#include "jobutil.h"
#include "model.h"
#include "recipe.h"
#include "strbuf.h"
#include "tok.h"

#define GEN_MAX_NEW_TOKENS 1024
#define GEN_DEFAULT_NEW_TOKENS 64
#define GEN_MAX_TEMPERATURE 5.0
#define GEN_DEFAULT_TOP_P 0.9
#define GEN_DEFAULT_SEED 42
// JSON numbers are exact integers up to 2^53, so larger seeds would not
// round-trip through the clients that send them.
#define GEN_MAX_SEED 9007199254740992.0
// A prompt must fit seq_len tokens anyway; these caps keep hostile bodies
// from costing a long tokenization first.
#define GEN_MAX_PROMPT_BYTES 65536
#define GEN_MAX_PROMPT_IDS 65536
#define GEN_JSON_DEPTH 8

// Generations in flight in this process (all connection threads).
static atomic_int g_running;

typedef struct {
    const char *prompt; // NULL when prompt_ids was given (request memory)
    int *prompt_ids;    // NULL when prompt was given (request memory)
    int n_prompt_ids;
    int max_new_tokens;
    float temperature, top_p;
    unsigned long long seed;
    int final; // 1: "final", 0: "base"
} GenParams;

// Where a request's weights and tokenizer come from.
typedef struct {
    char *model_path; // malloc'd; NULL for model_init weights
    int has_init;
    ModelInit init;
    unsigned long long seed; // model_init_random's seed (the recipe's)
    char *tok_path;          // malloc'd; NULL: the byte tokenizer or none
    int bytes_tok;           // 1: the built-in byte tokenizer
} GenSource;

static void source_free(GenSource *s) {
    free(s->model_path);
    free(s->tok_path);
}

static void cjson_delete_void(void *p) {
    cJSON_Delete(p);
}

static void oom(HttpRequest *req) {
    http_reply_error(req, 500, "internal_error", "oom", NULL, "out of memory");
}

// Maps a BsError from resolving, loading or generating onto a reply.
static void reply_err(HttpRequest *req, const char *id, const BsError *err) {
    const char *c = err->code;
    const char *param = err->param[0] ? err->param : NULL;
    if (strcmp(c, "not_found") == 0) {
        http_reply_error(req, 404, "not_found", "job_not_found", "id", "no job with id '%s'", id);
    } else if (strcmp(c, "model_not_found") == 0 || strcmp(c, "tokenizer_not_found") == 0) {
        http_reply_error(req, 404, "not_found", c, param, "%s", err->message);
    } else if (strcmp(c, "job_not_finished") == 0) {
        http_reply_error(req, 409, "conflict", c, param, "%s", err->message);
    } else if (strcmp(c, "model_invalid") == 0 || strcmp(c, "model_unsupported") == 0 ||
               strcmp(c, "tokenizer_mismatch") == 0 || strcmp(c, "invalid_tokenizer") == 0 ||
               strcmp(c, "tokenizer_unsupported") == 0 ||
               strcmp(c, "path_outside_data_root") == 0) {
        // The job's files changed since it ran: nothing the request can fix.
        http_reply_error(req, 409, "conflict", c, param, "%s", err->message);
    } else if (strcmp(c, "prompt_too_long") == 0 || strcmp(c, "invalid_token") == 0 ||
               strcmp(c, "unencodable_text") == 0 || strcmp(c, "invalid_text") == 0 ||
               strcmp(c, "no_tokenizer") == 0) {
        http_reply_error(req, 422, "invalid_request", c, param, "%s", err->message);
    } else if (strcmp(c, "db_busy") == 0 || strcmp(c, "shutting_down") == 0) {
        http_add_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "unavailable", c, NULL, "%s", err->message);
    } else {
        http_reply_error(req, 500, "internal_error", c, param, "%s", err->message);
    }
}

// ---- the body ---------------------------------------------------------------------

// An integral JSON number in [lo, hi] (1e2 counts: JSON has one number type).
static int json_int(const cJSON *v, double lo, double hi, double *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= lo && d <= hi) || d != floor(d)) return -1;
    *out = d;
    return 0;
}

static int bad_param(HttpRequest *req, const char *param, const char *msg) {
    http_reply_error(req, 422, "invalid_request", "invalid_parameter", param, "%s", msg);
    return -1;
}

// Fills p from the body object; -1 after replying 422 naming the key.
static int parse_params(HttpRequest *req, const cJSON *body, GenParams *p) {
    memset(p, 0, sizeof(*p));
    p->max_new_tokens = GEN_DEFAULT_NEW_TOKENS;
    p->top_p = (float)GEN_DEFAULT_TOP_P;
    p->seed = GEN_DEFAULT_SEED;
    p->final = 1;
    int have_prompt = 0, have_ids = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, body) {
        const char *k = v->string ? v->string : "";
        // Every earlier key is a distinct known one (unknown keys end the
        // loop), so this scan is at most a handful of comparisons.
        for (const cJSON *w = body->child; w != v; w = w->next)
            if (w->string && strcmp(w->string, k) == 0) {
                http_reply_error(req, 422, "invalid_request", "duplicate_parameter", k,
                                 "%.64s appears more than once", k);
                return -1;
            }
        int known = strcmp(k, "prompt") == 0 || strcmp(k, "prompt_ids") == 0 ||
                    strcmp(k, "max_new_tokens") == 0 || strcmp(k, "temperature") == 0 ||
                    strcmp(k, "top_p") == 0 || strcmp(k, "seed") == 0 || strcmp(k, "model") == 0;
        if (!known) {
            http_reply_error(req, 422, "invalid_request", "unknown_parameter", k,
                             "unknown key '%.64s' (known: prompt, prompt_ids, max_new_tokens, "
                             "temperature, top_p, seed, model)",
                             k);
            return -1;
        }
        if (cJSON_IsNull(v)) continue; // null: the default
        double d;
        if (strcmp(k, "prompt") == 0) {
            if (!cJSON_IsString(v)) return bad_param(req, k, "prompt must be a string");
            if (strlen(v->valuestring) > GEN_MAX_PROMPT_BYTES) {
                http_reply_error(req, 422, "invalid_request", "prompt_too_long", k,
                                 "prompt is longer than %d bytes", GEN_MAX_PROMPT_BYTES);
                return -1;
            }
            p->prompt = v->valuestring;
            have_prompt = 1;
        } else if (strcmp(k, "prompt_ids") == 0) {
            if (!cJSON_IsArray(v)) return bad_param(req, k, "prompt_ids must be an array of ids");
            int n = cJSON_GetArraySize(v);
            if (n < 1) return bad_param(req, k, "prompt_ids must hold at least one id");
            if (n > GEN_MAX_PROMPT_IDS) {
                http_reply_error(req, 422, "invalid_request", "prompt_too_long", k,
                                 "prompt_ids holds more than %d ids", GEN_MAX_PROMPT_IDS);
                return -1;
            }
            p->prompt_ids = http_alloc(req, (size_t)n * sizeof(int));
            if (!p->prompt_ids) {
                oom(req);
                return -1;
            }
            int i = 0;
            const cJSON *e;
            cJSON_ArrayForEach(e, v) {
                if (json_int(e, 0, INT_MAX, &d) < 0) {
                    http_reply_error(req, 422, "invalid_request", "invalid_parameter", k,
                                     "prompt_ids[%d] is not a non-negative integer id", i);
                    return -1;
                }
                p->prompt_ids[i++] = (int)d;
            }
            p->n_prompt_ids = n;
            have_ids = 1;
        } else if (strcmp(k, "max_new_tokens") == 0) {
            if (json_int(v, 1, GEN_MAX_NEW_TOKENS, &d) < 0)
                return bad_param(req, k, "max_new_tokens must be an integer in [1, 1024]");
            p->max_new_tokens = (int)d;
        } else if (strcmp(k, "temperature") == 0) {
            if (!cJSON_IsNumber(v) ||
                !(v->valuedouble >= 0 && v->valuedouble <= GEN_MAX_TEMPERATURE))
                return bad_param(req, k, "temperature must be a number in [0, 5] (0: greedy)");
            p->temperature = (float)v->valuedouble;
        } else if (strcmp(k, "top_p") == 0) {
            if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= 1))
                return bad_param(req, k, "top_p must be a number in [0, 1]");
            p->top_p = (float)v->valuedouble;
        } else if (strcmp(k, "seed") == 0) {
            if (json_int(v, 0, GEN_MAX_SEED, &d) < 0)
                return bad_param(req, k, "seed must be an integer in [0, 2^53]");
            p->seed = (unsigned long long)d;
        } else { // model
            if (cJSON_IsString(v) && strcmp(v->valuestring, "base") == 0)
                p->final = 0;
            else if (cJSON_IsString(v) && strcmp(v->valuestring, "final") == 0)
                p->final = 1;
            else
                return bad_param(req, k, "model must be \"base\" or \"final\"");
        }
    }
    if (have_prompt && have_ids) {
        http_reply_error(req, 422, "invalid_request", "invalid_parameter", "prompt_ids",
                         "give prompt or prompt_ids, not both");
        return -1;
    }
    if (!have_prompt && !have_ids) {
        http_reply_error(req, 422, "invalid_request", "missing_parameter", "prompt",
                         "prompt (a string, \"\" for none) or prompt_ids is required");
        return -1;
    }
    return 0;
}

// The body as a JSON object (freed with the request); NULL after replying.
static cJSON *req_body(HttpRequest *req) {
    HttpBodyFormat fmt;
    if (http_body_format(req, &fmt) < 0) return NULL;
    if (fmt != HTTP_BODY_JSON) {
        http_reply_error(req, 415, "invalid_request", "unsupported_media_type", "Content-Type",
                         "the body must be application/json");
        return NULL;
    }
    if (http_body_check(req, fmt, GEN_JSON_DEPTH) < 0) return NULL;
    size_t len;
    const char *body = http_body(req, &len);
    cJSON *o = cJSON_ParseWithLength(body, len);
    if (!o) {
        oom(req); // the syntax was checked above
        return NULL;
    }
    if (http_defer(req, cjson_delete_void, o) < 0) {
        oom(req);
        return NULL;
    }
    return o;
}

// ---- the job's model and tokenizer ---------------------------------------------------

// A recipe path (stored as submitted: relative to data_root) resolved with
// every symbolic link followed; it must still lie inside data_root, as the
// worker required when the job ran. *out is malloc'd (caller frees).
static int confine(const char *root, const char *field, const char *missing_code, const char *p,
                   char **out, BsError *err) {
    char full[PATH_MAX], real[PATH_MAX];
    int n = p[0] == '/' || !root ? snprintf(full, sizeof(full), "%s", p)
                                 : snprintf(full, sizeof(full), "%s/%s", root, p);
    if (n < 0 || (size_t)n >= sizeof(full))
        return bs_fail(err, missing_code, field, "the job's %s path is too long", field);
    if (!realpath(full, real)) {
        if (errno == ENOENT || errno == ENOTDIR)
            return bs_fail(err, missing_code, field, "the job's %s %s no longer exists", field, p);
        return bs_fail(err, "io", field, "the job's %s %s cannot be resolved: %s", field, p,
                       strerror(errno));
    }
    if (root) {
        size_t rl = strlen(root);
        int inside = (rl == 1 && root[0] == '/') ||
                     (strncmp(real, root, rl) == 0 && (real[rl] == '\0' || real[rl] == '/'));
        if (!inside)
            return bs_fail(err, "path_outside_data_root", field,
                           "the job's %s %s now resolves to %s, outside the data root", field, p,
                           real);
    }
    // A Hugging Face folder's files must stay inside as well (preflight's rule).
    char bad[PATH_MAX];
    if (!preflight_folder_confined(root, real, bad, sizeof(bad)))
        return bs_fail(err, "path_outside_data_root", field,
                       "the job's %s %s holds %s, which leads outside the data root or is not a "
                       "regular file",
                       field, p, bad);
    *out = strdup(real);
    if (!*out) return bs_fail(err, "oom", field, "out of memory");
    return 0;
}

// The final model a succeeded job left (malloc'd into *out): final/model.bin,
// or the Hugging Face folder final/ (jobref_model_path).
static int job_final_model(const ApiContext *api, const DbJob *job, const char *field,
                           const char *what, char **out, BsError *err) {
    if (job->status != JOB_SUCCEEDED)
        return bs_fail(err, "job_not_finished", field,
                       "%s %s is %s: its final model exists once it has succeeded", what, job->id,
                       db_status_name(job->status));
    char *dir =
        job->output_dir ? strdup(job->output_dir) : job_default_output_dir(api->state_dir, job->id);
    char *path = dir ? jobref_model_path(dir) : NULL;
    free(dir);
    if (!path) return bs_fail(err, "oom", field, "out of memory");
    if (access(path, R_OK) != 0) {
        bs_fail(err, "model_not_found", field, "%s %s succeeded but its model %s is gone", what,
                job->id, path);
        free(path);
        return -1;
    }
    *out = path;
    return 0;
}

// The model the job started from into *out (malloc'd; NULL for model_init):
// a checkpoint or Hugging Face folder in data_root, or a `job:ID`
// dependency's final model.
static int base_model_path(const ApiContext *api, Db *db, const Recipe *r, char **out,
                           BsError *err) {
    char dep_id[DB_ID_SIZE];
    *out = NULL;
    if (r->model && jobref_parse(r->model, dep_id)) {
        DbJob dep;
        if (db_job_load(db, dep_id, &dep, err) < 0) {
            if (strcmp(err->code, "not_found") == 0)
                bs_fail(err, "model_not_found", "model",
                        "the job started from job %s, which no longer exists", dep_id);
            return -1;
        }
        int rc = job_final_model(api, &dep, "model", "the job's model comes from job", out, err);
        db_job_free(&dep);
        return rc;
    }
    if (r->model) return confine(api->data_root, "model", "model_not_found", r->model, out, err);
    if (r->has_model_init) return 0;
    return bs_fail(err, "model_not_found", "model", "the job's recipe names no model");
}

// path (malloc'd) when it is a Hugging Face model folder with its own
// tokenizer, else NULL.
static char *folder_tokenizer(const char *path) {
    return path && hf_is_model_dir(path) && tok_dir_has_hf(path) ? strdup(path) : NULL;
}

// Fills src for the job: "final" is its final model (final/model.bin or the
// Hugging Face folder final/); "base" is what the worker started from (a
// checkpoint or folder in data_root, a `job:ID` dependency's final model, or
// model_init weights regenerated from the recipe's seed). The tokenizer
// follows train.c: the recipe's, else the byte tokenizer for model_init
// without vocab_size, else the starting Hugging Face folder's own (which an
// HF export copies into final/), else none (pre-tokenized data).
static int resolve_source(const ApiContext *api, Db *db, const DbJob *job, const Recipe *r,
                          int final, GenSource *src, BsError *err) {
    memset(src, 0, sizeof(*src));
    if (r->tokenizer) {
        if (confine(api->data_root, "tokenizer", "tokenizer_not_found", r->tokenizer,
                    &src->tok_path, err) < 0)
            goto fail;
    } else if (recipe_uses_byte_tokenizer(r)) {
        src->bytes_tok = 1;
    }
    int want_folder_tok = !src->tok_path && !src->bytes_tok;
    if (final) {
        if (job_final_model(api, job, "model", "job", &src->model_path, err) < 0) goto fail;
        if (want_folder_tok) {
            src->tok_path = folder_tokenizer(src->model_path);
            if (!src->tok_path && hf_is_model_dir(src->model_path) == 0) {
                // A llama2.c export: the starting folder's tokenizer, when it is still there.
                char *base = NULL;
                BsError ignored;
                if (base_model_path(api, db, r, &base, &ignored) == 0)
                    src->tok_path = folder_tokenizer(base);
                free(base);
            }
        }
        return 0;
    }
    if (base_model_path(api, db, r, &src->model_path, err) < 0) goto fail;
    if (src->model_path) {
        if (want_folder_tok) src->tok_path = folder_tokenizer(src->model_path);
    } else {
        src->has_init = 1;
        src->init = r->model_init;
        src->seed = r->seed;
    }
    return 0;
fail:
    source_free(src);
    memset(src, 0, sizeof(*src));
    return -1;
}

// Loads the weights: *params is malloc'd by ckpt_read_model, or points into
// *init (a frozen Model holding the model_init weights); the caller frees both.
static int load_weights(const GenSource *src, ModelConfig *cfg, float **params, Model **init,
                        BsError *err) {
    *params = NULL;
    *init = NULL;
    if (!src->has_init) {
        if (ckpt_read_model(src->model_path, cfg, params, err) < 0) {
            if (!err->param[0]) snprintf(err->param, sizeof(err->param), "model");
            return -1;
        }
        return 0;
    }
    recipe_model_init_config(&src->init, cfg);
    if (model_create(init, cfg, 0, err) < 0) return -1;
    model_init_random(*init, src->seed);
    *params = model_params(*init);
    return 0;
}

static int load_tokenizer(const GenSource *src, const ModelConfig *cfg, Tokenizer **tok,
                          BsError *err) {
    *tok = NULL;
    if (src->bytes_tok) {
        if (cfg->vocab_size != TOK_BYTES_VOCAB)
            return bs_fail(err, "tokenizer_mismatch", "tokenizer",
                           "the byte tokenizer has %d ids but the model's vocab_size is %d",
                           TOK_BYTES_VOCAB, cfg->vocab_size);
        return tok_create_bytes(tok, err);
    }
    if (src->tok_path && tok_load(tok, src->tok_path, cfg->vocab_size, err) < 0) {
        if (!err->param[0]) snprintf(err->param, sizeof(err->param), "tokenizer");
        return -1;
    }
    return 0;
}

// ---- text ----------------------------------------------------------------------------

// s with every byte outside a valid UTF-8 sequence replaced by U+FFFD, so
// the reply stays JSON (an untrained model emits arbitrary bytes). malloc'd.
static char *utf8_replace(const char *s, size_t n) {
    StrBuf sb;
    sb_init(&sb);
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq_len((const unsigned char *)s + i, n - i);
        if (l == 0) {
            sb_append(&sb, "\xEF\xBF\xBD", 3);
            i++;
        } else {
            sb_append(&sb, s + i, l);
            i += l;
        }
    }
    sb_append(&sb, "", 0); // an empty result still needs its buffer
    return sb_take(&sb, NULL);
}

// The completion's text: for llama2.c and HF tokenizers, decode(prompt +
// ids) minus decode(prompt), so pieces that depend on what precedes them
// (the space run.c strips after BOS) come out as in the whole text; for the
// byte tokenizer each id is its own byte, and byte 0 (which a C string
// cannot carry) becomes U+FFFD. malloc'd; NULL with err.
static char *completion_text(const Tokenizer *tok, int bytes_tok, const int *prompt, int n_prompt,
                             const int *ids, int n, BsError *err) {
    char *raw = NULL;
    size_t raw_len = 0;
    if (bytes_tok) {
        StrBuf sb;
        sb_init(&sb);
        for (int i = 0, start = 0; i <= n; i++) {
            if (i < n && ids[i] != 0) continue;
            char *part = tok_decode(tok, ids + start, i - start, err);
            if (!part) {
                sb_free(&sb);
                return NULL;
            }
            sb_puts(&sb, part);
            free(part);
            if (i < n) sb_append(&sb, "\xEF\xBF\xBD", 3);
            start = i + 1;
        }
        sb_append(&sb, "", 0);
        raw = sb_take(&sb, &raw_len);
        if (!raw) {
            bs_fail(err, "oom", "", "out of memory");
            return NULL;
        }
    } else {
        size_t total = (size_t)n_prompt + (size_t)n;
        int *all = malloc((total ? total : 1) * sizeof(int));
        if (!all) {
            bs_fail(err, "oom", "", "out of memory");
            return NULL;
        }
        memcpy(all, prompt, (size_t)n_prompt * sizeof(int));
        if (n) memcpy(all + n_prompt, ids, (size_t)n * sizeof(int));
        char *full = tok_decode(tok, all, (int)total, err);
        char *head = full ? tok_decode(tok, prompt, n_prompt, err) : NULL;
        free(all);
        if (!full || !head) {
            free(full);
            free(head);
            return NULL;
        }
        size_t hl = strlen(head);
        if (strncmp(full, head, hl) == 0) {
            memmove(full, full + hl, strlen(full + hl) + 1);
            raw = full;
        } else { // a decoder that rewrote the boundary: the ids on their own
            free(full);
            raw = tok_decode(tok, ids, n, err);
            if (!raw) {
                free(head);
                return NULL;
            }
        }
        free(head);
        raw_len = strlen(raw);
    }
    char *text = utf8_replace(raw, raw_len);
    free(raw);
    if (!text) bs_fail(err, "oom", "", "out of memory");
    return text;
}

static cJSON *int_array(const int *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) {
        cJSON *x = cJSON_CreateNumber(v[i]);
        if (!x || !cJSON_AddItemToArray(a, x)) {
            cJSON_Delete(x);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

// ---- generation ------------------------------------------------------------------------

// At most GEN_MAX_CONCURRENT generations at once: 1 when a slot was taken.
static int slot_acquire(void) {
    int cur = atomic_load(&g_running);
    while (cur < GEN_MAX_CONCURRENT)
        if (atomic_compare_exchange_weak(&g_running, &cur, cur + 1)) return 1;
    return 0;
}

static void slot_release(void) {
    atomic_fetch_sub(&g_running, 1);
}

typedef struct {
    const ApiContext *api;
    int stopped;
} Watch;

// Stops a generation once shutdown begins: http_server_stop joins this thread.
static int watch_token(void *user, int id) {
    (void)id;
    Watch *w = user;
    if (w->api->ctl.accepting && !w->api->ctl.accepting(w->api->ctl.user)) {
        w->stopped = 1;
        return 1;
    }
    return 0;
}

typedef struct {
    ModelConfig cfg;
    float *params; // owned unless init
    Model *init;
    Tokenizer *tok;
    int *prompt; // malloc'd unless borrowed from GenParams
    int prompt_owned;
    int n_prompt;
    int *ids;
    int n_ids;
    char *text;
} GenRun;

static void run_free(GenRun *g) {
    if (g->init)
        model_free(g->init);
    else
        free(g->params);
    tok_free(g->tok);
    if (g->prompt_owned) free(g->prompt);
    free(g->ids);
    free(g->text);
}

// Loads, encodes, samples and decodes; fills g (run_free). -1 with err.
static int run_generation(const ApiContext *api, const char *job_id, const GenSource *src,
                          const GenParams *p, GenRun *g, const char **finish, BsError *err) {
    if (load_weights(src, &g->cfg, &g->params, &g->init, err) < 0) return -1;
    if (load_tokenizer(src, &g->cfg, &g->tok, err) < 0) return -1;
    const char *pname = p->prompt ? "prompt" : "prompt_ids";
    if (p->prompt) {
        // BOS unless the prompt already starts with it, as the training data.
        if (tok_encode_bos(g->tok, p->prompt, 0, &g->prompt, &g->n_prompt, err) < 0) {
            snprintf(err->param, sizeof(err->param), "prompt");
            return -1;
        }
        g->prompt_owned = 1;
        if (g->n_prompt == 0)
            return bs_fail(err, "invalid_token", "prompt",
                           "the prompt encodes to no ids and the tokenizer has no BOS");
    } else {
        g->prompt = p->prompt_ids;
        g->n_prompt = p->n_prompt_ids;
        for (int i = 0; i < g->n_prompt; i++)
            if (g->prompt[i] >= g->cfg.vocab_size)
                return bs_fail(err, "invalid_token", "prompt_ids",
                               "prompt_ids[%d] = %d is outside the model's vocabulary 0..%d", i,
                               g->prompt[i], g->cfg.vocab_size - 1);
    }
    if (g->n_prompt >= g->cfg.seq_len)
        return bs_fail(err, "prompt_too_long", pname,
                       "the prompt is %d tokens; the model of job %s holds %d positions, so "
                       "nothing is left to generate",
                       g->n_prompt, job_id, g->cfg.seq_len);
    Watch watch = {api, 0};
    int bos = g->tok ? tok_bos(g->tok) : 0;
    GenerateOptions opt = {
        .max_new_tokens = p->max_new_tokens,
        .temperature = p->temperature,
        .top_p = p->top_p,
        .seed = p->seed,
        // The data appends EOS after every completion, so a tuned model ends there.
        .eos_id = g->tok ? tok_eos(g->tok) : -1,
        .bos_id = g->tok ? bos : 0, // -1: a tokenizer without BOS, nothing stops there
        .on_token = watch_token,
        .user = &watch,
    };
    if (generate(&g->cfg, g->params, g->prompt, g->n_prompt, &opt, &g->ids, &g->n_ids, err) < 0)
        return -1;
    if (watch.stopped) return bs_fail(err, "shutting_down", "", "the daemon is shutting down");
    int room = g->cfg.seq_len - g->n_prompt;
    int limit = p->max_new_tokens < room ? p->max_new_tokens : room;
    *finish = g->n_ids < limit ? "eos" : "length";
    if (g->tok) {
        g->text =
            completion_text(g->tok, src->bytes_tok, g->prompt, g->n_prompt, g->ids, g->n_ids, err);
        if (!g->text) return -1;
    }
    return 0;
}

void api_job_generate(HttpRequest *req, void *user) {
    ApiContext *api = user;
    const char *id = http_path_param(req, "id");
    if (!id || !db_job_id_valid(id)) {
        http_reply_error(req, 404, "not_found", "job_not_found", "id", "no job with id '%.40s'",
                         id ? id : "");
        return;
    }
    cJSON *body = req_body(req);
    if (!body) return;
    GenParams p;
    if (parse_params(req, body, &p) < 0) return;

    // The job and its sources, with a pooled connection given back before
    // the CPU work starts.
    Db *db = dbpool_acquire_or_reply(api->pool, req);
    if (!db) return;
    BsError err;
    bs_error_clear(&err);
    DbJob job;
    Recipe r;
    GenSource src;
    int have_job = 0, have_recipe = 0, rc = -1;
    if (db_job_load(db, id, &job, &err) < 0) goto resolved;
    have_job = 1;
    if (recipe_parse(job.recipe_json, strlen(job.recipe_json), RECIPE_JSON, &r, &err) < 0)
        goto resolved;
    have_recipe = 1;
    rc = resolve_source(api, db, &job, &r, p.final, &src, &err);
resolved:
    dbpool_release(api->pool, db);
    if (have_recipe) recipe_free(&r);
    if (have_job) db_job_free(&job);
    if (rc < 0) {
        reply_err(req, id, &err);
        return;
    }
    if (p.prompt && !src.tok_path && !src.bytes_tok) {
        source_free(&src);
        http_reply_error(req, 422, "invalid_request", "no_tokenizer", "prompt",
                         "job %s was trained on token ids without a tokenizer: send prompt_ids "
                         "instead of prompt",
                         id);
        return;
    }
    if (!slot_acquire()) {
        source_free(&src);
        http_add_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "unavailable", "generation_busy", NULL,
                         "%d generations are running; retry shortly", GEN_MAX_CONCURRENT);
        return;
    }
    GenRun g;
    memset(&g, 0, sizeof(g));
    const char *finish = "length";
    bs_error_clear(&err);
    rc = run_generation(api, id, &src, &p, &g, &finish, &err);
    slot_release();
    source_free(&src);
    if (rc < 0) {
        run_free(&g);
        reply_err(req, id, &err);
        return;
    }
    cJSON *out = cJSON_CreateObject();
    cJSON *pids = int_array(g.prompt, g.n_prompt);
    cJSON *ids = int_array(g.ids, g.n_ids);
    if (!out || !pids || !ids) {
        cJSON_Delete(out);
        cJSON_Delete(pids);
        cJSON_Delete(ids);
        run_free(&g);
        oom(req);
        return;
    }
    int ok = cJSON_AddStringToObject(out, "job_id", id) &&
             cJSON_AddStringToObject(out, "model", p.final ? "final" : "base") &&
             (p.prompt ? cJSON_AddStringToObject(out, "prompt", p.prompt)
                       : cJSON_AddNullToObject(out, "prompt")) &&
             (g.text ? cJSON_AddStringToObject(out, "text", g.text)
                     : cJSON_AddNullToObject(out, "text")) &&
             cJSON_AddItemToObject(out, "prompt_ids", pids);
    if (!ok) cJSON_Delete(pids);
    ok = ok && cJSON_AddItemToObject(out, "ids", ids);
    if (!ok) cJSON_Delete(ids);
    ok = ok && cJSON_AddStringToObject(out, "finish_reason", finish);
    run_free(&g);
    if (!ok) {
        cJSON_Delete(out);
        oom(req);
        return;
    }
    http_reply_json(req, 200, out);
}
