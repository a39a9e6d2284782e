"""Template: a parsed hybrid prompt that renders examples to token ids with soft-vector placeholders.

Hybrid hard/soft templates follow P-tuning (Liu et al., 2021, https://arxiv.org/abs/2103.10385);
the parser (parser.py) is pure: a template string is data, never code.

Rendering rules
---------------
* Hard text and field values between two soft slots form one text run, tokenized once with
  ``add_special_tokens=False``. The tokenizer's BOS id is prepended once at the very start when
  ``tokenizer.bos_token_id is not None`` and ``getattr(tokenizer, "add_bos_token", False)``.
* Soft vector ``k`` of the flat soft table (``k = slot.offset + i``) appears as the placeholder id ``-(k + 1)``;
  the injection layer swaps placeholders for the trained vectors.
* Answer space rule: spaces (U+0020) that end the hard text right before the answer slot belong to
  the answer, not to the prompt. ``"Sentiment: {label}"`` renders ``"Sentiment:"`` and the answer
  ``positive`` is tokenized as ``" positive"`` (``Template.answer_prefix == " "``). BPE vocabularies
  attach the space to the following word, so this matches how the base model saw such text in
  pre-training. Nothing else moves: a newline before the answer stays in the prompt, and when a
  field or soft slot comes right before the answer the prefix is ``""``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from softprompt.errors import ConfigError, InputError
from softprompt.templates.parser import Answer, Field, Segment, Soft, SoftSlot, Text, parse

logger = logging.getLogger(__name__)

FORMAT = "softprompt.template/1"


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def tile(ids: list[int], n: int) -> list[int]:
    """Repeat ``ids`` until there are ``n`` of them, then cut to ``n`` (``[a, b, c], 5 -> [a, b, c, a, b]``)."""
    return (ids * (n // len(ids) + 1))[:n]


@dataclass(frozen=True)
class Template:
    """A parsed template. Build it with ``Template.parse``; every field below is derived from ``source``."""

    source: str
    answer_name: str  # the name the caller chose for the answer slot (whether or not the template has one)
    answer_field: str | None  # == answer_name when the template has an answer slot, else None
    fields: tuple[str, ...]  # distinct input slot names, first-appearance order (answer excluded)
    soft_slots: tuple[SoftSlot, ...]  # distinct soft slots, first-appearance order
    answer_prefix: str  # spaces moved from the prompt onto the answer (see the module docstring)
    segments: tuple[Segment, ...] = field(repr=False)

    @classmethod
    def parse(cls, text: str, answer_field: str = "label") -> Template:
        """Parse ``text``; raises ConfigError naming the column of every problem."""
        parsed = parse(text, answer_field)
        names = list(dict.fromkeys(seg.name for seg in parsed.segments if isinstance(seg, Field)))
        has_answer = any(isinstance(seg, Answer) for seg in parsed.segments)
        return cls(source=text, answer_name=answer_field, answer_field=answer_field if has_answer else None,
                   fields=tuple(names), soft_slots=parsed.soft_slots, answer_prefix=parsed.answer_prefix,
                   segments=parsed.segments)

    @property
    def num_soft(self) -> int:
        """Total number of distinct soft vectors (rows of the flat soft table)."""
        return sum(s.length for s in self.soft_slots)

    def render(self, example: Mapping[str, str], tokenizer: Any) -> list[int]:
        """Token ids of everything before the answer slot; soft vector k appears as ``-(k + 1)``."""
        self._check_example(example)
        ids: list[int] = []
        if getattr(tokenizer, "bos_token_id", None) is not None and getattr(tokenizer, "add_bos_token", False):
            ids.append(tokenizer.bos_token_id)
        run: list[str] = []  # text pieces since the last soft slot
        for seg in self.segments:
            if isinstance(seg, Text):
                run.append(seg.text)
            elif isinstance(seg, Field):
                run.append(example[seg.name])
            elif isinstance(seg, Soft):
                ids += self._flush(run, tokenizer)
                slot = self.soft_slots[seg.slot]
                ids += [-(slot.offset + i + 1) for i in range(slot.length)]
            else:  # Answer: always last; everything after it was rejected by the parser
                break
        ids += self._flush(run, tokenizer)
        return ids

    def answer_ids(self, answer: str, tokenizer: Any) -> list[int]:
        """Token ids of ``answer`` as it continues the rendered prompt: ``encode(answer_prefix + answer)``.

        Pass the answer without its leading space; the template supplies it (see the module docstring).
        No special tokens are added (append EOS yourself if the recipe wants one).
        """
        if not isinstance(answer, str) or not answer:
            raise InputError(f"answer must be a non-empty str, got {answer!r}")
        ids = _encode(tokenizer, self.answer_prefix + answer)
        if not ids:
            raise InputError(f"answer {answer!r} has no tokens with this tokenizer")
        return ids

    def soft_init_texts(self) -> list[tuple[int, int, str]]:
        """``(offset, length, text)`` of every soft slot that has an init text."""
        return [(s.offset, s.length, s.init_text) for s in self.soft_slots if s.init_text is not None]

    def soft_init_ids(self, tokenizer: Any) -> list[tuple[int, list[int]]]:
        """``(offset, ids)`` per slot with init text: the text's token ids tiled/truncated to the slot length."""
        out, problems = [], []
        for offset, length, text in self.soft_init_texts():
            ids = _encode(tokenizer, text)
            if not ids:
                problems.append(f"init text {text!r} of the soft slot at offset {offset} has no tokens; change it")
            else:
                out.append((offset, tile(ids, length)))
        if problems:
            raise ConfigError(problems, "template")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description; ``source`` and ``answer_name`` are the truth, the rest is for readers and checks."""
        return {
            "format": FORMAT,
            "source": self.source,
            "answer_name": self.answer_name,
            "answer_field": self.answer_field,
            "fields": list(self.fields),
            "soft_slots": [{"name": s.name, "length": s.length, "init_text": s.init_text, "offset": s.offset}
                           for s in self.soft_slots],
            "num_soft": self.num_soft,
            "answer_prefix": self.answer_prefix,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Template:
        """Re-parse ``d["source"]`` and check that the recorded facts (if present) still agree."""
        if not isinstance(d, Mapping):
            raise ConfigError([f"template manifest must be a JSON object, got {type(d).__name__}"], "template manifest")
        answer_name = d.get("answer_name", d.get("answer_field") or "label")
        problems = []
        if d.get("format", FORMAT) != FORMAT:
            problems.append(f"format={d.get('format')!r} is not {FORMAT!r}; upgrade softprompt to read it")
        if not isinstance(d.get("source"), str):
            problems.append(f"source={d.get('source')!r} must be the template string")
        if not isinstance(answer_name, str):
            problems.append(f"answer_name={answer_name!r} must be a str")
        if problems:
            raise ConfigError(problems, "template manifest")
        t = cls.parse(d["source"], answer_name)
        mine = t.to_dict()
        stale = [f"{k}={d[k]!r} but the source gives {mine[k]!r}; the manifest was edited or is corrupt"
                 for k in mine if k in d and d[k] != mine[k]]
        if stale:
            raise ConfigError(stale, "template manifest")
        return t

    def _flush(self, run: list[str], tokenizer: Any) -> list[int]:
        text = "".join(run)
        run.clear()
        return _encode(tokenizer, text) if text else []

    def _check_example(self, example: Mapping[str, str]) -> None:
        if not isinstance(example, Mapping):
            raise InputError(f"example must be a mapping of field name to text, got {type(example).__name__}")
        missing = [f for f in self.fields if f not in example]
        wrong = [f"{f}={type(example[f]).__name__}" for f in self.fields if f in example
                 and not isinstance(example[f], str)]
        problems = []
        if missing:
            problems.append(f"example is missing field(s) {missing} used by the template; "
                            f"available keys: {sorted(map(str, example))}")
        if wrong:
            problems.append(f"template fields must be str, got {', '.join(wrong)}; convert the values to text")
        if problems:
            raise InputError("; ".join(problems))
