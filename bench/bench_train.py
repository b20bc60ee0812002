"""Training throughput: our runner vs plain TRL scripts, same model, data and steps.

    .venv/bin/python bench/bench_train.py                  # bundled 135M, SAMSum (or in-repo fallback)
    .venv/bin/python bench/bench_train.py --tiny --steps 2 --warmup 1 --rounds 1   # smoke test

Variants, each run in its own process and interleaved round by round:
* ours          — finetune_core.training.train.build_trainer (dtype by device, no
                  gradient checkpointing, length-grouped batches, the CPU
                  speed-ups of finetune_core.speedups)
* ours_fp32     — ours with precision float32 (on a CPU with bf16
                  instructions ours trains in bf16); not in the default set
* ours_off      — ours with `speedups: off` and precision float32: the
                  libraries' own code paths (compare with plain_tuned_grouped);
                  not in the default set
* ours_sdpa     — ours with torch's SDPA kernel for every row's attention
                  instead of the grouped bf16 attention; not in the
                  default set
* plain_tuned   — a plain SFTTrainer script hand-tuned for CPU: fp32, no
                  gradient checkpointing, otherwise TRL's defaults
* plain_tuned_grouped — plain_tuned with length-grouped batches, as ours
                  samples them; not in the default set
* plain_default — a plain SFTTrainer script with TRL's defaults (bf16 autocast,
                  gradient checkpointing); very slow on CPUs without bf16
                  instructions (minutes a step), so --rounds 1 may be wanted there
* plain_nockpt_b32 — TRL's defaults with gradient checkpointing off and batch
                  32 (the usual first tuning on a GPU); not in the default set
All use LoRA r=16, alpha=32, dropout 0.05 on all linear layers, batch 8
(--batch-size), max_length 512. Tokens/s = non-padding input tokens of the timed steps / wall
time of those steps (warm-up steps excluded). On a CUDA device the peak memory
is torch's peak allocation and MFU uses the GPU's dense bf16 peak. Prints one
JSON object.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMSUM = REPO.parent / "shared" / "datasets" / "samsum_train.json"
FALLBACK = REPO / "sample_data" / "support_notes.csv"
LORA = dict(r=16, alpha=32, dropout=0.05)


def load_rows(n: int) -> tuple[list[dict], str]:
    """Conversational prompt/completion rows with a realistic mix of lengths."""
    from finetune_core.data.dataset import DataMapping, prepare_data

    if SAMSUM.is_file():
        opts = DataMapping(data_path=str(SAMSUM), data_format="columns",
                           prompt_template="Summarize this dialogue:\n{dialogue}",
                           completion_template="{summary}")
        source = "samsum_train.json"
    else:
        opts = DataMapping(data_path=str(FALLBACK), data_format="columns",
                           prompt_template="Summarise this support note:\n{note}",
                           completion_column="summary")
        source = "sample_data/support_notes.csv"
    rows = prepare_data(opts).rows[:n]
    return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows], source


class Meter:
    """Counts the tokens each optimizer step trains on and times the steps after warm-up.

    Tokens are counted where the Trainer computes the loss (the dataloader
    prefetches batches, so counting in the collator would shift the count by a batch)."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.step_tokens = self.step_loss_tokens = self.step_padded = 0
        self.tokens = self.loss_tokens = self.padded = 0
        self.t_start = self.t_end = self.t_first = None
        self.step_times: list[float] = []
        self._t_step = None

    def wrap(self, trainer) -> None:
        compute_loss = trainer.compute_loss

        def counting_compute_loss(model, inputs, *args, **kwargs):
            if model.training:
                ids, mask, labels = inputs["input_ids"], inputs.get("attention_mask"), inputs.get("labels")
                self.step_tokens += int(mask.sum()) if mask is not None else int(ids.numel())
                self.step_padded += int(ids.numel())
                if labels is not None:
                    self.step_loss_tokens += int((labels[:, 1:] != -100).sum())
            return compute_loss(model, inputs, *args, **kwargs)

        trainer.compute_loss = counting_compute_loss
        trainer.add_callback(self.callback())

    def callback(self):
        from transformers import TrainerCallback

        meter = self

        class _CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                meter._t_step = time.perf_counter()
                if meter.t_first is None:
                    meter.t_first = meter._t_step
                meter.step_tokens = meter.step_loss_tokens = meter.step_padded = 0
                if state.global_step == meter.warmup:
                    meter.t_start = meter._t_step

            def on_step_end(self, args, state, control, **kw):
                now = time.perf_counter()
                if state.global_step > meter.warmup:
                    meter.step_times.append(now - meter._t_step)
                    meter.t_end = now
                    meter.tokens += meter.step_tokens
                    meter.loss_tokens += meter.step_loss_tokens
                    meter.padded += meter.step_padded

        return _CB()


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_gpu_mb() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


