"""The architecture matrix: every family a user may pick, through every feature the studio offers it.

For each family in tests/model_families.py (tiny random models from the
family's config, tokenizer fixtures with the family's chat format):
  (a) the CPU training path with the speed-ups `apply_training` chooses gives
      plain PEFT/TRL's loss and gradients (LoRA, DoRA, full fine-tune) on
      right-padded rows longer than any sliding window, and says which
      speed-ups it applied; `speedups: off` touches nothing;
  (b) batched held-out generation (`InferenceModel.generate`) gives each row
      transformers' own `generate` on that row alone;
  (c) side-by-side chat streams base and tuned, each as it answers alone;
  (d) the studio's merge gives the adapter's logits;
  (e) GGUF export writes the families it supports and refuses the others
      before any work, naming the architecture.
What each family is expected to get is `model_families.EXPECTED`; the family
table in docs/model-matrix.md is rendered from it and checked here.

    .venv/bin/python -m pytest tests/test_model_matrix.py -q --durations=15
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
import torch

from finetune_core.inference.generation import GenSettings, InferenceModel
from finetune_core.speedups import apply_training
from finetune_core.speedups.packed_attention import PACKED_ATTENTION, packing_unsafe_reason
from model_families import (BY_NAME, EXPECTED, FAMILIES, GGUF_LAYOUT, HEADER, TRAIN_MAX_LENGTH, WINDOW, Family,
                            gguf_model, render_table)

REPO = Path(__file__).resolve().parents[1]
from matrix_support import (  # noqa: F401 (fixtures are used by name)
    POLICY, TRAIN_INIT, MARGIN, LOGIT_TOL, NEW_TOKENS, family, one_thread, speedups_on, rel_err, training_batch, studio_lora_config, randomise_lora_b, adapted, trl_step, assert_same_step, chat_prompts, alone, gap, decisive_steps)

# -- (a) training -------------------------------------------------------------------------------------------
def expected_training(family: Family, method: str) -> dict:
    """speed-up -> None (applied) or a phrase its skip reason must contain, for this family and method."""
    e = EXPECTED[family.name]
    lora = {"lora": e["fused_lora"], "dora": "no plain LoRA linear layer", "full": "no LoRA layers"}[method]
    return {"packed_attention": e["packed_attention"], "fused_rms_norm": e["fused_rms_norm"], "fused_lora": lora,
            "label_only_lm_head": None, "grouped_bf16_attention": "packed attention is off" if e["packed_attention"]
            else "float32 weights", "fast_lora_dropout": "no LoRA layers" if method == "full" else "LoRA dropout is 0"}


@pytest.mark.parametrize("method", ["lora", "dora", "full"])
def test_training_speedups_give_the_librarys_loss_and_gradients(family, method):
    tok = family.tokenizer()
    batch = training_batch(tok)
    reference = trl_step(adapted(family, tok, method, TRAIN_INIT), batch)  # plain PEFT/TRL, nothing applied
    model = adapted(family, tok, method, TRAIN_INIT)
    report = apply_training(model, "cpu", "float32", TRAIN_MAX_LENGTH, "auto")
    for name, why in expected_training(family, method).items():
        if why is None:
            assert name in report.applied(), f"{name} not applied: {report.skipped().get(name)}"
        else:
            assert why in report.skipped().get(name, ""), f"{name}: {report.summary()}"
    seen = []  # the rows as the decoder receives them: one packed row when packed attention is on
    decoder = (model.get_base_model() if method != "full" else model).base_model
    decoder.register_forward_pre_hook(lambda m, a, kw: seen.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    with report.scope():
        step = trl_step(model, batch)
    real = int(batch["attention_mask"].sum())
    assert seen == ([(1, real)] if "packed_attention" in report.applied() else [tuple(batch["input_ids"].shape)])
    assert_same_step(step, reference, f"{family.name} {method}")


def test_speedups_off_change_nothing(family):
    import trl.trainer.utils as trl_utils

    tok = family.tokenizer()
    batch = training_batch(tok)
    reference = trl_step(adapted(family, tok, "lora", TRAIN_INIT), batch)
    model = adapted(family, tok, "lora", TRAIN_INIT)
    impl = model.get_base_model().config._attn_implementation
    original = trl_utils._use_triton
    report = apply_training(model, "cpu", "float32", TRAIN_MAX_LENGTH, "off")
    assert report.applied() == [] and all("switched off" in why for why in report.skipped().values())
    with report.scope():
        assert trl_utils._use_triton is original  # TRL's private function is not wrapped, even inside the scope
        step = trl_step(model, batch)
    assert trl_utils._use_triton is original
    assert model.get_base_model().config._attn_implementation == impl
    patched = [n for n, m in model.named_modules() if hasattr(m, "_studio_adapter") or hasattr(m, "_studio_fused_norm")]
    assert patched == []
    assert_same_step(step, reference, f"{family.name} off")


def test_bf16_training_speedups_stay_as_close_to_float32_as_the_library(family):
    """bf16 LoRA (the CPU default where bf16 matrix products are fast): packed rows then take the grouped
    bf16 attention. bf16 rounds differently on each path, so the check is the one that matters: the
    speed-ups' loss and gradients are no further from exact float32 than the library's own bf16 path."""
    tok = family.tokenizer()
    batch = training_batch(tok)
    exact = trl_step(adapted(family, tok, "lora", TRAIN_INIT), batch)
    library = trl_step(adapted(family, tok, "lora", TRAIN_INIT, dtype=torch.bfloat16), batch)
    model = adapted(family, tok, "lora", TRAIN_INIT, dtype=torch.bfloat16)
    report = apply_training(model, "cpu", "bfloat16", TRAIN_MAX_LENGTH, "auto")
    packed = EXPECTED[family.name]["packed_attention"] is None
    assert ("grouped_bf16_attention" in report.applied()) == packed, report.summary()
    with report.scope():
        ours = trl_step(model, batch)
    loss_err = lambda step: abs(float(step[0]) - float(exact[0]))  # noqa: E731
    assert loss_err(ours) <= 1.5 * loss_err(library) + 1e-3 * float(exact[0]), (ours[0], library[0], exact[0])
    assert ours[1].keys() == exact[1].keys()
    mean_err = lambda step: sum(rel_err(step[1][n], g) for n, g in exact[1].items()) / len(exact[1])  # noqa: E731
    assert mean_err(ours) <= 1.5 * mean_err(library) + 1e-3, (mean_err(ours), mean_err(library))


SLIDING_FAMILIES = [f for f in FAMILIES if EXPECTED[f.name]["packed_attention"]]


@pytest.mark.parametrize("family", [f.name for f in SLIDING_FAMILIES], indirect=True)
def test_a_window_no_shorter_than_the_rows_is_packed_unless_soft_capped(family):
    """With max_length <= the window nothing is cut: Mistral and Gemma 3 pack (and still match the
    library); Gemma 2 still does not, for its soft-capped attention logits."""
    tok = family.tokenizer()
    full = training_batch(tok)
    batch = {k: v[:, :WINDOW] for k, v in full.items()}  # every row WINDOW tokens long
    reference = trl_step(adapted(family, tok, "lora", TRAIN_INIT), batch)
    model = adapted(family, tok, "lora", TRAIN_INIT)
    report = apply_training(model, "cpu", "float32", WINDOW, "auto")
    soft_capped = getattr(model.get_base_model().config, "attn_logit_softcapping", None)
    if soft_capped:
        assert "soft-capping" in packing_unsafe_reason(model, WINDOW)
        assert "packed_attention" not in report.applied()
    else:
        assert "packed_attention" in report.applied(), report.summary()
        assert model.get_base_model().config._attn_implementation == PACKED_ATTENTION
    with report.scope():
        step = trl_step(model, batch)
    assert_same_step(step, reference, f"{family.name} window >= max_length")


def lora_model(family: Family, tok, init: float, dora: bool = False, seed: int = 2):
    """The family's model with a LoRA (or DoRA) adapter whose B is not zero: tuned answers differ from base."""
    from peft import get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(family.build(tok, seed=seed, init=init), studio_lora_config("dora" if dora else "lora"))
    randomise_lora_b(model, seed + 1)
    return model.eval()


