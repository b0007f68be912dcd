// recipe.c — parses and validates a training recipe (JSON via cJSON, YAML via
// libyaml turned into the same cJSON tree), and writes its canonical JSON.
//
// YAML is read as data only: scalars are typed with the YAML 1.2 core schema
// (quoted scalars stay strings), anchors and aliases are refused outright (no
// billion-laughs expansion), nesting is capped at RECIPE_MAX_DEPTH and
// duplicate keys are errors in both syntaxes. Error codes: "invalid_recipe"
// for syntax, unknown keys, wrong types and missing keys; "invalid_hyperparameter"
// for values of the right type outside their allowed range or set.
#include "recipe.h"
#include "tok.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define RECIPE_MAX_DEPTH 32
#define RECIPE_MAX_KEYS 256                // keys in one mapping; bounds the duplicate-key scan
#define RECIPE_MAX_PATH 4096               // bytes in a path string
#define RECIPE_MAX_SEED 9007199254740991.0 // 2^53 - 1: the largest exact JSON integer

static const char *const method_names[] = {"sft", "dpo", "orpo", NULL};
static const char *const data_names[] = {"preference", "sft", NULL};
static const char *const loss_names[] = {"sigmoid", "ipo", "hinge", "robust", NULL};
static const char *const sched_names[] = {"linear", "constant", "cosine", NULL};
static const char *const trunc_names[] = {"keep_end", "keep_start", NULL};
static const char *const bad_rows_names[] = {"skip", "error", NULL};
// Index = ChatTemplate value (chat.h's order).
static const char *const chat_names[] = {"auto", "plain", "chatml", "llama2", "zephyr", NULL};
static const char *const output_names[] = {"auto", "llama2c", "hf", NULL};

const char *recipe_method_name(Method m) {
    if ((int)m < 0 || (int)m > METHOD_ORPO) return "unknown";
    return method_names[m];
}

const char *recipe_output_format_name(OutputFormat f) {
    if ((int)f < 0 || (int)f > OUTPUT_HF) return "unknown";
    return output_names[f];
}

const char *recipe_loss_type_name(DpoLossType t) {
    if ((int)t < 0 || (int)t > LOSS_ROBUST) return "unknown";
    return loss_names[t];
}

void recipe_defaults(Recipe *r, Method method) {
    memset(r, 0, sizeof *r);
    r->method = method;
    r->data = method == METHOD_SFT ? DATA_SFT : DATA_PREFERENCE;
    r->beta = 0.1;
    r->loss_type = LOSS_SIGMOID;
    r->label_smoothing = 0.0;
    // TRL: DPOConfig / ORPOConfig default to 1e-6, SFTConfig to 2e-5.
    r->learning_rate = method == METHOD_SFT ? 2e-5 : 1e-6;
    r->per_device_train_batch_size = 8;
    r->per_device_eval_batch_size = 8;
    r->gradient_accumulation_steps = 1;
    r->num_train_epochs = 3.0;
    r->max_steps = -1;
    r->lr_scheduler_type = SCHED_LINEAR;
    r->adam_beta1 = 0.9;
    r->adam_beta2 = 0.999;
    r->adam_epsilon = 1e-8;
    r->max_grad_norm = 1.0;
    r->seed = 42;
    r->shuffle = 1;
    r->logging_steps = 10;
    r->eval_steps = 0;
    r->save_steps = 500;
    r->max_length = 1024;
    r->max_prompt_length = 512;
    r->truncation_mode = TRUNC_KEEP_END;
    r->bad_rows = BAD_ROWS_SKIP;
}

void recipe_free(Recipe *r) {
    if (!r) return;
    free(r->model);
    free(r->tokenizer);
    free(r->reference_model);
    free(r->train_file);
    free(r->eval_file);
    free(r->output_dir);
    r->model = r->tokenizer = r->reference_model = NULL;
    r->train_file = r->eval_file = r->output_dir = NULL;
}

// ---------------------------------------------------------------------------
// YAML -> cJSON

// YAML 1.2 core schema resolution of a plain scalar. Returns a new cJSON node
// or NULL on allocation failure.
static int is_digits(const char *s, size_t n, int base) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = base == 8 ? (c >= '0' && c <= '7')
                 : base == 16
                     ? ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
                     : (c >= '0' && c <= '9');
        if (!ok) return 0;
    }
    return 1;
}

// [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
static int is_core_float(const char *s, size_t n) {
    size_t i = 0, digits = 0;
    if (i < n && (s[i] == '-' || s[i] == '+')) i++;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++, digits++;
    if (i < n && s[i] == '.') {
        i++;
        size_t frac = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, frac++;
        if (digits == 0 && frac == 0) return 0;
    } else if (digits == 0) {
        return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+')) i++;
        size_t exp = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, exp++;
        if (exp == 0) return 0;
    }
    return i == n;
}

static int str_in(const char *s, size_t n, const char *const *set) {
    for (; *set; set++)
        if (strlen(*set) == n && memcmp(s, *set, n) == 0) return 1;
    return 0;
}

