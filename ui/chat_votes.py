"""Blind A/B in the Chat tab: the mode switch, the vote buttons, the tally and the export.

A vote is saved to the run's votes.jsonl as it is cast (chat.record_vote ->
votes.append_vote), so the tally, the report and the export read one file.
"""
from __future__ import annotations

import gradio as gr

from finetune_core.errors import StudioError
from finetune_core.inference import chat
from finetune_core.inference.votes import load_votes
from finetune_core.retention import fresh_folder, gradio_cache_dir

from .access import visitor
from .chat_models import key_run
from .chat_panes import chatbots, session_of
from .errors import shows_errors

VOTE_LABELS = {"left": "👈 Left is better", "right": "Right is better 👉", "tie": "🤝 Tie", "both_bad": "👎 Both bad"}


def tally_markdown(votes: list[dict]) -> str:
    """The tally line under the panes: the tuned win rate and the counts per winner."""
    t = chat.tally(votes)
    if not t["votes"]:
        return "No votes yet. Turn on blind A/B mode, chat, and vote after each answer."
    rate = "n/a" if t["tuned_win_rate"] is None else f"{100 * t['tuned_win_rate']:.0f}%"
    return (f"**Tuned win rate: {rate}** over {t['tuned'] + t['base']} decided votes — "
            f"tuned {t['tuned']} · base {t['base']} · tie {t['tie']} · both bad {t['both_bad']}")


def run_tally(key, request: gr.Request | None = None) -> str:
    """The tally of the chosen run's saved votes (votes.jsonl): what a reloaded page shows."""
    run = key_run(key, visitor(request))
    return tally_markdown(load_votes(run)[0] if run is not None else [])


@shows_errors
def toggle_blind(state, blind: bool):
    """Blind checkbox: switch mode and relabel the panes; the vote row shows only while a blind turn awaits a vote."""
    session = session_of(state)
    chat.set_blind(session, blind)
    left, right = chatbots(session)
    return session, left, right, gr.Row(visible=session.pending is not None)


@shows_errors
def cast_vote(state, choice: str):
    """Vote button (`choice` bound in build): save it to the run's votes.jsonl, reveal the sides, update the tally."""
    session = session_of(state)
    try:
        vote = chat.record_vote(session, choice)
    except StudioError as exc:
        raise gr.Error(str(exc)) from None
    revealed = "tuned" if vote["tuned_side"] == "left" else "base"
    note = f"Vote saved. Left was **{revealed}**, right was **{'base' if revealed == 'tuned' else 'tuned'}**."
    return session, tally_markdown(chat.saved_votes(session)), gr.Row(visible=False), note


@shows_errors
def export_votes(state, key=None, request: gr.Request = None):
    """The decided votes as DPO pairs in a fresh file: the chosen run's saved votes
    (votes.jsonl, so earlier sessions' votes count too), else this session's."""
    session = session_of(state)
    run = key_run(key, visitor(request)) if key else session.run
    votes = load_votes(run)[0] if run is not None else session.votes
    if not any(v["winner"] in ("tuned", "base") for v in votes):
        gr.Warning("No decided votes to export yet (ties and 'both bad' make no preference pair).")
        return None
    # A fresh server-made folder per export: users never share or name files.
    # Inside Gradio's cache: served without a copy, and swept by the retention settings.
    path = fresh_folder(gradio_cache_dir(), "studio-votes-") / "preferences.jsonl"
    count = chat.export_preferences(votes, path)
    gr.Info(f"Exported {count} preference pairs (prompt / chosen / rejected, TRL DPO format).")
    return str(path)
