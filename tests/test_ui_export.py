"""Export tab handlers, called as plain functions: downloads land only in the exports dir."""
from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import pytest

TOKEN = "hf_" + "S3cr3tT0kenValue0123456789abcdef"


@pytest.fixture()
def tab(trained_run, runs_root, tmp_path, monkeypatch):
    """An AppContext with private exports, and a copy of the trained run in a private runs root."""
    from ui.context import AppContext

    monkeypatch.delenv("STUDIO_REQUIRE_LOGIN", raising=False)
    monkeypatch.delenv("APP_AUTH", raising=False)
    shutil.copytree(trained_run.path, runs_root / trained_run.id)
    ctx = AppContext()
    ctx.settings.exports_dir = tmp_path / "exports"
    return ctx, trained_run.id


def _served(ctx, paths: list[str]) -> list[Path]:
    """Every download sits in its own server-made folder directly under the exports dir."""
    files = [Path(p) for p in paths]
    for f in files:
        assert f.is_file() and f.parent.parent == ctx.settings.exports_dir
        assert re.fullmatch(r"[A-Za-z0-9_-]{20,}", f.parent.name)
    return files


def test_tab_downloads_land_in_the_exports_dir(tab):
    from ui import export_tab

    ctx, run_id = tab
    (zip_path,) = _served(ctx, export_tab.download_adapter(ctx, run_id))
    assert zipfile.is_zipfile(zip_path) and zip_path.name == f"{run_id}-adapter.zip"
    files = _served(ctx, export_tab.download_report(ctx, run_id))
    assert [f.name for f in files] == ["loss_curve.png", "report.html", "report.md"]
    assert files[0].parent != zip_path.parent  # a fresh folder per download
    paths, merged_parity = export_tab.download_merged(ctx, run_id)
    (merged_zip,) = _served(ctx, paths)
    with zipfile.ZipFile(merged_zip) as zf:
        assert {f"{run_id}-merged/config.json", f"{run_id}-merged/model.safetensors"} <= set(zf.namelist())
    # the merged folder was checked before it was zipped: it answers the held-out prompts as the app does
    assert merged_parity.target == "merged" and merged_parity.passed(), merged_parity.verdict()
    paths, q8_parity = export_tab.download_gguf(ctx, run_id, "q8_0", parity_prompts=0)
    gguf_file, modelfile = _served(ctx, paths)
    assert gguf_file.name == f"{run_id}-q8_0.gguf" and gguf_file.read_bytes()[:4] == b"GGUF"
    assert modelfile.name == f"{run_id}-q8_0.Modelfile" and f"FROM ./{gguf_file.name}" in modelfile.read_text()
    assert q8_parity.verdict() == "parity (q8_0) not checked: skipped (0 prompts asked for)"
    paths, gguf_parity = export_tab.download_gguf(ctx, run_id, "f16")
    assert gguf_parity.target == "gguf-f16" and (gguf_parity.passed() or "not installed" in gguf_parity.reason)
    serving, recorded = export_tab.run_views(run_id, "q8_0")
    assert f"ollama create {run_id} -f {run_id}-q8_0.Modelfile" in serving and "vllm serve" in serving
    assert f"merged: {merged_parity.verdict()}" in recorded and f"gguf-f16: {gguf_parity.verdict()}" in recorded


def test_tab_refuses_bad_ids_and_missing_login(tab, monkeypatch):
    import gradio as gr

    from ui import export_tab

    ctx, run_id = tab
    for bad in ("../../etc", "/etc/passwd", "", None):
        with pytest.raises(gr.Error) as err:
            export_tab.download_report(ctx, bad)
        assert "etc" not in str(err.value)
    monkeypatch.setenv("STUDIO_REQUIRE_LOGIN", "1")
    for handler in (export_tab.download_adapter, export_tab.download_merged, export_tab.download_gguf,
                    export_tab.download_report):
        with pytest.raises(gr.Error, match="log in"):
            handler(ctx, run_id)
    with pytest.raises(gr.Error, match="log in"):
        export_tab.push(ctx, run_id, "me/model", TOKEN)
    assert not ctx.settings.exports_dir.exists()


def test_tab_push_explains_offline_and_bad_repo_ids(tab, monkeypatch):
    import gradio as gr

    from ui import export_tab

    ctx, run_id = tab
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(gr.Error, match="offline") as err:
        export_tab.push(ctx, run_id, "me/model", TOKEN)
    assert TOKEN not in str(err.value)
    with pytest.raises(gr.Error, match="repo id"):
        export_tab.push(ctx, run_id, "<img src=x>/y", TOKEN)
    assert "offline" in export_tab.hub_note()


def test_tab_builds_and_names_its_endpoints(tab):
    import gradio as gr

    from ui import export_tab
    from ui_support import shared_for

    ctx, run_id = tab
    with gr.Blocks() as demo:
        export_tab.build(ctx, shared_for(demo))
    ids = {c.get("props", {}).get("elem_id") for c in demo.config["components"]}
    assert {"export-parity", "export-serving", "export-files"} <= ids
    names = {dep.get("api_name") for dep in demo.config["dependencies"]}
    assert {"export_adapter", "export_merged", "export_gguf", "export_report", "export_push"} <= names
    lanes = {fn.api_name: (fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values()}
    for name in ("export_merged", "export_gguf", "export_push"):  # they load the model: one at a time
        assert lanes[name] == ("gpu", 1)
    assert export_tab.runs_dropdown(run_id).value == run_id


def test_tab_shows_the_parity_verdict_of_each_export(tab, monkeypatch):
    """The GGUF and merged handlers hand back the verdict the tab shows; a check that crashes keeps the file."""
    import finetune_core.export.parity as parity
    from ui import export_tab, export_views

    ctx, run_id = tab
    monkeypatch.setattr(parity, "llama_cpp_available", lambda: False)
    paths, result = export_tab.download_gguf(ctx, run_id, "f16")
    assert len(_served(ctx, paths)) == 2 and not result.checked
    shown = export_views.parity_panel(None, result)
    assert "parity not checked: llama.cpp is not installed here" in shown and "make llamacpp" in shown
    paths, result = export_tab.download_merged(ctx, run_id, parity_prompts=0)
    assert result.verdict() == "parity not checked: skipped (0 prompts asked for)"

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(export_views, "check_export", broken)
    paths, result = export_tab.download_gguf(ctx, run_id, "f16")
    assert len(_served(ctx, paths)) == 2 and "the check failed" in result.verdict()
    assert export_tab.run_views(None) == ("", "") and export_tab.run_views("../../etc") == ("", "")