static cJSON *yaml_plain_scalar(const char *s, size_t n) {
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const trues[] = {"true", "True", "TRUE", NULL};
    static const char *const falses[] = {"false", "False", "FALSE", NULL};
    static const char *const infs[] = {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", NULL};
    static const char *const ninfs[] = {"-.inf", "-.Inf", "-.INF", NULL};
    static const char *const nans[] = {".nan", ".NaN", ".NAN", NULL};
    if (str_in(s, n, nulls)) return cJSON_CreateNull();
    if (str_in(s, n, trues)) return cJSON_CreateTrue();
    if (str_in(s, n, falses)) return cJSON_CreateFalse();
    if (str_in(s, n, infs)) return cJSON_CreateNumber(INFINITY);
    if (str_in(s, n, ninfs)) return cJSON_CreateNumber(-INFINITY);
    if (str_in(s, n, nans)) return cJSON_CreateNumber(NAN);
    // The scalar is NUL-terminated by libyaml, so strto* stop inside it.
    if (n > 2 && s[0] == '0' && s[1] == 'o' && is_digits(s + 2, n - 2, 8))
        return cJSON_CreateNumber((double)strtoull(s + 2, NULL, 8));
    if (n > 2 && s[0] == '0' && s[1] == 'x' && is_digits(s + 2, n - 2, 16))
        return cJSON_CreateNumber((double)strtoull(s + 2, NULL, 16));
    size_t sign = (n > 0 && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
    if (is_digits(s + sign, n - sign, 10) || is_core_float(s, n))
        return cJSON_CreateNumber(strtod(s, NULL)); // overflow gives inf: refused later
    return cJSON_CreateString(s);
}

typedef struct {
    yaml_parser_t parser;
    BsError *err;
} YamlReader;

static int yaml_fail_parser(YamlReader *y) {
    yaml_parser_t *p = &y->parser;
    return bs_fail(y->err, "invalid_recipe", "", "YAML syntax error at line %zu column %zu: %s%s%s",
                   (size_t)p->problem_mark.line + 1, (size_t)p->problem_mark.column + 1,
                   p->problem ? p->problem : "unknown error", p->context ? " " : "",
                   p->context ? p->context : "");
}

static int yaml_next(YamlReader *y, yaml_event_t *ev) {
    if (!yaml_parser_parse(&y->parser, ev)) return yaml_fail_parser(y);
    return 0;
}

static int yaml_refuse_anchor(YamlReader *y, const yaml_event_t *ev, const yaml_char_t *anchor) {
    return bs_fail(y->err, "invalid_recipe", "",
                   "YAML anchor '&%s' at line %zu is not allowed (anchors and aliases are refused)",
                   (const char *)anchor, (size_t)ev->start_mark.line + 1);
}

// Explicit tags are refused except !!str (which keeps the scalar a string):
// the recipe schema is fixed, so a tag can only be a mistake or an attack.
static int yaml_check_tag(YamlReader *y, const yaml_event_t *ev, const yaml_char_t *tag,
                          int *force_str) {
    *force_str = 0;
    if (!tag) return 0;
    if (strcmp((const char *)tag, YAML_STR_TAG) == 0) {
        *force_str = 1;
        return 0;
    }
    // A lone "!" is the non-specific tag of a quoted scalar in some emitters.
    if (strcmp((const char *)tag, "!") == 0) {
        *force_str = 1;
        return 0;
    }
    return bs_fail(y->err, "invalid_recipe", "", "YAML tag '%s' at line %zu is not supported",
                   (const char *)tag, (size_t)ev->start_mark.line + 1);
}

// Builds the node that starts with *ev (consumed: deleted here, whatever the
// outcome). *out is owned by the caller on success.
static int yaml_node(YamlReader *y, yaml_event_t *ev, int depth, cJSON **out) {
    cJSON *node = NULL;
    yaml_event_t child;
    int force_str = 0;
    *out = NULL;
    if (depth > RECIPE_MAX_DEPTH) {
        bs_fail(y->err, "invalid_recipe", "", "YAML nesting deeper than %d levels at line %zu",
                RECIPE_MAX_DEPTH, (size_t)ev->start_mark.line + 1);
        goto fail;
    }
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        bs_fail(y->err, "invalid_recipe", "",
                "YAML alias '*%s' at line %zu is not allowed (anchors and aliases are refused)",
                (const char *)ev->data.alias.anchor, (size_t)ev->start_mark.line + 1);
        goto fail;
    case YAML_SCALAR_EVENT: {
        if (ev->data.scalar.anchor) {
            yaml_refuse_anchor(y, ev, ev->data.scalar.anchor);
            goto fail;
        }
        if (yaml_check_tag(y, ev, ev->data.scalar.tag, &force_str) < 0) goto fail;
        const char *s = (const char *)ev->data.scalar.value;
        size_t n = ev->data.scalar.length;
        if (memchr(s, '\0', n)) {
            bs_fail(y->err, "invalid_recipe", "", "YAML scalar at line %zu contains a NUL byte",
                    (size_t)ev->start_mark.line + 1);
            goto fail;
        }
        if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !force_str)
            node = yaml_plain_scalar(s, n);
        else
            node = cJSON_CreateString(s);
        if (!node) goto oom;
        break;
    }
    case YAML_SEQUENCE_START_EVENT: {
        if (ev->data.sequence_start.anchor) {
            yaml_refuse_anchor(y, ev, ev->data.sequence_start.anchor);
            goto fail;
        }
        if (yaml_check_tag(y, ev, ev->data.sequence_start.tag, &force_str) < 0) goto fail;
        if (force_str) {
            bs_fail(y->err, "invalid_recipe", "", "YAML tag !!str on a sequence at line %zu",
                    (size_t)ev->start_mark.line + 1);
            goto fail;
        }
        node = cJSON_CreateArray();
        if (!node) goto oom;
        for (;;) {
            if (yaml_next(y, &child) < 0) goto fail;
            if (child.type == YAML_SEQUENCE_END_EVENT) {
                yaml_event_delete(&child);
                break;
            }
            cJSON *item;
            if (yaml_node(y, &child, depth + 1, &item) < 0) goto fail;
            cJSON_AddItemToArray(node, item);
        }
        break;
    }
    case YAML_MAPPING_START_EVENT: {
        if (ev->data.mapping_start.anchor) {
            yaml_refuse_anchor(y, ev, ev->data.mapping_start.anchor);
            goto fail;
        }
        if (yaml_check_tag(y, ev, ev->data.mapping_start.tag, &force_str) < 0) goto fail;
        if (force_str) {
            bs_fail(y->err, "invalid_recipe", "", "YAML tag !!str on a mapping at line %zu",
                    (size_t)ev->start_mark.line + 1);
            goto fail;
        }
        node = cJSON_CreateObject();
        if (!node) goto oom;
        int n_keys = 0;
        for (;;) {
            if (yaml_next(y, &child) < 0) goto fail;
            if (child.type == YAML_MAPPING_END_EVENT) {
                yaml_event_delete(&child);
                break;
            }
            if (child.type != YAML_SCALAR_EVENT) {
                if (child.type == YAML_ALIAS_EVENT) {
                    yaml_node(y, &child, depth + 1, &(cJSON *){NULL}); // fills the alias error
                } else {
                    bs_fail(y->err, "invalid_recipe", "",
                            "YAML key at line %zu must be a plain string",
                            (size_t)child.start_mark.line + 1);
                    yaml_event_delete(&child);
                }
                goto fail;
            }
            if (child.data.scalar.anchor) {
                yaml_refuse_anchor(y, &child, child.data.scalar.anchor);
                yaml_event_delete(&child);
                goto fail;
            }
            const char *key = (const char *)child.data.scalar.value;
            size_t key_line = (size_t)child.start_mark.line + 1;
            if (memchr(key, '\0', child.data.scalar.length)) {
                bs_fail(y->err, "invalid_recipe", "", "YAML key at line %zu contains a NUL byte",
                        key_line);
                yaml_event_delete(&child);
                goto fail;
            }
            if (++n_keys > RECIPE_MAX_KEYS) {
                bs_fail(y->err, "invalid_recipe", "", "more than %d keys in one mapping",
                        RECIPE_MAX_KEYS);
                yaml_event_delete(&child);
                goto fail;
            }
            if (cJSON_GetObjectItemCaseSensitive(node, key)) {
                bs_fail(y->err, "invalid_recipe", key, "duplicate key '%s' at line %zu", key,
                        key_line);
                yaml_event_delete(&child);
                goto fail;
            }
            char *key_copy = strdup(key);
            yaml_event_delete(&child);
            if (!key_copy) goto oom;
            yaml_event_t value_ev;
            cJSON *value;
            if (yaml_next(y, &value_ev) < 0 || yaml_node(y, &value_ev, depth + 1, &value) < 0) {
                free(key_copy);
                goto fail;
            }
            cJSON_AddItemToObject(node, key_copy, value);
            free(key_copy);
        }
        break;
    }
    default:
        bs_fail(y->err, "invalid_recipe", "", "unexpected YAML event at line %zu",
                (size_t)ev->start_mark.line + 1);
        goto fail;
    }
    yaml_event_delete(ev);
    *out = node;
    return 0;
oom:
    bs_fail(y->err, "io", "", "out of memory while reading the recipe");
fail:
    yaml_event_delete(ev);
    cJSON_Delete(node);
    return -1;
}

