"""HTTP middleware for the launched app: the anonymous visitor cookie, and
downloads served as attachments.

* Visitor cookie. Without login, a run belongs to the browser that started it
  (finetune_core/runs/ownership.py). The browser is recognised by a random secret
  in an HttpOnly cookie made here on its first request; it survives reloads,
  and neither the page's scripts nor other visitors can read it. A request
  without the cookie gets a new key, injected into that request too, so the
  first page load and its events already agree on who the visitor is. Over
  HTTPS (a Hugging Face Space, shown inside an iframe on huggingface.co) the
  cookie is ``SameSite=None; Secure; Partitioned``, the only form a browser
  keeps in a third-party frame; over plain HTTP (local) it is ``SameSite=Lax``.
* Attachments. Gradio serves a returned file with its real content type and
  inline, so an exported HTML report (or any HTML/SVG file) would render as a
  page from the app's own origin. Every file route response that is not a
  plain image, audio or video gets ``Content-Disposition: attachment`` and
  ``X-Content-Type-Options: nosniff``.

Added through ``launch(app_kwargs={"middleware": middleware()})`` (app.py).
"""
from __future__ import annotations

import secrets
from urllib.parse import unquote

from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection

from .access import VISITOR_COOKIE

COOKIE_MAX_AGE = 365 * 24 * 3600
FILE_ROUTES = ("/gradio_api/file=", "/file=")
INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "audio/", "video/")


def _https(scope) -> bool:
    headers = dict(scope.get("headers") or [])
    forwarded = headers.get(b"x-forwarded-proto", b"").decode("latin-1").split(",")[0].strip()
    return scope.get("scheme") == "https" or forwarded == "https"


def visitor_cookie(key: str, https: bool) -> str:
    """The Set-Cookie value for a new visitor key; cross-site form (SameSite=None; Secure; Partitioned) over HTTPS."""
    attrs = f"{VISITOR_COOKIE}={key}; Path=/; Max-Age={COOKIE_MAX_AGE}; HttpOnly"
    return attrs + ("; SameSite=None; Secure; Partitioned" if https else "; SameSite=Lax")


def _file_name(path: str) -> str:
    """The last part of a file route's path, reduced to characters safe in a header."""
    name = unquote(path.split("file=", 1)[-1]).replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in name if c.isalnum() or c in "._-")[:120] or "download"


class StudioMiddleware:
    """Pure ASGI middleware (streaming responses pass through untouched)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        new_key = None
        if not HTTPConnection(scope).cookies.get(VISITOR_COOKIE):
            new_key = secrets.token_urlsafe(24)
            cookie = f"{VISITOR_COOKIE}={new_key}".encode()
            headers = [(k, v) for k, v in scope["headers"] if k != b"cookie"]
            old = next((v for k, v in scope["headers"] if k == b"cookie"), b"")
            headers.append((b"cookie", old + b"; " + cookie if old else cookie))
            scope = {**scope, "headers": headers}
        is_file = any(scope.get("path", "").startswith(prefix) for prefix in FILE_ROUTES)
        https = _https(scope)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if new_key:
                    headers.append("set-cookie", visitor_cookie(new_key, https))
                if is_file and not headers.get("content-type", "").startswith(INLINE_TYPES):
                    headers["content-disposition"] = f'attachment; filename="{_file_name(scope["path"])}"'
                    headers["x-content-type-options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def middleware() -> list[Middleware]:
    """The middleware list to hand to `launch(app_kwargs={"middleware": ...})`."""
    return [Middleware(StudioMiddleware)]


__all__ = ["StudioMiddleware", "middleware", "visitor_cookie"]
