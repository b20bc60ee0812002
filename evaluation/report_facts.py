"""The facts a stakeholder report and a model card state about a run, gathered once.

What was trained on what (data, config, timing), the loss curve (points and a
PNG), the base-vs-tuned evaluation (metrics with their 95% intervals, win/tie/loss
counts, biggest wins and losses), the saved checks (general skills, pairwise judge:
evaluation/report_checks.py), each export's parity verdict ("Exported models"), the
blind-vote tally with its interval, and which of these were not run. Plain, unescaped values: evaluation/report.py renders them as
HTML and Markdown, evaluation/model_card.py as a model card.
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from finetune_core.runs.store import Run

CURVE_FILE = "loss_curve.png"
HTML_FILE = "report.html"
MD_FILE = "report.md"
MAX_CELL = 400  # characters of a prompt or output shown per example
CONFIG_KEYS = ("parent_run", "objective", "beta", "loss_type", "reference", "method", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "use_dora", "num_epochs",
               "max_steps", "learning_rate", "lr_scheduler", "warmup_steps", "batch_size", "grad_accum",
               "max_length", "packing", "completion_only_loss", "seed")


@dataclass
class Facts:
    """Everything a report or model card says about a run, as plain values (unescaped)."""

    run_id: str
    model: str
    state: str
    data: list[tuple[str, str]]
    config: list[tuple[str, str]]
    training: list[tuple[str, str]]
    curve_png: bytes | None = None
    task: str = ""
    eval_rows: int = 0
    # metric, base, tuned, delta, verdict (report_checks.judged), and interval / verdict_text when saved
    metrics: list[dict] = field(default_factory=list)
    counts: tuple[int, int, int] | None = None  # wins, ties, losses
    wins: list[dict] = field(default_factory=list)
    losses: list[dict] = field(default_factory=list)
    votes: dict | None = None  # chat.tally, plus "interval" and "verdict_text" (report_checks.vote_interval)
    checks: list = field(default_factory=list)  # report_checks.Section of each saved check
    not_run: list[str] = field(default_factory=list)  # what was not done for this run, in words
    sides: tuple[str, str] = ("base", "tuned")  # how the evaluation names its two sides (e.g. a parent run)
    chain: object = None  # report_chain.chain_section: base -> parent -> this run, when it has a parent


# -- facts --------------------------------------------------------------------------------
def model_label(source: str) -> str:
    """The model as a person would name it (a server path is reduced to its folder name)."""
    from finetune_core.models.sources import BUNDLED, BUNDLED_LABEL

    if source in ("", BUNDLED):
        return BUNDLED_LABEL
    return Path(source).name if source.startswith(("/", ".", "~")) else source


def data_facts(run: Run) -> list[tuple[str, str]]:
    """What the model was trained on, from the run's data/report.json."""
    cfg = run.run_yaml()
    facts = [("Data file", Path(cfg.get("data_path") or "").name or "—")]
    if cfg.get("hub_source"):  # rows read from the Hugging Face Hub: which dataset, split, rows and revision
        from finetune_core.data.hub import describe

        facts.append(("Hub dataset", describe(str(cfg["hub_source"]))))
    try:
        rep = json.loads((run.data_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return facts + [("Data report", "not found in the run")]
    facts.append(("Format", str(rep.get("format", "—")).replace("_", " ")))
    rows = rep.get("rows")
    if rep.get("train_rows") is not None:
        facts.append(("Rows", f"{rows} usable → {rep['train_rows']} for training, "
                              f"{rep.get('heldout_rows', 0)} held out for evaluation"))
    elif rows is not None:
        facts.append(("Rows", str(rows)))
    if rep.get("bad_rows"):
        facts.append(("Rows dropped by checks", str(rep["bad_rows"])))
    labels = rep.get("labels")
    if labels:
        facts.append(("Labels", ", ".join(f"{k} ({v})" for k, v in labels.items())))
    return facts


def config_facts(run: Run) -> list[tuple[str, str]]:
    """The training settings a reader cares about (CONFIG_KEYS, in that order) from run.yaml, as (key, text) pairs."""
    cfg = run.run_yaml()
    return [(key, str(cfg[key])) for key in CONFIG_KEYS if key in cfg]


def loss_points(run: Run) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train loss, held-out loss) as (step, value) pairs from metrics.jsonl."""
    train, held = [], []
    for event in run.metrics():
        if isinstance(event.get("loss"), (int, float)):
            train.append((int(event.get("step", 0)), float(event["loss"])))
        if isinstance(event.get("eval_loss"), (int, float)):
            held.append((int(event.get("step", 0)), float(event["eval_loss"])))
    return train, held


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def time_facts(status: dict) -> list[tuple[str, str]]:
    """When the run first started, each resume, when it finished, and the time between:
    a resumed run still reports its whole span, not only its last part."""
    from finetune_core.runs.store import FINAL_STATES

    started = status.get("started")
    resumes = [t for t in status.get("resumes") or [] if isinstance(t, (int, float)) and not isinstance(t, bool)]
    done = status.get("state") in FINAL_STATES and status.get("finished")
    facts = [("Started", _when(started))] if started else []
    if resumes:
        facts.append(("Resumed", ", ".join(_when(t) for t in resumes)))
    if done:
        facts.append(("Finished", _when(status["finished"])))
    if started and done:
        label = "Time from first start to finish (pauses included)" if resumes else "Training time"
        facts.append((label, f"{status['finished'] - started:.0f} s"))
    return facts


def training_facts(run: Run) -> list[tuple[str, str]]:
    """State, steps done of total, start/resume/finish times, first → last training loss and the last
    held-out loss, as (label, text) pairs."""
    status = run.status()
    train, held = loss_points(run)
    facts = [("State", str(status.get("state", "?"))),
             ("Steps", f"{status.get('step', 0)} / {status.get('total_steps', 0)}"), *time_facts(status)]
    if train:
        facts.append(("Training loss", f"{train[0][1]:.4f} → {train[-1][1]:.4f}"))
    if held:
        facts.append(("Held-out loss (end)", f"{held[-1][1]:.4f}"))
    from evaluation.report_chain import preference_facts

    return facts + preference_facts(run)


def loss_figure(run: Run):
    """Training (and held-out) loss by step, or None when nothing was logged."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train, held = loss_points(run)
    if not train and not held:
        return None
    fig = Figure(figsize=(7, 3.2), layout="constrained")  # no pyplot: see evaluation/plots.py
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if train:
        ax.plot(*zip(*train), label="training loss", color="#2563eb")
    if held:
        ax.plot(*zip(*held), "o--", label="held-out loss", color="#d97706")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def loss_curve_png(run: Run) -> bytes | None:
    """The loss figure as PNG bytes (110 dpi), or None when the run logged no loss."""
    fig = loss_figure(run)
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _examples(frame, n: int) -> list[dict]:
    return [{"row": int(idx), "input": r["input"], "reference": r["reference"], "base": r["base_output"],
             "tuned": r["tuned_output"], "delta": float(r["delta"])} for idx, r in frame.head(n).iterrows()]


def add_eval(facts: Facts, run: Run, n_examples: int) -> None:
    """Metrics and examples from runs/<id>/eval/, when the run was evaluated."""
    from evaluation.compare import RESULTS_FILE, Comparison
    from evaluation.report_checks import judged

    if not (run.eval_dir / RESULTS_FILE).is_file():
        return
    try:
        comparison = Comparison.load(run.eval_dir)
    except (OSError, ValueError, KeyError):
        return  # being rewritten by an evaluation right now, or damaged: report without it
    facts.task, facts.eval_rows = comparison.task, comparison.rows
    facts.sides = eval_sides(run)
    facts.metrics = [{**e, "verdict": judged(e)} for e in comparison.summary]
    if not comparison.examples.empty:
        facts.counts = (comparison.wins, comparison.ties, comparison.losses)
        facts.wins = _examples(comparison.biggest_wins(n_examples), n_examples)
        facts.losses = _examples(comparison.biggest_losses(n_examples), n_examples)


def eval_sides(run: Run) -> tuple[str, str]:
    """The names of the two sides of the run's saved evaluation (a run with a parent compares the parent
    with itself); ("base", "tuned") for results saved before sides were recorded."""
    try:
        labels = json.loads((run.eval_dir / "meta.json").read_text(encoding="utf-8")).get("labels") or {}
    except (OSError, ValueError, AttributeError):
        labels = {}
    if not isinstance(labels, dict) or not labels.get("a") or not labels.get("b"):
        return ("base", "tuned")
    return (str(labels["a"]), str(labels["b"]))


def read_votes(run: Run) -> list[dict]:
    """Blind A/B votes saved with the run (votes.jsonl, any schema version), skipping unreadable lines."""
    from finetune_core.inference.votes import load_votes

    return load_votes(run)[0]


def gather(run: Run, n_examples: int = 5, with_curve: bool = True) -> Facts:
    """Collect everything the report and the model card show about `run`.

    `n_examples` caps the biggest wins and losses listed; `with_curve=False` skips drawing the
    loss PNG (matplotlib), for callers that do not show it."""
    from evaluation.report_chain import chain_section
    from evaluation.report_checks import check_sections, export_section, vote_interval
    from finetune_core.inference.chat import tally

    cfg = run.run_yaml()
    votes = read_votes(run)
    facts = Facts(run_id=run.id, model=model_label(str(cfg.get("model") or "")),
                  state=str(run.status().get("state", "?")), data=data_facts(run), config=config_facts(run),
                  training=training_facts(run), curve_png=loss_curve_png(run) if with_curve else None,
                  votes={**tally(votes), **vote_interval(votes)} if votes else None)
    add_eval(facts, run, n_examples)
    facts.chain = chain_section(run)
    facts.checks, missing = check_sections(run)
    exported = export_section(run)
    facts.checks += [exported] if exported else []
    facts.not_run = (["held-out evaluation"] if not facts.metrics else []) + missing + (
        [] if votes else ["blind A/B votes"])
    return facts
