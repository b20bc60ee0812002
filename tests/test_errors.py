"""One error type for what a user can fix: the page, the run log and the command line tell it from a bug.

A StudioError reaches the page (gr.Error) and the terminal (``error: ...``, exit 2)
as its own message; anything else is a bug: "Internal error" on the page with
its traceback in the app log (and in the run's log.txt when a run crashed).
Issues found in a data file read the same everywhere.
"""
from __future__ import annotations

import inspect
import logging
import threading

import gradio as gr
import pytest

from finetune_core.config import RunConfig
from finetune_core.data.records import Issue
from finetune_core.errors import InputError, StudioError, run_cli
from finetune_core.export.artifacts import ExportError
from finetune_core.runs.store import RunError, create_run
from ui.errors import page_error, shows_errors

TOKEN = "hf_" + "N0tARealT0kenButLongEnough123456"


@pytest.fixture()
def run_with_adapter(runs_root):
    """A run that looks trained (an adapter config on disk), without training one."""
    run = create_run(RunConfig.from_dict({"data_path": "toy.jsonl"}))
    run.adapter_dir.mkdir(parents=True, exist_ok=True)
    (run.adapter_dir / "adapter_config.json").write_text("{}", encoding="utf-8")
    return run


@pytest.fixture()
def export_ctx(run_with_adapter, tmp_path, monkeypatch):
    from ui.context import AppContext

    monkeypatch.delenv("STUDIO_REQUIRE_LOGIN", raising=False)
    monkeypatch.delenv("APP_AUTH", raising=False)
    ctx = AppContext()
    ctx.settings.exports_dir = tmp_path / "exports"
    return ctx


