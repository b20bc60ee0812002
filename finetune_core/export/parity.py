"""Does the exported model answer like the one in the app? The parity check run after every export.

    python -m finetune_core export --run RUN_DIR --gguf model.gguf     # ends with the verdict
    python -c "from finetune_core.export.parity import check_export; ..."

The in-app model is the run's chain (base, parents' and its own adapters) merged in
float32 (the model matrix's "merge" column: the adapter's logits within 2e-7). It
answers up to `PARITY_TOKENS` new tokens greedily for each of the first
`PARITY_PROMPTS` held-out prompts, rendered with its tokenizer's chat template, as
the Chat and Evaluate tabs do. The exported model answers the same conversations:

* a merged folder with transformers (float32), loaded from the folder alone;
* a GGUF file with llama.cpp itself (llama-cpp-python, in a process of its own:
  llamacpp_worker.py), the prompt rendered with
  the chat template *stored in the file* and tokenised by the file's own tokenizer,
  stopping at what llama.cpp takes for end of generation. A wrong template, a wrong
  pre-tokenizer or a wrong end-of-turn token shows up as a difference.

Both answers keep their stop token, so a file that does not stop where the app stops
differs. The verdict counts identical answers and the token agreement rate (tokens
equal before the first difference, over the longer answer's length); BF16 and Q8_0
report their agreement without a pass/fail (their rounding flips near ties). Results are kept in
the run (`export/parity-<target>.json`, the latest per target) for the model card and report.
Without llama.cpp the check says how to get it; the export itself never depends on it.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

from finetune_core.runs.store import Run, write_json_atomic

PARITY_PROMPTS = 20
PARITY_TOKENS = 32
# longer held-out prompts are left out (the check is about the model, not the context): with the
# answer they stay within the llama.cpp worker's context of 2048
MAX_PROMPT_TOKENS = 1536
WORKER_TIMEOUT_S = 900  # 20 prompts of a 1B model in Q8_0 on 2 cores take a few minutes
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the worker runs as `python -m finetune_core.export...`
LLAMACPP_PIN = "llama-cpp-python==0.3.36"
LLAMACPP_HINT = (f"run `make llamacpp` in the studio's folder, or `CMAKE_ARGS=\"-DLLAVA_BUILD=OFF\" pip install "
                 f"{LLAMACPP_PIN}` (a source build: 10-15 minutes on 2 cores, once)")
# Rounded weights: agreement is reported, not judged. bf16 keeps 8 bits of mantissa and flips near ties:
# the bundled model's bf16 file answered 17 of 20 held-out prompts identically (f16: 20/20).
UNGATED = ("gguf-bf16", "gguf-q8_0")
RECORD_DIR = "export"  # export/parity-<target>.json: one file per target, so two exports never race


def llama_cpp_available() -> bool:
    """Whether llama-cpp-python imports here (without loading a model)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


# -- the result ------------------------------------------------------------------------------------
@dataclass
class ParityResult:
    """One export's parity check (see the module docstring); `file` is a name, never a server path."""

    target: str
    runtime: str
    checked: bool = False
    reason: str = ""
    prompts: int = 0
    identical: int = 0
    token_agreement: float = 0.0
    gated: bool = True
    first_difference: dict | None = None
    prompt_tokens_match: int | None = None
    seconds: float = 0.0
    file: str = ""
    tokens: int = PARITY_TOKENS
    notes: list[str] = field(default_factory=list)
    when: float = field(default_factory=time.time)

    def passed(self) -> bool | None:
        """True/False for a checked, gated target; None for Q8_0 or when nothing was checked."""
        if not (self.checked and self.gated):
            return None
        return self.identical == self.prompts

    def verdict(self) -> str:
        """One line for the Export tab, the CLI, the model card and the report."""
        kind = "" if self.gated else f" ({self.target.removeprefix('gguf-')})"
        if not self.checked:
            return f"parity{kind} not checked: {self.reason}"
        agreement = f"token agreement {self.token_agreement:.1%}"
        line = f"parity{kind}: {self.identical}/{self.prompts} identical in {self.runtime}, {agreement}"
        if self.prompt_tokens_match is not None and self.prompt_tokens_match < self.prompts:
            line += (f"; the file's chat template and tokenizer gave the app's prompt tokens for only "
                     f"{self.prompt_tokens_match} of {self.prompts} prompts")
        return line

    def to_dict(self) -> dict:
        """The result as plain JSON values (the run's record)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ParityResult":
        """A result from its record; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# -- answers ------------------------------------------------------------------------------------------
