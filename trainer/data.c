// data.c — JSONL (plain or gzip) training rows to token sequences, following
// Hugging Face TRL's preference-data conventions.
//
// Row kinds, detected per row by its keys (extra keys are ignored):
//   data: preference
//     {prompt_ids, chosen_ids, rejected_ids}  ints used verbatim (no BOS/EOS)
//     {prompt, chosen, rejected}              strings, explicit prompt
//     {chosen, rejected}                      strings, implicit prompt (below)
//     the same two with lists of {role, content} messages (conversational)
//   data: sft
//     {prompt_ids, completion_ids}            ints used verbatim
//     {messages: [...]}                       prompt = all but the last message,
//                                             which must be the assistant's
//     {prompt, completion}                    strings, or lists of messages
//     {text}                                  the whole text is the completion
//
// Implicit prompt (TRL data_utils.extract_prompt): the prompt is chosen up to
// the first character where chosen and rejected differ; when the character
// before that index is a space, the index moves back one so the space starts
// the completions. Characters are Unicode code points (a split never lands
// inside a UTF-8 sequence). When no character differs within the shorter
// string, Python's loop index ends at min_len - 1 and TRL splits there; we do
// the same. TRL's negative-index quirk for a difference at index 0 (it looks
// at chosen[-1]) is not copied: the prompt is empty. For message lists the
// common prefix is taken message by message (role and content equal).
//
// Conversational rows go through the chat template (DataOptions, resolved
// from the recipe's chat_template; chat.h) as TRL's maybe_apply_chat_template
// does: prompt text = render(prompt, add_generation_prompt), completion text =
// render(prompt + completion) minus that prefix. The prompt's last message
// must not be the assistant's and the completion must start with the
// assistant's; roles are user, assistant and system (chatml takes any role).
// The plain template (Anthropic HH format) renders
//   user -> "\n\nHuman: " + content, assistant -> "\n\nAssistant: " + content,
//   system -> "\n\nSystem: " + content, generation prompt "\n\nAssistant:"
//   so [{user: "hi"}] + [{assistant: "Sure"}] is "\n\nHuman: hi\n\nAssistant:"
//   + " Sure", exactly how HH-RLHF's implicit-prompt rows split.
//
// Tokenizing text rows (older TRL DPOTrainer.build_tokenized_answer): encode
// the prompt alone and prompt + completion together, each without special
// tokens and then with BOS in front unless its first id already is BOS
// (add_bos_token_if_needed; a tokenizer without BOS adds none); start =
// len(prompt ids); if the prompt ids are not a prefix of the full ids, start
// -= 1 (a merge across the boundary); prompt = full[:start], completion =
// full[start:]. TRL then gives chosen and rejected their own prompt ids (they
// may differ in the merged last token); an Example has one prompt, so the
// longest common prefix of the two is the prompt and any differing prompt
// tail moves to the front of its completion: every token sequence
// prompt + completion is exactly TRL's. EOS is appended to each completion
// unless it already ends with EOS (TRL add_eos_token_if_needed) or the
// tokenizer has no EOS.
//
// Truncation (older TRL DPOTrainer.tokenize_row), with mp = max_prompt_length,
// or max_length / 2 when the model's seq_len made max_length <= mp:
//   longer = max(len(chosen), len(rejected))
//   if len(prompt) + longer > max_length:
//       prompt = prompt[:mp] (keep_start) or prompt[-mp:] (keep_end)
//   if still len(prompt) + longer > max_length:
//       chosen = chosen[:max_length - mp], rejected = rejected[:max_length - mp]
// (keep_end can cut the prompt's BOS and the completion cut can drop EOS, as
// in TRL.) SFT rows use the same rule with rejected empty. A row is counted in
// n_truncated when anything was cut, and dropped (n_dropped) when a completion
// is empty, which only pre-tokenized rows with an empty id list can produce.
#include "data.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define DATA_MAX_LINE ((size_t)64 << 20) // bytes in one JSONL line
#define DATA_CHUNK (256 * 1024)

// ---------------------------------------------------------------------------
// Growable buffers

typedef struct {
    char *s;
    size_t n, cap;
} Str;

typedef struct {
    int *v;
    int n, cap;
} Ids;

static int str_reserve(Str *b, size_t extra) {
    if (extra > SIZE_MAX - b->n - 1) return -1;
    size_t need = b->n + extra + 1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *s = realloc(b->s, cap);
    if (!s) return -1;
    b->s = s;
    b->cap = cap;
    return 0;
}

static int str_append(Str *b, const char *s, size_t n) {
    if (str_reserve(b, n) < 0) return -1;
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
    return 0;
}

