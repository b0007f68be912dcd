#!/usr/bin/env python3
"""make_data.py — writes the quick-start preference dataset (stdlib only).

Each row is {prompt, chosen, rejected}: a short request, a polite helpful
answer (chosen) and a curt unhelpful one (rejected). The pairs are synthetic
and deterministic (seeded), small enough that a model initialised from scratch
with the byte tokenizer learns the preference in a couple of minutes on a CPU.

usage: make_data.py OUT_DIR [N_TRAIN] [N_EVAL]
"""
import json
import os
import random
import sys

SUBJECTS = ["the sky", "a cat", "the sea", "my garden", "a robot", "the moon", "bread",
            "a river", "winter", "music", "a lamp", "the stars", "rain", "a bicycle"]
ASKS = ["Tell me about {s}.", "Describe {s}.", "Write a line about {s}.",
        "What do you think of {s}?", "Say something kind about {s}."]
GOOD = ["Sure! {S} is lovely, and I am glad you asked.",
        "Happy to help: {S} is calm and bright.",
        "Of course. {S} can be gentle and wonderful."]
BAD = ["No. Ask someone else about {s}.",
       "Whatever. {S} is boring.",
       "I will not talk about {s}."]


def rows(rng, n):
    for _ in range(n):
        s = rng.choice(SUBJECTS)
        cap = s[0].upper() + s[1:]
        yield {"prompt": rng.choice(ASKS).format(s=s),
               "chosen": " " + rng.choice(GOOD).format(s=s, S=cap),
               "rejected": " " + rng.choice(BAD).format(s=s, S=cap)}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    n_train = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    n_eval = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    os.makedirs(out, exist_ok=True)
    rng = random.Random(20261127)
    for name, n in (("prefs.jsonl", n_train), ("prefs-eval.jsonl", n_eval)):
        with open(os.path.join(out, name), "w") as f:
            for r in rows(rng, n):
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
