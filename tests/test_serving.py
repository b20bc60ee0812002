"""Serving an export elsewhere: the Ollama Modelfile renders the prompt the app's chat template renders,
and the llama-server / vLLM / TGI / transformers commands name the run's files, base model and rank.

Ollama, llama-server, vLLM and TGI do not run here: the Modelfile's TEMPLATE is rendered by
`render_go` below, a small reader of exactly the Go-template subset the studio writes (quoted
literals, .Content, range over .Messages, if / else if on .Role, the first-message system test),
and compared with the tokenizer's Jinja rendering.
"""
from __future__ import annotations

import json
import re
import shlex

import pytest

import model_families as mf
from finetune_core.export.chat_parts import chat_parts, go_template
from finetune_core.export.serving import ollama_modelfile, serving_commands, write_modelfile

ACTION = re.compile(r'\{\{(-?)\s*((?:"(?:\\.|[^"\\])*"|[^"}])*?)\s*(-?)\}\}')
TWO_TURNS = [{"role": "user", "content": "Which colour is the red ball?"},
             {"role": "assistant", "content": "red"}, {"role": "user", "content": "And the blue one?"}]
WITH_SYSTEM = [{"role": "system", "content": "Answer with one word."}] + TWO_TURNS


# -- a reader for the Go-template subset the studio writes ----------------------------------------------
def _tokens(template: str) -> list[tuple[str, str]]:
    """("text", raw text) and ("action", body) in order, with Go's {{- / -}} whitespace trimming applied."""
    out, pos, trim_next = [], 0, False
    for m in ACTION.finditer(template):
        text = template[pos:m.start()]
        text = text.lstrip() if trim_next else text
        out.append(("text", text.rstrip() if m.group(1) else text))
        out.append(("action", m.group(2)))
        pos, trim_next = m.end(), bool(m.group(3))
    tail = template[pos:]
    return out + [("text", tail.lstrip() if trim_next else tail)]


def _test(cond: str, message: dict | None, messages: list[dict]) -> bool:
    if m := re.fullmatch(r'eq \.Role "(\w+)"', cond):
        return message["role"] == m.group(1)
    assert cond == 'and .Messages (eq (index .Messages 0).Role "system")', cond
    return bool(messages) and messages[0]["role"] == "system"


def _parse(tokens: list[tuple[str, str]], i: int = 0) -> tuple[list, int]:
    """Nodes from token i up to the `end` / `else` / `else if` that closes the block (its index returned)."""
    nodes = []
    while i < len(tokens):
        kind, body = tokens[i]
        if kind == "text":
            nodes.append(("text", body))
        elif body in ("end", "else") or body.startswith("else if "):
            return nodes, i
        elif body.startswith("if "):
            branches, cond = [], body[3:]
            while True:
                inner, i = _parse(tokens, i + 1)
                branches.append((cond, inner))
                closing = tokens[i][1]
                if closing == "end":
                    break
                cond = None if closing == "else" else closing[len("else if "):]
            nodes.append(("if", branches))
        elif body == "range .Messages":
            inner, i = _parse(tokens, i + 1)
            assert tokens[i][1] == "end"
            nodes.append(("range", inner))
        elif body.startswith('"'):
            nodes.append(("text", json.loads(body)))
        else:
            assert body == ".Content", f"action outside the studio's subset: {body}"
            nodes.append(("content", None))
        i += 1
    return nodes, i


def render_go(template: str, messages: list[dict]) -> str:
    """`template` rendered for `messages`; an action outside the subset fails the test."""
    def walk(nodes: list, message: dict | None) -> str:
        out = ""
        for kind, value in nodes:
            if kind == "text":
                out += value
            elif kind == "content":
                out += message["content"]
            elif kind == "range":
                out += "".join(walk(value, m) for m in messages)
            else:
                out += next((walk(inner, message) for cond, inner in value
                             if cond is None or _test(cond, message, messages)), "")
        return out

    nodes, end = _parse(_tokens(template))
    assert end == len(_tokens(template)), "an end without its block"
    return walk(nodes, None)


def test_the_reader_follows_go_semantics_on_a_known_template():
    template = ('{{- if and .Messages (eq (index .Messages 0).Role "system") }}{{- "S:" }}{{- else }}{{- "-" }}'
                '{{- end }}\n{{- range .Messages }}\n{{- if eq .Role "user" }}{{- "<u>" }}{{- .Content }}'
                '\n{{- else if eq .Role "system" }}{{- .Content }}{{- "|" }}\n{{- end }}\n{{- end }} {{- "!" }}')
    assert render_go(template, [{"role": "user", "content": "a b"}]) == "-<u>a b!"
    assert render_go(template, [{"role": "system", "content": "s"}, {"role": "user", "content": "x"},
                                {"role": "tool", "content": "ignored"}]) == "S:s|<u>x!"


# -- the Modelfile template -------------------------------------------------------------------------------
FORMATS = [mf.CHATML, mf.LLAMA3, mf.GEMMA, mf.PHI3, mf.MISTRAL, mf.OLMO2, mf.PLAIN]


@pytest.mark.parametrize("chat", FORMATS, ids=[f.name for f in FORMATS])
def test_the_ollama_template_renders_the_prompt_the_chat_template_renders(chat):
    tok = mf.make_tokenizer(chat)
    parts = chat_parts(tok)
    assert parts is not None, chat.name
    template = go_template(parts)
    for messages in (TWO_TURNS, WITH_SYSTEM, TWO_TURNS[:1]):
        jinja = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert render_go(template, messages) == jinja, (chat.name, messages)
    assert tok.eos_token in parts.stops