static int str_cat(Str *b, const char *s) {
    return str_append(b, s, strlen(s));
}

static int ids_push(Ids *a, int id) {
    if (a->n == a->cap) {
        if (a->cap > INT_MAX / 2) return -1;
        int cap = a->cap ? a->cap * 2 : 64;
        int *v = realloc(a->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

// A malloc'd copy of ids[0..n) (at least one int allocated so that an empty
// completion is still a valid pointer).
static int *ids_copy(const int *ids, int n) {
    int *out = malloc((size_t)(n > 0 ? n : 1) * sizeof *out);
    if (out && n > 0) memcpy(out, ids, (size_t)n * sizeof *out);
    return out;
}

// ---------------------------------------------------------------------------
// Line reader over gzip or plain files (zlib reads both transparently)

typedef struct {
    gzFile gz;
    char *chunk;
    int chunk_len, chunk_pos;
    int eof;
    Str line;
    int line_no;
    int oversized; // the current line passed DATA_MAX_LINE; its bytes were discarded
} LineReader;

// Reads the next line (without '\n') into lr->line. Returns 1 for a line, 0 at
// end of file, -1 on a read error (err filled).
static int line_next(LineReader *lr, const char *param, BsError *err) {
    lr->line.n = 0;
    if (lr->line.s) lr->line.s[0] = '\0';
    lr->oversized = 0;
    int got_any = 0;
    for (;;) {
        if (lr->chunk_pos == lr->chunk_len) {
            if (lr->eof) break;
            int n = gzread(lr->gz, lr->chunk, DATA_CHUNK);
            if (n < 0) {
                int errnum = 0;
                const char *msg = gzerror(lr->gz, &errnum);
                if (errnum == Z_ERRNO)
                    return bs_fail(err, "io", param, "line %d: read error: %s", lr->line_no + 1,
                                   strerror(errno));
                return bs_fail(err, "dataset_schema", param,
                               "line %d: the compressed file is corrupt: %s", lr->line_no + 1,
                               msg ? msg : "unknown zlib error");
            }
            if (n == 0) {
                // gzread reports a truncated gzip stream as a short read plus an error.
                int errnum = 0;
                const char *msg = gzerror(lr->gz, &errnum);
                if (errnum != Z_OK && errnum != Z_STREAM_END)
                    return bs_fail(err, "dataset_schema", param,
                                   "line %d: the compressed file is corrupt: %s", lr->line_no + 1,
                                   msg ? msg : "unknown zlib error");
                lr->eof = 1;
                break;
            }
            lr->chunk_len = n;
            lr->chunk_pos = 0;
        }
        got_any = 1;
        const char *start = lr->chunk + lr->chunk_pos;
        size_t avail = (size_t)(lr->chunk_len - lr->chunk_pos);
        const char *nl = memchr(start, '\n', avail);
        size_t take = nl ? (size_t)(nl - start) : avail;
        if (!lr->oversized) {
            if (lr->line.n + take > DATA_MAX_LINE) {
                lr->oversized = 1;
                lr->line.n = 0;
            } else if (str_append(&lr->line, start, take) < 0) {
                return bs_fail(err, "out_of_memory", param, "line %d: cannot buffer %zu bytes",
                               lr->line_no + 1, lr->line.n + take);
            }
        }
        lr->chunk_pos += (int)take + (nl ? 1 : 0);
        if (nl) break;
    }
    if (!got_any) return 0;
    if (lr->line_no == INT_MAX)
        return bs_fail(err, "dataset_schema", param, "more than %d lines", INT_MAX);
    lr->line_no++;
    return 1;
}

// ---------------------------------------------------------------------------
// Implicit prompt

static int is_cont(unsigned char c) {
    return (c & 0xC0) == 0x80;
}

size_t data_implicit_prompt_len(const char *chosen, size_t n_chosen, const char *rejected,
                                size_t n_rejected) {
    size_t m = n_chosen < n_rejected ? n_chosen : n_rejected;
    size_t i = 0;
    while (i < m && chosen[i] == rejected[i])
        i++;
    if (i == m) {
        // No differing character: TRL's loop index stops at the last character
        // of the shorter string, which goes to the completions.
        if (m == 0) return 0;
        size_t j = m - 1;
        while (j > 0 && is_cont((unsigned char)chosen[j]))
            j--;
        return j;
    }
    while (i > 0 && is_cont((unsigned char)chosen[i]))
        i--; // start of the differing character
    if (i > 0 && chosen[i - 1] == ' ') i--;
    return i;
}

// ---------------------------------------------------------------------------
// Row parsing: one JSON row -> prompt/completion texts or ids

typedef struct {
    ChatTemplate tpl; // for conversational rows (resolved: never CHAT_AUTO)
    int pretok;
    int chat;                     // rendered with tpl
    Str prompt, chosen, rejected; // text rows
    Ids p, c, r;                  // pre-tokenized rows
} RowParts;

static void parts_free(RowParts *rp) {
    free(rp->prompt.s);
    free(rp->chosen.s);
    free(rp->rejected.s);
    free(rp->p.v);
    free(rp->c.v);
    free(rp->r.v);
    ChatTemplate tpl = rp->tpl;
    memset(rp, 0, sizeof *rp);
    rp->tpl = tpl;
}

// Outcome of a row step: ROW_OK, ROW_BAD (why filled), ROW_FATAL (err filled).
enum { ROW_OK = 0, ROW_BAD = 1, ROW_FATAL = -1 };

#define BAD(...) (snprintf(why, why_len, __VA_ARGS__), ROW_BAD)
#define OOM() (bs_fail(err, "out_of_memory", "", "cannot allocate a data row"), ROW_FATAL)

static int get_ids(const cJSON *arr, const char *key, int vocab, Ids *out, char *why,
                   size_t why_len, BsError *err) {
    if (!cJSON_IsArray(arr)) return BAD("%s must be a list of token ids", key);
    int i = 0;
    for (const cJSON *c = arr->child; c; c = c->next, i++) {
        if (!cJSON_IsNumber(c) || !isfinite(c->valuedouble) ||
            c->valuedouble != floor(c->valuedouble))
            return BAD("%s[%d] is not an integer", key, i);
        double x = c->valuedouble;
        if (x < 0 || x >= vocab)
            return BAD("%s[%d] = %.17g is outside the vocabulary [0, %d)", key, i, x, vocab);
        if (ids_push(out, (int)x) < 0) return OOM();
    }
    return ROW_OK;
}

static int get_text(const cJSON *row, const char *key, int allow_empty, Str *out, char *why,
                    size_t why_len, BsError *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, key);
    if (!cJSON_IsString(v)) return BAD("%s must be a string", key);
    if (!allow_empty && v->valuestring[0] == '\0') return BAD("%s is empty", key);
    if (str_cat(out, v->valuestring) < 0) return OOM();
    return ROW_OK;
}

static int known_role(const char *role) {
    return strcmp(role, "user") == 0 || strcmp(role, "assistant") == 0 ||
           strcmp(role, "system") == 0;
}

// Validates a list of {role, content} messages; *n is its length. Roles are
// user, assistant and system, except with chatml, which renders any role.
static int check_messages(const cJSON *arr, const char *key, ChatTemplate tpl, int *n, char *why,
                          size_t why_len) {
    if (!cJSON_IsArray(arr)) return BAD("%s must be a list of messages", key);
    int i = 0;
    for (const cJSON *m = arr->child; m; m = m->next, i++) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role) || !cJSON_IsString(content))
            return BAD("%s[%d] must be {\"role\": string, \"content\": string}", key, i);
        if (tpl != CHAT_CHATML && !known_role(role->valuestring))
            return BAD("%s[%d] has role \"%.40s\" (expected user, assistant or system)", key, i,
                       role->valuestring);
    }
    *n = i;
    return ROW_OK;
}

