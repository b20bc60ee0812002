"""Charts for a Comparison: metric deltas and side-by-side confusion heatmaps.

Figures are built with `matplotlib.figure.Figure` and an Agg canvas, never
pyplot: pyplot keeps every figure in a global registry until closed, which
leaks memory across users of a long-running server and is not thread-safe.
The returned Figure can go straight into `gr.Plot` or `fig.savefig(...)`;
nothing needs closing.

    >>> from evaluation.compare import compare
    >>> fig = delta_chart(compare("generation", ["q"], ["a b"], ["x"], ["a b"]))
    >>> len(fig.axes[0].patches)  # one bar per metric
    5
"""
from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evaluation.compare import improved

GAIN_COLOUR = "#2e7d32"  # tuned is better, whichever way the metric points
LOSS_COLOUR = "#c62828"  # tuned is worse
SAME_COLOUR = "#9e9e9e"
# exp(eval_loss): the same information as eval_loss on a scale that can run to
# thousands, which would flatten every other bar in its panel.
LEFT_OUT = ("perplexity",)


def delta_chart(comparison) -> Figure:
    """Horizontal bars of tuned − base per metric, green where tuned improved.

    Scores (higher is better, 0..1) and losses (lower is better, in nats) get
    separate panels with their own x scale; perplexity is left out.
    """
    entries = [e for e in comparison.summary
               if e.get("delta") is not None and e["metric"] not in LEFT_OUT]
    scores = [e for e in entries if e.get("higher_is_better", True)]
    losses = [e for e in entries if not e.get("higher_is_better", True)]
    panels = [(p, label) for p, label in ((scores, "higher is better"), (losses, "lower is better")) if p]
    panels = panels or [([], "")]
    heights = [max(len(p), 1) for p, _ in panels]
    # Grow with the number of metrics (per-label accuracies can be many).
    fig = Figure(figsize=(7, 1.2 + 0.45 * sum(heights) + 0.6 * (len(panels) - 1)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, (panel, direction) in zip(axes, panels):
        _draw_deltas(ax, panel, direction)
    axes[0].set_title(f"Change after fine-tuning ({comparison.rows} held-out rows)")
    return fig


def _draw_deltas(ax, entries: list[dict], direction: str) -> None:
    if not entries:
        ax.text(0.5, 0.5, "No metric to chart", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    names = [e["metric"] for e in entries]
    deltas = [float(e["delta"]) for e in entries]
    colours = [{True: GAIN_COLOUR, False: LOSS_COLOUR, None: SAME_COLOUR}[improved(e)] for e in entries]
    positions = list(range(len(names)))
    bars = ax.barh(positions, deltas, color=colours)
    ax.bar_label(bars, labels=[f"{d:+.3f}" for d in deltas], padding=3, fontsize=8)
    ax.set_yticks(positions, labels=names)
    ax.invert_yaxis()  # first metric of the summary on top, as in the table
    ax.axvline(0, color="black", linewidth=0.8)
    # Symmetric limits with room for the labels, so gains and losses read alike.
    span = max([abs(d) for d in deltas] + [0.05]) * 1.35
    ax.set_xlim(-span, span)
    ax.set_xlabel(f"tuned − base ({direction})")


def confusion_heatmap(comparison) -> Figure | None:
    """Base and tuned confusion matrices side by side, each titled with its side and accuracy under
    one figure title that says how to read them; None unless classification."""
    confusion = comparison.confusion
    if not confusion:
        return None
    rows, columns = confusion["labels"], confusion["columns"]
    fig = Figure(figsize=(4 + 0.9 * len(columns), 2.2 + 0.5 * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    # One colour scale for both panels so equal counts look equal.
    vmax = max([v for key in ("base", "tuned") for row in confusion[key] for v in row] + [1])
    for ax, key in zip(axes, ("base", "tuned")):
        _draw_matrix(ax, confusion[key], rows, columns, vmax)
        ax.set_title(_panel_title(comparison, key), fontsize=10)
        ax.set_xlabel("predicted label")
    axes[0].set_ylabel("reference label")
    fig.suptitle(f"Confusion matrices, {comparison.rows} held-out rows (row: reference, column: predicted)",
                 fontsize=10)
    return fig


def _panel_title(comparison, key: str) -> str:
    """"Base (adapter off) · accuracy 0.09": the side, and its accuracy when known."""
    side = {"base": "Base (adapter off)", "tuned": "Tuned (adapter on)"}[key]
    metrics = comparison.base_metrics if key == "base" else comparison.tuned_metrics
    accuracy = (metrics or {}).get("accuracy")
    return side if accuracy is None else f"{side} · accuracy {accuracy:.2f}"


def _draw_matrix(ax, matrix, rows, columns, vmax) -> None:
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(columns)), labels=columns, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), labels=rows)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            # White text on dark cells, black on light ones, so counts stay legible.
            colour = "white" if count > vmax / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=9)
