"""The Evaluate tab's pairwise judge: which answer does a judge prefer, base's or tuned's?

On the run's held-out rows or an uploaded prompt file (.jsonl in the MT-Bench /
Vicuna layout; the server copies it under a name it makes), base and tuned
answer each prompt and a judge compares the two answers in both orders
(`evaluation.judge.judge_run`, imported when a judging starts). The judge is a
local model (the bundled one, or the run's base model) or, when the server sets
STUDIO_JUDGE_URL, an OpenAI-compatible endpoint: the page shows its host, never
its key. A visitor may type their own key: it goes into that one call's
JudgeSpec and nowhere else (not in a gr.State, not in a log, not back to the
page); in a public app (STUDIO_PUBLIC=1) the owner's key is spent only for
admins (`judge_spec_from_env`).

The result: wins, ties and losses of tuned with the sentence saying whether the
preference is distinguishable from none, a table per category, agreement with
the blind votes, and one card per prompt (prompt, both answers, both verdicts,
outcome). A run judged before shows its saved checks/judge.json when picked.
It runs, and shows its progress, like the general-skill check (ui/eval_checks.py).
"""
from __future__ import annotations

import os
import threading
from typing import Callable
from urllib.parse import urlsplit

import gradio as gr

from evaluation.report_checks import agreement_line, category_rows, judge_about, judge_examples, judge_line, saved_check
from finetune_core.runs.ownership import Visitor
from finetune_core.runs.store import Run

from .access import visitor
from .context import AppContext
from .data_uploads import save_upload
from .errors import shows_errors
from .eval_cards import CARD_LIMIT, safe_text, side_html
from .eval_checks import (CHECK_CANCELLED, CheckView, build_check_controls, build_check_results, checkable_run,
                          run_check, whole, wire_check)
from .widgets import open_run, run_name_md

KIND = "judge"
PROMPT_SETS = [("Held-out rows of the run", "heldout"), ("A prompt file (.jsonl, MT-Bench / Vicuna layout)", "file")]
LIMIT_DEFAULT, LIMIT_MAX = 20, 500  # prompts judged
KEY_MAX = 512  # characters of a typed API key
OUTCOMES = {"tuned": ("win", "tuned better"), "base": ("loss", "base better"), "tie": ("tie", "tie")}
CATEGORY_HEADER = ["category", "prompts", "wins", "ties", "losses", "win rate"]


# -- the judge and the prompts -------------------------------------------------------------------------
def endpoint_host() -> str:
    """The host (and port) of the server's judge endpoint, STUDIO_JUDGE_URL; "" when none is set. Never its
    path, query or user info, which may carry a secret."""
    url = os.environ.get("STUDIO_JUDGE_URL", "").strip()
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        return f"{host}:{parts.port}" if host and parts.port else host
    except ValueError:  # a port that is not a number
        return ""


def judge_choices() -> list[tuple[str, str]]:
    """(label, value) of the judges this server offers: two local ones, and its endpoint when set."""
    choices = [("Local: the bundled model (SmolLM2-135M-Instruct, a weak judge)", "bundled"),
               ("Local: this run's base model", "base")]
    host = endpoint_host()
    return choices + ([(f"OpenAI-compatible endpoint at {host}", "endpoint")] if host else [])


def judge_spec(ctx: AppContext, choice: str, run: Run, who: Visitor, typed_key: str | None):
    """The JudgeSpec for the chosen judge. A typed key goes into this spec only; whether the server's
    own key may be spent is judge_spec_from_env's to say (in a public app: for admins only)."""
    from evaluation.judge import JudgeSpec, judge_spec_from_env  # the judge's backend, loaded when judging

    if choice == "bundled":
        return JudgeSpec(kind="local", model="bundled")
    if choice == "base":
        return JudgeSpec(kind="local", model=str(run.run_yaml().get("model") or "bundled"))
    if choice != "endpoint":
        raise gr.Error("Judge: choose one of the judges listed.")
    if not endpoint_host():
        raise gr.Error("Judge: this server has no judge endpoint (STUDIO_JUDGE_URL): choose a local judge.")
    spec = judge_spec_from_env(ctx.settings.public, who.admin, typed_key)
    if spec is None:
        raise gr.Error("Judge: the endpoint needs an API key. Type your own in “Your API key” (used for this "
                       "judging only, never saved) or choose a local judge"
                       + (": in this public app the server's key is for admins only." if ctx.settings.public
                          else "."))
    return spec