// One YAML document -> cJSON (NULL document -> JSON null). Several documents
// in one recipe are refused.
static int yaml_to_cjson(const char *text, size_t len, cJSON **out, BsError *err) {
    YamlReader y = {.err = err};
    yaml_event_t ev;
    cJSON *root = NULL;
    *out = NULL;
    if (!yaml_parser_initialize(&y.parser))
        return bs_fail(err, "io", "", "out of memory while reading the recipe");
    yaml_parser_set_input_string(&y.parser, (const unsigned char *)text, len);
    if (yaml_next(&y, &ev) < 0) goto fail; // STREAM_START
    yaml_event_delete(&ev);
    if (yaml_next(&y, &ev) < 0) goto fail;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev);
        yaml_parser_delete(&y.parser);
        *out = NULL;
        return 0; // empty stream: the caller reports an empty recipe
    }
    yaml_event_delete(&ev); // DOCUMENT_START
    if (yaml_next(&y, &ev) < 0) goto fail;
    if (yaml_node(&y, &ev, 1, &root) < 0) goto fail;
    if (yaml_next(&y, &ev) < 0) goto fail; // DOCUMENT_END
    yaml_event_delete(&ev);
    if (yaml_next(&y, &ev) < 0) goto fail;
    if (ev.type != YAML_STREAM_END_EVENT) {
        bs_fail(err, "invalid_recipe", "",
                "a recipe is one YAML document; another starts at line %zu",
                (size_t)ev.start_mark.line + 1);
        yaml_event_delete(&ev);
        goto fail;
    }
    yaml_event_delete(&ev);
    yaml_parser_delete(&y.parser);
    *out = root;
    return 0;
fail:
    cJSON_Delete(root);
    yaml_parser_delete(&y.parser);
    return -1;
}

// ---------------------------------------------------------------------------
// JSON

// cJSON silently truncates a string at an escaped NUL, which would change the
// meaning of a path; refuse "\u0000" up front.
static int json_has_escaped_nul(const char *s, size_t n) {
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '\\') continue;
        if (s[i + 1] == 'u' && i + 5 < n && s[i + 2] == '0' && s[i + 3] == '0' && s[i + 4] == '0' &&
            s[i + 5] == '0')
            return 1;
        i++; // skip the escaped character (so "\\\\u0000" is not a NUL)
    }
    return 0;
}

