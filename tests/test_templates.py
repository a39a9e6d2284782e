"""Hybrid templates and verbalizers: parsing, rendering with the char-level tiny tokenizer, errors, scoring."""

from __future__ import annotations

import json
import math

import pytest
import torch

from softprompt.errors import ConfigError, InputError
from softprompt.templates import SoftSlot, Template, Verbalizer, class_scores, score_classes
from tests.tiny import tiny_tokenizer

EXAMPLE = "{soft:10} Review: {text} {soft:4|in one word:} Sentiment: {label}"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def test_parse_example():
    t = Template.parse(EXAMPLE)
    assert t.source == EXAMPLE
    assert t.fields == ("text",)
    assert t.answer_field == "label"
    assert t.soft_slots == (SoftSlot("#0", 10, None, 0), SoftSlot("#1", 4, "in one word:", 10))
    assert t.num_soft == 14
    assert t.answer_prefix == " "
    with pytest.raises(AttributeError):
        t.source = "x"  # frozen


def test_render_example(tok):
    t = Template.parse(EXAMPLE)
    ids = t.render({"text": "good film", "label": "ignored"}, tok)
    expected = ([-k for k in range(1, 11)] + enc(tok, " Review: good film ") + [-11, -12, -13, -14]
                + enc(tok, " Sentiment:"))
    assert ids == expected
    assert t.answer_ids("positive", tok) == enc(tok, " positive")
    # prompt text + answer text == the template with the field filled in and soft slots removed
    text = tok.decode([i for i in ids if i >= 0]) + tok.decode(t.answer_ids("positive", tok))
    assert text == " Review: good film  Sentiment: positive"


def test_render_field_values_join_hard_text_in_one_run():
    calls = []

    class Recorder:
        bos_token_id = None

        def encode(self, text, add_special_tokens=True):
            calls.append((text, add_special_tokens))
            return [ord(c) for c in text]

    Template.parse("Q: {q} / {a}? {soft:1} end").render({"q": "x", "a": "y"}, Recorder())
    assert calls == [("Q: x / y? ", False), (" end", False)]


class BosTokenizer:
    """Char-code tokenizer with a BOS id, like Llama's (add_bos_token=True)."""

    bos_token_id = 1000

    def __init__(self, add_bos_token: bool):
        self.add_bos_token = add_bos_token

    def encode(self, text, add_special_tokens=True):
        assert not add_special_tokens
        return [ord(c) for c in text]


@pytest.mark.parametrize("add_bos", [True, False])
def test_bos_prepended_once_only_when_tokenizer_adds_it(add_bos):
    t = Template.parse("{soft:2}ab{soft:1}c {label}")
    ids = t.render({}, BosTokenizer(add_bos))
    assert ids == ([1000] if add_bos else []) + [-1, -2, 97, 98, -3, 99]
    assert t.answer_ids("d", BosTokenizer(add_bos)) == [32, 100]  # no BOS on the answer


def test_shared_slots(tok):
    t = Template.parse("{soft:3:ctx}A{soft:2}B{soft:ctx}C{soft:3:ctx}D{soft:2:tail|xy}")
    assert [(s.name, s.length, s.offset) for s in t.soft_slots] == [("ctx", 3, 0), ("#1", 2, 3), ("tail", 2, 5)]
    assert t.num_soft == 7
    ids = t.render({}, tok)
    a, b, c, d = (enc(tok, ch)[0] for ch in "ABCD")
    assert ids == [-1, -2, -3, a, -4, -5, b, -1, -2, -3, c, -1, -2, -3, d, -6, -7]


def test_init_texts_tile_and_truncate(tok):
    t = Template.parse("{soft:5|ab} x {soft:2:n|abcd} {soft:n} {soft:3}")
    assert t.soft_init_texts() == [(0, 5, "ab"), (5, 2, "abcd")]
    a, b = enc(tok, "a")[0], enc(tok, "b")[0]
    assert t.soft_init_ids(tok) == [(0, [a, b, a, b, a]), (5, [a, b])]


def test_init_text_is_verbatim_and_may_hold_colons_and_bars():
    t = Template.parse("{soft:4:s| one: two | three }")
    assert t.soft_slots[0].init_text == " one: two | three "


def test_escapes(tok):
    t = Template.parse("{{literal}} {text} }}{{ {label}")
    assert t.fields == ("text",)
    assert tok.decode(t.render({"text": "x"}, tok)) == "{literal} x }{"


@pytest.mark.parametrize("source, answer_prefix, rendered_tail", [
    ("A: {label}", " ", "A:"),
    ("A:{label}", "", "A:"),
    ("A:   {label}", "   ", "A:"),
    ("A:\n{label}", "", "A:\n"),
    ("A: {text}{label}", "", "A: t"),
])
def test_answer_space_rule(tok, source, answer_prefix, rendered_tail):
    t = Template.parse(source)
    assert t.answer_prefix == answer_prefix
    assert tok.decode(t.render({"text": "t"}, tok)) == rendered_tail
    assert t.answer_ids("yes", tok) == enc(tok, answer_prefix + "yes")


