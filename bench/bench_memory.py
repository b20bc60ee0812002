"""Memory estimate vs measured peak RSS: a few real training steps per configuration.

    .venv/bin/python bench/bench_memory.py                    # the 12 configurations below (~50 min on 2 busy cores)
    .venv/bin/python bench/bench_memory.py --only small-lora-b4-L256 --steps 2   # one of them

Each configuration trains in its own process through the studio's own runner
(finetune_core.training.runner.run_job, so the CPU speed-ups it applies are measured
too) on rows that fill max_length (language-modelling rows: every position is
a label, the case the estimate is made for). The child reads its peak RSS
(VmHWM in /proc/self/status) after every optimizer step; the parent compares
the highest with finetune_core.models.memory's estimate for a fresh process. Models:
the bundled SmolLM2-135M (finetune_core.models.sources.load_model('bundled'); the
first load converts the GGUF, ~20 s) and a small random Llama built from a
config (no download). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# name: model ("bundled" | "small"), RunConfig overrides
CONFIGS = {
    "tiny-lora-b1-L64": ("tiny", dict(batch_size=1, max_length=64, lora_dropout=0.0)),
    "bundled-lora-b4-L256": ("bundled", dict(batch_size=4, max_length=256, lora_dropout=0.0)),
    "bundled-lora-b8-L512-dropout": ("bundled", dict(batch_size=8, max_length=512, lora_dropout=0.05)),
    "bundled-lora-b8-L512-ckpt": ("bundled", dict(batch_size=8, max_length=512, lora_dropout=0.05,
                                                  gradient_checkpointing="on")),
    "bundled-lora-b4-L256-speedups-off": ("bundled", dict(batch_size=4, max_length=256, lora_dropout=0.0,
                                                          speedups="off")),
    "bundled-full-b4-L256": ("bundled", dict(method="full", batch_size=4, max_length=256, learning_rate=1e-5)),
    "small-lora-b4-L256": ("small", dict(batch_size=4, max_length=256, lora_dropout=0.0)),
    "small-lora-b16-L512-dropout": ("small", dict(batch_size=16, max_length=512, lora_dropout=0.05)),
    "small-lora-b16-L1024-ckpt": ("small", dict(batch_size=16, max_length=1024, lora_dropout=0.0,
                                                gradient_checkpointing="on")),
    "small-dora-b8-L512": ("small", dict(batch_size=8, max_length=512, lora_dropout=0.0, use_dora=True)),
    "small-full-b8-L512": ("small", dict(method="full", batch_size=8, max_length=512, learning_rate=1e-5)),
    "small-full-b16-L1024": ("small", dict(method="full", batch_size=16, max_length=1024, learning_rate=1e-5)),
}
SHAPES = {  # random Llamas built from a config (the bundled tokenizer's vocabulary)
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=8, num_attention_heads=8,
                  num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=True),
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True),
}


def random_model_dir(kind: str) -> str:
    """A random Llama of SHAPES[kind] (small: 19M parameters; tiny: the tests' model), built once."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from finetune_core.models.sources import bundled_gguf_path

    folder = Path(tempfile.gettempdir()) / f"studio-bench-memory-{kind}-llama"
    if not (folder / "model.safetensors").is_file():
        gguf = bundled_gguf_path()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, **SHAPES[kind])
        LlamaForCausalLM(cfg).save_pretrained(folder)
        tok.save_pretrained(folder)
    return str(folder)


def long_rows(n: int, words: int, seed: int = 0) -> list[dict]:
    """Text rows of `words` random words: longer than max_length, so every row is truncated to it."""
    import random

    rnd = random.Random(seed)
    vocab = "the a river stone light market green seven quickly under over paper window north small".split()
    return [{"text": " ".join(rnd.choice(vocab) for _ in range(words))} for _ in range(n)]


