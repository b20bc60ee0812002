"""The export parity check (issue 22): an exported model answers the held-out prompts as the app does.

Merged folders are checked with transformers, GGUF files with llama.cpp itself (tests marked
`llamacpp`, skipped with the reason when llama-cpp-python is not installed: `make test` installs
it). A broken export (a lost chat template, a wrong end-of-turn token, changed weights) must show as
a difference, with the first differing prompt named.
"""
from __future__ import annotations

import json
import shutil

import pytest

from finetune_core.__main__ import main
from finetune_core.export.artifacts import export_gguf, merge
from finetune_core.export.parity import (LLAMACPP_HINT, ParityResult, check_export, compare, heldout_conversations,
                                         llama_cpp_available, load_parity, parity_markdown)
from finetune_core.runs.store import run_from_dir

needs_llamacpp = pytest.mark.skipif(not llama_cpp_available(),
                                    reason=f"llama-cpp-python is not installed: {LLAMACPP_HINT}")


@pytest.fixture()
def run(trained_run, tmp_path):
    """A private copy of the shared tiny run: the check writes its record into the run."""
    folder = tmp_path / "runs" / trained_run.path.name
    shutil.copytree(trained_run.path, folder)
    return run_from_dir(folder)


# -- the arithmetic -----------------------------------------------------------------------------------
def test_compare_counts_identical_answers_and_agreement_up_to_the_first_difference():
    reference = [[1, 2, 3], [4, 5, 6, 7], [8, 9]]
    exported = [[1, 2, 3], [4, 5, 0, 7], [8, 9, 10]]
    identical, agreement, first = compare(reference, exported)
    assert identical == 1 and first == 1
    # 3 of 3, then 2 of 4 (a token after a difference does not count), then 2 of the longer 3
    assert agreement == pytest.approx((3 + 2 + 2) / (3 + 4 + 3))
    assert compare([[1, 2]], [[1, 2]]) == (1, 1.0, None)


def test_verdicts_read_plainly():
    ok = ParityResult("gguf-f16", "llama.cpp", checked=True, prompts=20, identical=20, token_agreement=1.0,
                      prompt_tokens_match=20)
    assert ok.verdict() == "parity: 20/20 identical in llama.cpp, token agreement 100.0%" and ok.passed()
    q8 = ParityResult("gguf-q8_0", "llama.cpp", checked=True, prompts=20, identical=17, token_agreement=0.963,
                      gated=False, prompt_tokens_match=20)
    assert q8.verdict().startswith("parity (q8_0): 17/20 identical in llama.cpp") and q8.passed() is None
    bad = ParityResult("gguf-f16", "llama.cpp", checked=True, prompts=4, identical=0, prompt_tokens_match=1)
    assert bad.passed() is False and "prompt tokens for only 1 of 4 prompts" in bad.verdict()
    assert ParityResult.from_dict({**ok.to_dict(), "future_field": 1}) == ok


def test_held_out_prompts_become_conversations_without_their_answers(run):
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                          {"role": "assistant", "content": "Hello."}]},
            {"prompt": "Plain prompt", "completion": "x"},
            {"prompt": "Plain prompt", "completion": "again"},  # asked twice: checked once
            {"text": "language modelling row"}, "not a row"]
    (run.data_dir / "heldout.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    assert heldout_conversations(run, 5) == [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
        [{"role": "user", "content": "Plain prompt"}]]
    assert len(heldout_conversations(run, 1)) == 1


# -- merged folders (transformers) ---------------------------------------------------------------------
def test_a_merged_export_answers_like_the_app_and_the_run_keeps_the_verdict(run, tmp_path):
    folder = merge(run, tmp_path / "merged")
    result = check_export(run, folder, "merged", n=20)
    assert result.checked and result.prompts == len(heldout_conversations(run)) >= 5
    assert result.identical == result.prompts and result.token_agreement == 1.0 and result.passed()
    assert result.file == "merged"  # a name, never the server's path
    assert load_parity(run)["merged"].verdict() == result.verdict()
    assert "identical in transformers" in parity_markdown(result)


def test_the_apps_answers_are_reused_for_the_next_export_until_the_adapter_changes(run, tmp_path, monkeypatch):
    import finetune_core.export.parity as parity

    folder = merge(run, tmp_path / "merged")
    first = check_export(run, folder, "merged", n=3)
    calls = []
    real = parity.reference_answers

    def counted(model, *args, **kwargs):
        calls.append(type(model).__name__)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(parity, "reference_answers", counted)
    again = check_export(run, folder, "merged", n=3)
    assert len(calls) == 1 and again.identical == first.identical == 3  # only the export's side answered again
    weights = next(run.adapter_dir.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes())  # the adapter saved again (resumed, retrained): a new stamp
    check_export(run, folder, "merged", n=3)
    assert len(calls) == 3


def test_a_merged_export_with_a_lost_chat_template_is_caught_with_the_prompt_shown(run, tmp_path):
    folder = merge(run, tmp_path / "merged")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config["chat_template"] = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"  # no turn markers
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    result = check_export(run, folder, "merged", n=3)
    assert result.checked and result.identical < result.prompts and result.passed() is False
    diff = result.first_difference
    assert diff["prompt"] == heldout_conversations(run, 1)[0][-1]["content"] and diff["app"] != diff["exported"]
    text = parity_markdown(result)
    assert "First difference" in text and "| prompt | in the app | exported |" in text


def test_no_prompts_or_zero_asked_says_so_and_still_records(run, tmp_path):
    folder = merge(run, tmp_path / "merged")
    skipped = check_export(run, folder, "merged", n=0)
    assert not skipped.checked and skipped.verdict() == "parity not checked: skipped (0 prompts asked for)"
    (run.data_dir / "heldout.jsonl").write_text(json.dumps({"text": "only text"}) + "\n")
    empty = check_export(run, folder, "merged")
    assert "no held-out chat prompts" in empty.verdict() and load_parity(run)["merged"] == empty


