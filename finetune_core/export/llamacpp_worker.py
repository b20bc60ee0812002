"""Answers from a GGUF file in llama.cpp, in a process of its own (the parity check's runtime side).

    echo '{"path": "m.gguf", "conversations": [[{"role": "user", "content": "Hi"}]]}' \
        | python -m finetune_core.export.llamacpp_worker

Reads one JSON request on stdin, prints one JSON answer on stdout:
{"answers": [[ids]], "prompts": [[ids]]} or {"error": "..."}. Everything comes from the
file: the chat template stored in it (rendered as transformers renders templates, with the
file's bos/eos text), its tokenizer, and what llama.cpp takes for end of generation (the
token that stops an answer is kept). Decoding is greedy, one prompt at a time, each
evaluated from scratch.

Why a process: llama.cpp is native code, and a crash there must not take the app down
with it. Measured here: llama-cpp-python 0.3.36 built for this CPU (AMX) segfaults in its
repacked Q8_0 kernels on the first decode of a Q8_0 file (the tiny test model's and the
bundled model's), and answers correctly ("The capital of France is Paris.") with them off
(`"repack": false`, llama.cpp's `--no-repack`); the parity module retries that way.
"""
from __future__ import annotations

import json
import os
import sys

N_CTX = 2048  # held-out prompts longer than the parity check's limit are left out before this


def without_repack(default):
    """`default` (llama_cpp's llama_model_default_params) with the repacked kernels off: llama-cpp-python
    has no argument for it, so a loader patches the default params it reads at load time."""
    def params():
        found = default()
        found.use_extra_bufts = False
        return found

    return params


def _load(path: str, repack: bool):
    import llama_cpp

    if not repack:
        llama_cpp.llama.llama_cpp.llama_model_default_params = without_repack(llama_cpp.llama_model_default_params)
    return llama_cpp.Llama(model_path=path, n_ctx=N_CTX, n_batch=512, n_threads=os.cpu_count() or 1,
                           seed=0, verbose=False)


def _prompt(llm, conversation: list[dict]) -> list[int]:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise ValueError("the GGUF file holds no chat template")

    def text(token_id: int) -> str:
        return llm.detokenize([token_id], special=True).decode("utf-8", "replace") if token_id >= 0 else ""

    formatted = Jinja2ChatFormatter(template, eos_token=text(llm.token_eos()),
                                    bos_token=text(llm.token_bos()))(messages=conversation)
    return llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True)


def answer(request: dict) -> dict:
    """The request's conversations answered by the file (see the module docstring)."""
    import llama_cpp

    llm = _load(request["path"], bool(request.get("repack", True)))
    vocab = llm._model.vocab  # noqa: SLF001 - llama.cpp's own end-of-generation test needs the vocab handle
    limit = int(request.get("max_new_tokens", 32))
    answers, prompts = [], []
    for conversation in request["conversations"]:
        prompt = _prompt(llm, conversation)
        llm.reset()  # no prompt-cache reuse between prompts
        ids = []
        for token in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            ids.append(int(token))
            if llama_cpp.llama_vocab_is_eog(vocab, token) or len(ids) >= limit:
                break
        answers.append(ids)
        prompts.append([int(t) for t in prompt])
    llm.close()
    return {"answers": answers, "prompts": prompts}


def main() -> int:
    """Answer the request on stdin; a file llama.cpp refuses is an {"error"} answer, a crash an exit code."""
    request = json.load(sys.stdin)
    try:
        result = answer(request)
    except (ValueError, OSError, RuntimeError) as exc:  # a file llama.cpp refuses: said, not a traceback
        result = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
