"""Benchmark: export a run and check that the exported model answers like the app (issue 22).

For each asked export (merged folder, GGUF of each tensor type) it times the export itself
and the parity check (the app's model in float32 and the exported model answering the
run's first held-out prompts greedily, 32 new tokens each; GGUF files in llama.cpp), and
reports the verdict: identical answers, token agreement, whether the file's chat template
and tokenizer gave the app's prompt tokens. Prints ONE JSON object on stdout.

    python bench/bench_export_parity.py                    # the bundled model with a small LoRA adapter
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: import the project's packages

ALPACA = REPO.parent / "shared" / "datasets" / "lf_alpaca_en_demo.json"


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Export wall time and parity with the in-app model.")
    ap.add_argument("--run", help="an existing run directory (default: train a Quick demo run first)")
    ap.add_argument("--data", default=str(ALPACA), help="Alpaca-layout JSON whose instructions are held out")
    ap.add_argument("--tiny", action="store_true", help="tiny random model and the project's toy rows")
    ap.add_argument("--targets", default="merged,gguf-f16,gguf-q8_0", help="comma-separated export targets")
    ap.add_argument("--prompts", type=int, default=20, help="held-out prompts the check answers")
    return ap.parse_args(argv)


def tiny_run(workdir: Path):
    """A 10-step LoRA run on a tiny random Llama with the bundled tokenizer (tests/conftest.py's builders)."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_trained_run, save_tiny_model

    run, _status = make_trained_run(save_tiny_model(workdir / "tiny-model"), steps=10)
    return run


def bundled_run(args):
    """A run of the bundled model whose adapter is a small random LoRA (r=16, all linear layers, B
    scaled to 1e-2: answers change, the model stays sensible; no training, so the figures are about
    the export), held out: the first `args.prompts` instructions of `args.data` (LLaMA-Factory's
    Alpaca demo by default: open answers, so 32 tokens can drift)."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_bundled_lora_run
    from finetune_core.data.dataset import write_jsonl

    run, _tok = make_bundled_lora_run(r=16, target_modules="all-linear", data_path=args.data)
    rows = json.loads(Path(args.data).read_text(encoding="utf-8"))[: args.prompts]
    write_jsonl(run.data_dir / "heldout.jsonl", [
        {"prompt": [{"role": "user", "content": "\n\n".join(filter(None, (r["instruction"], r.get("input"))))}],
         "completion": [{"role": "assistant", "content": r["output"]}]} for r in rows])
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
    if result.notes:
        out["notes"] = result.notes
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
        run = run_from_dir(args.run) if args.run else tiny_run(workdir) if args.tiny else bundled_run(args)
        trained = time.perf_counter() - start
        result = {"benchmark": "export_parity", "run": run.id, "model": run.config().model if not args.tiny else "tiny",
                  "setup_seconds": None if args.run else round(trained, 1), "cores": os.cpu_count(), "targets": {}}
        for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
            result["targets"][target] = export_and_check(run, target, workdir, args.prompts)
        result["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
