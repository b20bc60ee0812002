"""evaluation.compare and evaluation.plots on small paired cases."""
from __future__ import annotations

import json

import pytest

from evaluation.compare import Comparison, compare
from evaluation.plots import confusion_heatmap, delta_chart

LABELS = ["joy", "sadness", "anger"]


@pytest.fixture()
def generation() -> Comparison:
    return compare(
        "generation",
        inputs=["q0", "q1", "q2", "q3"],
        references=["a b e f", "x y", "same", "p q"],
        base_outputs=["a b e f", "x y", "same", ""],   # scores 1, 1, 1, 0
        tuned_outputs=["a b c d", "", "same", "p q"],  # scores .5, 0, 1, 1
    )


@pytest.fixture()
def classification() -> Comparison:
    return compare(
        "classification",
        inputs=["i0", "i1", "i2", "i3"],
        references=["joy", "sadness", "joy", "anger"],
        base_outputs=["JOY!", "I feel sad", "", "joy"],
        tuned_outputs=["joy", "sadness", "anger", "anger, maybe joy"],
        labels=LABELS,
    )


def test_examples_sorted_by_delta_with_counts(generation):
    ex = generation.examples
    per_row = [f"{side}:{m}" for m in ("rouge1", "rouge2", "rougeL", "rougeLsum", "exact_match")
               for side in ("base", "tuned")]
    assert list(ex.columns) == ["input", "reference", "base_output", "tuned_output",
                                "base_score", "tuned_score", "delta", *per_row]
    assert list(ex["base:rougeL"]) == list(ex["base_score"])  # the headline is rougeL's own row score
    assert list(ex["tuned:exact_match"]) == [1.0, 1.0, 0.0, 0.0]
    assert list(ex["delta"]) == pytest.approx([1.0, 0.0, -0.5, -1.0])
    assert list(ex.index) == [3, 2, 0, 1]  # positions in the held-out split
    assert (generation.wins, generation.ties, generation.losses) == (1, 1, 2)
    assert generation.rows == 4 and generation.confusion is None


def test_biggest_wins_and_losses(generation):
    assert list(generation.biggest_wins()["input"]) == ["q3"]
    assert list(generation.biggest_losses()["input"]) == ["q1", "q0"]
    assert list(generation.biggest_losses(1)["input"]) == ["q1"]


def test_summary_and_metrics(generation):
    rows = {entry["metric"]: entry for entry in generation.summary}
    assert list(rows) == ["rouge1", "rouge2", "rougeL", "rougeLsum", "exact_match"]
    assert rows["rougeL"]["base"] == pytest.approx(0.75)
    assert rows["rougeL"]["tuned"] == pytest.approx(2.5 / 4)
    assert rows["rougeL"]["delta"] == pytest.approx(-0.125)
    assert rows["exact_match"]["base"] == pytest.approx(0.75)
    assert generation.base_metrics["rougeL"] == rows["rougeL"]["base"]


def test_classification_comparison(classification):
    assert classification.base_metrics["accuracy"] == pytest.approx(0.25)
    assert classification.tuned_metrics["accuracy"] == pytest.approx(0.75)
    assert (classification.wins, classification.ties, classification.losses) == (2, 2, 0)
    assert classification.confusion == {
        "labels": LABELS,
        "columns": LABELS + ["none"],
        "base": [[1, 0, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0]],
        "tuned": [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 1, 0]],
    }
    metrics = [entry["metric"] for entry in classification.summary]
    assert metrics == ["accuracy", "exact_match", "accuracy/joy", "accuracy/sadness", "accuracy/anger"]


def test_empty_and_missing_outputs_score_zero():
    c = compare("generation", ["q", "r"], ["a", "b"], ["", None], ["a", "   "])
    assert sorted(c.examples["base_score"]) == [0.0, 0.0]
    assert sorted(c.examples["tuned_score"]) == [0.0, 1.0]
    assert c.examples.loc[1, "base_output"] == ""


def test_json_dict_has_required_keys(classification):
    data = json.loads(json.dumps(classification.to_json_dict()))
    assert data["rows"] == 4 and data["task"] == "classification"
    assert data["base"]["accuracy"] == pytest.approx(0.25)
    assert data["tuned"]["accuracy"] == pytest.approx(0.75)
    assert (data["wins"], data["ties"], data["losses"]) == (2, 2, 0)
    first = data["summary"][0]
    assert {k: first[k] for k in ("metric", "base", "tuned", "delta", "higher_is_better")} == {
        "metric": "accuracy", "base": 0.25, "tuned": 0.75, "delta": 0.5, "higher_is_better": True}
    assert first["interval"]["estimate"] == 0.5 and first["interval"]["n"] == 4
    assert first["verdict_text"].startswith("not distinguishable from no change on 4 rows")
    assert data["metrics_used"] == ["accuracy", "exact_match"]


