"""Load on a public Space: visitors chatting while a run trains, with and without an abusive visitor.

    .venv/bin/python bench/bench_public_load.py                          # bundled model, 20 visitors
    .venv/bin/python bench/bench_public_load.py --tiny --visitors 3      # smoke test (seconds)

Launches the real app in this process (`app.build_app` + `launch_kwargs`) on a
free 127.0.0.1 port, starts one small LoRA run through `ctx.slot.start` and,
while it trains, measures two cases with gradio_client (loopback only):

* quiet: N visitors each send one chat message (chat_send + chat_stream, the
  events the page uses);
* stressed: the same, plus one visitor who keeps sending a 1 MB message, a
  200 KB system prompt with a short message, and a short message followed by
  a stream step carrying a 200 KB system prompt.

Reports, for the normal visitors, p50/p95 time to first token (from the send
to the first non-empty answer text) in each case and the stressed/quiet p95
ratio (goal: at most 2), how each oversized request was answered, and the
app's peak RSS (goal: under --rss-ceiling-gb). Every wait is bounded and the
whole run has a time cap (--time-cap-s): it stops by itself. Prints one JSON
object on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_startup import _free_port  # noqa: E402

GiB = 1024 ** 3
OVERSIZED_MESSAGE = "x" * 1_000_000  # the 1 MB prompt that once grew the app to 15.6 GB
OVERSIZED_SYSTEM = "Be brief. " * 20_000  # 200 KB: the system prompt that once held the GPU lane ~9 minutes


# -- the app ---------------------------------------------------------------------------------
def launch(model: str, workdir: Path):
    """The app as app.main() builds it, in this process, on a free loopback port."""
    os.environ.update({"STUDIO_RUNS_DIR": str(workdir / "runs"), "STUDIO_EXPORTS_DIR": str(workdir / "exports"),
                       "STUDIO_UPLOADS_DIR": str(workdir / "uploads"), "STUDIO_DEFAULT_MODEL": model,
                       "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"})
    import app
    from ui.context import AppContext

    ctx = AppContext()
    demo = app.build_app(ctx)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.launch_kwargs(ctx))
    return demo, ctx, f"http://127.0.0.1:{port}/"


def start_training(ctx, model: str, steps: int):
    """A small LoRA run on a bundled sample file, long enough to outlast the measurement."""
    from finetune_core.config import DataMapping, RunConfig, preset

    data = DataMapping(data_path=str(REPO / "sample_data" / "calc_chats.jsonl"))
    cfg = preset("Quick demo (CPU)", RunConfig(model=model, data=data))
    cfg = cfg.with_overrides({"max_steps": steps, "save_steps": 0, "batch_size": 4, "max_length": 128,
                              "logging_steps": 1})
    return ctx.slot.start(cfg, label="bench-load")


def wait_for_step(ctx, run, deadline: float) -> int:
    """Wait until the run has made a step (its model loaded, training under way) or ended."""
    while time.time() < deadline and ctx.slot.active() is not None:
        if (run.status().get("step") or 0) >= 1:
            break
        time.sleep(0.5)
    return int(run.status().get("step") or 0)


def watch_rss(stop: threading.Event, out: list[int]) -> None:
    import psutil

    proc = psutil.Process()
    while not stop.is_set():
        out.append(proc.memory_info().rss)
        stop.wait(0.25)


# -- visitors ---------------------------------------------------------------------------------
def _text(pane) -> str:
    """The last assistant text of a chatbot pane as gradio_client returns it."""
    if not pane or not isinstance(pane[-1], dict) or pane[-1].get("role") != "assistant":
        return ""
    content = pane[-1].get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def one_visitor(client, key: str, i: int, max_new_tokens: int, deadline: float) -> dict:
    """One chat turn; time to first token from the send. Never raises."""
    start = time.perf_counter()
    try:
        client.predict(f"Visitor {i}: what is {i} + {i + 1}?", key, False, api_name="/chat_send")
        job = client.submit(key, "", 0.7, 1.0, max_new_tokens, i, api_name="/chat_stream")
        first = None
        for output in job:
            if first is None and _text(output[0]):
                first = time.perf_counter() - start
            if time.time() > deadline:
                job.cancel()
                return {"ok": False, "error": "time cap reached"}
        job.result(timeout=max(1.0, deadline - time.time()))
        total = time.perf_counter() - start
        return {"ok": True, "ttft_s": first if first is not None else total, "total_s": total,
                "empty_answer": first is None}
    except Exception as exc:  # noqa: BLE001 - counted and reported
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]}


def _attempt(fn) -> dict:
    """Run one abusive request: refused (with its message) or, wrongly, accepted; and how long it took."""
    start = time.perf_counter()
    try:
        fn()
        outcome = {"refused": False, "message": ""}
    except Exception as exc:  # noqa: BLE001 - a gr.Error arrives as an exception
        outcome = {"refused": True, "message": str(exc)[:160]}
    return {**outcome, "seconds": round(time.perf_counter() - start, 3)}


def abusive_visitor(client, key: str, rounds: int, deadline: float) -> dict:
    """The stressed case's extra visitor: oversized message, oversized system prompt (at the
    send, and at the stream step after an admitted short send)."""
    tries: dict[str, list[dict]] = {"message_1mb": [], "system_200kb_at_send": [], "system_200kb_at_stream": []}
    for _ in range(rounds):
        if time.time() > deadline:
            break
        tries["message_1mb"].append(_attempt(lambda: client.predict(OVERSIZED_MESSAGE, key, False,
                                                                     api_name="/chat_send")))
        tries["system_200kb_at_send"].append(_attempt(lambda: client.predict(
            "hi", key, False, OVERSIZED_SYSTEM, api_name="/chat_send")))

        def send_then_big_stream():
            client.predict("hi", key, False, api_name="/chat_send")
            client.submit(key, OVERSIZED_SYSTEM, 0.7, 1.0, 8, 0, api_name="/chat_stream").result(
                timeout=max(1.0, deadline - time.time()))

        tries["system_200kb_at_stream"].append(_attempt(send_then_big_stream))
    return tries


def summarize_abuse(rounds: list[dict]) -> dict:
    """Per kind of oversized request, over all rounds: how many were refused, the slowest answer, the message."""
    kinds = {name: [x for r in rounds for x in r.get(name, [])] for name in (rounds[0] if rounds else {})}
    return {name: {"tries": len(t), "refused": sum(x["refused"] for x in t),
                   "max_seconds": max((x["seconds"] for x in t), default=0.0),
                   "message": next((x["message"] for x in t if x["refused"]), "")}
            for name, t in kinds.items()}


def _clients(url: str, n: int):
    from gradio_client import Client

    with ThreadPoolExecutor(min(n, 8)) as pool:
        return list(pool.map(lambda _i: Client(url, verbose=False), range(n)))


def run_case(url: str, key: str, visitors: int, max_new_tokens: int, deadline: float,
             abuse_rounds: int = 0) -> dict:
    """N visitors at once (plus the abusive one when abuse_rounds > 0): their raw results."""
    clients = _clients(url, visitors + (1 if abuse_rounds else 0))
    abuse = None
    started = time.perf_counter()
    with ThreadPoolExecutor(len(clients)) as pool:
        if abuse_rounds:
            abuse = pool.submit(abusive_visitor, clients[-1], key, abuse_rounds, deadline)
        futures = [pool.submit(one_visitor, clients[i], key, i, max_new_tokens, deadline) for i in range(visitors)]
        wait(futures + ([abuse] if abuse else []), timeout=max(1.0, deadline - time.time()) + 5)
    return {"results": [f.result() if f.done() else {"ok": False, "error": "time cap reached"} for f in futures],
            "abuse": abuse.result() if abuse is not None and abuse.done() else None,
            "wall_s": time.perf_counter() - started}


def summarize(cases: list[dict]) -> dict:
    """The normal visitors' figures over all rounds of one case."""
    results = [r for case in cases for r in case["results"]]
    ttft = sorted(r["ttft_s"] for r in results if r["ok"])
    out = {"turns": len(results), "answered": len(ttft), "wall_s": [round(c["wall_s"], 2) for c in cases],
           "ttft_s": _percentiles(ttft), "empty_answers": sum(r.get("empty_answer", False) for r in results),
           "errors": sorted({r["error"] for r in results if not r["ok"]})[:5]}
    abuse = [c["abuse"] for c in cases if c["abuse"] is not None]
    if abuse:
        out["abusive_visitor"] = summarize_abuse(abuse)
    return out


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return {"p50": round(statistics.median(values), 3), "p95": round(p95, 3), "max": round(values[-1], 3)}


