"""Blind A/B votes saved with their run: ``<run dir>/votes.jsonl``, one JSON object a line.

Each vote is appended as it is cast (`append_vote`), so the tally survives a
page reload or a restart, and the report and the preference-pair export read
the same file (`load_votes`). A line (schema version 2) holds what the voter
saw and what it turned out to be:

    {"schema_version": 2, "time": "2026-01-31T12:00:00Z", "prompt": "<the user message>",
     "answers": {"A": "<left pane>", "B": "<right pane>"},
     "models": {"A": "tuned:<run id>", "B": "base:<model>"},
     "winner": "A" | "B" | "tie" | "both_bad",
     "choice": ..., "tuned_side": ..., "prompt_base": [...], "prompt_tuned": [...], "base": ..., "tuned": ...}

A and B are the panes as the voter saw them (left and right); ``both_bad`` is
the app's fourth vote button and is kept as a winner value of its own.

Any two sides can be voted on (finetune_core.inference.sides). A vote is kept
by the newer run of the two, and in its file "tuned" always means that run:
its model id is ``tuned:<its run id>``, the other side's ``base:<model>`` or
``run:<run id>`` (`append_vote` turns a vote round when the newer run was
the session's side A). `pair_votes` picks one pair's votes out of a file. The
trailing keys are the in-memory vote record (chat.record_vote), kept so DPO
pairs can be rebuilt from the file. In memory a vote's ``winner`` names the
model ("tuned", "base", "tie", "both_bad"), as `chat.tally` counts it;
`load_votes` converts back. Lines from before versions (a bare
``{"winner": "tuned"}`` record) read as version 1.

Appends are atomic for readers: one line, one ``write`` call on an O_APPEND
descriptor, under a lock (threads) and ``flock`` (processes), then fsync. A
crash can still cut the last line short: reading skips and counts any line
that does not parse, and the next append starts on a fresh line.
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path

from finetune_core.runs.store import SCHEMA_VERSION, Run

VOTES_FILE = "votes.jsonl"
PANES = {"left": "A", "right": "B"}  # the blind panes are labelled A (left) and B (right)
# one lock for the whole process: it only orders writes, it holds no user data
_APPEND_LOCK = threading.Lock()


def votes_path(run: Run) -> Path:
    """Where a run's votes live (a fixed name: no user text in the path)."""
    return run.path / VOTES_FILE


def model_ids(run: Run) -> dict[str, str]:
    """{"tuned": "tuned:<run id>", "base": "base:<model>"}: how a vote line names the models."""
    try:
        model = str(run.run_yaml().get("model") or "")
    except (OSError, ValueError):  # a damaged run.yaml must not lose the vote
        model = ""
    return {"tuned": f"tuned:{run.id}", "base": f"base:{model or '?'}"}


def _last_user_text(messages) -> str:
    users = [m.get("content") for m in messages or [] if isinstance(m, dict) and m.get("role") == "user"]
    return users[-1] if users and isinstance(users[-1], str) else ""


def vote_line(vote: dict, models: dict[str, str], when: float | None = None) -> dict:
    """The file form (schema version 2) of an in-memory vote (see the module docstring).

    >>> vote = {"prompt_base": [{"role": "user", "content": "hi"}], "prompt_tuned": [], "base": "b",
    ...         "tuned": "t", "tuned_side": "left", "choice": "left", "winner": "tuned"}
    >>> line = vote_line(vote, {"tuned": "tuned:r1", "base": "base:m"}, when=0)
    >>> line["winner"], line["answers"], line["models"], line["time"], line["prompt"]
    ('A', {'A': 't', 'B': 'b'}, {'A': 'tuned:r1', 'B': 'base:m'}, '1970-01-01T00:00:00Z', 'hi')
    """
    tuned_pane = PANES[vote["tuned_side"]]
    base_pane = "B" if tuned_pane == "A" else "A"
    choice = vote["choice"]
    return {
        "schema_version": SCHEMA_VERSION,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if when is None else when)),
        "prompt": _last_user_text(vote.get("prompt_tuned") or vote.get("prompt_base")),
        "answers": {tuned_pane: vote["tuned"], base_pane: vote["base"]},
        "models": {tuned_pane: models["tuned"], base_pane: models["base"]},
        "winner": PANES.get(choice, choice),
        **{k: vote[k] for k in ("choice", "tuned_side", "prompt_base", "prompt_tuned", "base", "tuned") if k in vote},
    }