def vm_hwm() -> int:
    """This process's peak resident memory so far, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def run_one(cfg_dict: dict, steps: int) -> dict:
    """Child: train `steps` steps of the config and report the peak RSS after each."""
    import finetune_core.training.runner  # noqa: F401 - the libraries a run imports, before the baseline is read
    import peft  # noqa: F401
    import torch
    import trl  # noqa: F401
    from transformers import TrainerCallback

    from finetune_core.config import RunConfig
    from finetune_core.data.dataset import write_jsonl
    from finetune_core.training.runner import run_job
    from finetune_core.runs.store import create_run, write_json_atomic

    after_imports = vm_hwm()
    peaks: list[int] = []

    begin: dict[str, int] = {}

    class Peaks(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):  # model loaded, adapters made, nothing trained
            begin["hwm"] = vm_hwm()

        def on_step_end(self, args, state, control, **kw):
            peaks.append(vm_hwm())

    cfg = RunConfig.from_dict({**cfg_dict, "data_path": "bench.jsonl", "max_steps": steps, "logging_steps": 1,
                               "save_steps": 0, "eval_steps": 0, "max_eval_rows": 0})
    run = create_run(cfg)
    write_jsonl(run.data_dir / "train.jsonl", long_rows(cfg.batch_size * steps, words=cfg.max_length * 2))
    write_jsonl(run.data_dir / "heldout.jsonl", [])
    write_json_atomic(run.data_dir / "report.json", {"format": "text", "rows": cfg.batch_size * steps})
    start = time.perf_counter()
    status = run_job(run, threading.Event(), extra_callbacks=[Peaks()])
    if status["state"] != "completed":
        raise SystemExit(f"run failed: {status.get('reason')}")
    return {"after_imports_mb": round(after_imports / 2**20, 1), "train_begin_mb": round(begin["hwm"] / 2**20, 1),
            "step_peaks_mb": [round(p / 2**20, 1) for p in peaks],
            "peak_mb": round(max(peaks) / 2**20, 1), "wall_s": round(time.perf_counter() - start, 1),
            "threads": torch.get_num_threads()}


def estimate_mb(cfg_dict: dict) -> dict:
    """The estimate for a fresh training process on this machine, by part (MiB)."""
    from finetune_core.models import memory
    from finetune_core.config import RunConfig

    cfg = RunConfig.from_dict(cfg_dict)
    dev = memory.probe_device(cfg)
    dev = memory.Device(dev.device, dev.available, dev.lora_dtype, dev.full_dtype, process_rss=0.0)  # a new process
    est = memory.estimate_for(cfg, memory.model_facts(cfg.model).shape, dev)
    return {"total_mb": round(est.total / 2**20, 1), "dtype": est.dtype,
            **{f"{k.replace(' ', '_')}_mb": round(v / 2**20, 1) for k, v in {**est.parts, **est.detail}.items()
               if k != "trainable params"}}


def measure(name: str, steps: int, timeout: int) -> dict:
    kind, overrides = CONFIGS[name]
    cfg_dict = {"model": "bundled" if kind == "bundled" else random_model_dir(kind), **overrides}
    with tempfile.TemporaryDirectory() as runs:
        env = {**os.environ, "STUDIO_RUNS_DIR": runs}
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg_dict), "--steps", str(steps)],
                             capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    est = estimate_mb(cfg_dict)
    error = est["total_mb"] / measured["peak_mb"] - 1
    print(f"{name}: measured {measured['peak_mb']:.0f} MiB, estimate {est['total_mb']:.0f} MiB ({error:+.1%})",
          file=sys.stderr, flush=True)
    return {"config": name, "model": kind, **overrides, "steps": steps, "measured": measured, "estimate": est,
            "error": round(error, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="comma-separated configuration names (default: all)")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per configuration")
    p.add_argument("--timeout", type=int, default=900, help="seconds per configuration")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_one(json.loads(args.child), args.steps)))
        return
    import torch
    import transformers
    import trl

    from finetune_core.models import memory_estimate as formulas

    names = [n for n in (args.only or ",".join(CONFIGS)).split(",") if n]
    results = [measure(n, args.steps, args.timeout) for n in names]
    worst = max(abs(r["error"]) for r in results)
    print(json.dumps({
        "benchmark": "memory_estimate", "device": "cpu", "date": time.strftime("%Y-%m-%d"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "constants": {"ACTIVATION_SCALE": formulas.ACTIVATION_SCALE, "LM_HEAD_TILES_CPU": formulas.LM_HEAD_TILES_CPU,
                      "IMPORTS_RSS_mb": round(formulas.IMPORTS_RSS / 2**20), "RUN_OVERHEAD_mb":
                      round(formulas.RUN_OVERHEAD / 2**20)},
        "worst_error": worst, "within_25_percent": worst <= 0.25, "results": results}))


if __name__ == "__main__":
    main()
