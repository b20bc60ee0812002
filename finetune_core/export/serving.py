"""How to run an export where users deploy: Ollama, llama-server, vLLM, TGI, transformers.

    from finetune_core.export.serving import serving_commands, write_modelfile
    serving_commands(run, gguf_file="run-f16.gguf", merged_dir="run-merged")  # {"ollama": "...", ...}
    write_modelfile(run, Path("exports/run-f16.gguf"))  # exports/run-f16.Modelfile

* A GGUF file gets an Ollama ``Modelfile`` (``FROM``, a ``TEMPLATE`` in Ollama's
  Go-template syntax that renders the same prompt text as the model's own Jinja chat
  template, one ``PARAMETER stop`` per end-of-turn token, greedy temperature, context
  size, and ``SYSTEM`` when the run trained with a system prompt) and the
  ``llama-server`` command (``--jinja``: it uses the template embedded in the file).
* An adapter gets the vLLM and TGI multi-LoRA serving commands (base model plus
  ``name=path``); a merged model gets the transformers snippet.

The Go template is derived from the tokenizer's own chat template (chat_parts.py),
not looked up by family; when it cannot be derived, the Modelfile has no TEMPLATE
and says Ollama then takes the chat template embedded in the GGUF. Names and paths
come from the run's id and config and are shell-quoted; no server path is shown
(files are named as the downloads are).
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from finetune_core.export.chat_parts import chat_parts, go_template
from finetune_core.export.gguf_tokenizer import adds_bos
from finetune_core.runs.store import Run

DEFAULT_CONTEXT = 4096
LLAMA_SERVER_PORT = 8080
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM's --max-lora-rank accepts
BUNDLED_CONTEXT = 8192  # SmolLM2-135M-Instruct's max_position_embeddings
UNZIPPED = "./{run}-adapter/adapter"  # where the adapter is once its download is unzipped beside it


# -- Ollama --------------------------------------------------------------------------------------------
def _triple_quoted(text: str) -> str:
    # A Modelfile value in """ ... """ ends at the first """: a prompt holding one is spaced apart.
    return '"""' + text.replace('"""', '" " "') + '"""'


def ollama_modelfile(gguf_name: str, tokenizer, system: str = "", num_ctx: int = DEFAULT_CONTEXT,
                     temperature: float = 0.0, title: str = "") -> str:
    """An Ollama Modelfile for the GGUF file `gguf_name` (kept beside it): FROM, TEMPLATE (when the chat
    template can be read as parts, else a comment saying Ollama uses the one embedded in the GGUF), SYSTEM
    when given, a stop per end-of-turn token, temperature (0: greedy, as the parity check answers) and
    num_ctx. `title`: a first comment line."""
    parts = chat_parts(tokenizer) if getattr(tokenizer, "chat_template", None) else None
    lines = [f"# {title}"] if title else []
    lines.append(f"FROM ./{Path(gguf_name).name}")
    if parts is not None:
        drop = tokenizer.bos_token if adds_bos(tokenizer) and tokenizer.bos_token else ""
        lines += ["# The model's chat template in Ollama's syntax: it renders the same prompt text as the",
                  "# Jinja template the studio trained and evaluated with (BOS is added by the runtime).",
                  f"TEMPLATE {_triple_quoted(go_template(parts, drop))}"]
        stops = parts.stops
    else:
        lines.append("# No TEMPLATE: this chat template could not be read as plain turns, so Ollama takes the "
                     "chat template embedded in the GGUF file (tokenizer.chat_template).")
        stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    if system.strip():
        lines.append(f"SYSTEM {_triple_quoted(system.strip())}")
    lines += [f'PARAMETER stop "{s}"' for s in stops if '"' not in s and "\n" not in s]
    lines += [f"PARAMETER temperature {temperature:g}", f"PARAMETER num_ctx {int(num_ctx)}"]
    return "\n".join(lines) + "\n"


