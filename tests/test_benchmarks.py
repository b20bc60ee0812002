"""The general-skill check (evaluation/benchmarks.py): base vs tuned on ARC, HellaSwag and MMLU items scored
by lm-evaluation-harness, on the tiny trained run and small files written here (tests/benchmark_fixtures.py).

What a user relies on: the base side is the bare base model (the adapter really off), the tuned side the
adapter on, both scored exactly as plain lm_eval scores them; the flipped items are exactly those whose 0/1
score changed, each with the choice each side picked; a bad file is named by line and field before any
model loads; offline without data says which folder and file; a cancelled run saves nothing.
"""
from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest

from benchmark_fixtures import ARC_ROWS, FILES, MMLU_ROWS, write_benchmark_folder, write_jsonl
from evaluation.benchmark_tasks import BENCHMARKS, prepare
from evaluation.benchmarks import pick, run_benchmarks, score_side, scoring_autocast
from finetune_core.errors import InputError
from finetune_core.runs.store import run_from_dir

BATCH = 4


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    return write_benchmark_folder(tmp_path_factory.mktemp("bench-data"))


@pytest.fixture(scope="module")
def run_copy(tmp_path_factory, trained_run):
    """A copy of the tiny trained run: checks/ is written into it."""
    target = tmp_path_factory.mktemp("bench-runs") / trained_run.id
    shutil.copytree(trained_run.path, target)
    return run_from_dir(target)


@pytest.fixture(scope="module")
def inference_model(run_copy):
    from finetune_core.inference.generation import InferenceModel

    return InferenceModel.from_run(run_copy)


@pytest.fixture(scope="module")
def result(run_copy, bench_dir, inference_model):
    return run_benchmarks(run_copy, limit=None, data_dir=str(bench_dir), batch_size=BATCH, model=inference_model)


def _plain_lm_eval(model, tokenizer, task, name, limit=None, autocast=None, batch_size=BATCH):
    """Per-item samples from lm_eval's own HFLM and evaluate(), nothing of ours around them."""
    from lm_eval import evaluator
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, mixed_precision_dtype=autocast)
    out = evaluator.evaluate(lm=lm, task_dict={name: task}, limit=limit, log_samples=True, bootstrap_iters=0)
    return sorted(out["samples"][name], key=lambda s: s["doc_id"])


@pytest.fixture(scope="module")
def reference(tiny_model_dir, run_copy, bench_dir):
    """name -> {False: samples of the bare base model, True: samples of a fresh PeftModel of the adapter}."""
    from peft import PeftModel

    from finetune_core.models.sources import load_model, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    bare = load_model(str(tiny_model_dir)).eval()
    tuned = PeftModel.from_pretrained(load_model(str(tiny_model_dir)).eval(), str(run_copy.adapter_dir)).eval()
    out = {}
    for name in BENCHMARKS:
        p = prepare(name, bench_dir)
        out[name] = {False: _plain_lm_eval(bare, tokenizer, p.tasks[False], name),
                     True: _plain_lm_eval(tuned, tokenizer, p.tasks[True], name)}
    return out


def _lls(sample) -> list[float]:
    return [ll for ll, _ in sample["filtered_resps"]]


def _flat(per_item) -> list[float]:
    """Every item's log-likelihoods in one list (items have 3 to 5 choices)."""
    return [ll for lls in per_item for ll in lls]


# -- the result ------------------------------------------------------------------------------------

def test_the_saved_result_holds_every_benchmark_with_both_sides(result, run_copy):
    saved = json.loads((run_copy.path / "checks" / "benchmarks.json").read_text())
    assert saved == result
    assert (result["schema_version"], result["run"], result["num_fewshot"], result["limit"]) == (1, run_copy.id, 0,
                                                                                               None)
    assert result["model"] == run_copy.config().model and result["lm_eval_version"] == "0.4.13"
    assert result["source"].startswith("local folder ") and result["seconds"] > 0
    assert result["precision"] == "float32"  # the tiny run asked for float32: no bf16 autocast
    assert [(b["name"], b["title"]) for b in result["benchmarks"]] == list(BENCHMARKS.items())
    for bench in result["benchmarks"]:
        assert bench["items"] == len(FILES[bench["name"]][1])
        mmlu = bench["name"] == "mmlu"
        assert bench["primary"] == ("acc" if mmlu else "acc_norm")
        assert [m["metric"] for m in bench["metrics"]] == (["acc"] if mmlu else ["acc", "acc_norm"])
        for m in bench["metrics"]:
            assert m["delta"] == pytest.approx(m["tuned"] - m["base"])
            assert m["interval"]["n"] == bench["items"] and m["interval"]["p_value"] is not None
            assert f"on {bench['items']} items" in m["verdict_text"]


