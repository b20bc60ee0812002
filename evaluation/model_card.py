"""The model card that travels with an export: README.md (and the loss curve it shows).

The card says what the model is (base model, adapter or merged), what it was
trained on and how, the base-vs-tuned metrics when the run was evaluated, how to
load and serve it (finetune_core/export/serving.py) and the parity verdict of each
export that was checked (finetune_core/export/parity.py). Its metadata is built with
huggingface_hub's `ModelCardData` (base_model, library_name, pipeline_tag, tags,
datasets, metrics and eval results, license when known), so the Hub reads it as it
reads any card, and `ModelCard.load` parses it back.

It is built from the run folder alone (no secret is ever passed in) with the report's
facts and Markdown escaping (report.py), which is why it lives here and not in the
core: the core's export functions take the files as a parameter (`card_files`) and
write them as they are.

    from evaluation.model_card import card_files
    adapter_zip(run, "adapter.zip", card_files=card_files(run, "adapter", curve=False))
    push_to_hub(run, repo_id, token, what="merged", card_files=card_files(run, "merged", repo_id=repo_id))
"""
from __future__ import annotations

from pathlib import Path

from evaluation.report import md, md_eval
from evaluation.report_facts import CURVE_FILE, Facts, gather
from finetune_core.export.serving import base_model_id, serving_commands
from finetune_core.runs.store import Run

# Licences the studio knows for sure; any other base model's licence is left for its own card to state.
KNOWN_LICENSES = {"HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0"}
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt", ".arrow")
SERVING_TITLES = {"vllm": "vLLM (multi-LoRA)", "tgi": "Text Generation Inference (TGI)",
                  "transformers": "transformers", "llama-server": "llama.cpp server", "ollama": "Ollama"}


def dataset_id(data_path: str) -> str | None:
    """The Hub dataset id the run trained on, when its data is named as one (a local file is not).

    >>> dataset_id("HuggingFaceH4/no_robots"), dataset_id("toy.jsonl"), dataset_id("data/train.jsonl")
    ('HuggingFaceH4/no_robots', None, None)
    """
    from finetune_core.models.sources import HUB_ID_RE

    text = (data_path or "").strip()
    if not HUB_ID_RE.match(text) or text.lower().endswith(DATA_SUFFIXES) or Path(text).exists():
        return None
    return text


def card_data(run: Run, what: str, facts: Facts):
    """The card's metadata (huggingface_hub.ModelCardData): what the Hub indexes and filters on."""
    from huggingface_hub import EvalResult, ModelCardData

    cfg = run.run_yaml()
    base = base_model_id(str(cfg.get("model") or ""))
    hub = str(cfg.get("hub_source") or "").split("?")[0]  # read from the Hub (finetune_core/data/hub.py)
    dataset = dataset_id(hub) or dataset_id(str(cfg.get("data_path") or ""))
    tags = ["finetune-studio", str(cfg.get("objective") or "sft")]
    tags += ["lora"] if cfg.get("method") in ("lora", "qlora") else []
    tags += ["text-generation-inference"] if what == "merged" else []
    scored = [m for m in facts.metrics if isinstance(m.get("tuned"), (int, float))]
    data_name = f"held-out rows of {Path(str(cfg.get('data_path') or '')).name or 'the training data'}"
    results = [EvalResult(task_type="text-generation", dataset_type=dataset or "custom", dataset_name=data_name,
                          dataset_split="held-out", metric_type=str(m["metric"]), metric_value=float(m["tuned"]),
                          metric_name=f"{m['metric']} (tuned)") for m in scored]
    return ModelCardData(base_model=base, library_name="peft" if what == "adapter" else "transformers",
                         pipeline_tag="text-generation", tags=tags, datasets=[dataset] if dataset else None,
                         license=KNOWN_LICENSES.get(base or ""), metrics=[r.metric_type for r in results] or None,
                         model_name=run.id, eval_results=results or None)


def usage(what: str, base: str | None) -> str:
    """How to load the export, as a Python snippet in Markdown."""
    if what == "adapter":
        return ("```python\nfrom peft import AutoPeftModelForCausalLM\n"
                "model = AutoPeftModelForCausalLM.from_pretrained(\"THIS_REPO_OR_FOLDER\")\n```"
                + ("" if base else "\n\nThe base model was a local folder: load it first, then the adapter."))
    return ("```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
            "model = AutoModelForCausalLM.from_pretrained(\"THIS_REPO_OR_FOLDER\")\n"
            "tokenizer = AutoTokenizer.from_pretrained(\"THIS_REPO_OR_FOLDER\")\n```")