// Depth, per-object key count and duplicate keys, which cJSON accepts.
static int json_check_tree(const cJSON *node, int depth, BsError *err) {
    if (depth > RECIPE_MAX_DEPTH)
        return bs_fail(err, "invalid_recipe", "", "JSON nesting deeper than %d levels",
                       RECIPE_MAX_DEPTH);
    if (!cJSON_IsObject(node) && !cJSON_IsArray(node)) return 0;
    int n = 0;
    for (const cJSON *c = node->child; c; c = c->next) {
        if (++n > RECIPE_MAX_KEYS)
            return bs_fail(err, "invalid_recipe", "", "more than %d entries in one object or array",
                           RECIPE_MAX_KEYS);
        if (cJSON_IsObject(node)) {
            for (const cJSON *d = node->child; d != c; d = d->next)
                if (strcmp(d->string, c->string) == 0)
                    return bs_fail(err, "invalid_recipe", c->string, "duplicate key '%s'",
                                   c->string);
        }
        if (json_check_tree(c, depth + 1, err) < 0) return -1;
    }
    return 0;
}

static int json_to_cjson(const char *text, size_t len, cJSON **out, BsError *err) {
    const char *end = NULL;
    *out = NULL;
    if (json_has_escaped_nul(text, len))
        return bs_fail(err, "invalid_recipe", "", "JSON strings must not contain \\u0000");
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        size_t line = 1, col = 1;
        const char *stop = (end && end >= text && end <= text + len) ? end : text;
        for (const char *p = text; p < stop; p++) {
            if (*p == '\n')
                line++, col = 1;
            else
                col++;
        }
        return bs_fail(err, "invalid_recipe", "", "JSON syntax error at line %zu column %zu", line,
                       col);
    }
    // Anything but whitespace after the value is an error, as in a strict parser.
    for (const char *p = end; p && p < text + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            cJSON_Delete(root);
            return bs_fail(err, "invalid_recipe", "", "trailing characters after the JSON object");
        }
    }
    if (json_check_tree(root, 1, err) < 0) {
        cJSON_Delete(root);
        return -1;
    }
    *out = root;
    return 0;
}

// ---------------------------------------------------------------------------
// Validation

typedef enum { K_STR, K_INT, K_NUM, K_BOOL, K_SEED, K_ENUM, K_MODEL_INIT, K_RECIPE } KeyType;

typedef struct {
    const char *name;
    KeyType type;
    size_t off;
    double lo, hi;            // numeric range
    int lo_open, hi_open;     // 1: bound excluded
    const char *const *names; // K_ENUM values, index = enum value
} KeySpec;

#define F(field) offsetof(Recipe, field)
static const KeySpec keys[] = {
    {"method", K_ENUM, F(method), 0, 0, 0, 0, method_names},
    {"data", K_ENUM, F(data), 0, 0, 0, 0, data_names},
    {"beta", K_NUM, F(beta), 0, 1000, 1, 0, NULL},
    {"loss_type", K_ENUM, F(loss_type), 0, 0, 0, 0, loss_names},
    {"label_smoothing", K_NUM, F(label_smoothing), 0, 0.5, 0, 1, NULL},
    {"model", K_STR, F(model), 0, 0, 0, 0, NULL},
    {"model_init", K_MODEL_INIT, 0, 0, 0, 0, 0, NULL},
    {"tokenizer", K_STR, F(tokenizer), 0, 0, 0, 0, NULL},
    {"reference_model", K_STR, F(reference_model), 0, 0, 0, 0, NULL},
    {"precompute_ref_log_probs", K_BOOL, F(precompute_ref_log_probs), 0, 0, 0, 0, NULL},
    {"train_file", K_STR, F(train_file), 0, 0, 0, 0, NULL},
    {"eval_file", K_STR, F(eval_file), 0, 0, 0, 0, NULL},
    {"output_dir", K_STR, F(output_dir), 0, 0, 0, 0, NULL},
    {"learning_rate", K_NUM, F(learning_rate), 0, 1, 1, 0, NULL},
    {"per_device_train_batch_size", K_INT, F(per_device_train_batch_size), 1, 4096, 0, 0, NULL},
    {"batch_size", K_INT, F(per_device_train_batch_size), 1, 4096, 0, 0, NULL},
    {"per_device_eval_batch_size", K_INT, F(per_device_eval_batch_size), 1, 4096, 0, 0, NULL},
    {"gradient_accumulation_steps", K_INT, F(gradient_accumulation_steps), 1, 4096, 0, 0, NULL},
    {"num_train_epochs", K_NUM, F(num_train_epochs), 0, 10000, 1, 0, NULL},
    {"max_steps", K_INT, F(max_steps), -1, 1e9, 0, 0, NULL}, // 0 refused below
    {"lr_scheduler_type", K_ENUM, F(lr_scheduler_type), 0, 0, 0, 0, sched_names},
    {"warmup_steps", K_INT, F(warmup_steps), 0, 1e9, 0, 0, NULL},
    {"warmup_ratio", K_NUM, F(warmup_ratio), 0, 1, 0, 1, NULL},
    {"weight_decay", K_NUM, F(weight_decay), 0, 10, 0, 0, NULL},
    {"adam_beta1", K_NUM, F(adam_beta1), 0, 1, 0, 1, NULL},
    {"adam_beta2", K_NUM, F(adam_beta2), 0, 1, 0, 1, NULL},
    {"adam_epsilon", K_NUM, F(adam_epsilon), 0, 1, 1, 1, NULL},
    {"max_grad_norm", K_NUM, F(max_grad_norm), 0, 1e9, 0, 0, NULL},
    {"seed", K_SEED, F(seed), 0, RECIPE_MAX_SEED, 0, 0, NULL},
    {"shuffle", K_BOOL, F(shuffle), 0, 0, 0, 0, NULL},
    {"logging_steps", K_INT, F(logging_steps), 1, 1e9, 0, 0, NULL},
    {"eval_steps", K_INT, F(eval_steps), 0, 1e9, 0, 0, NULL},
    {"save_steps", K_INT, F(save_steps), 0, 1e9, 0, 0, NULL},
    {"max_length", K_INT, F(max_length), 2, 1048576, 0, 0, NULL},
    {"max_prompt_length", K_INT, F(max_prompt_length), 1, 1048576, 0, 0, NULL},
    {"truncation_mode", K_ENUM, F(truncation_mode), 0, 0, 0, 0, trunc_names},
    {"bad_rows", K_ENUM, F(bad_rows), 0, 0, 0, 0, bad_rows_names},
    {"threads", K_INT, F(threads), 0, 1024, 0, 0, NULL},
    {"chat_template", K_ENUM, F(chat_template), 0, 0, 0, 0, chat_names},
    {"output_format", K_ENUM, F(output_format), 0, 0, 0, 0, output_names},
    {"recipe", K_RECIPE, 0, 0, 0, 0, 0, NULL},
};
#undef F
#define N_KEYS (sizeof keys / sizeof keys[0])
// apply_key stores enum fields through an int pointer.
_Static_assert(sizeof(Method) == sizeof(int) && sizeof(DataKind) == sizeof(int) &&
                   sizeof(DpoLossType) == sizeof(int) && sizeof(LrSchedule) == sizeof(int) &&
                   sizeof(TruncationMode) == sizeof(int) && sizeof(BadRowPolicy) == sizeof(int) &&
                   sizeof(ChatTemplate) == sizeof(int) && sizeof(OutputFormat) == sizeof(int),
               "enum fields must be int-sized");