def flip_vote(vote: dict) -> dict:
    """The same vote seen from the other side: base and tuned swap (answers, prompts, pane, winner).

    >>> flip_vote({"base": "b", "tuned": "t", "tuned_side": "left", "winner": "tuned", "choice": "left"})
    {'base': 't', 'tuned': 'b', 'tuned_side': 'right', 'winner': 'base', 'choice': 'left'}
    """
    swap = {"base": "tuned", "tuned": "base", "prompt_base": "prompt_tuned", "prompt_tuned": "prompt_base"}
    out = {swap.get(k, k): v for k, v in vote.items()}
    if vote.get("tuned_side") in PANES:
        out["tuned_side"] = "right" if vote["tuned_side"] == "left" else "left"
    if vote.get("winner") in ("tuned", "base"):
        out["winner"] = swap[vote["winner"]]
    return {k: out[k] for k in vote}  # the keys in their original order


def _plain_id(model: str) -> str:
    """A model id with a run written as ``run:<id>`` (a file names its own run ``tuned:<id>``)."""
    return "run:" + model[len("tuned:"):] if str(model).startswith("tuned:") else str(model)


def vote_models(vote: dict, run: Run | None = None) -> tuple[str, str] | None:
    """(base side's model id, tuned side's) of a vote, runs spelled ``run:<id>``; a vote without
    "models" (an old line) is `run`'s default pair; None when unknown."""
    models = vote.get("models")
    if isinstance(models, dict) and vote.get("tuned_side") in PANES:
        tuned_pane = PANES[vote["tuned_side"]]
        base_pane = "B" if tuned_pane == "A" else "A"
        if models.get(tuned_pane) and models.get(base_pane):
            return _plain_id(models[base_pane]), _plain_id(models[tuned_pane])
    if run is None:
        return None
    ids = model_ids(run)
    return _plain_id(ids["base"]), _plain_id(ids["tuned"])


def pair_votes(votes: list[dict], run: Run, models: dict[str, str]) -> list[dict]:
    """The votes of `run`'s file cast between the pair `models` ({"base": id, "tuned": id}, runs spelled
    ``run:<id>`` or ``tuned:<id>``), each seen from that pair's sides (turned round when it was stored
    the other way round)."""
    want = (_plain_id(models["base"]), _plain_id(models["tuned"]))
    out = []
    for vote in votes:
        ids = vote_models(vote, run)
        if ids == want:
            out.append(vote)
        elif ids == want[::-1]:
            out.append(flip_vote(vote))
    return out


def append_vote(run: Run, vote: dict, models: dict[str, str] | None = None) -> dict:
    """Append one in-memory vote to the run's votes.jsonl; returns the line written. `models` names the
    sides ({"base": id, "tuned": id}, default: this run and its base model); when `run` was the base
    side, the vote is turned round first, so in the file "tuned" is always `run`.

    One write of the whole line on an O_APPEND descriptor, under the process lock
    and an exclusive flock, then fsync: a reader never sees half a vote written by
    a live process, and a line cut by a crash is closed off before the next one."""
    models = dict(models or model_ids(run))
    own = {f"run:{run.id}", f"tuned:{run.id}"}
    if models.get("base") in own:
        vote, models = flip_vote(vote), {"base": models["tuned"], "tuned": models["base"]}
    models["tuned"] = f"tuned:{run.id}" if models.get("tuned") in own else models["tuned"]
    line = vote_line(vote, models)
    data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
    with _APPEND_LOCK:
        fd = os.open(votes_path(run), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # the last line was cut short by a crash: start a fresh one
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the flock
    return line


def migrate_vote(line: dict) -> dict | None:
    """One file line as an in-memory vote (winner "tuned", "base", "tie" or "both_bad");
    None when it is not a vote this version can read.

    >>> migrate_vote({"winner": "tuned"})  # version 1: already the in-memory form
    {'winner': 'tuned'}
    >>> migrate_vote({"schema_version": 2, "winner": "B", "tuned_side": "right", "choice": "right"})["winner"]
    'tuned'
    >>> migrate_vote({"schema_version": 2, "winner": "tie", "tuned_side": "left"})["winner"]
    'tie'
    """
    from finetune_core.inference.chat import WINNERS

    if not isinstance(line, dict):
        return None
    version = line.get("schema_version", 1)
    if version == 1 or "schema_version" not in line:
        return dict(line) if line.get("winner") in WINNERS else None
    if version != SCHEMA_VERSION or line.get("tuned_side") not in PANES:
        return None
    winner = line.get("winner")
    if winner in ("A", "B"):
        winner = "tuned" if winner == PANES[line["tuned_side"]] else "base"
    return {**line, "winner": winner} if winner in WINNERS else None


def load_votes(run: Run) -> tuple[list[dict], int]:
    """(votes in the in-memory form, number of lines skipped as unreadable) from votes.jsonl.

    A line cut short by a crash, or any other line that does not parse, is
    skipped and counted; the votes around it are kept."""
    path = votes_path(run)
    if not path.is_file():
        return [], 0
    votes, skipped = [], 0
    for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not text.strip():
            continue
        try:
            vote = migrate_vote(json.loads(text))
        except ValueError:
            vote = None
        if vote is None:
            skipped += 1
        else:
            votes.append(vote)
    return votes, skipped
