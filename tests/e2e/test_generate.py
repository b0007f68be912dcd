"""e2e: POST /v1/jobs/{id}/generate. A DPO job on a model_init byte-tokenizer
model: base and final greedy completions are deterministic and differ after
training; a job started from it (model: job:ID, pre-tokenized, no tokenizer)
takes prompt_ids, returns ids only, and its base equals the first job's final;
the shared aidreams260K model's base greedy ids from an empty prompt equal
llama2.c run.c's; every bad parameter is answered 400/415/422 naming it, an
unknown job 404, an unfinished job's final model 409, and a burst of long
generations is bounded (503 with Retry-After) without stalling other routes."""

import os
import shutil
import threading
import time

from e2e_lib import (TINY_MODEL, Daemon, check, dpo_recipe, finish, preference_rows, require,
                     write_jsonl)

SHARED = os.environ.get("BREWSLM_SHARED") or os.path.join("..", "shared")
# llama2.c run.c: `run aidreams260K.bin -z aidreams260K-tok512.bin -t 0`
RUNC_IDS = [319, 459, 355, 260, 275, 429, 339, 315, 374, 327, 446, 262, 421, 392, 275]
TERMINAL = ("succeeded", "failed", "cancelled", "blocked")

TOKEN = "gen-token-0123456789"
d = Daemon(token=TOKEN, env={"BREWSLM_TOKEN": TOKEN}).start()


def gen(job_id, body, **kw):
    return d.post("/v1/jobs/%s/generate" % job_id, body, **kw)


def err_of(r):
    try:
        return r.json().get("error") or {}
    except ValueError:
        return {}


def expect_error(r, status, param, what, code=None):
    e = err_of(r)
    ok = r.status == status and e.get("param") == param and (code is None or e.get("code") == code)
    check(ok, "%s: %d naming %s%s: %r" % (what, status, param, " (%s)" % code if code else "", r))


# ---- a DPO job on a model_init byte-tokenizer model ---------------------------------------
write_jsonl(os.path.join(d.data, "pref.jsonl"), preference_rows(48))
r = d.submit(dpo_recipe(steps=30, learning_rate=1e-2))
require(r.status == 201, "DPO job submitted: %r" % r)
dpo = r.json()["id"]
j = d.wait_status(dpo, TERMINAL, timeout=120)
require(j["status"] == "succeeded", "DPO job succeeded: %s %r" % (j["status"], j["error"]))

PROMPT = "say cat:"
outs = {}
for model in ("base", "final"):
    r = gen(dpo, {"prompt": PROMPT, "model": model, "max_new_tokens": 12, "temperature": 0})
    require(r.status == 200, "generate %s: %r" % (model, r))
    o = r.json()
    outs[model] = o
    check(set(o) == {"job_id", "model", "prompt", "text", "prompt_ids", "ids", "finish_reason"},
          "%s: the reply has exactly the documented fields: %s" % (model, sorted(o)))
    check(o["job_id"] == dpo and o["model"] == model and o["prompt"] == PROMPT,
          "%s: job_id, model and prompt are echoed" % model)
    # The byte tokenizer: BOS (256), then one id per UTF-8 byte.
    check(o["prompt_ids"] == [256] + list(PROMPT.encode()),
          "%s: prompt_ids are BOS + the prompt's bytes: %r" % (model, o["prompt_ids"]))
    check(len(o["ids"]) <= 12 and all(0 <= i < 259 for i in o["ids"]),
          "%s: at most max_new_tokens ids inside the vocabulary: %r" % (model, o["ids"]))
    check(o["finish_reason"] == ("length" if len(o["ids"]) == 12 else "eos"),
          "%s: finish_reason matches the id count: %r" % (model, o["finish_reason"]))
    # Without a stop id every generated id is a byte of the text (U+FFFD for
    # bytes that do not form UTF-8).
    want = bytes(i for i in o["ids"] if i < 256).decode("utf-8", "replace").replace("\0", "\ufffd")
    check(o["text"] == want, "%s: text decodes the ids: %r vs %r" % (model, o["text"], want))
    r2 = gen(dpo, {"prompt": PROMPT, "model": model, "max_new_tokens": 12})
    check(r2.status == 200 and r2.json() == o,
          "%s: the same greedy request gives the same reply (temperature defaults to 0)" % model)
check(outs["base"]["ids"] != outs["final"]["ids"],
      "training changed the greedy completion: base %r, final %r"
      % (outs["base"]["ids"], outs["final"]["ids"]))
