"""Comparing runs: the overlaid loss curves, the metrics table (direction and best), the config diff with
only the differing fields, the Markdown and the stakeholder report's section, and the `compare` command."""
from __future__ import annotations

import json

import pytest

from evaluation.report import report
from evaluation.run_compare import comparison_markdown, config_diff, loss_curves, metrics_table
from finetune_core.__main__ import main
from finetune_core.errors import InputError
from sweep_support import fake_run


@pytest.fixture()
def two_runs(runs_root):
    slow = fake_run("lr small", losses=(2.0, 1.8), held=(1.9, 1.7), learning_rate=1e-4, lora_r=8,
                    evaluation={"rougeL": (0.30, True), "perplexity": (6.0, False)}, seconds=40)
    fast = fake_run("lr big", losses=(2.0, 1.2), held=(1.3, 1.5), learning_rate=2e-4, lora_r=8,
                    evaluation={"rougeL": (0.42, True), "perplexity": (5.0, False)}, seconds=20)
    return slow, fast


def test_loss_curves_hold_train_and_held_out_series_of_each_run(two_runs):
    curves = loss_curves(list(two_runs))
    assert list(curves.columns) == ["step", "loss", "series"]
    assert sorted(set(curves["series"])) == ["lr big held-out", "lr big train", "lr small held-out", "lr small train"]
    big_train = curves[curves["series"] == "lr big train"]
    assert list(big_train["step"]) == [1, 2] and list(big_train["loss"]) == [2.0, 1.2]
    assert str(curves["loss"].dtype) == "float64"  # numbers, not categories, for the plot


def test_metrics_table_names_the_best_run_by_each_metrics_direction(two_runs):
    table = metrics_table(list(two_runs)).set_index("metric")
    assert list(table.columns) == ["better", "lr small", "lr big", "best"]
    assert table.loc["state", "lr big"] == "completed"
    assert table.loc["final train loss", "lr big"] == 1.2 and table.loc["final train loss", "best"] == "lr big"
    assert table.loc["best held-out loss", "lr big"] == 1.3 and table.loc["last held-out loss", "lr big"] == 1.5
    assert table.loc["last held-out loss", "best"] == "lr big"  # 1.5 < 1.7: lower is better
    assert table.loc["held-out rougeL", "better"] == "higher" and table.loc["held-out rougeL", "best"] == "lr big"
    assert table.loc["held-out perplexity", "better"] == "lower" and table.loc["held-out perplexity", "best"] == "lr big"
    assert table.loc["wall time (s)", "lr small"] == pytest.approx(40, abs=1)
    assert table.loc["tokens/s (mean)", "lr small"] == 150.0
    assert table.loc["steps", "best"] == ""  # no direction: no best


def test_config_diff_shows_only_the_fields_that_differ(two_runs):
    diff = config_diff(list(two_runs))
    assert list(diff.columns) == ["field", "lr small", "lr big"]
    assert diff.to_dict("records") == [{"field": "learning_rate", "lr small": "0.0001", "lr big": "0.0002"}]


def test_runs_with_the_same_name_get_told_apart_and_limits_hold(runs_root):
    a, b = fake_run("same"), fake_run("same", lora_r=4)
    diff = config_diff([a, b])
    assert len(diff.columns) == 3 and diff.columns[1] != diff.columns[2]
    with pytest.raises(InputError, match="Compare 2 to 8 runs; got 1"):
        metrics_table([a, a])


def test_comparison_markdown_and_report_section(two_runs, tmp_path):
    slow, fast = two_runs
    fast.rename("lr big <script>")
    text = comparison_markdown([slow, fast])
    assert text.startswith("## Compared runs") and "| learning\\_rate | 0.0001 | 0.0002 |" in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    html_path, md_path = report(slow, tmp_path / "rep", compare_with=[fast])
    assert "## Compared runs" in md_path.read_text() and "held-out rougeL" in md_path.read_text()
    page = html_path.read_text()
    assert "<h2>Compared runs</h2>" in page and "<script>" not in page.split("<body>")[1]
    plain, _ = report(slow, tmp_path / "plain")
    assert "Compared runs" not in plain.read_text()  # only when asked for


def test_cli_compare_prints_tables_and_json(two_runs, capsys):
    slow, fast = two_runs
    assert main(["compare", slow.id, str(fast.path)]) == 0
    out = capsys.readouterr().out
    assert "final train loss" in out and "settings that differ" in out and "learning_rate" in out
    assert main(["compare", slow.id, fast.id, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in data["runs"]] == [slow.id, fast.id]
    assert data["config_diff"] == [{"field": "learning_rate", "lr small": "0.0001", "lr big": "0.0002"}]
    assert main(["compare", slow.id]) == 2 and "Compare 2 to 8 runs" in capsys.readouterr().err
    assert main(["compare", slow.id, "../etc"]) == 2
