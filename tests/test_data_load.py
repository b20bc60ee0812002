"""Reading files into raw records: formats, encodings, limits and exact issue positions."""
from __future__ import annotations

import json
from pathlib import Path

from finetune_core.data.load import load_records

FIX = Path(__file__).parent / "fixtures" / "data"


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return p


def test_jsonl_broken_line_57_names_the_line_and_keeps_the_rest(tmp_path):
    lines = [json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) for i in range(1, 61)]
    lines[56] = '{"prompt": "q57", "completion": }'
    res = load_records(write(tmp_path, "d.jsonl", "\n".join(lines) + "\n"))
    assert not res.fatal
    assert res.total_rows == 60
    assert len(res.records) == 59
    assert [i.to_dict() for i in res.issues] == [
        {"row": 57, "column": None, "message": "invalid JSON on line 57: Expecting value (column 33)"}
    ]
    assert 57 not in res.row_numbers and res.row_numbers[56] == 58
    assert res.records[56] == {"prompt": "q58", "completion": "a58"}


def test_jsonl_blank_lines_keep_line_numbers_and_non_objects_are_flagged(tmp_path):
    res = load_records(write(tmp_path, "d.jsonl", '{"a": 1}\n\n[1, 2]\n  \n{"a": 3}\n'))
    assert res.row_numbers == [1, 5]
    assert res.total_rows == 3
    assert [(i.row, i.message) for i in res.issues] == [(3, 'line 3 is a list, not an example (an object with named fields, like '
                                                     '{"prompt": ..., "completion": ...})')]


def test_json_array_object_of_columns_and_wrapped_rows(tmp_path):
    res = load_records(FIX / "columns_object.json")
    assert res.columns == ["question", "answer"]
    assert res.records == [{"question": "Largest planet?", "answer": "Jupiter"},
                           {"question": "Smallest planet?", "answer": "Mercury"}]
    wrapped = load_records(write(tmp_path, "w.json", '{"data": [{"x": "1"}, {"x": "2"}]}'))
    assert wrapped.records == [{"x": "1"}, {"x": "2"}] and wrapped.row_numbers == [1, 2]
    mixed = load_records(write(tmp_path, "m.json", '[{"x": "1"}, "oops", {"x": "3"}]'))
    assert mixed.row_numbers == [1, 3]
    assert [(i.row, i.message) for i in mixed.issues] == [(2, 'row 2 is a piece of text, not an example (an object with named fields, '
                                                       'like {"prompt": ..., "completion": ...})')]


def test_json_column_lengths_must_match(tmp_path):
    res = load_records(write(tmp_path, "c.json", '{"a": [1, 2], "b": [1]}'))
    assert res.fatal
    assert res.issues[0].message == "the JSON object of columns has columns of different lengths (a: 2, b: 1)"


def test_invalid_json_file_reports_line_and_column(tmp_path):
    res = load_records(write(tmp_path, "bad.json", '[\n  {"a": 1},\n  {"a": 2,}\n]'))
    assert res.fatal
    assert res.issues[0].message.startswith("invalid JSON at line 3 column 11:")


def test_json_file_holding_json_lines_is_read_as_lines(tmp_path):
    res = load_records(write(tmp_path, "l.json", '{"text": "one"}\n{"text": "two"}\n'))
    assert not res.fatal and res.records == [{"text": "one"}, {"text": "two"}]


def test_csv_keeps_crlf_inside_cells():
    res = load_records(FIX / "tickets.csv")
    assert res.columns == ["ticket", "reply"]
    assert res.records[0] == {"ticket": "Printer broken.\r\nPlease help.", "reply": "We will send a technician."}
    assert res.records[1] == {"ticket": "Cannot log in", "reply": "Reset link sent."}
    assert res.row_numbers == [1, 2]


def test_csv_row_with_wrong_cell_count(tmp_path):
    res = load_records(write(tmp_path, "d.csv", "a,b\n1,2\n3,4,5\n6,7\n"))
    assert res.row_numbers == [1, 3]
    assert [(i.row, i.message) for i in res.issues] == [(2, "row 2 (line 3) has 3 cells but the header has 2")]


