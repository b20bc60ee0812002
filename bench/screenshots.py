"""Screenshots of every tab at 1366 px (a laptop) and 390 px (a phone), for people to look at.

    .venv/bin/python bench/screenshots.py                   # writes docs/screenshots/<tab>-<width>.png
    .venv/bin/python bench/screenshots.py --steps 60 --eval-rows 0 --out /tmp/shots

Starts `python app.py` with the bundled model (SmolLM2-135M-Instruct, converted once by
``ensure_bundled_cache``) in a temporary folder (runs, uploads and exports there), then, in headless
chromium, does what a visitor does: loads the Customer intents sample, trains a tiny run from the Train
tab (the "Quick demo (CPU)" preset cut to --steps steps), evaluates it on --eval-rows held-out rows and
sends one chat message. Then it saves each tab's viewport (the tab strip at the top) at both widths. The
PNGs are reduced to a 256-colour palette: small files, sharp text. The README's "Screenshots" section
shows the 1366 px ones; tests/test_browser_layout.py checks the same tabs for clipped text.
Needs Debian chromium and Playwright (`make test` installs both). Prints one JSON object: the files,
their sizes and the seconds each part took.
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
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the app launcher the browser tests use
TABS = {"data": "1 · Data", "train": "2 · Train", "evaluate": "3 · Evaluate", "chat": "4 · Chat",
        "export": "5 · Export"}
VIEWPORTS = {1366: 900, 390: 844}  # width: height (a laptop; a phone)
SAMPLE = "#sample-3"  # Customer intents (classification)
MESSAGE = "My parcel was due on Monday and it still has not arrived."
def open_tab(page, name: str) -> None:
    """Click a tab's button (in Gradio's "More tabs" menu when it was tucked there) and let it draw."""
    button = page.get_by_role("tab", name=name)
    if not (button.count() == 1 and button.is_visible()):
        page.locator(".overflow-menu > button").click()
        button = page.locator(".overflow-dropdown button", has_text=name)
    button.click()
    page.wait_for_timeout(1500)


def fill(page, selector: str, value: int) -> None:
    """Type a number into a Gradio number field and leave it, so its change is sent."""
    field = page.locator(selector)
    field.fill(str(value))
    field.press("Tab")


def prepare(page, steps: int, eval_rows: int) -> dict:
    """Load the sample, train, evaluate and chat, as a visitor would; seconds per part."""
    took, t = {}, time.perf_counter()
    page.locator(SAMPLE).click()
    page.wait_for_function("document.querySelector('#data-status').innerText.includes('Ready')")
    took["data_s"], t = round(time.perf_counter() - t, 1), time.perf_counter()
    print(f"training {steps} steps...", file=sys.stderr)
    open_tab(page, TABS["train"])
    page.get_by_text("Schedule and batching").click()
    fill(page, "#cfg-max_steps input", steps)
    page.locator("#train-button").click()
    page.wait_for_function("document.querySelector('#run-title').innerText.includes('completed')", timeout=1_800_000)
    took["train_s"], t = round(time.perf_counter() - t, 1), time.perf_counter()
    print(f"trained in {took['train_s']} s; evaluating {eval_rows or 'all'} rows...", file=sys.stderr)
    open_tab(page, TABS["evaluate"])
    page.locator("#eval-run").wait_for()
    page.locator(".label-wrap", has_text="Settings").click()
    rows = page.get_by_label("Rows to evaluate").first
    rows.fill(str(eval_rows))
    rows.press("Tab")
    page.locator("#eval-button").click()
    page.wait_for_function("document.querySelector('#eval-summary').innerText.toLowerCase().includes('accuracy')",
                           timeout=1_800_000)
    took["evaluate_s"], t = round(time.perf_counter() - t, 1), time.perf_counter()
    open_tab(page, TABS["chat"])
    page.locator("#chat-input textarea").fill(MESSAGE)
    page.locator("#chat-send").click()
    for pane in ("#chat-left", "#chat-right"):
        page.wait_for_function(f"document.querySelectorAll('{pane} [data-testid=bot]').length >= 1", timeout=600_000)
    # Both replies finished streaming: the "Generating..." line is gone.
    page.wait_for_function("!document.body.innerText.includes('Generating...')", timeout=600_000)
    took["chat_s"] = round(time.perf_counter() - t, 1)
    return took


def compress(path: Path) -> None:
    """A 256-colour palette PNG: a screenshot of flat UI colours loses nothing a reader sees."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def shoot(page, out: Path) -> list[str]:
    """Each tab at each width, the tab strip scrolled to the top of the viewport."""
    saved = []
    for width, height in VIEWPORTS.items():
        page.set_viewport_size({"width": width, "height": height})
        for tab, name in TABS.items():
            open_tab(page, name)
            page.locator(".tab-wrapper").evaluate("el => el.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)
            path = out / f"{tab}-{width}.png"
            page.screenshot(path=str(path))
            compress(path)
            saved.append(str(path.relative_to(REPO) if path.is_relative_to(REPO) else path))
    return saved


def main(argv: list[str] | None = None) -> int:
    """Start the app, prepare every tab, save the screenshots, stop the app; print a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    ap.add_argument("--steps", type=int, default=4, help="training steps of the run shown (default 4)")
    ap.add_argument("--eval-rows", type=int, default=12, help="held-out rows evaluated (0 = all 45)")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright
    from test_browser import CHROME_ARGS, CHROMIUM, launch_app

    from finetune_core.models.sources import ensure_bundled_cache

    model_dir = ensure_bundled_cache(lambda message: print(message, file=sys.stderr))
    args.out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="studio-shots-"))
    # the default model named "bundled", as a Space shows it (the folder only satisfies the launcher)
    proc, url, log = launch_app(root, model_dir, STUDIO_DEFAULT_MODEL="bundled")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
            page = browser.new_page(viewport={"width": 1366, "height": VIEWPORTS[1366]})
            page.set_default_timeout(120_000)
            page.goto(url)
            page.wait_for_selector("#data-upload")
            took = prepare(page, args.steps, args.eval_rows)
            saved = shoot(page, args.out)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    tracebacks = (root / "app.log").read_text().count("Traceback")
    shutil.rmtree(root, ignore_errors=True)
    sizes = {f: (REPO / f if not Path(f).is_absolute() else Path(f)).stat().st_size for f in saved}
    print(json.dumps({"files": sizes, "total_kb": round(sum(sizes.values()) / 1024), "seconds": took,
                      "app_log_tracebacks": tracebacks}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
