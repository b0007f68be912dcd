"""e2e: what brewslmd answers to recipes that cannot run and to malformed
requests: typed preflight blockers (422 with a top-level blockers array),
invalid recipes (422 naming the field), and 400 / 404 / 405 / 413 / 415, all
as {"error":{"type","message","param","code"}}."""

import json
import os

from e2e_lib import (Daemon, check, dpo_recipe, finish, preference_rows, require, sft_rows,
                     write_jsonl)

d = Daemon().start()
write_jsonl(os.path.join(d.data, "pref.jsonl"), preference_rows(16))
write_jsonl(os.path.join(d.data, "sft.jsonl"), sft_rows(16))
outside = os.path.join(d.dir, "outside.jsonl")  # next to data_root, not inside it
write_jsonl(outside, preference_rows(16))


def is_error(r, status, etype=None, code=None, param=None):
    """The reply has the status and the uniform error shape."""
    ok = r.status == status
    try:
        e = r.json()["error"]
        ok = ok and set(e) == {"type", "message", "param", "code"} and isinstance(e["message"], str)
        ok = ok and (etype is None or e["type"] == etype)
        ok = ok and (code is None or e["code"] == code)
        ok = ok and (param is None or e["param"] == param)
    except (ValueError, KeyError):
        ok = False
    return ok


def blocker_codes(r):
    return [(b["code"], b["field"]) for b in r.json().get("blockers", [])]


def jobs_count():
    return len(d.get("/v1/jobs?limit=100").json()["data"])


# ---- preflight blockers ---------------------------------------------------------
r = d.submit(dpo_recipe(reference_model="models/ref.bin"))
check(is_error(r, 422, "preflight_blocked", "missing_dependency", "reference_model"),
      "missing reference model: 422 preflight_blocked: %r" % r)
check(("missing_dependency", "reference_model") in blocker_codes(r),
      "typed missing_dependency blocker for reference_model: %r" % blocker_codes(r))
b = r.json()["blockers"][0]
check(set(b) == {"code", "field", "message", "hint"}, "blocker shape: %r" % b)

r = d.submit(dpo_recipe(train_file="sft.jsonl"))
check(is_error(r, 422, "preflight_blocked"), "SFT rows for DPO: 422: %r" % r)
check(("dataset_schema", "train_file") in blocker_codes(r),
      "typed dataset_schema blocker: %r" % blocker_codes(r))

for path in ("../outside.jsonl", outside, "sub/../../outside.jsonl"):
    r = d.submit(dpo_recipe(train_file=path))
    check(is_error(r, 422, "preflight_blocked", "path_outside_data_root", "train_file"),
          "train_file %s outside data_root: 422: %r" % (path, r))
r = d.submit(dpo_recipe(output_dir="../escape"))
check(is_error(r, 422, "preflight_blocked", "path_outside_data_root", "output_dir"),
      "output_dir outside data_root: 422: %r" % r)
os.symlink(outside, os.path.join(d.data, "link.jsonl"))
r = d.submit(dpo_recipe(train_file="link.jsonl"))
check(("path_outside_data_root", "train_file") in blocker_codes(r),
      "a symlink leaving data_root is refused: %r" % r)
r = d.submit(dpo_recipe(train_file="missing.jsonl"))
check(("dataset_not_found", "train_file") in blocker_codes(r), "missing data: %r" % r)
r = d.submit(dpo_recipe(model="job:job_0123456789abcdef", model_init=None))
check(r.status in (400, 422), "model_init null is rejected or ignored: %r" % r)
rec = dpo_recipe()
del rec["model_init"]
rec["model"] = "job:job_0123456789abcdef"
r = d.submit(rec)
check(("missing_dependency", "model") in blocker_codes(r), "model job:ID of no job: %r" % r)
check(jobs_count() == 0, "no job was created by a blocked submission")

# POST /v1/preflight answers 200 with the verdict instead.
r = d.post("/v1/preflight", dpo_recipe(train_file="sft.jsonl"))
check(r.status == 200 and r.json()["ok"] is False
      and any(b["code"] == "dataset_schema" for b in r.json()["blockers"]),
      "preflight endpoint: %r" % r)
r = d.post("/v1/preflight", dpo_recipe())
check(r.status == 200 and r.json()["ok"] is True and r.json()["blockers"] == []
      and r.json()["estimate"]["parameters"] > 0, "preflight ok with an estimate: %r" % r)
check(jobs_count() == 0, "preflight creates no job")