static const KeySpec *find_key(const char *name) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].name, name) == 0) return &keys[i];
    return NULL;
}

static const char *json_type_name(const cJSON *v) {
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "a list";
    if (cJSON_IsObject(v)) return "a mapping";
    return "invalid";
}

static void format_range(char *buf, size_t size, const KeySpec *k) {
    snprintf(buf, size, "%s%.10g, %.10g%s", k->lo_open ? "(" : "[", k->lo, k->hi,
             k->hi_open ? ")" : "]");
}

static int in_range(double x, const KeySpec *k) {
    if (!isfinite(x)) return 0;
    if (k->lo_open ? !(x > k->lo) : !(x >= k->lo)) return 0;
    if (k->hi_open ? !(x < k->hi) : !(x <= k->hi)) return 0;
    return 1;
}

// A number value for key `name`, range-checked against k. Integral keys take
// integral doubles (1.0 is 1) and refuse fractions.
static int get_number(const cJSON *v, const KeySpec *k, const char *name, int integral, double *out,
                      BsError *err) {
    char range[96];
    if (!cJSON_IsNumber(v))
        return bs_fail(err, "invalid_recipe", name, "%s must be %s, not %s", name,
                       integral ? "an integer" : "a number", json_type_name(v));
    double x = v->valuedouble;
    format_range(range, sizeof range, k);
    if (!isfinite(x))
        return bs_fail(err, "invalid_hyperparameter", name, "%s must be a finite number in %s",
                       name, range);
    if (integral && x != floor(x))
        return bs_fail(err, "invalid_recipe", name, "%s must be an integer, not %.17g", name, x);
    if (!in_range(x, k))
        return bs_fail(err, "invalid_hyperparameter", name, "%s must be in %s, got %.17g", name,
                       range, x);
    *out = x;
    return 0;
}

static int set_string(char **dst, const cJSON *v, const char *name, BsError *err) {
    if (cJSON_IsNull(v)) { // an explicit null is the same as leaving the key out
        free(*dst);
        *dst = NULL;
        return 0;
    }
    if (!cJSON_IsString(v))
        return bs_fail(err, "invalid_recipe", name, "%s must be a string, not %s", name,
                       json_type_name(v));
    size_t n = strlen(v->valuestring);
    if (n == 0) return bs_fail(err, "invalid_hyperparameter", name, "%s must not be empty", name);
    if (n > RECIPE_MAX_PATH)
        return bs_fail(err, "invalid_hyperparameter", name, "%s is longer than %d bytes", name,
                       RECIPE_MAX_PATH);
    char *copy = strdup(v->valuestring);
    if (!copy) return bs_fail(err, "io", name, "out of memory");
    free(*dst);
    *dst = copy;
    return 0;
}

static int get_enum(const cJSON *v, const KeySpec *k, const char *name, int *out, BsError *err) {
    if (!cJSON_IsString(v))
        return bs_fail(err, "invalid_recipe", name, "%s must be a string, not %s", name,
                       json_type_name(v));
    for (int i = 0; k->names[i]; i++) {
        if (strcmp(k->names[i], v->valuestring) == 0) {
            *out = i;
            return 0;
        }
    }
    char allowed[160] = "";
    size_t used = 0;
    for (int i = 0; k->names[i]; i++) {
        int w =
            snprintf(allowed + used, sizeof allowed - used, "%s\"%s\"", i ? ", " : "", k->names[i]);
        if (w < 0 || (size_t)w >= sizeof allowed - used) break;
        used += (size_t)w;
    }
    return bs_fail(err, "invalid_hyperparameter", name, "%s must be one of %s, got \"%.64s\"", name,
                   allowed, v->valuestring);
}