def how_to_run(run: Run, what: str, repo_id: str | None = None) -> str:
    """The "How to run it" section: the serving commands for this export (a Hub repo id when pushed there,
    else the downloaded file names), each in a code block."""
    if what == "adapter":
        commands = serving_commands(run, adapter=repo_id)
        wanted = ("vllm", "tgi")
    else:
        commands = serving_commands(run, merged_dir=repo_id or f"{run.id}-merged")
        wanted = ("transformers",)
    parts = ["## How to run it\n"]
    for key in wanted:
        language = "python" if key == "transformers" else "bash"
        parts += [f"**{SERVING_TITLES[key]}**\n", f"```{language}\n{commands[key]}\n```\n"]
    return "\n".join(parts)


def parity_lines(run: Run) -> list[str]:
    """One line per checked export ("gguf-f16: parity: 20/20 identical in llama.cpp, ..."), latest first
    per target; [] when no export was checked."""
    from finetune_core.export.parity import load_parity

    return [f"{target}: {result.verdict()}" for target, result in sorted(load_parity(run).items())]


def card_body(run: Run, what: str, facts: Facts, curve_file: str | None, repo_id: str | None = None) -> str:
    """The card's Markdown under its metadata: everything a reader sees."""
    base = base_model_id(str(run.run_yaml().get("model") or ""))
    kind = "LoRA adapter" if what == "adapter" else "merged model"
    objective = str(run.run_yaml().get("objective") or "sft")
    how = "supervised fine-tuning" if objective == "sft" else f"{objective.upper()} preference tuning"
    parts = [
        f"# {md(facts.model)} fine-tuned ({kind})\n",
        f"Fine-tuned with the fine-tuning studio (run `{run.id}`), {how} with TRL.\n",
        "## Base model\n", f"{md(base or facts.model)}\n", "## Training data\n",
        "\n".join(f"- **{md(k)}**: {md(v)}" for k, v in facts.data) + "\n", "## Training configuration\n",
        "\n".join(f"- `{k}`: {md(v)}" for k, v in facts.config) + "\n", "## Training\n",
        "\n".join(f"- **{md(k)}**: {md(v)}" for k, v in facts.training) + "\n",
    ]
    if curve_file and run.metrics():
        parts.append(f"![Training loss]({curve_file})\n")
    parts += [md_eval(facts), "## Usage\n", usage(what, base) + "\n", how_to_run(run, what, repo_id)]
    checked = parity_lines(run)
    if checked:
        parts += ["## Exported models: parity with the tuned model\n",
                  "Each export answered held-out prompts greedily and was compared with the model in the app:\n",
                  "\n".join(f"- {md(line)}" for line in checked) + "\n"]
    return "\n".join(parts)


def model_card(run: Run, what: str = "adapter", curve_file: str | None = CURVE_FILE,
               repo_id: str | None = None) -> str:
    """README.md for the Hub (or a download): metadata (ModelCardData), then base model, data, config,
    curve, before/after metrics, usage, serving commands and parity verdicts.

    It is built only from the run folder; no secret is ever passed in. `curve_file` names the
    loss-curve image the card shows (None: no image); `repo_id` the Hub repo it is pushed to.
    """
    from huggingface_hub import ModelCard

    facts = gather(run, with_curve=False)
    data = card_data(run, what, facts)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{card_body(run, what, facts, curve_file, repo_id)}")
    return str(card)


def card_files(run: Run, what: str = "adapter", curve: bool = True, repo_id: str | None = None) -> dict[str, bytes]:
    """The files a model card adds to an export, by name: README.md and, with `curve`
    and a logged loss, loss_curve.png (which the README then shows).

    The adapter zip takes the card without the curve (`curve=False`); a Hub upload
    takes both (and its `repo_id`, which the serving commands then name). The core's
    export functions write these bytes unchanged.
    """
    png = gather(run).curve_png if curve else None
    files = {CURVE_FILE: png} if png else {}
    files["README.md"] = model_card(run, what, CURVE_FILE if png else None, repo_id).encode("utf-8")
    return files