// cJSON_GetArrayItem walks the list from its head, so loops over messages
// take msg_at once and follow ->next (indexing each would be quadratic).
static const cJSON *msg_at(const cJSON *arr, int i) {
    return cJSON_GetArrayItem(arr, i);
}

static const char *msg_role(const cJSON *m) {
    return cJSON_GetObjectItemCaseSensitive(m, "role")->valuestring;
}

static const char *msg_content(const cJSON *m) {
    return cJSON_GetObjectItemCaseSensitive(m, "content")->valuestring;
}

static int msg_equal(const cJSON *a, const cJSON *b) {
    return strcmp(msg_role(a), msg_role(b)) == 0 && strcmp(msg_content(a), msg_content(b)) == 0;
}

// Renders prompt messages parr[pf, pt) and completion messages carr[cf, ct)
// with the template (chat_render_pair, TRL's maybe_apply_chat_template) and
// appends the texts to *prompt (skipped when NULL: the rejected completion of
// a pair shares the chosen one's prompt) and *completion.
static int render_pair(ChatTemplate tpl, const cJSON *parr, int pf, int pt, const char *pkey,
                       const cJSON *carr, int cf, int ct, const char *ckey, Str *prompt,
                       Str *completion, char *why, size_t why_len, BsError *err) {
    if (pt > pf && strcmp(msg_role(msg_at(parr, pt - 1)), "assistant") == 0)
        return BAD("the prompt in %s ends with an assistant message", pkey);
    if (ct <= cf) return BAD("%s has no assistant message after the prompt", ckey);
    const cJSON *first = msg_at(carr, cf);
    if (strcmp(msg_role(first), "assistant") != 0)
        return BAD("%s must continue with an assistant message after the prompt", ckey);
    int np = pt - pf, nc = ct - cf;
    ChatMessage *m = malloc((size_t)(np + nc) * sizeof *m); // nc >= 1
    if (!m) return OOM();
    const cJSON *x = np > 0 ? msg_at(parr, pf) : NULL;
    for (int i = 0; i < np; i++, x = x->next)
        m[i] = (ChatMessage){msg_role(x), msg_content(x)};
    x = first;
    for (int i = 0; i < nc; i++, x = x->next)
        m[np + i] = (ChatMessage){msg_role(x), msg_content(x)};
    char *p = NULL, *c = NULL;
    BsError e;
    bs_error_clear(&e);
    int rc = chat_render_pair(tpl, m, np, m + np, nc, &p, &c, &e);
    free(m);
    if (rc != 0) {
        if (strcmp(e.code, "out_of_memory") == 0) {
            *err = e;
            return ROW_FATAL;
        }
        return BAD("%.200s (chat_template %s)", e.message, chat_template_name(tpl));
    }
    int oom = (prompt && str_cat(prompt, p) < 0) || str_cat(completion, c) < 0;
    free(p);
    free(c);
    if (oom) return OOM();
    return ROW_OK;
}

