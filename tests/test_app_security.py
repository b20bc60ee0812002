"""The launched app as a public Space would run it: files served, uploads, auth, API access."""
from __future__ import annotations

import socket
import urllib.error
import urllib.parse
import urllib.request

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture()
def launched(tmp_path, monkeypatch, tiny_model_dir):
    """The real app, launched in-process on a free loopback port."""
    monkeypatch.setenv("STUDIO_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("STUDIO_EXPORTS_DIR", str(tmp_path / "exports"))
    monkeypatch.setenv("STUDIO_UPLOADS_DIR", str(tmp_path / "uploads"))
    monkeypatch.setenv("STUDIO_DEFAULT_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("STUDIO_MAX_UPLOAD_MB", "1")

    def start(**env):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        import app

        from ui.context import AppContext

        ctx = AppContext()
        demo = app.build_app(ctx)
        port = _free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    **app.launch_kwargs(ctx))
        started.append(demo)
        start.demo = demo  # the Blocks just launched (tests find event indexes in it)
        return f"http://127.0.0.1:{port}", ctx

    started: list = []
    yield start
    for demo in started:
        demo.close()


def test_page_serves_and_launch_settings_are_safe(launched):
    url, ctx = launched()
    status, body = _get(url + "/")
    assert status == 200 and b"Fine-tuning Studio" in body
    import app

    kwargs = app.launch_kwargs(ctx)
    assert kwargs["share"] is False
    assert kwargs["max_file_size"] == "1mb"
    assert str(ctx.settings.exports_dir) in kwargs["allowed_paths"]
    assert any(p.endswith("runs") for p in kwargs["blocked_paths"])


@pytest.mark.parametrize("path", ["/etc/passwd", "../../../../etc/passwd", "%2Fetc%2Fpasswd"])
def test_file_route_refuses_system_files(launched, path):
    url, _ctx = launched()
    for prefix in ("/gradio_api/file=", "/file="):
        status, body = _get(url + prefix + path)
        assert status in (400, 403, 404), (prefix, path, status)
        assert b"root:" not in body


def test_file_route_refuses_run_files(launched, tmp_path):
    url, _ctx = launched()
    secret = tmp_path / "runs" / "20260101-000000-x-abcdef"
    secret.mkdir(parents=True)
    (secret / "run.yaml").write_text("model: secret-model\n")
    status, body = _get(url + "/gradio_api/file=" + str(secret / "run.yaml"))
    assert status in (400, 403, 404)
    assert b"secret-model" not in body


def test_upload_over_the_limit_is_refused(launched):
    url, _ctx = launched()
    boundary = "studioboundary"
    payload = b"x" * (2 * 1024 * 1024)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.jsonl\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "/gradio_api/upload", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 413


def test_api_refuses_training_without_login_when_auth_is_on(launched):
    from gradio_client import Client

    url, ctx = launched(APP_AUTH="admin:s3cret-pass")
    status, _body = _get(url + "/gradio_api/info")
    assert status in (401, 403)
    with pytest.raises(Exception):
        Client(url, verbose=False)  # no credentials: the API is closed
    client = Client(url, auth=("admin", "s3cret-pass"), verbose=False)
    assert client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert ctx.slot.active() is None


def test_api_training_is_refused_without_a_user_when_login_is_required(launched, tmp_path):
    from gradio_client import Client

    url, ctx = launched(STUDIO_REQUIRE_LOGIN="1")
    client = Client(url, verbose=False)
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for endpoint in ("/train", "/train_stop", "/train_resume", "/evaluate", "/export_adapter", "/guided_demo"):
        # every parameter filled with a plausible value: only the missing login may refuse the call
        required = {p["parameter_name"]: "20260101-000000-x-abcdef" for p in api[endpoint]["parameters"]
                    if not p.get("parameter_has_default")}
        with pytest.raises(Exception, match="log in"):
            client.predict(api_name=endpoint, **required)
    assert ctx.slot.active() is None
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# -- several visitors over HTTP ------------------------------------------------------------------------------
class Browser:
    """A visitor's browser on loopback: its own cookie jar, and gradio's queue protocol
    (join, then read the event stream) for calling any event by index, as the page does."""

    def __init__(self, url: str):
        import http.cookiejar

        self.url, self.jar = url, http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def login(self, user: str, password: str) -> None:
        data = urllib.parse.urlencode({"username": user, "password": password}).encode()
        self.opener.open(self.url + "/login", data=data, timeout=10).read()

    def get(self, path: str):
        return self.opener.open(self.url + path, timeout=10)

    def call(self, fn_index: int, data: list) -> dict:
        import json
        import secrets

        session = secrets.token_hex(8)
        body = json.dumps({"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None,
                           "trigger_id": None}).encode()
        req = urllib.request.Request(self.url + "/gradio_api/queue/join", data=body,
                                     headers={"Content-Type": "application/json"})
        self.opener.open(req, timeout=10).read()
        with self.get(f"/gradio_api/queue/data?session_hash={session}") as stream:
            for line in stream:
                if line.startswith(b"data:"):
                    message = json.loads(line[5:])
                    if message.get("msg") == "process_completed":
                        return message
        raise AssertionError("the event never completed")


def _fn_index(demo, name: str) -> int:
    return next(i for i, fn in demo.fns.items() if getattr(fn.fn, "__name__", "") == name)


def test_private_events_check_the_visitor_too(launched, trained_run, tmp_path):
    """An event marked private can still be called through the queue by its index:
    the check is in the handler, so another user's run stays closed."""
    import shutil

    from finetune_core.runs.ownership import write_owner

    url, ctx = launched(APP_AUTH="alice:pw-alice-123,bob:pw-bob-4567")
    shutil.copytree(trained_run.path, tmp_path / "runs" / trained_run.id)
    write_owner(tmp_path / "runs" / trained_run.id, {"user": "alice"})
    index = _fn_index(launched.demo, "on_show")
    alice, bob = Browser(url), Browser(url)
    alice.login("alice", "pw-alice-123")
    bob.login("bob", "pw-bob-4567")
    seen = bob.call(index, [trained_run.id, "Biggest wins first", None, None])  # run, order, side A, side B
    assert seen["success"] is False and "does not exist" in str(seen["output"])
    shown = alice.call(index, [trained_run.id, "Biggest wins first", None, None])
    # the status line names the run by its human name
    assert shown["success"] is True and trained_run.name in str(shown["output"]["data"])


def test_visitor_cookie_and_downloads_as_attachments(launched):
    url, ctx = launched()
    visitor = Browser(url)
    with visitor.get("/") as page:
        cookies = page.headers.get_all("set-cookie") or []
    cookie = next(c for c in cookies if c.startswith("studio_visitor="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and len(cookie.split(";")[0]) > 30
    with visitor.get("/") as again:  # the browser keeps its key: no new one
        assert not [c for c in again.headers.get_all("set-cookie") or [] if c.startswith("studio_visitor=")]
    folder = ctx.settings.exports_dir / "f0lder-made-by-the-server-123"
    folder.mkdir(parents=True)
    (folder / "report.html").write_text("<script>alert(1)</script>")
    with visitor.get("/gradio_api/file=" + str(folder / "report.html")) as served:
        assert served.headers["Content-Disposition"].startswith("attachment")
        assert served.headers["X-Content-Type-Options"] == "nosniff"
