// data.h — JSONL training data to token sequences.
//
// Row kinds: preference with explicit prompt {prompt, chosen, rejected};
// implicit prompt {chosen, rejected} (prompt = longest common prefix, a space
// right before the split belongs to the completion, as TRL); conversational
// (lists of {role, content} rendered with the recipe's chat template, chat.h;
// plain is the HH format documented in README.md); pre-tokenized
// {prompt_ids, chosen_ids, rejected_ids}; SFT
// {prompt, completion} | {text} | {prompt_ids, completion_ids}.
// Text rows get BOS before the prompt (unless the text already starts with
// it, e.g. the llama2 template's "<s>"; none when the tokenizer has no BOS)
// and EOS after each completion (unless it already ends with it; none when the
// tokenizer has no EOS); prompt + completion are tokenized together and split
// at the prompt boundary.
#ifndef DATA_H
#define DATA_H

#include <stddef.h>

#include "bs.h"
#include "chat.h"
#include "recipe.h"
#include "tok.h"

typedef struct {
    int *prompt;   // (n_prompt) BOS included for text rows
    int n_prompt;
    int *chosen;   // (n_chosen) completion; for SFT rows the completion
    int n_chosen;
    int *rejected; // (n_rejected); NULL/0 for SFT rows
    int n_rejected;
    int line;      // 1-based source line
} Example;

typedef struct {
    Example *rows;
    int n;
    int n_lines;     // non-blank lines read
    int n_bad;       // rows refused (schema, types, ids out of range)
    int n_truncated; // rows shortened by max_length / max_prompt_length
    int n_dropped;   // rows with nothing left to learn from after truncation
    int first_bad_line;       // 0 when none
    char first_bad_reason[256];
    int n_chat; // usable rows rendered with the chat template (conversational)
} Dataset;

// Options of data_load_ex; a zero-initialised DataOptions is the default.
typedef struct {
    // Template for conversational rows. CHAT_AUTO: the recipe's
    // chat_template, and plain when that is auto as well (no tokenizer folder
    // to detect from here: callers resolve auto with data_chat_template).
    ChatTemplate chat_template;
} DataOptions;

// Loads path for r->data (preference | sft) with r's truncation settings.
// tok may be NULL only when every row is pre-tokenized; ids must be < vocab.
// With BAD_ROWS_ERROR the first bad row fails the load with its line number
// (err->code "dataset_schema"); with BAD_ROWS_SKIP it is counted and skipped.
// A missing file fails with code "dataset_not_found". ds is caller-owned
// (data_free).
int data_load(Dataset *ds, const char *path, const Recipe *r, const Tokenizer *tok, int vocab_size,
              int max_length, BsError *err);
// data_load with options (opt NULL: defaults); data_load(...) is
// data_load_ex(..., NULL, err).
int data_load_ex(Dataset *ds, const char *path, const Recipe *r, const Tokenizer *tok,
                 int vocab_size, int max_length, const DataOptions *opt, BsError *err);
// The chat template r's conversational rows use with the tokenizer at
// tokenizer_path (a tokenizer.bin, an HF tokenizer folder or file; NULL: none):
// r->chat_template unless it is auto, else chat_detect's answer (plain when the
// tokenizer's template is unknown or absent). warning (always NUL-terminated)
// receives chat_detect's warning, "" when there is none. Never CHAT_AUTO.
ChatTemplate data_chat_template(const Recipe *r, const char *tokenizer_path, char *warning,
                                size_t warning_len);
void data_free(Dataset *ds);
// TRL's implicit prompt of a {chosen, rejected} text pair: the byte length of
// the shared prefix that is the prompt (a space right before the first
// differing character goes to the completions; never splits a UTF-8 sequence).
size_t data_implicit_prompt_len(const char *chosen, size_t n_chosen, const char *rejected,
                                size_t n_rejected);

#endif
