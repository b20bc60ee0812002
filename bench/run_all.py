"""`make bench`: the CPU benchmark set, one after the other (they must not share the cores).

    .venv/bin/python bench/run_all.py [--quick]

Prints one JSON object per benchmark, one per line, and writes them to
bench/results/ (git-ignored). --quick runs each on its tiny configuration.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FULL = {
    "train": ["bench_train.py", "--variants", "ours,ours_fp32,plain_tuned,plain_default", "--steps", "6", "--warmup", "2",
              "--rounds", "2"],
    "attention": ["bench_attention.py"],
    "eval": ["bench_eval.py", "--bundled", "--rows", "64"],
    "chat": ["bench_chat.py", "--bundled"],
    "startup": ["bench_startup.py"],
    "load": ["load_chat.py", "--clients", "20"],
    "public_load": ["bench_public_load.py", "--visitors", "20"],
}
QUICK = {
    "train": ["bench_train.py", "--tiny", "--steps", "1", "--warmup", "1", "--rounds", "1", "--rows", "32"],
    "attention": ["bench_attention.py", "--lengths", "16", "--repeats", "2"],
    "eval": ["bench_eval.py", "--tiny", "--rows", "4"],
    "chat": ["bench_chat.py", "--tiny"],
    "startup": ["bench_startup.py", "--skip-app", "--repeats", "1"],
    "load": ["load_chat.py", "--tiny", "--clients", "3"],
    "public_load": ["bench_public_load.py", "--tiny", "--visitors", "3", "--abuse-rounds", "1"],
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    failed = 0
    for name, cmd in (QUICK if args.quick else FULL).items():
        res = subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:]], capture_output=True, text=True)
        if res.returncode != 0:
            failed += 1
            print(f'{{"benchmark": "{name}", "error": "exit {res.returncode}"}}', flush=True)
            sys.stderr.write(res.stderr[-2000:])
            continue
        line = res.stdout.strip().splitlines()[-1]
        (out_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(line + "\n")
        print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