def test_the_bundled_model_modelfile_matches_its_template_and_stops_at_im_end(tokenizer):
    text = ollama_modelfile("run-f16.gguf", tokenizer, system="Answer with one word.", num_ctx=2048)
    assert text.splitlines()[0] == "FROM ./run-f16.gguf"
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, flags=re.M | re.S).group(1)
    for messages in (TWO_TURNS, WITH_SYSTEM):  # SmolLM2 adds its own system turn only when none is given
        assert render_go(template, messages) == tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True)
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER num_ctx 2048" in text
    assert 'SYSTEM """Answer with one word."""' in text and "PARAMETER temperature 0" in text


def test_a_bos_the_runtime_adds_is_left_out_of_the_template():
    tok = mf.make_tokenizer(mf.LLAMA3)
    tok.add_bos_token = True  # the tokenizer (and so the GGUF's add_bos flag) adds BOS itself
    tok._tokenizer.post_processor = __import__("tokenizers").processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", tok.bos_token_id)])
    assert tok("a")["input_ids"][0] == tok.bos_token_id
    text = ollama_modelfile("m.gguf", tok)
    template = re.search(r'TEMPLATE """(.*?)"""', text, flags=re.S).group(1)
    jinja = tok.apply_chat_template(TWO_TURNS, tokenize=False, add_generation_prompt=True)
    assert "<|begin_of_text|>" not in template and render_go(template, TWO_TURNS) == jinja.removeprefix(
        "<|begin_of_text|>")


def test_a_template_that_cannot_be_read_as_turns_leaves_template_to_the_gguf():
    tok = mf.make_tokenizer(mf.CHATML)
    tok.chat_template = mf.CHATML.template.replace("{{ m['content'] }}", "{{ m['content'] | upper }}")
    assert chat_parts(tok) is None
    text = ollama_modelfile("m.gguf", tok)
    assert "TEMPLATE" not in text.replace("No TEMPLATE", "")
    assert "embedded in the GGUF" in text and 'PARAMETER stop "<|im_end|>"' in text


# -- commands ------------------------------------------------------------------------------------------------
def _run(runs_root, **settings):
    from finetune_core.config import RunConfig
    from finetune_core.runs.store import create_run

    return create_run(RunConfig.from_dict({"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "data_path": "toy.jsonl",
                                           **settings}))


def test_commands_name_the_runs_files_base_and_rank(runs_root):
    run = _run(runs_root, lora_r=12, system_prompt="Be brief.")
    cmds = serving_commands(run, gguf_file=f"{run.id}-q8_0.gguf", merged_dir=f"{run.id}-merged")
    assert set(cmds) == {"llama-server", "ollama", "vllm", "tgi", "transformers"}
    server = shlex.split(cmds["llama-server"].splitlines()[0])
    assert server[:3] == ["llama-server", "-m", f"./{run.id}-q8_0.gguf"] and "--jinja" in server and "-c" in server
    assert f"ollama create {run.id} -f {run.id}-q8_0.Modelfile" in cmds["ollama"]
    vllm = shlex.split(next(line for line in cmds["vllm"].splitlines() if line.startswith("vllm")))
    assert vllm[:4] == ["vllm", "serve", "HuggingFaceTB/SmolLM2-135M-Instruct", "--enable-lora"]
    assert vllm[vllm.index("--lora-modules") + 1] == f"{run.id}=./{run.id}-adapter/adapter"
    assert vllm[vllm.index("--max-lora-rank") + 1] == "16"  # rank 12 rounds up to a rank vLLM accepts
    tgi = shlex.split(next(line for line in cmds["tgi"].splitlines() if line.startswith("text-generation")))
    assert tgi[tgi.index("--model-id") + 1] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert tgi[tgi.index("--lora-adapters") + 1] == f"{run.id}=./{run.id}-adapter/adapter"
    snippet = cmds["transformers"]
    compile(snippet, "snippet", "exec")
    assert f"'./{run.id}-merged'" in snippet and "apply_chat_template" in snippet and "'Be brief.'" in snippet


def test_a_continued_run_is_served_merged_and_odd_names_are_quoted(runs_root):
    parent = _run(runs_root)
    run = _run(runs_root, parent_run=parent.id, model="/srv/models/my model; rm -rf ~")
    cmds = serving_commands(run)
    assert set(cmds) == {"vllm", "tgi"}
    assert "merged" in cmds["vllm"] and parent.id in cmds["vllm"] and "--enable-lora" not in cmds["vllm"]
    solo = _run(runs_root, model="/srv/models/my model; rm -rf ~")
    line = next(x for x in serving_commands(solo)["vllm"].splitlines() if x.startswith("vllm"))
    assert shlex.split(line)[2] == "./my model; rm -rf ~" and "/srv" not in line


def test_write_modelfile_sits_beside_the_gguf(trained_run, tmp_path):
    gguf = tmp_path / f"{trained_run.id}-f16.gguf"
    path = write_modelfile(trained_run, gguf)
    assert path.name == f"{trained_run.id}-f16.Modelfile"
    text = path.read_text()
    assert f"FROM ./{gguf.name}" in text and "TEMPLATE" in text and "PARAMETER num_ctx 1024" in text
