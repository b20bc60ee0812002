"""Blind A/B in the Chat tab: the mode switch, the vote buttons, the tally and the export.

A vote is saved to the run's votes.jsonl as it is cast (chat.record_vote ->
votes.append_vote), so the tally, the report and the export read one file. A
vote between two runs is kept by the newer one, with both model ids; the
tally counts the votes between the pair on show and names its sides.
"""
from __future__ import annotations

import gradio as gr

from evaluation.report_checks import vote_interval
from finetune_core.errors import StudioError
from finetune_core.inference import chat
from finetune_core.inference.sides import BASE, pair_labels, vote_target
from finetune_core.inference.votes import load_votes, pair_votes
from finetune_core.retention import fresh_folder, gradio_cache_dir

from .access import visitor
from .chat_models import RUN_PREFIX, chat_pair, key_run, run_choices, side_a_choices
from .chat_panes import chatbots, session_of
from .chat_prompts import template_for, template_note
from .chat_send import status_line
from .context import AppContext
from .errors import shows_errors
from .widgets import run_name_md

# Plain words: emoji render as empty boxes where no emoji font is installed (many servers, Spaces).
VOTE_LABELS = {"left": "A is better", "tie": "Tie", "right": "B is better", "both_bad": "Both bad"}
INTRO = ("Send one message to the base model (left) and the tuned model (right); both answer "
         "token by token. Blind A/B mode hides which is which so you can vote fairly.")
BLIND_INTRO = ("**Blind A/B mode.** Two models answer each message as Model A and Model B, on sides drawn at "
               "random each turn. Vote for the better answer; after your vote you see which model wrote which.")


def tally_markdown(votes: list[dict], blind: bool = False, labels: tuple[str, str] = ("base", "tuned")) -> str:
    """The tally line under the panes: side B's (tuned) win rate and the counts per winner, the sides
    named by `labels` (side A, side B); in blind mode only how many votes there are (the counts name
    the models)."""
    t = chat.tally(votes)
    if not t["votes"]:
        return "No votes yet. Turn on blind A/B mode, chat, and vote after each answer."
    if blind:
        return f"{t['votes']} blind vote(s) saved with this run. The win rate is shown after your vote."
    a, b = (run_name_md(x) for x in labels)
    lead = "Tuned" if b == "tuned" else b  # a run's name is shown as it is written
    rate = "n/a" if t["tuned_win_rate"] is None else f"{100 * t['tuned_win_rate']:.0f}%"
    # the same net preference and interval as the report (+1 tuned, 0 tie or both bad, -1 base)
    said = vote_interval(votes)["verdict_text"]
    return (f"**{lead} win rate: {rate}** over {t['tuned'] + t['base']} decided votes — "
            f"{b} {t['tuned']} · {a} {t['base']} · tie {t['tie']} · both bad {t['both_bad']}  \n"
            f"{lead} vs {a}: {said}")


def tally_labels(pair: tuple[str, str] | None) -> tuple[str, str]:
    """How the tally names a pair's sides: base / tuned when side A is the base model, else the runs' names."""
    if pair is None or pair[0] == BASE:
        return "base", "tuned"
    labels = pair_labels(*pair)
    return labels[False], labels[True]


def run_tally(key, request: gr.Request | None = None, blind: bool = False, side_a=None) -> str:
    """The tally of the saved votes (votes.jsonl) between the chosen run and its side A (default: its
    default side), from the newer run's file: what a reloaded page shows."""
    run = key_run(key, visitor(request))
    if run is None:
        return tally_markdown([], blind)
    pair = chat_pair(key, side_a)
    holder, models = vote_target(*pair)
    votes = pair_votes(load_votes(holder)[0], holder, models) if holder is not None else []
    return tally_markdown(votes, blind, tally_labels(pair))