def test_space_before_answer_after_soft_slot_moves_entirely(tok):
    t = Template.parse("{text}{soft:2} {label}")
    assert t.render({"text": "ab"}, tok) == enc(tok, "ab") + [-1, -2]
    assert t.answer_ids("c", tok) == enc(tok, " c")


def test_no_answer_slot_and_custom_answer_name(tok):
    t = Template.parse("Q: {text} A: ")
    assert t.answer_field is None and t.answer_prefix == ""
    assert tok.decode(t.render({"text": "x"}, tok)) == "Q: x A: "
    t = Template.parse("{label} -> {y}", answer_field="y")
    assert t.fields == ("label",) and t.answer_field == "y"
    assert tok.decode(t.render({"label": "L"}, tok)) == "L ->"


def test_field_values_are_data_never_template_syntax(tok):
    t = Template.parse("{text} {label}")
    value = "{soft:3} {label} }}{{ {__import__('os')}"
    assert t.render({"text": value}, tok) == enc(tok, value)


def test_repeated_field_listed_once(tok):
    t = Template.parse("{a} {b} {a}")
    assert t.fields == ("a", "b")
    assert tok.decode(t.render({"a": "1", "b": "2"}, tok)) == "1 2 1"


def _column_of(problem: str) -> int:
    """The column named in a problem and the caret's column must agree."""
    head, line, caret = problem.split("\n")
    assert caret.index("^") - 6 == int(head.split("column ")[1].split(":")[0]) - 1
    return int(head.split("column ")[1].split(":")[0])


@pytest.mark.parametrize("source, column, fragment", [
    ("{soft:10} Review: {text {soft:4}", 19, "unclosed '{'"),
    ("Review: {text", 9, "unclosed '{'"),
    ("a } b", 3, "unmatched '}'"),
    ("x {}", 3, "empty slot"),
    ("x { text}", 4, "invalid slot name ' text'"),
    ("{foo-bar}", 2, "invalid slot name 'foo-bar'"),
    ("{soft}", 1, "needs a length"),
    ("{soft:0}", 7, "out of range"),
    ("{soft:99999}", 7, "out of range"),
    ("ab{soft:-3}", 9, "not a whole number"),
    ("{soft:3.5}", 7, "not a whole number"),
    ("{soft:4|}", 9, "empty init text"),
    ("{soft:4:9x}", 9, "invalid soft slot name '9x'"),
    ("{soft:1:2:3}", 7, "cannot read soft slot"),
    ("{text} {soft:ctx}", 8, "used before its length is given"),
    ("{soft:4:ctx} {soft:5:ctx}", 14, "has length 5 here but 4 at column 1"),
    ("{soft:4:c|hi} {soft:c|yo}", 15, "init text 'yo' here but 'hi'"),
    ("{text} {label} tail", 15, "follows the answer slot {label}"),
    ("{label}{text}", 8, "follows the answer slot"),
    ("{label}{soft:2}", 8, "follows the answer slot"),
    ("{label}{label}", 8, "second answer slot"),
    ("{__import__('os').system('ls')}", 2, "invalid slot name"),
])
def test_parse_errors_name_the_column(source, column, fragment):
    with pytest.raises(ConfigError) as info:
        Template.parse(source)
    problems = info.value.problems
    assert len(problems) == 1, problems
    assert fragment in problems[0]
    assert _column_of(problems[0]) == column
    assert f"column {column}:" in str(info.value)


def test_every_problem_reported_at_once():
    with pytest.raises(ConfigError) as info:
        Template.parse("{soft:0} {} {a b} } {soft:2:x} {soft:3:x} {label}")
    assert [_column_of(p) for p in info.value.problems] == [7, 10, 14, 19, 32]


def test_multiline_error_names_line_and_column():
    with pytest.raises(ConfigError, match=r"line 2, column 5: invalid slot name"):
        Template.parse("{soft:2}\nQ: {a b}")


def test_bad_arguments():
    with pytest.raises(ConfigError, match="empty"):
        Template.parse("")
    with pytest.raises(ConfigError, match="answer_field"):
        Template.parse("{text}", answer_field="soft")
    with pytest.raises(ConfigError, match="answer_field"):
        Template.parse("{text}", answer_field="not a name")


def test_missing_and_non_text_fields(tok):
    t = Template.parse("{title}: {text} {label}")
    with pytest.raises(InputError) as info:
        t.render({"body": "x", "label": "y"}, tok)
    msg = str(info.value)
    assert "['title', 'text']" in msg and "['body', 'label']" in msg
    with pytest.raises(InputError, match="text=int"):
        t.render({"title": "a", "text": 3}, tok)
    with pytest.raises(InputError, match="non-empty"):
        t.answer_ids("", tok)


