"""The judge's endpoint and the `judge` command: the key is sent to the endpoint and nowhere else
(not in judge.json, the examples, the logs, an error or a repr), a visitor of a public deployment
never spends the owner's key, and an endpoint that is down, refuses the key or answers nonsense
gives a clear error naming its host.

`FakeJudge` (an OpenAI-compatible chat completions server on loopback, answering by a rule) is
shared with tests/test_judge.py.

    .venv/bin/python -m pytest -q tests/test_judge_backends.py
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import socket
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from evaluation.judge import JudgeError, JudgeSpec, judge_run, judge_spec_from_env, read_check
from evaluation.judge_backends import EndpointJudge, url_host
from finetune_core.__main__ import main
from finetune_core.runs.store import run_from_dir

KEY = "sk-studio-test-7c1e0d9a-NEVER-SHOWN"
ANSWER_RE = re.compile(r"\[Answer ([AB])\]\n(.*?)\n\[End of answer \1\]", re.S)


def answers_in(request: dict) -> tuple[str, str]:
    """(answer A, answer B) as the judge was shown them."""
    found = dict(ANSWER_RE.findall(request["messages"][1]["content"]))
    return found["A"], found["B"]


def prefer_blue(body: dict) -> str:
    """A consistent judge: the answer that says "blue" is better; neither or both: a tie."""
    a, b = ("blue" in text for text in answers_in(body))
    return "A says blue.\n[[A]]" if a and not b else "B says blue.\n[[B]]" if b and not a else "Same.\n[[C]]"


class FakeJudge:
    """An OpenAI-compatible `POST /v1/chat/completions` on 127.0.0.1; `rule(body)` gives the reply text,
    or (status, json body) to answer otherwise. Every request body and header is kept in `requests`."""

    def __init__(self, rule):
        self.rule = rule
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({**body, "path": self.path, "auth": self.headers.get("Authorization")})
                reply = fake.rule(body)
                status, payload = reply if isinstance(reply, tuple) else (
                    200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]})
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet: the test output is not the server's log
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_port}"
        self.url = f"http://{self.host}/v1"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def run(trained_run, runs_root):
    shutil.copytree(trained_run.path, runs_root / trained_run.path.name)
    return run_from_dir(runs_root / trained_run.path.name)


class Echo:
    """Stands in for the run's model: tuned says "blue", base "grey" (a prefer_blue judge picks tuned)."""

    has_tuned = True

    def generate(self, prompts, tuned, settings=None, batch_size=16, progress=None, cancel=None):
        return ["The blue one." if tuned else "The grey one." for _ in prompts]


def everything_written(run) -> str:
    return "".join(p.read_text(encoding="utf-8") for p in (run.path / "checks").iterdir() if p.is_file())


def test_the_key_goes_to_the_endpoint_and_nowhere_else(run, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeJudge(prefer_blue) as fake:
        spec = JudgeSpec("endpoint", "judge-model", fake.url + "?tenant=x", KEY)
        result = judge_run(run, judge=spec, limit=2, model=Echo())
    assert {r["auth"] for r in fake.requests} == {f"Bearer {KEY}"}
    assert {r["path"] for r in fake.requests} == {"/v1/chat/completions?tenant=x"}
    assert {(r["model"], r["temperature"]) for r in fake.requests} == {("judge-model", 0)}
    assert result["judge"] == {"kind": "endpoint", "model": "judge-model", "url_host": fake.host}
    assert result["wins"] == 2
    assert "tenant" not in everything_written(run)  # only the host of the URL is written down
    for text in (everything_written(run), caplog.text, repr(spec), str(spec), repr(EndpointJudge(spec))):
        assert KEY not in text


def error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


@pytest.mark.parametrize("reply, message", [
    ((401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}), "refused the key (HTTP 401)"),
    ((500, {"error": f"upstream failed for {KEY}"}), "answered HTTP 500"),
    ((200, {"unexpected": KEY}), "did not send a chat completion"),
    ((404, {}), "has no chat completions route"),
])
def test_endpoint_errors_name_the_host_never_the_key(run, caplog, reply, message):
    caplog.set_level(logging.DEBUG)
    with FakeJudge(lambda body: reply) as fake:
        with pytest.raises(JudgeError) as err:
            judge_run(run, judge=JudgeSpec("endpoint", "m", fake.url, KEY), limit=1, model=Echo())
    assert message in str(err.value) and fake.host in str(err.value)
    assert KEY not in error_text(err.value) and KEY not in caplog.text
    assert not (run.path / "checks" / "judge.json").exists()


def test_an_endpoint_that_is_down_is_reported_without_the_key(run, caplog):
    caplog.set_level(logging.DEBUG)
    with socket.socket() as s:  # a port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(JudgeError, match=f"Could not connect to the judge endpoint at 127.0.0.1:{port}") as err:
        judge_run(run, judge=JudgeSpec("endpoint", "m", f"http://127.0.0.1:{port}/v1", KEY), limit=1, model=Echo())
    assert KEY not in error_text(err.value) and KEY not in caplog.text


