"""Who is asking: the request turned into a `Visitor`, and the login check.

Hiding a button is not protection: an API client can call any event, and an
event marked private in gradio can still be called through the queue by its
index. So every handler that touches a run takes the request and checks it
here and in finetune_core/runs/ownership.py. When ``STUDIO_REQUIRE_LOGIN`` is on
(e.g. a public Space with HF OAuth, or ``APP_AUTH`` password auth) handlers
that train, evaluate or export refuse requests without a user.
"""
from __future__ import annotations

import os

import gradio as gr

from finetune_core.runs.ownership import Policy, Visitor

VISITOR_COOKIE = "studio_visitor"  # set by ui.middleware: an anonymous browser's secret key


def login_required() -> bool:
    """Whether this deployment requires a signed-in user (read from the environment on each call)."""
    return Policy.from_env().login


def current_user(request: gr.Request | None) -> str | None:
    """The signed-in user's name (password auth or HF OAuth), or None when anonymous or there is no request."""
    if request is None:
        return None
    user = getattr(request, "username", None)
    if user:
        return user
    oauth = _oauth_info(request)
    info = oauth.get("userinfo") or {}
    # never a shared placeholder name: two users would own each other's runs
    return info.get("preferred_username") or info.get("sub") or None


def _oauth_info(request: gr.Request | None) -> dict:
    """The HF OAuth record gradio keeps in the session ({} without HF OAuth)."""
    if request is None:
        return {}
    try:  # starlette asserts when no SessionMiddleware is installed (no HF OAuth configured)
        session = request.session or {}
    except (AssertionError, AttributeError, KeyError):
        return {}
    info = session.get("oauth_info") if hasattr(session, "get") else None
    try:  # gradio hands request attributes over as its own Obj: dict() turns it (and its values) back
        return dict(info) if info else {}
    except (TypeError, ValueError):
        return {}


def oauth_token(request: gr.Request | None) -> str | None:
    """The signed-in Hugging Face user's own access token (HF OAuth on a Space), or None."""
    token = _oauth_info(request).get("access_token")
    return token if isinstance(token, str) and token else None


def browser_key(request: gr.Request | None) -> str | None:
    """The anonymous browser's secret key: the visitor cookie (it survives reloads), else
    the page's session hash (a browser that refuses cookies owns its runs until it reloads)."""
    if request is None:
        return None
    try:
        cookies = dict(getattr(request, "cookies", None) or {})
    except (AttributeError, TypeError):
        cookies = {}
    key = str(cookies.get(VISITOR_COOKIE) or "")
    if len(key) >= 16:
        return key
    session = getattr(request, "session_hash", None)
    return f"session:{session}" if session else None


def visitor(request: gr.Request | None) -> Visitor:
    """Who sent this request (no request: a script or test calling a handler directly)."""
    return Visitor.from_browser_key(browser_key(request), user=current_user(request))


def require_user(request: gr.Request | None) -> str | None:
    """Raise a gr.Error when login is required and the request has no user."""
    user = current_user(request)
    if login_required() and not user:
        raise gr.Error("Please log in first: this deployment requires a signed-in user to train, evaluate or export.")
    return user


def parse_auth(value: str | None) -> list[tuple[str, str]] | None:
    """APP_AUTH='user:pass[,user2:pass2]' or a path to a file of such lines."""
    if not value:
        return None
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as fh:
            value = ",".join(line.strip() for line in fh if line.strip())
    pairs = []
    for item in value.split(","):
        user, sep, password = item.strip().partition(":")
        if sep and user and password:
            pairs.append((user, password))
    return pairs or None