# -- the run's facts -----------------------------------------------------------------------------------
def base_model_id(source: str) -> str | None:
    """The Hub id of the base model, when it has one (a local folder has none).

    >>> base_model_id("Qwen/Qwen2.5-0.5B-Instruct"), base_model_id("/srv/models/mine")
    ('Qwen/Qwen2.5-0.5B-Instruct', None)
    >>> base_model_id("bundled")
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    """
    from finetune_core.models.catalogue import BUNDLED_HUB_ID  # what the bundled GGUF was converted from
    from finetune_core.models.sources import BUNDLED, HUB_ID_RE

    if source in ("", BUNDLED):
        return BUNDLED_HUB_ID
    return source if HUB_ID_RE.match(source) else None


def _max_positions(run: Run) -> int | None:
    """The model's context length from a config.json found without loading anything (None: unknown)."""
    from finetune_core.models.sources import BUNDLED

    source = str(run.run_yaml().get("model") or "")
    if source in ("", BUNDLED):
        return BUNDLED_CONTEXT
    from finetune_core.models.catalogue import entry

    if entry(source) is not None:
        return entry(source).context
    candidates = [run.adapter_dir / "config.json", Path(source).expanduser() / "config.json"]
    if base_model_id(source):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "config.json")
        candidates += [Path(cached)] if isinstance(cached, str) else []
    for path in candidates:
        try:
            value = json.loads(path.read_text(encoding="utf-8")).get("max_position_embeddings")
        except (OSError, ValueError):
            continue
        if isinstance(value, int) and value > 0:
            return value
    return None


def context_size(run: Run) -> int:
    """The context to serve with: DEFAULT_CONTEXT (or the run's max_length when longer), within the model's own."""
    want = max(DEFAULT_CONTEXT, int(run.run_yaml().get("max_length") or 0))
    limit = _max_positions(run)
    return min(want, limit) if limit else want


def ollama_name(run: Run) -> str:
    """The Ollama model name for the run: its id in the characters Ollama allows.

    >>> ollama_name(Run(Path("/runs/20260101-120000-Toy-ab12cd")))
    '20260101-120000-toy-ab12cd'
    """
    return re.sub(r"[^a-z0-9._-]+", "-", run.id.lower()).strip("-._") or "studio-model"


def write_modelfile(run: Run, gguf_path: str | Path) -> Path:
    """Write `<gguf stem>.Modelfile` beside the GGUF file, for the run's tokenizer and system prompt."""
    from finetune_core.export.artifacts import run_tokenizer

    gguf_path = Path(gguf_path)
    name = ollama_name(run)
    text = ollama_modelfile(gguf_path.name, run_tokenizer(run), system=str(run.run_yaml().get("system_prompt") or ""),
                            num_ctx=context_size(run),
                            title=f"Ollama: ollama create {name} -f {gguf_path.stem}.Modelfile, then ollama run {name}")
    out = gguf_path.with_suffix(".Modelfile")
    out.write_text(text, encoding="utf-8")
    return out


# -- commands --------------------------------------------------------------------------------------------
def _q(text: str) -> str:
    return shlex.quote(str(text))


def vllm_rank(rank: int) -> int:
    """The smallest --max-lora-rank vLLM accepts that holds an adapter of `rank`.

    >>> vllm_rank(8), vllm_rank(12), vllm_rank(600)
    (8, 16, 512)
    """
    return next((r for r in VLLM_RANKS if r >= rank), VLLM_RANKS[-1])


def _not_plain_lora(run: Run) -> str:
    """Why the run's adapter cannot be served alone on its base model ("" when it can)."""
    cfg = run.run_yaml()
    if cfg.get("method") == "full":
        return "a full fine-tune has no adapter"
    if cfg.get("parent_run"):
        return f"this run continues run {cfg['parent_run']}: its adapter applies on top of its parent's"
    if cfg.get("use_dora"):
        return "DoRA adapters are not served as plain LoRA"
    return ""


def _base(run: Run) -> str:
    source = str(run.run_yaml().get("model") or "")
    return base_model_id(source) or f"./{Path(source).name or 'base-model'}"


def _where(location: str) -> str:
    """A Hub repo id as it is, else the file or folder name beside the user ("./name")."""
    from finetune_core.models.sources import HUB_ID_RE

    return location if HUB_ID_RE.match(location) else f"./{Path(location).name}"


