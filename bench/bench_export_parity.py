"""Benchmark: export a run and check that the exported model answers like the app (issue 22).

For each asked export (merged folder, GGUF of each tensor type) it times the export itself
and the parity check (the app's model in float32 and the exported model answering the
run's first held-out prompts greedily, 32 new tokens each; GGUF files in llama.cpp), and
reports the verdict: identical answers, token agreement, whether the file's chat template
and tokenizer gave the app's prompt tokens. Prints ONE JSON object on stdout.

    python bench/bench_export_parity.py                    # Quick demo run on the bundled model (Alpaca demo data)
    python bench/bench_export_parity.py --run runs/<id>    # an existing run
    python bench/bench_export_parity.py --tiny             # tiny random model, seconds anywhere
    python bench/bench_export_parity.py --targets merged,gguf-f16,gguf-bf16,gguf-q8_0 --prompts 20
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: import the project's packages

ALPACA = REPO.parent / "shared" / "datasets" / "lf_alpaca_en_demo.json"
PRESET = "Quick demo (CPU)"


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Export wall time and parity with the in-app model.")
    ap.add_argument("--run", help="an existing run directory (default: train a Quick demo run first)")
    ap.add_argument("--data", default=str(ALPACA), help="training data when a run is trained here")
    ap.add_argument("--steps", type=int, default=30, help="max_steps of the run trained here")
    ap.add_argument("--tiny", action="store_true", help="tiny random model and the project's toy rows")
    ap.add_argument("--targets", default="merged,gguf-f16,gguf-q8_0", help="comma-separated export targets")
    ap.add_argument("--prompts", type=int, default=20, help="held-out prompts the check answers")
    return ap.parse_args(argv)


def tiny_run(workdir: Path):
    """A 10-step LoRA run on a tiny random Llama with the bundled tokenizer (tests/conftest.py's builders)."""
    sys.path.insert(0, str(REPO / "tests"))
    from transformers import AutoTokenizer

    from conftest import build_tiny_model, make_trained_run
    from finetune_core.models.sources import bundled_gguf_path

    gguf = bundled_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    folder = workdir / "tiny-model"
    build_tiny_model(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    run, _status = make_trained_run(folder, steps=10)
    return run


def trained_run(args, workdir: Path):
    """A Quick demo LoRA run of the bundled model on `args.data` (`args.steps` steps)."""
    from finetune_core.config import RunConfig, preset
    from finetune_core.runs.store import create_run
    from finetune_core.training.runner import run_job

    cfg = preset(PRESET, RunConfig.from_dict({"model": "bundled", "data_path": args.data}))
    run = create_run(cfg.with_overrides({"max_steps": args.steps}), label="bench-export")
    status = run_job(run, threading.Event())
    if status.get("state") != "completed":
        raise SystemExit(f"the run did not complete: {status}")
    return run


def export_and_check(run, target: str, workdir: Path, prompts: int) -> dict:
    from finetune_core.export.artifacts import export_gguf, merge
    from finetune_core.export.parity import check_export

    start = time.perf_counter()
    if target == "merged":
        path = merge(run, workdir / f"{run.id}-merged")
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    else:
        path = export_gguf(run, workdir / f"{run.id}-{target}.gguf", target.removeprefix("gguf-"))
        size = path.stat().st_size
    exported = time.perf_counter() - start
    result = check_export(run, path, target, n=prompts)
    out = {"export_seconds": round(exported, 1), "parity_seconds": result.seconds, "size_mb": round(size / 2**20, 1),
           "verdict": result.verdict(), "passed": result.passed()}
    out.update({k: getattr(result, k) for k in ("prompts", "identical", "token_agreement", "prompt_tokens_match")})
    if result.first_difference:
        out["first_difference"] = result.first_difference
    return out


def main() -> None:
    args = parse_args(sys.argv[1:])
    from finetune_core.runs.store import run_from_dir

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        os.environ.setdefault("STUDIO_RUNS_DIR", str(workdir / "runs"))  # a run trained here stays in the temp dir
        start = time.perf_counter()
        run = run_from_dir(args.run) if args.run else tiny_run(workdir) if args.tiny else trained_run(args, workdir)
        trained = time.perf_counter() - start
        result = {"benchmark": "export_parity", "run": run.id, "model": run.config().model if not args.tiny else "tiny",
                  "train_seconds": None if args.run else round(trained, 1), "cores": os.cpu_count(), "targets": {}}
        for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
            result["targets"][target] = export_and_check(run, target, workdir, args.prompts)
        result["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
