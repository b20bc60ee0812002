"""Guided demo, as a first-time visitor sees it: click → chat ready, timed in headless chromium.

    .venv/bin/python bench/bench_guided_demo.py                 # the bundled model; prints one JSON object
    .venv/bin/python bench/bench_guided_demo.py --model DIR     # another default model (e.g. a tiny test model)

Starts `python app.py` on a free port with fresh runs/exports/uploads folders, opens the page at 1366 px,
presses "Run the guided demo" and samples the page every half second until the banner says Step 4/4:

* step_s            — seconds from the click to each step's banner (data, train, evaluate, chat)
* click_to_chat_s   — click → the Chat tab selected with a held-out message typed in
* curve_points      — points of the drawn loss line (the svg path of #loss-plot) at each sample while the run
                      trains: the curve drawing live means this grows on the page that started the run
* curve_drew_live   — the points grew at least twice before training ended
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

# the points of every drawn line of the loss plot (vega's svg: one path per series)
LINE_POINTS_JS = """() => [...document.querySelectorAll('#loss-plot g.mark-line path')]
    .reduce((n, p) => n + ((p.getAttribute('d') || '').match(/[ML]/g) || []).length, 0)"""
BANNER_JS = "() => document.querySelector('#guide-status')?.innerText || ''"


def model_dir(given: str | None) -> Path:
    """The default model folder the app gets: `given`, else the bundled model's converted cache."""
    if given:
        return Path(given)
    from finetune_core.models.sources import ensure_bundled_cache

    return ensure_bundled_cache()


def watch_demo(page, timeout_s: float) -> dict:
    """Click the demo button and sample banner and curve until Step 4/4; the timings and samples."""
    start = time.perf_counter()
    page.locator("#guide-button").click()
    steps, points = {}, []
    while time.perf_counter() - start < timeout_s:
        banner, now = page.evaluate(BANNER_JS), round(time.perf_counter() - start, 1)
        for n in ("1", "2", "3", "4"):
            if f"Step {n}/4" in banner and n not in steps:
                steps[n] = now
        if "2" in steps and "3" not in steps:
            points.append((now, page.evaluate(LINE_POINTS_JS)))
        if "4" in steps:
            break
        if "demo stopped" in banner:
            raise SystemExit(f"the demo stopped: {banner}")
        time.sleep(0.5)
    else:
        raise SystemExit(f"no Step 4/4 within {timeout_s:.0f} s; steps seen: {steps}")
    page.wait_for_function("document.querySelector('#chat-input textarea').value.length > 10", timeout=30_000)
    chat_ready = round(time.perf_counter() - start, 1)
    counts = [n for _, n in points]
    growth = sum(1 for a, b in zip(counts, counts[1:]) if b > a)
    return {"step_s": steps, "click_to_chat_s": chat_ready, "curve_points": points,
            "curve_drew_live": growth >= 2, "final_curve_points": counts[-1] if counts else 0}


def main() -> None:
    """Run the demo once and print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="default model folder (default: the bundled model)")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright
    from test_browser import CHROME_ARGS, CHROMIUM, launch_app

    root = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    proc, url, log = launch_app(root, model_dir(args.model))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.goto(url)
            page.wait_for_selector("#guide-button")
            result = watch_demo(page, args.timeout)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"model": args.model or "bundled", **result}))


if __name__ == "__main__":
    main()