@pytest.mark.parametrize("which", ["generation", "classification"])
def test_save_load_round_trip(which, request, tmp_path):
    original = request.getfixturevalue(which)
    folder = original.save(tmp_path / "eval")
    assert sorted(p.name for p in folder.iterdir()) == ["examples.csv", "results.json"]
    loaded = Comparison.load(folder)
    assert loaded.to_json_dict() == original.to_json_dict()
    assert loaded.examples.equals(original.examples)
    assert loaded.examples.loc[0, "input"] in ("q0", "i0")


def test_load_keeps_numeric_looking_text_as_text(tmp_path):
    c = compare("generation", ["2+2"], ["4"], ["4"], [""])
    loaded = Comparison.load(c.save(tmp_path))
    assert loaded.examples.loc[0, "reference"] == "4"
    assert loaded.examples.loc[0, "tuned_output"] == ""


def test_length_mismatch_names_lengths():
    with pytest.raises(ValueError, match="inputs=2, references=2, base_outputs=1, tuned_outputs=2"):
        compare("generation", ["a", "b"], ["a", "b"], ["a"], ["a", "b"])


def test_zero_rows_and_unknown_task():
    with pytest.raises(ValueError, match="0 rows"):
        compare("generation", [], [], [], [])
    with pytest.raises(ValueError, match="unknown task"):
        compare("summarise", ["a"], ["a"], ["a"], ["a"])


def test_delta_chart_one_bar_per_metric(classification):
    fig = delta_chart(classification)
    (ax,) = fig.axes
    assert len(ax.patches) == len(classification.summary) == 5
    assert [t.get_text() for t in ax.get_yticklabels()][0] == "accuracy"
    assert [p.get_width() for p in ax.patches][0] == pytest.approx(0.5)


def test_delta_chart_colours_by_direction_and_puts_loss_on_its_own_axis(generation):
    from matplotlib.colors import to_hex

    from evaluation.plots import GAIN_COLOUR, LOSS_COLOUR, SAME_COLOUR

    generation.summary += [
        {"metric": "eval_loss", "base": 3.0, "tuned": 1.0, "delta": -2.0, "higher_is_better": False},
        {"metric": "perplexity", "base": 20.1, "tuned": 2.7, "delta": -17.4, "higher_is_better": False},
    ]
    scores, losses = delta_chart(generation).axes
    # rougeL etc. fell (red), rouge2 unchanged (grey); a lower loss is an improvement (green).
    by_name = dict(zip([t.get_text() for t in scores.get_yticklabels()],
                       [to_hex(p.get_facecolor()) for p in scores.patches]))
    assert by_name["rougeL"] == LOSS_COLOUR and by_name["exact_match"] == LOSS_COLOUR
    assert [t.get_text() for t in losses.get_yticklabels()] == ["eval_loss"]  # perplexity left out
    assert to_hex(losses.patches[0].get_facecolor()) == GAIN_COLOUR
    assert losses.patches[0].get_width() == pytest.approx(-2.0)
    assert "lower is better" in losses.get_xlabel() and "higher is better" in scores.get_xlabel()
    same = compare("generation", ["q"], ["a"], ["a"], ["a"])
    assert {to_hex(p.get_facecolor()) for p in delta_chart(same).axes[0].patches} == {SAME_COLOUR}


def test_confusion_heatmap(classification, generation):
    import matplotlib.pyplot as plt

    fig = confusion_heatmap(classification)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Base (adapter off) · accuracy 0.25", "Tuned (adapter on) · accuracy 0.75"], titles
    counts = [t.get_text() for t in fig.axes[1].texts]
    assert len(counts) == 3 * 4 and counts[:4] == ["1", "0", "1", "0"]
    assert confusion_heatmap(generation) is None
    assert plt.get_fignums() == []  # nothing left in pyplot's global registry


# -- intervals, per-row columns, several references ---------------------------------------------