// model_init: {dim, n_layers, n_heads, n_kv_heads?, hidden_dim?, max_seq_len, vocab_size?}
static int parse_model_init(const cJSON *v, ModelInit *mi, BsError *err) {
    static const KeySpec mi_keys[] = {
        {"dim", K_INT, offsetof(ModelInit, dim), 2, 8192, 0, 0, NULL},
        {"n_layers", K_INT, offsetof(ModelInit, n_layers), 1, 256, 0, 0, NULL},
        {"n_heads", K_INT, offsetof(ModelInit, n_heads), 1, 1024, 0, 0, NULL},
        {"n_kv_heads", K_INT, offsetof(ModelInit, n_kv_heads), 1, 1024, 0, 0, NULL},
        {"hidden_dim", K_INT, offsetof(ModelInit, hidden_dim), 1, 65536, 0, 0, NULL},
        {"max_seq_len", K_INT, offsetof(ModelInit, max_seq_len), 2, 65536, 0, 0, NULL},
        {"vocab_size", K_INT, offsetof(ModelInit, vocab_size), 3, 1048576, 0, 0, NULL},
    };
    const size_t n_mi = sizeof mi_keys / sizeof mi_keys[0];
    char pname[96];
    if (!cJSON_IsObject(v))
        return bs_fail(
            err, "invalid_recipe", "model_init",
            "model_init must be a mapping of {dim, n_layers, n_heads, max_seq_len, ...}, "
            "not %s",
            json_type_name(v));
    memset(mi, 0, sizeof *mi);
    for (const cJSON *c = v->child; c; c = c->next) {
        const KeySpec *k = NULL;
        for (size_t i = 0; i < n_mi; i++)
            if (strcmp(mi_keys[i].name, c->string) == 0) k = &mi_keys[i];
        snprintf(pname, sizeof pname, "model_init.%.80s", c->string);
        if (!k)
            return bs_fail(err, "invalid_recipe", pname,
                           "unknown key '%s' in model_init (known: dim, n_layers, n_heads, "
                           "n_kv_heads, hidden_dim, max_seq_len, vocab_size)",
                           c->string);
        double x;
        if (get_number(c, k, pname, 1, &x, err) < 0) return -1;
        *(int *)((char *)mi + k->off) = (int)x;
    }
    static const char *const required[] = {"dim", "n_layers", "n_heads", "max_seq_len"};
    for (size_t i = 0; i < 4; i++) {
        if (!cJSON_GetObjectItemCaseSensitive(v, required[i])) {
            snprintf(pname, sizeof pname, "model_init.%s", required[i]);
            return bs_fail(err, "invalid_recipe", pname, "model_init needs %s", required[i]);
        }
    }
    if (mi->n_kv_heads == 0) mi->n_kv_heads = mi->n_heads;
    if (mi->hidden_dim == 0) {
        // llama2.c's rule (model.py) with multiple_of = 32: int(2 * 4 * dim / 3) rounded up.
        int hidden = (int)(2.0 * 4.0 * mi->dim / 3.0);
        mi->hidden_dim = (hidden + 31) / 32 * 32;
    }
    if (mi->dim % mi->n_heads != 0)
        return bs_fail(err, "invalid_hyperparameter", "model_init.n_heads",
                       "model_init.n_heads (%d) must divide dim (%d)", mi->n_heads, mi->dim);
    if ((mi->dim / mi->n_heads) % 2 != 0)
        return bs_fail(err, "invalid_hyperparameter", "model_init.n_heads",
                       "model_init head size dim / n_heads (%d) must be even for RoPE",
                       mi->dim / mi->n_heads);
    if (mi->n_kv_heads > mi->n_heads || mi->n_heads % mi->n_kv_heads != 0)
        return bs_fail(err, "invalid_hyperparameter", "model_init.n_kv_heads",
                       "model_init.n_kv_heads (%d) must divide n_heads (%d)", mi->n_kv_heads,
                       mi->n_heads);
    return 0;
}

static int apply_key(Recipe *r, const char *name, const cJSON *v, BsError *err) {
    const KeySpec *k = find_key(name);
    double x;
    int e;
    if (!k || k->type == K_RECIPE)
        return bs_fail(err, "invalid_recipe", name, "unknown key '%s'", name);
    char *base = (char *)r;
    switch (k->type) {
    case K_STR:
        return set_string((char **)(base + k->off), v, name, err);
    case K_INT:
        if (get_number(v, k, name, 1, &x, err) < 0) return -1;
        *(int *)(base + k->off) = (int)x;
        return 0;
    case K_NUM:
        if (get_number(v, k, name, 0, &x, err) < 0) return -1;
        *(double *)(base + k->off) = x;
        return 0;
    case K_SEED:
        if (get_number(v, k, name, 1, &x, err) < 0) return -1;
        r->seed = (unsigned long long)x;
        return 0;
    case K_BOOL:
        if (!cJSON_IsBool(v))
            return bs_fail(err, "invalid_recipe", name, "%s must be true or false, not %s", name,
                           json_type_name(v));
        *(int *)(base + k->off) = cJSON_IsTrue(v) ? 1 : 0;
        return 0;
    case K_ENUM:
        if (get_enum(v, k, name, &e, err) < 0) return -1;
        // Every enum field of Recipe is an enum type with int representation.
        *(int *)(base + k->off) = e;
        return 0;
    case K_MODEL_INIT:
        if (cJSON_IsNull(v)) {
            r->has_model_init = 0;
            memset(&r->model_init, 0, sizeof r->model_init);
            return 0;
        }
        if (parse_model_init(v, &r->model_init, err) < 0) return -1;
        r->has_model_init = 1;
        return 0;
    case K_RECIPE:
        break;
    }
    return bs_fail(err, "invalid_recipe", name, "unknown key '%s'", name);
}