# ---- invalid recipes: 422 naming the field ----------------------------------------
r = d.submit(dpo_recipe(learning_rat=0.1))
check(is_error(r, 422, "invalid_request", None, "learning_rat"), "unknown field named: %r" % r)
check("learning_rat" in r.json()["error"]["message"], "message names the unknown field")
r = d.submit(dpo_recipe(beta="high"))
check(is_error(r, 422, "invalid_request", None, "beta"), "beta as a string: %r" % r)
r = d.submit(dpo_recipe(max_steps=2.5))
check(is_error(r, 422, "invalid_request", None, "max_steps"), "fractional max_steps: %r" % r)
r = d.submit(dpo_recipe(per_device_train_batch_size=[1]))
check(is_error(r, 422, "invalid_request", None, "per_device_train_batch_size"),
      "list batch size: %r" % r)
r = d.submit(dpo_recipe(learning_rate=-1))
check(is_error(r, 422, "invalid_request", "invalid_hyperparameter", "learning_rate"),
      "negative learning rate: %r" % r)
r = d.submit(dpo_recipe(method="ppo"))
check(is_error(r, 422, "invalid_request", None, "method"), "unknown method: %r" % r)
r = d.submit(None, yaml_text="method: dpo\nbeta: [1, 2]\ntrain_file: pref.jsonl\n")
check(is_error(r, 422, "invalid_request", None, "beta"), "YAML wrong type: %r" % r)

# ---- malformed bodies: 400 ----------------------------------------------------------
r = d.post("/v1/jobs", '{"method": "dpo", ', headers={"Content-Type": "application/json"})
check(is_error(r, 400, "invalid_request", "malformed_json"), "truncated JSON: %r" % r)
r = d.post("/v1/jobs", '[1, 2]', headers={"Content-Type": "application/json"})
check(is_error(r, 400, "invalid_request"), "JSON array body: %r" % r)
r = d.post("/v1/jobs", "", headers={"Content-Type": "application/json"})
check(is_error(r, 400, "invalid_request", "empty_body"), "empty body: %r" % r)
r = d.post("/v1/jobs", "method: [dpo\n", headers={"Content-Type": "application/yaml"})
check(is_error(r, 400, "invalid_request"), "broken YAML: %r" % r)

# ---- 413 / 415 ---------------------------------------------------------------------
big = json.dumps({"method": "dpo", "pad": "x" * (2 * 1024 * 1024)})
r = d.post("/v1/jobs", big, headers={"Content-Type": "application/json"})
check(is_error(r, 413, "invalid_request", "body_too_large"), "2 MB body: 413: %r" % r)
r = d.post("/v1/jobs", json.dumps(dpo_recipe()), headers={"Content-Type": "text/plain"})
check(is_error(r, 415, "invalid_request", "unsupported_media_type"), "text/plain: 415: %r" % r)
r = d.post("/v1/jobs", json.dumps(dpo_recipe()))
check(is_error(r, 415), "no content type: 415: %r" % r)
for ct in ("application/json; charset=utf-8", "application/x-yaml", "text/yaml"):
    r = d.post("/v1/preflight", json.dumps(dpo_recipe()), headers={"Content-Type": ct})
    check(r.status == 200, "content type %s accepted: %r" % (ct, r))

# ---- 404 / 405 ---------------------------------------------------------------------
r = d.get("/v1/nope")
check(is_error(r, 404, "not_found"), "unknown route: 404: %r" % r)
r = d.get("/v1/jobs/job_0123456789abcdef")
check(is_error(r, 404, "not_found", None, "id"), "unknown job: 404: %r" % r)
r = d.get("/v1/jobs/../../etc/passwd")
check(r.status == 404, "odd job path: 404: %r" % r)
r = d.request("DELETE", "/v1/jobs")
check(is_error(r, 405) and r.header("Allow") == "GET, POST", "DELETE /v1/jobs: 405 + Allow: %r" % r)
r = d.get("/v1/jobs/job_0123456789abcdef/cancel")
check(is_error(r, 405) and r.header("Allow") == "POST", "GET cancel: 405 + Allow POST: %r" % r)
r = d.post("/healthz")
check(is_error(r, 405) and r.header("Allow") == "GET", "POST /healthz: 405")
r = d.get("/v1/jobs/job_0123456789abcdef/metrics?after_step=x")
check(r.status in (400, 404), "bad after_step: %r" % r)

# The daemon is still healthy after all of that.
r = d.submit(dpo_recipe(steps=2))
require(r.status == 201, "a valid job still submits: %r" % r)
j = d.wait_status(r.json()["id"], ("succeeded", "failed", "blocked", "cancelled"), timeout=60)
check(j["status"] == "succeeded", "and succeeds: %r" % j["status"])

finish("e2e_bad_inputs")