def test_base_is_plain_lm_eval_on_the_bare_base_model_and_tuned_the_adapter_on(inference_model, bench_dir,
                                                                                reference):
    for name in BENCHMARKS:
        p = prepare(name, bench_dir)
        for tuned in (False, True):
            ours = score_side(inference_model, p, tuned, BATCH)
            plain = reference[name][tuned]
            assert [o["doc_id"] for o in ours] == [s["doc_id"] for s in plain]
            np.testing.assert_allclose(_flat(o["lls"] for o in ours), _flat(_lls(s) for s in plain),
                                       rtol=1e-5, atol=1e-5)
            for metric in p.metrics:
                assert [o[metric] for o in ours] == [s[metric] for s in plain], (name, tuned, metric)
    # the two sides really differ: the adapter moves every benchmark's log-likelihoods
    for name in BENCHMARKS:
        base, tuned = (_flat(_lls(s) for s in reference[name][side]) for side in (False, True))
        assert not np.allclose(base, tuned, atol=1e-4), name


def test_the_means_are_lm_evals_per_item_scores(result, reference):
    for bench in result["benchmarks"]:
        for m in bench["metrics"]:
            for side in ("base", "tuned"):
                samples = reference[bench["name"]][side == "tuned"]
                assert m[side] == pytest.approx(np.mean([s[m["metric"]] for s in samples]))


def test_flips_are_exactly_the_items_whose_score_changed_with_each_sides_pick(result, reference, bench_dir):
    seen_flip = False
    for bench in result["benchmarks"]:
        name, metric = bench["name"], bench["primary"]
        base, tuned = reference[name][False], reference[name][True]
        expected = {"right_to_wrong": [b["doc_id"] for b, t in zip(base, tuned) if b[metric] > t[metric]],
                    "wrong_to_right": [b["doc_id"] for b, t in zip(base, tuned) if b[metric] < t[metric]]}
        assert {k: [i["doc_id"] for i in v] for k, v in bench["flips"].items()} == expected, name
        task = prepare(name, bench_dir).tasks[False]
        by_id = {s["doc_id"]: (s, t) for s, t in zip(base, tuned)}
        for kind, items in bench["flips"].items():
            for item in items:
                seen_flip = True
                b, t = by_id[item["doc_id"]]
                scored = task.doc_to_choice(b["doc"])
                assert item["answer"] == item["choices"][b["target"]]
                assert item["base_choice"] == item["choices"][pick(_lls(b), scored, metric)]
                assert item["tuned_choice"] == item["choices"][pick(_lls(t), scored, metric)]
                right, wrong = (("base_choice", "tuned_choice") if kind == "right_to_wrong"
                                else ("tuned_choice", "base_choice"))
                assert item[right] == item["answer"] != item[wrong]
    assert seen_flip, "the tiny adapter flipped no item: the check above proved nothing"


def test_the_pick_mirrors_lm_evals_scoring_on_every_item(reference, bench_dir):
    """For acc and acc_norm alike: the mirrored pick is right exactly when lm-eval scored the item 1."""
    for name in BENCHMARKS:
        task = prepare(name, bench_dir).tasks[False]
        for side in (False, True):
            for s in reference[name][side]:
                scored = task.doc_to_choice(s["doc"])
                for metric in task._metric_fn_list:
                    assert (pick(_lls(s), scored, metric) == s["target"]) == bool(s[metric]), (name, metric)


