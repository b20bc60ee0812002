"""Load: concurrent gradio_client users chatting with the launched app (loopback only).

    .venv/bin/python bench/load_chat.py --clients 20              # bundled model
    .venv/bin/python bench/load_chat.py --clients 4 --tiny        # smoke test

Starts `python app.py` on a free 127.0.0.1 port, then N clients at once each
send one chat message through the app's API (chat_send + chat_stream, the same
events the page uses). Every request is bounded in time; the script stops by
itself. Prints one JSON object: answered / errors, latency percentiles, the
app's peak RSS while under load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from bench_startup import _free_port  # noqa: E402


def start_app(env: dict, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**env, "GRADIO_SERVER_NAME": "127.0.0.1",
                                                           "GRADIO_SERVER_PORT": str(port)})
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the app did not start")


def one_user(url: str, key: str, i: int, max_new_tokens: int, timeout: float) -> dict:
    from gradio_client import Client

    start = time.perf_counter()
    try:
        client = Client(url, verbose=False)
        client.predict(f"User {i}: name one colour of the sky.", key, False, api_name="/chat_send")
        job = client.submit(key, "", 0.0, 1.0, max_new_tokens, 0, api_name="/chat_stream")
        left, right, *_ = job.result(timeout=timeout)
        answered = bool(left) and len(left) >= 2
        return {"ok": answered, "seconds": time.perf_counter() - start,
                "error": None if answered else "empty answer"}
    except Exception as exc:  # noqa: BLE001 - counted and reported
        return {"ok": False, "seconds": time.perf_counter() - start, "error": f"{type(exc).__name__}: {exc}"[:200]}


def watch_rss(pid: int, stop: threading.Event, out: list) -> None:
    import psutil

    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            out.append(proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True)))
        except psutil.Error:
            break
        stop.wait(0.5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--timeout", type=float, default=600, help="per request, seconds")
    p.add_argument("--tiny", action="store_true", help="tiny random model instead of the bundled one")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "STUDIO_RUNS_DIR": f"{tmp}/runs", "STUDIO_EXPORTS_DIR": f"{tmp}/exports",
               "STUDIO_UPLOADS_DIR": f"{tmp}/uploads", "HF_HUB_OFFLINE": "1"}
        model = "bundled"
        if args.tiny:
            from bench_train import tiny_model_dir

            model = tiny_model_dir()
            env["STUDIO_DEFAULT_MODEL"] = model
        port = _free_port()
        proc = start_app(env, port)
        url, key = f"http://127.0.0.1:{port}/", f"base:{model}"
        rss: list[int] = []
        stop = threading.Event()
        threading.Thread(target=watch_rss, args=(proc.pid, stop, rss), daemon=True).start()
        idle_rss = None
        time.sleep(1.0)
        idle_rss = rss[-1] if rss else None
        start = time.perf_counter()
        try:
            with ThreadPoolExecutor(args.clients) as pool:
                results = list(pool.map(lambda i: one_user(url, key, i, args.max_new_tokens, args.timeout),
                                        range(args.clients)))
        finally:
            stop.set()
            proc.terminate()
            proc.wait(30)
        wall = time.perf_counter() - start
    secs = sorted(r["seconds"] for r in results)
    print(json.dumps({
        "benchmark": "chat_load", "clients": args.clients, "model": "tiny" if args.tiny else "bundled",
        "max_new_tokens": args.max_new_tokens, "answered": sum(r["ok"] for r in results),
        "errors": [r["error"] for r in results if not r["ok"]], "wall_s": round(wall, 2),
        "latency_s": {"min": round(secs[0], 2), "median": round(statistics.median(secs), 2),
                      "p95": round(secs[int(0.95 * (len(secs) - 1))], 2), "max": round(secs[-1], 2)},
        "rss_mb": {"idle": round((idle_rss or 0) / 2**20, 1), "peak": round(max(rss or [0]) / 2**20, 1)},
        "date": time.strftime("%Y-%m-%d"),
    }))


if __name__ == "__main__":
    main()
