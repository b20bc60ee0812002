"""The held-out split: which rows a run trains on and which it keeps aside for evaluation.

Deterministic for a seed, stratified by label, exact duplicates kept on one
side; preference rows (pairs, thumbs) are grouped by prompt instead, and a group
is never cut: a pair stays whole, and the thumbs up and down of one prompt (or
two pairs of one prompt) land on the same side, so held-out prompts are unseen; ``train_and_held`` applies a whole ``DataMapping`` (separate evaluation
file, held-out share, seed, training-row cap). Training, the Data tab and
``inspect`` all split here, so the preview is the split a run makes.
"""
from __future__ import annotations

import random

from finetune_core.data.checks import prompt_key, row_key
from finetune_core.data.mapping import DataMapping


def split_rows(rows: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic train / held-out split, stratified by ``label`` when present.

    Exact duplicates stay on the same side (as far as the counts allow) so the
    held-out rows are not copies of training rows; preference rows sharing a
    prompt always do (the held-out share is then as near as whole groups allow).
    Both lists keep file order.
    """
    if eval_fraction <= 0 or len(rows) < 2:
        return list(rows), []
    n_eval = min(len(rows) - 1, max(1, round(len(rows) * eval_fraction)))
    strata: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        strata.setdefault(str(row.get("label", "")), []).append(i)
    quotas = _allocate(n_eval, {k: len(v) for k, v in strata.items()})
    rng = random.Random(seed)
    chosen: set[int] = set()
    key = prompt_key if _preference(rows) else row_key
    for stratum in sorted(strata):
        chosen |= _pick_groups(rows, strata[stratum], quotas[stratum], rng, key)
    if key is prompt_key:
        chosen |= _top_up_groups(rows, chosen, n_eval, rng)
    else:  # duplicate groups larger than a quota can leave the total short: top up row by row
        rest = [i for i in range(len(rows)) if i not in chosen]
        rng.shuffle(rest)
        chosen |= set(rest[: max(0, n_eval - len(chosen))])
    train = [r for i, r in enumerate(rows) if i not in chosen]
    held = [r for i, r in enumerate(rows) if i in chosen]
    return train, held


def _allocate(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """Split ``total`` across strata proportionally (largest remainder, ties by name)."""
    n = sum(sizes.values())
    exact = {k: total * s / n for k, s in sizes.items()}
    quotas = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (-(exact[k] - quotas[k]), k))[: total - sum(quotas.values())]:
        quotas[k] += 1
    return quotas


def _preference(rows: list[dict]) -> bool:
    from finetune_core.data.preference import rows_kind  # one definition of a preference row

    return rows_kind(rows) in ("pairs", "unpaired")


def _top_up_groups(rows: list[dict], chosen: set[int], n_eval: int, rng: random.Random) -> set[int]:
    """Whole prompt groups added until the held-out share is reached, always leaving a group to train on."""
    groups: dict[str, list[int]] = {}
    for i in range(len(rows)):
        if i not in chosen:
            groups.setdefault(prompt_key(rows[i]), []).append(i)
    order = sorted(groups)
    rng.shuffle(order)
    added: set[int] = set()
    for key in order[:-1]:  # the last group is never taken: training keeps at least one
        if len(chosen) + len(added) >= n_eval:
            break
        added.update(groups[key])
    return added


def _pick_groups(rows: list[dict], indices: list[int], quota: int, rng: random.Random, key=row_key) -> set[int]:
    groups: dict[str, list[int]] = {}
    for i in indices:
        groups.setdefault(key(rows[i]), []).append(i)
    order = sorted(groups)
    rng.shuffle(order)
    picked: set[int] = set()
    for key in order:
        if len(picked) + len(groups[key]) <= quota:
            picked.update(groups[key])
    return picked


def train_and_held(mapping: DataMapping, rows: list[dict], eval_rows: list[dict] | None = None
                   ) -> tuple[list[dict], list[dict]]:
    """The rows a run trains on and holds out, as the mapping says: the separate
    evaluation file's rows when there is one (``eval_rows``), else ``split_rows`` by
    the held-out share and seed; the training rows are capped at ``max_train_rows``.
    The Data tab previews exactly the split training makes."""
    if eval_rows is not None:
        train, held = list(rows), list(eval_rows)
    else:
        train, held = split_rows(rows, mapping.eval_fraction, mapping.seed)
    if mapping.max_train_rows and len(train) > mapping.max_train_rows:
        train = train[: mapping.max_train_rows]
    return train, held