static int parse_preference(const cJSON *row, int vocab, RowParts *rp, char *why, size_t why_len,
                            BsError *err) {
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(row, "prompt");
    const cJSON *chosen = cJSON_GetObjectItemCaseSensitive(row, "chosen");
    const cJSON *rejected = cJSON_GetObjectItemCaseSensitive(row, "rejected");
    const cJSON *pi = cJSON_GetObjectItemCaseSensitive(row, "prompt_ids");
    const cJSON *ci = cJSON_GetObjectItemCaseSensitive(row, "chosen_ids");
    const cJSON *ri = cJSON_GetObjectItemCaseSensitive(row, "rejected_ids");
    int rc;
    if (pi || ci || ri) {
        if (!pi || !ci || !ri)
            return BAD("a pre-tokenized row needs prompt_ids, chosen_ids and rejected_ids");
        rp->pretok = 1;
        if ((rc = get_ids(pi, "prompt_ids", vocab, &rp->p, why, why_len, err)) != ROW_OK ||
            (rc = get_ids(ci, "chosen_ids", vocab, &rp->c, why, why_len, err)) != ROW_OK ||
            (rc = get_ids(ri, "rejected_ids", vocab, &rp->r, why, why_len, err)) != ROW_OK)
            return rc;
        return ROW_OK;
    }
    if (!chosen || !rejected)
        return BAD("a preference row needs {prompt, chosen, rejected}, {chosen, rejected} or "
                   "{prompt_ids, chosen_ids, rejected_ids}");
    if (cJSON_IsString(chosen) && cJSON_IsString(rejected)) {
        if (prompt) {
            if ((rc = get_text(row, "prompt", 1, &rp->prompt, why, why_len, err)) != ROW_OK ||
                (rc = get_text(row, "chosen", 0, &rp->chosen, why, why_len, err)) != ROW_OK ||
                (rc = get_text(row, "rejected", 0, &rp->rejected, why, why_len, err)) != ROW_OK)
                return rc;
            return ROW_OK;
        }
        const char *c = chosen->valuestring, *r = rejected->valuestring;
        size_t nc = strlen(c), nr = strlen(r);
        if (nc == 0) return BAD("chosen is empty");
        if (nr == 0) return BAD("rejected is empty");
        size_t k = data_implicit_prompt_len(c, nc, r, nr);
        if (str_append(&rp->prompt, c, k) < 0 || str_append(&rp->chosen, c + k, nc - k) < 0 ||
            str_append(&rp->rejected, r + k, nr - k) < 0)
            return OOM();
        return ROW_OK;
    }
    if (cJSON_IsArray(chosen) && cJSON_IsArray(rejected)) {
        int nc, nr, np = 0;
        ChatTemplate tpl = rp->tpl;
        if ((rc = check_messages(chosen, "chosen", tpl, &nc, why, why_len)) != ROW_OK ||
            (rc = check_messages(rejected, "rejected", tpl, &nr, why, why_len)) != ROW_OK)
            return rc;
        rp->chat = 1;
        if (prompt) {
            if ((rc = check_messages(prompt, "prompt", tpl, &np, why, why_len)) != ROW_OK)
                return rc;
            if (np == 0) return BAD("prompt has no messages");
            if ((rc = render_pair(tpl, prompt, 0, np, "prompt", chosen, 0, nc, "chosen",
                                  &rp->prompt, &rp->chosen, why, why_len, err)) ||
                (rc = render_pair(tpl, prompt, 0, np, "prompt", rejected, 0, nr, "rejected", NULL,
                                  &rp->rejected, why, why_len, err)))
                return rc;
            return ROW_OK;
        }
        int m = nc < nr ? nc : nr;
        if (m == 0) return BAD("chosen and rejected need messages");
        int k = 0;
        for (const cJSON *a = chosen->child, *b = rejected->child; k < m && msg_equal(a, b);
             a = a->next, b = b->next)
            k++;
        if (k == m) k = m - 1; // TRL's loop index when nothing differs
        if (k == 0) return BAD("chosen and rejected share no prompt messages");
        if ((rc = render_pair(tpl, chosen, 0, k, "chosen", chosen, k, nc, "chosen", &rp->prompt,
                              &rp->chosen, why, why_len, err)) ||
            (rc = render_pair(tpl, chosen, 0, k, "chosen", rejected, k, nr, "rejected", NULL,
                              &rp->rejected, why, why_len, err)))
            return rc;
        return ROW_OK;
    }
    return BAD("chosen and rejected must both be strings or both be lists of messages");
}