def _errors(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- the classes ---------------------------------------------------------------------------------
def test_every_user_error_class_is_a_studio_error_and_keeps_its_old_base():
    from finetune_core.config import ConfigError
    from finetune_core.export.gguf import GGUFExportError
    from finetune_core.limits import LimitError
    from finetune_core.models.memory import WontFit
    from finetune_core.models.sources import ModelError
    from finetune_core.runs.ownership import AccessError
    from finetune_core.training.runner import Busy
    from finetune_core.training.train import TrainingError

    for cls in (ConfigError, LimitError, ModelError, WontFit, RunError, AccessError, Busy, TrainingError,
                ExportError, GGUFExportError, InputError):
        assert issubclass(cls, StudioError), cls
    # callers that caught ValueError / PermissionError before keep working
    for cls in (ConfigError, LimitError, ExportError, GGUFExportError, InputError):
        assert issubclass(cls, ValueError), cls
    assert issubclass(AccessError, PermissionError)


def test_user_mistakes_in_the_core_raise_studio_errors():
    from finetune_core.data.samples import sample_mapping
    from finetune_core.inference import chat
    from finetune_core.inference.chat_limits import check_chat_request

    with pytest.raises(StudioError, match="Type a message first"):
        chat.start_turn(chat.ChatSession(), "   ")
    with pytest.raises(StudioError, match="Unknown vote"):
        chat.record_vote(chat.ChatSession(), "maybe")
    with pytest.raises(StudioError, match="whole number"):
        check_chat_request("hi", "", "lots")
    with pytest.raises(StudioError, match="unknown sample 'nope'"):
        sample_mapping("nope")


# -- the UI edge ---------------------------------------------------------------------------------
def test_shows_errors_keeps_what_gradio_reads_and_sorts_user_errors_from_bugs(caplog):
    @shows_errors
    def handler(value: str, request: gr.Request = None):
        if value == "user":
            raise InputError("Pick a run first.")
        if value == "page":
            raise gr.Error("Already a page message.")
        raise KeyError("internal_key")  # a KeyError in the code is a bug, not the user's doing

    @shows_errors
    def streaming(value: str):
        yield "first"
        handler(value)

    assert list(inspect.signature(handler).parameters) == ["value", "request"]
    assert inspect.isgeneratorfunction(streaming) and not inspect.isgeneratorfunction(handler)
    with pytest.raises(gr.Error) as user:
        handler("user")
    assert user.value.message == "Pick a run first."
    with pytest.raises(gr.Error) as page:
        handler("page")
    assert page.value.message == "Already a page message."
    assert not _errors(caplog)  # a user's mistake is not logged as an error
    stream = streaming("bug")
    assert next(stream) == "first"
    with pytest.raises(gr.Error) as bug:
        next(stream)
    assert bug.value.message.startswith("Internal error: KeyError: 'internal_key'. The details are in the app log (")
    assert "Traceback" in caplog.text and "internal_key" in caplog.text and "in handler" in caplog.text


def test_a_user_message_is_one_log_line_and_a_bug_keeps_its_traceback(caplog):
    """Gradio prints the traceback of every gr.Error whose print_exception is set: the wrapper
    clears it for user messages (logged as one line instead) and for the internal-error
    message (whose real traceback is logged once, by the wrapper)."""
    @shows_errors
    def handler(value: str):
        if value == "user":
            raise InputError("Pick a run first.")
        if value == "page":
            raise gr.Error("Load a sample or\nupload a file first.")
        raise KeyError("internal_key")

    caplog.set_level(logging.INFO, logger="ui.errors")
    for value, shown in (("user", "Pick a run first."), ("page", "Load a sample or upload a file first.")):
        caplog.clear()
        with pytest.raises(gr.Error) as info:
            handler(value)
        assert info.value.print_exception is False  # Gradio's queue prints no traceback for it
        (record,) = caplog.records
        assert record.levelno == logging.WARNING and record.exc_info is None
        assert record.getMessage().endswith(f"handler: {shown}")  # names the handler; one line
        assert caplog.text.count("\n") == 1 and "Traceback" not in caplog.text
    caplog.clear()
    with pytest.raises(gr.Error) as bug:
        handler("bug")
    assert bug.value.print_exception is False  # logged once below, not again by Gradio
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "Traceback" in caplog.text and "internal_key" in caplog.text


def test_a_user_message_passed_through_two_wrappers_is_logged_once(caplog):
    @shows_errors
    def inner():
        raise InputError("That run is gone.")

    @shows_errors
    def outer():
        inner()

    caplog.set_level(logging.INFO, logger="ui.errors")
    with pytest.raises(gr.Error):
        outer()
    assert len(caplog.records) == 1 and "That run is gone." in caplog.text


def test_tab_handler_shows_a_core_user_error_as_it_is(export_ctx, run_with_adapter, monkeypatch, caplog):
    from ui import export_tab

    def refuse(run, target, **_kw):
        raise ExportError(f"Run {run.id} has no tokenizer saved: train it again.")

    monkeypatch.setattr(export_tab.export, "adapter_zip", refuse)
    with pytest.raises(gr.Error) as info:
        export_tab.download_adapter(export_ctx, run_with_adapter.id)
    assert info.value.message == f"Run {run_with_adapter.id} has no tokenizer saved: train it again."
    assert not _errors(caplog)
    assert not any(export_ctx.settings.exports_dir.iterdir())  # the half-made folder is gone


def test_tab_handler_shows_a_bug_as_internal_error_and_logs_its_traceback(export_ctx, run_with_adapter,
                                                                          monkeypatch, caplog):
    from ui import export_tab

    def broken(run, target, **_kw):
        raise ValueError("zip member name is None")  # a plain ValueError: a bug, not the user's input

    monkeypatch.setattr(export_tab.export, "adapter_zip", broken)
    with pytest.raises(gr.Error) as info:
        export_tab.download_adapter(export_ctx, run_with_adapter.id)
    assert info.value.message.startswith("Internal error: ValueError: zip member name is None. "
                                         "The details are in the app log (")
    (record,) = _errors(caplog)
    assert record.exc_info is not None and "in broken" in caplog.text
    assert not any(export_ctx.settings.exports_dir.iterdir())


def test_a_bug_during_a_push_never_puts_the_token_in_the_log_or_on_the_page(export_ctx, run_with_adapter,
                                                                            monkeypatch, caplog):
    from ui import export_tab

    def broken(run, repo_id, token, **_kw):
        raise RuntimeError(f"could not stage the upload for {token}")

    monkeypatch.setattr(export_tab.export, "push_to_hub", broken)
    with pytest.raises(gr.Error) as info:
        export_tab.push(export_ctx, run_with_adapter.id, "me/model", TOKEN)
    assert info.value.message.startswith("Internal error: RuntimeError: could not stage the upload for ***")
    assert "Traceback" in caplog.text and "in broken" in caplog.text
    assert TOKEN not in caplog.text and TOKEN not in info.value.message


def test_a_bug_while_streaming_a_chat_reply_is_an_internal_error_after_the_rollback(runs_root, caplog):
    from finetune_core.inference import chat
    from ui import chat_tab
    from ui.context import AppContext

    class BrokenModels:
        def get(self, key, progress=None):
            raise RuntimeError("cuda context lost")

        def counter(self, key, progress=None):
            return None

    ctx = AppContext(models=BrokenModels())
    ctx.settings.default_model = "x/y"
    session, *_ = chat_tab.begin_send(ctx, None, "hi", "base:x/y", False)
    stream = chat_tab.stream_reply(ctx, session, "hi", "base:x/y", "", 0.0, 1.0, 8, 0)
    outputs = []
    with pytest.raises(gr.Error) as info:
        for out in stream:
            outputs.append(out)
    assert info.value.message.startswith("Internal error: RuntimeError: cuda context lost. The details")
    assert outputs[-1][:2] == ([], []) and chat.panes(session) == ([], [])  # the turn was taken down first
    assert "cuda context lost" in caplog.text and "Traceback" in caplog.text


def test_page_error_passes_page_messages_and_user_errors_through():
    assert page_error(RunError("That run is gone.")).message == "That run is gone."
    error = gr.Error("As written.")
    assert page_error(error) is error


# -- a run that crashes ----------------------------------------------------------------------------
def _crash_with(monkeypatch, exc: BaseException):
    from finetune_core.training import train

    def execute(run, stop_event, emit, resume=False, extra_callbacks=None, policy=None):
        raise exc

    monkeypatch.setattr(train, "execute", execute)


def test_a_run_that_crashes_on_a_bug_has_the_traceback_in_its_log(runs_root, monkeypatch, caplog):
    from finetune_core.training.runner import run_job

    _crash_with(monkeypatch, RuntimeError("tensor shapes do not match"))
    run = create_run(RunConfig.from_dict({"data_path": "toy.jsonl"}))
    final = run_job(run, threading.Event())
    assert final["state"] == "failed" and "tensor shapes do not match" in final["reason"]
    log = run.log_path.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in log and "in execute" in log
    assert log.index("Traceback") < log.index("FAILED: RuntimeError: tensor shapes do not match")
    assert "in execute" in caplog.text  # the app's log has it too


def test_a_run_refused_for_a_user_reason_logs_the_reason_without_a_traceback(runs_root, monkeypatch, caplog):
    from finetune_core.training.runner import run_job
    from finetune_core.training.train import TrainingError

    _crash_with(monkeypatch, TrainingError("QLoRA needs a CUDA GPU."))
    run = create_run(RunConfig.from_dict({"data_path": "toy.jsonl"}))
    final = run_job(run, threading.Event())
    assert final["state"] == "failed" and final["reason"] == "QLoRA needs a CUDA GPU."
    log = run.log_path.read_text(encoding="utf-8")
    assert "FAILED: QLoRA needs a CUDA GPU." in log and "Traceback" not in log
    assert not _errors(caplog)


# -- issues as text --------------------------------------------------------------------------------
def test_issue_text_for_a_row_and_for_the_whole_file():
    """Plain words: "row 57, column 'text': ...", and a problem of the whole file is its own sentence
    (the page once said "Not usable: file: the file is empty")."""
    assert Issue(57, "text", "the value is empty").text() == "row 57, column 'text': the value is empty"
    assert Issue(3, None, "invalid JSON on line 3").text() == "row 3: invalid JSON on line 3"
    assert Issue(None, None, "no usable rows").text() == "no usable rows"
    assert Issue(None, "label", "column 'label' mixes types").text() == "column 'label' mixes types"
    assert Issue(None, "label", "mixes types").text() == "column 'label': mixes types"
    # rows count from 1: row 0 names no row, so it reads as the file, like None
    assert Issue(0, None, "the file is empty").text() == "the file is empty"
    assert Issue(0, None, "x").file_wide and not Issue(1, None, "x").file_wide


def test_every_place_that_shows_issues_agrees(tmp_path, capsys):
    from finetune_core.data.dataset import inspect_main, prepare_data
    from finetune_core.data.mapping import DataMapping
    from ui.data_views import issue_lines, issues_frame

    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "q1", "completion": "a1"}\n{"prompt": "", "completion": "a2"}\n', encoding="utf-8")
    report = prepare_data(DataMapping(data_path=str(path), drop_bad_rows=False))
    (issue,) = [i for i in report.issues if not i.file_wide]
    assert issue.text().startswith("row 2, column 'prompt': ")
    assert issue_lines(report.issues).startswith(issue.text())
    inspect_main([str(path)])  # the command line's list of issues
    assert f"  {issue.text()}" in capsys.readouterr().out
    frame = issues_frame([Issue(0, None, "a"), Issue(None, None, "b"), Issue(4, "c", "d")], [Issue(0, None, "e")])
    assert list(frame["row"]) == ["file", "file", "4", "eval file"]


