// tok.h — tokenizers: llama2.c tokenizer.bin (encode identical to run.c) and
// a built-in byte-level tokenizer for models initialised from scratch.
#ifndef TOK_H
#define TOK_H

#include "bs.h"

// Byte tokenizer ids: 0..255 are bytes, then BOS, EOS, PAD.
#define TOK_BYTES_BOS 256
#define TOK_BYTES_EOS 257
#define TOK_BYTES_PAD 258
#define TOK_BYTES_VOCAB 259

typedef struct Tokenizer Tokenizer;

// Loads a llama2.c tokenizer.bin holding vocab_size entries (taken from the
// model); a file with fewer entries or trailing garbage is an error.
int tok_load_llama2c(Tokenizer **out, const char *path, int vocab_size, BsError *err);
// Counts the entries of a llama2.c tokenizer.bin after validating its framing,
// for callers with no model to take vocab_size from.
int tok_count_llama2c(const char *path, int *count, BsError *err);
int tok_create_bytes(Tokenizer **out, BsError *err);
void tok_free(Tokenizer *t);

int tok_vocab_size(const Tokenizer *t);
int tok_bos(const Tokenizer *t); // 1 for llama2.c
int tok_eos(const Tokenizer *t); // 2 for llama2.c

// Encodes UTF-8 text. llama2.c semantics: optional BOS, the dummy-prefix
// space when text is non-empty, merges by highest score, byte fallback.
// *ids is malloc'd and owned by the caller; *n its length.
int tok_encode(const Tokenizer *t, const char *text, int add_bos, int add_eos, int **ids, int *n,
               BsError *err);
// Decodes ids to a malloc'd NUL-terminated string (caller frees); BOS/EOS are
// dropped, <0xNN> pieces become raw bytes, the leading space after BOS is
// stripped as run.c does. Returns NULL on allocation failure or a bad id.
char *tok_decode(const Tokenizer *t, const int *ids, int n, BsError *err);
// The piece run.c prints for `token` following `prev` (static storage owned
// by the tokenizer; valid until tok_free).
// NULL when token is outside the vocabulary.
const char *tok_piece(const Tokenizer *t, int prev, int token);

#endif