static int parse_sft(const cJSON *row, int vocab, RowParts *rp, char *why, size_t why_len,
                     BsError *err) {
    const cJSON *pi = cJSON_GetObjectItemCaseSensitive(row, "prompt_ids");
    const cJSON *ci = cJSON_GetObjectItemCaseSensitive(row, "completion_ids");
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(row, "messages");
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(row, "prompt");
    const cJSON *completion = cJSON_GetObjectItemCaseSensitive(row, "completion");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(row, "text");
    int rc;
    if (pi || ci) {
        if (!pi || !ci) return BAD("a pre-tokenized SFT row needs prompt_ids and completion_ids");
        rp->pretok = 1;
        if ((rc = get_ids(pi, "prompt_ids", vocab, &rp->p, why, why_len, err)) != ROW_OK ||
            (rc = get_ids(ci, "completion_ids", vocab, &rp->c, why, why_len, err)) != ROW_OK)
            return rc;
        return ROW_OK;
    }
    if (messages) {
        int n;
        if ((rc = check_messages(messages, "messages", rp->tpl, &n, why, why_len)) != ROW_OK)
            return rc;
        if (n == 0) return BAD("messages is empty");
        if (strcmp(msg_role(msg_at(messages, n - 1)), "assistant") != 0)
            return BAD("the last message must be the assistant's");
        rp->chat = 1;
        return render_pair(rp->tpl, messages, 0, n - 1, "messages", messages, n - 1, n, "messages",
                           &rp->prompt, &rp->chosen, why, why_len, err);
    }
    if (prompt || completion) {
        if (!prompt || !completion) return BAD("an SFT row needs both prompt and completion");
        if (cJSON_IsArray(prompt) && cJSON_IsArray(completion)) {
            int np, nc;
            if ((rc = check_messages(prompt, "prompt", rp->tpl, &np, why, why_len)) != ROW_OK ||
                (rc = check_messages(completion, "completion", rp->tpl, &nc, why, why_len)) !=
                    ROW_OK)
                return rc;
            if (np == 0) return BAD("prompt has no messages");
            rp->chat = 1;
            return render_pair(rp->tpl, prompt, 0, np, "prompt", completion, 0, nc, "completion",
                               &rp->prompt, &rp->chosen, why, why_len, err);
        }
        if ((rc = get_text(row, "prompt", 1, &rp->prompt, why, why_len, err)) != ROW_OK ||
            (rc = get_text(row, "completion", 0, &rp->chosen, why, why_len, err)) != ROW_OK)
            return rc;
        return ROW_OK;
    }
    if (text) {
        if ((rc = get_text(row, "text", 0, &rp->chosen, why, why_len, err)) != ROW_OK) return rc;
        if (str_cat(&rp->prompt, "") < 0) return OOM();
        return ROW_OK;
    }
    return BAD("an SFT row needs {prompt, completion}, {text}, {messages} or "
               "{prompt_ids, completion_ids}");
}

// ---------------------------------------------------------------------------
// Tokenizing text rows