def test_without_llama_cpp_a_gguf_export_still_works_and_says_how_to_check_it(run, tmp_path, monkeypatch):
    import finetune_core.export.parity as parity

    monkeypatch.setattr(parity, "llama_cpp_available", lambda: False)
    path = export_gguf(run, tmp_path / "tiny.gguf")
    result = check_export(run, path, "gguf-f16")
    assert path.is_file() and not result.checked and result.passed() is None
    assert "llama.cpp is not installed here" in result.verdict() and "make llamacpp" in result.verdict()
    assert check_export(run, path, "gguf-bf16").gated is False  # bf16 rounding flips near ties: reported only


def test_a_llama_cpp_crash_is_retried_without_repacked_kernels_and_never_reaches_the_app(run, tmp_path,
                                                                                       monkeypatch):
    import finetune_core.export.parity as parity

    path = export_gguf(run, tmp_path / "tiny.gguf")
    asked = []

    def worker(path, conversations, max_new_tokens, repack):
        asked.append(repack)
        if repack:
            return {"crashed": -11, "stderr": ""}
        return {"answers": [[1]] * len(conversations), "prompts": [[1]] * len(conversations)}

    monkeypatch.setattr(parity, "llama_cpp_available", lambda: True)
    monkeypatch.setattr(parity, "_worker", worker)
    result = check_export(run, path, "gguf-f16", n=2)
    assert asked == [True, False] and result.checked and result.identical == 0
    assert "--no-repack" in parity_markdown(result)
    monkeypatch.setattr(parity, "_worker", lambda *a, **k: {"crashed": -11, "stderr": ""})
    crashed = check_export(run, path, "gguf-f16", n=2)
    assert not crashed.checked and "llama.cpp crashed (exit -11)" in crashed.verdict()


# -- GGUF files (llama.cpp itself) -----------------------------------------------------------------------
@pytest.mark.llamacpp
@needs_llamacpp
def test_gguf_f16_answers_like_the_app_in_llama_cpp(run, tmp_path):
    path = export_gguf(run, tmp_path / "tiny-f16.gguf", "f16")
    result = check_export(run, path, "gguf-f16")
    assert result.checked and result.runtime == "llama.cpp" and result.prompts >= 5
    assert result.prompt_tokens_match == result.prompts  # the file's template and tokenizer: the app's prompt
    assert result.identical == result.prompts, result.first_difference
    assert load_parity(run)["gguf-f16"].passed()


@pytest.mark.llamacpp
@needs_llamacpp
def test_a_gguf_with_another_chat_template_is_caught_in_llama_cpp(run, tmp_path):
    from finetune_core.export.gguf import write_gguf

    folder = merge(run, tmp_path / "merged")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config["chat_template"] = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    path = write_gguf(folder, tmp_path / "wrong-template.gguf")
    result = check_export(run, path, "gguf-f16", n=4)
    assert result.checked and result.prompt_tokens_match == 0 and result.passed() is False
    assert "prompt tokens for only 0 of 4 prompts" in result.verdict()


@pytest.mark.llamacpp
@needs_llamacpp
def test_cli_gguf_export_ends_with_the_verdict(run, tmp_path, capsys):
    out = tmp_path / "cli.gguf"
    assert main(["export", "--run", str(run.path), "--gguf", str(out), "--qtype", "q8_0"]) == 0
    printed = capsys.readouterr().out
    assert "parity (q8_0):" in printed and "identical in llama.cpp" in printed


# -- the bundled model ------------------------------------------------------------------------------------
BUNDLED_PROMPTS = ["What is the capital of France?", "Name three primary colours.",
                   "Translate 'good morning' into French.", "What is 12 plus 30?"]


@pytest.mark.slow
@pytest.mark.llamacpp
@needs_llamacpp
def test_bundled_model_gguf_answers_like_the_app_in_llama_cpp_and_stops_at_its_end_of_turn(runs_root, tmp_path):
    """A small non-zero LoRA adapter on the bundled model, exported as GGUF f16: llama.cpp renders the
    prompts with the file's template into the app's tokens, answers as the app does and stops where the
    app stops, on the end-of-turn token stored in the file."""
    from gguf import GGUFReader

    from conftest import make_bundled_lora_run
    from finetune_core.data.dataset import write_jsonl

    run, tok = make_bundled_lora_run(target_modules=("q_proj", "v_proj"))
    write_jsonl(run.data_dir / "heldout.jsonl", [{"prompt": [{"role": "user", "content": p}],
                                                  "completion": [{"role": "assistant", "content": "-"}]}
                                                 for p in BUNDLED_PROMPTS])
    path = export_gguf(run, tmp_path / "bundled-f16.gguf", "f16")
    fields = GGUFReader(str(path)).fields

    def text(key):
        field = fields[key]
        return bytes(field.parts[field.data[0]]).decode("utf-8")

    assert text("tokenizer.chat_template") == tok.chat_template
    eos = int(fields["tokenizer.ggml.eos_token_id"].parts[-1][0])
    assert tok.convert_ids_to_tokens(eos) == "<|im_end|>"  # the turn's end, as the app stops
    result = check_export(run, path, "gguf-f16")
    assert result.prompts == 4 and result.prompt_tokens_match == 4
    assert result.identical == 4 and result.passed(), result.first_difference
    from finetune_core.export.parity import gguf_answers

    answers, _ = gguf_answers(path, [[{"role": "user", "content": BUNDLED_PROMPTS[0]}]])
    assert answers[0][-1] == eos and "Paris" in tok.decode(answers[0])
