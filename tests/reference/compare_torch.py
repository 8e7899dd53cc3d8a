"""Runs `train-native bench` and bench_torch.py alternately several times on the same machine
and prints the median images/s of each and the median ratio (ours / PyTorch) per figure.

Usage (PyTorch + timm installed for --python; build train-native first):
  cargo build --profile dev -p train-native
  python3 tests/reference/compare_torch.py --ours target/debug/train-native \
      --python /path/to/venv/bin/python --rounds 5
Give --ours several times to time several builds (a change and its base) in the same rounds.
"""

import argparse
import json
import statistics
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True, action="append",
                    help="path of a train-native binary (repeat to compare builds, e.g. a "
                         "change against its base, in the same rounds)")
    ap.add_argument("--python", default="python3", help="a Python with torch and timm")
    ap.add_argument("--model", default="vit_cpu_patch6_48")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="forward,step,mimic,mae")
    args = ap.parse_args()
    ours_cmds = [[path, "bench", "--model", args.model, "--batch", str(args.batch),
                  "--steps", str(args.steps), "--only", args.only, "--json", "--device", "cpu"]
                 for path in args.ours]
    theirs_cmd = [args.python, str(HERE / "bench_torch.py"), "--model", args.model,
                  "--batch", str(args.batch), "--steps", str(args.steps),
                  "--threads", str(args.threads), "--only", args.only]
    ours = [{} for _ in args.ours]
    theirs = {}
    for r in range(args.rounds):
        for cmd, into in list(zip(ours_cmds, ours)) + [(theirs_cmd, theirs)]:
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            for name, fig in last_json(out)["figures"].items():
                into.setdefault(name, []).append(fig["images_per_s"])
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    print(f"\n{args.model}, batch {args.batch}, {args.threads} threads, "
          f"{args.rounds} alternating rounds (median images/s; ratio = median of the "
          f"per-round ratios)")
    for path, figures in zip(args.ours, ours):
        print(f"\nmimic: {path}")
        print(f"{'figure':<16} {'mimic':>10} {'pytorch':>10} {'ratio':>7}")
        for name in figures:
            if name not in theirs:
                continue
            ratios = [a / b for a, b in zip(figures[name], theirs[name])]
            print(f"{name:<16} {statistics.median(figures[name]):>10.1f} "
                  f"{statistics.median(theirs[name]):>10.1f} {statistics.median(ratios):>6.2f}x")

if __name__ == "__main__":
    main()
