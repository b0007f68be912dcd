// chat.h — chat templates for conversational data: lists of {role, content}
// messages rendered to text exactly as transformers' apply_chat_template does
// with the model's Jinja template, for the four templates brewslm knows:
//   chatml  <|im_start|>{role}\n{content}<|im_end|>\n ...; generation prompt
//           <|im_start|>assistant\n (any role)
//   llama2  meta-llama/Llama-2-*-chat: <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n
//           {user} [/INST] {assistant} </s><s>[INST] ... (contents strip()ped,
//           roles must alternate user/assistant; no generation prompt)
//   zephyr  HuggingFaceH4/zephyr-7b-beta: <|system|>\n{..}</s>\n<|user|>\n{..}</s>\n
//           <|assistant|>\n{..}</s>\n; generation prompt <|assistant|>\n
//   plain   the Anthropic HH format of data.c: "\n\nHuman: ", "\n\nAssistant: ",
//           "\n\nSystem: " + content; generation prompt "\n\nAssistant:"
// Recipe key `chat_template`: auto | chatml | llama2 | zephyr | plain; auto
// reads tokenizer_config.json's chat_template (chat_detect).
#ifndef CHAT_H
#define CHAT_H

#include <stddef.h>

#include "bs.h"

typedef enum { CHAT_AUTO = 0, CHAT_PLAIN, CHAT_CHATML, CHAT_LLAMA2, CHAT_ZEPHYR } ChatTemplate;

typedef struct {
    const char *role;    // "system" | "user" | "assistant" (chatml takes any)
    const char *content; // UTF-8
} ChatMessage;

// The recipe value for t ("auto", "plain", "chatml", "llama2", "zephyr").
const char *chat_template_name(ChatTemplate t);
// Parses a recipe value; -1 with err ("invalid_hyperparameter", param
// "chat_template") for anything else.
int chat_template_parse(const char *name, ChatTemplate *out, BsError *err);

// Recognises the template of a Hugging Face tokenizer from the chat_template
// string of tokenizer_config.json in tokenizer_dir (a directory, or a file
// inside it such as tokenizer.json) by its markers: "<|im_start|>" chatml,
// "[INST]" llama2, "<|user|>" zephyr. A list of named templates uses
// "default". Anything else, or no chat_template at all, gives CHAT_PLAIN and
// a warning naming the plain fallback in warning (always NUL-terminated;
// empty when a template was recognised or there is no tokenizer_config.json
// to read, e.g. a llama2.c tokenizer.bin or NULL). Returns 0, or -1 when
// tokenizer_config.json exists but cannot be read or parsed (*out is then
// CHAT_PLAIN and warning says why).
int chat_detect(const char *tokenizer_dir, ChatTemplate *out, char *warning, size_t warning_len);

// Renders n messages with template t into a malloc'd string (*out, caller
// frees). add_generation_prompt appends the assistant header where the
// template has one. Errors ("invalid_chat", param "messages[i].role" or
// "messages"): CHAT_AUTO, a NULL role or content, a role the template rejects
// (plain: not user/assistant/system; llama2: roles not alternating
// user/assistant after an optional leading system message). Messages the
// Jinja template would skip are skipped (zephyr: other roles; llama2: a
// non-user role at an odd position that is not the assistant).
int chat_render(ChatTemplate t, const ChatMessage *msgs, int n, int add_generation_prompt,
                char **out, BsError *err);

// TRL's maybe_apply_chat_template for a prompt and its completion:
// *prompt_text = render(prompt, add_generation_prompt = 1) and
// *completion_text = render(prompt + completion, 0) minus that prefix. Fails
// ("invalid_chat") when the prompt ends with an assistant message, the
// completion is empty, or the prompt's rendering is not a prefix of the whole
// (TRL raises there too). Both strings malloc'd, owned by the caller.
int chat_render_pair(ChatTemplate t, const ChatMessage *prompt, int n_prompt,
                     const ChatMessage *completion, int n_completion, char **prompt_text,
                     char **completion_text, BsError *err);

#endif
