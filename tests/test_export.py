"""Export and share: adapter zip, merged model, GGUF round trip, report, model card, Hub push, CLI.

The session's tiny trained run (tests/conftest.py) is merged once per module;
the GGUF files are written from it through the command line and read back
with transformers' own GGUF loader. References for the exact comparisons are
the merged model with its matrices rounded the way the file stores them (f16,
or Q8_0 quantise + dequantise), so a wrong name, layout or Q/K permutation
shows as a different weight or a different greedy answer, while float
rounding alone cannot make the test flaky. One slow test does the same with
the real bundled model.
"""
from __future__ import annotations

import json
import re
import shutil
import time
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from evaluation.compare import compare
from evaluation.model_card import card_files, model_card
from finetune_core.__main__ import main
from finetune_core.export.artifacts import ExportError, adapter_zip, merge, push_to_hub
from finetune_core.inference.generation import GenSettings, InferenceModel
from finetune_core.export.gguf import GGUFExportError, llama3_rope_factors, permute_rope, write_gguf
from finetune_core.models.sources import device_policy
from evaluation.report import report
from finetune_core.runs.store import Run

PROMPTS = ["Item 3: which colour is the red ball number 3?", "Item 8: which colour is the blue ball number 8?",
           "Hello there! 12345", "Write one word."]
TOKEN = "hf_" + "S3cr3tT0kenValue0123456789abcdef"


# -- helpers -------------------------------------------------------------------------------------------
def load_plain(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(folder))


def load_gguf(path: Path, with_tokenizer: bool = True):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name) if with_tokenizer else None
    return model, tok


def greedy(model, tok, prompts=PROMPTS, new_tokens: int = 8) -> list[list[int]]:
    """Greedy continuation ids of each chat prompt (one at a time: no padding effects)."""
    out = []
    for prompt in prompts:
        enc = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
        out.append(ids[0, enc["input_ids"].shape[1]:].tolist())
    return out


def first_logits(model, tok, prompt=PROMPTS[0]) -> torch.Tensor:
    enc = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        return model(**enc).logits[0, -1]


def round_matrices(model, fn) -> None:
    """Apply the file's storage rounding to every matrix (1-D norms stay float32, as in the file)."""
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim >= 2:
                param.copy_(fn(param.detach()))


def f16(w: torch.Tensor) -> torch.Tensor:
    return w.half().float()


def q8_0(w: torch.Tensor) -> torch.Tensor:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    if w.shape[-1] % 32:
        return f16(w)
    data = quantize(w.numpy(), GGMLQuantizationType.Q8_0)
    return torch.from_numpy(dequantize(data, GGMLQuantizationType.Q8_0).reshape(w.shape).copy())