def run_variant(variant: str, model: str, rows: list[dict], steps: int, warmup: int, out_dir: str,
                batch: int = 8) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from finetune_core.config import DataMapping, RunConfig
    from finetune_core.models.sources import load_model, load_tokenizer, training_policy
    from finetune_core.runs.store import Run
    from finetune_core.training.train import build_trainer

    total = steps + warmup
    if variant == "ours_sdpa":
        from finetune_core.speedups import packed_attention as cpu_speed

        cpu_speed.GROUPED_MAX_LEN = 0  # every row takes the kernel
    if variant in ("ours", "ours_fp32", "ours_sdpa", "ours_off"):
        cfg = RunConfig(model=model, max_steps=total, batch_size=batch, max_length=512, lora_r=LORA["r"],
                        lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], logging_steps=10_000,
                        data=DataMapping(seed=42),
                        precision="float32" if variant in ("ours_fp32", "ours_off") else "auto",
                        speedups="off" if variant == "ours_off" else "auto")
        policy = training_policy(cfg.device, cfg.precision, cfg.method)
        run = Run(Path(out_dir))
        (run.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        trainer, _tok = build_trainer(cfg, run, rows, [], policy, [], lambda e: None)
    else:
        tok = load_tokenizer(model)
        base = load_model(model)  # float32 weights; the variants differ in SFTConfig only
        kwargs = dict(output_dir=out_dir, per_device_train_batch_size=batch, max_steps=total, max_length=512,
                      report_to="none", save_strategy="no", logging_steps=10_000, seed=42, disable_tqdm=True,
                      use_cpu=not torch.cuda.is_available())  # what TRL asks for on a GPU-less machine
        if variant == "plain_tuned":
            kwargs.update(bf16=False, gradient_checkpointing=False)
        elif variant == "plain_tuned_grouped":
            kwargs.update(bf16=False, gradient_checkpointing=False, train_sampling_strategy="group_by_length")
        elif variant == "plain_nockpt_b32":
            kwargs.update(gradient_checkpointing=False, per_device_train_batch_size=32)
        elif variant != "plain_default":
            raise SystemExit(f"unknown variant {variant!r}")
        peft = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                          target_modules="all-linear", task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=base, args=SFTConfig(**kwargs), train_dataset=Dataset.from_list(rows),
                             processing_class=tok, peft_config=peft)
    meter = Meter(warmup)
    meter.wrap(trainer)
    with trainer.speedups.scope() if hasattr(trainer, "speedups") else contextlib.nullcontext():
        trainer.train()
    wall = meter.t_end - meter.t_start
    n_params = sum(p.numel() for p in trainer.model.parameters())
    n_rows = steps * trainer.args.per_device_train_batch_size
    return {
        "variant": variant, "timed_steps": steps, "wall_s": round(wall, 3),
        "warmup_s": round(meter.t_start - meter.t_first, 3),
        "tokens": meter.tokens, "loss_tokens": meter.loss_tokens, "padded_tokens": meter.padded,
        "tokens_per_s": round(meter.tokens / wall, 2), "loss_tokens_per_s": round(meter.loss_tokens / wall, 2),
        "padding_share": round(1 - meter.tokens / max(1, meter.padded), 4),
        "median_step_s": round(statistics.median(meter.step_times), 3), "peak_rss_mb": round(_peak_rss_mb(), 1),
        "peak_gpu_mb": _peak_gpu_mb(), "params": n_params, "threads": torch.get_num_threads(),
        "batch_size": trainer.args.per_device_train_batch_size,
        "weights_dtype": str(trainer.model.get_input_embeddings().weight.dtype).replace("torch.", ""),
        "autocast_bf16": bool(trainer.args.bf16),
        "flops_per_token": flops_per_token(trainer.model, meter.tokens, meter.loss_tokens, meter.padded, n_rows),
    }


