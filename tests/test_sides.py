"""Any two models side by side: a chain's adapters switched on together answer as the merged chain,
the base side is the plain base, a run with a parent is compared with its parent, two different base
models load only when both fit, the model cache keeps pairs apart, and votes between two runs are kept
by the newer one with both model ids.

Runs carry random adapters (tests/side_support.py) on the tiny model: a parent, its child, and a
sibling on the same base.

    .venv/bin/python -m pytest -q tests/test_sides.py
"""
from __future__ import annotations

import json

import pytest
import torch

from finetune_core.errors import InputError
from finetune_core.inference import chat, sides
from finetune_core.inference.generation import GenSettings, InferenceModel
from finetune_core.inference.model_cache import ModelCache
from finetune_core.inference.votes import VOTES_FILE, load_votes
from finetune_core.models.chain import load_chain_model
from finetune_core.models.sources import device_policy
from side_support import adapter_run

PROMPT = [{"role": "user", "content": "Which colour is the ball?"}]
CPU = device_policy("cpu")


@pytest.fixture(scope="module")
def family(tiny_model_dir, tmp_path_factory):
    """parent -> child, and a sibling run on the same base, in a module-wide runs root."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_RUNS_DIR", str(tmp_path_factory.mktemp("side-runs")))
        parent = adapter_run(tiny_model_dir, seed=1)
        child = adapter_run(tiny_model_dir, parent=parent, seed=2)
        sibling = adapter_run(tiny_model_dir, seed=3)
        yield {"parent": parent, "child": child, "sibling": sibling, "model_dir": tiny_model_dir}


@pytest.fixture(scope="module")
def chain_pair(family):
    """Side A: the parent's chain; side B: the child's (parent + child adapters on together)."""
    return InferenceModel.for_sides(sides.run_key(family["parent"]), sides.run_key(family["child"]))


def _logits(model, side_context=None):
    ids = torch.tensor([[1, 422, 2856, 314, 260, 3318, 47]])
    with torch.inference_mode(), side_context or torch.no_grad():
        return model(input_ids=ids).logits


def _side_logits(inference, tuned: bool):
    weights, context = inference.side(tuned)
    with inference.lock:
        return _logits(weights, context)


def test_a_chain_of_adapters_equals_the_merged_chain(family, chain_pair):
    assert chain_pair.side_adapters[True] == [sides.adapter_name(family["parent"]),
                                              sides.adapter_name(family["child"])]
    merged_child = load_chain_model(family["child"], CPU).eval()
    merged_parent = load_chain_model(family["parent"], CPU).eval()
    child, parent = _side_logits(chain_pair, True), _side_logits(chain_pair, False)
    # adapters on together = the chain folded into the weights, up to float rounding
    assert torch.allclose(child, _logits(merged_child), atol=1e-5, rtol=0)
    assert torch.allclose(parent, _logits(merged_parent), atol=1e-5, rtol=0)
    assert (child - parent).abs().max() > 1e-2  # and the two sides do differ
    # switching back and forth on the shared weights changes nothing
    assert torch.equal(_side_logits(chain_pair, True), child)


def test_the_base_side_is_the_plain_base(family):
    from transformers import AutoModelForCausalLM

    pair = InferenceModel.for_sides("base", sides.run_key(family["child"]))
    plain = AutoModelForCausalLM.from_pretrained(family["model_dir"]).eval()
    assert torch.equal(_side_logits(pair, False), _logits(plain))
    assert pair.side_labels == {False: "Base model", True: family["child"].name}


def test_generation_and_streaming_on_a_chain_match_the_merged_model(family, chain_pair):
    # the speed-ups stay on with several adapters active: the answers are the merged model's own
    assert "prefilled_kv_cache" in chain_pair.speedups.applied()
    merged = InferenceModel(load_chain_model(family["child"], CPU).eval(), chain_pair.tokenizer, CPU,
                            speedups="off")
    greedy = GenSettings(max_new_tokens=6)
    prompts = [PROMPT, [{"role": "user", "content": "Hello there, a much longer question?"}]]
    assert chain_pair.generate(prompts, tuned=True, settings=greedy) == merged.generate(prompts, tuned=False,
                                                                                       settings=greedy)
    *_, (left, right) = chain_pair.stream_pair(PROMPT, PROMPT, greedy)  # side after side: a chain
    # (streamed text keeps its leading space; chat strips it at the end of the turn)
    assert [left.strip(), right.strip()] == [chain_pair.generate([PROMPT], tuned=t, settings=greedy)[0]
                                             for t in (False, True)]


def test_two_sibling_runs_share_one_batch(family):
    from finetune_core.inference.streaming import mixed_batch_names

    pair = InferenceModel.for_sides(sides.run_key(family["sibling"]), sides.run_key(family["child"]))
    assert mixed_batch_names(pair) is None  # the child is a chain of two
    pair = InferenceModel.for_sides(sides.run_key(family["parent"]), sides.run_key(family["sibling"]))
    names = [sides.adapter_name(family["parent"]), sides.adapter_name(family["sibling"])]
    assert mixed_batch_names(pair) == names
    greedy = GenSettings(max_new_tokens=6)
    *_, streamed = pair.stream_pair(PROMPT, PROMPT, greedy)
    assert [t.strip() for t in streamed] == [pair.generate([PROMPT], tuned=t, settings=greedy)[0]
                                             for t in (False, True)]


def test_a_run_with_a_parent_is_compared_with_it(family):
    child, parent = family["child"], family["parent"]
    assert sides.default_sides(child) == (sides.run_key(parent), sides.run_key(child))
    assert sides.default_sides(parent) == ("base", sides.run_key(parent))
    model = InferenceModel.from_run(child)
    assert model.side_keys == sides.default_sides(child) and len(model.side_adapters[False]) == 1
    keys = [key for _, key in sides.side_choices(child, [family["sibling"], parent, child])]
    assert keys == ["base", sides.run_key(child), sides.run_key(parent), sides.run_key(family["sibling"])]


def test_runs_on_another_base_are_not_offered_and_load_only_when_both_fit(family, tokenizer, tmp_path,
                                                                       monkeypatch):
    from conftest import build_tiny_model

    other_dir = tmp_path / "other-tiny"
    build_tiny_model(tokenizer, seed=5).save_pretrained(other_dir)
    tokenizer.save_pretrained(other_dir)
    stranger = adapter_run(other_dir, seed=4)
    keys = [key for _, key in sides.side_choices(family["child"], [stranger])]
    assert sides.run_key(stranger) not in keys
    a, b = sides.run_key(family["parent"]), sides.run_key(stranger)
    monkeypatch.setattr(sides, "available_memory", lambda device: 1e6)  # 1 MB free: two models do not fit
    with pytest.raises(InputError, match="different models.*two models in memory"):
        InferenceModel.for_sides(a, b)
    monkeypatch.setattr(sides, "available_memory", lambda device: 1e12)
    pair = InferenceModel.for_sides(a, b)
    assert pair.tuned_model is not None  # two models, each with its own chain
    assert torch.allclose(_side_logits(pair, True), _logits(load_chain_model(stranger, CPU).eval()), atol=1e-5)
    assert torch.allclose(_side_logits(pair, False), _logits(load_chain_model(family["parent"], CPU).eval()),
                          atol=1e-5)


def test_bad_pairs_are_refused(family):
    key = sides.run_key(family["child"])
    with pytest.raises(InputError, match="same model"):
        InferenceModel.for_sides(key, key)
    with pytest.raises(InputError, match="neither"):
        InferenceModel.for_sides("base", "run:../../etc")
    with pytest.raises(InputError, match="same model"):
        InferenceModel.for_sides("base", "base")


def test_the_model_cache_tells_pairs_apart(family):
    cache = ModelCache(capacity=3)
    child, parent = family["child"], family["parent"]
    default = cache.get(f"run:{child.id}")
    assert cache.get(sides.pair_key(sides.run_key(parent), sides.run_key(child))) is default  # the same pair
    other = cache.get(sides.pair_key("base", sides.run_key(child)))
    assert other is not default and other.side_keys == ("base", sides.run_key(child))
    assert cache.counter(sides.pair_key("base", sides.run_key(child))) is other.counter


def test_the_merged_export_follows_the_chain(family, chain_pair):
    from finetune_core.export.artifacts import merged_model

    assert torch.allclose(_logits(merged_model(family["child"]).eval()), _side_logits(chain_pair, True), atol=1e-5)


def test_a_vote_between_two_runs_is_kept_by_the_newer_with_both_ids(family):
    parent, child = family["parent"], family["child"]
    # the session's side A is the newer run: the vote is turned round so that "tuned" is that run
    holder, models = sides.vote_target(sides.run_key(child), sides.run_key(parent))
    assert holder.id == child.id and models == {"base": f"run:{child.id}", "tuned": f"run:{parent.id}"}
    session = chat.ChatSession(blind=True, seed=3, run=holder, models=models)
    chat.start_turn(session, "Which is better?")
    chat.finish_turn(session, "child answer", "parent answer")
    pane = session.tuned_sides[-1]  # where side B (the parent) was shown: the voter prefers it
    chat.record_vote(session, pane)
    line = json.loads((child.path / VOTES_FILE).read_text(encoding="utf-8"))
    assert sorted(line["models"].values()) == sorted([f"tuned:{child.id}", f"run:{parent.id}"])
    assert line["answers"][line["winner"]] == "parent answer"  # the pane that was voted for
    assert not (parent.path / VOTES_FILE).exists()
    stored, skipped = load_votes(child)
    assert skipped == 0 and stored[0]["winner"] == "base" and stored[0]["tuned"] == "child answer"
    # counted from the pair's point of view, the parent (side B here) won
    assert chat.tally(chat.saved_votes(session))["tuned"] == 1


def test_the_chat_command_names_the_parent_beside_the_run(family, capsys):
    from finetune_core.cli import main

    assert main(["chat", "--run", str(family["child"].path), "--prompt", "hi", "--max-new-tokens", "2"]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first.startswith(family["parent"].label() + ":") and second.startswith(family["child"].label() + ":")