r = gen(dpo, {"prompt": PROMPT, "max_new_tokens": 12})
check(r.status == 200 and r.json()["model"] == "final" and r.json()["ids"] == outs["final"]["ids"],
      "model defaults to final: %r" % r)
r = gen(dpo, {"prompt": PROMPT, "max_new_tokens": None, "temperature": None, "top_p": None,
              "seed": None, "model": None})
check(r.status == 200 and len(r.json()["ids"]) <= 23, "null means the default: %r" % r)

# Sampling: a seed repeats its sample; different seeds differ somewhere.
samples = {}
for seed in (1, 2, 3, 4):
    body = {"prompt": PROMPT, "model": "base", "temperature": 1.5, "top_p": 1, "seed": seed,
            "max_new_tokens": 20}
    a, b = gen(dpo, body), gen(dpo, body)
    check(a.status == 200 and b.status == 200 and a.json()["ids"] == b.json()["ids"],
          "seed %d: the same sample twice" % seed)
    samples[seed] = tuple(a.json()["ids"]) if a.status == 200 else None
check(len(set(samples.values())) > 1, "different seeds give different samples: %r" % samples)

# The prompt must leave room in the model's 32 positions; max_new_tokens is capped.
r = gen(dpo, {"prompt": "x" * 31, "model": "base"})
expect_error(r, 422, "prompt", "a prompt of 32 ids (seq_len 32)", "prompt_too_long")
r = gen(dpo, {"prompt": "x" * 30, "model": "base", "max_new_tokens": 1024})
check(r.status == 200 and len(r.json()["prompt_ids"]) == 31 and len(r.json()["ids"]) <= 1,
      "a prompt of 31 ids leaves one position: %r" % r)
r = gen(dpo, {"prompt": PROMPT, "model": "base", "max_new_tokens": 1024})
check(r.status == 200 and len(r.json()["ids"]) <= 32 - 9, "max_new_tokens stops at seq_len: %r" % r)

# ---- validation ---------------------------------------------------------------------------
BAD = [
    ({"prompt": PROMPT, "foo": 1}, "foo", "unknown_parameter"),
    ({"prompt": PROMPT, "max_new_tokens": 0}, "max_new_tokens", "invalid_parameter"),
    ({"prompt": PROMPT, "max_new_tokens": 1025}, "max_new_tokens", "invalid_parameter"),
    ({"prompt": PROMPT, "max_new_tokens": 2.5}, "max_new_tokens", "invalid_parameter"),
    ({"prompt": PROMPT, "max_new_tokens": "8"}, "max_new_tokens", "invalid_parameter"),
    ({"prompt": PROMPT, "temperature": -0.1}, "temperature", "invalid_parameter"),
    ({"prompt": PROMPT, "temperature": 5.01}, "temperature", "invalid_parameter"),
    ({"prompt": PROMPT, "temperature": True}, "temperature", "invalid_parameter"),
    ({"prompt": PROMPT, "top_p": 1.5}, "top_p", "invalid_parameter"),
    ({"prompt": PROMPT, "top_p": -1}, "top_p", "invalid_parameter"),
    ({"prompt": PROMPT, "seed": -1}, "seed", "invalid_parameter"),
    ({"prompt": PROMPT, "seed": 1.5}, "seed", "invalid_parameter"),
    ({"prompt": PROMPT, "seed": 2 ** 60}, "seed", "invalid_parameter"),
    ({"prompt": PROMPT, "model": "middle"}, "model", "invalid_parameter"),
    ({"prompt": 5}, "prompt", "invalid_parameter"),
    ({"prompt": "x" * 70000}, "prompt", "prompt_too_long"),
    ({}, "prompt", "missing_parameter"),
    ({"prompt": PROMPT, "prompt_ids": [256]}, "prompt_ids", "invalid_parameter"),
    ({"prompt_ids": []}, "prompt_ids", "invalid_parameter"),
    ({"prompt_ids": [256, -2]}, "prompt_ids", "invalid_parameter"),
    ({"prompt_ids": [256, "a"]}, "prompt_ids", "invalid_parameter"),
    ({"prompt_ids": "256"}, "prompt_ids", "invalid_parameter"),
    ({"prompt_ids": [256, 259], "model": "base"}, "prompt_ids", "invalid_token"),
]
for body, param, code in BAD:
    expect_error(gen(dpo, body), 422, param, "body %.80r" % (body,), code)