def test_round_trip_to_dict(tok):
    for source, answer in [(EXAMPLE, "label"), ("{soft:3:c|hi} {q} {soft:c} => {y}", "y"), ("{label} plain", "y")]:
        t = Template.parse(source, answer_field=answer)
        d = json.loads(json.dumps(t.to_dict()))
        back = Template.from_dict(d)
        assert back == t
        assert back.render({"text": "a", "q": "b", "label": "c"}, tok) == t.render({"text": "a", "q": "b",
                                                                                    "label": "c"}, tok)


def test_from_dict_rejects_tampering():
    d = Template.parse(EXAMPLE).to_dict()
    with pytest.raises(ConfigError, match="num_soft=99"):
        Template.from_dict({**d, "num_soft": 99})
    with pytest.raises(ConfigError, match="format"):
        Template.from_dict({**d, "format": "other/9"})
    with pytest.raises(ConfigError, match="source"):
        Template.from_dict({"answer_name": "label"})


# ------------------------------------------------------------------------------------------- verbalizer


def test_verbalizer_basics(tok):
    v = Verbalizer({"positive": ["good", "great"], "negative": "bad"})
    assert v.classes == ("positive", "negative")
    assert v.word_class_index() == (0, 0, 1)
    ids = v.word_ids(tok)
    assert ids == [[enc(tok, " good"), enc(tok, " great")], [enc(tok, " bad")]]
    assert v.word_ids(tok, prefix="")[1] == [enc(tok, "bad")]
    assert not v.single_token(tok)
    assert Verbalizer({"a": ["x"], "b": ["y"]}).single_token(tok, prefix="")
    assert Verbalizer.from_labels(["positive", "negative"]).label_words == {"positive": ("positive",),
                                                                             "negative": ("negative",)}


def test_verbalizer_reports_every_problem():
    with pytest.raises(ConfigError) as info:
        Verbalizer({"pos": [], "neg": ["", "bad"], "neu": ["bad", " x "], "dup": ["y", "y"]})
    p = info.value.problems
    assert len(p) == 5, p
    for fragment in ["'pos' has no words", "empty word ''", "' x ' of class 'neu' has surrounding whitespace",
                     "'y' is listed twice", "'bad' is shared by classes ['neg', 'neu']"]:
        assert any(fragment in x for x in p), fragment
    with pytest.raises(ConfigError, match="empty"):
        Verbalizer({})
    with pytest.raises(ConfigError, match="listed twice"):
        Verbalizer.from_labels(["a", "a"])


def test_verbalizer_words_with_identical_ids_are_rejected(tok):
    v = Verbalizer({"a": ["é"], "b": ["ü"]})  # both are <unk> for the tiny tokenizer
    with pytest.raises(ConfigError, match="cannot be told apart"):
        v.word_ids(tok)


def test_verbalizer_round_trip():
    v = Verbalizer({"z": ["last"], "a": ["first", "one"]})
    back = Verbalizer.from_dict(json.loads(json.dumps(v.to_dict())))
    assert back.classes == ("z", "a") and back == v
    with pytest.raises(ConfigError, match="classes"):
        Verbalizer.from_dict({"classes": ["z"], "label_words": {"z": ["x"], "a": ["y"]}})


def test_score_classes_logsumexp_of_summed_token_logprobs():
    lp = math.log
    scores = score_classes([[lp(0.2), [lp(0.5), lp(0.2)]], [[lp(0.5), lp(0.4)]], [-math.inf]])
    assert scores[0] == pytest.approx(lp(0.2 + 0.1))
    assert scores[1] == pytest.approx(lp(0.2))
    assert scores[2] == -math.inf
    with pytest.raises(InputError, match="class 1"):
        score_classes([[0.0], []])


def test_class_scores_matches_pure_version_and_has_gradients():
    v = Verbalizer({"p": ["a", "b"], "n": ["c"], "u": ["d", "e", "f"]})
    g = torch.Generator().manual_seed(0)
    words = torch.randn(4, 6, generator=g).log_softmax(-1).requires_grad_(True)  # [B, W]
    out = class_scores(words, v.word_class_index(), len(v.classes))  # [B, C]
    assert out.shape == (4, 3)
    for b in range(4):
        w = words[b].tolist()
        assert out[b].tolist() == pytest.approx(score_classes([w[0:2], w[2:3], w[3:6]]), abs=1e-6)
    out.sum().backward()
    assert torch.isfinite(words.grad).all() and words.grad.abs().sum() > 0
    with pytest.raises(InputError, match="6 words"):
        class_scores(words, (0, 1), 2)
