"""Labelled datasets: JSONL and CSV read into examples whose labels never reach the document, errors at their line."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steadyflow.evals.dataset import Dataset, DatasetError, Example, load_dataset
from steadyflow.io.limits import LIMITS

STAGES = ["triage", "summarize"]
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _jsonl(path: Path, *rows: Any) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def _error(path: Path, stages: list[str] = STAGES) -> str:
    with pytest.raises(DatasetError) as caught:
        load_dataset(path, stages)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def _no_labels(example: Example) -> None:
    assert "expected" not in example.document and "tags" not in example.document


# ---- JSONL ------------------------------------------------------------------------------------


def test_jsonl_nested_per_stage_expected(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl",
        {
            "id": "t01",
            "text": "Charged twice",
            "expected": {"triage": {"category": "billing"}, "summarize": {"summary": "double charge"}},
            "tags": ["pii", "short"],
            "subject": "March invoice",
        },
    )
    dataset = load_dataset(path, STAGES)
    (example,) = dataset.examples
    assert example.id == "t01"
    assert example.expected == {"triage": {"category": "billing"}, "summarize": {"summary": "double charge"}}
    assert example.tags == ("pii", "short")
    assert example.document == {"id": "t01", "text": "Charged twice", "subject": "March invoice"}
    assert dataset.scorers == {} and dataset.path == path


def test_jsonl_flat_expected_belongs_to_the_last_stage_or_the_one_named(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", {"id": "a", "text": "x", "expected": {"category": "billing", "urgent": True}})
    assert load_dataset(path, STAGES).examples[0].expected == {"summarize": {"category": "billing", "urgent": True}}
    assert load_dataset(path, STAGES, "triage").examples[0].expected == {
        "triage": {"category": "billing", "urgent": True}
    }


def test_jsonl_stage_dot_field_keys_go_to_their_stage_and_other_dots_are_nested_fields(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl",
        {
            "id": "a",
            "text": "x",
            "expected": {"triage.category": "billing", "summarize.summary": "s", "address.city": "Lyon"},
        },
    )
    (example,) = load_dataset(path, STAGES).examples
    assert example.expected == {
        "triage": {"category": "billing"},
        "summarize": {"summary": "s", "address.city": "Lyon"},
    }


def test_jsonl_scorers_line_first_declares_scorers(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl",
        {"scorers": {"summarize.summary": "fuzzy:0.8", "triage.amount": "tolerance:2%"}},
        {"id": "a", "text": "x", "expected": {"summary": "s"}},
    )
    dataset = load_dataset(path, STAGES)
    assert dataset.scorers == {"summarize.summary": "fuzzy:0.8", "triage.amount": "tolerance:2%"}
    assert [e.id for e in dataset.examples] == ["a"]


def test_jsonl_scorers_line_later_is_an_example_and_fails_as_one(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", {"id": "a", "text": "x", "expected": {"s": 1}}, {"scorers": {"a.b": "exact"}})
    assert _error(path).startswith(f"{path}:2:")


def test_jsonl_scorers_must_map_names_to_names(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", {"scorers": {"triage.category": 3}}, {"id": "a", "text": "x", "expected": {}})
    assert "scorers" in _error(path) and _error(path).startswith(f"{path}:1:")


def test_jsonl_blank_lines_bom_crlf_and_integer_ids(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [json.dumps({"id": 7, "body": "via body", "expected": {"category": "b"}}), "", "   "]
    rows.append(json.dumps({"id": "8", "text": "t", "expected": {"category": "c"}}))
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode())
    dataset = load_dataset(path, STAGES)
    assert [e.id for e in dataset.examples] == ["7", "8"]
    assert dataset.examples[0].document == {"id": "7", "body": "via body"}


def test_jsonl_text_with_unicode_line_separators_is_one_line(tmp_path: Path) -> None:
    # U+2028, U+2029 and U+0085 are legal unescaped inside a JSON string; only \n ends a JSONL line
    text = "first\u2028second\u2029third\x85fourth\x0cfifth"
    path = tmp_path / "d.jsonl"
    lines = [{"id": "a", "text": text, "expected": {"category": "b"}}, {"id": "b", "text": "t", "expected": {"c": 1}}]
    path.write_text("\n".join(json.dumps(row, ensure_ascii=False) for row in lines) + "\n", encoding="utf-8")
    dataset = load_dataset(path, STAGES)
    assert [e.document["text"] for e in dataset.examples] == [text, "t"]
    path.write_text(path.read_text() + '{"id": "a", "text": "again", "expected": {"c": 1}}\n', encoding="utf-8")
    assert "id 'a' appears twice" in _error(path) and _error(path).startswith(f"{path}:3:")


def test_a_key_named_twice_in_an_object_is_refused_not_silently_overwritten(tmp_path: Path) -> None:
    # JSON keeps the last of two equal keys: a second "category" would replace the label unseen
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"id": "a", "text": "t", "expected": {"category": "b"}}\n'
        '{"id": "b", "text": "t", "expected": {"category": "billing", "category": "account"}}\n'
    )
    assert _error(path) == f"{path}:2: key 'category' appears twice in one object"
    path.write_text('{"id": "a", "id": "b", "text": "t", "expected": {"c": 1}}\n')
    assert _error(path) == f"{path}:1: key 'id' appears twice in one object"


# ---- CSV ----------------------------------------------------------------------------------------


def test_broken_csv_rows_are_named_by_the_line_they_start_on(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    header = "id,text,expected.category\n"
    cases = {
        'z,ok,billing\na,"hello,billing\nb,world,account\n': ':3: a quoted cell is never closed (a missing ")',
        "a,hello\nb,world,account\n": ":2: no label in any expected.* column (the row has fewer cells than the header)",
        "a,hello,\n": ":2: no label in any expected.* column",
        "a,hello,billing,extra\n": ":2: more cells than header columns",
        'a,"x"y,billing\n': ":2: not CSV (',' expected after '\"')",
    }
    for body, says in cases.items():
        path.write_text(header + body)
        assert _error(path) == f"{path}{says}", body


def test_csv_expected_columns_json_cells_and_tags(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(
        "id,text,expected.category,expected.triage.priority,expected.summarize.n,expected.summarize.urgent,"
        "expected.labels,tags,customer\n"
        't1,"Charged twice, please refund",billing,high,3,true,"[""a"", ""b""]",pii; short ;,"ACME"\n'
        "t2,App crashes,technical,,2.5,false,,,42\n",
        encoding="utf-8",
    )
    first, second = load_dataset(path, STAGES).examples
    assert first.expected == {
        "summarize": {"category": "billing", "n": 3, "urgent": True, "labels": ["a", "b"]},
        "triage": {"priority": "high"},
    }
    assert first.tags == ("pii", "short")
    assert first.document == {"id": "t1", "text": "Charged twice, please refund", "customer": "ACME"}
    assert second.expected == {"summarize": {"category": "technical", "n": 2.5, "urgent": False}}  # empty: unlabelled
    assert second.tags == ()
    assert second.document["customer"] == "42"  # document fields stay as written; only labels read as JSON
    for example in (first, second):
        _no_labels(example)


def test_csv_cells_that_are_not_json_values_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('id,text,expected.a,expected.b,expected.c,expected.d\n1,t,NaN,Infinity,[1,"{""x"": 1}"\n')
    (example,) = load_dataset(path, STAGES).examples
    assert example.expected == {"summarize": {"a": "NaN", "b": "Infinity", "c": "[1", "d": {"x": 1}}}


def test_csv_rows_shorter_than_the_header_leave_the_rest_unlabelled(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,text,expected.category,expected.priority\n1,hello,billing\n2,world,technical,low\n")
    first, second = load_dataset(path, STAGES).examples
    assert first.expected == {"summarize": {"category": "billing"}}
    assert second.expected == {"summarize": {"category": "technical", "priority": "low"}}


def test_csv_line_numbers_count_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('id,text,expected.category\n1,"two\nlines",billing\n1,again,billing\n')
    assert _error(path).startswith(f"{path}:4:") and "appears twice" in _error(path)


def test_csv_errors_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,text,expected.category\n1,a,billing\n2,b,billing,extra\n")
    assert _error(path).startswith(f"{path}:3:") and "more cells" in _error(path)
    path.write_text("id,text,expected.category\n1,a,billing\n2,b,\n")
    assert _error(path) == f"{path}:3: no label in any expected.* column"
    path.write_text("text,expected.category\nhello,billing\n")
    assert _error(path).startswith(f"{path}:2:") and '"id"' in _error(path)


def test_csv_a_column_named_expected_is_refused_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('id,expected,text,expected.category\n1,"{""a"": 1}",t,billing\n')
    _error(path)
    path.write_text('id,text,expected.category,expected\n1,t,billing,"{""a"": 1}"\n')
    _error(path)


# ---- labels never reach the document ------------------------------------------------------------


def test_labels_and_tags_never_reach_the_document(tmp_path: Path) -> None:
    sentinel = "LABEL-ONLY-5521"
    path = _jsonl(
        tmp_path / "d.jsonl",
        {"id": "a", "text": "t", "expected": {"category": sentinel}, "tags": [sentinel]},
        {"id": "b", "text": "t", "expected": {"triage": {"category": sentinel}}, "other": 1},
    )
    for example in load_dataset(path, STAGES).examples:
        _no_labels(example)
        assert sentinel not in json.dumps(example.document)


# ---- errors -------------------------------------------------------------------------------------


def test_duplicate_id_names_the_second_line(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl",
        {"id": "a", "text": "x", "expected": {"c": 1}},
        {"id": "b", "text": "x", "expected": {"c": 1}},
        {"id": "a", "text": "x", "expected": {"c": 1}},
    )
    assert _error(path) == f"{path}:3: id 'a' appears twice"


def test_integer_and_string_ids_collide(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl",
        {"id": 1, "text": "x", "expected": {"c": 1}},
        {"id": "1", "text": "x", "expected": {"c": 1}},
    )
    assert _error(path).startswith(f"{path}:2:")


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ({"text": "x", "expected": {"c": 1}}, '"id"'),
        ({"id": "", "text": "x", "expected": {"c": 1}}, '"id"'),
        ({"id": True, "text": "x", "expected": {"c": 1}}, '"id"'),
        ({"id": ["a"], "text": "x", "expected": {"c": 1}}, '"id"'),
        ({"id": "a", "expected": {"c": 1}}, '"text"'),
        ({"id": "a", "text": 5, "expected": {"c": 1}}, '"text"'),
        ({"id": "a", "text": "x"}, '"expected"'),
        ({"id": "a", "text": "x", "expected": {}}, '"expected"'),
        ({"id": "a", "text": "x", "expected": ["billing"]}, '"expected"'),
        ({"id": "a", "text": "x", "expected": {"c": 1}, "tags": "pii"}, '"tags"'),
        ({"id": "a", "text": "x", "expected": {"c": 1}, "tags": [1]}, '"tags"'),
    ],
)
def test_a_bad_example_names_its_line(tmp_path: Path, row: dict[str, Any], words: str) -> None:
    path = _jsonl(tmp_path / "d.jsonl", {"id": "ok", "text": "fine", "expected": {"c": 1}}, row)
    message = _error(path)
    assert message.startswith(f"{path}:2:") and words in message


def test_missing_text_never_quotes_the_document(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", {"id": "a", "body": 3, "subject": "PRIVATE-TEXT-0017", "expected": {"c": 1}})
    assert "PRIVATE-TEXT-0017" not in _error(path)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('{"id": "a", "text": ', "invalid JSON"),
        ("not json at all", "invalid JSON"),
        ('["a", "b"]', "JSON object"),
        ('"a string"', "JSON object"),
        ("42", "JSON object"),
        ("null", "JSON object"),
    ],
)
def test_a_line_that_is_no_json_object_names_its_line(tmp_path: Path, line: str, words: str) -> None:
    path = _jsonl(tmp_path / "d.jsonl", {"id": "ok", "text": "fine", "expected": {"c": 1}}, "", line)
    message = _error(path)
    assert message.startswith(f"{path}:3:") and words in message


def test_an_empty_file_has_no_examples(tmp_path: Path) -> None:
    for name, content in [("e.jsonl", ""), ("b.jsonl", "\n  \n"), ("h.csv", "id,text,expected.c\n"), ("z.csv", "")]:
        path = tmp_path / name
        path.write_text(content)
        assert _error(path) == f"{path}: no examples"
    only_scorers = _jsonl(tmp_path / "s.jsonl", {"scorers": {"a.b": "exact"}})
    assert _error(only_scorers) == f"{only_scorers}: no examples"


def test_a_file_that_is_not_utf8_is_refused_with_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"id": "a", "text": "caf\xe9", "expected": {"c": 1}}\n')
    assert _error(path) == f"{path}: not UTF-8 (byte 24)"
    utf16 = tmp_path / "u.csv"
    utf16.write_bytes("id,text,expected.c\n1,t,1\n".encode("utf-16"))
    assert "not UTF-8" in _error(utf16)


def test_a_missing_file_is_a_dataset_error(tmp_path: Path) -> None:
    assert "cannot read" in _error(tmp_path / "nope.jsonl")
    assert "cannot read" in _error(tmp_path)  # a folder


def test_an_over_long_line_is_refused_by_its_number(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    big = json.dumps({"id": "b", "text": "x" * LIMITS.record_bytes, "expected": {"c": 1}})
    path.write_text(json.dumps({"id": "a", "text": "ok", "expected": {"c": 1}}) + "\n" + big + "\n")
    message = _error(path)
    assert message.startswith(f"{path}:2:") and "MiB" in message


def test_an_over_long_csv_cell_is_a_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,text,expected.c\n1,ok,1\n2," + "x" * (LIMITS.record_bytes + 10) + ",1\n")
    assert _error(path).startswith(f"{path}:")


@pytest.mark.parametrize("depth", [70, 5_000, 200_000])
def test_deeply_nested_json_is_a_dataset_error_not_a_recursion_error(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "d.jsonl"
    deep = "[" * depth + "]" * depth
    path.write_text(json.dumps({"id": "a", "text": "ok", "expected": {"c": 1}}) + "\n")
    path.write_text(path.read_text() + '{"id": "b", "text": "t", "expected": {"c": ' + deep + "}}\n")
    assert _error(path).startswith(f"{path}:2:")
    unclosed = tmp_path / "u.jsonl"
    unclosed.write_text("{" * depth + "\n")
    assert _error(unclosed).startswith(f"{unclosed}:1:")
    csv_path = tmp_path / "d.csv"
    csv_path.write_text(f"id,text,expected.c\n1,t,{deep}\n")
    (example,) = load_dataset(csv_path, STAGES).examples  # a cell that is no JSON value within bounds: a string
    assert example.expected == {"summarize": {"c": deep}}


def test_a_huge_json_integer_is_a_dataset_error(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", '{"id": "a", "text": "t", "expected": {"n": ' + "9" * 5000 + "}}")
    assert _error(path).startswith(f"{path}:1:")


def test_an_id_with_a_newline_keeps_the_error_on_one_line(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl",
        {"id": "a\nb", "text": "x", "expected": {"c": 1}},
        {"id": "a\nb", "text": "x", "expected": {"c": 1}},
    )
    assert _error(path).startswith(f"{path}:2: id 'a")


def test_labels_for_a_stage_beside_known_stages_are_kept_under_that_stage(tmp_path: Path) -> None:
    """A per-stage ``expected`` with a misspelt stage is not read as fields named after stages."""
    path = _jsonl(
        tmp_path / "d.jsonl",
        {"id": "a", "text": "x", "expected": {"triage": {"category": "billing"}, "sumarize": {"summary": "s"}}},
    )
    (example,) = load_dataset(path, STAGES).examples
    assert example.expected == {"triage": {"category": "billing"}, "sumarize": {"summary": "s"}}


# ---- properties ---------------------------------------------------------------------------------

_pieces = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b'{"id": "a", "text": "t", "expected": {"c": 1}}',
            b'{"id": "a", "text": "t", "expected": {"triage": {"c": true}}, "tags": ["x"]}',
            b'{"scorers": {"triage.c": "exact"}}',
            b'{"scorers": {"triage.c": 1}}',
            b'{"id": 1e999, "text": NaN, "expected": {"c": -Infinity}}',
            b'"\\ud800"',
            b"[" * 3000,
            b"\xef\xbb\xbf",
            b"\xff\xfe",
            b'"',
            b",",
            b"\r",
            b"\x00",
            b"\xe2\x80\xa8",
            b"id,text,expected.c,tags",
            b"expected",
            b'1,t,"[1, 2]",a;b',
        ]
    ),
)


@PROPERTY
@given(
    st.lists(_pieces, max_size=12), st.sampled_from([b"\n", b"\r\n", b"", b","]), st.sampled_from([".jsonl", ".csv"])
)
def test_any_bytes_load_or_raise_dataset_error(pieces: list[bytes], joint: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"d{suffix}"
        path.write_bytes(joint.join(pieces))
        loaded = _load_or_error(path)
    if isinstance(loaded, str):
        assert loaded.startswith(str(path)) and "\n" not in loaded
        return
    assert loaded.examples
    assert len({e.id for e in loaded.examples}) == len(loaded.examples)
    for example in loaded.examples:
        assert example.expected and all(isinstance(fields, dict) and fields for fields in example.expected.values())
        _no_labels(example)
        json.dumps(example.document, ensure_ascii=False).encode("utf-8")  # what a provider client sends


def _load_or_error(path: Path) -> Dataset | str:
    """The dataset, or the message of its DatasetError; any other exception fails the test."""
    try:
        return load_dataset(path, ["triage"])
    except DatasetError as exc:
        return str(exc)


def test_a_dataset_over_the_example_limit_is_refused_before_the_rest_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("steadyflow.evals.dataset.MAX_EXAMPLES", 3)
    good = [json.dumps({"id": f"e{i}", "text": "t", "expected": {"c": 1}}) for i in range(5)]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join([*good, "not json"]) + "\n")  # a 256 MiB file of tiny lines took 4.5 GB to refuse
    with pytest.raises(DatasetError, match="more than 3 examples"):
        load_dataset(jsonl, ["s"])
    csv_file = tmp_path / "d.csv"
    csv_file.write_text("id,text,expected.c\n" + "".join(f"e{i},t,1\n" for i in range(5)) + 'x,"never ends\n')
    with pytest.raises(DatasetError, match="more than 3 examples"):
        load_dataset(csv_file, ["s"])
