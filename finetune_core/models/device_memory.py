"""What memory this machine offers a training run: free RAM (cgroup-capped) or VRAM,
this process's own RSS, and the device and dtypes a run's settings would get there.

The memory estimate (finetune_core/models/memory.py) compares its figures with these.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finetune_core.config import RunConfig

def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) is not a number


def process_rss(status: str = "/proc/self/status") -> float:
    """This process's resident memory in bytes (0 where /proc is missing)."""
    try:
        for line in Path(status).read_text(encoding="utf-8").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def available_ram(meminfo: str = "/proc/meminfo", rss: float | None = None,
                  cgroup_files: tuple[str, ...] = ("/sys/fs/cgroup/memory.max",
                                                   "/sys/fs/cgroup/memory/memory.limit_in_bytes")) -> float:
    """RAM the training process may reach: the kernel's MemAvailable plus what this process
    already holds (it trains in this process), capped by a cgroup (container) limit."""
    avail = 0
    try:
        for line in Path(meminfo).read_text(encoding="utf-8").splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    total = avail + (process_rss() if rss is None else rss)
    limits = [v for v in (_read_int(p) for p in cgroup_files) if v and v < 1 << 60]  # v1 says "no limit" as ~2^63
    return float(min([total, *limits]))


def available_vram() -> float:
    """Free GPU memory plus what torch's allocator already holds for this process."""
    import torch

    free, _total = torch.cuda.mem_get_info()
    return float(free + torch.cuda.memory_reserved())


@dataclass(frozen=True)
class Device:
    """Where a run would train, the dtype of each method there, and how much memory it may use."""

    device: str
    available: float
    lora_dtype: str = "float32"  # LoRA and QLoRA
    full_dtype: str = "float32"
    process_rss: float = 0.0

    def dtype_for(self, method: str) -> str:
        """The dtype name a run with `method` ("lora", "qlora" or "full") trains in on this device."""
        return self.full_dtype if method == "full" else self.lora_dtype


def probe_device(cfg: RunConfig) -> Device:
    """This machine as a run with `cfg`'s device and precision would find it (the training policy)."""
    from finetune_core.models.sources import training_policy

    lora = training_policy(cfg.device, cfg.precision, "lora")
    full = training_policy(cfg.device, cfg.precision, "full")
    if lora.device == "cuda":
        return Device("cuda", available_vram(), lora.dtype, full.dtype)
    rss = process_rss()
    return Device(lora.device, available_ram(rss=rss), lora.dtype, full.dtype, rss)
