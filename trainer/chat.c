// chat.c — the chat templates of chat.h, written out by hand from their Jinja
// sources (transformers renders with trim_blocks and lstrip_blocks, so the
// newlines after block tags vanish and those after {{ ... }} stay).
//
// ChatML (transformers' default ChatML template):
//   {% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' +
//   message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if
//   add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}
// Llama 2 (meta-llama/Llama-2-7b-chat-hf):
//   {% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}
//   {% set system_message = messages[0]['content'] %}{% else %}{% set
//   loop_messages = messages %}{% set system_message = false %}{% endif %}
//   {% for message in loop_messages %}{% if (message['role'] == 'user') !=
//   (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must
//   alternate user/assistant/user/assistant/...') }}{% endif %}{% if
//   loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n'
//   + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set
//   content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}
//   {{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif
//   message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' +
//   eos_token }}{% endif %}{% endfor %}
// Zephyr (HuggingFaceH4/zephyr-7b-beta), one tag per line:
//   {% for message in messages %} / {% if message['role'] == 'user' %} /
//   {{ '<|user|>\n' + message['content'] + eos_token }} / {% elif ... 'system' %}
//   / {{ '<|system|>\n' + ... }} / {% elif ... 'assistant' %} /
//   {{ '<|assistant|>\n'  + message['content'] + eos_token }} / {% endif %} /
//   {% if loop.last and add_generation_prompt %} / {{ '<|assistant|>' }} /
//   {% endif %} / {% endfor %}
// with bos_token "<s>" and eos_token "</s>" (both models' tokenizers).
#include "chat.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CHAT_MAX_CONFIG ((long)64 << 20) // bytes of a tokenizer_config.json

static const char *const NAMES[] = {"auto", "plain", "chatml", "llama2", "zephyr"};

const char *chat_template_name(ChatTemplate t) {
    return (unsigned)t < sizeof NAMES / sizeof NAMES[0] ? NAMES[t] : "unknown";
}

int chat_template_parse(const char *name, ChatTemplate *out, BsError *err) {
    for (int i = 0; name && i < (int)(sizeof NAMES / sizeof NAMES[0]); i++) {
        if (strcmp(name, NAMES[i]) == 0) {
            *out = (ChatTemplate)i;
            return 0;
        }
    }
    return bs_fail(err, "invalid_hyperparameter", "chat_template",
                   "chat_template \"%.60s\" is not auto, chatml, llama2, zephyr or plain",
                   name ? name : "(null)");
}

// ---------------------------------------------------------------------------
// Rendering

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} Out;

static void put_n(Out *o, const char *s, size_t n) {
    if (o->oom) return;
    if (n > SIZE_MAX / 2 - o->n) {
        o->oom = 1;
        return;
    }
    if (o->n + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->n + n + 1)
            cap *= 2;
        char *p = realloc(o->s, cap);
        if (!p) {
            o->oom = 1;
            return;
        }
        o->s = p;
        o->cap = cap;
    }
    memcpy(o->s + o->n, s, n);
    o->n += n;
    o->s[o->n] = '\0';
}

static void put(Out *o, const char *s) {
    put_n(o, s, strlen(s));
}

// Python's str.isspace for one code point (what Jinja's .strip() removes).
static int py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

// The code point of the UTF-8 sequence at s[0..n), its length in *len;
// a byte that starts no well-formed sequence stands for itself (never space).
static uint32_t cp_at(const unsigned char *s, size_t n, size_t *len) {
    unsigned char c = s[0];
    size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (l == 0 || l > n) {
        *len = 1;
        return 0xFFFFFFFFu;
    }
    for (size_t i = 1; i < l; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *len = 1;
            return 0xFFFFFFFFu;
        }
    }
    *len = l;
    if (l == 1) return c;
    uint32_t v = c & (0xFF >> (l + 1));
    for (size_t i = 1; i < l; i++)
        v = v << 6 | (s[i] & 0x3F);
    return v;
}

// Appends s with leading and trailing Python whitespace removed.
static void put_stripped(Out *o, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t a = 0, len;
    while (a < n && py_space(cp_at(u + a, n - a, &len)))
        a += len;
    size_t b = a, end = a; // end: just past the last non-space character
    while (b < n) {
        uint32_t c = cp_at(u + b, n - b, &len);
        b += len;
        if (!py_space(c)) end = b;
    }
    put_n(o, s + a, end - a);
}

static int bad_role(BsError *err, int i, const char *fmt, const char *role) {
    char param[48];
    snprintf(param, sizeof param, "messages[%d].role", i);
    return bs_fail(err, "invalid_chat", param, fmt, i, role);
}

