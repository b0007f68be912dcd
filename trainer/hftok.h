// hftok.h — Hugging Face tokenizers: the BPE model of a tokenizer.json (byte-level
// like GPT-2 / Llama 3 / Qwen, or SentencePiece-style with byte fallback like
// Llama 2 / TinyLlama), or GPT-2's vocab.json + merges.txt. Encoding follows the
// Rust `tokenizers` crate step for step: added tokens split off first (longest
// match), then the normalizer, the pre-tokenizer, BPE merges by rank; decoding
// runs the decoder chain. tok.c wraps this behind the Tokenizer API (tok_load);
// callers normally use that instead.
//
// Supported components (anything else is refused with code
// "tokenizer_unsupported" and err->param naming the field, e.g. "model.type"):
//   model          BPE (vocab, merges as "a b" or ["a", "b"], unk_token, fuse_unk,
//                  byte_fallback, ignore_merges)
//   normalizer     null, Sequence, Prepend, Replace
//   pre_tokenizer  null, Sequence, ByteLevel, Split, Digits, Metaspace
//   post_processor null, ByteLevel, TemplateProcessing, Sequence of those
//   decoder        null, Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip,
//                  Metaspace
// Regular expressions run through PCRE2 (UTF + UCP); `\s` and `\S` are read as
// Oniguruma (the tokenizers crate's engine) reads them: White_Space.
#ifndef HFTOK_H
#define HFTOK_H

#include "bs.h"

typedef struct HfTok HfTok;

// Loads a Hugging Face tokenizer from path: a directory holding tokenizer.json
// (or else vocab.json + merges.txt), or a tokenizer.json file itself (a file
// named vocab.json means GPT-2 style with merges.txt beside it). The
// tokenizer_config.json next to it (else special_tokens_map.json), when
// present, names bos_token / eos_token. On success *out is owned by the caller
// (hftok_free). Errors: "io", "invalid_tokenizer" (malformed: truncated JSON,
// missing vocab, merges naming unknown tokens, ...), "tokenizer_unsupported".
int hftok_load(HfTok **out, const char *path, BsError *err);
void hftok_free(HfTok *h);

// Highest token id + 1 (model vocabulary and added tokens together).
int hftok_size(const HfTok *h);
// BOS: tokenizer_config's bos_token, else the token before $A in a
// TemplateProcessing post-processor; -1 when the tokenizer has none (Qwen).
int hftok_bos(const HfTok *h);
// EOS: tokenizer_config's eos_token, else the token after $A in the template,
// else a special added token with a conventional end name (</s>,
// <|endoftext|>, <|end_of_text|>, <|im_end|>, <eos>); -1 when none.
int hftok_eos(const HfTok *h);

// Encodes UTF-8 text without any post-processor tokens (add_special_tokens =
// False in transformers); added and special tokens written in the text are
// recognised. *ids is malloc'd and owned by the caller. Text that is not
// valid UTF-8 fails with "invalid_text" (Hugging Face only takes str).
int hftok_encode(const HfTok *h, const char *text, int **ids, int *n, BsError *err);

// Decodes ids through the decoder chain into a malloc'd NUL-terminated string
// (caller frees). Ids in [0, hftok_size) without a token are skipped, as the
// tokenizers crate does; with skip_bos_eos the BOS and EOS ids are dropped.
// Returns NULL on allocation failure or an id outside [0, hftok_size).
char *hftok_decode(const HfTok *h, const int *ids, int n, int skip_bos_eos, BsError *err);

// The bytes token id stands for when printed alone (byte-level characters and
// <0xNN> pieces become raw bytes, "▁" a space), or NULL outside [0,
// hftok_size). Static storage owned by h. *strips_leading_space tells whether
// the decoder drops a leading space at the start of a text (SentencePiece
// style), which a streaming printer applies after BOS.
const char *hftok_piece(const HfTok *h, int id, int *strips_leading_space);

// The token string of id as the vocabulary spells it (e.g. "Ġthe"), or NULL.
const char *hftok_token(const HfTok *h, int id);
// The id of a token string (added tokens first, then the model), or -1.
int hftok_token_id(const HfTok *h, const char *token);

#endif
