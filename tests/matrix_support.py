"""Shared pieces of the architecture matrix (tests/test_model_matrix.py): its tolerances,
the family fixture, and the helpers that build adapted models, take one TRL training
step, and generate a prompt alone for reference."""
from __future__ import annotations

import pytest
import torch

from finetune_core.models.sources import DevicePolicy
from model_families import BY_NAME, FAMILIES, TRAIN_MAX_LENGTH, WINDOW, Family

POLICY = DevicePolicy("cpu", "float32")
TRAIN_INIT = 0.1
MARGIN = 1e-3  # top-2 logit gap below which a greedy token may flip on float rounding alone
LOGIT_TOL = dict(atol=2e-4, rtol=1e-4)
NEW_TOKENS = 8


@pytest.fixture(params=[f.name for f in FAMILIES])
def family(request) -> Family:
    return BY_NAME[request.param]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: handing each product to a second thread costs more than it saves, and on a
    busy 2-core machine it made a training comparison take 3.9 s instead of 0.6 s."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def speedups_on(monkeypatch):
    """The server-wide switch would turn everything off: the matrix tests the switch per call."""
    monkeypatch.delenv("STUDIO_SPEEDUPS", raising=False)


# -- helpers ------------------------------------------------------------------------------------------------
def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


def training_batch(tok) -> dict:
    """Three right-padded rows, all longer than WINDOW: a sliding window cuts into every row."""
    g = torch.Generator().manual_seed(4)
    lengths = torch.tensor([20, 13, 9])
    assert int(lengths.min()) > WINDOW and int(lengths.max()) <= TRAIN_MAX_LENGTH
    first_plain = len(tok.all_special_ids)  # the fixtures' special tokens take the first ids
    ids = torch.randint(first_plain, len(tok), (3, int(lengths.max())), generator=g)
    mask = (torch.arange(ids.shape[1]) < lengths[:, None]).long()
    ids[mask == 0] = tok.pad_token_id
    labels = ids.clone()
    labels[:, :4] = -100  # a "prompt" without loss, as completion-only training has
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def studio_lora_config(method: str):
    """The PEFT config the studio builds for a run (train.peft_config); lora_dropout 0 for exact comparison."""
    from finetune_core.config import RunConfig
    from finetune_core.training.train import peft_config

    return peft_config(RunConfig.from_dict(dict(model="tiny", data_path="x.jsonl",
                                                method="full" if method == "full" else "lora",
                                 lora_r=4, lora_alpha=8, lora_dropout=0.0, use_dora=method == "dora")))


def randomise_lora_b(model, seed: int) -> None:
    """PEFT starts B at zero (the adapter is a no-op, A gets no gradient): give B values so both move."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.2)


def adapted(family: Family, tok, method: str, init: float, seed: int = 0, dtype=torch.float32):
    """A fresh model as SFTTrainer holds it: PEFT-wrapped (unless full) with TRL's fused LM head.

    In bf16 (LoRA on a CPU with bf16 instructions) the base weights are bf16 and PEFT keeps the
    adapter in float32, as the studio loads them (load_model in the policy's dtype, then SFTTrainer)."""
    from peft import get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    model = family.build(tok, seed=seed, init=init).to(dtype)
    model.config.use_cache = False
    config = studio_lora_config(method)
    if config is not None:
        model = get_peft_model(model, config)
        randomise_lora_b(model, seed + 1)
    # SFTTrainer adds the head to the base model after wrapping it (trl SFTTrainer.__init__)
    add_fused_lm_head(model.get_base_model() if config is not None else model,
                      outputs=("log_probs", "entropy", "is_top1"))
    return model.train()


def trl_step(model, batch) -> tuple[torch.Tensor, dict]:
    """Loss and gradients as SFTTrainer.compute_loss gets them (`fused_lm_head=True`)."""
    model.zero_grad()
    out = model(**batch, fused_lm_head=True)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return out.loss.detach(), grads


def assert_same_step(got: tuple, want: tuple, what: str) -> None:
    (loss, grads), (ref_loss, ref_grads) = got, want
    assert abs(float(loss) - float(ref_loss)) <= 1e-5 * abs(float(ref_loss)), f"{what}: loss {loss} vs {ref_loss}"
    assert grads.keys() == ref_grads.keys(), f"{what}: different trainable parameters"
    assert len(ref_grads) > 0
    for name, ref in ref_grads.items():
        assert ref.norm() > 0, f"{what}: {name} gets no gradient: the comparison would prove nothing"
        err = rel_err(grads[name], ref)
        assert err < 1e-4, f"{what}: gradient of {name} off by {err:.2e} (relative)"


def chat_prompts() -> list[list[dict]]:
    """Ten prompts of different lengths (more rows than a decode group, see decode_attention)."""
    words = "which colour is the red ball the blue ball is blue summarize the meeting notes please".split()
    return [[{"role": "user", "content": " ".join(words[: 2 + (i * 5) % len(words)])}] for i in range(10)]


def alone(model, tok, messages: list[dict], new_tokens: int = NEW_TOKENS):
    """transformers' own greedy generate on one prompt: (new tokens up to eos, per-step logits)."""
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                             return_dict_in_generate=True, output_logits=True)
    tokens = out.sequences[0, ids["input_ids"].shape[1]:].tolist()
    if tok.eos_token_id in tokens:
        tokens = tokens[: tokens.index(tok.eos_token_id) + 1]
    return tokens, torch.stack(out.logits, 1)[0]


def gap(logits: torch.Tensor) -> float:
    top = logits.topk(2).values
    return float(top[0] - top[1])


def decisive_steps(logits: torch.Tensor, tokens: list[int]) -> int:
    """How many leading steps of a reference run have a clear greedy choice (top-2 gap above MARGIN)."""
    for step in range(len(tokens)):
        if gap(logits[step]) < MARGIN:
            return step
    return len(tokens)
