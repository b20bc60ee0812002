"""Chat benchmark: time to first token, tokens/s and memory for base and tuned.

    python bench/bench_chat.py --tiny                 # throwaway tiny model + LoRA: runs anywhere in seconds
    python bench/bench_chat.py --bundled              # bundled SmolLM2-135M + a fresh (untrained) LoRA adapter
    python bench/bench_chat.py --run runs/<id>        # a trained run: its base model + its adapter

Prints ONE JSON object on stdout (everything else goes to stderr). For each
of base alone, tuned alone and both together (one mixed batch, as the Chat
tab runs them) it reports the median time to first token (from the call to
the first streamed text, so prompt rendering and prefill are included) and
decode speed in tokens/s per side (one token per side per step). Memory is
the process RSS after loading the base model and after attaching the
adapter: the tuned side is the same weights with the adapter switched on,
so the goal is a ratio of at most 1.1 (`model_mem_ratio` compares the
growth over the RSS before loading, which is the stricter figure).
Goal from the issue: first token under 0.5 s for a short prompt on CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the repo

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_PROMPT = "What is the capital of France? Answer in one sentence."


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc; peak RSS elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def settled_rss() -> float:
    gc.collect()
    return rss_mb()


# -- what to load -------------------------------------------------------------------
def _tokenizer_for_tiny():
    """The bundled tokenizer: from the converted cache when present (fast), else the GGUF (~10 s)."""
    from transformers import AutoTokenizer

    from finetune_core.models.sources import BUNDLED_CACHE_NAME, bundled_gguf_path, cache_root

    cached = cache_root() / BUNDLED_CACHE_NAME
    if (cached / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(cached)
    gguf = bundled_gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def make_tiny(folder: Path) -> tuple[str, str]:
    """A tiny random Llama and a random (non-zero) LoRA adapter for it, saved under `folder`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _tokenizer_for_tiny()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    model_dir, adapter_dir = folder / "model", folder / "adapter"
    model.save_pretrained(model_dir, safe_serialization=True)
    tok.save_pretrained(model_dir)
    # init_lora_weights=False: random A and B, so tuned answers differ from base like a trained run.
    lora = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(adapter_dir)
    return str(model_dir), str(adapter_dir)


def fresh_adapter(model):
    """An untrained LoRA on the loaded model (zero B: same answers, same compute path as a real one)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")).eval()


def load(source: str, adapter_dir: str | None) -> tuple[object, dict]:
    """Load base, measure, attach the adapter, measure; returns the InferenceModel and memory figures."""
    from finetune_core.inference.generation import InferenceModel
    from finetune_core.models.sources import device_policy, load_model, load_tokenizer

    policy = device_policy()
    start_rss = settled_rss()
    t0 = time.perf_counter()
    tok = load_tokenizer(source)
    base = load_model(source, policy).eval()
    load_s = time.perf_counter() - t0
    base_rss = settled_rss()
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=False).eval()
    else:
        model = fresh_adapter(base)
    both_rss = settled_rss()
    memory = {
        "rss_start_mb": round(start_rss, 1), "rss_base_mb": round(base_rss, 1),
        "rss_base_adapter_mb": round(both_rss, 1), "rss_ratio": round(both_rss / base_rss, 4),
        "model_mb": round(base_rss - start_rss, 1), "adapter_extra_mb": round(both_rss - base_rss, 1),
        "model_mem_ratio": round((both_rss - start_rss) / max(base_rss - start_rss, 1e-6), 4),
    }
    memory["goal_ratio_le_1_1"] = memory["model_mem_ratio"] <= 1.1 and memory["rss_ratio"] <= 1.1
    return InferenceModel(model, tok, policy, label=source), {"load_s": round(load_s, 2), **memory}


# -- timing -------------------------------------------------------------------------
def time_stream(model, base_messages, tuned_messages, settings) -> dict:
    """One streamed answer: time to first text, decode speed per side, steps taken."""
    t0 = time.perf_counter()
    first = None
    steps = 0
    for _ in model.stream_pair(base_messages, tuned_messages, settings):
        steps += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    ttft = (first or end) - t0
    decode = end - (first or end)
    return {"ttft_s": ttft, "tokens_per_s": (steps - 1) / decode if steps > 1 and decode > 0 else None,
            "steps": steps, "total_s": end - t0}


def _median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 4) if values else None


def bench_mode(model, messages, mode: str, settings, repeats: int) -> dict:
    base = messages if mode in ("base", "both") else None
    tuned = messages if mode in ("tuned", "both") else None
    time_stream(model, base, tuned, settings)  # warm-up: first-call allocations and lazy inits
    runs = [time_stream(model, base, tuned, settings) for _ in range(repeats)]
    out = {k: _median([r[k] for r in runs]) for k in ("ttft_s", "tokens_per_s", "total_s")}
    out["steps"] = runs[-1]["steps"]
    if mode == "both" and out["tokens_per_s"]:
        out["tokens_per_s_both_sides"] = round(2 * out["tokens_per_s"], 2)
    return out


def run_bench(source: str, adapter_dir: str | None, label: str, prompt: str, max_new_tokens: int,
              repeats: int) -> dict:
    import torch

    from finetune_core.inference.generation import GenSettings

    model, memory = load(source, adapter_dir)
    messages = [{"role": "user", "content": prompt}]
    settings = GenSettings(max_new_tokens=max_new_tokens)  # greedy: comparable runs
    prompt_tokens = len(model.tokenizer(model.render(messages), add_special_tokens=False)["input_ids"])
    result = {"target": label, "model": source, "device": model.policy.describe(),
              "torch_threads": torch.get_num_threads(), "prompt_tokens": prompt_tokens,
              "max_new_tokens": max_new_tokens, "repeats": repeats,
              # Other processes on the same cores distort timings: record how busy the machine was.
              "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
              "cpu_count": os.cpu_count(), "memory": memory}
    for mode in ("base", "tuned", "both"):
        result[mode] = bench_mode(model, messages, mode, settings, repeats)
    result["goal_ttft_lt_0_5s"] = all(result[m]["ttft_s"] < 0.5 for m in ("base", "tuned", "both"))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--tiny", action="store_true", help="Temporary tiny model + LoRA (seconds, anywhere).")
    which.add_argument("--bundled", action="store_true", help="Bundled SmolLM2-135M (+ fresh LoRA unless --run).")
    which.add_argument("--run", metavar="RUN_DIR", help="A trained LoRA run directory.")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0 = torch's default). 1 is steadier when other jobs share the CPU.")
    args = p.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    real_stdout = sys.stdout
    # Libraries print progress and notices; keep stdout for the one JSON object.
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp:
        if args.tiny:
            source, adapter = make_tiny(Path(tmp))
            label = "tiny"
        elif args.bundled:
            source, adapter, label = "bundled", None, "bundled+fresh-lora"
        else:
            from finetune_core.runs.store import run_from_dir

            run = run_from_dir(args.run)
            cfg = run.config()
            if cfg.method == "full" or not (run.adapter_dir / "adapter_config.json").is_file():
                p.error(f"{args.run} has no LoRA adapter to benchmark.")
            source, adapter, label = cfg.model, str(run.adapter_dir), f"run:{run.id}"
        result = run_bench(source, adapter, label, args.prompt, args.max_new_tokens, max(1, args.repeats))
    json.dump(result, real_stdout, indent=2)
    real_stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
