"""The bounded JSON reader shared by request bodies, manifests, safetensors headers and adapter configs."""

from __future__ import annotations

import pytest

from softprompt.safejson import MAX_DEPTH, MAX_NUMBER_CHARS, JsonLimitError, loads


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_depth_limit_both_below_and_beyond_the_interpreter_recursion_limit():
    assert loads(nested(MAX_DEPTH)) == loads(nested(MAX_DEPTH))
    for depth in (MAX_DEPTH + 1, 900, 5000, 100_000):
        with pytest.raises(JsonLimitError, match=f"nested deeper than {MAX_DEPTH}"):
            loads(nested(depth))
    with pytest.raises(JsonLimitError, match="nested deeper"):
        loads('{"a": ' * 200 + "1" + "}" * 200)


def test_numbers_are_bounded_and_finite():
    assert loads("9" * MAX_NUMBER_CHARS) == int("9" * MAX_NUMBER_CHARS)
    for text, fragment in (("9" * 5000, "5000 digits"), ("-" + "1" * 4400, "digits"), ("1e999", "finite"),
                           ("-1E400", "finite"), ("0." + "1" * 100, "characters"), ("NaN", "NaN is not JSON"),
                           ("[Infinity]", "Infinity is not JSON"), ("-Infinity", "not JSON")):
        with pytest.raises(JsonLimitError, match=fragment):
            loads(text)


def test_lone_surrogates_are_refused_anywhere_and_pairs_are_kept():
    assert loads('"\\ud83d\\ude00"') == "\U0001F600"
    for text in ('"\\ud800"', '{"a": ["x", "y\\udfff"]}', '{"\\udc00": 1}', '[{"k": {"k": "\\ud83d"}}]'):
        with pytest.raises(JsonLimitError, match="surrogate"):
            loads(text)


def test_bytes_must_be_utf8_json():
    assert loads(b'{"a": "\xc3\xa9"}') == {"a": "é"}
    with pytest.raises(JsonLimitError, match="not valid UTF-8"):
        loads(b'{"a": "\xff"}')
    with pytest.raises(JsonLimitError, match="not valid JSON"):
        loads(b'{"a": ')
    assert issubclass(JsonLimitError, ValueError)