def typed(key) -> str | None:
    """A typed API key, stripped; None when empty. Refused (without echoing it) when it cannot be a key."""
    if not isinstance(key, str) or not key.strip():
        return None
    if len(key) > KEY_MAX or any(c.isspace() for c in key.strip()):
        raise gr.Error(f"Your API key: that does not look like a key (one word, at most {KEY_MAX} characters).")
    return key.strip()


def prompt_set(ctx: AppContext, source: str, upload) -> str:
    """What judge_run takes as its prompt set: "heldout", or the server's copy of the uploaded file
    (a name the server makes; only the extension of the visitor's file name is kept)."""
    if source == "heldout":
        return "heldout"
    if source != "file":
        raise gr.Error("Prompts: choose the held-out rows or a prompt file.")
    if not upload:
        raise gr.Error("Prompts: upload a .jsonl prompt file first (MT-Bench / Vicuna layout: question_id, "
                       "category, turns).")
    if not str(upload).lower().endswith(".jsonl"):
        raise gr.Error("Prompts: the prompt file must be a .jsonl file (MT-Bench / Vicuna layout).")
    return str(save_upload(upload, ctx.settings.max_upload_mb))


# -- what the section shows ----------------------------------------------------------------------------
def category_table(data: dict) -> str:
    """The per-category results as an HTML table ("" when there are none)."""
    rows = category_rows(data)
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in CATEGORY_HEADER)
    body = "".join("<tr>" + "".join(f'<td class="{"ev-metric" if i == 0 else "ev-num"}">{safe_text(c)}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return (f'<div class="ev-summary-wrap" id="judge-categories"><table class="ev-summary"><caption>Per category'
            f'</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')


def judge_card(number: int, line: dict) -> str:
    """One judged prompt: outcome and both verdicts, the prompt, then (reference,) base and tuned answers."""
    kind, words = OUTCOMES.get(str(line.get("outcome")), ("tie", str(line.get("outcome", "?"))))
    category = f" · {safe_text(line['category'])}" if line.get("category") else ""
    head = (f'<div class="ev-head"><b>Prompt {number}</b>{category} · <span class="ev-verdict">{safe_text(words)}'
            f'</span> · verdict with base shown first: {safe_text(line.get("verdict_base_first", "?"))}, with '
            f'tuned shown first: {safe_text(line.get("verdict_tuned_first", "?"))}</div>')
    sides = (side_html("ref", "Reference", line["reference"]) if str(line.get("reference") or "").strip() else "")
    sides += side_html("base", "Base answer (adapter off)", line.get("base", ""))
    sides += side_html("tuned", "Tuned answer (adapter on)", line.get("tuned", ""))
    return (f'<article class="ev-card ev-{kind}">{head}<div class="ev-input"><span class="ev-k">Prompt</span> '
            f'<span class="ev-text">{safe_text(line.get("prompt", ""))}</span></div>'
            f'<div class="ev-sides">{sides}</div></article>')


def judge_html(data: dict | None, examples: list[dict]) -> str:
    """A saved judging as HTML: the win/tie/loss line with its sentence, who judged what, per category,
    agreement with the blind votes, then the first CARD_LIMIT prompts as cards; "" for None."""
    if not data:
        return ""
    cards = "".join(judge_card(i + 1, line) for i, line in enumerate(examples[:CARD_LIMIT]))
    note = (f"The first {CARD_LIMIT} of {len(examples)} judged prompts." if len(examples) > CARD_LIMIT
            else f"All {len(examples)} judged prompts.") if examples else ""
    return (f'<div class="ev-checks" id="judge-results"><p class="ev-headline" id="judge-line">'
            f'{safe_text(judge_line(data))}</p><p class="ev-note">{safe_text(judge_about(data))}</p>'
            f'{category_table(data)}<p class="ev-note">{safe_text(agreement_line(data))}</p>'
            f'<div class="ev-cards" id="judge-cards"><p class="ev-note">{note}</p>{cards}</div></div>')


def judge_status(run: Run, data: dict | None) -> str:
    """Markdown: when the saved judging ran, or what to do when the run has none."""
    if not data:
        return (f"Run **{run_name_md(run.label())}** not judged yet: choose the prompts and the judge, then "
                "press **Judge**.")
    facts = [f"Judge results for run **{run_name_md(run.label())}**"]
    if isinstance(data.get("seconds"), (int, float)):
        facts.append(f"took {data['seconds']:.0f} s")
    if data.get("timestamp"):
        facts.append(f"judged {run_name_md(data['timestamp'])}")
    return " · ".join(facts)


def show_judge(run_id: str | None, who: Visitor | None = None) -> CheckView:
    """The run's saved judging (read from disk, nothing re-run), or what to do."""
    if not run_id:
        return CheckView("", "")
    run = open_run(run_id, visitor=who)
    data = saved_check(run, KIND)
    return CheckView(judge_status(run, data), judge_html(data, judge_examples(run) if data else []))


def judge_check(ctx: AppContext, run_id: str | None, source: str = "heldout", upload=None, limit=LIMIT_DEFAULT,
                judge: str = "bundled", key: str | None = None, use_reference: bool = True,
                cancel: threading.Event | None = None, request: gr.Request | None = None,
                progress: Callable | None = None) -> CheckView:
    """Judge base against tuned on `limit` prompts of the chosen set, save checks/judge.json in the run
    (replacing the previous judging) and show it. `key`, a visitor's own API key for the endpoint, is
    used for this call only. A cancelled judging saves nothing and shows the previous one."""
    run = checkable_run(ctx, run_id, request, "judge")
    who = visitor(request)
    count = whole(limit, "Number of prompts", 1, LIMIT_MAX)
    typed_key = typed(key)
    spec = judge_spec(ctx, judge, run, who, typed_key)
    prompts = prompt_set(ctx, source, upload)
    from evaluation.judge import judge_run  # the judge's backend, loaded when judging

    cancel = cancel if isinstance(cancel, threading.Event) else threading.Event()
    data = run_check(ctx, KIND, run, lambda say, load_model: judge_run(
        run, prompt_set=prompts, judge=spec, limit=count, use_reference=bool(use_reference), progress=say,
        cancel=cancel, load_model=load_model), progress, redact=(typed_key or "",))
    if data is None:
        view = show_judge(run.id, who)
        return view._replace(status=f"{view.status}\n\n{CHECK_CANCELLED}")
    return CheckView(judge_status(run, data), judge_html(data, judge_examples(run)))


def build_judge(ctx: AppContext, run_dd, timer) -> list:
    """The "Judge (pairwise)" section inside the Evaluate tab; returns its CheckView outputs."""
    gr.Markdown("### Judge (pairwise)\nA judge model reads each prompt with base's and tuned's answers, in both "
                "orders (a verdict that changes with the order counts as a tie), and says which is better.",
                elem_id="judge-intro")
    with gr.Row():
        source = gr.Radio(PROMPT_SETS, value="heldout", label="Prompts", elem_id="judge-source")
        upload = gr.File(label="Prompt file (.jsonl)", file_types=[".jsonl"], type="filepath", elem_id="judge-file",
                         visible=False)
        limit = gr.Number(value=LIMIT_DEFAULT, minimum=1, maximum=LIMIT_MAX, precision=0, label="Number of prompts",
                          elem_id="judge-limit")
    # columns with a min width: on a phone the reference box wraps under the judge picker instead of
    # being squeezed beside it (form fields in one row do not wrap)
    with gr.Row():
        with gr.Column(min_width=300):
            choice = gr.Dropdown(judge_choices(), value="bundled", label="Judge", elem_id="judge-choice")
            # type="password": the key is never shown; it travels with the click and is not kept anywhere
            key = gr.Textbox(label="Your API key (for the endpoint; optional)", type="password", value="",
                             info="used for this judging only: not saved, not logged, not shown again",
                             elem_id="judge-key", visible=bool(endpoint_host()))
        with gr.Column(min_width=240):
            use_reference = gr.Checkbox(value=True, label="Show the judge the reference answer",
                                        info="when the prompt has one (held-out rows always do)", elem_id="judge-ref")
    controls = build_check_controls(KIND, "Judge")
    view = build_check_results(KIND)

    @shows_errors
    def on_run(run_id, prompts, file, count, judge, api_key, reference, cancel, request: gr.Request):
        return judge_check(ctx, run_id, prompts, file, count, judge, api_key, reference, cancel, request)

    wire_check(ctx, KIND, run_dd, timer, controls, [source, upload, limit, choice, key, use_reference], view,
               on_run, show_judge)
    # the upload box only when a prompt file is the choice
    source.change(lambda picked: gr.update(visible=picked == "file"), source, upload, queue=False,
                  api_visibility="private", show_progress="hidden")
    return view


__all__ = ["KIND", "PROMPT_SETS", "endpoint_host", "judge_choices", "judge_spec", "typed", "prompt_set",
           "category_table", "judge_card", "judge_html", "judge_status", "show_judge", "judge_check", "build_judge"]