# -- (b) batched held-out generation ---------------------------------------------------------------------------
@pytest.mark.parametrize("tuned, dora", [(False, False), (True, False), (True, True)],
                         ids=["base", "tuned", "dora-tuned"])
def test_batched_generation_gives_each_row_its_own_greedy_answer(family, tuned, dora, monkeypatch):
    """Both sides of a LoRA run, as held-out evaluation generates them: the base side with the
    adapter switched off (its shared opening too), the tuned side with it on; and a DoRA run's tuned side."""
    import transformers.integrations.sdpa_attention as sdpa

    from finetune_core.speedups.decode_attention import DECODE_GROUP

    kernel_calls = []  # (rows, query length) of each SDPA call: a decode step split into groups shows
    real_sdpa = sdpa.sdpa_attention_forward

    def sdpa_spy(module, query, *args, **kwargs):
        kernel_calls.append(tuple(query.shape[::2]))
        return real_sdpa(module, query, *args, **kwargs)

    monkeypatch.setattr(sdpa, "sdpa_attention_forward", sdpa_spy)
    tok = family.tokenizer()
    prompts = chat_prompts()
    model = lora_model(family, tok, family.gen_init, dora=dora)
    studio = InferenceModel(model, family.tokenizer(), POLICY)
    e = EXPECTED[family.name]
    for name in ("prefilled_kv_cache", "trimmed_decode_attention"):
        if e[name] is None:
            assert name in studio.speedups.applied(), studio.speedups.summary()
        else:
            assert e[name] in studio.speedups.skipped().get(name, ""), studio.speedups.summary()
    calls = []  # what the studio's batched generate computed: inputs, tokens and per-step logits
    prefilled = []  # whether generate continued from the per-row prefilled caches

    def spy(*args, _real=model.generate, **kwargs):
        out = _real(*args, **kwargs, return_dict_in_generate=True, output_logits=True)
        calls.append((kwargs["input_ids"], kwargs["attention_mask"], out))
        prefilled.append(kwargs.get("past_key_values") is not None)
        return out.sequences

    model.generate = spy
    answers = studio.generate(prompts, tuned=tuned, settings=GenSettings(max_new_tokens=NEW_TOKENS))
    assert [ids.shape[0] for ids, _, _ in calls] == [len(prompts)]  # one batch, larger than a decode group
    # the speed-ups the report claims did run: prefilled caches, decode steps read by groups of DECODE_GROUP rows
    assert prefilled == [e["prefilled_kv_cache"] is None]
    assert ((DECODE_GROUP, 1) in kernel_calls) == (e["trimmed_decode_attention"] is None)
    rows = {}  # prompt tokens -> (new tokens, logits) of that row in its batch
    for ids, mask, out in calls:
        width = ids.shape[1]
        for b in range(ids.shape[0]):
            key = tuple(ids[b][mask[b].bool()].tolist())
            rows[key] = (out.sequences[b, width:].tolist(), torch.stack(out.logits, 1)[b])
    # a fresh copy: the studio switched its copy's attention
    reference_model = lora_model(family, tok, family.gen_init, dora=dora)
    decisive = total = 0
    for i, messages in enumerate(prompts):
        with contextlib.nullcontext() if tuned else reference_model.disable_adapter():
            ref_tokens, ref_logits = alone(reference_model, tok, messages)
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        got_tokens, got_logits = rows[tuple(tok(text, add_special_tokens=False)["input_ids"])]
        total += len(ref_tokens)
        for step, want in enumerate(ref_tokens):
            torch.testing.assert_close(got_logits[step], ref_logits[step], **LOGIT_TOL,
                                       msg=lambda m: f"prompt {i}, step {step}: {m}")
            if gap(ref_logits[step]) < MARGIN:  # a near tie: rounding may pick either, and later steps differ
                if got_tokens[step] != want:
                    break
                continue
            assert got_tokens[step] == want, f"prompt {i}, step {step}"
            decisive += 1
        else:
            assert answers[i] == tok.decode(ref_tokens, skip_special_tokens=True).strip(), f"prompt {i}"
    assert decisive >= total // 2, f"only {decisive} of {total} greedy steps were decisive: the fixture is too flat"
    # the answers vary from row to row: the equality above is not one constant answer
    assert len({tuple(tokens) for tokens, _ in rows.values()}) > 2