def test_our_local_task_is_lm_evals_own_arc_task_on_the_same_file(reference, bench_dir, tiny_model_dir, tmp_path):
    """lm-eval's arc_easy YAML pointed at the file through its own `json` loader scores the same."""
    from pathlib import Path

    import lm_eval.tasks
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    from finetune_core.models.sources import load_model, load_tokenizer

    cfg = load_yaml(Path(lm_eval.tasks.__file__).parent / "arc/arc_easy.yaml", resolve_func=True)
    cfg.pop("tag", None)
    cfg.update(dataset_path="json", dataset_name=None, training_split=None, validation_split=None,
               test_split="test", dataset_kwargs={"data_files": {"test": str(bench_dir / "arc_easy_test.jsonl")},
                                                  "cache_dir": str(tmp_path)})
    own = _plain_lm_eval(load_model(str(tiny_model_dir)).eval(), load_tokenizer(str(tiny_model_dir)),
                         ConfigurableTask(config=cfg), "arc_easy")
    ours = reference["arc_easy"][False]
    assert [(s["acc"], s["acc_norm"], s["target"]) for s in own] == [(s["acc"], s["acc_norm"], s["target"])
                                                                     for s in ours]
    np.testing.assert_allclose(_flat(_lls(s) for s in own), _flat(_lls(s) for s in ours), rtol=1e-6)


# -- the items -------------------------------------------------------------------------------------

def test_digit_labels_and_mmlu_quirks_read_as_lm_eval_reads_them(bench_dir):
    arc = prepare("arc_easy", bench_dir).tasks[False]
    spider = arc.eval_docs[1]  # labels "1".."4", answerKey "2"
    assert spider["choices"]["label"] == ["1", "2", "3", "4"] and arc.doc_to_target(spider) == 1
    assert [len(d["choices"]["text"]) for d in arc.eval_docs][2:4] == [3, 5]
    mmlu = prepare("mmlu", bench_dir).tasks[False]
    tokyo = mmlu.eval_docs[1]
    assert mmlu.fewshot_context(tokyo, 0) == (
        "The following are multiple choice questions (with answers) about high school geography.\n\n"
        "What is the capital city of Japan?\nA. Kyoto\nB. Tokyo\nC. Osaka\nD. Nagoya\nAnswer:")
    assert "about astronomy." in mmlu.fewshot_context(mmlu.eval_docs[3], 0)
    assert mmlu.doc_to_target(tokyo) == 1


def test_limit_takes_the_first_items(run_copy, bench_dir, inference_model, reference):
    out = run_benchmarks(run_copy, names=["arc_easy"], limit=3, data_dir=str(bench_dir), batch_size=BATCH,
                         model=inference_model)
    (bench,) = out["benchmarks"]
    assert out["limit"] == 3 and bench["items"] == 3
    first = reference["arc_easy"][False][:3]
    assert bench["metrics"][1]["base"] == pytest.approx(np.mean([s["acc_norm"] for s in first]))
    assert all(i["doc_id"] < 3 for items in bench["flips"].values() for i in items)


def test_fewshot_shows_held_out_first_rows_and_scores_the_rest(run_copy, bench_dir, inference_model):
    arc = prepare("arc_easy", bench_dir, num_fewshot=2)
    assert arc.items == len(ARC_ROWS) - 2
    context = arc.tasks[False].fewshot_context(arc.tasks[False].eval_docs[0], 2)
    assert context == (f"Question: {ARC_ROWS[0]['question']}\nAnswer: carbon dioxide\n\n"
                       f"Question: {ARC_ROWS[1]['question']}\nAnswer: eight\n\n"
                       f"Question: {ARC_ROWS[2]['question']}\nAnswer:")
    out = run_benchmarks(run_copy, names=["mmlu"], num_fewshot=1, data_dir=str(bench_dir), batch_size=BATCH,
                         model=inference_model)
    (bench,) = out["benchmarks"]
    assert bench["items"] == len(MMLU_ROWS) - 2  # the first row of each of the 2 subjects shows the way
    assert out["num_fewshot"] == 1 and "of each subject" in bench["fewshot_from"]
    mmlu = prepare("mmlu", bench_dir, num_fewshot=1).tasks[False]
    astronomy = mmlu.fewshot_context(mmlu.eval_docs[2], 1)  # same-subject example, never a geography one
    assert "What is the closest star" in astronomy and "largest ocean" not in astronomy


