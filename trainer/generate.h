// generate.h — autoregressive sampling with a KV cache over a model's
// parameters: greedy at temperature 0 (ids equal llama2.c run.c's), otherwise
// temperature + top-p sampling with run.c's xorshift RNG.
#ifndef GENERATE_H
#define GENERATE_H

#include "bs.h"
#include "model.h"

// A zero-initialised GenerateOptions is valid: greedy, 256 tokens, seed 42.
typedef struct {
    int max_new_tokens;      // default 256 (0); stops early at EOS/BOS as run.c
    float temperature;       // 0 = greedy
    float top_p;             // 0.9 default (run.c); 1 or 0 = plain sampling
    unsigned long long seed; // run.c seeds with time; we default to 42 (0)
    int eos_id;              // also stop at this id when > 0; -1 or 0 = none (run.c has none)
    int bos_id;              // the delimiter run.c stops at; 0 = 1 (llama2.c's BOS);
                             // < 0: none (a Hugging Face tokenizer without BOS)
    // Called with each generated id as it is produced (NULL = none); a nonzero
    // return stops generation after that id. Stop ids are not reported.
    int (*on_token)(void *user, int id);
    void *user;
} GenerateOptions;

// prompt_ids must be non-empty (caller adds BOS). *out_ids (malloc'd, caller
// frees) receives the generated ids only, without the BOS/EOS that stopped
// generation, *n_out their count. Total length is capped at cfg->seq_len.
int generate(const ModelConfig *cfg, const float *params, const int *prompt_ids, int n_prompt,
             const GenerateOptions *opt, int **out_ids, int *n_out, BsError *err);

#endif
