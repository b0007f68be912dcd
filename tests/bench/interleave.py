#!/usr/bin/python3
"""interleave.py - the interleaved part of the training-step benchmark (issue 5):
both sides of each target ratio, one step at a time, under the same machine state.

This VM's speed drifts by up to 2x within a minute (the 2-thread sgemm peak was
measured anywhere from 187 to 313 GFLOP/s in one run), so a ratio of two
processes run a minute apart measures the drift as much as the code. Here four
long-lived processes, started once, wait for commands (`bench_step --serve`,
`torch_step.py --serve`):

  ours     the C trainer, DPO, 2 threads; also measures the 2-thread sgemm peak
  torch    eager PyTorch, DPO, at its faster thread count (--torch-threads)
  pre2     the C trainer, DPO with precomputed reference log-probs, 2 threads
  dpo      the C trainer, DPO, 1 thread
  dpo_pre  the C trainer, DPO with precomputed reference log-probs, 1 thread

and each iteration runs, seconds apart: a sgemm peak, ours, a second peak,
pre2 and torch (in even iterations torch, pre2, peak, ours, peak), then dpo and
dpo_pre (dpo_pre first in even ones). A step of ours is bracketed by the two peaks, so its MFU is taken
against the machine's speed of that moment. Every result is appended to the raw
file as a line tagged "round" (shape, round = iteration, role, result), the
format report.py reads.

  interleave.py --bench BIN --shape M --torch-threads 1 --iters 7 --steps 1 \\
                --dump PREFIX --coretype SkylakeX --raw RAW.jsonl --log LOG
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", required=True, help="bench_step binary")
    ap.add_argument("--shape", required=True, choices=["S", "M", "L"])
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--iters", type=int, required=True)
    ap.add_argument("--steps", type=int, default=1, help="steps per command (median)")
    ap.add_argument("--dump", required=True, help="bench_step --dump prefix for torch")
    ap.add_argument("--coretype", default="SkylakeX")
    ap.add_argument("--raw", required=True)
    ap.add_argument("--log", required=True, help="the processes' stderr goes here")
    ap.add_argument("--py", default=sys.executable)
    return ap.parse_args()


class Server:
    """One --serve process: send a command, read its one-line JSON answer."""

    def __init__(self, role, cmd, env, log):
        self.role = role
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=log, env=env, text=True, bufsize=1)
        self.ready = self.read()

    def read(self):
        line = self.p.stdout.readline()
        if not line:
            rc = self.p.wait()
            raise RuntimeError(f"{self.role}: exited ({rc}) without an answer; see the log")
        return json.loads(line)

    def ask(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.read()

    def close(self):
        self.p.stdin.close()
        rc = self.p.wait()
        if rc != 0:
            raise RuntimeError(f"{self.role}: exit status {rc}")


def main():
    a = parse()
    env = dict(os.environ)
    if a.coretype == "default":
        env.pop("OPENBLAS_CORETYPE", None)
    else:
        env["OPENBLAS_CORETYPE"] = a.coretype
    c = [a.bench, "--shape", a.shape, "--warmup", "1", "--serve"]
    t = [a.py, os.path.join(HERE, "torch_step.py"), "--shape", a.shape, "--method", "dpo",
         "--threads", str(a.torch_threads), "--warmup", "1", "--load", a.dump, "--serve"]
    specs = [("ours", c + ["--method", "dpo", "--threads", "2"]),
             ("torch", t),
             ("pre2", c + ["--method", "dpo_pre", "--threads", "2"]),
             ("dpo", c + ["--method", "dpo", "--threads", "1"]),
             ("dpo_pre", c + ["--method", "dpo_pre", "--threads", "1"])]
    t0 = time.time()
    servers = {}
    with open(a.log, "a") as log, open(a.raw, "a") as raw:
        try:
            for role, cmd in specs:  # one at a time: their warm-ups do not overlap
                servers[role] = Server(role, cmd, env, log)

            def emit(i, role, result):
                raw.write(json.dumps({"tag": "round", "coretype": a.coretype, "shape": a.shape,
                                      "round": i, "role": role, "result": result}) + "\n")
                raw.flush()

            def step(i, role):
                s = servers[role]
                r = s.ask(f"step {a.steps}")
                r.update({"impl": s.ready["impl"], "shape": a.shape,
                          "method": s.ready["method"], "first_step": s.ready["first_step"]})
                if role != "torch":
                    r["gflops"] = s.ready["flops_per_step"] / r["step_median_s"] / 1e9
                emit(i, role, r)
                print(f"{a.shape} {i}/{a.iters} {role:7s} {r['step_median_s']:.4f} s",
                      file=sys.stderr)

            def peak(i, role):
                r = servers["ours"].ask("peak")
                emit(i, role, {"results": [{"threads": r["threads"],
                                            "peak_gflops": r["peak_gflops"],
                                            "shapes": r["shapes"]}]})
                print(f"{a.shape} {i}/{a.iters} {role:7s} {r['peak_gflops']:.1f} GFLOP/s",
                      file=sys.stderr)

            for i in range(1, a.iters + 1):
                if i % 2:
                    peak(i, "sgemm"), step(i, "ours"), peak(i, "sgemm_after"), step(i, "pre2")
                    step(i, "torch"), step(i, "dpo"), step(i, "dpo_pre")
                else:
                    step(i, "torch"), step(i, "pre2"), peak(i, "sgemm"), step(i, "ours")
                    peak(i, "sgemm_after"), step(i, "dpo_pre"), step(i, "dpo")
            for s in servers.values():
                s.close()
        except (RuntimeError, OSError, ValueError) as e:
            for s in servers.values():
                s.p.kill()
            sys.exit(f"interleave.py: {e}")
        # the section's wall time, for the README's estimate of what it costs
        raw.write(json.dumps({"tag": "round_time", "shape": a.shape, "rounds": a.iters,
                              "seconds": round(time.time() - t0)}) + "\n")


if __name__ == "__main__":
    main()
