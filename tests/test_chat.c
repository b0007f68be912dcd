// test_chat.c — chat templates: the target strings of Hugging Face's own
// chat-template tests (@huggingface/jinja's templates test: ChatML base,
// Llama 2, Zephyr with and without the generation prompt), Llama 2's strip()
// and role rules, data.c's plain HH format, TRL's prompt / completion split,
// and detection from tokenizer_config.json. (The hftok_parity test also
// renders generated conversations with the real Jinja templates.)
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat.h"
#include "test_util.h"

static char tmp_root[256];

static const ChatMessage EXAMPLE_CHAT[] = {
    {"user", "Hello, how are you?"},
    {"assistant", "I'm doing great. How can I help you today?"},
    {"user", "I'd like to show off how chat templating works!"},
};

static const ChatMessage EXAMPLE_CHAT_WITH_SYSTEM[] = {
    {"system", "You are a friendly chatbot who always responds in the style of a pirate"},
    {"user", "Hello, how are you?"},
    {"assistant", "I'm doing great. How can I help you today?"},
    {"user", "I'd like to show off how chat templating works!"},
};

static void expect_render(ChatTemplate t, const ChatMessage *m, int n, int gen, const char *want) {
    BsError err = {0};
    char *s = NULL;
    int rc = chat_render(t, m, n, gen, &s, &err);
    CHECK_MSG(rc == 0, "%s: %s", chat_template_name(t), err.message);
    if (rc == 0)
        CHECK_MSG(strcmp(s, want) == 0, "%s rendered\n[%s]\nwant\n[%s]", chat_template_name(t), s,
                  want);
    free(s);
}

static void expect_render_error(ChatTemplate t, const ChatMessage *m, int n, const char *param) {
    BsError err = {0};
    char *s = NULL;
    CHECK_MSG(chat_render(t, m, n, 1, &s, &err) == -1 && s == NULL, "%s rendered \"%s\"",
              chat_template_name(t), s ? s : "");
    CHECK_MSG(strcmp(err.code, "invalid_chat") == 0, "code %s", err.code);
    CHECK_MSG(strcmp(err.param, param) == 0, "param %s, want %s", err.param, param);
    free(s);
}

static void test_reference_targets(void) {
    // @huggingface/jinja tests, TEST_DEFAULT_TEMPLATES._base
    expect_render(CHAT_CHATML, EXAMPLE_CHAT, 3, 0,
                  "<|im_start|>user\nHello, how are you?<|im_end|>\n<|im_start|>assistant\nI'm "
                  "doing great. How can I help you today?<|im_end|>\n<|im_start|>user\nI'd like "
                  "to show off how chat templating works!<|im_end|>\n");
    expect_render(CHAT_CHATML, EXAMPLE_CHAT, 1, 1,
                  "<|im_start|>user\nHello, how are you?<|im_end|>\n<|im_start|>assistant\n");
    // TEST_DEFAULT_TEMPLATES.llama
    expect_render(CHAT_LLAMA2, EXAMPLE_CHAT_WITH_SYSTEM, 4, 0,
                  "<s>[INST] <<SYS>>\nYou are a friendly chatbot who always responds in the style "
                  "of a pirate\n<</SYS>>\n\nHello, how are you? [/INST] I'm doing great. How can "
                  "I help you today? </s><s>[INST] I'd like to show off how chat templating "
                  "works! [/INST]");
    // the template has no generation prompt
    expect_render(CHAT_LLAMA2, EXAMPLE_CHAT, 1, 1, "<s>[INST] Hello, how are you? [/INST]");
    // HuggingFaceH4/zephyr-7b-beta, both settings
    expect_render(CHAT_ZEPHYR, EXAMPLE_CHAT_WITH_SYSTEM, 4, 0,
                  "<|system|>\nYou are a friendly chatbot who always responds in the style of a "
                  "pirate</s>\n<|user|>\nHello, how are you?</s>\n<|assistant|>\nI'm doing great. "
                  "How can I help you today?</s>\n<|user|>\nI'd like to show off how chat "
                  "templating works!</s>\n");
    const ChatMessage heli[] = {
        {"system", "You are a friendly chatbot who always responds in the style of a pirate"},
        {"user", "How many helicopters can a human eat in one sitting?"}};
    expect_render(CHAT_ZEPHYR, heli, 2, 1,
                  "<|system|>\nYou are a friendly chatbot who always responds in the style of a "
                  "pirate</s>\n<|user|>\nHow many helicopters can a human eat in one "
                  "sitting?</s>\n<|assistant|>\n");
}