def flops_per_token(model, tokens: int, loss_tokens: int, padded: int, n_rows: int) -> float:
    """LoRA training FLOPs per real token: 4*N_frozen_matmul + 6*N_lora + attention, plus the
    LM head on loss positions only (TRL projects only those). Padding counts as waste."""
    import torch

    frozen = lora = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            n = module.weight.numel()
            if "lora_" in name:
                lora += n
            elif "lm_head" not in name:
                frozen += n
    cfg = model.config
    layers, d = cfg.num_hidden_layers, cfg.hidden_size
    avg_len = padded / max(1, n_rows)
    attention = 3 * 2 * 2 * layers * avg_len * d / 2  # QK^T and AV, causal half, fwd + 2x bwd
    head = 4 * cfg.vocab_size * d * loss_tokens / max(1, tokens)
    return float(4 * frozen + 6 * lora + attention + head)


def cpu_matmul_peak(dtype_name: str) -> float:
    """This CPU's measured matrix-product rate in a dtype (FLOP/s): 2048^2 products, best of 6.

    Measured rather than computed from clock and vector width, which mislead
    (turbo clocks; BLAS libraries that reach different shares of the peak on
    different vendors' CPUs). A dtype the CPU only emulates (bf16 without
    AVX512-BF16/AMX) runs at well under 1 GFLOP/s: one 2048^2 bf16 product took
    63 s on a 2-core EPYC without them, so six made the peak cost minutes. A
    512^2 probe finds that case first, and then the rate is taken at 512^2.
    Emulated products ran faster at that size (1.2 vs 0.27 GFLOP/s, same CPU),
    so an MFU against it errs low, never high."""
    import torch

    dtype = getattr(torch, dtype_name)

    def best_rate(n: int, tries: int) -> float:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        best = float("inf")
        for _ in range(tries):
            t = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t)
        return 2 * n ** 3 / best

    probe = best_rate(512, 2)
    if probe < 5e9:  # emulated: a 2048^2 product would take seconds to minutes
        return probe
    return best_rate(2048, 6)


# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, by device-name fragment.
GPU_BF16_PEAK = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12,
                 "L4": 121e12, "A10G": 70e12, "A10": 125e12, "T4": 65e12}


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")),
               platform.processor() or platform.machine())
    return f"cpu ({cpu}, {os.cpu_count()} cores)"


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def peak_flops(compute_dtype: str) -> tuple[float | None, str]:
    """(peak FLOP/s for MFU, how it was found); None where unknown."""
    import torch

    if not torch.cuda.is_available():
        return cpu_matmul_peak(compute_dtype), f"measured {compute_dtype} matrix product on this CPU"
    name = torch.cuda.get_device_name(0)
    key = next((k for k in GPU_BF16_PEAK if k in name), None)
    if key is None:
        return None, "GPU not in GPU_BF16_PEAK: MFU not reported"
    return GPU_BF16_PEAK[key], f"{key} dense bf16 data-sheet peak"


def compute_dtype(run: dict) -> str:
    return "bfloat16" if run.get("weights_dtype") == "bfloat16" or run.get("autocast_bf16") else "float32"