def test_tsv_and_header_cleanup(tmp_path):
    res = load_records(FIX / "reviews.tsv")
    assert res.columns == ["review", "stars"] and res.records[0] == {"review": "Great food", "stars": "5"}
    dup = load_records(write(tmp_path, "h.csv", "x,x,\n1,2,3\n"))
    assert dup.columns == ["x", "x_2", "column_3"]


def test_header_only_csv_is_a_file_level_failure(tmp_path):
    res = load_records(write(tmp_path, "h.csv", "text,label\n"))
    assert res.fatal and res.records == []
    assert [i.to_dict() for i in res.issues] == [
        {"row": None, "column": None, "message": "the file has a header (text, label) but no data rows"}
    ]


def test_empty_and_blank_files(tmp_path):
    assert load_records(write(tmp_path, "e.jsonl", b"")).issues[0].message == "the file is empty: it needs at least one example"
    blank = load_records(write(tmp_path, "b.csv", "\n  \n"))
    assert blank.fatal and blank.issues[0].message == (
        "the file is empty (only spaces and blank lines): it needs at least one example")
    assert load_records(write(tmp_path, "z.json", "[]")).issues[0].message == "the file holds no examples: it needs at least one"


def test_latin1_reports_the_first_bad_byte_offset(tmp_path):
    res = load_records(write(tmp_path, "l.csv", "text,label\ncaf\xe9,food\n".encode("latin-1")))
    assert res.fatal
    assert res.issues[0].message == "not UTF-8: byte 0xe9 at offset 14; save the file as UTF-8"


def test_utf8_bom_is_accepted_and_counted_in_offsets(tmp_path):
    ok = load_records(write(tmp_path, "b.csv", b"\xef\xbb\xbftext,label\nhi,x\n"))
    assert not ok.fatal and ok.columns == ["text", "label"]
    bad = load_records(write(tmp_path, "c.csv", b"\xef\xbb\xbfab\xff"))
    assert bad.issues[0].message == "not UTF-8: byte 0xff at offset 5; save the file as UTF-8"


def test_utf16_is_rejected_with_or_without_bom(tmp_path):
    with_bom = load_records(write(tmp_path, "u.csv", "text,label\nhi,x\n".encode("utf-16")))
    assert with_bom.fatal and with_bom.issues[0].message == (
        "not UTF-8: the file starts with the UTF-16 byte-order mark 0xff 0xfe at offset 0; save the file as UTF-8")
    no_bom = load_records(write(tmp_path, "v.jsonl", '{"a": 1}'.encode("utf-16-le")))
    assert no_bom.fatal and no_bom.issues[0].message.startswith("not UTF-8 text: NUL byte 0x00 at offset 1")


def test_size_limit_is_checked_before_parsing(tmp_path):
    p = write(tmp_path, "big.jsonl", "this is not even JSON\n" * 100)  # 2200 bytes
    res = load_records(p, max_file_mb=0.001)
    assert res.fatal and res.records == [] and len(res.issues) == 1
    assert res.issues[0].message == "the file is 2.1 KB, over the 0.001 MB limit"
    assert not load_records(write(tmp_path, "ok.jsonl", '{"a": 1}\n'), max_file_mb=0.001).fatal


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["good", "bad"], "label": ["pos", "neg"]}), p)
    res = load_records(p)
    assert res.columns == ["text", "label"]
    assert res.records == [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]
    broken = load_records(write(tmp_path, "x.parquet", b"PAR1 not really"))
    assert broken.fatal and broken.issues[0].message.startswith("cannot read the Parquet file:")


def test_unsupported_extension_and_missing_file(tmp_path):
    assert load_records(write(tmp_path, "d.xlsx", b"x")).issues[0].message == (
        "unsupported file type '.xlsx'; use one of .jsonl, .json, .csv, .tsv, .parquet")
    missing = load_records(tmp_path / "nope.csv")
    assert missing.fatal and missing.issues[0].message.startswith("cannot read the file:")