static void test_template_rules(void) {
    // Llama 2: content.strip() of the whole content (system block included), so
    // the user's leading whitespace after <</SYS>> stays
    const ChatMessage sys[] = {{"system", "  Be brief.  "},
                               {"user", "\t hi \n"},
                               {"assistant", " \xE3\x80\x80yo\xC2\xA0 "}};
    expect_render(CHAT_LLAMA2, sys, 3, 0,
                  "<s>[INST] <<SYS>>\n  Be brief.  \n<</SYS>>\n\n\t hi [/INST] yo </s>");
    const ChatMessage no_sys[] = {{"user", "\t hi \n"}, {"assistant", "x"}};
    expect_render(CHAT_LLAMA2, no_sys, 2, 0, "<s>[INST] hi [/INST] x </s>");
    const ChatMessage empty_sys[] = {{"system", ""}, {"user", "q"}};
    expect_render(CHAT_LLAMA2, empty_sys, 2, 0, "<s>[INST] <<SYS>>\n\n<</SYS>>\n\nq [/INST]");
    expect_render(CHAT_LLAMA2, empty_sys, 1, 0, "");
    const ChatMessage starts_assistant[] = {{"assistant", "a"}, {"user", "b"}};
    expect_render_error(CHAT_LLAMA2, starts_assistant, 2, "messages[0].role");
    const ChatMessage two_users[] = {{"user", "a"}, {"user", "b"}};
    expect_render_error(CHAT_LLAMA2, two_users, 2, "messages[1].role");
    const ChatMessage late_system[] = {{"user", "a"}, {"system", "s"}, {"user", "b"}};
    // passes the alternation test at an odd position and renders nothing
    expect_render(CHAT_LLAMA2, late_system, 3, 0, "<s>[INST] a [/INST]<s>[INST] b [/INST]");
    expect_render_error(CHAT_LLAMA2, late_system, 0, "messages");

    // Zephyr: other roles render nothing; no messages, no generation prompt
    const ChatMessage tool[] = {{"user", "a"}, {"tool", "t"}};
    expect_render(CHAT_ZEPHYR, tool, 2, 1, "<|user|>\na</s>\n<|assistant|>\n");
    expect_render(CHAT_ZEPHYR, tool, 0, 1, "");
    // ChatML takes any role
    expect_render(CHAT_CHATML, tool, 2, 0,
                  "<|im_start|>user\na<|im_end|>\n<|im_start|>tool\nt<|im_end|>\n");

    // plain: data.c's documented example, and every role
    const ChatMessage hi[] = {{"user", "hi"}, {"assistant", "Sure"}};
    expect_render(CHAT_PLAIN, hi, 1, 1, "\n\nHuman: hi\n\nAssistant:");
    expect_render(CHAT_PLAIN, hi, 2, 0, "\n\nHuman: hi\n\nAssistant: Sure");
    const ChatMessage all3[] = {{"system", "s"}, {"user", "u"}, {"assistant", "a"}};
    expect_render(CHAT_PLAIN, all3, 3, 1,
                  "\n\nSystem: s\n\nHuman: u\n\nAssistant: a\n\nAssistant:");
    expect_render_error(CHAT_PLAIN, tool, 2, "messages[1].role");

    BsError err = {0};
    char *s = NULL;
    CHECK(chat_render(CHAT_AUTO, hi, 2, 0, &s, &err) == -1 && s == NULL);
    const ChatMessage null_content[] = {{"user", NULL}};
    CHECK(chat_render(CHAT_CHATML, null_content, 1, 0, &s, &err) == -1);
    CHECK(strcmp(err.param, "messages[0]") == 0);
}