def _stop_ids(model, tokenizer) -> list[int]:
    """The ids generation stops at in the app: the generation config's eos ids, else the tokenizer's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return [int(i) for i in (eos if isinstance(eos, (list, tuple)) else [eos]) if i is not None]


def prompt_ids(tokenizer, conversation: list[dict]) -> list[int]:
    """The conversation's prompt tokens as the app makes them: chat template with the assistant's
    turn opened, tokenised without adding special tokens (the template writes them)."""
    from finetune_core.data.stats import ensure_chat_template

    ensure_chat_template(tokenizer)
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def reference_answers(model, tokenizer, conversations: list[list[dict]],
                      max_new_tokens: int = PARITY_TOKENS) -> list[list[int]]:
    """Greedy new token ids of `model` for each conversation, one at a time (no padding), the stop
    token kept."""
    import torch

    stops = _stop_ids(model, tokenizer)
    answers = []
    for conversation in conversations:
        ids = torch.tensor([prompt_ids(tokenizer, conversation)])
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, temperature=None, top_p=None, top_k=None,
                                 eos_token_id=stops or None, pad_token_id=tokenizer.pad_token_id or (stops or [0])[0])
        answers.append([int(t) for t in out[0, ids.shape[1]:]])
    return answers


def transformers_answers(folder, conversations: list[list[dict]], max_new_tokens: int = PARITY_TOKENS
                         ) -> list[list[int]]:
    """`reference_answers` of a merged folder loaded on its own (float32, its own tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return reference_answers(model, tokenizer, conversations, max_new_tokens)


class LlamaCppError(RuntimeError):
    """llama.cpp could not answer from the file (it refused it, or crashed); the message says which."""


def _worker(path, conversations, max_new_tokens: int, repack: bool) -> dict:
    """Run llamacpp_worker in its own process; its JSON answer, or {"crashed": signal or exit code}."""
    import subprocess
    import sys

    request = {"path": str(path), "conversations": conversations, "max_new_tokens": max_new_tokens,
               "repack": repack}
    done = subprocess.run([sys.executable, "-m", "finetune_core.export.llamacpp_worker"], input=json.dumps(request),
                          capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, cwd=str(PACKAGE_ROOT))
    if done.returncode != 0:
        return {"crashed": done.returncode, "stderr": done.stderr[-400:]}
    return json.loads(done.stdout)


def gguf_answers(path, conversations: list[list[dict]], max_new_tokens: int = PARITY_TOKENS,
                 notes: list[str] | None = None) -> tuple[list[list[int]], list[list[int]]]:
    """(greedy new token ids, prompt token ids) per conversation from llama.cpp in a process of its own
    (finetune_core/export/llamacpp_worker.py: everything from the file). When llama.cpp crashes with its
    repacked CPU kernels it is asked again without them, and a line saying so goes to `notes`."""
    result = _worker(path, conversations, max_new_tokens, repack=True)
    if "crashed" in result:
        first = result["crashed"]
        result = _worker(path, conversations, max_new_tokens, repack=False)
        if notes is not None and "crashed" not in result:
            notes.append(f"llama.cpp crashed (exit {first}) in its repacked CPU kernels on this machine and was "
                         "run with them off (llama-server --no-repack)")
    if "crashed" in result:
        raise LlamaCppError(f"llama.cpp crashed (exit {result['crashed']}) answering from this file")
    if "error" in result:
        raise LlamaCppError(f"llama.cpp refused the file: {result['error']}")
    return result["answers"], result["prompts"]


def compare(reference: list[list[int]], exported: list[list[int]]) -> tuple[int, float, int | None]:
    """(identical answers, token agreement rate, index of the first differing answer or None). The
    agreement counts tokens equal before an answer's first difference over the longer answer's length."""
    identical, agree, total, first = 0, 0, 0, None
    for i, (a, b) in enumerate(zip(reference, exported)):
        same = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        agree += same
        total += max(len(a), len(b))
        if a == b:
            identical += 1
        elif first is None:
            first = i
    return identical, (agree / total if total else 1.0), first


# -- a run's check ---------------------------------------------------------------------------------------
def heldout_conversations(run: Run, n: int = PARITY_PROMPTS) -> list[list[dict]]:
    """The first `n` distinct held-out prompts of the run as chat conversations (system turn included,
    the answer left out); [] for plain-text rows, which have no prompt to answer."""
    path = run.data_dir / "heldout.jsonl"
    found: list[list[dict]] = []
    seen: set[str] = set()
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        prompt = row.get("prompt", row.get("messages")) if isinstance(row, dict) else None
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if not isinstance(prompt, list) or not prompt:
            continue
        if "prompt" not in row and prompt[-1].get("role") == "assistant":
            prompt = prompt[:-1]  # a whole conversation: answer its last user turn
        key = json.dumps(prompt, sort_keys=True)
        if prompt and prompt[-1].get("role") == "user" and key not in seen:
            seen.add(key)
            found.append([{"role": m.get("role"), "content": m.get("content")} for m in prompt])
        if len(found) >= n:
            break
    return found


def _reference_key(run: Run, kept: list[list[dict]]) -> str:
    """What the app's answers depend on: the prompts, the token count, the run's model and parent, and
    the adapter's files (a resumed or retrained run gets new answers)."""
    import hashlib

    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in run.adapter_dir.glob("*") if p.is_file())
    cfg = run.run_yaml()
    blob = json.dumps([kept, PARITY_TOKENS, cfg.get("model"), cfg.get("parent_run"), files], sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _app_side(run: Run, conversations: list[list[dict]]):
    """(tokenizer, the conversations kept, their prompt ids, the app's answers): the in-app model is the
    chain merged in float32; prompts longer than MAX_PROMPT_TOKENS are left out. The answers are kept in
    the run (export/app-answers.json) for the next export of the same adapter: generating them is
    most of a check's time (40 of 55 s for the bundled model's GGUF, 20 prompts, 2 cores)."""
    from finetune_core.export.artifacts import run_tokenizer
    from finetune_core.inference.generation import release_memory
    from finetune_core.models.chain import load_chain_model
    from finetune_core.models.sources import DevicePolicy

    tokenizer = run_tokenizer(run)
    prompts = [(c, prompt_ids(tokenizer, c)) for c in conversations]
    kept = [c for c, ids in prompts if len(ids) <= MAX_PROMPT_TOKENS]
    kept_ids = [ids for _, ids in prompts if len(ids) <= MAX_PROMPT_TOKENS]
    key, cache = _reference_key(run, kept), run.path / RECORD_DIR / "app-answers.json"
    try:
        saved = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = {}
    if isinstance(saved, dict) and saved.get("key") == key and isinstance(saved.get("answers"), list):
        answers = saved["answers"]
    else:
        model = load_chain_model(run, DevicePolicy("cpu", "float32")).eval()
        try:
            answers = reference_answers(model, tokenizer, kept)
        finally:
            del model
            release_memory()
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache, {"key": key, "answers": answers})
    return tokenizer, kept, kept_ids, answers