hdr = {"Content-Type": "application/json"}
r = gen(dpo, '{"prompt": "a", "prompt": "b"}', headers=hdr)
expect_error(r, 422, "prompt", "a repeated key", "duplicate_parameter")
r = gen(dpo, '{"prompt": ', headers=hdr)
check(r.status == 400 and err_of(r).get("code") == "malformed_json", "malformed JSON: 400: %r" % r)
r = gen(dpo, '["prompt"]', headers=hdr)
check(r.status == 400 and err_of(r).get("code") == "malformed_body", "an array body: 400: %r" % r)
r = gen(dpo, "prompt: hi\n", headers={"Content-Type": "application/yaml"})
check(r.status == 415, "a YAML body: 415: %r" % r)
r = gen(dpo, {"prompt": PROMPT}, token=False)
check(r.status == 401, "no bearer token: 401: %r" % r)
r = gen(dpo, {"prompt": PROMPT}, token="wrong-token-0123456789")
check(r.status == 401, "a wrong bearer token: 401: %r" % r)
r = d.get("/v1/jobs/%s/generate" % dpo)
check(r.status == 405, "GET: 405: %r" % r)
r = gen("job_0123456789abcdef", {"prompt": PROMPT})
check(r.status == 404 and err_of(r).get("code") == "job_not_found", "unknown job: 404: %r" % r)
r = gen("not-a-job", {"prompt": PROMPT})
check(r.status == 404 and err_of(r).get("code") == "job_not_found", "malformed job id: 404: %r" % r)

# ---- a job started from the DPO job: pre-tokenized, no tokenizer --------------------------
write_jsonl(os.path.join(d.data, "pref_ids.jsonl"),
            [{"prompt_ids": [256, 115, 97 + i], "chosen_ids": [40, 41], "rejected_ids": [42, 43]}
             for i in range(8)])
r = d.submit({"method": "dpo", "model": "job:" + dpo, "train_file": "pref_ids.jsonl",
              "max_steps": 3, "learning_rate": 1e-2, "per_device_train_batch_size": 4,
              "max_length": 32, "max_prompt_length": 16, "save_steps": 0})
require(r.status == 201, "job on job:%s submitted: %r" % (dpo, r))
child = r.json()["id"]
j = d.wait_status(child, TERMINAL, timeout=120)
require(j["status"] == "succeeded", "child job succeeded: %s %r" % (j["status"], j["error"]))
IDS = [256] + list(PROMPT.encode())
r = gen(child, {"prompt_ids": IDS, "model": "base", "max_new_tokens": 12})
check(r.status == 200 and r.json()["text"] is None and r.json()["prompt"] is None
      and r.json()["prompt_ids"] == IDS,
      "prompt_ids without a tokenizer: ids only, text null: %r" % r)
check(r.status == 200 and r.json()["ids"] == outs["final"]["ids"],
      "the child's base is the parent's final model: %r vs %r"
      % (r.json().get("ids"), outs["final"]["ids"]))
r = gen(child, {"prompt_ids": IDS, "max_new_tokens": 12})
check(r.status == 200 and r.json()["model"] == "final", "the child's final model: %r" % r)
r = gen(child, {"prompt": PROMPT, "model": "base"})
expect_error(r, 422, "prompt", "prompt for a job without a tokenizer", "no_tokenizer")

# ---- the shared aidreams260K model -------------------------------------------------------
for name in ("aidreams260K.bin", "aidreams260K-tok512.bin"):
    # Copied: symbolic links leaving the data root are refused.
    shutil.copyfile(os.path.join(SHARED, "models", name), os.path.join(d.data, name))
write_jsonl(os.path.join(d.data, "sft.jsonl"),
            [{"prompt": "Dream of", "completion": " a quiet sea of numbers."}] * 4)
r = d.submit({"method": "sft", "model": "aidreams260K.bin", "tokenizer": "aidreams260K-tok512.bin",
              "train_file": "sft.jsonl", "max_steps": 2, "learning_rate": 1e-9,
              "per_device_train_batch_size": 2, "max_length": 64, "save_steps": 0})
