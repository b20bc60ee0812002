"""Take a trained run elsewhere: adapter zip, merged model, GGUF file, Hub upload.

    python -m finetune_core export --run RUN_DIR --adapter-zip adapter.zip
    python -m finetune_core export --run RUN_DIR --merged merged/
    python -m finetune_core export --run RUN_DIR --gguf model.gguf [--qtype f16|bf16|q8_0]

(the `export` command itself is declared in evaluation/commands.py: it adds
the model card, which is built from the evaluation's report facts.)

* `adapter_zip` — the adapter folder (weights, adapter_config, tokenizer), the
  run's run.yaml and the model card files the caller passes (`card_files`,
  see evaluation/model_card.py).
* `merge` — the run's chain of LoRA adapters (its parents', then its own) folded into the
  base weights (`merge_and_unload`, models/chain.load_chain_model): a plain
  transformers folder (safetensors, tokenizer, generation config) that loads
  with `AutoModelForCausalLM.from_pretrained`.
* `export_gguf` — the merged model as one GGUF file (see gguf_export.py).
* `push_to_hub` — adapter or merged model plus the model card files the
  caller passes (README and loss curve) to a (private by default) Hub repo. Offline it fails at once with a
  clear message. The token is used for the upload only: it is never written
  to a file, a log or a card, and is scrubbed from error messages.

Every file is written to a temporary name beside its target and renamed, so
an interrupted export leaves no half-written result.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import urlparse

from finetune_core.errors import StudioError
from finetune_core.export.gguf import check_gguf_model, read_config, write_gguf
from finetune_core.models.sources import HUB_ID_RE as REPO_ID_RE  # a Hub repo id, as the model picker takes it
from finetune_core.runs.store import Run

WHAT = ("adapter", "merged")
T = TypeVar("T")
HUB_PROBE_TIMEOUT_S = 4.0


class ExportError(StudioError, ValueError):
    """An export could not be made; the message is for the user."""


def _require_adapter(run: Run) -> None:
    if not run.has_adapter():
        raise ExportError(f"Run {run.id} has no saved adapter yet: let it finish training first.")


def _fresh_dir(target: Path) -> Path:
    """A temporary folder beside `target` (same disk, so the final rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))


def _replace_dir(tmp: Path, target: Path) -> Path:
    if target.exists():
        if any(target.iterdir()):
            shutil.rmtree(tmp, ignore_errors=True)
            raise ExportError(f"{target} already exists and is not empty: choose a new folder.")
        target.rmdir()
    tmp.rename(target)
    return target


# -- adapter zip ----------------------------------------------------------------------------------
def _tokenizer_files(run: Run, folder: Path) -> None:
    """Save the base tokenizer into `folder` (for adapters saved without one)."""
    from finetune_core.models.sources import load_tokenizer

    load_tokenizer(run.config().model).save_pretrained(str(folder))


SERVER_PATH_FIELDS = ("data_path", "eval_path")


def shareable_run_yaml(run: Run) -> str:
    """run.yaml as it travels with a download: the config that reproduces the run,
    with server-side paths reduced to file names (the server's folders are not the
    downloader's business, and would not exist on their machine anyway)."""
    import yaml

    data = dict(run.run_yaml())
    for name in SERVER_PATH_FIELDS:
        if data.get(name):
            data[name] = Path(str(data[name])).name
    model = str(data.get("model") or "")
    if model.startswith(("/", ".", "~")):
        data["model"] = Path(model).name
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def adapter_zip(run: Run, out_path: str | os.PathLike, card_files: dict[str, bytes] | None = None) -> Path:
    """Zip adapter/ (weights, config, tokenizer), run.yaml and the model card files
    (name -> bytes, at the top of the zip; see evaluation.model_card.card_files)."""
    _require_adapter(run)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    extra = None
    try:
        if not (run.adapter_dir / "tokenizer_config.json").is_file():
            extra = _fresh_dir(out_path)
            _tokenizer_files(run, extra)
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for folder in filter(None, (run.adapter_dir, extra)):
                for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                    if path.name != "README.md":  # PEFT's template card; ours goes at the top
                        zf.write(path, f"adapter/{path.relative_to(folder).as_posix()}")
            zf.writestr("run.yaml", shareable_run_yaml(run))
            for name, data in (card_files or {}).items():
                zf.writestr(name, data)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
        if extra is not None:
            shutil.rmtree(extra, ignore_errors=True)
    return out_path