def _blind_model(ctx: AppContext, key, blind: bool, request: gr.Request | None):
    """The picker update blind mode needs: the latest run instead of the base model alone
    (blind A/B compares a run with its base), else no change."""
    if not blind or not isinstance(key, str) or key.startswith(RUN_PREFIX):
        return gr.skip(), key
    choices = run_choices(ctx.settings.default_model, visitor(request))
    if not choices[0][1].startswith(RUN_PREFIX):
        gr.Warning("Blind A/B compares a trained run with its base model: train a run first (Train tab).")
        return gr.skip(), key
    return gr.Dropdown(choices=choices, value=choices[0][1]), choices[0][1]


@shows_errors
def toggle_blind(ctx: AppContext, state, blind: bool, key=None, request: gr.Request = None, side_a=None):
    """Blind checkbox. Turning it on starts a clean conversation (no earlier answer keeps its side)
    and hides which model is which everywhere in the tab until a vote: pane labels, intro, status,
    template note and tally. Returns (session, left, right, vote row, intro, status, template note,
    tally, picker, "Compare with" picker: hidden while blind, since it names the left pane's model)."""
    session = session_of(state)
    blind = bool(blind)
    if blind:
        chat.clear(session)
    chat.set_blind(session, blind)
    picker, key = _blind_model(ctx, key, blind, request)
    left, right = chatbots(session)
    template = template_for(key, visitor(request))
    note = gr.Markdown(template_note(template, blind), visible=template is not None)
    return (session, left, right, gr.Row(visible=session.pending is not None), BLIND_INTRO if blind else INTRO,
            status_line(ctx, key or "", blind=blind, side_a=side_a), note, run_tally(key, request, blind, side_a),
            picker, gr.update(visible=not blind and bool(side_a_choices(key, visitor(request)))))


@shows_errors
def cast_vote(state, choice: str):
    """Vote button (`choice` bound in build): save it to the run's votes.jsonl, reveal which model
    was which, show the whole tally. Returns (session, tally, vote row, status)."""
    session = session_of(state)
    try:
        vote = chat.record_vote(session, choice)
    except StudioError as exc:
        raise gr.Error(str(exc)) from None
    tuned, base = ("A", "B") if vote["tuned_side"] == "left" else ("B", "A")
    labels = ("base", "tuned") if session.side_labels == ("Base", "Tuned") else session.side_labels
    if labels == ("base", "tuned"):
        run = f" (run “{session.run.name}”)" if session.run is not None else ""
        said = f"Model {tuned} was the **tuned** model{run}; Model {base} was the **base** model."
    else:
        said = f"Model {tuned} was **{run_name_md(labels[1])}**; Model {base} was **{run_name_md(labels[0])}**."
    note = f"Vote saved. {said} Send another message for the next blind round."
    return session, tally_markdown(chat.saved_votes(session), labels=labels), gr.Row(visible=False), note


@shows_errors
def export_votes(state, key=None, request: gr.Request = None, side_a=None):
    """The decided votes as DPO pairs in a fresh file: the saved votes (votes.jsonl, so earlier
    sessions' votes count too) of the newer run of the pair on show, all of them for the run's
    default pair, else this session's."""
    session = session_of(state)
    run = key_run(key, visitor(request)) if key else session.run
    votes = load_votes(run)[0] if run is not None else session.votes
    if run is not None and key and side_a:
        holder, models = vote_target(*chat_pair(key, side_a))
        votes = pair_votes(load_votes(holder)[0], holder, models)
    if not any(v["winner"] in ("tuned", "base") for v in votes):
        gr.Warning("No decided votes to export yet (ties and 'both bad' make no preference pair).")
        return None
    # A fresh server-made folder per export: users never share or name files.
    # Inside Gradio's cache: served without a copy, and swept by the retention settings.
    path = fresh_folder(gradio_cache_dir(), "studio-votes-") / "preferences.jsonl"
    count = chat.export_preferences(votes, path)
    gr.Info(f"Exported {count} preference pairs (prompt / chosen / rejected, TRL DPO format).")
    return str(path)