def test_a_key_that_cannot_be_sent_is_an_error_that_does_not_quote_it(run):
    bad_key = "sk-caf\u00e9-\nX-Injected: 1"
    with FakeJudge(prefer_blue) as fake:
        with pytest.raises(JudgeError, match=f"judge endpoint at {fake.host} failed") as err:
            judge_run(run, judge=JudgeSpec("endpoint", "m", fake.url, bad_key), limit=1, model=Echo())
    assert "caf" not in error_text(err.value) and not fake.requests


def test_an_endpoint_url_must_be_http_and_is_never_echoed():
    for bad in ("ftp://judge.example/v1", "judge.example/v1", "", "http:///v1"):
        with pytest.raises(ValueError, match="STUDIO_JUDGE_URL") as err:
            JudgeSpec("endpoint", "m", bad, KEY)
        assert KEY not in str(err.value)
    assert url_host("https://user:secret@judge.example:8443/v1?key=abc") == "judge.example:8443"


@pytest.fixture()
def env(monkeypatch):
    for name in ("STUDIO_JUDGE_URL", "STUDIO_JUDGE_KEY", "STUDIO_JUDGE_MODEL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_in_public_mode_only_admins_spend_the_owners_key(env):
    env.setenv("STUDIO_JUDGE_URL", "https://judge.example/v1")
    env.setenv("STUDIO_JUDGE_KEY", "owner-key")
    env.setenv("STUDIO_JUDGE_MODEL", "big-judge")
    assert judge_spec_from_env(public=True, is_admin=False, typed_key=None) is None
    assert judge_spec_from_env(public=True, is_admin=False, typed_key="  ") is None
    visitor = judge_spec_from_env(public=True, is_admin=False, typed_key=" visitor-key ")
    assert (visitor.api_key, visitor.url, visitor.model) == ("visitor-key", "https://judge.example/v1", "big-judge")
    assert judge_spec_from_env(public=True, is_admin=True, typed_key=None).api_key == "owner-key"
    assert judge_spec_from_env(public=False, is_admin=False, typed_key=None).api_key == "owner-key"
    assert judge_spec_from_env(public=True, is_admin=True, typed_key="mine").api_key == "mine"  # typed wins


def test_without_an_endpoint_or_a_typed_key_there_is_no_endpoint_judge(env):
    assert judge_spec_from_env(public=False, is_admin=True, typed_key=None) is None
    typed = judge_spec_from_env(public=True, is_admin=False, typed_key="k")
    assert typed.url.startswith("https://") and typed.model  # a typed key alone goes to the default endpoint
    env.setenv("STUDIO_JUDGE_URL", "http://127.0.0.1:8000/v1")  # an endpoint that needs no key
    spec = judge_spec_from_env(public=False, is_admin=False, typed_key=None)
    assert spec.api_key is None and spec.public()["url_host"] == "127.0.0.1:8000"


def test_the_judge_command_prints_and_saves_the_check(run, env, capsys, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"question_id": 1, "category": "colours", "turns": ["Item 1: the blue ball?"]}\n'
                       '{"question_id": 2, "category": "shapes", "turns": ["Item 2: a square?"]}\n')
    with FakeJudge(lambda body: "[[A]]") as fake:
        env.setenv("STUDIO_JUDGE_URL", fake.url)
        env.setenv("STUDIO_JUDGE_KEY", KEY)
        env.setenv("STUDIO_JUDGE_MODEL", "cli-judge")
        assert main(["judge", "--run", str(run.path), "--judge", "endpoint", "--prompts", str(prompts),
                     "--max-new-tokens", "4", "--json"]) == 0
        printed = capsys.readouterr()
        assert json.loads(printed.out) == read_check(run, "judge")
        assert main(["judge", "--run", str(run.path), "--judge", "endpoint", "--prompts", str(prompts),
                     "--max-new-tokens", "4"]) == 0
        text = capsys.readouterr()
    assert len(fake.requests) == 8 and {r["auth"] for r in fake.requests} == {f"Bearer {KEY}"}
    assert "tuned vs base: 0 wins, 2 ties, 0 losses (win rate 0.500)" in text.out
    assert "not distinguishable from no change on 2 prompts" in text.out
    assert "colours" in text.out and "shapes" in text.out and "no judged prompt has a vote" in text.out
    assert "base first -> base, tuned first -> tuned; outcome: tie" in text.out
    for out in (printed.out, printed.err, text.out, text.err):
        assert KEY not in out


def test_the_judge_command_refuses_bad_input_with_status_2(run, env, capsys, tmp_path):
    assert main(["judge", "--run", str(run.path), "--judge", "endpoint"]) == 2
    assert "STUDIO_JUDGE_URL" in capsys.readouterr().err
    assert main(["judge", "--run", str(run.path), "--judge", "gpt"]) == 2
    assert "--judge must be local:<model source> or endpoint" in capsys.readouterr().err
    assert main(["judge", "--run", str(run.path), "--prompts", str(tmp_path / "none.jsonl")]) == 2
    assert "Prompt file none.jsonl not found" in capsys.readouterr().err
    assert main(["judge", "--run", str(tmp_path), "--limit", "3"]) == 2
    assert "is not a run directory" in capsys.readouterr().err