// Cross-field rules that TRL enforces (or that keep the trainer sane).
static int validate(Recipe *r, BsError *err) {
    DataKind want = r->method == METHOD_SFT ? DATA_SFT : DATA_PREFERENCE;
    if (r->data != want)
        return bs_fail(err, "invalid_hyperparameter", "data",
                       "data: %s does not fit method: %s (it needs data: %s)", data_names[r->data],
                       method_names[r->method], data_names[want]);
    if (!r->model == !r->has_model_init)
        return bs_fail(err, "invalid_recipe", "model",
                       r->model ? "give either model or model_init, not both"
                                : "model (a checkpoint path) or model_init is required");
    if (!r->train_file)
        return bs_fail(err, "invalid_recipe", "train_file", "train_file is required");
    if (r->max_steps == 0)
        return bs_fail(err, "invalid_hyperparameter", "max_steps",
                       "max_steps must be -1 (use num_train_epochs) or in [1, 1e9], got 0");
    if (r->max_prompt_length >= r->max_length)
        return bs_fail(err, "invalid_hyperparameter", "max_prompt_length",
                       "max_prompt_length must be smaller than max_length (%d), got %d",
                       r->max_length, r->max_prompt_length);
    if (r->method != METHOD_DPO && r->loss_type != LOSS_SIGMOID)
        return bs_fail(err, "invalid_hyperparameter", "loss_type",
                       "loss_type only applies to method: dpo");
    if (r->label_smoothing > 0 && r->method != METHOD_DPO)
        return bs_fail(err, "invalid_hyperparameter", "label_smoothing",
                       "label_smoothing only applies to method: dpo");
    if (r->label_smoothing > 0 && r->loss_type != LOSS_SIGMOID && r->loss_type != LOSS_ROBUST)
        return bs_fail(err, "invalid_hyperparameter", "label_smoothing",
                       "label_smoothing needs loss_type sigmoid or robust (TRL ignores it for %s)",
                       loss_names[r->loss_type]);
    return 0;
}

// The mapping holding the recipe keys: the top level, or `recipe:` when it is
// a mapping (then no other top-level key may appear). `recipe:` with a null
// value is the lesson's form (a header line followed by flat keys).
static int recipe_object(const cJSON *root, const cJSON **obj, BsError *err) {
    if (!root) return bs_fail(err, "invalid_recipe", "", "the recipe is empty");
    if (!cJSON_IsObject(root))
        return bs_fail(err, "invalid_recipe", "", "the recipe must be a mapping of keys, not %s",
                       json_type_name(root));
    const cJSON *nested = cJSON_GetObjectItemCaseSensitive(root, "recipe");
    *obj = root;
    if (!nested || cJSON_IsNull(nested)) return 0;
    if (!cJSON_IsObject(nested))
        return bs_fail(err, "invalid_recipe", "recipe",
                       "recipe must be a mapping of keys (or empty), not %s",
                       json_type_name(nested));
    for (const cJSON *c = root->child; c; c = c->next)
        if (c != nested)
            return bs_fail(err, "invalid_recipe", c->string,
                           "key '%s' is outside the nested recipe: mapping; put every key under "
                           "recipe: or none",
                           c->string);
    if (cJSON_GetObjectItemCaseSensitive(nested, "recipe"))
        return bs_fail(err, "invalid_recipe", "recipe", "recipe: must not be nested twice");
    *obj = nested;
    return 0;
}

int recipe_parse(const char *text, size_t len, RecipeFormat fmt, Recipe *r, BsError *err) {
    cJSON *root = NULL;
    Recipe tmp;
    recipe_defaults(&tmp, METHOD_DPO);
    if (!text) len = 0;
    if (len > 0 && memchr(text, '\0', len)) {
        bs_fail(err, "invalid_recipe", "", "the recipe contains a NUL byte");
        goto fail;
    }
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n'))
        i++;
    if (i == len) {
        bs_fail(err, "invalid_recipe", "", "the recipe is empty");
        goto fail;
    }
    if (fmt == RECIPE_AUTO) fmt = text[i] == '{' ? RECIPE_JSON : RECIPE_YAML;
    if ((fmt == RECIPE_JSON ? json_to_cjson(text, len, &root, err)
                            : yaml_to_cjson(text, len, &root, err)) < 0)
        goto fail;
    const cJSON *obj = NULL;
    if (recipe_object(root, &obj, err) < 0) goto fail;

    const cJSON *method = cJSON_GetObjectItemCaseSensitive(obj, "method");
    if (!method) {
        bs_fail(err, "invalid_recipe", "method", "method is required (sft, dpo or orpo)");
        goto fail;
    }
    int m;
    if (get_enum(method, find_key("method"), "method", &m, err) < 0) goto fail;
    recipe_defaults(&tmp, (Method)m);

    if (cJSON_GetObjectItemCaseSensitive(obj, "batch_size") &&
        cJSON_GetObjectItemCaseSensitive(obj, "per_device_train_batch_size")) {
        bs_fail(err, "invalid_recipe", "batch_size",
                "batch_size is an alias of per_device_train_batch_size; give only one");
        goto fail;
    }
    for (const cJSON *c = obj->child; c; c = c->next) {
        if (obj == root && strcmp(c->string, "recipe") == 0) continue; // `recipe:` (null)
        if (apply_key(&tmp, c->string, c, err) < 0) goto fail;
    }
    // A user who only lowers max_length should not trip over the default
    // max_prompt_length (512): the default then becomes half of max_length.
    // An explicit max_prompt_length is validated as given.
    if (!cJSON_GetObjectItemCaseSensitive(obj, "max_prompt_length") &&
        tmp.max_prompt_length >= tmp.max_length)
        tmp.max_prompt_length = tmp.max_length / 2;
    if (validate(&tmp, err) < 0) goto fail;
    cJSON_Delete(root);
    *r = tmp;
    return 0;
fail:
    cJSON_Delete(root);
    recipe_free(&tmp);
    recipe_defaults(r, METHOD_DPO);
    return -1;
}

// ---------------------------------------------------------------------------
// Canonical JSON

static int add_str(cJSON *o, const char *name, const char *s) {
    return (s ? cJSON_AddStringToObject(o, name, s) : cJSON_AddNullToObject(o, name)) ? 0 : -1;
}

// cJSON prints with 15 digits whenever the value is within an epsilon of the
// double, which loses the last bits; print the shortest exact form instead.
static int add_num(cJSON *o, const char *name, double x) {
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) break;
    }
    return cJSON_AddRawToObject(o, name, buf) ? 0 : -1;
}