# -- command lines ---------------------------------------------------------------------------------
def test_run_cli_reports_a_studio_error_and_lets_a_bug_raise(capsys):
    def refuse() -> int:
        raise RunError("runs/x is not a run directory (no run.yaml).")

    assert run_cli(refuse) == 2
    assert capsys.readouterr().err == "error: runs/x is not a run directory (no run.yaml).\n"

    def bug() -> int:
        raise ValueError("an internal invariant broke")

    with pytest.raises(ValueError, match="internal invariant"):
        run_cli(bug)  # Python prints the traceback


def test_the_command_lines_exit_2_with_error_for_user_errors(tmp_path, runs_root, capsys, monkeypatch):
    from evaluation.__main__ import main as evaluation_main
    from finetune_core import cli
    from finetune_core.__main__ import main as program

    not_a_run = str(tmp_path / "nothing-here")
    for argv in (["train", "--resume", not_a_run], ["chat", "--run", not_a_run, "--prompt", "hi"],
                 ["train", "--set", "lora_r=lots"]):
        assert cli.main(argv) == 2, argv
        assert capsys.readouterr().err.startswith("error: "), argv
    assert program(["export", "--run", not_a_run, "--adapter-zip", str(tmp_path / "a.zip")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {not_a_run} is not a run directory")
    assert evaluation_main(["--run", not_a_run]) == 2
    assert "error: " in capsys.readouterr().err

    def broken():
        raise RuntimeError("the runs folder listing broke")

    monkeypatch.setattr("finetune_core.runs.store.list_runs", broken)
    with pytest.raises(RuntimeError, match="listing broke"):
        cli.main(["runs"])


def test_the_internal_error_names_the_log_file_when_there_is_one(tmp_path):
    from ui.errors import internal_error, log

    handler = logging.FileHandler(tmp_path / "studio.log")
    log.addHandler(handler)
    try:
        message = internal_error(RuntimeError("boom")).message
    finally:
        log.removeHandler(handler)
        handler.close()
    assert message.endswith(f"The details are in the app log ({tmp_path / 'studio.log'}).")
    assert "RuntimeError: boom" in (tmp_path / "studio.log").read_text(encoding="utf-8")
