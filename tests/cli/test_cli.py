#!/usr/bin/env python3
"""test_cli.py — drives the real `brewslm` binary: tokenize, generate, preflight
and train (the lesson's YAML recipe, resume, bad inputs; a Hugging Face folder
with a chatml tokenizer trained on conversational rows and exported as hf).
Stdlib only; exits non-zero on the first failed check. Run from the repo root
(meson does)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

BUILD = os.environ.get("BREWSLM_BUILD", "build")
CLI = os.path.join(BUILD, "brewslm")
SHARED = "../shared/models"
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "hf"))
import llama2c_to_hf as conv  # noqa: E402

failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what, file=sys.stderr)
    else:
        print("ok:", what)


def run(*args, cwd=None, timeout=120):
    p = subprocess.run([os.path.abspath(CLI), *args], cwd=cwd, capture_output=True,
                       text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def write_prefs(path, n, seed):
    # A learnable byte-level preference: the chosen reply is polite, the rejected curt.
    import random
    rng = random.Random(seed)
    words = ["sky", "cat", "sea", "moon", "rain", "tree", "lamp", "song"]
    with open(path, "w") as f:
        for _ in range(n):
            w = rng.choice(words)
            f.write(json.dumps({"prompt": f"Tell me about the {w}.",
                                "chosen": f" The {w} is lovely.",
                                "rejected": f" No. {w}!"}) + "\n")


CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{% endif %}")


def hf_chatml(tmp):
    """`brewslm train` on a Hugging Face folder (stories260K, GQA) whose own
    tokenizer is byte-level with <|im_start|> / <|im_end|> added (ids 256, 257:
    fewer ids than the model's 512), no BOS, EOS <|im_end|> and a ChatML
    chat_template: conversational rows go through chatml (auto-detected) and
    the run exports final/ as a Hugging Face folder (output_format: hf)."""
    model = os.path.join(tmp, "data", "stories-hf")
    conv.convert(f"{SHARED}/stories260K.bin", model)
    conv.bytelevel_tokenizer(model, added=("<|im_start|>", "<|im_end|>"),
                             eos_token="<|im_end|>", chat_template=CHATML)
    rng_words = ["sky", "cat", "sea", "moon"]
    with open(os.path.join(tmp, "data", "chat.jsonl"), "w") as f:
        for i in range(8):
            w = rng_words[i % 4]
            f.write(json.dumps({
                "prompt": [{"role": "user", "content": f"Name the {w}."}],
                "chosen": [{"role": "assistant", "content": f"The {w}."}],
                "rejected": [{"role": "assistant", "content": "No."}]}) + "\n")
    with open(os.path.join(tmp, "hf.yaml"), "w") as f:
        f.write("method: dpo\nmodel: data/stories-hf\ntrain_file: data/chat.jsonl\n"
                "output_format: hf\nmax_steps: 3\nlogging_steps: 1\n"
                "per_device_train_batch_size: 4\nlearning_rate: 0.001\nmax_length: 96\n"
                "save_steps: 0\n")
    rc, out, err = run("preflight", "hf.yaml", cwd=tmp)
    rep = json.loads(out) if out.strip() else {}
    check(rc == 0 and rep.get("ok") is True and rep["estimate"]["train_rows"] == 8
          and not any(w["field"] == "chat_template" for w in rep["warnings"]),
          f"HF folder preflight ok, chatml recognised: {out.strip()[:300]}")
    rc, out, err = run("train", "hf.yaml", "--output-dir", "hf-out", cwd=tmp)
    check(rc == 0 and "chatml chat template" in err, f"HF train exit {rc}: {err[-400:]}")
    final = os.path.join(tmp, "hf-out", "final")
    check(f"done: {final}" in err, "the CLI names the final folder")
    check(all(os.path.isfile(os.path.join(final, n)) for n in
              ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"))
          and not os.path.exists(os.path.join(final, "model.bin")),
          f"final/ is a Hugging Face folder: {sorted(os.listdir(final)) if os.path.isdir(final) else None}")
    # The export's own tokenizer: no BOS, the added tokens recognised.
    rc, out, err = run("tokenize", "--tokenizer", final, "<|im_start|>hi")
    check(rc == 0 and json.loads(out) == [256, ord("h"), ord("i")],
          f"tokenize with the exported folder: {out.strip()} {err.strip()}")
    prompt = "<|im_start|>user\nName the cat.<|im_end|>\n<|im_start|>assistant\n"
    rc, out, err = run("generate", "--model", final, "--prompt", prompt, "--temperature", "0",
                       "--max-new-tokens", "12", "--ids")
    o = json.loads(out) if rc == 0 else {}
    check(rc == 0 and o["prompt_ids"][0] == 256 and 257 not in o["ids"]
          and 1 <= len(o["ids"]) <= 12,
          f"generate on the exported folder stops before <|im_end|>: {out.strip()} {err[-200:]}")
    # llama2c cannot be asked for a model it cannot carry: stories' own
    # config.json has rms_norm_eps 1e-05, so 1e-06 is set here.
    with open(os.path.join(model, "config.json")) as f:
        cfg = json.load(f)
    cfg["rms_norm_eps"] = 1e-06
    with open(os.path.join(model, "config.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(tmp, "hf-bin.yaml"), "w") as f:
        f.write(open(os.path.join(tmp, "hf.yaml")).read().replace("output_format: hf",
                                                                   "output_format: llama2c"))
    rc, out, err = run("preflight", "hf-bin.yaml", cwd=tmp)
    rep = json.loads(out) if out.strip() else {}
    check(rc == 3 and [(b["code"], b["field"]) for b in rep.get("blockers", [])]
          == [("invalid_hyperparameter", "output_format")],
          f"output_format llama2c refused for rms_norm_eps 1e-06: {out.strip()[:300]}")
    rc, out, err = run("train", "hf-bin.yaml", "--output-dir", "hf-bin", "--no-preflight",
                       cwd=tmp)
    check(rc == 1 and "output_format" in err
          and not os.path.exists(os.path.join(tmp, "hf-bin", "final")),
          f"the trainer refuses it too, before training: {err[-200:]}")


def main():
    # tokenize: the Llama 2 tokenizer encodes "Hello world" as run.c does.
    rc, out, err = run("tokenize", "--tokenizer", f"{SHARED}/llama2-tokenizer.bin",
                       "--vocab-size", "32000", "Hello world")
    check(rc == 0 and json.loads(out) == [1, 15043, 3186], f"tokenize Hello world -> {out.strip()}")

    # generate: greedy ids on aidreams260K equal llama2.c run.c's.
    rc, out, err = run("generate", "--model", f"{SHARED}/aidreams260K.bin", "--tokenizer",
                       f"{SHARED}/aidreams260K-tok512.bin", "--temperature", "0",
                       "--max-new-tokens", "15", "--ids")
    expect = [319, 459, 355, 260, 275, 429, 339, 315, 374, 327, 446, 262, 421, 392, 275]
    ids = json.loads(out)["ids"] if rc == 0 else None
    check(ids == expect, f"generate greedy ids {ids}")
    rc, out, err = run("generate", "--model", f"{SHARED}/aidreams260K.bin", "--tokenizer",
                       f"{SHARED}/aidreams260K-tok512.bin", "--temperature", "0",
                       "--max-new-tokens", "15")
    check(rc == 0 and out.startswith('"Echoes of vectors unfold, a gentle hum of'),
          f"generate text {out[:60]!r}")

    tmp = tempfile.mkdtemp(prefix="brewslm-cli-")
    try:
        # bad model files are clear errors, never crashes
        trunc = os.path.join(tmp, "trunc.bin")
        with open(f"{SHARED}/stories260K.bin", "rb") as f:
            data = f.read()
        with open(trunc, "wb") as f:
            f.write(data[: len(data) // 2])
        rc, out, err = run("generate", "--model", trunc, "--prompt-ids", "1", "--ids")
        check(rc == 1 and "bytes" in err and "Traceback" not in err,
              f"truncated checkpoint refused: {err.strip()[:120]}")

        os.makedirs(os.path.join(tmp, "data"))
        write_prefs(os.path.join(tmp, "data", "train.jsonl"), 64, 1)
        write_prefs(os.path.join(tmp, "data", "eval.jsonl"), 16, 2)
        # The lesson's recipe, as written, plus a model and files.
        recipe = """recipe:
method: dpo # routes to the AlignmentHandler
beta: 0.1 # how hard to push toward chosen vs stay near the reference
data: preference # rows of {prompt, chosen, rejected}
model_init: {dim: 32, n_layers: 2, n_heads: 4, max_seq_len: 64}
train_file: data/train.jsonl
eval_file: data/eval.jsonl
learning_rate: 0.001
per_device_train_batch_size: 8
max_steps: 12
logging_steps: 1
save_steps: 4
"""
        with open(os.path.join(tmp, "recipe.yaml"), "w") as f:
            f.write(recipe)
        rc, out, err = run("preflight", "recipe.yaml", cwd=tmp)
        rep = json.loads(out) if out.strip() else {}
        check(rc == 0 and rep.get("ok") is True and rep["estimate"]["train_rows"] == 64,
              f"preflight ok: {out.strip()[:200]}")

        rc, out, err = run("train", "recipe.yaml", "--output-dir", "out", cwd=tmp)
        check(rc == 0, f"train exit {rc}: {err[-300:]}")
        rows = [json.loads(l) for l in open(os.path.join(tmp, "out", "metrics.jsonl"))]
        train_rows = [r for r in rows if "loss" in r]
        steps = [r["step"] for r in train_rows]
        check(steps == list(range(1, 13)), f"metrics steps {steps}")
        for key in ("loss", "grad_norm", "learning_rate", "epoch", "rewards/chosen",
                    "rewards/rejected", "rewards/accuracies", "rewards/margins",
                    "logps/chosen", "logps/rejected", "tokens_per_second"):
            check(all(key in r for r in train_rows), f"metric {key} logged every step")
        check(any("eval_rewards/margins" in r for r in rows), "eval rows logged")
        check(train_rows[-1]["rewards/margins"] > train_rows[0]["rewards/margins"],
              "preference margin grows")
        final = os.path.join(tmp, "out", "final", "model.bin")
        check(os.path.getsize(final) > 28, "final model written")
        rc, out, err = run("generate", "--model", final, "--tokenizer", "bytes", "--prompt",
                           "Tell me", "--max-new-tokens", "8", "--ids")
        check(rc == 0 and len(json.loads(out)["ids"]) >= 1, "tuned model generates")
        ckpts = sorted(os.listdir(os.path.join(tmp, "out", "checkpoints")))
        check(len(ckpts) >= 1 and all(c.endswith(".state") for c in ckpts),
              f"training-state checkpoints {ckpts}")

        # Bad recipes: unknown key (exit 2, names the key); a blocked recipe (exit 3).
        with open(os.path.join(tmp, "bad.yaml"), "w") as f:
            f.write(recipe + "betta: 0.2\n")
        rc, out, err = run("train", "bad.yaml", cwd=tmp)
        check(rc == 2 and "betta" in err, f"unknown key refused: {err.strip()[:160]}")
        with open(os.path.join(tmp, "blocked.yaml"), "w") as f:
            f.write(recipe.replace("data/train.jsonl", "data/missing.jsonl"))
        rc, out, err = run("preflight", "blocked.yaml", cwd=tmp)
        rep = json.loads(out) if out.strip() else {}
        codes = [b["code"] for b in rep.get("blockers", [])]
        check(rc == 3 and "dataset_not_found" in codes, f"blocked preflight {codes}")
        # Malformed JSONL lines are reported with their line number.
        with open(os.path.join(tmp, "data", "broken.jsonl"), "w") as f:
            f.write('{"prompt": "a", "chosen": " b", "rejected": " c"}\n{not json\n')
        with open(os.path.join(tmp, "broken.yaml"), "w") as f:
            f.write(recipe.replace("data/train.jsonl", "data/broken.jsonl") + "bad_rows: error\n")
        rc, out, err = run("preflight", "broken.yaml", cwd=tmp)
        rep = json.loads(out) if out.strip() else {}
        msgs = [b["message"] for b in rep.get("blockers", []) if b["code"] == "dataset_schema"]
        check(rc == 3 and msgs and "line 2" in msgs[0], f"bad JSONL line reported: {msgs}")

        hf_chatml(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"cli: {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
