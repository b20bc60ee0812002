"""One command line for every layer: `python -m finetune_core --help` lists inspect, train,
runs, chat, eval, export and report; `python -m evaluation` stays the `eval` command; the
core never imports the evaluation layer (only the program entry, finetune_core/__main__.py).

    .venv/bin/python -m pytest -q tests/test_cli.py
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_core import cli
from finetune_core.__main__ import main as program

REPO = Path(__file__).resolve().parent.parent
ALL = ("inspect", "train", "runs", "queue", "chat", "sync", "sweep", "eval", "export", "report", "compare", "benchmarks",
       "judge")


def test_help_lists_every_command_with_its_one_line_help():
    out = subprocess.run([sys.executable, "-m", "finetune_core", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # a command's line is indented 4; argparse puts the help of a long name ("benchmarks") on the next line
    listed = [(i, line.split()[0]) for i, line in enumerate(lines) if re.match(r"^ {4}\S", line)]
    assert tuple(name for _i, name in listed) == ALL
    for i, name in listed:
        helped = len(lines[i].split()) > 1 or (i + 1 < len(lines) and re.match(r"^ {5,}\S", lines[i + 1]))
        assert helped, f"{name} has no help"


@pytest.mark.parametrize("command, flag", [("inspect", "--map"), ("train", "--resume"), ("runs", "--help"),
                                           ("chat", "--prompt"), ("eval", "--batch-size"),
                                           ("export", "--adapter-zip"), ("report", "--out"),
                                           ("benchmarks", "--fewshot"), ("judge", "--prompts")])
def test_each_command_has_its_full_help(command, flag, capsys):
    with pytest.raises(SystemExit) as done:
        program([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m finetune_core {command}") and flag in out


def test_eval_help_names_the_extra_metrics(capsys):
    with pytest.raises(SystemExit):
        program(["eval", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--metrics METRICS extra metrics, comma separated, besides the task's defaults: bleu, chrf" in out


def test_bad_flags_exit_2_and_an_unknown_command_is_refused(capsys):
    for argv in (["export", "--run", "x"], ["nonsense"], []):
        with pytest.raises(SystemExit) as done:
            program(argv)
        assert done.value.code == 2
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


def test_python_m_evaluation_is_the_eval_command(tmp_path, capsys):
    from evaluation.__main__ import main as evaluation_main

    assert evaluation_main(["--run", str(tmp_path)]) == 2
    old = capsys.readouterr().err
    assert program(["eval", "--run", str(tmp_path)]) == 2
    assert capsys.readouterr().err == old and old.startswith("error: ") and "not a run directory" in old
    assert evaluation_main(["--run", str(tmp_path), "--limit", "x"]) == 2  # argparse's status, returned


def test_an_interrupted_command_exits_130(capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    commands = (*cli.COMMANDS, cli.Command("wait", "Wait.", lambda parser: None, interrupted))
    assert cli.main(["wait"], commands) == 130
    assert "interrupted" in capsys.readouterr().err


def test_inspect_keeps_its_flags_and_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text("".join(f'{{"prompt": "q{i}", "completion": "a{i}"}}\n' for i in range(12)), encoding="utf-8")
    assert program(["inspect", str(good), "--json"]) == 0
    assert '"usable": true' in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n", encoding="utf-8")
    assert program(["inspect", str(bad), "--map", "prompt=a", "--map", "completion=missing"]) == 2


# -- layers (the static check of every import is tests/test_layout.py) ------------------------------
def test_importing_the_core_command_line_loads_no_evaluation_module():
    code = ("import sys, finetune_core.cli, finetune_core.export.artifacts; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'evaluation'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