static int render_llama2(Out *o, const ChatMessage *m, int n, BsError *err) {
    if (n == 0) // messages[0] is undefined in the template
        return bs_fail(err, "invalid_chat", "messages", "the llama2 template needs a message");
    const char *system = NULL;
    int first = 0;
    if (strcmp(m[0].role, "system") == 0) {
        system = m[0].content;
        first = 1;
    }
    for (int i = first; i < n; i++) {
        int k = i - first, user = strcmp(m[i].role, "user") == 0;
        if (user != (k % 2 == 0))
            return bad_role(err, i,
                            "messages[%d] has role \"%.40s\": llama2 conversation roles must "
                            "alternate user/assistant/user/assistant/...",
                            m[i].role);
        Out content = {0};
        if (k == 0 && system) {
            put(&content, "<<SYS>>\n");
            put(&content, system);
            put(&content, "\n<</SYS>>\n\n");
        }
        put(&content, m[i].content);
        if (content.oom) {
            free(content.s);
            return bs_fail(err, "out_of_memory", "messages", "cannot render the chat");
        }
        if (user) {
            put(o, "<s>[INST] ");
            put_stripped(o, content.s, content.n);
            put(o, " [/INST]");
        } else if (strcmp(m[i].role, "assistant") == 0) {
            put(o, " ");
            put_stripped(o, content.s, content.n);
            put(o, " </s>");
        } // another role at an odd position renders nothing, as the template
        free(content.s);
    }
    return 0;
}

int chat_render(ChatTemplate t, const ChatMessage *msgs, int n, int add_generation_prompt,
                char **out, BsError *err) {
    *out = NULL;
    if (t == CHAT_AUTO || (unsigned)t > CHAT_ZEPHYR)
        return bs_fail(err, "invalid_chat", "chat_template",
                       "chat_template must be resolved (chat_detect) before rendering");
    if (n < 0 || (n > 0 && !msgs))
        return bs_fail(err, "invalid_chat", "messages", "invalid message list");
    for (int i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content) {
            char param[48];
            snprintf(param, sizeof param, "messages[%d]", i);
            return bs_fail(err, "invalid_chat", param, "messages[%d] needs a role and a content",
                           i);
        }
    }
    Out o = {0};
    put(&o, ""); // an empty conversation renders to ""
    switch (t) {
    case CHAT_CHATML:
        for (int i = 0; i < n; i++) {
            put(&o, "<|im_start|>");
            put(&o, msgs[i].role);
            put(&o, "\n");
            put(&o, msgs[i].content);
            put(&o, "<|im_end|>\n");
        }
        if (add_generation_prompt) put(&o, "<|im_start|>assistant\n");
        break;
    case CHAT_LLAMA2:
        if (render_llama2(&o, msgs, n, err) != 0) {
            free(o.s);
            return -1;
        }
        break;
    case CHAT_ZEPHYR:
        for (int i = 0; i < n; i++) {
            const char *r = msgs[i].role;
            const char *head = strcmp(r, "user") == 0        ? "<|user|>\n"
                               : strcmp(r, "system") == 0    ? "<|system|>\n"
                               : strcmp(r, "assistant") == 0 ? "<|assistant|>\n"
                                                             : NULL;
            if (head) {
                put(&o, head);
                put(&o, msgs[i].content);
                put(&o, "</s>\n");
            }
            if (i == n - 1 && add_generation_prompt) put(&o, "<|assistant|>\n");
        }
        break;
    default: // CHAT_PLAIN: data.c's Anthropic HH rendering
        for (int i = 0; i < n; i++) {
            const char *r = msgs[i].role;
            const char *head = strcmp(r, "user") == 0        ? "\n\nHuman: "
                               : strcmp(r, "assistant") == 0 ? "\n\nAssistant: "
                               : strcmp(r, "system") == 0    ? "\n\nSystem: "
                                                             : NULL;
            if (!head) {
                free(o.s);
                return bad_role(err, i,
                                "messages[%d] has role \"%.40s\" (expected user, assistant or "
                                "system)",
                                r);
            }
            put(&o, head);
            put(&o, msgs[i].content);
        }
        if (add_generation_prompt) put(&o, "\n\nAssistant:");
        break;
    }
    if (o.oom) {
        free(o.s);
        return bs_fail(err, "out_of_memory", "messages", "cannot render the chat");
    }
    *out = o.s;
    return 0;
}

