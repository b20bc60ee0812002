"""Benchmark: batched held-out generation vs one prompt at a time.

Same model, same prompts, same greedy settings; only the batch size differs
(`InferenceModel.generate(..., batch_size=B)` vs `batch_size=1`). Prints ONE
JSON object on stdout (progress and library messages go to stderr).

    python bench/bench_eval.py --run runs/<id>            # a trained run: tuned side (adapter on)
    python bench/bench_eval.py --bundled                   # no run needed: bundled model, base only
    python bench/bench_eval.py --tiny --rows 4             # tiny random model + LoRA, seconds anywhere

What each mode measures
- --run: the run's first N held-out rows, tuned side (adapter on, the side
  that pays the LoRA overhead); max_new_tokens defaults to what evaluation
  would use for that run.
- --bundled: SmolLM2-135M-Instruct with no adapter (base generation), prompts
  "Summarize this dialogue:\\n{dialogue}" from ../shared/datasets/samsum_val.json,
  or the in-repo support notes sample when that folder is absent (or --data).
- --tiny: a 2-layer random Llama with a fresh LoRA adapter in a temporary run;
  its numbers measure per-step overhead, not a real model's speed.
Also reported: the share of rows whose batched and single outputs are
identical (left padding can change a greedy pick when two logits are close).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: import the project's packages

SAMSUM = REPO.parent / "shared" / "datasets" / "samsum_val.json"
DEFAULT_MAX_NEW_TOKENS = 64  # --tiny / --bundled; --run uses evaluation's own default


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Batched vs one-at-a-time held-out generation.")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--run", help="a run directory with an adapter")
    mode.add_argument("--tiny", action="store_true", help="tiny random model + LoRA in a temp dir")
    mode.add_argument("--bundled", action="store_true", help="bundled model, base only, SAMSum prompts")
    ap.add_argument("--data", help="--bundled: a dialogue/summary file instead of samsum_val.json")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int)
    return ap.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the three setups: each returns (model, prompts, tuned, max_new_tokens, facts) ----

def setup_run(run_dir: str, rows: int, max_new_tokens: int | None):
    from evaluation.run_eval import default_max_new_tokens, load_eval_rows, reference_text
    from finetune_core.inference.generation import InferenceModel
    from finetune_core.runs.store import run_from_dir

    run = run_from_dir(run_dir)
    data, labels, _source = load_eval_rows(run)
    data = [r for r in data if "prompt" in r][:rows]
    if not data:
        raise SystemExit("error: the run has no prompt/completion held-out rows to generate for.")
    model = InferenceModel.from_run(run, progress=log)
    if max_new_tokens is None:
        task = "classification" if labels else "generation"
        refs = [reference_text(r, bool(labels)) for r in data]
        max_new_tokens = default_max_new_tokens(model.tokenizer, task, refs, labels)
    facts = {"mode": "run", "run": run.id, "model": run.config().model, "measured": "tuned (adapter on)"}
    return model, [r["prompt"] for r in data], True, max_new_tokens, facts


def setup_bundled(rows: int, data_path: str | None, max_new_tokens: int | None):
    from finetune_core.data.dataset import DataMapping, prepare_data
    from finetune_core.inference.generation import InferenceModel

    if data_path or SAMSUM.is_file():
        options = DataMapping(data_path=data_path or str(SAMSUM), data_format="columns", completion_column="summary",
                              prompt_template="Summarize this dialogue:\n{dialogue}")
    else:
        from finetune_core.data.samples import sample_mapping

        options = sample_mapping("Support note summaries (custom CSV columns)")
    report = prepare_data(options)
    if not report.usable:
        raise SystemExit(f"error: {options.data_path} is not usable: {report.issues[:1]}")
    model = InferenceModel.base_only("bundled", progress=log)
    facts = {"mode": "bundled", "model": "bundled", "data": Path(options.data_path).name,
             "measured": "base (no adapter loaded)"}
    return model, [r["prompt"] for r in report.rows[:rows]], False, max_new_tokens or DEFAULT_MAX_NEW_TOKENS, facts


def setup_tiny(rows: int, max_new_tokens: int | None, workdir: Path):
    from finetune_core.inference.generation import InferenceModel

    run = make_tiny_run(workdir, rows)
    model = InferenceModel.from_run(run, progress=log)
    facts = {"mode": "tiny", "model": "random 2-layer Llama (hidden 32)", "measured": "tuned (adapter on)"}
    return model, [r["prompt"] for r in _toy_rows(rows)], True, max_new_tokens or DEFAULT_MAX_NEW_TOKENS, facts


# -- tiny run ----------------------------------------------------------------------

def _tokenizer():
    """The bundled tokenizer: from the converted cache when present (fast), else the GGUF."""
    from transformers import AutoTokenizer

    from finetune_core.models.sources import BUNDLED_CACHE_NAME, bundled_gguf_path, cache_root

    cached = cache_root() / BUNDLED_CACHE_NAME
    if (cached / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(cached)
    gguf = bundled_gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def _toy_rows(n: int) -> list[dict]:
    # Prompts of varied length, so batches need real padding.
    colours = ["red", "blue", "green"]
    return [{"prompt": [{"role": "user", "content": f"Item {i}: " + "which colour is it? " * (1 + i % 5)}],
             "completion": [{"role": "assistant", "content": colours[i % 3]}]} for i in range(n)]


def make_tiny_run(workdir: Path, rows: int):
    """A run folder holding a tiny random Llama, its held-out rows and an untrained LoRA adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from finetune_core.config import DataMapping, RunConfig
    from finetune_core.data.dataset import write_jsonl
    from finetune_core.runs.store import create_run, write_json_atomic

    tok = _tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id))
    model_dir = workdir / "tiny-model"
    model.save_pretrained(model_dir, safe_serialization=True)
    tok.save_pretrained(model_dir)
    os.environ["STUDIO_RUNS_DIR"] = str(workdir / "runs")  # this process only: keep the run in the temp dir
    run = create_run(RunConfig(model=str(model_dir), data=DataMapping(data_path="toy.jsonl"), max_steps=1),
                     label="bench-tiny")
    write_jsonl(run.data_dir / "heldout.jsonl", _toy_rows(rows))
    write_json_atomic(run.data_dir / "report.json", {"format": "prompt_completion", "labels": None})
    # init_lora_weights=False: random B, so the adapter really changes the outputs.
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(run.adapter_dir, safe_serialization=True)
    run.set_status(state="completed")
    return run