// Encodes prompt + completion (BOS rule of tok_encode_bos) and finds the prompt
// boundary with TRL's build_tokenized_answer rule, given the prompt's own ids pt.
static int encode_answer(const Tokenizer *tok, const int *pt, int npt, const Str *prompt,
                         const Str *completion, int **full, int *n_full, int *start, char *why,
                         size_t why_len, BsError *err) {
    Str joined = {0};
    BsError terr;
    *full = NULL;
    if (str_append(&joined, prompt->s ? prompt->s : "", prompt->n) < 0 ||
        str_append(&joined, completion->s ? completion->s : "", completion->n) < 0) {
        free(joined.s);
        return OOM();
    }
    int rc = tok_encode_bos(tok, joined.s, 0, full, n_full, &terr);
    free(joined.s);
    if (rc < 0) {
        if (strcmp(terr.code, "out_of_memory") == 0) {
            *err = terr;
            return ROW_FATAL;
        }
        return BAD("cannot tokenize: %.200s", terr.message);
    }
    int s = npt;
    // TRL raises here: the full encoding must be at least as long as the prompt's.
    if (*n_full < s) {
        free(*full);
        *full = NULL;
        return BAD("prompt and completion tokenize to fewer ids than the prompt alone");
    }
    if (memcmp(pt, *full, (size_t)s * sizeof *pt) != 0) s--; // last prompt token merged
    *start = s;
    return ROW_OK;
}

// Fills ex (prompt, chosen, rejected ids) from the texts of rp.
static int tokenize_text(const Tokenizer *tok, const RowParts *rp, int preference, Example *ex,
                         char *why, size_t why_len, BsError *err) {
    int *pt = NULL, *fc = NULL, *fr = NULL;
    int npt = 0, nfc = 0, nfr = 0, sc = 0, sr = 0;
    int rc = ROW_OK;
    BsError terr;
    if (tok_encode_bos(tok, rp->prompt.s ? rp->prompt.s : "", 0, &pt, &npt, &terr) < 0) {
        if (strcmp(terr.code, "out_of_memory") == 0) {
            *err = terr;
            return ROW_FATAL;
        }
        return BAD("cannot tokenize the prompt: %.200s", terr.message);
    }
    rc = encode_answer(tok, pt, npt, &rp->prompt, &rp->chosen, &fc, &nfc, &sc, why, why_len, err);
    if (rc != ROW_OK) goto done;
    if (preference) {
        rc = encode_answer(tok, pt, npt, &rp->prompt, &rp->rejected, &fr, &nfr, &sr, why, why_len,
                           err);
        if (rc != ROW_OK) goto done;
    }
    // One prompt for both completions: the common prefix of the two prompt parts.
    int L = sc;
    if (preference) {
        int m = sc < sr ? sc : sr;
        L = 0;
        while (L < m && fc[L] == fr[L])
            L++;
    }
    int eos = tok_eos(tok); // -1: the tokenizer has none, nothing is appended
    ex->n_prompt = L;
    ex->prompt = ids_copy(fc, L);
    int add_c = eos >= 0 && (nfc == L || fc[nfc - 1] != eos) ? 1 : 0;
    ex->n_chosen = nfc - L + add_c;
    ex->chosen = malloc((size_t)(ex->n_chosen > 0 ? ex->n_chosen : 1) * sizeof *ex->chosen);
    if (!ex->prompt || !ex->chosen) {
        rc = OOM();
        goto done;
    }
    memcpy(ex->chosen, fc + L, (size_t)(nfc - L) * sizeof *fc);
    if (add_c) ex->chosen[ex->n_chosen - 1] = eos;
    if (preference) {
        int add_r = eos >= 0 && (nfr == L || fr[nfr - 1] != eos) ? 1 : 0;
        ex->n_rejected = nfr - L + add_r;
        ex->rejected =
            malloc((size_t)(ex->n_rejected > 0 ? ex->n_rejected : 1) * sizeof *ex->rejected);
        if (!ex->rejected) {
            rc = OOM();
            goto done;
        }
        memcpy(ex->rejected, fr + L, (size_t)(nfr - L) * sizeof *fr);
        if (add_r) ex->rejected[ex->n_rejected - 1] = eos;
    }
done:
    free(pt);
    free(fc);
    free(fr);
    return rc;
}

static void example_free(Example *ex) {
    free(ex->prompt);
    free(ex->chosen);
    free(ex->rejected);
    memset(ex, 0, sizeof *ex);
}

