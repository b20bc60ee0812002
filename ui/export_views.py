"""The Export tab's checked exports and what it shows beside them (no widgets here).

* `merged_zip_checked` merges the run, checks the merged folder against the app's model
  (transformers) and zips it; `gguf_checked` writes the GGUF file and its Ollama
  Modelfile, then checks the file with llama.cpp. Both return the files to download and
  the parity result (finetune_core/export/parity.py), which is also kept in the run.
* `serving_markdown` is the "How to run it" panel: the commands for the picked run,
  naming the files as the downloads are named.
* `parity_panel` is the Markdown under the downloads: the result of the export just
  made, or the run's recorded verdicts.

A parity check that fails for an unexpected reason never costs the user the file:
the export is kept and the verdict says the check could not run (the log has why).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from finetune_core.export import artifacts as export
from finetune_core.export.parity import PARITY_PROMPTS, ParityResult, check_export, load_parity, parity_markdown
from finetune_core.export.serving import serving_commands, write_modelfile
from finetune_core.runs.store import Run

Progress = Callable[[float, str], None]
log = logging.getLogger(__name__)
SERVING_SECTIONS = (  # (key, heading, code language)
    ("ollama", "Ollama (the GGUF download and its Modelfile, in one folder)", "bash"),
    ("llama-server", "llama.cpp server (the GGUF download)", "bash"),
    ("vllm", "vLLM (the adapter download, on its base model)", "bash"),
    ("tgi", "Text Generation Inference (the adapter download)", "bash"),
    ("transformers", "transformers (the merged-model download, unzipped)", "python"),
)


def checked(run: Run, path: Path, target: str, n: int = PARITY_PROMPTS,
            progress: Progress | None = None) -> ParityResult:
    """`check_export`, except that an unexpected failure becomes an unchecked result (logged) instead of
    an error: the file was written and stays the user's."""
    try:
        return check_export(run, path, target, n=n, progress=progress)
    except Exception:  # noqa: BLE001 - the export is good; only its check failed
        log.exception("parity check of %s (%s) failed", path.name, target)
        runtime = "transformers" if target == "merged" else "llama.cpp"
        return ParityResult(target, runtime, reason="the check failed on this server (see its log); "
                                                    "the export itself is complete", file=path.name)


def merged_zip_checked(run: Run, out_dir: Path, n: int = PARITY_PROMPTS,
                       progress: Progress | None = None) -> tuple[Path, ParityResult]:
    """`<run id>-merged.zip` in `out_dir`, merged in a private temporary folder that is checked for parity
    before it is zipped (and removed afterwards, on failure too); returns (the zip, the parity result)."""
    say = progress or (lambda *_: None)

    def check(merged: Path) -> ParityResult:
        result = checked(run, merged, "merged", n, lambda f, text: say(0.3 + 0.6 * f, text))
        say(0.95, "Zipping the merged model...")
        return result

    return export.merged_zip(run, out_dir, check)


def gguf_checked(run: Run, target: Path, qtype: str, n: int = PARITY_PROMPTS,
                 progress: Progress | None = None) -> tuple[list[Path], ParityResult]:
    """The GGUF file at `target` and its Ollama Modelfile beside it, then the file's parity check in
    llama.cpp; returns ([the GGUF file, the Modelfile], the parity result)."""
    say = progress or (lambda *_: None)
    gguf = export.export_gguf(run, target, qtype)
    modelfile = write_modelfile(run, gguf)
    result = checked(run, gguf, f"gguf-{qtype}", n, lambda f, text: say(0.4 + 0.55 * f, text))
    return [gguf, modelfile], result


def serving_markdown(run: Run, qtype: str = "f16") -> str:
    """How to run the run's downloads elsewhere, one code block per runtime (file names as downloaded)."""
    commands = serving_commands(run, gguf_file=f"{run.id}-{qtype}.gguf", merged_dir=f"{run.id}-merged")
    parts = []
    for key, heading, language in SERVING_SECTIONS:
        if key in commands:
            parts += [f"**{heading}**", f"```{language}\n{commands[key]}\n```"]
    return "\n\n".join(parts)


def parity_panel(run: Run | None, result: ParityResult | None = None) -> str:
    """Markdown under the downloads: `result` in full (verdict, first difference), else the run's recorded
    verdicts, one line each ("" when none)."""
    if result is not None:
        return parity_markdown(result)
    recorded = load_parity(run) if run is not None else {}
    if not recorded:
        return ""
    lines = [f"- {target}: {r.verdict()}" for target, r in sorted(recorded.items())]
    return "**Parity of this run's exports** (latest check of each):\n\n" + "\n".join(lines)