int chat_render_pair(ChatTemplate t, const ChatMessage *prompt, int n_prompt,
                     const ChatMessage *completion, int n_completion, char **prompt_text,
                     char **completion_text, BsError *err) {
    *prompt_text = NULL;
    *completion_text = NULL;
    if (n_completion <= 0 || n_prompt < 0 || n_prompt > INT_MAX - n_completion)
        return bs_fail(err, "invalid_chat", "messages", "a completion needs at least one message");
    if (n_prompt > 0 && prompt[n_prompt - 1].role &&
        strcmp(prompt[n_prompt - 1].role, "assistant") == 0)
        return bs_fail(err, "invalid_chat", "prompt", "the prompt ends with an assistant message");
    ChatMessage *all = malloc((size_t)(n_prompt + n_completion) * sizeof *all);
    if (!all) return bs_fail(err, "out_of_memory", "messages", "cannot render the chat");
    if (n_prompt) memcpy(all, prompt, (size_t)n_prompt * sizeof *all);
    memcpy(all + n_prompt, completion, (size_t)n_completion * sizeof *all);
    char *p = NULL, *whole = NULL;
    int rc = -1;
    if (chat_render(t, prompt, n_prompt, 1, &p, err) != 0 ||
        chat_render(t, all, n_prompt + n_completion, 0, &whole, err) != 0)
        goto done;
    size_t pl = strlen(p);
    if (strncmp(whole, p, pl) != 0) {
        bs_fail(err, "invalid_chat", "messages",
                "the %s rendering of the prompt is not a prefix of prompt + completion",
                chat_template_name(t));
        goto done;
    }
    memmove(whole, whole + pl, strlen(whole + pl) + 1);
    *prompt_text = p;
    *completion_text = whole;
    p = whole = NULL;
    rc = 0;
done:
    free(p);
    free(whole);
    free(all);
    return rc;
}

// ---------------------------------------------------------------------------
// Detection

static cJSON *read_config(const char *path, char *warning, size_t warning_len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(warning, warning_len, "cannot read %s; using the plain chat template", path);
        return NULL;
    }
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || size > CHAT_MAX_CONFIG || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        snprintf(warning, warning_len, "cannot read %s; using the plain chat template", path);
        return NULL;
    }
    char *buf = malloc((size_t)size + 1);
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        fclose(f);
        snprintf(warning, warning_len, "cannot read %s; using the plain chat template", path);
        return NULL;
    }
    fclose(f);
    cJSON *root = cJSON_ParseWithLength(buf, (size_t)size);
    free(buf);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        snprintf(warning, warning_len,
                 "%s is not a valid JSON object; using the plain chat template", path);
        return NULL;
    }
    return root;
}

int chat_detect(const char *tokenizer_dir, ChatTemplate *out, char *warning, size_t warning_len) {
    char path[4096];
    *out = CHAT_PLAIN;
    if (warning && warning_len) warning[0] = '\0';
    char scratch[8];
    if (!warning || warning_len == 0) {
        warning = scratch;
        warning_len = sizeof scratch;
    }
    if (!tokenizer_dir) return 0;
    struct stat st;
    if (stat(tokenizer_dir, &st) != 0) return 0;
    if (S_ISDIR(st.st_mode)) {
        snprintf(path, sizeof path, "%s/tokenizer_config.json", tokenizer_dir);
    } else {
        const char *slash = strrchr(tokenizer_dir, '/');
        int dl = slash ? (int)(slash - tokenizer_dir) : 1;
        snprintf(path, sizeof path, "%.*s/tokenizer_config.json", dl, slash ? tokenizer_dir : ".");
    }
    if (stat(path, &st) != 0) return 0; // a llama2.c tokenizer: nothing to detect
    cJSON *cfg = read_config(path, warning, warning_len);
    if (!cfg) return -1;
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    const char *tpl = cJSON_IsString(ct) ? ct->valuestring : NULL;
    if (cJSON_IsArray(ct)) { // [{name, template}, ...]: transformers takes "default"
        const cJSON *e;
        cJSON_ArrayForEach(e, ct) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *tt = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (cJSON_IsString(name) && strcmp(name->valuestring, "default") == 0 &&
                cJSON_IsString(tt))
                tpl = tt->valuestring;
        }
    }
    if (!tpl) {
        snprintf(warning, warning_len,
                 "%s has no chat_template; using the plain chat template "
                 "(\"\\n\\nHuman: \" / \"\\n\\nAssistant: \")",
                 path);
    } else if (strstr(tpl, "<|im_start|>")) {
        *out = CHAT_CHATML;
    } else if (strstr(tpl, "[INST]")) {
        *out = CHAT_LLAMA2;
        if (!strstr(tpl, "<<SYS>>"))
            snprintf(warning, warning_len,
                     "the chat_template of %s uses [INST] without <<SYS>> (Mistral style?); "
                     "rendering with the llama2 template, which may differ in spacing",
                     path);
    } else if (strstr(tpl, "<|user|>")) {
        *out = CHAT_ZEPHYR;
    } else {
        snprintf(warning, warning_len,
                 "the chat_template of %s is not one brewslm knows (chatml, llama2, zephyr); "
                 "using the plain chat template (\"\\n\\nHuman: \" / \"\\n\\nAssistant: \")",
                 path);
    }
    cJSON_Delete(cfg);
    return 0;
}