// TRL tokenize_row truncation (see the header comment). Returns 1 when
// anything was cut.
static int truncate_example(Example *ex, int max_length, int mp, TruncationMode mode) {
    int cut = 0;
    int longer = ex->n_chosen > ex->n_rejected ? ex->n_chosen : ex->n_rejected;
    if ((long long)ex->n_prompt + longer > max_length && ex->n_prompt > mp) {
        if (mode == TRUNC_KEEP_END)
            memmove(ex->prompt, ex->prompt + (ex->n_prompt - mp), (size_t)mp * sizeof *ex->prompt);
        ex->n_prompt = mp;
        cut = 1;
    }
    if ((long long)ex->n_prompt + longer > max_length) {
        int keep = max_length - mp;
        if (ex->n_chosen > keep) ex->n_chosen = keep, cut = 1;
        if (ex->n_rejected > keep) ex->n_rejected = keep, cut = 1;
    }
    return cut;
}

// ---------------------------------------------------------------------------
// Loading

void data_free(Dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->n; i++)
        example_free(&ds->rows[i]);
    free(ds->rows);
    ds->rows = NULL;
    ds->n = 0;
}

static int push_example(Dataset *ds, int *cap, Example *ex) {
    if (ds->n == *cap) {
        if (*cap > INT_MAX / 2) return -1;
        int c = *cap ? *cap * 2 : 256;
        Example *rows = realloc(ds->rows, (size_t)c * sizeof *rows);
        if (!rows) return -1;
        ds->rows = rows;
        *cap = c;
    }
    ds->rows[ds->n++] = *ex;
    memset(ex, 0, sizeof *ex);
    return 0;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n' && s[i] != '\f' &&
            s[i] != '\v')
            return 0;
    return 1;
}

// One non-blank line -> ex. ROW_OK / ROW_BAD (why) / ROW_FATAL (err).
static int load_row(const char *line, size_t len, const Recipe *r, const Tokenizer *tok, int vocab,
                    ChatTemplate tpl, int *is_chat, Example *ex, char *why, size_t why_len,
                    BsError *err) {
    const char *end = NULL;
    RowParts rp = {0};
    rp.tpl = tpl;
    *is_chat = 0;
    int rc;
    cJSON *row = cJSON_ParseWithLengthOpts(line, len, &end, 0);
    if (!row) {
        size_t col = end && end >= line && end <= line + len ? (size_t)(end - line) + 1 : 1;
        return BAD("invalid JSON (near column %zu)", col);
    }
    if (end && !is_blank(end, (size_t)(line + len - end))) {
        rc = BAD("invalid JSON (characters after the row's object)");
        goto done;
    }
    if (!cJSON_IsObject(row)) {
        rc = BAD("a row must be a JSON object");
        goto done;
    }
    int preference = r->data == DATA_PREFERENCE;
    rc = preference ? parse_preference(row, vocab, &rp, why, why_len, err)
                    : parse_sft(row, vocab, &rp, why, why_len, err);
    if (rc != ROW_OK) goto done;
    if (rp.pretok) {
        ex->n_prompt = rp.p.n;
        ex->n_chosen = rp.c.n;
        ex->n_rejected = preference ? rp.r.n : 0;
        ex->prompt = ids_copy(rp.p.v, rp.p.n);
        ex->chosen = ids_copy(rp.c.v, rp.c.n);
        ex->rejected = preference ? ids_copy(rp.r.v, rp.r.n) : NULL;
        if (!ex->prompt || !ex->chosen || (preference && !ex->rejected)) rc = OOM();
        goto done;
    }
    if (!tok) {
        rc = BAD("text rows need a tokenizer (this recipe has none: use *_ids rows)");
        goto done;
    }
    rc = tokenize_text(tok, &rp, preference, ex, why, why_len, err);
    if (rc != ROW_OK) goto done;
    // A tokenizer larger than the model's vocabulary would produce ids the model lacks.
    const int *seqs[3] = {ex->prompt, ex->chosen, ex->rejected};
    const int lens[3] = {ex->n_prompt, ex->n_chosen, ex->n_rejected};
    for (int s = 0; s < 3 && rc == ROW_OK; s++)
        for (int i = 0; i < lens[s]; i++)
            if (seqs[s][i] < 0 || seqs[s][i] >= vocab) {
                rc =
                    BAD("token id %d is outside the model's vocabulary [0, %d)", seqs[s][i], vocab);
                break;
            }
done:
    if (rc != ROW_OK) example_free(ex);
    *is_chat = rc == ROW_OK && rp.chat;
    parts_free(&rp);
    cJSON_Delete(row);
    return rc;
}

ChatTemplate data_chat_template(const Recipe *r, const char *tokenizer_path, char *warning,
                                size_t warning_len) {
    if (warning && warning_len) warning[0] = '\0';
    if (r->chat_template != CHAT_AUTO) return r->chat_template;
    ChatTemplate t = CHAT_PLAIN;
    chat_detect(tokenizer_path, &t, warning, warning_len); // -1 still leaves plain + warning
    return t == CHAT_AUTO ? CHAT_PLAIN : t;
}

