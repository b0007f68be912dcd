"""e2e: Hugging Face models through brewslmd. aidreams260K is converted to an
HF folder inside the data root (config.json + model.safetensors by
tests/hf/llama2c_to_hf.py, plus a SentencePiece-style tokenizer.json built from
its tokenizer.bin); a DPO job naming the folder (no tokenizer key: the folder's
own) succeeds and exports final/ as an HF folder with the tokenizer files; the
exported folder is sampled by the daemon (base and final) and re-loaded by
`brewslm generate --model <folder>`, which gives the daemon's greedy ids; a
job started from it (model: job:ID) resolves to that folder. A folder whose
config.json sets rope_scaling is refused with a model_unsupported blocker
naming rope_scaling, a truncated model.safetensors with model_invalid."""

import json
import os
import random
import shutil
import subprocess
import sys

from e2e_lib import BUILD, Daemon, check, finish, require, write_jsonl

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "hf"))
import llama2c_to_hf as conv  # noqa: E402

SHARED = os.environ.get("BREWSLM_SHARED") or os.path.join("..", "shared")
MODEL_BIN = os.path.join(SHARED, "models", "aidreams260K.bin")
TOK_BIN = os.path.join(SHARED, "models", "aidreams260K-tok512.bin")
CLI = os.path.join(BUILD, "brewslm")
# llama2.c run.c: `run aidreams260K.bin -z aidreams260K-tok512.bin -t 0`
RUNC_IDS = [319, 459, 355, 260, 275, 429, 339, 315, 374, 327, 446, 262, 421, 392, 275]
TERMINAL = ("succeeded", "failed", "cancelled", "blocked")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

d = Daemon().start()

# ---- the HF folder and the data -----------------------------------------------------
aid = os.path.join(d.data, "aid-hf")
conv.convert(MODEL_BIN, aid)
conv.sentencepiece_tokenizer(TOK_BIN, aid)
rng = random.Random(7)
words = ["sky", "cat", "sea", "moon", "rain", "tree"]
rows = []
for _ in range(24):
    w = rng.choice(words)
    rows.append({"prompt": "Tell me about the %s." % w, "chosen": " The %s is lovely." % w,
                 "rejected": " No."})
write_jsonl(os.path.join(d.data, "pref.jsonl"), rows)


def recipe(model, steps=8, **extra):
    r = {"method": "dpo", "beta": 0.1, "model": model, "train_file": "pref.jsonl",
         "max_steps": steps, "logging_steps": 1, "per_device_train_batch_size": 4,
         "learning_rate": 5e-3, "max_length": 64, "max_prompt_length": 32, "save_steps": 0}
    r.update(extra)
    return r


def gen(job_id, body):
    r = d.post("/v1/jobs/%s/generate" % job_id, body)
    require(r.status == 200, "generate %s %r: %r" % (job_id, body, r))
    return r.json()


def cli_generate(*args):
    p = subprocess.run([CLI, "generate", *args], capture_output=True, text=True, timeout=60)
    require(p.returncode == 0, "brewslm generate %r: rc %d %s" % (args, p.returncode, p.stderr))
    return json.loads(p.stdout)


# ---- a DPO job from the folder --------------------------------------------------------
r = d.submit(recipe("aid-hf"))
require(r.status == 201, "DPO job on an HF folder submitted: %r" % r)
job = r.json()["id"]
j = d.wait_status(job, TERMINAL, timeout=240)
require(j["status"] == "succeeded", "DPO job succeeded: %s %r" % (j["status"], j.get("error")))
final = os.path.join(j["output_dir"], "final")
check(j["summary"]["final_model"] == final,
      "the summary's final_model is the HF folder: %r" % j["summary"]["final_model"])
check(not os.path.exists(os.path.join(final, "model.bin")), "no llama2.c model.bin was written")
for name in ("config.json", "model.safetensors") + TOKENIZER_FILES:
    check(os.path.isfile(os.path.join(final, name)) and os.path.getsize(os.path.join(final, name)),
          "final/%s exported" % name)
for name in TOKENIZER_FILES:
    with open(os.path.join(aid, name), "rb") as a, open(os.path.join(final, name), "rb") as b:
        check(a.read() == b.read(), "final/%s is the input folder's copy" % name)
with open(os.path.join(final, "config.json")) as f:
    cfg = json.load(f)
with open(os.path.join(aid, "config.json")) as f:
    src_cfg = json.load(f)
same = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "vocab_size", "max_position_embeddings",
        "rms_norm_eps", "rope_theta", "tie_word_embeddings", "bos_token_id", "eos_token_id")
check(all(cfg.get(k) == src_cfg.get(k) for k in same),
      "exported config.json keeps the architecture: %r" % {k: (cfg.get(k), src_cfg.get(k))
                                                            for k in same
                                                            if cfg.get(k) != src_cfg.get(k)})
st = conv.read_safetensors(os.path.join(final, "model.safetensors"))
src_st = conv.read_safetensors(os.path.join(aid, "model.safetensors"))
check(sorted(st) == sorted(src_st), "the export has the input's tensor names")
check(any(st[k][2] != src_st[k][2] for k in st), "training changed the exported weights")
check(all(st[k][:2] == src_st[k][:2] for k in st), "dtypes and shapes are the input's")