def test_bf16_autocast_only_on_a_fast_bf16_cpu_for_float32_weights_when_the_run_allows(monkeypatch):
    import types

    import torch

    import finetune_core.models.sources as sources

    def model(device="cpu", dtype=torch.float32):
        weights = torch.nn.Linear(2, 2).to(dtype)
        return types.SimpleNamespace(policy=types.SimpleNamespace(device=device), weights=lambda tuned: weights)

    monkeypatch.setattr(sources, "cpu_has_bf16_matmul", lambda: True)
    assert scoring_autocast("auto", model()) == "bfloat16"
    assert scoring_autocast("float32", model()) is None  # the run asked for float32
    assert scoring_autocast("auto", model(dtype=torch.bfloat16)) is None  # already bf16 weights
    assert scoring_autocast("auto", model(device="cuda")) is None  # a GPU keeps its own dtype
    monkeypatch.setattr(sources, "cpu_has_bf16_matmul", lambda: False)
    assert scoring_autocast("auto", model()) is None  # emulated bf16 would be many times slower
    assert scoring_autocast("bfloat16", model()) == "bfloat16"  # asked for explicitly


# -- refusals ------------------------------------------------------------------------------------

def _no_model():
    raise AssertionError("the model was loaded before the input was checked")


BAD_ROWS = [
    ("arc_easy", {"choices": ARC_ROWS[0]["choices"], "answerKey": "A"}, "line 2: no field 'question'"),
    ("arc_easy", {**ARC_ROWS[0], "answerKey": "E"}, "line 2: field 'answerKey' is 'E', not one of choices.label"),
    ("arc_easy", {**ARC_ROWS[0], "choices": ["a", "b"]}, "line 2: field 'choices' must be an object"),
    ("hellaswag", {"activity_label": "x", "ctx_a": "y", "ctx_b": "", "endings": "one ending", "label": 0},
     "line 2: field 'endings' must be a list"),
    ("hellaswag", {"activity_label": "x", "ctx_a": "y", "ctx_b": "", "endings": ["a", "b"], "label": 5},
     "line 2: field 'label' must be an index from 0 to 1"),
    ("mmlu", {**MMLU_ROWS[0], "answer": 7}, "line 2: field 'answer' must be an index from 0 to 3"),
    ("mmlu", {**MMLU_ROWS[0], "choices": ["a", "b", "c"]}, "line 2: field 'choices' must hold 4 answers"),
    ("mmlu", {"question": "q?", "choices": ["a", "b", "c", "d"], "answer": 0}, "line 2: no field 'subject'"),
]


@pytest.mark.parametrize("name,row,message", BAD_ROWS)
def test_a_bad_row_is_named_by_file_line_and_field_before_the_model_loads(name, row, message, tmp_path, run_copy):
    file, rows = FILES[name]
    write_jsonl(tmp_path / file, [rows[0], row])
    with pytest.raises(InputError) as err:
        run_benchmarks(run_copy, names=[name], data_dir=str(tmp_path), load_model=_no_model)
    assert f"{file} {message}" in str(err.value)


def test_a_line_that_is_not_json_is_named(tmp_path, run_copy):
    (tmp_path / "arc_easy_test.jsonl").write_text(json.dumps(ARC_ROWS[0]) + "\n{not json\n")
    with pytest.raises(InputError, match=r"arc_easy_test.jsonl line 2: not valid JSON"):
        run_benchmarks(run_copy, names=["arc_easy"], data_dir=str(tmp_path), load_model=_no_model)