# -- merged model ---------------------------------------------------------------------------------
def run_tokenizer(run: Run):
    """The tokenizer saved with the adapter (it carries the chat template used in training)."""
    from transformers import AutoTokenizer

    from finetune_core.models.sources import load_tokenizer

    if (run.adapter_dir / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(run.adapter_dir))
    return load_tokenizer(run.config().model)


def merged_model(run: Run):
    """The run's model with its chain's adapters (its parents' and its own) folded into the base weights
    (policy device and dtype); a full fine-tune's folder is the whole model already."""
    from finetune_core.models.chain import load_chain_model
    from finetune_core.models.sources import device_policy

    return load_chain_model(run, device_policy(run.config().device))


def merge(run: Run, out_dir: str | os.PathLike) -> Path:
    """Save base + adapter as one standalone transformers model folder."""
    _require_adapter(run)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir} already exists and is not empty: choose a new folder.")
    model, tokenizer = merged_model(run).eval(), run_tokenizer(run)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = _fresh_dir(out_dir)
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _replace_dir(tmp, out_dir)


def merged_zip(run: Run, out_dir: str | os.PathLike, check: Callable[[Path], T] | None = None
               ) -> tuple[Path, T | None]:
    """The merged model as ``<run id>-merged.zip`` in ``out_dir``: merged in a private
    temporary folder (removed afterwards, on failure too), then zipped. `check(merged folder)`
    runs before the zip (the parity check); returns (the zip, what `check` returned or None)."""
    work = Path(tempfile.mkdtemp(prefix="studio-merge-"))
    try:
        merged = merge(run, work / f"{run.id}-merged")
        checked = check(merged) if check is not None else None
        return Path(shutil.make_archive(str(Path(out_dir) / f"{run.id}-merged"), "zip", merged.parent,
                                        merged.name)), checked
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- GGUF ---------------------------------------------------------------------------------------------
def _check_gguf_arch(run: Run) -> None:
    """Refuse a run llama.cpp could not run as written (its architecture, a setting the file cannot carry,
    a tokenizer that is not byte-level BPE) before spending a merge on it."""
    from finetune_core.models.sources import resolve_model_source

    cfg = run.config()
    where = Path(run.adapter_dir if cfg.method == "full" else resolve_model_source(cfg.model))
    if (where / "config.json").is_file():
        check_gguf_model(read_config(where), where)
        return
    from transformers import AutoConfig  # a Hub id: its config is in the local cache

    from huggingface_hub import try_to_load_from_cache

    try:
        config = AutoConfig.from_pretrained(str(where)).to_dict()
    except OSError:
        return  # not readable now: the merge will say why, or write_gguf will check the merged config
    cached = try_to_load_from_cache(str(where), "tokenizer.json")
    check_gguf_model(config, Path(cached).parent if isinstance(cached, str) else None)


