"""Chat speaks the run's language: a run's prompt template rebuilt for chat (the wrapped message is exactly
what training saw), single turn, chips that show the part that differs, and the tab's send wrapping."""
from __future__ import annotations

from finetune_core.inference import chat
from finetune_core.inference.chat import ChatSession

from chat_support import INTENTS, FakeModel, fake_ctx, run_turn, split_run


def test_wrapped_message_equals_the_training_prompt_of_a_classification_run(runs_root):
    """Every row's text, wrapped for chat, is exactly the prompt training saw for that row."""
    import csv

    from finetune_core.data.dataset import DataMapping, prepare_data
    from finetune_core.inference.run_prompts import run_template

    run = split_run(INTENTS)
    template = run_template(run)
    assert template is not None and template.column == "text"
    report = prepare_data(DataMapping.from_dict({"data_path": INTENTS}))
    with open(INTENTS, encoding="utf-8") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)]
    for row, number in zip(report.rows, report.row_numbers):
        text = texts[number - 1]  # row numbers count data rows from 1
        assert template.messages(text) == row["prompt"], number
        assert template.field_of(row["prompt"][-1]["content"]) == text
    assert template.wrap(template.wrap("hi")) == template.wrap("hi")  # never wrapped twice


def test_wrapped_message_equals_the_training_prompt_of_a_column_template(runs_root, tmp_path):
    from finetune_core.data.dataset import DataMapping, prepare_data
    from finetune_core.inference.run_prompts import run_template

    data = tmp_path / "qa.csv"
    data.write_text("question,answer\n" + "".join(f"What is {i}+{i}?,{2 * i}\n" for i in range(30)))
    mapping = {"data_format": "columns", "prompt_template": "Answer with a number.\nQ: {question}\nA:",
               "completion_column": "answer", "system_prompt": "You are a calculator."}
    template = run_template(split_run(data, **mapping))
    report = prepare_data(DataMapping.from_dict({"data_path": str(data), **mapping}))
    assert template.messages("What is 7+7?") == report.rows[7]["prompt"]
    assert template.messages("x", system="Mine.")[0] == {"role": "system", "content": "Mine."}
    # a template ending in whitespace: still recognised when the prompt comes back stripped (chips, pasting)
    mapping["prompt_template"] = "Summarize this dialogue:\n{question}\n"
    template = run_template(split_run(data, **mapping))
    report = prepare_data(DataMapping.from_dict({"data_path": str(data), **mapping}))
    assert template.messages("What is 3+3?") == report.rows[3]["prompt"]
    assert template.wrap(template.wrap("hi").strip()) == template.wrap("hi").strip()  # not wrapped twice


def test_plain_and_several_column_runs_have_no_template(runs_root, trained_run, tmp_path):
    from finetune_core.inference.run_prompts import run_template

    assert run_template(trained_run) is None  # prompt/completion: chat as it is
    data = tmp_path / "two.csv"
    data.write_text("a,b,c\n" + "".join(f"x{i},y{i},z{i}\n" for i in range(20)))
    run = split_run(data, data_format="columns", prompt_template="{a} and {b}", completion_column="c")
    assert run_template(run) is None  # two columns: a typed message cannot fill both


def test_chips_show_the_part_that_differs_and_type_the_right_text(runs_root):
    from ui import chat_prompts

    run = split_run(INTENTS)
    key = f"run:{run.id}"
    examples = chat_prompts.examples_for(key)
    labels = chat_prompts.chips(examples, key).sample_labels
    assert len(labels) == len(set(labels)) == 8 and not any(x.startswith("Classify") for x in labels)
    full, typed = examples[0]
    assert full.startswith("Classify the text") and typed in full and labels[0] == typed
    assert chat_prompts.pick_example(0, examples, True) == typed  # wrapping on: the template is added on send
    assert chat_prompts.pick_example(0, examples, False) == full
    wrap, single, note = chat_prompts.prompt_controls(key)
    assert wrap.visible and wrap.value and single.value and "{text}" in note.value and note.visible
    assert "base model gets the same" in note.value
    wrap, single, note = chat_prompts.prompt_controls("base:bundled")
    assert not wrap.visible and not wrap.value and not single.value and not note.visible


def test_distinct_parts_without_a_template():
    from finetune_core.inference.run_prompts import chip_texts

    prompts = [f"Please summarise the following note for the team lead: {n} broke. Keep it short."
               for n in ("printer", "laptop", "badge reader")]
    assert chip_texts(prompts, None) == ["…printer…", "…laptop…", "…badge reader…"]


def test_each_side_wraps_with_its_template_and_single_turn_sends_no_earlier_turn(runs_root):
    from finetune_core.inference.run_prompts import run_template

    template = run_template(split_run(INTENTS))
    model = FakeModel()
    session = ChatSession(base_template=template, tuned_template=template, single_turn=True)
    run_turn(session, "Where is my parcel?", model)
    run_turn(session, "I love the kettle", model)
    base_msgs, tuned_msgs = model.calls[-1]
    assert tuned_msgs == base_msgs == template.messages("I love the kettle")  # alone, wrapped
    assert chat.panes(session)[1][-2]["content"] == template.wrap("I love the kettle")  # what the pane shows
    session.single_turn = False
    run_turn(session, "third", model)
    assert len(model.calls[-1][1]) == 5  # multi-turn again: the earlier turns come along
    other = ChatSession(tuned_template=template)  # a side without a template gets the message as typed
    run_turn(other, "raw", model)
    assert model.calls[-1][0][-1]["content"] == "raw" and model.calls[-1][1] == template.messages("raw")


def test_ui_send_wraps_the_message_for_a_template_run(runs_root):
    from finetune_core.inference.run_prompts import run_template
    from ui import chat_tab

    run = split_run(INTENTS)
    key, model = f"run:{run.id}", FakeModel()
    ctx = fake_ctx(model)
    session, _, msg, left, right, _ = chat_tab.begin_send(ctx, None, "Where is my parcel?", key, False,
                                                          wrap=True, single_turn=True)
    wrapped = run_template(run).wrap("Where is my parcel?")
    assert left[-1]["content"] == right[-1]["content"] == wrapped  # shown as the models get it
    list(chat_tab.stream_reply(ctx, session, msg, key, "", 0.0, 1.0, 8, 0))
    assert model.calls[-1][1] == [{"role": "user", "content": wrapped}]
    session, *_ = chat_tab.begin_send(ctx, session, "again", key, False, wrap=False, single_turn=False)
    list(chat_tab.stream_reply(ctx, session, "again", key, "", 0.0, 1.0, 8, 0))
    assert model.calls[-1][1][-1] == {"role": "user", "content": "again"} and len(model.calls[-1][1]) == 3
