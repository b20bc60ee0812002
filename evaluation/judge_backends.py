"""Who judges: a model the studio loads itself, or an OpenAI-compatible chat endpoint.

A judge backend turns a list of judge conversations (chat messages) into a
list of replies, in order; `evaluation.judge` writes those conversations and
reads the verdicts out of the replies.

* ``local`` — any model source the studio can load (``bundled``, a Hub id, a
  local folder), greedy, a short answer. When the judge is the run's own base
  model, the run's loaded weights answer with the adapter off: no second copy.
* ``endpoint`` — ``POST {url}/chat/completions`` with ``model``, ``messages``
  and ``temperature: 0``, the key as ``Authorization: Bearer <key>``.

The endpoint's key is a secret of whoever set it (the owner through
``STUDIO_JUDGE_KEY``, or a visitor who typed it): it is never saved, shown,
logged, put into an exception's text, or printed by a ``repr``; only the URL's
host is ever written down (`JudgeSpec.public`).

    >>> spec = JudgeSpec("endpoint", "gpt-4o-mini", "https://user:pw@api.example.com/v1?k=1", "sk-secret")
    >>> "sk-secret" in repr(spec), spec.public()
    (False, {'kind': 'endpoint', 'model': 'gpt-4o-mini', 'url_host': 'api.example.com'})
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from finetune_core.errors import InputError, StudioError

KINDS = ("local", "endpoint")
DEFAULT_URL = "https://api.openai.com/v1"  # where a typed key goes when the owner set no endpoint
DEFAULT_MODEL = "gpt-4o-mini"  # the endpoint's model when STUDIO_JUDGE_MODEL is not set
ENV_URL, ENV_KEY, ENV_MODEL = "STUDIO_JUDGE_URL", "STUDIO_JUDGE_KEY", "STUDIO_JUDGE_MODEL"
TIMEOUT_S = 60.0  # one judge reply; a judge that takes longer is reported, not waited for
VERDICT_TOKENS = 96  # a local judge's reply: a sentence of reason and the verdict line
JUDGE_BATCH = 8  # judge prompts are long (question + two answers): small batches keep memory flat
REPLY_CHARS = 4000  # most of an endpoint reply kept (a verdict comes in the last lines)

Replies = Callable[[list[list[dict]], Callable[[int, int], None] | None, threading.Event | None], list[str]]


class JudgeError(StudioError):
    """The judge could not answer (endpoint down, key refused, a reply that is not a chat
    completion); the message names the host, never the key."""


@dataclass(frozen=True)
class JudgeSpec:
    """Which judge: ``kind`` "local" (``model`` = a model source, e.g. "bundled") or "endpoint"
    (``model`` = the endpoint's model name, ``url`` = its base URL, ``api_key`` = its key, which
    no repr, log or file ever shows)."""

    kind: str = "local"
    model: str = "bundled"
    url: str | None = None
    api_key: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"Judge kind (kind) must be one of {', '.join(KINDS)} (got {self.kind!r}).")
        if self.kind == "endpoint":
            url_host(self.url)  # refuses a URL that is not http(s)://host/...

    def public(self) -> dict:
        """What may be written down about this judge: kind, model and the URL's host only."""
        return {"kind": self.kind, "model": self.model,
                "url_host": url_host(self.url) if self.kind == "endpoint" else None}

    def describe(self) -> str:
        """One line for a person: "local model bundled" or "gpt-4o-mini at api.example.com"."""
        if self.kind == "local":
            return f"local model {self.model}"
        return f"{self.model} at {url_host(self.url)}"


