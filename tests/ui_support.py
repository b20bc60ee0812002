"""Helpers for tests that build one tab alone, outside app.build_app."""
from __future__ import annotations

import gradio as gr

from ui.context import Shared


def shared_for(blocks: gr.Blocks) -> Shared:
    """What app.build_app hands a tab, made inside `blocks` (call within its `with`):
    a tab strip and the two session states, as the app makes them."""
    return Shared(blocks=blocks, tabs=gr.Tabs(), data_state=gr.State(None), run_state=gr.State(""))