require(r.status == 201, "aidreams SFT job submitted: %r" % r)
aid = r.json()["id"]
j = d.wait_status(aid, TERMINAL, timeout=120)
require(j["status"] == "succeeded", "aidreams job succeeded: %s %r" % (j["status"], j["error"]))
r = gen(aid, {"prompt": "", "model": "base", "max_new_tokens": 15, "temperature": 0})
require(r.status == 200, "aidreams base: %r" % r)
o = r.json()
check(o["prompt_ids"] == [1], "an empty prompt is BOS alone: %r" % o["prompt_ids"])
check(o["ids"] == RUNC_IDS, "aidreams base greedy ids equal run.c's: %r" % o["ids"])
check(o["finish_reason"] == "length", "15 of 15 ids: finish_reason length")
check(o["text"].startswith('"Echoes of vectors unfold, a gentle hum'),
      "aidreams text as run.c prints it (no space after BOS): %r" % o["text"])
r = gen(aid, {"prompt": "The", "max_new_tokens": 20})
check(r.status == 200 and r.json()["prompt_ids"][0] == 1 and isinstance(r.json()["text"], str),
      "aidreams final model with a prompt: %r" % r)
os.remove(os.path.join(d.data, "aidreams260K.bin"))
r = gen(aid, {"prompt": "", "model": "base"})
expect_error(r, 404, "model", "the base checkpoint was deleted", "model_not_found")

# ---- an unfinished job; a bounded burst of long generations -------------------------------
write_jsonl(os.path.join(d.data, "ids.jsonl"),
            [{"prompt_ids": [1, 5, 6 + i], "chosen_ids": [7, 8], "rejected_ids": [9, 10]}
             for i in range(8)])
# Tied embeddings make a freshly initialised model repeat its last id, so
# from [1, 2, 3] it never stops early: 1021 ids of a 1024-position model.
BIG = {"dim": 96, "n_layers": 3, "n_heads": 4, "n_kv_heads": 4, "hidden_dim": 192,
       "max_seq_len": 1024, "vocab_size": 512}
r = d.submit(dpo_recipe(train_file="ids.jsonl", steps=1000000, logging_steps=1000,
                        model_init=BIG, seed=1))
require(r.status == 201, "long job submitted: %r" % r)
long_id = r.json()["id"]
st = d.job(long_id)["status"]
r = gen(long_id, {"prompt_ids": [1, 2, 3]})
check(r.status == 409 and err_of(r).get("type") == "conflict"
      and err_of(r).get("code") == "job_not_finished" and err_of(r).get("param") == "model",
      "final model of a %s job: 409 conflict: %r" % (st, r))
r = gen(long_id, {"prompt_ids": [1, 2, 3], "model": "base", "max_new_tokens": 4})
check(r.status == 200 and r.json()["ids"] == [3, 3, 3, 3],
      "the base model of an unfinished job is available: %r" % r)
r = d.post("/v1/jobs/%s/cancel" % long_id)
check(r.status in (200, 202), "long job cancel: %r" % r)
j = d.wait_status(long_id, TERMINAL, timeout=60)
r = gen(long_id, {"prompt_ids": [1, 2, 3]})
check(r.status == 409 and err_of(r).get("code") == "job_not_finished",
      "final model of a %s job: 409: %r" % (j["status"], r))

LONG_BODY = {"prompt_ids": [1, 2, 3], "model": "base", "max_new_tokens": 1024}
t0 = time.time()
r = gen(long_id, LONG_BODY)
single = time.time() - t0
check(r.status == 200 and len(r.json()["ids"]) == 1021 and r.json()["finish_reason"] == "length",
      "a long generation runs to seq_len (%.2f s): %r" % (single, r))
results = []
lock = threading.Lock()


def one():
    resp = gen(long_id, LONG_BODY, timeout=120)
    with lock:
        results.append(resp)


threads = [threading.Thread(target=one) for _ in range(5)]
for t in threads:
    t.start()
time.sleep(min(0.3, single / 3))
t0 = time.time()
r = d.get("/v1/jobs/" + dpo)
other = time.time() - t0
check(r.status == 200 and other < max(1.0, single / 2),
      "other routes answer while generations run (%.3f s; one generation %.2f s)"
      % (other, single))
for t in threads:
    t.join()
codes = sorted(x.status for x in results)
busy = [x for x in results if x.status == 503]
check(all(c in (200, 503) for c in codes), "a burst is answered 200 or 503: %r" % codes)
check(1 <= codes.count(200) and busy, "at most 2 run at once, the rest are refused: %r" % codes)
check(all(x.header("Retry-After") and err_of(x).get("code") == "generation_busy" for x in busy),
      "503 carries Retry-After and code generation_busy: %r" % busy[:1])
r = gen(long_id, dict(LONG_BODY, max_new_tokens=8))
check(r.status == 200, "after the burst the slots are free again: %r" % r)

finish("e2e_generate")