static void expect_pair(ChatTemplate t, const ChatMessage *p, int np, const ChatMessage *c, int nc,
                        const char *want_prompt, const char *want_completion) {
    BsError err = {0};
    char *pt = NULL, *ct = NULL;
    int rc = chat_render_pair(t, p, np, c, nc, &pt, &ct, &err);
    CHECK_MSG(rc == 0, "%s: %s", chat_template_name(t), err.message);
    if (rc == 0) {
        CHECK_MSG(strcmp(pt, want_prompt) == 0, "%s prompt [%s]", chat_template_name(t), pt);
        CHECK_MSG(strcmp(ct, want_completion) == 0, "%s completion [%s]", chat_template_name(t),
                  ct);
    }
    free(pt);
    free(ct);
}

static void test_pairs(void) {
    const ChatMessage p[] = {{"user", "hi"}};
    const ChatMessage c[] = {{"assistant", "Sure"}, {"user", "more"}};
    // plain: exactly how data.c splits HH rows
    expect_pair(CHAT_PLAIN, p, 1, c, 1, "\n\nHuman: hi\n\nAssistant:", " Sure");
    expect_pair(CHAT_PLAIN, p, 1, c, 2, "\n\nHuman: hi\n\nAssistant:", " Sure\n\nHuman: more");
    expect_pair(CHAT_CHATML, p, 1, c, 1, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
                "Sure<|im_end|>\n");
    expect_pair(CHAT_ZEPHYR, p, 1, c, 1, "<|user|>\nhi</s>\n<|assistant|>\n", "Sure</s>\n");
    expect_pair(CHAT_LLAMA2, p, 1, c, 1, "<s>[INST] hi [/INST]", " Sure </s>");
    BsError err = {0};
    char *pt = NULL, *ct = NULL;
    const ChatMessage ends_assistant[] = {{"user", "hi"}, {"assistant", "x"}};
    CHECK(chat_render_pair(CHAT_CHATML, ends_assistant, 2, c, 1, &pt, &ct, &err) == -1);
    CHECK(strcmp(err.code, "invalid_chat") == 0 && pt == NULL && ct == NULL);
    CHECK(chat_render_pair(CHAT_CHATML, p, 1, c, 0, &pt, &ct, &err) == -1);
    // llama2: a completion that breaks the alternation fails in the renderer
    const ChatMessage user_again[] = {{"user", "x"}};
    CHECK(chat_render_pair(CHAT_LLAMA2, p, 1, user_again, 1, &pt, &ct, &err) == -1);
    CHECK(strcmp(err.param, "messages[1].role") == 0);
}

static void write_config(const char *dir, const char *json) {
    char path[600];
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(json, f);
    fclose(f);
}

static void expect_detect(const char *name, const char *config, ChatTemplate want, int want_rc,
                          const char *warning_has) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tmp_root, name);
    if (config)
        write_config(dir, config);
    else
        mkdir(dir, 0700);
    ChatTemplate t = CHAT_AUTO;
    char warning[512];
    int rc = chat_detect(dir, &t, warning, sizeof warning);
    CHECK_MSG(rc == want_rc, "%s: rc %d", name, rc);
    CHECK_MSG(t == want, "%s: detected %s, want %s", name, chat_template_name(t),
              chat_template_name(want));
    if (warning_has)
        CHECK_MSG(strstr(warning, warning_has) != NULL, "%s: warning \"%s\" lacks \"%s\"", name,
                  warning, warning_has);
    else
        CHECK_MSG(warning[0] == '\0', "%s: unexpected warning \"%s\"", name, warning);
}

