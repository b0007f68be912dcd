#!/usr/bin/python3
"""gen_golden.py — PyTorch reference runs for tests/test_golden.c.

A self-contained PyTorch re-implementation of what brewslm computes, used to
write the golden files the C test replays:

  * the llama2.c Llama (RMSNorm eps 1e-5, adjacent-pair RoPE as llama2.c's
    model.py / run.c, grouped-query attention, SwiGLU, shared classifier),
    loaded from ../shared/models/stories260K.bin;
  * TRL's objectives from per-token log-probs: SFT (completion-only token
    mean), DPO (sigmoid, ipo, hinge, robust; reference = frozen copy of the
    start), ORPO (length-averaged log-probs, NLL over the whole chosen
    sequence);
  * Hugging Face Trainer's step: loss / gradient_accumulation_steps backward
    per micro-batch, torch.nn.utils.clip_grad_norm_, torch.optim.AdamW with
    decay on the matrices only, transformers' LambdaLR schedules, and what it
    logs (see README.md for the exact logging conventions).

Run from anywhere with Debian's torch: /usr/bin/python3 tests/golden/gen_golden.py
It rewrites tests/golden/{pairs,sft}.jsonl and tests/golden/<config>.json.
"""

import argparse
import json
import math
import os
import random
import struct
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
MODEL_REL = "../shared/models/stories260K.bin"  # relative to the repo root, as the tests see it
PAIRS_REL = "tests/golden/pairs.jsonl"
SFT_REL = "tests/golden/sft.jsonl"

# llama2.c v0 tensor order (the freq_cis tables sit between rms_final and wcls).
TENSORS = ["tok_embeddings", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3",
           "rms_final"]
NO_DECAY = {"rms_att", "rms_ffn", "rms_final"}  # norm weights: vectors, no weight decay


# ---------------------------------------------------------------------------
# model

def load_llama2c(path):
    with open(path, "rb") as f:
        raw = f.read()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hs = dim // n_heads
    kvd = n_kv * hs
    shapes = {
        "tok_embeddings": (vocab, dim),
        "rms_att": (n_layers, dim),
        "wq": (n_layers, dim, dim),
        "wk": (n_layers, kvd, dim),
        "wv": (n_layers, kvd, dim),
        "wo": (n_layers, dim, dim),
        "rms_ffn": (n_layers, dim),
        "w1": (n_layers, hidden, dim),
        "w2": (n_layers, dim, hidden),
        "w3": (n_layers, hidden, dim),
        "rms_final": (dim,),
    }
    floats = torch.frombuffer(bytearray(raw[28:]), dtype=torch.float32)
    off = 0
    weights = {}
    for name in TENSORS:
        n = math.prod(shapes[name])
        weights[name] = floats[off:off + n].clone().view(shapes[name])
        off += n
    off += seq_len * hs  # freq_cis_real + freq_cis_imag, (seq_len, hs/2) each
    if not shared:
        raise SystemExit("expected a shared classifier in %s" % path)
    if off != floats.numel():
        raise SystemExit("size mismatch in %s: %d floats, expected %d" % (path, floats.numel(), off))
    cfg = dict(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
               vocab_size=vocab, seq_len=seq_len, shared_classifier=shared)
    return cfg, weights


