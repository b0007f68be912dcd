// hf.h — Hugging Face model directories (Llama and Mistral architectures):
// config.json + safetensors weights read into the library's flat llama2.c
// parameter layout, and exported back as a directory that transformers'
// LlamaForCausalLM.from_pretrained loads.
//
// Tensor names (i = layer) and where they go in the flat buffer (model.h):
//   model.embed_tokens.weight                      (V, D)   tok_emb
//   model.layers.i.input_layernorm.weight          (D)      rms_att[i]
//   model.layers.i.self_attn.q_proj.weight         (D, D)   wq[i]   RoPE rows permuted
//   model.layers.i.self_attn.k_proj.weight         (KVD, D) wk[i]   RoPE rows permuted
//   model.layers.i.self_attn.v_proj.weight         (KVD, D) wv[i]
//   model.layers.i.self_attn.o_proj.weight         (D, D)   wo[i]
//   model.layers.i.post_attention_layernorm.weight (D)      rms_ffn[i]
//   model.layers.i.mlp.gate_proj.weight            (H, D)   w1[i]
//   model.layers.i.mlp.down_proj.weight            (D, H)   w2[i]
//   model.layers.i.mlp.up_proj.weight              (H, D)   w3[i]
//   model.norm.weight                              (D)      rms_final
//   lm_head.weight                                 (V, D)   wcls (absent when tied)
// Also accepted and ignored: *.rotary_emb.inv_freq (derived data in older
// checkpoints) and lm_head.weight when tie_word_embeddings is true (transformers
// ties it to the embedding on load). Any other tensor is refused.
//
// RoPE layout. llama2.c (and this library's ops) rotate adjacent pairs
// (2i, 2i+1) of each head by angle pos * theta^(-2i/HS); Hugging Face's
// rotate_half rotates pairs (i, i + HS/2) by the same angle. Meta-to-HF
// conversion (transformers' convert_llama_weights_to_hf.py `permute`, the
// inverse of llama2.c export.py's `permute_reverse`) reorders the output rows
// of q_proj (n_heads heads) and k_proj (n_kv_heads heads) within each head of
// HS rows. For head h, i in [0, HS/2) and half in {0, 1}:
//     HF row  h*HS + half*HS/2 + i   ==   llama2.c row  h*HS + 2*i + half
// i.e. a head's first HS/2 HF rows are its even llama2.c rows and its last
// HS/2 are the odd ones. Loading applies it from right to left, exporting
// from left to right; since q and k get the same reordering, every q.k
// product, hence every logit, is unchanged.
#ifndef HF_H
#define HF_H

#include "bs.h"
#include "model.h"

#define HF_MAX_EOS 16

typedef struct {
    char model_type[16];  // "llama" or "mistral"
    char torch_dtype[16]; // as config.json states it, "" when absent
    int bos_token_id;     // -1 when null
    int n_eos;            // eos_token_id: one id, or a list (Llama 3); 0 when null
    int eos_token_ids[HF_MAX_EOS];
} HfModelInfo;

// 1 when path is a directory (read as a Hugging Face model), else 0.
int hf_is_model_dir(const char *path);

// Parses config.json text (where names it in messages). Fields as
// transformers' LlamaConfig / MistralConfig read them: hidden_size,
// intermediate_size, num_hidden_layers, num_attention_heads and vocab_size
// are required; num_key_value_heads defaults to num_attention_heads (llama)
// or 8 (mistral), max_position_embeddings to 2048 / 131072, rms_norm_eps to
// 1e-6, rope_theta to 10000, tie_word_embeddings to false, bos/eos to 1 / 2.
// Refused with code model_unsupported and param = the field: model_type other
// than llama/mistral, rope_scaling not null, rope_parameters with a rope_type
// other than "default", attention_bias or mlp_bias true, hidden_act other than
// silu (or its alias swish), head_dim != hidden_size / num_attention_heads,
// a mistral sliding_window below max_position_embeddings, quantization_config.
// Malformed values: model_invalid with param = the field. info may be NULL.
int hf_parse_config(const char *json, size_t len, const char *where, ModelConfig *cfg,
                    HfModelInfo *info, BsError *err);

// Reads dir/config.json and validates every safetensors header (names,
// dtypes F32/F16/BF16, shapes against the config, offsets); reads no tensor
// data. info may be NULL.
int hf_peek_model(const char *dir, ModelConfig *cfg, HfModelInfo *info, BsError *err);
// hf_peek_model, then reads every tensor widened to f32 into *params
// (malloc'd, model_param_count floats, owned by the caller), q/k rows
// reordered to llama2.c's layout. info may be NULL.
int hf_read_model(const char *dir, ModelConfig *cfg, float **params, HfModelInfo *info,
                  BsError *err);

// Writes a Hugging Face directory (created when missing, files replaced
// durably: temporary name, fsync, rename): model.safetensors (F32, or BF16
// rounded to nearest even when bf16 is set; q/k rows in HF order), then the
// tokenizer files found in tokenizer_src_dir (tokenizer.json,
// tokenizer_config.json, special_tokens_map.json, tokenizer.model; NULL = none),
// then config.json (model_type llama, LlamaForCausalLM, every LlamaConfig
// field), last so that a directory with a config.json is complete.
// info supplies bos/eos ids (NULL: llama2.c's 1 and 2).
int hf_export(const char *dir, const ModelConfig *cfg, const float *params, const HfModelInfo *info,
              int bf16, const char *tokenizer_src_dir, BsError *err);

#endif