def test_offline_without_data_names_the_folder_and_the_file(tmp_path, run_copy, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_benchmark_folder(tmp_path, only=("arc_easy",))
    with pytest.raises(InputError) as err:
        run_benchmarks(run_copy, names=["arc_easy", "hellaswag"], data_dir=str(tmp_path), load_model=_no_model)
    assert "hellaswag_val.jsonl" in str(err.value) and str(tmp_path) in str(err.value)
    assert "offline" in str(err.value)
    with pytest.raises(InputError, match="does not exist"):
        run_benchmarks(run_copy, data_dir=str(tmp_path / "nowhere"), load_model=_no_model)


def test_online_without_a_local_file_reads_lm_evals_hub_dataset(tmp_path, monkeypatch):
    """No network here: the Hub loader is replaced, and asked for lm-eval's own dataset and split."""
    import datasets

    asked = []

    def fake_load(path, name=None, split=None):
        asked.append((path, name, split))
        return datasets.Dataset.from_list(MMLU_ROWS if path == "cais/mmlu" else ARC_ROWS)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    arc = prepare("arc_challenge", tmp_path, num_fewshot=0, limit=5)
    mmlu = prepare("mmlu", None, num_fewshot=1)
    assert asked == [("allenai/ai2_arc", "ARC-Challenge", "test"), ("cais/mmlu", "all", "test"),
                     ("cais/mmlu", "all", "dev")]
    assert (arc.source, arc.items, mmlu.source) == ("Hugging Face Hub", 5, "Hugging Face Hub")
    assert "cais/mmlu all dev" in mmlu.fewshot_from


@pytest.mark.parametrize("kwargs,message", [
    ({"names": ["arc_easy", "winogrande"]}, "Unknown benchmark 'winogrande'"),
    ({"names": []}, "No benchmark chosen"),
    ({"limit": 0}, "limit must be"),
    ({"num_fewshot": 26}, "num_fewshot must be from 0 to 25"),
    ({"batch_size": 0}, "batch_size must be from 1"),
])
def test_bad_arguments_are_refused_before_the_model_loads(kwargs, message, run_copy, bench_dir):
    with pytest.raises(InputError, match=message):
        run_benchmarks(run_copy, data_dir=str(bench_dir), load_model=_no_model, **kwargs)


def test_cancel_stops_between_forward_passes_and_saves_nothing(tmp_path, trained_run, bench_dir, inference_model):
    run = run_from_dir(shutil.copytree(trained_run.path, tmp_path / trained_run.id))
    cancel = threading.Event()
    seen = []

    def progress(text, fraction):
        seen.append((text, fraction))
        if "base model" in text and fraction > 0.05:  # inside the first side, after a forward pass
            cancel.set()

    with pytest.raises(InterruptedError):
        run_benchmarks(run, names=["arc_easy"], data_dir=str(bench_dir), batch_size=2, progress=progress,
                       cancel=cancel, model=inference_model)
    assert not (run.path / "checks" / "benchmarks.json").exists()
    assert not any("tuned model" in text for text, _ in seen)
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[-1] < 0.5


# -- the real model and the real files --------------------------------------------------------------

@pytest.mark.slow
def test_the_bundled_model_scores_well_above_chance_on_arc_easy_as_lm_evals_own_task_does(shared_datasets,
                                                                                          runs_root, tmp_path):
    """20 ARC-Easy test items, bundled model: the base side's acc and acc_norm are lm-eval's own arc_easy
    task on the same file (its YAML, its `json` loader, plain HFLM on a bare copy of the model), and
    well above the 1-in-4 of guessing. The tuned side is a random (untrained) LoRA adapter. Same batch size
    and precision on both (under bf16 autocast a different batch can round a near-tie the other way)."""
    from pathlib import Path

    import lm_eval.tasks
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml
    from peft import LoraConfig, get_peft_model

    from finetune_core.config import RunConfig
    from finetune_core.inference.generation import InferenceModel
    from finetune_core.models.sources import device_policy, load_model, load_tokenizer
    from finetune_core.runs.store import create_run

    limit = 20
    tokenizer = load_tokenizer("bundled")
    adapter = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = InferenceModel(get_peft_model(load_model("bundled").eval(), adapter).eval(), tokenizer, device_policy())
    run = create_run(RunConfig(model="bundled"))
    result = run_benchmarks(run, names=["arc_easy"], limit=limit, data_dir=str(shared_datasets), batch_size=32,
                            model=model)
    (bench,) = result["benchmarks"]
    base = {m["metric"]: m["base"] for m in bench["metrics"]}

    cfg = load_yaml(Path(lm_eval.tasks.__file__).parent / "arc/arc_easy.yaml", resolve_func=True)
    cfg.pop("tag", None)
    cfg.update(dataset_path="json", dataset_name=None, training_split=None, validation_split=None, test_split="test",
               dataset_kwargs={"data_files": {"test": str(shared_datasets / "arc_easy_test.jsonl")},
                               "cache_dir": str(tmp_path)})
    autocast = result["precision"].removesuffix(" autocast") if "autocast" in result["precision"] else None
    own = _plain_lm_eval(load_model("bundled").eval(), load_tokenizer("bundled"), ConfigurableTask(config=cfg),
                         "arc_easy", limit=limit, autocast=autocast, batch_size=32)
    assert bench["items"] == limit == len(own)
    assert base == {m: pytest.approx(np.mean([s[m] for s in own])) for m in ("acc", "acc_norm")}
    assert base["acc"] >= 0.4 and base["acc_norm"] >= 0.4, base  # guessing scores 0.25