# ---- sampling: daemon base / final, CLI on the exported folder ------------------------
base0 = gen(job, {"prompt_ids": [1], "model": "base", "max_new_tokens": 15, "temperature": 0})
check(base0["ids"] == RUNC_IDS, "base (the HF folder) greedy ids equal llama2.c run.c's: %r"
      % base0["ids"])
PROMPT = "Tell me about the cat."
outs = {}
for model in ("base", "final"):
    o = gen(job, {"prompt": PROMPT, "model": model, "max_new_tokens": 24, "temperature": 0})
    outs[model] = o
    check(o["prompt_ids"][0] == 1 and o["prompt_ids"].count(1) == 1,
          "%s: the prompt is encoded by the folder's tokenizer with one BOS: %r"
          % (model, o["prompt_ids"]))
    check(isinstance(o["text"], str) and 2 not in o["ids"],
          "%s: text decoded, generation stopped before EOS: %r" % (model, o))
check(outs["base"]["prompt_ids"] == outs["final"]["prompt_ids"],
      "base and final share the tokenizer")
check(outs["base"]["ids"] != outs["final"]["ids"],
      "training changed the greedy completion: %r vs %r" % (outs["base"]["ids"],
                                                            outs["final"]["ids"]))
print("final: %r" % outs["final"]["text"], flush=True)

# `brewslm generate` loads the exported folder (its own tokenizer.json) and
# gives the daemon's greedy ids, from the same prompt ids and from the text.
o = outs["final"]
ids_arg = ",".join(str(i) for i in o["prompt_ids"])
c = cli_generate("--model", final, "--prompt-ids", ids_arg, "--temperature", "0",
                 "--max-new-tokens", "24", "--ids")
check(c["ids"] == o["ids"], "CLI on final/ equals the daemon's final ids: %r vs %r"
      % (c["ids"], o["ids"]))
c = cli_generate("--model", final, "--prompt", PROMPT, "--temperature", "0",
                 "--max-new-tokens", "24", "--ids")
check(c["prompt_ids"] == o["prompt_ids"] and c["ids"] == o["ids"],
      "CLI with a text prompt encodes and samples as the daemon: %r" % c)
c = cli_generate("--model", aid, "--temperature", "0", "--max-new-tokens", "15", "--ids")
check(c["ids"] == RUNC_IDS, "CLI on the input folder: run.c's ids: %r" % c["ids"])

# ---- a job started from the export: job:ID resolves to the HF folder ------------------
r = d.submit(recipe("job:" + job, steps=2))
require(r.status == 201, "job from job:ID submitted: %r" % r)
job2 = r.json()["id"]
j2 = d.wait_status(job2, TERMINAL, timeout=240)
require(j2["status"] == "succeeded", "job:ID job succeeded: %s %r"
        % (j2["status"], j2.get("error")))
final2 = os.path.join(j2["output_dir"], "final")
check(j2["summary"]["final_model"] == final2
      and os.path.isfile(os.path.join(final2, "model.safetensors"))
      and os.path.isfile(os.path.join(final2, "tokenizer.json")),
      "the dependent job exported HF with the tokenizer again: %r" % j2["summary"]["final_model"])
b2 = gen(job2, {"prompt": PROMPT, "model": "base", "max_new_tokens": 24, "temperature": 0})
check(b2["prompt_ids"] == o["prompt_ids"] and b2["ids"] == o["ids"],
      "job2's base is job1's final folder: %r vs %r" % (b2["ids"], o["ids"]))

# ---- folders that cannot be trained ----------------------------------------------------
rope = os.path.join(d.data, "aid-rope")
shutil.copytree(aid, rope)
with open(os.path.join(rope, "config.json")) as f:
    rc = json.load(f)
rc["rope_scaling"] = {"type": "linear", "factor": 2.0}
with open(os.path.join(rope, "config.json"), "w") as f:
    json.dump(rc, f)
r = d.submit(recipe("aid-rope"))
blockers = [(b["code"], b["field"]) for b in r.json().get("blockers", [])] if r.status == 422 \
    else []
check(r.status == 422 and r.json()["error"]["type"] == "preflight_blocked"
      and ("model_unsupported", "rope_scaling") in blockers,
      "rope_scaling: 422 with a model_unsupported blocker naming rope_scaling: %r" % r)

trunc = os.path.join(d.data, "aid-trunc")
shutil.copytree(aid, trunc)
st_path = os.path.join(trunc, "model.safetensors")
with open(st_path, "rb") as f:
    data = f.read()
with open(st_path, "wb") as f:
    f.write(data[:len(data) // 2])
r = d.submit(recipe("aid-trunc"))
blockers = [(b["code"], b["field"]) for b in r.json().get("blockers", [])] if r.status == 422 \
    else []
check(r.status == 422 and ("model_invalid", "model") in blockers,
      "truncated model.safetensors: 422 with a model_invalid blocker: %r" % r)

finish("e2e_hf_daemon")
