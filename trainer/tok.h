// tok.h — tokenizers: llama2.c tokenizer.bin (encode identical to run.c),
// Hugging Face tokenizers (tokenizer.json / vocab.json + merges.txt, see
// hftok.h) and a built-in byte-level tokenizer for models initialised from
// scratch.
#ifndef TOK_H
#define TOK_H

#include "bs.h"

// Byte tokenizer ids: 0..255 are bytes, then BOS, EOS, PAD.
#define TOK_BYTES_BOS 256
#define TOK_BYTES_EOS 257
#define TOK_BYTES_PAD 258
#define TOK_BYTES_VOCAB 259

typedef struct Tokenizer Tokenizer;

// Loads the tokenizer at path for a model of vocab_size entries: a directory
// or a .json file is a Hugging Face tokenizer, anything else a llama2.c
// tokenizer.bin. A Hugging Face tokenizer may hold fewer ids than the model
// (embeddings are often padded past it), never more; a llama2.c file must hold
// exactly vocab_size entries. Either way a mismatch is "tokenizer_mismatch".
// vocab_size <= 0 takes the tokenizer's own size. *out is owned by the caller
// (tok_free).
int tok_load(Tokenizer **out, const char *path, int vocab_size, BsError *err);

// 1 when tok_load reads path as a Hugging Face tokenizer (a directory or a
// .json file), else 0.
int tok_path_is_hf(const char *path);
// 1 when dir is a directory holding a Hugging Face tokenizer (tokenizer.json,
// or vocab.json + merges.txt), as Hugging Face model folders usually do; the
// trainer, preflight, generate and the daemon fall back to a model folder's
// own tokenizer when the recipe names none.
int tok_dir_has_hf(const char *dir);

// Loads a llama2.c tokenizer.bin holding vocab_size entries (taken from the
// model); a file with fewer entries or trailing garbage is an error.
int tok_load_llama2c(Tokenizer **out, const char *path, int vocab_size, BsError *err);
// Counts the entries of a llama2.c tokenizer.bin after validating its framing,
// for callers with no model to take vocab_size from.
int tok_count_llama2c(const char *path, int *count, BsError *err);
int tok_create_bytes(Tokenizer **out, BsError *err);
void tok_free(Tokenizer *t);

// The model vocabulary the tokenizer was loaded for (ids accepted by decode).
int tok_vocab_size(const Tokenizer *t);
// 1 for llama2.c; for Hugging Face tokenizers hftok_bos / hftok_eos: -1 when
// the tokenizer has none (add_bos / add_eos then add nothing).
int tok_bos(const Tokenizer *t);
int tok_eos(const Tokenizer *t); // 2 for llama2.c

// Encodes UTF-8 text. llama2.c semantics: optional BOS, the dummy-prefix
// space when text is non-empty, merges by highest score, byte fallback.
// Hugging Face tokenizers: the tokenizers crate's encode without special
// tokens (added tokens in the text are recognised), then BOS / EOS when asked.
// *ids is malloc'd and owned by the caller; *n its length.
int tok_encode(const Tokenizer *t, const char *text, int add_bos, int add_eos, int **ids, int *n,
               BsError *err);
// tok_encode without BOS, then BOS in front unless the ids already start with
// it (TRL's add_bos_token_if_needed: a chat template's "<s>" written in the
// text is that BOS) or the tokenizer has none (tok_bos -1). For llama2.c and
// byte tokenizers this equals tok_encode(t, text, 1, add_eos, ...). *ids is
// malloc'd and owned by the caller.
int tok_encode_bos(const Tokenizer *t, const char *text, int add_eos, int **ids, int *n,
                   BsError *err);
// Decodes ids to a malloc'd NUL-terminated string (caller frees); BOS/EOS are
// dropped, <0xNN> pieces become raw bytes, the leading space after BOS is
// stripped as run.c does. Hugging Face tokenizers run their decoder chain
// (ids past the tokenizer but inside the model vocabulary decode to nothing).
// Returns NULL on allocation failure or a bad id.
char *tok_decode(const Tokenizer *t, const int *ids, int n, BsError *err);
// The piece run.c prints for `token` following `prev` (static storage owned
// by the tokenizer; valid until tok_free).
// NULL when token is outside the vocabulary.
const char *tok_piece(const Tokenizer *t, int prev, int token);

#endif