# -- (c) side-by-side chat -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_side_by_side_chat_streams_base_and_tuned(family, dora):
    """LoRA shares one batch between the sides (PEFT's adapter_names); DoRA, which PEFT
    refuses there, streams base then tuned."""
    tok = family.tokenizer()
    messages = [{"role": "user", "content": "Which colour is the red ball?"}]
    reference = lora_model(family, tok, family.gen_init, dora=dora)
    with reference.disable_adapter():
        base_tokens, base_logits = alone(reference, tok, messages)
    tuned_tokens, tuned_logits = alone(reference, tok, messages)
    assert base_tokens != tuned_tokens, "the adapter changes nothing: the pair would not be told apart"
    # Stream only as many tokens as both sides choose clearly (see MARGIN): equal texts are then required.
    n = min(decisive_steps(base_logits, base_tokens), decisive_steps(tuned_logits, tuned_tokens))
    assert n >= 3, f"the fixture's greedy answers are near ties after {n} tokens"
    settings = GenSettings(max_new_tokens=n)
    studio = InferenceModel(lora_model(family, tok, family.gen_init, dora=dora), family.tokenizer(), POLICY)
    snapshots = list(studio.stream_pair(messages, messages, settings))
    assert len(snapshots) >= 2  # it streams: a snapshot per token, not one at the end

    def words(ids: list[int]) -> str:  # as the streamer shows a side: up to eos, special tokens dropped
        return tok.decode([t for t in ids[:n] if t != tok.eos_token_id], skip_special_tokens=True)

    assert snapshots[-1] == (words(base_tokens), words(tuned_tokens))
    *_, (base_alone, _) = studio.stream_pair(messages, None, settings)
    *_, (_, tuned_alone) = studio.stream_pair(None, messages, settings)
    assert (base_alone, tuned_alone) == snapshots[-1]


