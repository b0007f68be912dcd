// fuzz_hfconfig.c — libFuzzer target for the Hugging Face config.json parser
// (trainer/hf.c hf_parse_config).
//
// The input is a config.json. A refusal must be model_invalid or
// model_unsupported naming the field; parsing with and without the info
// struct must agree. An accepted config must pass model_config_validate, name
// llama or mistral, and carry the JSON's own sizes (read back here with
// cJSON). When its model is small, it is exported (hf_export, F32) with
// deterministic weights and read back (hf_read_model): the config, the
// bos/eos ids and every parameter must survive the round trip exactly.
#include <cjson/cJSON.h>
#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "hf.h"
#include "model.h"

#define MAX_EXPORT_PARAMS 4096

static char export_dir[256];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    snprintf(export_dir, sizeof export_dir, "%s/export", fuzz_tmp_dir("fuzz_hfconfig"));
    return 0;
}

// The JSON's integer field, or def when absent / null.
static int json_int(const cJSON *root, const char *key, int def) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!j || cJSON_IsNull(j)) return def;
    FUZZ_CHECK(cJSON_IsNumber(j), "accepted a non-number %s", key);
    return (int)j->valuedouble;
}

static void check_fields(const char *data, size_t size, const ModelConfig *c,
                         const HfModelInfo *info) {
    cJSON *root = cJSON_ParseWithLength(data, size);
    FUZZ_CHECK(cJSON_IsObject(root), "accepted a config that is not a JSON object");
    int mistral = strcmp(info->model_type, "mistral") == 0;
    FUZZ_CHECK(mistral || strcmp(info->model_type, "llama") == 0, "model_type %s",
               info->model_type);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    FUZZ_CHECK(cJSON_IsString(mt) && strcmp(mt->valuestring, info->model_type) == 0,
               "model_type differs from the JSON");
    FUZZ_CHECK(c->dim == json_int(root, "hidden_size", -1), "hidden_size");
    FUZZ_CHECK(c->hidden_dim == json_int(root, "intermediate_size", -1), "intermediate_size");
    FUZZ_CHECK(c->n_layers == json_int(root, "num_hidden_layers", -1), "num_hidden_layers");
    FUZZ_CHECK(c->n_heads == json_int(root, "num_attention_heads", -1), "num_attention_heads");
    FUZZ_CHECK(c->n_kv_heads == json_int(root, "num_key_value_heads", mistral ? 8 : c->n_heads),
               "num_key_value_heads");
    FUZZ_CHECK(c->vocab_size == json_int(root, "vocab_size", -1), "vocab_size");
    FUZZ_CHECK(c->seq_len == json_int(root, "max_position_embeddings", mistral ? 131072 : 2048),
               "max_position_embeddings");
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
    FUZZ_CHECK(c->shared_classifier == (cJSON_IsTrue(tie) ? 1 : 0), "tie_word_embeddings");
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(root, "rms_norm_eps");
    if (cJSON_IsNumber(eps))
        FUZZ_CHECK(c->norm_eps == (float)eps->valuedouble, "rms_norm_eps %g vs %g",
                   (double)c->norm_eps, eps->valuedouble);
    FUZZ_CHECK(info->n_eos >= 0 && info->n_eos <= HF_MAX_EOS, "n_eos %d", info->n_eos);
    FUZZ_CHECK(info->bos_token_id >= -1, "bos %d", info->bos_token_id);
    for (int i = 0; i < info->n_eos; i++)
        FUZZ_CHECK(info->eos_token_ids[i] >= 0, "eos %d", info->eos_token_ids[i]);
    cJSON_Delete(root);
}

static void check_roundtrip(const ModelConfig *c, const HfModelInfo *info) {
    size_t n = model_param_count(c);
    float *p = malloc(n * sizeof *p);
    FUZZ_CHECK(p != NULL, "oom");
    for (size_t i = 0; i < n; i++)
        p[i] = (float)((int)((i * 7919u) % 2001u) - 1000) / 1000.0f;
    BsError err = {0};
    FUZZ_CHECK(hf_export(export_dir, c, p, info, 0, NULL, &err) == 0, "export: %s: %s", err.code,
               err.message);
    ModelConfig back;
    HfModelInfo binfo;
    float *q = NULL;
    FUZZ_CHECK(hf_read_model(export_dir, &back, &q, &binfo, &err) == 0,
               "exported model refused: %s", err.message);
    FUZZ_CHECK(back.dim == c->dim && back.hidden_dim == c->hidden_dim &&
                   back.n_layers == c->n_layers && back.n_heads == c->n_heads &&
                   back.n_kv_heads == c->n_kv_heads && back.vocab_size == c->vocab_size &&
                   back.seq_len == c->seq_len && back.shared_classifier == c->shared_classifier,
               "sizes changed in the round trip");
    FUZZ_CHECK(back.norm_eps == c->norm_eps, "rms_norm_eps %.9g became %.9g", (double)c->norm_eps,
               (double)back.norm_eps);
    FUZZ_CHECK(back.rope_theta == c->rope_theta, "rope_theta %.9g became %.9g",
               (double)c->rope_theta, (double)back.rope_theta);
    FUZZ_CHECK(binfo.bos_token_id == info->bos_token_id, "bos %d became %d", info->bos_token_id,
               binfo.bos_token_id);
    FUZZ_CHECK(binfo.n_eos == info->n_eos && memcmp(binfo.eos_token_ids, info->eos_token_ids,
                                                    (size_t)info->n_eos * sizeof(int)) == 0,
               "eos ids changed in the round trip");
    FUZZ_CHECK(memcmp(p, q, n * sizeof *p) == 0, "parameters changed in the round trip");
    free(q);
    free(p);
    nftw(export_dir, fuzz_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *json = (const char *)data;
    ModelConfig c, c2;
    HfModelInfo info;
    BsError err = {0}, err2 = {0};
    int rc = hf_parse_config(json, size, "config.json", &c, &info, &err);
    int rc2 = hf_parse_config(json, size, "config.json", &c2, NULL, &err2);
    FUZZ_CHECK(rc == rc2, "with info %d, without %d", rc, rc2);
    FUZZ_DEBUG("hf_parse_config: %d %s", rc, rc ? err.message : "");
    if (rc != 0) {
        FUZZ_CHECK(strcmp(err.code, "model_invalid") == 0 ||
                       strcmp(err.code, "model_unsupported") == 0,
                   "code %s: %s", err.code, err.message);
        FUZZ_CHECK(err.param[0] != '\0', "no param: %s", err.message);
        FUZZ_CHECK(strcmp(err.code, err2.code) == 0 && strcmp(err.param, err2.param) == 0,
                   "errors differ with and without info");
        return 0;
    }
    FUZZ_CHECK(memcmp(&c, &c2, sizeof c) == 0, "configs differ with and without info");
    FUZZ_CHECK(model_config_validate(&c, &err) == 0, "accepted an invalid config: %s", err.message);
    FUZZ_CHECK(isfinite(c.norm_eps) && c.norm_eps > 0 && isfinite(c.rope_theta) && c.rope_theta > 0,
               "eps %g theta %g", (double)c.norm_eps, (double)c.rope_theta);
    check_fields(json, size, &c, &info);
    if (model_param_count(&c) <= MAX_EXPORT_PARAMS) check_roundtrip(&c, &info);
    return 0;
}
