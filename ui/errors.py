"""The UI's edge for errors: what the page says when a handler fails.

One rule for every tab (see finetune_core/errors.py):

- a ``StudioError`` is a problem the user can fix: the page shows its message
  as it is (``gr.Error``), and the app log gets one line (no traceback);
- a ``gr.Error`` raised by the tab itself is already a message for the page:
  one line in the log as well;
- anything else is a bug: its traceback goes to the app's log and the page
  says "Internal error: <one line>. The details are in the app log (<where>)."
  (logged once: Gradio is told not to print the page message's own traceback).
  A plain ValueError or KeyError is a bug too: the core raises a StudioError
  for what the user did.

Every function wired to an event is wrapped with ``@shows_errors`` (generator
handlers too: a streaming reply is covered up to its last token). Handlers
that must clean up or update the page before failing call ``page_error``
themselves and raise what it returns.
"""
from __future__ import annotations

import functools
import inspect
import logging
import traceback

import gradio as gr

from finetune_core.errors import StudioError, one_line

log = logging.getLogger(__name__)


def log_location() -> str:
    """Where this process's log records go, named for the person reading the page: the
    file of a FileHandler on the way up from this module's logger, else the console
    (Python prints warnings and errors on stderr when logging is not configured)."""
    logger: logging.Logger | None = log
    while logger is not None:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                return handler.baseFilename
        logger = logger.parent if logger.propagate else None
    return "the server's console output"


def internal_error(exc: BaseException, what: str = "", redact: tuple[str, ...] = ()) -> gr.Error:
    """Log `exc` with its traceback and return the page's "Internal error" message.

    `redact` lists secrets (a Hub token) that must appear neither in the log nor on the page.
    """
    secrets = [s for s in redact if s]
    where = f" in {what}" if what else ""
    if secrets:
        text = "".join(traceback.format_exception(exc))
        for secret in secrets:
            text = text.replace(secret, "***")
        log.error("Internal error%s:\n%s", where, text.rstrip())
    else:
        log.error("Internal error%s", where, exc_info=exc)
    line = one_line(exc)
    for secret in secrets:
        line = line.replace(secret, "***")
    # The traceback that matters is logged above; Gradio printing this message's own would only repeat it.
    return gr.Error(f"Internal error: {line.rstrip('.')}. The details are in the app log ({log_location()}).",
                    print_exception=False)


def page_error(exc: BaseException, what: str = "", redact: tuple[str, ...] = ()) -> gr.Error:
    """The gr.Error the page shows for `exc`: a gr.Error as it is, a StudioError's message
    as it is (each logged as one line, see `user_message`), anything else logged with its
    traceback (see `internal_error`) and shown as an internal error."""
    if isinstance(exc, gr.Error):
        return user_message(exc, what)
    if isinstance(exc, StudioError):
        return user_message(gr.Error(str(exc)), what)
    return internal_error(exc, what, redact)


def user_message(error: gr.Error, what: str = "") -> gr.Error:
    """`error`, a message meant for the user, logged as one line and marked so that Gradio
    does not print its traceback: it is what the user did, not a fault of the app."""
    if error.print_exception:
        error.print_exception = False
        where = f" in {what}" if what else ""
        text = " ".join(str(error.message).split())
        log.warning("Shown to the user%s: %s", where, text if len(text) <= 300 else text[:299] + "…")
    return error


def shows_errors(fn):
    """Wrap an event handler (plain or generator) so that whatever it raises reaches the
    page through `page_error`. The wrapper keeps what Gradio reads from a handler: its
    signature (``request: gr.Request``, ``progress=gr.Progress()``) and whether it streams."""
    what = f"{fn.__module__}.{fn.__qualname__}"
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the edge: every failure becomes a page message
                _raise_for_page(exc, what)
        return streaming

    @functools.wraps(fn)
    def handler(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the edge: every failure becomes a page message
            _raise_for_page(exc, what)
    return handler


def _raise_for_page(exc: Exception, what: str):
    """Raise what the page shows for `exc` (see `page_error`); a gr.Error goes on with its own traceback."""
    error = page_error(exc, what)
    if error is exc:
        raise exc
    raise error from None


__all__ = ["shows_errors", "page_error", "user_message", "internal_error", "log_location"]