static int add_bool(cJSON *o, const char *name, int b) {
    return cJSON_AddBoolToObject(o, name, b) ? 0 : -1;
}

char *recipe_to_json(const Recipe *r) {
    cJSON *o = cJSON_CreateObject();
    char *out = NULL;
    if (!o) return NULL;
    int bad = 0;
    bad |= add_str(o, "method", recipe_method_name(r->method));
    bad |= add_str(o, "data", r->data == DATA_SFT ? "sft" : "preference");
    bad |= add_num(o, "beta", r->beta);
    bad |= add_str(o, "loss_type", recipe_loss_type_name(r->loss_type));
    bad |= add_num(o, "label_smoothing", r->label_smoothing);
    bad |= add_str(o, "model", r->model);
    if (r->has_model_init) {
        cJSON *mi = cJSON_AddObjectToObject(o, "model_init");
        if (!mi) goto done;
        bad |= add_num(mi, "dim", r->model_init.dim);
        bad |= add_num(mi, "n_layers", r->model_init.n_layers);
        bad |= add_num(mi, "n_heads", r->model_init.n_heads);
        bad |= add_num(mi, "n_kv_heads", r->model_init.n_kv_heads);
        bad |= add_num(mi, "hidden_dim", r->model_init.hidden_dim);
        bad |= add_num(mi, "max_seq_len", r->model_init.max_seq_len);
        // vocab_size 0 (bytes) is written as absent, since 0 is not a valid value.
        if (r->model_init.vocab_size) bad |= add_num(mi, "vocab_size", r->model_init.vocab_size);
    } else {
        bad |= cJSON_AddNullToObject(o, "model_init") ? 0 : -1;
    }
    bad |= add_str(o, "tokenizer", r->tokenizer);
    bad |= add_str(o, "reference_model", r->reference_model);
    bad |= add_bool(o, "precompute_ref_log_probs", r->precompute_ref_log_probs);
    bad |= add_str(o, "train_file", r->train_file);
    bad |= add_str(o, "eval_file", r->eval_file);
    bad |= add_str(o, "output_dir", r->output_dir);
    bad |= add_num(o, "learning_rate", r->learning_rate);
    bad |= add_num(o, "per_device_train_batch_size", r->per_device_train_batch_size);
    bad |= add_num(o, "per_device_eval_batch_size", r->per_device_eval_batch_size);
    bad |= add_num(o, "gradient_accumulation_steps", r->gradient_accumulation_steps);
    bad |= add_num(o, "num_train_epochs", r->num_train_epochs);
    bad |= add_num(o, "max_steps", r->max_steps);
    bad |= add_str(o, "lr_scheduler_type",
                   (int)r->lr_scheduler_type >= 0 && r->lr_scheduler_type <= SCHED_COSINE
                       ? sched_names[r->lr_scheduler_type]
                       : "unknown");
    bad |= add_num(o, "warmup_steps", r->warmup_steps);
    bad |= add_num(o, "warmup_ratio", r->warmup_ratio);
    bad |= add_num(o, "weight_decay", r->weight_decay);
    bad |= add_num(o, "adam_beta1", r->adam_beta1);
    bad |= add_num(o, "adam_beta2", r->adam_beta2);
    bad |= add_num(o, "adam_epsilon", r->adam_epsilon);
    bad |= add_num(o, "max_grad_norm", r->max_grad_norm);
    bad |= add_num(o, "seed", (double)r->seed);
    bad |= add_bool(o, "shuffle", r->shuffle);
    bad |= add_num(o, "logging_steps", r->logging_steps);
    bad |= add_num(o, "eval_steps", r->eval_steps);
    bad |= add_num(o, "save_steps", r->save_steps);
    bad |= add_num(o, "max_length", r->max_length);
    bad |= add_num(o, "max_prompt_length", r->max_prompt_length);
    bad |= add_str(o, "truncation_mode",
                   r->truncation_mode == TRUNC_KEEP_START ? "keep_start" : "keep_end");
    bad |= add_str(o, "bad_rows", r->bad_rows == BAD_ROWS_ERROR ? "error" : "skip");
    bad |= add_num(o, "threads", r->threads);
    // Keep these two last: train.c hashes the canonical JSON without them
    // (neither changes the numbers), so checkpoints written before they
    // existed still resume.
    bad |= add_str(o, "chat_template",
                   (int)r->chat_template >= 0 && r->chat_template <= CHAT_ZEPHYR
                       ? chat_names[r->chat_template]
                       : "unknown");
    bad |= add_str(o, "output_format", recipe_output_format_name(r->output_format));
    if (!bad) out = cJSON_PrintUnformatted(o);
done:
    cJSON_Delete(o);
    return out;
}

void recipe_model_init_config(const ModelInit *mi, ModelConfig *c) {
    memset(c, 0, sizeof *c);
    c->dim = mi->dim;
    c->n_layers = mi->n_layers;
    c->n_heads = mi->n_heads;
    c->n_kv_heads = mi->n_kv_heads > 0 ? mi->n_kv_heads : mi->n_heads;
    if (mi->hidden_dim > 0) {
        c->hidden_dim = mi->hidden_dim;
    } else {
        int hidden = 2 * (4 * mi->dim) / 3;
        c->hidden_dim = (hidden + 31) / 32 * 32;
    }
    c->vocab_size = mi->vocab_size > 0 ? mi->vocab_size : TOK_BYTES_VOCAB;
    c->seq_len = mi->max_seq_len;
    c->shared_classifier = 1;
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
}

int recipe_uses_byte_tokenizer(const Recipe *r) {
    return !r->tokenizer && !r->model && r->has_model_init && r->model_init.vocab_size <= 0;
}