class Llama(torch.nn.Module):
    """llama2.c's Transformer with the weights stacked per layer as in the file."""

    def __init__(self, cfg, weights, dtype):
        super().__init__()
        self.cfg = cfg
        self.w = torch.nn.ParameterDict(
            {k: torch.nn.Parameter(v.to(dtype).clone()) for k, v in weights.items()})
        hs = cfg["dim"] // cfg["n_heads"]
        # llama2.c model.py precompute_freqs_cis(head_size, seq_len), theta 10000
        freqs = 1.0 / (10000.0 ** (torch.arange(0, hs, 2)[: hs // 2].float() / hs))
        t = torch.arange(cfg["seq_len"])
        ang = torch.outer(t, freqs).float()
        self.cos = torch.cos(ang).to(dtype)
        self.sin = torch.sin(ang).to(dtype)

    @staticmethod
    def rmsnorm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    def rope(self, x, T):
        # x (T, heads, hs): pairs (2i, 2i+1) rotate by pos * freq_i, as run.c
        xr, xi = x.reshape(T, x.shape[1], -1, 2).unbind(-1)
        c = self.cos[:T].unsqueeze(1)
        s = self.sin[:T].unsqueeze(1)
        return torch.stack([xr * c - xi * s, xr * s + xi * c], dim=-1).flatten(2)

    def forward(self, tokens):
        cfg, w = self.cfg, self.w
        T = tokens.shape[0]
        D, NH, NKV = cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"]
        HS = D // NH
        x = w["tok_embeddings"][tokens]  # (T, D)
        mask = torch.full((T, T), float("-inf"), dtype=x.dtype).triu(1)
        for l in range(cfg["n_layers"]):
            xb = self.rmsnorm(x, w["rms_att"][l])
            q = (xb @ w["wq"][l].t()).view(T, NH, HS)
            k = (xb @ w["wk"][l].t()).view(T, NKV, HS)
            v = (xb @ w["wv"][l].t()).view(T, NKV, HS)
            q, k = self.rope(q, T), self.rope(k, T)
            # grouped-query attention: head h reads kv head h // (NH / NKV)
            rep = NH // NKV
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            att = torch.einsum("thd,shd->hts", q, k) / math.sqrt(HS) + mask
            att = F.softmax(att, dim=-1)
            o = torch.einsum("hts,shd->thd", att, v).reshape(T, D)
            x = x + o @ w["wo"][l].t()
            xb = self.rmsnorm(x, w["rms_ffn"][l])
            h = F.silu(xb @ w["w1"][l].t()) * (xb @ w["w3"][l].t())
            x = x + h @ w["w2"][l].t()
        x = self.rmsnorm(x, w["rms_final"])
        return x @ w["tok_embeddings"].t()  # shared classifier, (T, V)

    def token_logps(self, tokens):
        """(T-1,) log p(tokens[i+1] | tokens[..i]) in the model's dtype."""
        logits = self.forward(tokens)
        lp = F.log_softmax(logits[:-1], dim=-1)
        return lp.gather(1, tokens[1:].unsqueeze(1)).squeeze(1)


# ---------------------------------------------------------------------------
# data: a fixed pre-tokenized set (ids < vocab), deterministic

def make_data():
    rng = random.Random(20240611)
    pairs, sft = [], []
    for i in range(8):
        # total sequence lengths (prompt + completion) from 5 to 40 tokens
        np_ = rng.randint(2, 10)
        nc = rng.randint(3, 40 - np_)
        nr = rng.randint(3, 40 - np_)
        prompt = [1] + [rng.randint(2, 511) for _ in range(np_ - 1)]
        pairs.append({"prompt_ids": prompt,
                      "chosen_ids": [rng.randint(2, 511) for _ in range(nc)],
                      "rejected_ids": [rng.randint(2, 511) for _ in range(nr)]})
    # make the extremes present: one short pair (5 tokens) and one of 40
    pairs[0]["prompt_ids"] = pairs[0]["prompt_ids"][:2]
    pairs[0]["chosen_ids"] = pairs[0]["chosen_ids"][:3]
    pairs[1]["rejected_ids"] = (pairs[1]["rejected_ids"] * 40)[:40 - len(pairs[1]["prompt_ids"])]
    for i in range(8):
        np_ = rng.randint(1, 12)
        nc = rng.randint(4, 40 - np_)
        sft.append({"prompt_ids": [1] + [rng.randint(2, 511) for _ in range(np_ - 1)],
                    "completion_ids": [rng.randint(2, 511) for _ in range(nc)]})
    return pairs, sft


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")


# ---------------------------------------------------------------------------
# objectives (TRL semantics; sums and losses in float64 from the model's
# per-token log-probs, as brewslm's AlignmentHandler)

def logsigmoid(x):
    return F.logsigmoid(x)


def seq_sums(model, prompt, completion, score_prompt=False):
    """Sum of completion-token log-probs (and, score_prompt, of every scored token)."""
    toks = torch.tensor(prompt + completion, dtype=torch.long)
    lp = model.token_logps(toks).double()  # position i predicts token i+1
    comp = lp[len(prompt) - 1:].sum()
    allsum = lp.sum() if score_prompt else None
    return comp, allsum, lp.numel()


def sft_loss(model, rows):
    total = sum(len(r["completion_ids"]) for r in rows)
    s = 0
    for r in rows:
        c, _, _ = seq_sums(model, r["prompt_ids"], r["completion_ids"])
        s = s + c
    return -s / total, {}


def dpo_loss(model, ref, rows, loss_type, beta, eps):
    pc, pr, rc, rr = [], [], [], []
    for r in rows:
        lc, lr_ = len(r["chosen_ids"]), len(r["rejected_ids"])
        # TRL averages over the completion for ipo only
        nc, nr = (lc, lr_) if loss_type == "ipo" else (1, 1)
        pc.append(seq_sums(model, r["prompt_ids"], r["chosen_ids"])[0] / nc)
        pr.append(seq_sums(model, r["prompt_ids"], r["rejected_ids"])[0] / nr)
        with torch.no_grad():
            rc.append(seq_sums(ref, r["prompt_ids"], r["chosen_ids"])[0] / nc)
            rr.append(seq_sums(ref, r["prompt_ids"], r["rejected_ids"])[0] / nr)
    pc, pr, rc, rr = (torch.stack(v) for v in (pc, pr, rc, rr))
    z = (pc - pr) - (rc - rr)
    if loss_type == "sigmoid":
        losses = -logsigmoid(beta * z) * (1 - eps) - logsigmoid(-beta * z) * eps
    elif loss_type == "robust":
        losses = (-logsigmoid(beta * z) * (1 - eps) + logsigmoid(-beta * z) * eps) / (1 - 2 * eps)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * z)
    elif loss_type == "ipo":
        losses = (z - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(loss_type)
    cr = beta * (pc - rc).detach()
    rj = beta * (pr - rr).detach()
    m = {
        "rewards/chosen": cr.mean().item(),
        "rewards/rejected": rj.mean().item(),
        "rewards/accuracies": (cr > rj).double().mean().item(),
        "rewards/margins": (cr - rj).mean().item(),
        "logps/chosen": pc.detach().mean().item(),
        "logps/rejected": pr.detach().mean().item(),
    }
    return losses.mean(), m


def log1mexp(x):
    # log(1 - exp(x)), x < 0 (TRL writes log1p(-exp(x)); same value, stabler)
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_loss(model, rows, beta):
    ac, ar, all_sum, all_n = [], [], 0, 0
    for r in rows:
        c, a, n = seq_sums(model, r["prompt_ids"], r["chosen_ids"], score_prompt=True)
        ac.append(c / len(r["chosen_ids"]))
        all_sum = all_sum + a
        all_n += n
        ar.append(seq_sums(model, r["prompt_ids"], r["rejected_ids"])[0] / len(r["rejected_ids"]))
    ac, ar = torch.stack(ac), torch.stack(ar)
    # cross-entropy over every scored token of the chosen half (prompt included)
    nll = -all_sum / all_n
    log_odds = (ac - ar) - (log1mexp(ac) - log1mexp(ar))
    ratio = logsigmoid(log_odds)
    loss = nll - (beta * ratio).mean()
    cr, rj = beta * ac.detach(), beta * ar.detach()
    m = {
        "rewards/chosen": cr.mean().item(),
        "rewards/rejected": rj.mean().item(),
        "rewards/accuracies": (cr > rj).double().mean().item(),
        "rewards/margins": (cr - rj).mean().item(),
        "logps/chosen": ac.detach().mean().item(),
        "logps/rejected": ar.detach().mean().item(),
        "nll_loss": nll.item(),
        "log_odds_ratio": ratio.mean().item(),
        "log_odds_chosen": log_odds.mean().item(),
    }
    return loss, m


# ---------------------------------------------------------------------------
# schedules: transformers' get_{constant,linear,cosine}_schedule_with_warmup

def lr_lambda(kind, warmup, total):
    def f(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        if kind == "constant":
            return 1.0
        if kind == "linear":
            return max(0.0, float(total - step) / float(max(1, total - warmup)))
        progress = float(step - warmup) / float(max(1, total - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))
    return f


# ---------------------------------------------------------------------------
# one run

def f32(x):
    """A float32 value as the shortest decimal that round-trips it."""
    return float("%.9g" % x)


def run(cfg_model, weights, rows, recipe, dtype):
    model = Llama(cfg_model, weights, dtype)
    ref = Llama(cfg_model, weights, dtype)  # frozen copy of the start
    for p in ref.parameters():
        p.requires_grad_(False)
    decay = [model.w[n] for n in TENSORS if n not in NO_DECAY]
    no_decay = [model.w[n] for n in TENSORS if n in NO_DECAY]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe["learning_rate"], betas=(recipe["adam_beta1"], recipe["adam_beta2"]),
        eps=recipe["adam_epsilon"])
    total = recipe["max_steps"]
    warmup = recipe["warmup_steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(recipe["lr_scheduler_type"], warmup, total))

    bs = recipe["per_device_train_batch_size"]
    accum = recipe["gradient_accumulation_steps"]
    batches = [rows[i:i + bs] for i in range(0, len(rows), bs)]  # shuffle false, no drop_last
    method = recipe["method"]

    def objective(mb):
        if method == "sft":
            return sft_loss(model, mb)
        if method == "dpo":
            return dpo_loss(model, ref, mb, recipe["loss_type"], recipe["beta"],
                            recipe["label_smoothing"])
        return orpo_loss(model, mb, recipe["beta"])

    # per-token log-probs of the first micro-batch before any update, in the
    # packing order (chosen_0..chosen_B-1, rejected_0..rejected_B-1)
    forward = []
    with torch.no_grad():
        seqs = []
        for r in batches[0]:
            seqs.append(r["prompt_ids"] + (r["completion_ids"] if method == "sft"
                                           else r["chosen_ids"]))
        if method != "sft":
            seqs += [r["prompt_ids"] + r["rejected_ids"] for r in batches[0]]
        for s in seqs:
            lp = model.token_logps(torch.tensor(s, dtype=torch.long))
            forward.append({"tokens": s, "logps": [f32(v) for v in lp.tolist()]})

    steps, micro = [], 0
    for step in range(1, total + 1):
        opt.zero_grad(set_to_none=True)
        loss_logged, mets = 0.0, []
        for _ in range(accum):
            mb = batches[micro % len(batches)]
            micro += 1
            loss, m = objective(mb)
            (loss / accum).backward()
            loss_logged += loss.item() / accum
            mets.append(m)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["max_grad_norm"])
        lr_used = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        row = {"step": step, "loss": loss_logged, "grad_norm": grad_norm.item(),
               "learning_rate": lr_used, "learning_rate_after_step": sched.get_last_lr()[0],
               "epoch": micro / len(batches)}
        for k in mets[0]:
            row[k] = sum(m[k] for m in mets) / len(mets)
        steps.append(row)

    final = {}
    for n in TENSORS:
        t = model.w[n].detach().double().flatten()
        cnt = t.numel()
        idx = [(i * cnt) // 64 for i in range(64)]
        final[n] = {
            "shape": list(model.w[n].shape),
            "count": cnt,
            "l2": t.norm().item(),
            "first": [f32(v) for v in t[:64].tolist()],
            "sample_index": idx,
            "sample": [f32(t[i].item()) for i in idx],
        }
    return steps, forward, final


CONFIGS = [
    # name, method, loss_type, label_smoothing, data file, accumulation, schedule, warmup,
    # weight decay
    ("sft", "sft", "sigmoid", 0.0, SFT_REL, 1, "linear", 1, 0.01),
    ("dpo_sigmoid", "dpo", "sigmoid", 0.0, PAIRS_REL, 1, "linear", 1, 0.01),
    ("dpo_ipo", "dpo", "ipo", 0.0, PAIRS_REL, 1, "linear", 1, 0.01),
    ("dpo_hinge", "dpo", "hinge", 0.0, PAIRS_REL, 1, "linear", 1, 0.01),
    ("dpo_robust", "dpo", "robust", 0.1, PAIRS_REL, 1, "linear", 1, 0.01),
    ("orpo", "orpo", "sigmoid", 0.0, PAIRS_REL, 1, "linear", 1, 0.01),
    # accumulation 2 (one optimizer step per epoch), cosine without warmup so
    # every step moves the weights, and a weight decay large enough that its
    # effect (lr * wd * |w|) stands well above float32 noise in the weights
    ("dpo_sigmoid_accum2", "dpo", "sigmoid", 0.0, PAIRS_REL, 2, "cosine", 0, 0.5),
]


def recipe_for(name, method, loss_type, ls, data, accum, sched, warmup, wd):
    r = {
        "method": method,
        "data": "sft" if method == "sft" else "preference",
        "beta": 0.1,
        "learning_rate": 1e-4,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": accum,
        "max_steps": 3,
        "lr_scheduler_type": sched,
        "warmup_steps": warmup,
        "weight_decay": wd,
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "adam_epsilon": 1e-8,
        "max_grad_norm": 1.0,
        "shuffle": False,
        "logging_steps": 1,
        "seed": 42,
        "save_steps": 0,
    }
    if method == "dpo":  # the recipe refuses DPO-only keys for other methods
        r["loss_type"] = loss_type
        r["label_smoothing"] = ls
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="generate just this config")
    ap.add_argument("--no-f64", action="store_true",
                    help="skip the float64 rerun that measures float32 noise")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    pairs, sft = make_data()
    write_jsonl(os.path.join(ROOT, PAIRS_REL), pairs)
    write_jsonl(os.path.join(ROOT, SFT_REL), sft)
    cfg_model, weights = load_llama2c(os.path.join(ROOT, MODEL_REL))

    for name, method, lt, ls, data, accum, sched, warmup, wd in CONFIGS:
        if args.only and name != args.only:
            continue
        recipe = recipe_for(name, method, lt, ls, data, accum, sched, warmup, wd)
        rows = sft if method == "sft" else pairs
        steps, forward, final = run(cfg_model, weights, rows, recipe, torch.float32)
        doc = {
            "generator": "tests/golden/gen_golden.py (torch %s)" % torch.__version__,
            "model": MODEL_REL,
            "train_file": data,
            "recipe": recipe,
            "steps": steps,
            "forward": forward,
            "final_weights": final,
        }
        if not args.no_f64:
            # The same run in float64: how far float32 rounding alone moves
            # each logged value and weight (guides test_golden.c's tolerances).
            s64, _, w64 = run(cfg_model, weights, rows, recipe, torch.float64)
            noise = {"steps": [], "weights_max_abs": {}}
            for a, b in zip(steps, s64):
                noise["steps"].append({k: abs(a[k] - b[k]) for k in a if k != "step"})
            for n in TENSORS:
                d = [abs(x - y) for x, y in zip(final[n]["first"] + final[n]["sample"],
                                                w64[n]["first"] + w64[n]["sample"])]
                noise["weights_max_abs"][n] = max(d)
            doc["float32_vs_float64"] = noise
        path = os.path.join(HERE, name + ".json")
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        size = os.path.getsize(path)
        print("%-20s %6d bytes  loss %s" % (name + ".json", size,
                                           " ".join("%.6f" % s["loss"] for s in steps)))
        if size > 300 * 1024:
            sys.exit("%s is larger than 300 KB" % path)


if __name__ == "__main__":
    main()