def url_host(url: str | None) -> str:
    """The host (and port) of an http(s) URL, without user, password, path or query; InputError
    (naming the setting, not the URL, which may carry a secret) for anything else.

    >>> url_host("http://127.0.0.1:8080/v1"), url_host("https://a:b@judge.example/v1?key=x")
    ('127.0.0.1:8080', 'judge.example')
    """
    try:
        parts = urlsplit((url or "").strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise InputError(f"The judge endpoint URL ({ENV_URL}) must start with http:// or https:// and name a "
                         "host, e.g. https://api.openai.com/v1.")
    return f"{host}:{port}" if port else host


def completions_url(url: str) -> str:
    """The chat completions route under a base URL (its query, if any, kept at the end).

    >>> completions_url("http://127.0.0.1:8000/v1/?tenant=a")
    'http://127.0.0.1:8000/v1/chat/completions?tenant=a'
    """
    parts = urlsplit(url.strip())
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/chat/completions"))


def judge_spec_from_env(public: bool, is_admin: bool, typed_key: str | None) -> JudgeSpec | None:
    """The endpoint judge this user may use, from STUDIO_JUDGE_URL / _KEY / _MODEL and a typed key.

    A key the user typed is theirs: it is used for this call only (never stored here) and goes to
    the owner's URL, else to DEFAULT_URL. The owner's key (STUDIO_JUDGE_KEY) is used only on a
    private deployment or, in public mode (STUDIO_PUBLIC=1), for admins: a visitor never spends
    it and has to type their own. None when there is no endpoint this user may use.
    """
    url = os.environ.get(ENV_URL, "").strip()
    owner_key = os.environ.get(ENV_KEY, "").strip()
    model = os.environ.get(ENV_MODEL, "").strip() or DEFAULT_MODEL
    typed = (typed_key or "").strip()
    if typed:
        return JudgeSpec("endpoint", model, url or DEFAULT_URL, typed)
    if public and not is_admin:
        return None  # the owner's endpoint (and key) are not the visitor's to spend
    if not url and not owner_key:
        return None
    return JudgeSpec("endpoint", model, url or DEFAULT_URL, owner_key or None)


# -- the endpoint -------------------------------------------------------------------------
class EndpointJudge:
    """Replies from an OpenAI-compatible chat completions endpoint, one request per conversation
    (temperature 0). Every failure is a JudgeError naming the host and what to check."""

    def __init__(self, spec: JudgeSpec, timeout: float = TIMEOUT_S, max_tokens: int | None = None):
        self.spec = spec
        self.host = url_host(spec.url)
        self.timeout = timeout
        self.max_tokens = max_tokens

    def __repr__(self) -> str:  # the spec's repr already hides the key; say so plainly anyway
        return f"EndpointJudge({self.spec.model!r} at {self.host!r})"

    def __call__(self, conversations, progress=None, cancel=None) -> list[str]:
        """One reply per conversation, in order; InterruptedError when `cancel` is set between requests."""
        import httpx

        replies = []
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            for i, messages in enumerate(conversations):
                if cancel is not None and cancel.is_set():
                    raise InterruptedError("Judging cancelled.")
                replies.append(self._ask(client, messages))
                if progress:
                    progress(i + 1, len(conversations))
        return replies

    def _ask(self, client, messages: list[dict]) -> str:
        body = {"model": self.spec.model, "messages": messages, "temperature": 0}
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        url = completions_url(self.spec.url)
        # the key joins the headers inside the try: a key httpx cannot send (non-ASCII, a newline)
        # fails here as a JudgeError, never as an exception that could quote it
        try:
            headers = {"Authorization": f"Bearer {self.spec.api_key}"} if self.spec.api_key else {}
            response = client.post(url, json=body, headers=headers)
        except Exception as exc:  # noqa: BLE001 - every transport failure becomes one clear message
            raise JudgeError(self._transport_message(exc)) from None  # the cause could quote headers
        return self._reply_text(response)

    def _transport_message(self, exc: Exception) -> str:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return f"The judge endpoint at {self.host} did not answer within {self.timeout:g} s."
        if isinstance(exc, httpx.ConnectError):
            return (f"Could not connect to the judge endpoint at {self.host} (connection refused or host "
                    f"unreachable): check {ENV_URL} and that the server is running.")
        return f"The request to the judge endpoint at {self.host} failed ({type(exc).__name__})."

    def _reply_text(self, response) -> str:
        status = response.status_code
        if status in (401, 403):
            raise self._error(f"refused the key (HTTP {status}): check the key ({ENV_KEY}, or the one typed).")
        if status == 404:
            raise self._error(f"has no chat completions route (HTTP 404): {ENV_URL} should end where "
                              "'/chat/completions' can be added, e.g. https://api.openai.com/v1.")
        if status == 429:
            raise self._error("is rate-limiting or out of quota (HTTP 429): try again later or with fewer prompts.")
        if status >= 400:
            raise self._error(f"answered HTTP {status}: check {ENV_MODEL} ({self.spec.model!r}) and the server.")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise self._error("did not send a chat completion (no choices[0].message.content in its reply).")
        return content[-REPLY_CHARS:]

    def _error(self, what: str) -> JudgeError:
        return JudgeError(f"The judge endpoint at {self.host} {what}")


# -- a local model --------------------------------------------------------------------------
class LocalJudge:
    """Replies from an InferenceModel's base side (the adapter off), greedy and short."""

    def __init__(self, model, max_new_tokens: int = VERDICT_TOKENS, batch_size: int = JUDGE_BATCH):
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def __call__(self, conversations, progress=None, cancel=None) -> list[str]:
        """One reply per conversation, in order; InterruptedError when `cancel` is set."""
        from finetune_core.inference.generation import GenSettings

        replies = self.model.generate(conversations, tuned=False,
                                      settings=GenSettings(max_new_tokens=self.max_new_tokens),
                                      batch_size=self.batch_size, progress=progress, cancel=cancel)
        if cancel is not None and cancel.is_set():  # generate() returns cut replies when cancelled mid-batch
            raise InterruptedError("Judging cancelled.")
        return replies


def same_source(a: str, b: str) -> bool:
    """Whether two model choices name the same model ("bundled" and its label are one).

    >>> same_source("bundled", ""), same_source("bundled", "HuggingFaceTB/SmolLM2-135M-Instruct")
    (True, False)
    """
    from finetune_core.models.sources import BUNDLED, BUNDLED_LABEL

    def norm(s: str) -> str:
        s = (s or "").strip()
        return BUNDLED if s in ("", BUNDLED, BUNDLED_LABEL) else s.rstrip("/")

    return norm(a) == norm(b)


def make_backend(spec: JudgeSpec, run_model, run_base: str,
                 progress: Callable[[str], None] | None = None) -> Replies:
    """The reply function for `spec`. A local judge that is the run's own base model
    (`run_base`) reuses `run_model`'s weights as its side A when that side is the base model (adapters
    off); any other local source, or the base of a run compared with its parent, is loaded
    (allow-lists and size ceilings apply as anywhere else)."""
    if spec.kind == "endpoint":
        return EndpointJudge(spec)
    keys = getattr(run_model, "side_keys", None)  # None: a model made without sides (base vs tuned)
    if run_model is not None and same_source(spec.model, run_base) and (keys is None or keys[0] == "base"):
        return LocalJudge(run_model)
    from finetune_core.inference.generation import InferenceModel
    from finetune_core.models.sources import check_model_size

    check_model_size(spec.model)  # the deployment's parameter ceiling holds for judges too
    return LocalJudge(InferenceModel.base_only(spec.model or "bundled", progress))