def test_a_failed_side_by_side_turn_leaves_the_model_answering():
    """The chat model is shared by every visitor: one turn failing mid-generation (out of memory, say)
    must not break the next ones."""
    family = BY_NAME["llama"]
    tok = family.tokenizer()
    messages = [{"role": "user", "content": "Which colour is the red ball?"}]
    model = lora_model(family, tok, family.gen_init)
    studio = InferenceModel(model, family.tokenizer(), POLICY)
    settings = GenSettings(max_new_tokens=3)
    expected = list(studio.stream_pair(messages, messages, settings))[-1]
    failures = [RuntimeError("out of memory")]

    def fail_once(module, args):
        if failures:
            raise failures.pop()

    handle = model.get_base_model().get_input_embeddings().register_forward_pre_hook(fail_once)
    with pytest.raises(RuntimeError, match="out of memory"):
        list(studio.stream_pair(messages, messages, settings))
    handle.remove()
    assert list(studio.stream_pair(messages, messages, settings))[-1] == expected
    assert studio.generate([messages], tuned=True, settings=settings) == [expected[1].strip()]


# -- (d) merge ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_merged_model_gives_the_adapters_logits(family, dora, runs_root, tmp_path):
    from finetune_core.config import RunConfig
    from finetune_core.export.artifacts import merged_model
    from finetune_core.runs.store import create_run

    tok = family.tokenizer()
    folder = tmp_path / family.name
    family.build(tok, seed=2, init=TRAIN_INIT).save_pretrained(folder)
    tok.save_pretrained(folder)
    run = create_run(RunConfig.from_dict(dict(model=str(folder), data_path="x.jsonl", method="lora", use_dora=dora)))
    adapter = lora_model(family, tok, TRAIN_INIT, dora=dora)  # same seed: the base weights saved above
    adapter.save_pretrained(run.adapter_dir)
    merged = merged_model(run).eval()
    assert not hasattr(merged, "peft_config")
    ids = training_batch(tok)["input_ids"][:, :12]
    with torch.inference_mode():
        want = adapter(input_ids=ids).logits
        with adapter.disable_adapter():
            base = adapter(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    assert rel_err(base, want) > 1e-2  # the adapter matters: equal logits below are not the base's
    assert rel_err(got, want) < 1e-5, rel_err(got, want)


# -- (e) GGUF ------------------------------------------------------------------------------------------------------
def test_gguf_export_writes_or_refuses_up_front(family, runs_root, tmp_path, monkeypatch):
    """Written families give a file of llama.cpp's architecture holding every weight (tests/test_gguf_families.py
    runs it in llama.cpp); a matrix model with a setting llama.cpp runs differently, and every other family, is
    refused before any work (no merge, no file), naming its architecture."""
    from finetune_core.export import artifacts as export
    from finetune_core.config import RunConfig
    from finetune_core.export.gguf import GGUFExportError, write_gguf
    from finetune_core.runs.store import create_run

    tok = family.tokenizer()
    folder = tmp_path / "model"
    model = family.build(tok, seed=2)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    out = tmp_path / "out"
    refusal = EXPECTED[family.name]["gguf"]
    if refusal is None and family.name in GGUF_LAYOUT:
        refusal = GGUF_LAYOUT[family.name][1]  # this model is refused; the family's llama.cpp layout is written
        written = tmp_path / "gguf-layout"
        layout = gguf_model(family, tok, seed=2)
        layout.save_pretrained(written)
        tok.save_pretrained(written)
        _check_gguf_file(write_gguf(written, tmp_path / "layout" / "m.gguf"), layout)
    if refusal is None:
        _check_gguf_file(write_gguf(folder, out / "m.gguf"), model)
        assert [p.name for p in out.iterdir()] == ["m.gguf"]
        return
    with pytest.raises(GGUFExportError, match=re.escape(family.architecture)) as caught:
        write_gguf(folder, out / "m.gguf")
    assert refusal in str(caught.value)
    assert not out.exists() or not any(out.iterdir())
    # From a run: refused before the adapter is merged (a merge is the expensive part on a real model).
    run = create_run(RunConfig.from_dict(dict(model=str(folder), data_path="x.jsonl")))
    lora_model(family, tok, 0.02).save_pretrained(run.adapter_dir)
    monkeypatch.setattr(export, "merge", lambda *a, **k: pytest.fail("merged before refusing"))
    with pytest.raises(GGUFExportError, match=re.escape(family.architecture)):
        export.export_gguf(run, out / "run.gguf")
    assert not out.exists() or not any(out.iterdir())


def _check_gguf_file(path, model) -> None:
    """The file is of llama.cpp's architecture for the model and holds every weight (a tied head once)."""
    from gguf import GGUFReader

    from finetune_core.export.gguf_arch import SPECS

    reader = GGUFReader(str(path))
    assert reader.fields["general.architecture"].contents() == SPECS[model.config.model_type].arch
    tied = int(bool(model.config.tie_word_embeddings))
    assert len(reader.tensors) == len(model.state_dict()) - tied


# -- the family table ------------------------------------------------------------------------------------------------
def test_every_family_has_an_expected_row():
    assert set(EXPECTED) == {f.name for f in FAMILIES}
    table = render_table().splitlines()
    assert table[0] == "| " + " | ".join(HEADER) + " |" and len(table) == 2 + len(FAMILIES)


def test_docs_family_table_is_what_the_matrix_tests():
    """docs/model-matrix.md holds exactly the rendered table (regenerate: python tests/model_families.py)."""
    doc = (REPO / "docs" / "model-matrix.md").read_text(encoding="utf-8")
    table = render_table()
    assert table in doc, "docs/model-matrix.md is out of date: paste `python tests/model_families.py` into it"
    lines = [line for line in doc.splitlines() if line.startswith("|")]
    assert "\n".join(lines) + "\n" == table, "docs/model-matrix.md has table rows the matrix does not test"