class Tags(HTMLParser):
    """The tags and their attributes of an HTML page, as a browser's parser sees them."""

    def __init__(self, page: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def gguf_fields(path: Path) -> tuple[dict, dict]:
    """(metadata {key: value}, tensors {name: type name}) via the gguf package's reader."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    meta = {}
    for key, fld in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key.endswith(("tokens", "merges", "token_type")):
            meta[key] = len(fld.data)
        else:
            meta[key] = fld.contents()
    return meta, {t.name: t.tensor_type.name for t in reader.tensors}


# -- fixtures ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def merged_dir(trained_run, tmp_path_factory) -> Path:
    return merge(trained_run, tmp_path_factory.mktemp("merge") / "merged")


@pytest.fixture(scope="module")
def gguf_f16(trained_run, tmp_path_factory) -> Path:
    """The run exported to GGUF f16 through the command line (merge + write)."""
    out = tmp_path_factory.mktemp("gguf-f16") / "tiny-f16.gguf"
    # the file's own checks are below; its parity check (tests/test_parity.py) is skipped here
    assert main(["export", "--run", str(trained_run.path), "--gguf", str(out), "--parity-prompts", "0"]) == 0
    return out


@pytest.fixture()
def report_run(trained_run, tmp_path) -> Run:
    """A copy of the trained run with an evaluation whose texts try to inject HTML, and votes."""
    run = Run(tmp_path / "runs" / trained_run.id)
    shutil.copytree(trained_run.path, run.path)
    shutil.rmtree(run.eval_dir, ignore_errors=True)
    hostile = "<script>alert('pwned')</script> <img src=http://evil.example/x.png>"
    compare("generation", ["colour of ball 1?", f"ball 2 {hostile}", "ball 3?"], ["red", "blue", "red"],
            ["blue", "blue", "red"], ["red", hostile, "blue"]).save(run.eval_dir)
    votes = [{"winner": "tuned"}, {"winner": "tuned"}, {"winner": "base"}, {"winner": "tie"}]
    (run.path / "votes.jsonl").write_text("\n".join(map(json.dumps, votes)) + "\nnot json\n", encoding="utf-8")
    return run


# -- adapter zip and merge ---------------------------------------------------------------------------------
def test_adapter_zip_never_shows_server_paths(trained_run, tmp_path):
    run = Run(tmp_path / "runs" / trained_run.id)
    shutil.copytree(trained_run.path, run.path)
    data = trained_run.run_yaml()
    data.update(data_path="/srv/studio/uploads/20260101-abc.jsonl", eval_path="/srv/studio/uploads/e.csv")
    (run.path / "run.yaml").write_text(yaml.safe_dump(data))
    with zipfile.ZipFile(adapter_zip(run, tmp_path / "out" / "adapter.zip")) as zf:
        shared = zf.read("run.yaml").decode()
    assert "/srv" not in shared
    assert yaml.safe_load(shared)["data_path"] == "20260101-abc.jsonl"
    assert yaml.safe_load(shared)["eval_path"] == "e.csv"


def test_adapter_zip_holds_adapter_tokenizer_and_run_yaml(trained_run, tmp_path):
    out = adapter_zip(trained_run, tmp_path / "a" / "adapter.zip", card_files=card_files(trained_run, curve=False))
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        shared = yaml.safe_load(zf.read("run.yaml"))
        # the config that reproduces the run; the base model's server folder is reduced to its name
        assert shared == {**trained_run.run_yaml(), "model": Path(trained_run.config().model).name}
        card = zf.read("README.md").decode()
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert f"adapter/{name}" in names
    assert not any(n.startswith(("checkpoints/", "data/")) for n in names)
    assert "library_name: peft" in card
    assert [p.name for p in out.parent.iterdir()] == ["adapter.zip"]  # no temporary left behind


def test_merged_model_answers_like_the_adapter(trained_run, merged_dir):
    files = {p.name for p in merged_dir.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= files
    assert "adapter_config.json" not in files
    model, tok = load_plain(merged_dir)  # plain transformers, no PEFT
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    settings = GenSettings(max_new_tokens=8)
    adapter = InferenceModel.from_run(trained_run)
    merged = InferenceModel(model, tok, device_policy("cpu"))
    assert merged.generate(prompts, tuned=False, settings=settings) == adapter.generate(prompts, True, settings)
    enc = tok(["Item 3: which colour"], return_tensors="pt")
    with torch.inference_mode():
        torch.testing.assert_close(model(**enc).logits, adapter.model(**enc).logits, atol=1e-4, rtol=1e-4)


def test_merge_refuses_a_non_empty_folder(trained_run, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        merge(trained_run, tmp_path)


# -- GGUF ----------------------------------------------------------------------------------------------------
def test_gguf_f16_file_layout(gguf_f16, merged_dir):
    meta, tensors = gguf_fields(gguf_f16)
    config = json.loads((merged_dir / "config.json").read_text())
    assert meta["general.architecture"] == "llama"
    assert meta["llama.block_count"] == config["num_hidden_layers"]
    assert meta["llama.attention.head_count_kv"] == config["num_key_value_heads"]
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "smollm"
    assert meta["tokenizer.ggml.tokens"] == config["vocab_size"] and meta["tokenizer.ggml.merges"] > 40_000
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert "<|im_start|>" in meta["tokenizer.chat_template"]
    assert "output.weight" not in tensors  # tied head: llama.cpp reuses token_embd
    assert tensors["blk.0.attn_norm.weight"] == "F32" and tensors["blk.1.attn_q.weight"] == "F16"
    assert len(tensors) == 2 + 9 * config["num_hidden_layers"]


def test_gguf_f16_round_trip(gguf_f16, merged_dir):
    model, tok = load_gguf(gguf_f16)
    ref, ref_tok = load_plain(merged_dir)
    text = "Hello world 123 <|im_start|>user\nhi<|im_end|> naïve"
    assert tok(text)["input_ids"] == ref_tok(text)["input_ids"]
    assert tok.chat_template == ref_tok.chat_template
    float_logits = first_logits(ref, ref_tok)
    round_matrices(ref, f16)
    for name, weight in ref.state_dict().items():  # names, layout and the Q/K permutation undone exactly
        assert torch.equal(model.state_dict()[name], weight), name
    assert greedy(model, tok) == greedy(ref, ref_tok)
    torch.testing.assert_close(first_logits(model, tok), float_logits, atol=2e-3, rtol=1e-3)


def test_gguf_q8_0_round_trip(merged_dir, gguf_f16, tmp_path):
    path = write_gguf(merged_dir, tmp_path / "tiny-q8_0.gguf", "q8_0")
    _, tensors = gguf_fields(path)
    assert tensors["blk.0.attn_q.weight"] == "Q8_0" and tensors["token_embd.weight"] == "Q8_0"
    assert tensors["blk.0.ffn_norm.weight"] == "F32"
    assert path.stat().st_size < 0.8 * gguf_f16.stat().st_size  # 8.5 bits a weight instead of 16, same vocab
    model, _ = load_gguf(path, with_tokenizer=False)
    ref, tok = load_plain(merged_dir)
    float_logits = first_logits(ref, tok)
    round_matrices(ref, q8_0)
    for name, weight in ref.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], weight, atol=1e-6, rtol=0, msg=name)
    assert greedy(model, tok) == greedy(ref, tok)
    # against the float model: 8-bit weights move logits a little, not the ranking
    logits = first_logits(model, tok)
    assert torch.nn.functional.cosine_similarity(logits, float_logits, dim=0) > 0.999
    assert int(logits.argmax()) == int(float_logits.argmax())
    # near-ties may swap places (a random tiny model has many), the leading tokens stay the same
    assert len(set(logits.topk(5).indices.tolist()) & set(float_logits.topk(5).indices.tolist())) >= 4


def test_permutation_is_what_transformers_undoes():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    undo = LlamaTensorProcessor(config={"num_attention_heads": 4, "num_key_value_heads": 2})
    q, k = np.random.rand(32, 16).astype(np.float32), np.random.rand(16, 16).astype(np.float32)
    assert np.array_equal(undo.process(permute_rope(q, 4, 4), "blk.0.attn_q.weight").weights, q)
    assert np.array_equal(undo.process(permute_rope(k, 4, 2), "blk.0.attn_k.weight").weights, k)
    assert not np.array_equal(permute_rope(q, 4, 4), q)


def test_llama3_rope_scaling_factors():
    config = {"hidden_size": 64, "num_attention_heads": 4, "rope_parameters": {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
    factors = llama3_rope_factors(config)
    assert factors.shape == (8,) and factors[0] == 1.0 and factors[-1] == 8.0
    assert llama3_rope_factors({**config, "rope_parameters": {"rope_theta": 1e4}}) is None


def test_gguf_refuses_other_architectures(tmp_path, tokenizer):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    folder = tmp_path / "gemma2"
    Gemma2ForCausalLM(Gemma2Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, head_dim=8)).save_pretrained(folder)
    with pytest.raises(GGUFExportError, match=re.escape("GGUF export: Gemma2ForCausalLM is not supported")):
        write_gguf(folder, tmp_path / "q.gguf")
    assert not list(tmp_path.glob("*.gguf*")) and not list(tmp_path.glob(".q.gguf*"))


def test_gguf_refuses_an_unknown_type(merged_dir, tmp_path):
    with pytest.raises(GGUFExportError, match="q4_k"):
        write_gguf(merged_dir, tmp_path / "x.gguf", "q4_k")


# -- report --------------------------------------------------------------------------------------------------
def test_report_is_one_self_contained_escaped_page(report_run, tmp_path):
    html_path, md_path = report(report_run, tmp_path / "rep")
    page = html_path.read_text(encoding="utf-8")
    tags = Tags(page).tags
    names = {tag for tag, _ in tags}
    assert not names & {"script", "link", "iframe", "object", "embed"}
    for tag, attrs in tags:  # nothing loaded from elsewhere: the only source is the inline PNG
        for key in ("src", "href", "srcset", "action"):
            assert not attrs.get(key) or attrs[key].startswith("data:image/png;base64,"), (tag, attrs)
    assert [tag for tag, _ in tags].count("img") == 1 and "url(" not in page and "@import" not in page
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page
    assert "data:image/png;base64," in page
    for metric in ("rouge1", "rougeL", "exact_match"):
        assert f"<td>{metric}</td>" in page
    assert "Biggest wins" in page and "Biggest losses" in page
    assert "4 blind votes" in page and "67%" in page  # 2 of 3 decided votes
    assert "toy.jsonl" in page and "prompt completion" in page and "lora" in page
    text = md_path.read_text(encoding="utf-8")
    assert "<script" not in text and "&lt;script&gt;" in text and "http://evil" not in text
    assert "| rouge1 |" in text and "![Training loss](loss_curve.png)" in text
    assert (md_path.parent / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_report_of_an_unevaluated_run_says_so(trained_run, tmp_path):
    run = Run(tmp_path / trained_run.id)
    shutil.copytree(trained_run.path, run.path)
    shutil.rmtree(run.eval_dir, ignore_errors=True)
    (run.path / "votes.jsonl").unlink(missing_ok=True)
    html_path, md_path = report(run, tmp_path / "out")
    for text in (html_path.read_text(), md_path.read_text()):
        assert "Not evaluated yet" in text and "No blind votes" in text


# -- model card and Hub -------------------------------------------------------------------------------------
def test_model_card_describes_the_run_and_holds_no_token(report_run, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    card = model_card(report_run, what="merged")
    from huggingface_hub import ModelCard

    assert card.startswith("---\n") and ModelCard(card).data.library_name == "transformers"
    assert "toy.jsonl" in card and "learning_rate" in card and "![Training loss](loss_curve.png)" in card
    assert "| rouge1 |" in card and "&lt;script&gt;" in card
    assert TOKEN not in card and TOKEN not in (report_run.path / "run.yaml").read_text()


def test_the_card_files_go_into_the_zip_and_the_upload_as_given(report_run, tmp_path):
    from finetune_core.export.artifacts import _stage_upload

    with zipfile.ZipFile(adapter_zip(report_run, tmp_path / "bare.zip")) as zf:
        assert "README.md" not in zf.namelist()  # no card passed, none added (PEFT's template neither)
    card = card_files(report_run, "adapter", curve=False)
    assert list(card) == ["README.md"] and b"![Training loss]" not in card["README.md"]
    with zipfile.ZipFile(adapter_zip(report_run, tmp_path / "card.zip", card_files=card)) as zf:
        assert zf.read("README.md") == card["README.md"] == model_card(report_run, "adapter", None).encode()
    files = card_files(report_run, "merged")
    assert files["loss_curve.png"][:4] == b"\x89PNG" and b"![Training loss](loss_curve.png)" in files["README.md"]
    _stage_upload(report_run, "adapter", tmp_path / "stage", files)
    assert {p.name: p.read_bytes() for p in (tmp_path / "stage").iterdir() if p.name in files} == files


def test_push_offline_fails_fast_and_clearly(trained_run, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ExportError, match="offline") as err:
        push_to_hub(trained_run, "someone/tiny-model", TOKEN)
    assert time.perf_counter() - start < 10 and TOKEN not in str(err.value)


def test_push_without_network_fails_fast(trained_run, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # never resolves, with or without network
    start = time.perf_counter()
    with pytest.raises(ExportError, match="not reachable") as err:
        push_to_hub(trained_run, "someone/tiny-model", TOKEN, what="merged")
    assert time.perf_counter() - start < 10 and TOKEN not in str(err.value)


@pytest.mark.parametrize("repo_id", ["", "noslash", "a/b/c", "../etc", "a/..", "a b/c", "<x>/y", "a/" + "b" * 97])
def test_push_refuses_bad_repo_ids(trained_run, repo_id):
    with pytest.raises(ExportError, match="repo id"):
        push_to_hub(trained_run, repo_id, TOKEN)


def test_push_needs_a_token_and_never_falls_back_to_the_servers(trained_run, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the server's own token is the caller's decision, never a fallback
    with pytest.raises(ExportError, match="token"):
        push_to_hub(trained_run, "someone/tiny-model", "")


# -- command line --------------------------------------------------------------------------------------------
def test_cli_adapter_zip_and_report(trained_run, tmp_path, capsys):
    assert main(["export", "--run", str(trained_run.path), "--adapter-zip", str(tmp_path / "a.zip")]) == 0
    assert zipfile.is_zipfile(tmp_path / "a.zip")
    assert main(["report", "--run", str(trained_run.path), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'a.zip'}" in out
    assert f"report: {tmp_path / 'rep' / 'report.html'}" in out and (tmp_path / "rep" / "report.md").is_file()


def test_cli_merged_and_gguf_exports_end_with_their_parity_verdict(trained_run, tmp_path, capsys):
    run = Run(tmp_path / "runs" / trained_run.id)
    shutil.copytree(trained_run.path, run.path)
    assert main(["export", "--run", str(run.path), "--merged", str(tmp_path / "m"), "--parity-prompts", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"wrote {tmp_path / 'm'}", "parity: 3/3 identical in transformers, token agreement 100.0%"]
    assert main(["export", "--run", str(run.path), "--gguf", str(tmp_path / "t.gguf"), "--parity-prompts", "0"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 't.Modelfile'}" in out and "FROM ./t.gguf" in (tmp_path / "t.Modelfile").read_text()
    assert out.strip().endswith("parity not checked: skipped (0 prompts asked for)")
    assert main(["export", "--run", str(run.path), "--merged", str(tmp_path / "m2"), "--parity-prompts", "-1"]) == 2


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["export", "--run", str(tmp_path), "--merged", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err.startswith("error: ") and not (tmp_path / "m").exists()
    with pytest.raises(SystemExit):
        main(["export", "--run", str(tmp_path)])  # one of --adapter-zip / --merged / --gguf is required


# -- the real model --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_bundled_model_gguf_round_trip(runs_root, tmp_path):
    """A LoRA adapter with small non-zero weights on the bundled model, merged and
    written as GGUF f16: transformers reads it back and answers as the merged model."""
    from conftest import make_bundled_lora_run
    from finetune_core.export.artifacts import export_gguf

    run, _tok = make_bundled_lora_run()
    path = export_gguf(run, tmp_path / "smollm2-merged-f16.gguf")
    merged, merged_tok = load_plain(merge(run, tmp_path / "merged"))
    model, gguf_tok = load_gguf(path)
    question = ["What is the capital of France?"]
    answer = greedy(merged, merged_tok, question, new_tokens=12)
    assert greedy(model, gguf_tok, question, new_tokens=12) == answer
    assert "Paris" in merged_tok.decode(answer[0])