def export_gguf(run_or_model_dir, out_file: str | os.PathLike, qtype: str = "f16") -> Path:
    """Write a GGUF file from a run (merged first) or from a merged model folder."""
    out_file = Path(out_file)
    if isinstance(run_or_model_dir, Run):
        run = run_or_model_dir
        _require_adapter(run)
        _check_gguf_arch(run)
        work = _fresh_dir(out_file)
        try:
            merged = merge(run, work / "merged")
            return write_gguf(merged, out_file, qtype, name=f"{run.id}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return write_gguf(Path(run_or_model_dir), out_file, qtype)


# -- Hub -------------------------------------------------------------------------------------------------
def _hub_host() -> str:
    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to the Hub opens in time. Run in a thread with a
    deadline: name resolution ignores socket timeouts and can stall much longer."""
    result = []

    def probe():
        try:
            socket.create_connection((_hub_host(), 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return bool(result and result[0])


def check_repo_id(repo_id: str) -> str:
    """The Hub repo id without surrounding spaces; ExportError unless it looks like "owner/name"."""
    repo_id = (repo_id or "").strip()
    if not REPO_ID_RE.match(repo_id) or ".." in repo_id:
        raise ExportError("The repo id must look like 'your-name/model-name' (letters, digits, '-', '_', '.').")
    return repo_id


def check_hub_online() -> None:
    """Raise ExportError, saying to download the files instead, when this server is offline or
    cannot reach the Hub; may block a few seconds on the network probe (`hub_reachable`)."""
    from finetune_core.models.sources import _offline

    if _offline():
        raise ExportError("Cannot push to the Hugging Face Hub: this app runs offline (HF_HUB_OFFLINE is set). "
                          "Download the adapter or merged model instead and upload it from a connected machine.")
    if not hub_reachable():
        raise ExportError(f"Cannot push to the Hugging Face Hub: {_hub_host()} is not reachable from this "
                          "machine (offline?). Download the files instead and upload them from a connected machine.")


def _stage_upload(run: Run, what: str, stage: Path, card_files: dict[str, bytes] | None = None) -> None:
    """Fill the new folder `stage` with what goes to the repo: model files, then the card files."""
    if what == "merged":
        merge(run, stage)
    else:  # PEFT's template README is replaced by the card (when one is passed)
        shutil.copytree(run.adapter_dir, stage, ignore=shutil.ignore_patterns("README.md"))
    for name, data in (card_files or {}).items():
        (stage / name).write_bytes(data)


def push_to_hub(run: Run, repo_id: str, token: str | None, what: str = "adapter", private: bool = True,
                overwrite: bool = False, card_files: dict[str, bytes] | None = None) -> str:
    """Upload the adapter or the merged model with the model card files (name -> bytes,
    see evaluation.model_card.card_files); returns the repo URL.

    `token` is the caller's own (no fallback here: who may use which token is the
    caller's decision). A repo that already exists is refused unless `overwrite`.
    Offline it raises ExportError within a few seconds.
    """
    repo_id = check_repo_id(repo_id)
    if what not in WHAT:
        raise ExportError(f"Push either {' or '.join(WHAT)}, not {what!r}.")
    token = (token or "").strip()
    if not token:
        raise ExportError("A Hugging Face token with write access is needed.")
    _require_adapter(run)
    check_hub_online()
    from huggingface_hub import HfApi

    def hub_error(exc: Exception) -> ExportError:
        text = (str(exc).splitlines() or [type(exc).__name__])[0].replace(token, "***")
        return ExportError(f"The Hub refused the upload: {text[:300]}")

    api = HfApi(token=token)
    try:
        exists = api.repo_exists(repo_id, repo_type="model")
    except Exception as exc:  # noqa: BLE001 - becomes one user message, without the token
        raise hub_error(exc) from None
    if exists and not overwrite:
        raise ExportError(f"The repo {repo_id} already exists: tick 'Overwrite an existing repo' to upload into it, "
                          "or choose another name.")
    with tempfile.TemporaryDirectory(prefix="studio-push-") as tmp:
        stage = Path(tmp) / "upload"
        _stage_upload(run, what, stage, card_files)
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=bool(overwrite), repo_type="model")
            api.upload_folder(folder_path=str(stage), repo_id=repo_id, repo_type="model",
                              commit_message=f"Upload {what} from fine-tuning studio run {run.id}")
        except Exception as exc:  # noqa: BLE001 - becomes one user message, without the token
            raise hub_error(exc) from None
    return str(url)