def _not_checked(target: str, runtime: str, reason: str, path) -> ParityResult:
    return ParityResult(target, runtime, reason=reason, gated=target not in UNGATED, file=Path(path).name)


def check_export(run: Run, path, target: str, n: int = PARITY_PROMPTS,
                 progress: Callable[[float, str], None] | None = None) -> ParityResult:
    """Check the export at `path` (a merged folder for target "merged", else a .gguf file for
    "gguf-<type>") against the in-app model on `n` held-out prompts, record and return the result.
    A missing runtime or no prompts gives an unchecked result that says why; `n` = 0 skips."""
    runtime = "transformers" if target == "merged" else "llama.cpp"
    say = progress or (lambda *_: None)
    conversations = heldout_conversations(run, n) if n > 0 else []
    if n <= 0:
        result = _not_checked(target, runtime, "skipped (0 prompts asked for)", path)
    elif runtime == "llama.cpp" and not llama_cpp_available():
        result = _not_checked(target, runtime, f"llama.cpp is not installed here: {LLAMACPP_HINT}", path)
    elif not conversations:
        result = _not_checked(target, runtime, "the run has no held-out chat prompts to answer", path)
    else:
        started = time.perf_counter()
        say(0.1, f"Parity check: the app's answers to {len(conversations)} held-out prompts...")
        tokenizer, kept, app_prompts, reference = _app_side(run, conversations)
        say(0.5, f"Parity check: the exported model's answers ({runtime})...")
        matched, notes = None, []
        try:
            if runtime == "transformers":
                exported = transformers_answers(path, kept)
            else:
                exported, file_prompts = gguf_answers(path, kept, notes=notes)
                matched = sum(a == b for a, b in zip(app_prompts, file_prompts))
        except LlamaCppError as exc:
            result = _not_checked(target, runtime, str(exc), path)
        else:
            identical, agreement, first = compare(reference, exported)
            result = ParityResult(target, runtime, checked=True, prompts=len(kept), identical=identical,
                                  token_agreement=round(agreement, 4), gated=target not in UNGATED,
                                  prompt_tokens_match=matched, seconds=round(time.perf_counter() - started, 1),
                                  file=Path(path).name, notes=notes,
                                  first_difference=_difference(tokenizer, kept, reference, exported, first))
    save_parity(run, result)
    return result