# -- main ------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny random model instead of the bundled one")
    p.add_argument("--visitors", type=int, default=20, help="normal visitors chatting at once in each case")
    p.add_argument("--max-new-tokens", type=int, default=8, help="answer length of the normal visitors")
    p.add_argument("--abuse-rounds", type=int, default=2, help="rounds of oversized requests in each stressed case")
    p.add_argument("--rounds", type=int, default=1,
                   help="quiet and stressed cases measured this many times, alternating (drift in the machine's "
                        "load or the training run then affects both alike)")
    p.add_argument("--train-steps", type=int, default=100_000, help="the run is stopped at the end anyway")
    p.add_argument("--rss-ceiling-gb", type=float, default=6.0, help="goal: the app's peak RSS stays under this")
    p.add_argument("--time-cap-s", type=float, default=480.0, help="the whole run stops by itself after this")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.time()
    deadline = start + args.time_cap_s
    with tempfile.TemporaryDirectory(prefix="bench-public-load-") as tmp:
        model = "bundled"
        if args.tiny:
            from bench_train import tiny_model_dir

            model = tiny_model_dir()
        demo, ctx, url = launch(model, Path(tmp))
        rss: list[int] = []
        stop = threading.Event()
        threading.Thread(target=watch_rss, args=(stop, rss), daemon=True).start()
        key = f"base:{model}"
        try:
            result = measure(args, ctx, url, key, model, deadline, rss)
        finally:
            stop.set()
            ctx.slot.stop()
            ctx.slot.wait(timeout=120)
            demo.close()
    result.update(wall_s=round(time.time() - start, 1), date=time.strftime("%Y-%m-%d"))
    print(json.dumps(result), flush=True)
    os._exit(0)  # gradio_client leaves non-daemon threads behind: do not wait for them