def collect(args) -> dict[str, list[dict]]:
    """Run every variant in its own process, interleaved round by round."""
    variants = [v for v in args.variants.split(",") if v]
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            cmd = [sys.executable, __file__, "--variant", v, "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--rows", str(args.rows), "--model", args.model, "--batch-size", str(args.batch_size)]
            cmd += ["--tiny"] if args.tiny else []
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            if out.returncode != 0:
                raise SystemExit(f"{v} failed:\n{out.stderr[-3000:]}")
            results[v].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def summarize(results: dict[str, list[dict]], meta: dict) -> dict:
    """Medians per variant, MFU against the peak of the variant's compute dtype, and ratios."""
    peaks = {d: peak_flops(d) for d in sorted({compute_dtype(r[0]) for r in results.values()})}
    summary = {}
    for v, runs in results.items():
        tps = statistics.median(r["tokens_per_s"] for r in runs)
        peak, _ = peaks[compute_dtype(runs[0])]
        summary[v] = {"tokens_per_s": tps, "loss_tokens_per_s": statistics.median(r["loss_tokens_per_s"] for r in runs),
                      "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "peak_gpu_mb": runs[0].get("peak_gpu_mb"),
                      "padding_share": runs[0]["padding_share"], "batch_size": runs[0].get("batch_size", 8),
                      "compute_dtype": compute_dtype(runs[0]),
                      "mfu": round(tps * runs[0]["flops_per_token"] / peak, 4) if peak else None, "runs": runs}
    ratios = {}
    if "ours" in summary:
        for other in ("ours_fp32", "ours_sdpa", "ours_off", "plain_tuned", "plain_tuned_grouped", "plain_default",
                      "plain_nockpt_b32"):
            if other in summary:
                ratios[f"ours_vs_{other}"] = round(summary["ours"]["tokens_per_s"] / summary[other]["tokens_per_s"], 2)
    if "ours_off" in summary and "plain_tuned_grouped" in summary:  # speed-ups off: the libraries' own speed
        ratios["ours_off_vs_plain_tuned_grouped"] = round(
            summary["ours_off"]["tokens_per_s"] / summary["plain_tuned_grouped"]["tokens_per_s"], 2)
    return {**meta, "device": device_name(),
            "peak_flops": {d: {"flops": p, "basis": basis} for d, (p, basis) in peaks.items()},
            "results": summary, "ratios": ratios}


def orchestrate(args) -> dict:
    import torch
    import transformers
    import trl

    meta = {"benchmark": "train_throughput", "model": args.model, "data": args.source, "rows": args.rows,
            "timed_steps": args.steps, "warmup_steps": args.warmup, "rounds": args.rounds,
            "batch_size": args.batch_size, "max_length": 512, "lora": LORA,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
            "date": time.strftime("%Y-%m-%d")}
    return summarize(collect(args), meta)


def tiny_model_dir() -> str:
    """A tiny random Llama with the bundled tokenizer (for the smoke test)."""
    sys.path.insert(0, str(REPO / "tests"))
    from transformers import AutoTokenizer

    from conftest import build_tiny_model
    from finetune_core.models.sources import bundled_gguf_path

    folder = Path(tempfile.gettempdir()) / "studio-bench-tiny-llama"
    if not (folder / "model.safetensors").is_file():
        gguf = bundled_gguf_path()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        build_tiny_model(tok).save_pretrained(folder)
        tok.save_pretrained(folder)
    return str(folder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bundled")
    p.add_argument("--tiny", action="store_true", help="tiny random model (smoke test)")
    p.add_argument("--steps", type=int, default=6, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rows", type=int, default=400)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8, help="rows per step (plain_nockpt_b32 always uses 32)")
    p.add_argument("--variants", default="ours,plain_tuned,plain_default")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=int, default=3600)
    p.add_argument("--summarize", metavar="RESULT_JSON",
                   help="summarise the runs of a saved result again (MFU peaks re-measured: same machine only)")
    args = p.parse_args()
    if args.summarize:
        saved = json.loads(Path(args.summarize).read_text())
        runs = {v: r["runs"] for v, r in saved["results"].items()}
        meta = {k: v for k, v in saved.items() if k not in ("results", "ratios", "device", "peak_flops",
                                                             "peak_flops_estimate", "peak_flops_basis")}
        print(json.dumps(summarize(runs, meta)))
        return
    if args.tiny:
        args.model = tiny_model_dir()
    rows, args.source = load_rows(args.rows)
    if args.variant:
        with tempfile.TemporaryDirectory() as out:
            print(json.dumps(run_variant(args.variant, args.model, rows, args.steps, args.warmup, out,
                                         args.batch_size)))
        return
    print(json.dumps(orchestrate(args)))


if __name__ == "__main__":
    main()
