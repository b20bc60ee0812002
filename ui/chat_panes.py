"""The Chat tab's two panes: the session behind them, their labels, and what they show.

Shared by the tab's handlers (ui/chat_send.py, chat_votes.py, chat_picker.py):
a pane update is a `gr.Chatbot` carrying both its messages and its label, so
a label can never lag behind the conversation it names.
"""
from __future__ import annotations

import gradio as gr

from finetune_core.inference import chat


def session_of(value) -> chat.ChatSession:
    """The session in a gr.State, created on first use (a State's initial value is
    deep-copied per browser, and the session holds a threading.Event, which cannot be)."""
    return value if isinstance(value, chat.ChatSession) else chat.ChatSession()


def pane_labels(blind: bool, sides: tuple[str, str] = ("Base", "Tuned")) -> tuple[str, str]:
    """(left, right) pane labels: the sides' names (Base / Tuned, or two runs' names), or neutral letters
    in blind mode."""
    return ("Model A", "Model B") if blind else tuple(sides)


def panes_with(session: chat.ChatSession, message: str) -> tuple[list[dict], list[dict]]:
    """Both panes plus a user message not yet part of the conversation (sent, not answered),
    as each side will get it (wrapped in its run's template when wrapping is on)."""
    left, right = chat.panes(session)
    base_user, tuned_user = chat.user_turns(session, message)
    return left + [base_user], right + [tuned_user]


def chatbots(session: chat.ChatSession):
    """Both panes as Chatbot updates: the session's turns under the mode's labels."""
    left, right = chat.panes(session)
    a, b = pane_labels(session.blind, session.side_labels)
    return gr.Chatbot(value=left, label=a), gr.Chatbot(value=right, label=b)