static void test_detect(void) {
    // Qwen2's ChatML, Llama 2's, Zephyr's and a Gemma-style template
    expect_detect("qwen",
                  "{\"chat_template\": \"{% for message in messages %}{% if loop.first and "
                  "messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful "
                  "assistant<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + "
                  "'\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}\"}",
                  CHAT_CHATML, 0, NULL);
    expect_detect("llama2",
                  "{\"bos_token\": \"<s>\", \"chat_template\": \"{% if messages[0]['role'] == "
                  "'system' %}...{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
                  "{% set content = '<<SYS>>\\\\n' + system_message %}\"}",
                  CHAT_LLAMA2, 0, NULL);
    expect_detect("mistral",
                  "{\"chat_template\": \"{{ bos_token }}{% for message in messages %}{{ '[INST] ' "
                  "+ message['content'] + ' [/INST]' }}{% endfor %}\"}",
                  CHAT_LLAMA2, 0, "Mistral");
    expect_detect("zephyr",
                  "{\"chat_template\": \"{% for message in messages %}\\n{% if message['role'] == "
                  "'user' %}\\n{{ '<|user|>\\n' + message['content'] + eos_token }}\\n{% endif "
                  "%}{% endfor %}\"}",
                  CHAT_ZEPHYR, 0, NULL);
    expect_detect("gemma",
                  "{\"chat_template\": \"{{ bos_token }}{% for message in messages %}{{ "
                  "'<start_of_turn>' + message['role'] }}{% endfor %}\"}",
                  CHAT_PLAIN, 0, "plain");
    expect_detect("list",
                  "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"x\"}, "
                  "{\"name\": \"default\", \"template\": \"<|im_start|>\"}]}",
                  CHAT_CHATML, 0, NULL);
    expect_detect("none", "{\"bos_token\": \"<s>\"}", CHAT_PLAIN, 0, "no chat_template");
    expect_detect("broken", "{\"chat_template\": ", CHAT_PLAIN, -1, "not a valid JSON");
    expect_detect("missing", NULL, CHAT_PLAIN, 0, NULL); // e.g. a llama2.c tokenizer.bin

    // a file inside the directory works too; NULL and a missing path give plain
    char path[600];
    snprintf(path, sizeof path, "%s/zephyr/tokenizer.json", tmp_root);
    ChatTemplate t = CHAT_AUTO;
    char warning[256];
    CHECK(chat_detect(path, &t, warning, sizeof warning) == 0 && t == CHAT_PLAIN);
    FILE *f = fopen(path, "w");
    if (f) fclose(f);
    CHECK(chat_detect(path, &t, warning, sizeof warning) == 0 && t == CHAT_ZEPHYR);
    CHECK(chat_detect(NULL, &t, warning, sizeof warning) == 0 && t == CHAT_PLAIN);
    CHECK(warning[0] == '\0');
    // a short warning buffer still ends in NUL
    snprintf(path, sizeof path, "%s/gemma", tmp_root);
    CHECK(chat_detect(path, &t, warning, 8) == 0 && strlen(warning) == 7);

    BsError err = {0};
    static const char *names[] = {"auto", "plain", "chatml", "llama2", "zephyr"};
    for (int i = 0; i < 5; i++) {
        CHECK(chat_template_parse(names[i], &t, &err) == 0 && (int)t == i);
        CHECK(strcmp(chat_template_name(t), names[i]) == 0);
    }
    CHECK(chat_template_parse("vicuna", &t, &err) == -1);
    CHECK(strcmp(err.code, "invalid_hyperparameter") == 0);
    CHECK(strcmp(err.param, "chat_template") == 0);
}

int main(void) {
    snprintf(tmp_root, sizeof tmp_root, "/tmp/test_chat_XXXXXX");
    if (!mkdtemp(tmp_root)) {
        perror("mkdtemp");
        return 1;
    }
    test_reference_targets();
    test_template_rules();
    test_pairs();
    test_detect();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmp_root);
    return test_summary("chat");
}