def test_every_summary_entry_carries_its_interval_and_sentence(generation, classification):
    rows = {e["metric"]: e for e in generation.summary}
    rouge = rows["rougeL"]
    # the interval is on the same per-row scores as the delta: its estimate is the table's delta
    assert rouge["interval"]["estimate"] == pytest.approx(rouge["delta"]) and rouge["interval"]["n"] == 4
    assert rouge["interval"]["method"] == "paired bootstrap"
    assert rouge["verdict_text"].startswith("not distinguishable from no change on 4 rows (-0.125")
    assert rows["exact_match"]["interval"]["method"] == "paired bootstrap + exact McNemar"
    by_label = {e["metric"]: e for e in classification.summary}["accuracy/joy"]
    assert by_label["interval"]["n"] == 2  # only the rows labelled joy
    assert by_label["interval"]["estimate"] == pytest.approx(by_label["delta"])


def test_a_clear_gain_reads_better():
    n = 30
    c = compare("classification", [f"q{i}" for i in range(n)], ["yes"] * n, ["no"] * n, ["yes"] * n,
                labels=["yes", "no"])
    entry = c.summary[0]
    assert entry["metric"] == "accuracy" and entry["interval"]["significant"]
    assert entry["verdict_text"] == "better on 30 rows (+1.000, 95% CI +1.000 to +1.000)"


def test_extra_metrics_add_entries_with_corpus_intervals(tmp_path):
    refs = ["the cat sat on the mat", "a dog ran in the park", "birds fly south in winter"]
    c = compare("generation", ["q0", "q1", "q2"], refs, ["cat", "", "birds fly"], refs, metrics=["chrf", "bleu"])
    rows = {e["metric"]: e for e in c.summary}
    assert list(rows)[-2:] == ["chrf", "bleu"] and c.metrics_used == ["rouge", "exact_match", "chrf", "bleu"]
    for name in ("chrf", "bleu"):
        assert rows[name]["tuned"] == pytest.approx(1.0)
        assert rows[name]["interval"]["estimate"] == pytest.approx(rows[name]["delta"])
        assert rows[name]["interval"]["method"] == "paired bootstrap (corpus score recomputed)"
        assert list(c.examples.sort_index()[f"tuned:{name}"]) == pytest.approx([1.0, 1.0, 1.0])
    loaded = Comparison.load(c.save(tmp_path))
    assert loaded.metrics_used == c.metrics_used and loaded.examples.equals(c.examples)


def test_an_unknown_metric_is_refused_listing_the_available_ones():
    with pytest.raises(ValueError, match=r"Unknown metric 'blue'.*rouge, exact_match, accuracy, bleu, chrf"):
        compare("generation", ["q"], ["a"], ["a"], ["a"], metrics=["blue"])


def test_several_references_are_scored_shown_and_saved(tmp_path):
    refs = [["Amy calls Bob about the party.", "Bob hears about the party from Amy.", "A party is planned."],
            ["The meeting moves to Friday."]]
    base = ["Bob hears about the party from Amy.", "Nothing."]
    c = compare("generation", ["dialogue 1", "dialogue 2"], refs, base, ["A party is planned.", ""])
    ex = c.examples.sort_index()
    assert list(ex["base:exact_match"]) == [1.0, 0.0] and list(ex["tuned:exact_match"]) == [1.0, 0.0]
    assert ex.loc[0, "base:rougeL"] == 1.0  # the best of the three references
    assert ex.loc[0, "reference"] == ("[1] Amy calls Bob about the party.\n[2] Bob hears about the party from "
                                      "Amy.\n[3] A party is planned.")
    assert ex.loc[1, "reference"] == "The meeting moves to Friday."
    assert json.loads(ex.loc[0, "references"]) == refs[0] and json.loads(ex.loc[1, "references"]) == refs[1]
    loaded = Comparison.load(c.save(tmp_path))
    assert loaded.examples.equals(c.examples) and loaded.to_json_dict() == c.to_json_dict()


def test_results_saved_before_intervals_still_load(tmp_path, generation):
    folder = generation.save(tmp_path)
    data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    for entry in data["summary"]:
        for key in ("interval", "verdict_text", "higher_is_better"):
            entry.pop(key)
    del data["metrics_used"]
    (folder / "results.json").write_text(json.dumps(data), encoding="utf-8")
    old_columns = ["input", "reference", "base_output", "tuned_output", "base_score", "tuned_score", "delta"]
    generation.examples[old_columns].to_csv(folder / "examples.csv")
    old = Comparison.load(folder)
    assert old.metrics_used == ["rouge", "exact_match"] and list(old.examples.columns) == old_columns
    assert all(e["interval"] is None and e["verdict_text"] is None for e in old.summary)
    assert old.summary[2]["delta"] == pytest.approx(-0.125)