# -- timing ---------------------------------------------------------------------------

def timed(model, prompts, tuned: bool, settings, batch_size: int) -> tuple[float, list[str]]:
    start = time.perf_counter()
    outputs = model.generate(prompts, tuned=tuned, settings=settings, batch_size=batch_size)
    return time.perf_counter() - start, outputs


def device_facts(model) -> dict:
    import platform

    import torch
    import transformers

    facts = {"device": model.policy.describe(), "cpu_count": os.cpu_count(),
             # Other processes on the same cores skew CPU timings: record how busy it was.
             "load_avg_1m": round(os.getloadavg()[0], 2),
             "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
             "transformers": transformers.__version__, "python": platform.python_version()}
    if model.policy.device == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts


def measure(model, prompts, tuned: bool, max_new_tokens: int, batch_size: int) -> dict:
    from finetune_core.inference.generation import GenSettings

    settings = GenSettings(max_new_tokens=max_new_tokens)
    # Warm-up: the first call pays one-off costs (kernel selection, chat template compile).
    model.generate(prompts[:1], tuned=tuned, settings=GenSettings(max_new_tokens=2), batch_size=1)
    log(f"batched: {len(prompts)} rows in batches of {batch_size}...")
    batched_s, batched = timed(model, prompts, tuned, settings, batch_size)
    log(f"batched took {batched_s:.1f} s; one at a time...")
    single_s, single = timed(model, prompts, tuned, settings, 1)
    log(f"one at a time took {single_s:.1f} s")
    n = len(prompts)
    return {"rows": n, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
            "batched_s": round(batched_s, 3), "single_s": round(single_s, 3),
            "batched_rows_per_s": round(n / batched_s, 3), "single_rows_per_s": round(n / single_s, 3),
            "speedup": round(single_s / batched_s, 2),
            "outputs_identical": round(sum(a == b for a, b in zip(batched, single)) / n, 3)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.rows < 1 or args.batch_size < 1:
        raise SystemExit("error: --rows and --batch-size must be at least 1.")
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        if args.tiny:
            model, prompts, tuned, mnt, facts = setup_tiny(args.rows, args.max_new_tokens, Path(tmp))
        elif args.bundled:
            model, prompts, tuned, mnt, facts = setup_bundled(args.rows, args.data, args.max_new_tokens)
        else:
            model, prompts, tuned, mnt, facts = setup_run(args.run, args.rows, args.max_new_tokens)
        result = {**facts, **measure(model, prompts, tuned, mnt, args.batch_size), **device_facts(model),
                  "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
