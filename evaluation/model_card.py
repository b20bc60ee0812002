"""The model card that travels with an export: README.md (and the loss curve it shows).

The card says what the model is (base model, adapter or merged), what it was
trained on and how, the base-vs-tuned metrics when the run was evaluated, and
how to load it. It is built from the run folder alone (no secret is ever
passed in) with the report's facts and Markdown escaping (report.py), which is
why it lives here and not in the core: the core's export functions take the
files as a parameter (`card_files`) and write them as they are.

    from evaluation.model_card import card_files
    adapter_zip(run, "adapter.zip", card_files=card_files(run, "adapter", curve=False))
    push_to_hub(run, repo_id, token, what="merged", card_files=card_files(run, "merged"))
"""
from __future__ import annotations

from evaluation.report import md, md_eval
from evaluation.report_facts import CURVE_FILE, gather
from finetune_core.runs.store import Run


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


def card_header(run: Run, what: str) -> str:
    """The YAML front matter the Hub reads: library, pipeline, tags, base model."""
    base = base_model_id(str(run.run_yaml().get("model") or ""))
    lines = ["---", f"library_name: {'peft' if what == 'adapter' else 'transformers'}",
             "pipeline_tag: text-generation", "tags:", "- finetune-studio", "- sft"]
    if run.run_yaml().get("method") in ("lora", "qlora"):
        lines.append("- lora")
    if base:
        lines.append(f"base_model: {base}")
    return "\n".join(lines + ["---", ""])


def usage(what: str, base: str | None) -> str:
    """How to load the export, as a Python snippet in Markdown."""
    if what == "adapter":
        return ("```python\nfrom peft import AutoPeftModelForCausalLM\n"
                "model = AutoPeftModelForCausalLM.from_pretrained(\"THIS_REPO_OR_FOLDER\")\n```"
                + ("" if base else "\n\nThe base model was a local folder: load it first, then the adapter."))
    return ("```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
            "model = AutoModelForCausalLM.from_pretrained(\"THIS_REPO_OR_FOLDER\")\n"
            "tokenizer = AutoTokenizer.from_pretrained(\"THIS_REPO_OR_FOLDER\")\n```")


def model_card(run: Run, what: str = "adapter", curve_file: str | None = CURVE_FILE) -> str:
    """README.md for the Hub (or a download): base model, data, config, curve, before/after metrics.

    It is built only from the run folder; no secret is ever passed in. `curve_file`
    names the loss-curve image the card shows (None: no image).
    """
    facts = gather(run, with_curve=False)
    base = base_model_id(str(run.run_yaml().get("model") or ""))
    kind = "LoRA adapter" if what == "adapter" else "merged model"
    parts = [
        card_header(run, what), f"# {md(facts.model)} fine-tuned ({kind})\n",
        f"Fine-tuned with the fine-tuning studio (run `{run.id}`), supervised fine-tuning with TRL.\n",
        "## Base model\n", f"{md(base or facts.model)}\n", "## Training data\n",
        "\n".join(f"- **{md(k)}**: {md(v)}" for k, v in facts.data) + "\n", "## Training configuration\n",
        "\n".join(f"- `{k}`: {md(v)}" for k, v in facts.config) + "\n", "## Training\n",
        "\n".join(f"- **{md(k)}**: {md(v)}" for k, v in facts.training) + "\n",
    ]
    if curve_file and run.metrics():
        parts.append(f"![Training loss]({curve_file})\n")
    parts += [md_eval(facts), "## Usage\n", usage(what, base), ""]
    return "\n".join(parts)


def card_files(run: Run, what: str = "adapter", curve: bool = True) -> dict[str, bytes]:
    """The files a model card adds to an export, by name: README.md and, with `curve`
    and a logged loss, loss_curve.png (which the README then shows).

    The adapter zip takes the card without the curve (`curve=False`); a Hub upload
    takes both. The core's export functions write these bytes unchanged.
    """
    png = gather(run).curve_png if curve else None
    files = {CURVE_FILE: png} if png else {}
    files["README.md"] = model_card(run, what, CURVE_FILE if png else None).encode("utf-8")
    return files
