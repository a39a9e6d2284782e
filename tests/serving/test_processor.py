"""The processor's per-row text: incremental detokenizing, stop strings found once, nothing of a stop streamed."""

from __future__ import annotations

from softprompt.serving.processor import TextOutput
from tests.tiny import tiny_tokenizer


def _decode(ids):
    return tiny_tokenizer().decode(ids, skip_special_tokens=True)


def test_deltas_add_up_to_the_full_decode_and_stop_strings_cut_once():
    tok = tiny_tokenizer()
    ids = tok("hello world, again")["input_ids"]
    streamed: list[str] = []
    out = TextOutput(_decode, stop=("lo w", "xyz"), on_text=streamed.append)
    stopped_at = next(i for i, t in enumerate(ids) if out.push(t))
    assert out.text == "hel" and out.stopped
    assert ids[stopped_at] == tok("w")["input_ids"][0]  # the row stops at the token that completes the stop
    assert "".join(streamed) == "hel"  # the 'lo' that began the stop string was held back, never sent
    assert out.finish() == "hel"
    plain = TextOutput(_decode, on_text=streamed.clear)
    pieces: list[str] = []
    plain.on_text = pieces.append
    for t in ids:
        assert not plain.push(t)
    assert plain.finish() == _decode(ids) == "".join(pieces)
    assert len(pieces) == len(ids) + 1  # one delta per token, one at the end
