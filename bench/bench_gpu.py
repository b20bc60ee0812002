"""GPU check: train a few steps with each method and check the studio's GPU path.

For a session that has a GPU (the device tool); prints ONE JSON object.

    python bench/bench_gpu.py                          # bundled SmolLM2-135M on CUDA, all methods
    python bench/bench_gpu.py --model /path/to/folder  # a real-shaped local model instead
    python bench/bench_gpu.py --device cpu --tiny      # the same script on a tiny random model (smoke test)

Per method (lora, dora, full, and qlora when bitsandbytes is installed):
- `train`: a few optimizer steps through the studio's own runner (`run_job`) on
  sample_data/fact_cards.jsonl: state, steps, first/last loss, seconds, tokens/s,
  peak torch CUDA allocation, the device plan and speed-ups the run log records.
- (a) `same_loss`: the loss of one right-padded batch through the trained
  run's model as the studio builds it equals plain PEFT's on the same weights
  (on CUDA the CPU speed-ups are off, so this checks that nothing else is
  patched; with FlashAttention, padded vs padding-free batches).
- (b) `batched_vs_single`: held-out generation in batches gives row for row the
  tokens `model.generate` gives each prompt alone (share of identical rows).
- (d) `merged_vs_adapter`: the merged model's logits against the adapter
  switched on (max abs difference; LoRA/DoRA only).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO / "sample_data" / "fact_cards.jsonl"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tiny_model_dir(root: Path) -> str:
    """A 2-layer random Llama with the bundled tokenizer: runs anywhere in seconds."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from finetune_core.models.sources import load_tokenizer

    tok = load_tokenizer("bundled")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    folder = root / "tiny-llama"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def methods(device: str) -> list[str]:
    found = ["lora", "dora", "full"]
    try:
        import bitsandbytes  # noqa: F401

        if device == "cuda":
            found.append("qlora")
    except ImportError:
        pass
    return found


def train(model: str, method: str, device: str, steps: int):
    import torch

    from finetune_core.config import DataMapping, RunConfig
    from finetune_core.training.runner import run_job
    from finetune_core.runs.store import create_run

    cfg = RunConfig(model=model, data=DataMapping(data_path=str(DATA), eval_fraction=0.1),
                    method="qlora" if method == "qlora" else
                    ("full" if method == "full" else "lora"), use_dora=method == "dora", max_steps=steps,
                    batch_size=8, max_length=256, lora_dropout=0.0, learning_rate=1e-4 if method == "full" else 2e-4,
                    device=device, logging_steps=1)
    run = create_run(cfg)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    status = run_job(run, threading.Event())
    seconds = time.perf_counter() - start
    losses = [m["loss"] for m in run.metrics() if "loss" in m]
    speeds = [m["tokens_per_s"] for m in run.metrics() if m.get("tokens_per_s")]
    facts = run.run_yaml()
    return run, {
        "state": status["state"], "reason": status.get("reason", ""), "steps": status.get("step"),
        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "seconds": round(seconds, 1), "tokens_per_s": sorted(speeds)[len(speeds) // 2] if speeds else None,  # median step
        "peak_cuda_gb": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if device == "cuda" else None,
        "speedups_applied": facts.get("speedups_applied"),
        "plan": [line for line in run.log_path.read_text().splitlines() if "Training on" in line][-1:],
    }


def prompts_of(n: int) -> list[list[dict]]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines()[:n]]
    return [[{"role": "user", "content": r["prompt"]}] for r in rows]


def batched_vs_single(run, n: int) -> dict:
    """(b): batched generation against transformers' generate on each prompt alone."""
    import torch

    from finetune_core.inference.generation import GenSettings, InferenceModel

    im = InferenceModel.from_run(run)
    settings = GenSettings(max_new_tokens=24)
    prompts = prompts_of(n)
    batched = im.generate(prompts, tuned=True, settings=settings, batch_size=n)
    model, _ = im.side(True)  # the tuned side of a LoRA model: the weights as they are
    same = 0
    for prompt, answer in zip(prompts, batched):
        ids = im.tokenizer(im.render(prompt), return_tensors="pt", add_special_tokens=False).to(im.policy.device)
        with torch.inference_mode():
            out = model.generate(**ids, **settings.kwargs(im.tokenizer))
        alone = im.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        same += alone == answer
    return {"rows": n, "identical": same, "share": round(same / n, 3)}


def merged_vs_adapter(run) -> dict | None:
    """(d): merged weights against the adapter switched on, on one prompt."""
    import torch
    from peft import PeftModel

    from finetune_core.export.artifacts import merged_model
    from finetune_core.models.sources import device_policy, load_model, load_tokenizer

    cfg = run.config()
    if cfg.method == "full":
        return None
    policy = device_policy(cfg.device)
    tok = load_tokenizer(cfg.model)
    ids = tok("Tell me about Tunisia.", return_tensors="pt").to(policy.device)
    adapter = PeftModel.from_pretrained(load_model(cfg.model, policy), str(run.adapter_dir)).eval()
    merged = merged_model(run).eval()
    with torch.inference_mode():
        a, b = adapter(**ids).logits.float(), merged(**ids).logits.float()
    return {"max_abs_diff": float((a - b).abs().max()), "logit_scale": float(a.abs().max())}


def same_loss(run) -> dict:
    """(a): the studio-built model's loss on a right-padded batch against plain PEFT on the same weights."""
    import torch
    from peft import PeftModel

    from finetune_core.models.sources import device_policy, load_model, load_tokenizer
    from finetune_core.speedups import apply_training

    cfg = run.config()
    policy = device_policy(cfg.device)
    tok = load_tokenizer(cfg.model)
    tok.padding_side = "right"
    texts = [r[0]["content"] * k for k, r in zip((1, 3, 5, 2), prompts_of(4))]
    batch = tok(texts, return_tensors="pt", padding=True).to(policy.device)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)

    def build():
        base = load_model(cfg.model, policy)
        if cfg.method == "full":
            return load_model(str(run.adapter_dir), policy).train()
        return PeftModel.from_pretrained(base, str(run.adapter_dir), is_trainable=True).train()

    plain, ours = build(), build()
    report = apply_training(ours, policy.device, policy.dtype, cfg.max_length, cfg.speedups)
    with torch.autocast(policy.device, dtype=policy.torch_dtype, enabled=policy.device == "cuda"):
        want = plain(**batch, labels=labels).loss.float().item()
        with report.scope():
            got = ours(**batch, labels=labels).loss.float().item()
    return {"plain": round(want, 5), "studio": round(got, 5), "abs_diff": abs(want - got),
            "speedups_applied": report.applied()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="a tiny random Llama (smoke test)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rows", type=int, default=8, help="prompts for the batched-generation check")
    parser.add_argument("--methods", default="", help="comma separated (default: every one available)")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device here; use --device cpu --tiny for a smoke test"}))
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    os.environ["STUDIO_RUNS_DIR"] = str(root / "runs")
    model = tiny_model_dir(root) if args.tiny else args.model
    chosen = [m for m in args.methods.split(",") if m] or methods(args.device)
    result = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "model": args.model
              if not args.tiny else "tiny-llama", "torch": torch.__version__, "methods": {}}
    for method in chosen:
        log(f"== {method}")
        run, trained = train(model, method, args.device, args.steps)
        entry = {"train": trained}
        if trained["state"] == "completed":
            entry["same_loss"] = same_loss(run)
            entry["batched_vs_single"] = batched_vs_single(run, args.rows)
            entry["merged_vs_adapter"] = merged_vs_adapter(run)
        result["methods"][method] = entry
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