def _difference(tokenizer, conversations, reference, exported, first: int | None) -> dict | None:
    if first is None:
        return None

    def text(ids):  # special tokens shown: a missing or extra end-of-turn token is the finding
        return tokenizer.decode(ids, skip_special_tokens=False)

    return {"row": first, "prompt": str(conversations[first][-1]["content"]),
            "app": text(reference[first]), "exported": text(exported[first])}


def save_parity(run: Run, result: ParityResult) -> Path:
    """Write `result` as the run's latest check of its target (one small JSON file per target)."""
    path = run.path / RECORD_DIR / f"parity-{result.target}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, result.to_dict())
    return path


def load_parity(run: Run) -> dict[str, ParityResult]:
    """The run's latest parity result per target ({} when no export was checked)."""
    found = {}
    for path in sorted((run.path / RECORD_DIR).glob("parity-*.json")):
        try:
            result = ParityResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            continue  # a damaged record is left out, never fatal to a card or report
        found[result.target] = result
    return found


def _cell(text: str) -> str:
    return (text.replace("|", "\\|").replace("\n", "⏎ ").replace("<", "&lt;") or "(nothing)")[:400]


def parity_markdown(result: ParityResult) -> str:
    """The verdict, and the first differing prompt with both answers side by side."""
    # words, not emoji: a browser without an emoji font draws those as empty boxes
    mark = {True: "Passed. ", False: "Differs from the app. ", None: ""}[result.passed()]
    lines = [f"**{mark}{result.verdict()}**"]
    if result.checked:
        lines.append(f"Greedy, the first {result.tokens} new tokens of {result.prompts} held-out prompts, "
                     f"against the app's model in float32 ({result.seconds:.0f} s).")
    lines += [f"Note: {note}." for note in result.notes]
    diff = result.first_difference
    if diff:
        lines += [f"First difference (held-out prompt {diff['row'] + 1}):",
                  "| prompt | in the app | exported |\n|---|---|---|\n"
                  f"| {_cell(diff['prompt'])} | {_cell(diff['app'])} | {_cell(diff['exported'])} |"]
    return "\n\n".join(lines)  # one paragraph each
