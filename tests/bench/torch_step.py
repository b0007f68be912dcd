#!/usr/bin/python3
"""torch_step.py - the eager PyTorch side of the training-step benchmark (issue 5).

The same Llama model (RMSNorm, RoPE on interleaved pairs as llama2.c, grouped-query
attention, SwiGLU, classifier shared with the embedding) and the same optimizer
steps as tests/bench/bench_step.c: DPO (reference recomputed, or precomputed once:
dpo_pre), SFT and ORPO, in fp32 eager mode, with TRL's losses, clip_grad_norm_(1.0)
and torch.optim.AdamW. Sequences are equal-length (prompt T/4, completion 3T/4), so
the (2B, T) batch has no padding and the work equals the packed C batch.

By default the classifier runs only on rows that have a target (the same FLOPs as
the C trainer: the strongest fair baseline); --logits all computes (B, T, V)
logits as Hugging Face / TRL do.

  torch_step.py --shape M --method dpo --threads 2 [--load PREFIX] [--steps K]

--load PREFIX reads PREFIX.params.f32 (the C model's flat llama2.c-ordered
buffer) and PREFIX.tokens.i32 written by `bench_step --dump PREFIX`, so the
first step's loss, log-probs and gradient norm can be compared with the C run.
Prints one JSON object on stdout.
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

SHAPES = {
    # dim, hidden, layers, heads, kv heads, vocab, pairs, seq
    "S": (64, 172, 5, 8, 4, 512, 8, 128),
    "M": (288, 768, 6, 6, 6, 32000, 4, 256),
    "L": (512, 1376, 8, 8, 8, 32000, 4, 256),
}


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="S", choices=sorted(SHAPES))
    ap.add_argument("--method", default="dpo", choices=["dpo", "dpo_pre", "sft", "orpo"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=0)
    ap.add_argument("--seq", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--load", default=None)
    ap.add_argument("--logits", default="targets", choices=["targets", "all"])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--serve", action="store_true",
                    help="after the warm-up, run `step K` commands from stdin (interleave.py)")
    return ap.parse_args()


args = parse()
# Thread counts must be fixed before the BLAS and OpenMP runtimes load.
os.environ["OMP_NUM_THREADS"] = str(args.threads)
os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(args.threads)
rss_base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

D, H, L, NH, NKV, V, B0, T0 = SHAPES[args.shape]
B = args.pairs or B0
T = args.seq or T0
HS = D // NH
KVD = NKV * HS
NP = T // 4
NC = T - NP
EPS = 1e-5
THETA = 10000.0
BETA = 0.1
LR = 2e-5 if args.method == "sft" else 1e-6


class RMSNorm(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rms_att = RMSNorm(D)
        self.wq = torch.nn.Linear(D, D, bias=False)
        self.wk = torch.nn.Linear(D, KVD, bias=False)
        self.wv = torch.nn.Linear(D, KVD, bias=False)
        self.wo = torch.nn.Linear(D, D, bias=False)
        self.rms_ffn = RMSNorm(D)
        self.w1 = torch.nn.Linear(D, H, bias=False)
        self.w2 = torch.nn.Linear(H, D, bias=False)
        self.w3 = torch.nn.Linear(D, H, bias=False)

    def forward(self, x, cos, sin, mask):
        S_, T_, _ = x.shape
        h = self.rms_att(x)
        q = rope(self.wq(h).view(S_, T_, NH, HS), cos, sin).transpose(1, 2)
        k = rope(self.wk(h).view(S_, T_, NKV, HS), cos, sin).transpose(1, 2)
        v = self.wv(h).view(S_, T_, NKV, HS).transpose(1, 2)
        if NKV != NH:
            k = k.repeat_interleave(NH // NKV, dim=1)
            v = v.repeat_interleave(NH // NKV, dim=1)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(HS))
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(S_, T_, D)
        x = x + self.wo(y)
        h = self.rms_ffn(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


def rope(x, cos, sin):
    # x (S, T, heads, HS) rotated on pairs (2j, 2j+1) as llama2.c.
    xr = x.view(*x.shape[:-1], HS // 2, 2)
    x0, x1 = xr[..., 0], xr[..., 1]
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2)


class Llama(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.tok_emb = torch.nn.Embedding(V, D)
        self.layers = torch.nn.ModuleList(Block() for _ in range(L))
        self.norm = RMSNorm(D)
        freq = 1.0 / (THETA ** (torch.arange(0, HS, 2, dtype=torch.float32) / HS))
        ang = torch.outer(torch.arange(T, dtype=torch.float32), freq)
        self.register_buffer("cos", torch.cos(ang), persistent=False)
        self.register_buffer("sin", torch.sin(ang), persistent=False)
        self.register_buffer(
            "mask", torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1), persistent=False
        )

    def forward(self, tokens, targets, tmask):
        """Per-position log-prob of targets (S, T), 0 where tmask is False."""
        x = self.tok_emb(tokens)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin, self.mask)
        x = self.norm(x)
        if args.logits == "all":
            lp = F.log_softmax(x @ self.tok_emb.weight.t(), dim=-1)
            lp = lp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            return lp * tmask
        sel = x[tmask]  # (M, D) rows with a target
        lp = F.log_softmax(sel @ self.tok_emb.weight.t(), dim=-1)
        lp = lp.gather(-1, targets[tmask].unsqueeze(-1)).squeeze(-1)
        return torch.zeros(tokens.shape, dtype=lp.dtype).masked_scatter(tmask, lp)

    def load_flat(self, flat):
        o = 0

        def take(n, shape):
            nonlocal o
            t = torch.from_numpy(flat[o:o + n].copy()).view(*shape)
            o += n
            return t

        with torch.no_grad():
            self.tok_emb.weight.copy_(take(V * D, (V, D)))
            for name, n, shape in [
                ("rms_att", D, (D,)), ("wq", D * D, (D, D)), ("wk", KVD * D, (KVD, D)),
                ("wv", KVD * D, (KVD, D)), ("wo", D * D, (D, D)), ("rms_ffn", D, (D,)),
                ("w1", H * D, (H, D)), ("w2", D * H, (D, H)), ("w3", H * D, (H, D)),
            ]:
                for layer in self.layers:
                    getattr(layer, name).weight.copy_(take(n, shape))
            self.norm.weight.copy_(take(D, (D,)))
        assert o == flat.size, (o, flat.size)


def make_data():
    if args.load:
        import numpy as np

        ids = np.fromfile(args.load + ".tokens.i32", dtype=np.int32)
        assert ids.size == B * (NP + 2 * NC), "token file does not match the shape"
        prompt = torch.from_numpy(ids[: B * NP].astype("int64")).view(B, NP)
        chosen = torch.from_numpy(ids[B * NP: B * (NP + NC)].astype("int64")).view(B, NC)
        rejected = torch.from_numpy(ids[B * (NP + NC):].astype("int64")).view(B, NC)
    else:
        g = torch.Generator().manual_seed(args.seed)
        prompt = torch.randint(0, V, (B, NP), generator=g)
        chosen = torch.randint(0, V, (B, NC), generator=g)
        rejected = torch.randint(0, V, (B, NC), generator=g)
    return prompt, chosen, rejected


def sequences(prompt, comp, score_prompt):
    """tokens, targets (next id), completion mask, scored mask; (S, T) each."""
    tokens = torch.cat([prompt, comp], dim=1)
    targets = torch.full_like(tokens, -1)
    targets[:, :-1] = tokens[:, 1:]
    pos = torch.arange(T)
    comp_mask = ((pos + 1 >= NP) & (pos + 1 < T)).expand(tokens.shape[0], T)
    all_mask = (pos + 1 < T).expand(tokens.shape[0], T) if score_prompt else comp_mask
    return tokens, targets, comp_mask, all_mask


def serve(step, first):
    """--serve: one JSON line per stdin command `step K` (K steps, their times),
    after a ready line; ends at EOF. tests/bench/interleave.py alternates these
    steps with the C trainer's so that both sides of a ratio see the same
    machine state."""
    print(json.dumps({"kind": "serve_ready", "impl": "torch", "shape": args.shape,
                      "method": args.method, "threads": args.threads, "first_step": first}),
          flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if len(cmd) != 2 or cmd[0] != "step" or not cmd[1].isdigit() or int(cmd[1]) < 1:
            sys.exit(f"torch_step.py: --serve: unknown command {line.strip()!r}")
        times, cpus = [], []
        for _ in range(int(cmd[1])):
            (dt, dc), _ = step()
            times.append(dt)
            cpus.append(dc)
        print(json.dumps({"kind": "serve_step", "threads": args.threads, "steps": len(times),
                          "step_s": times, "step_median_s": statistics.median(times),
                          "cpu_median_s": statistics.median(cpus)}), flush=True)


def main():
    torch.manual_seed(args.seed)
    model = Llama()
    if args.load:
        import numpy as np

        model.load_flat(np.fromfile(args.load + ".params.f32", dtype=np.float32))
    prompt, chosen, rejected = make_data()
    m = args.method
    if m == "sft":
        tok, tgt, cmask, amask = sequences(prompt, chosen, False)
    else:
        tc, gc, cc, ac = sequences(prompt, chosen, m == "orpo")
        tr, gr, cr, ar = sequences(prompt, rejected, False)
        tok, tgt = torch.cat([tc, tr]), torch.cat([gc, gr])
        cmask, amask = torch.cat([cc, cr]), torch.cat([ac, ar])
    ref = None
    ref_sums = None
    t_pre = 0.0
    if m in ("dpo", "dpo_pre"):
        import copy

        ref = copy.deepcopy(model).requires_grad_(False).eval()
        if m == "dpo_pre":
            t0 = time.perf_counter()
            with torch.no_grad():
                ref_sums = (ref(tok, tgt, amask) * cmask).sum(1)
            t_pre = time.perf_counter() - t0
            ref = None
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0)

    def step():
        c0, t0 = time.process_time(), time.perf_counter()
        opt.zero_grad(set_to_none=True)
        lp = model(tok, tgt, amask)
        comp = (lp * cmask).sum(1)
        if m == "sft":
            loss = -comp.sum() / cmask.sum()
        elif m in ("dpo", "dpo_pre"):
            if ref is not None:
                with torch.no_grad():
                    rs = (ref(tok, tgt, amask) * cmask).sum(1)
            else:
                rs = ref_sums
            z = (comp[:B] - comp[B:]) - (rs[:B] - rs[B:])
            loss = -F.logsigmoid(BETA * z).mean()
        else:  # orpo, TRL's odds_ratio_loss on length-averaged log-probs
            nll = -lp[:B].sum() / amask[:B].sum()
            n = cmask.sum(1)
            avg_c, avg_r = comp[:B] / n[:B], comp[B:] / n[B:]
            log_odds = (avg_c - avg_r) - (torch.log1p(-torch.exp(avg_c)) -
                                          torch.log1p(-torch.exp(avg_r)))
            loss = nll - BETA * F.logsigmoid(log_odds).mean()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        return (dt, dc), {
            "loss": loss.item(),
            "grad_norm": gn.item(),
            "logps_chosen": comp[:B].mean().item(),
            "logps_rejected": comp[B:].mean().item() if m != "sft" else 0.0,
        }

    first = None
    for _ in range(args.warmup):
        _, info = step()
        first = first or info
    if args.serve:
        serve(step, first)
        return
    times, cpus = [], []
    last = None
    for _ in range(args.steps):
        (dt, dc), last = step()
        first = first or last
        times.append(dt)
        cpus.append(dc)

    def median(v):
        v = sorted(v)
        n = len(v)
        return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])

    n = len(times)
    med = median(times)
    n_tok = tok.numel()
    M = int(amask.sum())
    T2 = tok.shape[0] * T * T
    f_fwd = (2.0 * n_tok * L * (2 * D * D + 2 * D * KVD + 3 * D * H) + 4.0 * L * NH * HS * T2 +
             2.0 * M * D * V)
    flops = 3 * f_fwd + (f_fwd if m == "dpo" else 0.0)
    out = {
        "kind": "step", "impl": "torch", "torch": torch.__version__, "shape": args.shape,
        "method": m, "threads": args.threads, "logits": args.logits, "pairs": B, "seq": T,
        "tokens": n_tok, "target_rows": M, "warmup": args.warmup, "steps": args.steps,
        "step_s": times, "step_median_s": med, "step_min_s": min(times),
        "cpu_median_s": median(cpus),
        "precompute_ref_s": t_pre, "tokens_per_s": n_tok / med, "flops_per_step": flops,
        "gflops": flops / med / 1e9, "first_step": first, "last_loss": last["loss"],
        "rss_base_kb": rss_base_kb,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "loaded": bool(args.load),
    }
    print(json.dumps(out))
    print(f"torch {args.shape} {m:7s} threads={args.threads}: step {med:.4f} s (median of {n}), "
          f"{n_tok / med:.0f} tok/s, {flops / med / 1e9:.2f} GFLOP/s, peak RSS "
          f"{out['peak_rss_kb'] / 1024:.1f} MiB, loss {first['loss']:.6f}", file=sys.stderr)


if __name__ == "__main__":
    main()
