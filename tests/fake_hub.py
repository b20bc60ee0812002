"""A fake Hugging Face Hub on loopback, for tests that sync runs without a network.

Implements only the HTTP routes huggingface_hub 2.4 calls for what
finetune_core/runs/sync.py does (read from the installed client: hf_api.py,
_commit_api.py, file_download.py, utils/_pagination.py):

    POST /api/repos/create                                   create_repo (409 when it exists)
    GET  /api/{type}s/{repo}[/revision/{rev}]                repo_info / dataset_info
    POST /api/{type}s/{repo}/preupload/{rev}                 every file is "regular": the commit carries it
    POST /api/{type}s/{repo}/commit/{rev}                    the NDJSON commit (file, deletedFile, deletedFolder)
    GET  /api/{type}s/{repo}/tree/{rev}[/{path}]             list_repo_tree / list_repo_files (one page)
    HEAD|GET /[{type}s/]{repo}/resolve/{rev}/{path}          hf_hub_download

Repos live in memory; one revision (the latest commit) is served whatever
revision is asked for. `hub.fail_with = 500` makes every request answer that
status; `hub.requests` lists (method, path) of each request seen. Usage:

    with FakeHub() as hub:
        api = HfApi(endpoint=hub.url, token="test")
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = ("model", "dataset", "space")


def git_oid(content: bytes) -> str:
    """The git blob id of `content` (what the Hub reports as a file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    """One repository: its files (path -> bytes) and the id of its latest commit."""

    files: dict[str, bytes] = field(default_factory=dict)
    sha: str = "0" * 40
    commits: int = 0
    private: bool = False

    def commit(self, summary: str) -> str:
        self.commits += 1
        self.sha = hashlib.sha1(f"{self.commits}:{summary}".encode()).hexdigest()
        return self.sha


class FakeHub:
    """The server and its state; a context manager that serves on 127.0.0.1 in a daemon thread."""

    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_with: int | None = None
        self._lock = threading.Lock()
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo | None:
        """The repository, or None when it does not exist."""
        return self.repos.get((repo_type, repo_id))

    def put_files(self, repo_id: str, files: dict[str, bytes], repo_type: str = "dataset") -> None:
        """Write files straight into a repo (made if missing), as one commit: for tests of odd repos."""
        with self._lock:
            repo = self.repos.setdefault((repo_type, repo_id), Repo())
            repo.files.update(files)
            repo.commit("put_files")

    def commits(self) -> int:
        """How many commit requests the hub has seen."""
        return sum(1 for method, path in self.requests if method == "POST" and "/commit/" in path)


class _Handler(BaseHTTPRequestHandler):
    server_hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet: tests read hub.requests instead
        pass

    # -- plumbing -----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, data, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, message: str, code: str = "", head: bool = False) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self, method: str) -> None:
        hub = self.server_hub
        url = urlsplit(self.path)
        hub.requests.append((method, url.path))
        body = self._body() if method == "POST" else b""
        if hub.fail_with:
            return self._error(hub.fail_with, "the fake hub is down", head=method == "HEAD")
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        with hub._lock:
            if method == "POST" and url.path == "/api/repos/create":
                return self._create(json.loads(body or b"{}"))
            if parts[0] == "api" and len(parts) >= 4 and parts[1].rstrip("s") in REPO_TYPES:
                return self._api(method, parts[1][:-1], "/".join(parts[2:4]), parts[4:], body, url.query)
            if "resolve" in parts and method in ("GET", "HEAD"):
                return self._resolve(parts, head=method == "HEAD")
        return self._error(404, f"no route for {method} {url.path}", head=method == "HEAD")

    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    # -- routes -------------------------------------------------------------------------------
    def _create(self, payload: dict) -> None:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization')}/{payload['name']}" if payload.get("organization") else payload["name"]
        key, prefix = (repo_type, repo_id), ("" if repo_type == "model" else f"{repo_type}s/")
        url = f"{self.server_hub.url}/{prefix}{repo_id}"
        if key in self.server_hub.repos:  # the Hub's 409 carries the url too: create_repo(exist_ok=True) reads it
            return self._json(409, {"error": "You already created this repo", "url": url},
                              {"X-Error-Message": "You already created this repo"})
        self.server_hub.repos[key] = Repo(private=payload.get("visibility") == "private")
        self._json(200, {"url": url})

    def _api(self, method: str, repo_type: str, repo_id: str, rest: list[str], body: bytes, query: str) -> None:
        repo = self.server_hub.repo(repo_id, repo_type)
        if repo is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        action = rest[0] if rest else "info"
        if method == "GET" and action in ("info", "revision"):
            return self._json(200, {"id": repo_id, "sha": repo.sha, "private": repo.private,
                                    "siblings": [{"rfilename": p} for p in sorted(repo.files)]})
        if method == "POST" and action == "preupload":
            files = json.loads(body)["files"]
            return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                               "oid": None} for f in files]})
        if method == "POST" and action == "commit":
            return self._commit(repo, repo_type, repo_id, body)
        if method == "GET" and action == "tree":
            prefix = "/".join(rest[2:])
            recursive = parse_qs(query).get("recursive", ["False"])[0].lower() == "true"
            return self._json(200, _tree(repo, prefix, recursive))
        return self._error(404, f"no route for {method} {action}")

    def _commit(self, repo: Repo, repo_type: str, repo_id: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        summary = next((ln["value"].get("summary", "") for ln in lines if ln["key"] == "header"), "")
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                repo.files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                repo.files.pop(value["path"], None)
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                for path in [p for p in repo.files if p.startswith(folder)]:
                    del repo.files[path]
            elif key != "header":
                return self._error(400, f"the fake hub does not take {key!r} operations")
        sha = repo.commit(summary)
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        self._json(200, {"commitUrl": f"{self.server_hub.url}/{prefix}{repo_id}/commit/{sha}", "commitOid": sha,
                         "pullRequestUrl": None})

    def _resolve(self, parts: list[str], head: bool) -> None:
        at = parts.index("resolve")
        repo_type = parts[0][:-1] if parts[0].rstrip("s") in ("dataset", "space") and at == 3 else "model"
        repo_id = "/".join(parts[at - 2:at])
        path = "/".join(parts[at + 2:])
        repo = self.server_hub.repo(repo_id, repo_type)
        if repo is None:
            return self._error(404, "Repository not found", "RepoNotFound", head=head)
        if path not in repo.files:
            return self._error(404, "Entry not found", "EntryNotFound", head=head)
        content = repo.files[path]
        self._send(200, content, {"ETag": f'"{git_oid(content)}"', "X-Repo-Commit": repo.sha,
                                  "Content-Type": "application/octet-stream"}, head=head)


def _tree(repo: Repo, prefix: str, recursive: bool) -> list[dict]:
    """The tree listing of `prefix` (files, and folders when not recursive), as the Hub's API gives it."""
    base = prefix.rstrip("/") + "/" if prefix else ""
    entries, folders = [], set()
    for path, content in sorted(repo.files.items()):
        if not path.startswith(base):
            continue
        rest = path[len(base):]
        if "/" in rest and not recursive:
            folders.add(base + rest.split("/")[0])
            continue
        entries.append({"type": "file", "path": path, "size": len(content), "oid": git_oid(content)})
    return [{"type": "directory", "path": f, "oid": "0" * 40} for f in sorted(folders)] + entries