def adapter_commands(run: Run, adapter: str | None = None) -> dict[str, str]:
    """vLLM and TGI commands serving the run's adapter on its base model: from `adapter` (a Hub repo id)
    when given, else from its downloaded zip, unzipped; a run whose adapter is not a plain LoRA on the base
    is served merged instead."""
    name, base = ollama_name(run), _base(run)
    why = _not_plain_lora(run)
    if why:
        merged = _where(f"{run.id}-merged")
        note = f"# {why}: serve the merged model (Export tab: merged model)\n"
        return {"vllm": note + f"vllm serve {_q(merged)} --port 8000",
                "tgi": note + f"text-generation-launcher --model-id {_q(merged)} --port 8080"}
    lines = [] if base_model_id(str(run.run_yaml().get("model") or "")) else [
        "# the base model is a local folder on the training machine: copy it here first"]
    if adapter:
        path = _where(adapter)
    else:
        lines.append(f"unzip {_q(run.id + '-adapter.zip')} -d {_q(run.id + '-adapter')}")
        path = UNZIPPED.format(run=run.id)
    rank = vllm_rank(int(run.run_yaml().get("lora_r") or 16))
    vllm = [f"vllm serve {_q(base)} --enable-lora --lora-modules {_q(f'{name}={path}')} "
            f"--max-lora-rank {rank} --port 8000",
            f"# then ask for the model \"{name}\" on the OpenAI-compatible API (http://localhost:8000/v1)"]
    tgi = [f"text-generation-launcher --model-id {_q(base)} --lora-adapters {_q(f'{name}={path}')} --port 8080",
           f"# then send \"adapter_id\": \"{name}\" with each request"]
    if not adapter:
        tgi[1:1] = ["# or in docker:", f"docker run --gpus all --shm-size 1g -p 8080:80 -v \"$PWD/{path[2:]}:"
                    f"/adapters/{name}\" ghcr.io/huggingface/text-generation-inference:latest --model-id "
                    f"{_q(base)} --lora-adapters {_q(f'{name}=/adapters/{name}')}"]
    return {"vllm": "\n".join(lines + vllm), "tgi": "\n".join(lines + tgi)}


def transformers_snippet(merged_dir: str, system: str = "") -> str:
    """Python loading the merged model folder and answering one chat message with its chat template."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": "Hello!"}]
    return "\n".join([
        "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
        f"folder = {str(merged_dir)!r}",
        "tokenizer = AutoTokenizer.from_pretrained(folder)",
        "model = AutoModelForCausalLM.from_pretrained(folder)",
        f"messages = {messages!r}",
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\",",
        "                                       return_dict=True)",
        "output = model.generate(**inputs, max_new_tokens=128, do_sample=False)",
        "print(tokenizer.decode(output[0][inputs[\"input_ids\"].shape[1]:], skip_special_tokens=True))",
    ])


def serving_commands(run: Run, gguf_file: str | None = None, merged_dir: str | None = None,
                     adapter: str | None = None) -> dict[str, str]:
    """How to serve the run, by runtime: "llama-server" and "ollama" for `gguf_file` (a file name; its
    Modelfile is `<stem>.Modelfile` beside it), "vllm" and "tgi" for the adapter (`adapter`: a Hub repo id
    holding it; default: the unzipped download), "transformers" for `merged_dir` (a folder name or Hub repo
    id). Shell text is quoted; only file and folder names appear, never a server path."""
    commands = {}
    if gguf_file:
        gguf = Path(gguf_file).name
        name = ollama_name(run)
        commands["llama-server"] = (f"llama-server -m {_q('./' + gguf)} --jinja -c {context_size(run)} "
                                    f"--port {LLAMA_SERVER_PORT}\n# chat UI and OpenAI-compatible API on "
                                    f"http://localhost:{LLAMA_SERVER_PORT}")
        commands["ollama"] = (f"ollama create {_q(name)} -f {_q(Path(gguf).stem + '.Modelfile')}\n"
                              f"ollama run {_q(name)}")
    commands.update(adapter_commands(run, adapter))
    if merged_dir:
        system = str(run.run_yaml().get("system_prompt") or "").strip()
        commands["transformers"] = transformers_snippet(_where(merged_dir), system)
    return commands