def measure(args, ctx, url: str, key: str, model: str, deadline: float, rss: list[int]) -> dict:
    run = start_training(ctx, model, args.train_steps)
    step = wait_for_step(ctx, run, min(deadline, time.time() + 300))
    # One turn first: the model loads once, outside the measured cases.
    warm = run_case(url, key, 1, 2, deadline)
    idle_rss = max(rss or [0])
    quiet_rounds, stressed_rounds = [], []
    for _ in range(max(1, args.rounds)):
        quiet_rounds.append(run_case(url, key, args.visitors, args.max_new_tokens, deadline))
        stressed_rounds.append(run_case(url, key, args.visitors, args.max_new_tokens, deadline,
                                        abuse_rounds=args.abuse_rounds))
    quiet, stressed = summarize(quiet_rounds), summarize(stressed_rounds)
    peak = max(rss or [0])
    q, s = quiet["ttft_s"]["p95"], stressed["ttft_s"]["p95"]
    ratio = round(s / q, 2) if q and s else None
    return {
        "benchmark": "public_load", "model": "tiny" if args.tiny else "bundled", "visitors": args.visitors,
        "max_new_tokens": args.max_new_tokens, "training": {"run": run.id, "step_at_start": step,
                                                            "step_at_end": int(run.status().get("step") or 0)},
        "rounds": max(1, args.rounds), "warmup_answered": sum(r["ok"] for r in warm["results"]),
        "quiet": quiet, "stressed": stressed,
        "stressed_vs_quiet_p95": ratio, "goal_p95_within_2x": ratio is not None and ratio <= 2.0,
        "rss_gb": {"after_warmup": round(idle_rss / GiB, 2), "peak": round(peak / GiB, 2),
                   "ceiling": args.rss_ceiling_gb},
        "goal_rss_under_ceiling": peak / GiB < args.rss_ceiling_gb,
        "timed_out": time.time() > deadline,
    }


if __name__ == "__main__":
    main()