int data_load(Dataset *ds, const char *path, const Recipe *r, const Tokenizer *tok, int vocab_size,
              int max_length, BsError *err) {
    return data_load_ex(ds, path, r, tok, vocab_size, max_length, NULL, err);
}

int data_load_ex(Dataset *ds, const char *path, const Recipe *r, const Tokenizer *tok,
                 int vocab_size, int max_length, const DataOptions *opt, BsError *err) {
    ChatTemplate tpl = opt && opt->chat_template != CHAT_AUTO ? opt->chat_template
                       : r->chat_template != CHAT_AUTO        ? r->chat_template
                                                              : CHAT_PLAIN;
    const char *param = "";
    if (path && r->train_file && strcmp(path, r->train_file) == 0)
        param = "train_file";
    else if (path && r->eval_file && strcmp(path, r->eval_file) == 0)
        param = "eval_file";
    memset(ds, 0, sizeof *ds);
    if (!path) return bs_fail(err, "dataset_not_found", param, "no data file given");
    if (max_length < 2)
        return bs_fail(err, "invalid_hyperparameter", "max_length",
                       "max_length must be at least 2, got %d", max_length);
    if (vocab_size < 1)
        return bs_fail(err, "invalid_argument", "vocab_size", "vocab_size must be positive");
    // The model's seq_len can cap max_length below max_prompt_length; then the
    // prompt gets half the room, so completions are never truncated to nothing.
    int mp = r->max_prompt_length < max_length ? r->max_prompt_length : max_length / 2;
    if (mp < 1) mp = 1;

    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return bs_fail(err, "dataset_not_found", param, "%s does not exist", path);
        return bs_fail(err, "io", param, "cannot stat %s: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode))
        return bs_fail(err, "dataset_not_found", param, "%s is not a regular file", path);

    LineReader lr = {0};
    Example ex = {0};
    int cap = 0;
    char why[256];
    lr.chunk = malloc(DATA_CHUNK);
    if (!lr.chunk) return bs_fail(err, "out_of_memory", param, "cannot allocate a read buffer");
    lr.gz = gzopen(path, "rb");
    if (!lr.gz) {
        bs_fail(err, errno == ENOENT ? "dataset_not_found" : "io", param, "cannot open %s: %s",
                path, errno ? strerror(errno) : "out of memory");
        goto fail;
    }
    gzbuffer(lr.gz, DATA_CHUNK);
    for (;;) {
        int got = line_next(&lr, param, err);
        if (got < 0) goto fail;
        if (got == 0) break;
        const char *line = lr.line.s ? lr.line.s : "";
        size_t len = lr.line.n;
        // A UTF-8 byte order mark at the start of the file is not part of the row.
        if (lr.line_no == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0)
            line += 3, len -= 3;
        int rc, is_chat = 0;
        if (lr.oversized) {
            ds->n_lines++;
            snprintf(why, sizeof why, "the line is longer than %zu MiB", DATA_MAX_LINE >> 20);
            rc = ROW_BAD;
        } else {
            if (is_blank(line, len)) continue;
            ds->n_lines++;
            rc = load_row(line, len, r, tok, vocab_size, tpl, &is_chat, &ex, why, sizeof why, err);
        }
        if (rc == ROW_FATAL) goto fail;
        if (rc == ROW_BAD) {
            ds->n_bad++;
            if (!ds->first_bad_line) {
                ds->first_bad_line = lr.line_no;
                snprintf(ds->first_bad_reason, sizeof ds->first_bad_reason, "%s", why);
            }
            if (r->bad_rows == BAD_ROWS_ERROR) {
                bs_fail(err, "dataset_schema", param, "line %d: %s", lr.line_no, why);
                goto fail;
            }
            continue;
        }
        ex.line = lr.line_no;
        if (truncate_example(&ex, max_length, mp, r->truncation_mode)) ds->n_truncated++;
        if (ex.n_chosen == 0 || (r->data == DATA_PREFERENCE && ex.n_rejected == 0)) {
            ds->n_dropped++;
            example_free(&ex);
            continue;
        }
        if (push_example(ds, &cap, &ex) < 0) {
            example_free(&ex);
            bs_fail(err, "out_of_memory", param, "cannot store %d rows", ds->n + 1);
            goto fail;
        }
        ds->n_chat += is_chat;
    }
    gzclose(lr.gz);
    free(lr.chunk);
    free(lr.line.s);
    return 0;
fail:
    if (lr.gz) gzclose(lr.gz);
    free(lr.chunk);
    free(lr.line.s);
    data_free(ds);
    return -1;
}
