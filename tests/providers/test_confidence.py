"""A field's confidence from token log-probabilities, however the tokenizer split the generated JSON."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
from openai.types.chat import ChatCompletion

from steadyflow.providers.confidence import field_confidence, response_tokens, scored_fields


def _exp(*logprobs: float) -> float:
    return round(math.exp(sum(logprobs)), 6)


# ---- field_confidence -----------------------------------------------------------------------------


def test_value_as_its_own_token_between_quote_tokens() -> None:
    tokens = [("{", 0.0), ('"', 0.0), ("category", -0.3), ('"', 0.0), (":", 0.0), (" ", 0.0)]
    tokens += [('"', -0.01), ("billing", -0.2), ('"', -0.02), ("}", 0.0)]
    assert field_confidence(tokens, {"category": "billing"}, ["category"]) == {"category": _exp(-0.2)}


def test_quote_merged_with_the_value_counts_that_token() -> None:
    tokens = [('{"', 0.0), ("category", -0.3), ('":', 0.0), (' "', 0.0), ('billing"', -0.4), ("}", 0.0)]
    assert field_confidence(tokens, {"category": "billing"}, ["category"]) == {"category": _exp(-0.4)}
    opening = [('{"category": "', -0.1), ("billing", -0.25), ('"}', -0.05)]
    assert field_confidence(opening, {"category": "billing"}, ["category"]) == {"category": _exp(-0.25)}


def test_value_split_over_two_tokens_sums_both() -> None:
    tokens = [('{"', 0.0), ("category", 0.0), ('":"', 0.0), ("bill", -0.1), ("ing", -0.15), ('"}', 0.0)]
    assert field_confidence(tokens, {"category": "billing"}, ["category"]) == {"category": _exp(-0.1, -0.15)}


def test_a_token_spanning_the_value_and_more_counts_once() -> None:
    tokens = [('{"category": ', 0.0), ('"billing", "', -0.3), ('urgent": true}', -0.6)]
    found = field_confidence(tokens, {"category": "billing", "urgent": True}, ["category", "urgent"])
    assert found == {"category": _exp(-0.3), "urgent": _exp(-0.6)}


def test_boolean_values() -> None:
    tokens = [('{"', 0.0), ("urgent", -0.5), ('":', 0.0), (" true", -0.07), (',"', 0.0), ("spam", 0.0)]
    tokens += [('":', 0.0), ("fal", -0.2), ("se", -0.01), ("}", 0.0)]
    output = {"urgent": True, "spam": False}
    assert field_confidence(tokens, output, ["urgent", "spam"]) == {"urgent": _exp(-0.07), "spam": _exp(-0.21)}


def test_a_field_not_found_is_left_out() -> None:
    tokens = [('{"category": "billing"}', -0.1)]
    assert field_confidence(tokens, {"category": "billing"}, ["priority"]) == {}
    assert field_confidence(tokens, {"category": "technical"}, ["category"]) == {}  # not what was generated
    assert field_confidence(tokens, {"priority": None}, ["priority"]) == {}  # null: nothing to be sure of
    assert field_confidence(tokens, {"count": 3}, ["count"]) == {}  # numbers take no confidence
    assert field_confidence([], {"category": "billing"}, ["category"]) == {}


def test_value_appearing_earlier_in_another_field_is_not_taken() -> None:
    tokens = [('{"', 0.0), ("summary", 0.0), ('":"', 0.0), ("billing", -2.0), (" issue", -1.0), ('","', 0.0)]
    tokens += [("category", 0.0), ('":"', 0.0), ("billing", -0.05), ('"}', 0.0)]
    output = {"summary": "billing issue", "category": "billing"}
    assert field_confidence(tokens, output, ["category"]) == {"category": _exp(-0.05)}


def test_a_field_name_quoted_inside_a_string_is_not_taken() -> None:
    text = '{"summary": "it said \\"category\\": \\"billing\\"", "category": "billing"}'
    tokens = [(text[:40], -3.0), (text[40:-9], 0.0), (text[-9:-2], -0.1), (text[-2:], 0.0)]
    assert text[-9:-2] == "billing"
    output = {"summary": 'it said "category": "billing"', "category": "billing"}
    assert field_confidence(tokens, output, ["category"]) == {"category": _exp(-0.1)}


def test_spacing_and_newlines_around_the_colon() -> None:
    tokens = [("{\n  ", 0.0), ('"category"', 0.0), ("  :\n    ", 0.0), ('"', 0.0), ("technical", -0.5), ('"\n}', 0.0)]
    assert field_confidence(tokens, {"category": "technical"}, ["category"]) == {"category": _exp(-0.5)}


def test_non_ascii_values_as_a_model_writes_them() -> None:
    tokens = [('{"', 0.0), ("category", 0.0), ('": "', 0.0), ("env", -0.1), ("ío", -0.2), ('"}', 0.0)]
    assert field_confidence(tokens, {"category": "envío"}, ["category"]) == {"category": _exp(-0.1, -0.2)}
    escaped = [('{"', 0.0), ("category", 0.0), ('": "', 0.0), ("env", -0.1), ("\\u00edo", -0.3), ('"}', 0.0)]
    assert field_confidence(escaped, {"category": "envío"}, ["category"]) == {"category": _exp(-0.1, -0.3)}


def test_an_empty_string_value_takes_the_closing_quote() -> None:
    tokens = [('{"', 0.0), ("category", 0.0), ('": "', -0.1), ('"', -0.4), ("}", 0.0)]
    assert field_confidence(tokens, {"category": ""}, ["category"]) == {"category": _exp(-0.4)}


def test_confidence_is_a_probability() -> None:
    tokens = [('{"category": "', 0.0), ("billing", -50.0), ('"}', 0.0)]
    assert field_confidence(tokens, {"category": "billing"}, ["category"]) == {"category": 0.0}
    sure = [('{"category": "', 0.0), ("billing", 0.0), ('"}', 0.0)]
    assert field_confidence(sure, {"category": "billing"}, ["category"]) == {"category": 1.0}


# ---- response_tokens ------------------------------------------------------------------------------


def _response(content: Any) -> Any:
    return SimpleNamespace(choices=[SimpleNamespace(logprobs=SimpleNamespace(content=content))])


def _token(token: Any, logprob: Any) -> Any:
    return SimpleNamespace(token=token, logprob=logprob)


def test_response_tokens_of_a_real_chat_completion() -> None:
    completion = ChatCompletion.model_validate(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": '{"a": true}'},
                    "logprobs": {
                        "content": [
                            {"token": '{"a": ', "logprob": -0.01, "bytes": None, "top_logprobs": []},
                            {"token": "true", "logprob": -0.2, "bytes": None, "top_logprobs": []},
                            {"token": "}", "logprob": 0.0, "bytes": None, "top_logprobs": []},
                        ]
                    },
                }
            ],
        }
    )
    assert response_tokens(completion) == [('{"a": ', -0.01), ("true", -0.2), ("}", 0.0)]


def test_response_tokens_clips_positive_log_probabilities_to_certainty() -> None:
    assert response_tokens(_response([_token("a", 0.3), _token("b", -1)])) == [("a", 0.0), ("b", -1.0)]


@pytest.mark.parametrize(
    "response",
    [
        None,
        SimpleNamespace(),
        SimpleNamespace(choices=None),
        SimpleNamespace(choices=[]),
        SimpleNamespace(choices={"0": 1}),
        SimpleNamespace(choices=[SimpleNamespace()]),
        SimpleNamespace(choices=[SimpleNamespace(logprobs=None)]),
        _response(None),
        _response([]),
        _response(5),
        _response("not a list"),
        _response({"token": "a", "logprob": -1}),
        _response([SimpleNamespace()]),
        _response([_token(None, -0.1)]),
        _response([_token(3, -0.1)]),
        _response([_token("a", None)]),
        _response([_token("a", "-0.1")]),
        _response([_token("a", math.nan)]),
        _response([_token("a", -math.inf)]),
        _response([_token("a", -0.1), _token("b", math.inf)]),
    ],
)
def test_response_tokens_of_a_malformed_response_is_none(response: Any) -> None:
    assert response_tokens(response) is None


# ---- scored_fields --------------------------------------------------------------------------------


def test_scored_fields_are_top_level_enums_and_booleans_required_or_optional() -> None:
    schema = {
        "properties": {
            "category": {"enum": ["billing", "technical"], "type": "string"},
            "urgent": {"type": "boolean"},
            "maybe": {"anyOf": [{"enum": ["a", "b"], "type": "string"}, {"type": "null"}], "default": None},
            "flag": {"anyOf": [{"type": "boolean"}, {"type": "null"}]},
            "summary": {"type": "string"},
            "count": {"type": "integer"},
            "tags": {"type": "array", "items": {"enum": ["x", "y"]}},
            "address": {"$ref": "#/$defs/Address"},
            "odd": "not a schema",
        },
        "$defs": {"Address": {"properties": {"zone": {"enum": ["eu", "us"]}}}},
    }
    assert scored_fields(schema) == ["category", "urgent", "maybe", "flag"]


def test_scored_fields_of_schemas_without_properties() -> None:
    assert scored_fields({}) == []
    assert scored_fields({"properties": None}) == []
    assert scored_fields({"properties": {"a": {"anyOf": ["junk", {"type": "boolean"}]}}}) == ["a"]
