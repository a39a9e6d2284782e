"""A pure parser for hybrid hard/soft prompt templates.

Hybrid templates mix hard text, input slots and trainable soft tokens as in P-tuning
(Liu et al., 2021, https://arxiv.org/abs/2103.10385) and OpenPrompt's mixed templates
(Ding et al., 2022, https://arxiv.org/abs/2111.01998). Unlike OpenPrompt, nothing in a template
string is evaluated: a hand-written scanner walks the characters and builds plain data.

Syntax (see ``softprompt.templates`` for the user-facing summary):
    hard text            anything outside braces; ``{{`` and ``}}`` are literal braces
    {field}              an input slot filled from the example (identifier name)
    {label}              the answer slot (name chosen by the caller); at most one, and last
    {soft:N}             N fresh soft vectors
    {soft:N|text}        N soft vectors initialised from the tokens of ``text`` (tiled/truncated to N)
    {soft:N:name}        a named soft slot; a later {soft:name} or {soft:N:name} reuses its vectors
    {soft:N:name|text}   a named soft slot initialised from ``text``
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Union

from softprompt.errors import ConfigError

logger = logging.getLogger(__name__)

SOFT = "soft"
# A guard against typos such as {soft:1000000}; real prompts use a few to a few hundred vectors.
MAX_SOFT_LENGTH = 4096
MAX_PROBLEMS = 20
"""Problems reported in full (each with a caret line); the rest are counted, so a huge bad template is cheap."""
_DIGITS = "0123456789"
_WHERE = "template"


@dataclass(frozen=True)
class SoftSlot:
    """A distinct run of trainable vectors: flat-table rows ``offset .. offset + length - 1``."""

    name: str  # user name, or "#k" (k = slot index) for an anonymous {soft:N}; "#" never starts a user name
    length: int
    init_text: str | None
    offset: int


@dataclass(frozen=True)
class Text:
    """Hard text, with escapes already resolved."""

    text: str


@dataclass(frozen=True)
class Field:
    """An input slot filled from ``example[name]``."""

    name: str


@dataclass(frozen=True)
class Soft:
    """One use of soft slot number ``slot`` (an index into the template's ``soft_slots``)."""

    slot: int


@dataclass(frozen=True)
class Answer:
    """The answer slot: what the model is trained to continue the prompt with."""

    name: str


Segment = Union[Text, Field, Soft, Answer]


@dataclass(frozen=True)
class Parsed:
    """The parser's output; ``Template.parse`` wraps it."""

    segments: tuple[Segment, ...]
    soft_slots: tuple[SoftSlot, ...]
    answer_prefix: str  # spaces moved from the hard text before the answer slot onto the answer


def is_name(s: str) -> bool:
    """True for ASCII identifiers: a letter or '_' then letters, digits or '_'."""
    return s.isascii() and s.isidentifier()


def _where(source: str, pos: int) -> tuple[str, str]:
    """'column C' (or 'line L, column C' for multi-line templates), then the line and a caret under pos."""
    line_start = source.rfind("\n", 0, pos) + 1
    line_end = source.find("\n", pos)
    line = source[line_start:] if line_end == -1 else source[line_start:line_end]
    col = pos - line_start
    head = f"column {col + 1}"
    if "\n" in source:
        head = f"line {source.count(chr(10), 0, pos) + 1}, " + head
    lo = max(0, col - 60)  # a window around the column, so a long line costs the same as a short one
    shown = line[lo:col + 60].replace("\t", " ")
    return head, f"\n      {shown}\n      {' ' * (col - lo)}^"


class _Parser:
    """Single pass over the characters; collects every problem instead of stopping at the first."""

    def __init__(self, source: str, answer_field: str):
        self.s = source
        self.answer_field = answer_field
        self.problems: list[str] = []
        self.segments: list[Segment] = []
        self.slots: list[SoftSlot] = []
        self.slot_pos: dict[str, int] = {}  # slot name -> column of its first use (for messages)
        self.by_name: dict[str, int] = {}  # slot name -> index in self.slots
        self.answer_at: int | None = None
        self.after_answer_reported = False
        self.unreported = 0

    def problem(self, pos: int, message: str) -> None:
        if len(self.problems) >= MAX_PROBLEMS:
            self.unreported += 1
            return
        head, caret = _where(self.s, pos)
        self.problems.append(f"{head}: {message}{caret}")

    def run(self) -> Parsed:
        s, n, i = self.s, len(self.s), 0
        text: list[str] = []  # pending hard-text characters
        text_at = 0
        next_close = -2  # position of the next '}' after i, found once and reused (-1: none left, -2: not looked)
        while i < n:
            c = s[i]
            if c not in "{}":
                if not text:
                    text_at = i
                text.append(c)
                i += 1
            elif s.startswith(c * 2, i):  # '{{' or '}}': a literal brace
                if not text:
                    text_at = i
                text.append(c)
                i += 2
            elif c == "}":
                self.problem(i, "unmatched '}'; write '}}' for a literal brace")
                i += 1
            else:
                if next_close == -2 or 0 <= next_close <= i:
                    next_close = s.find("}", i + 1)
                close, reopen = next_close, s.find("{", i + 1)
                if close == -1 or (reopen != -1 and reopen < close):
                    self.problem(i, "unclosed '{'; close the slot with '}' or write '{{' for a literal brace")
                    if close == -1:
                        break
                    i = reopen
                    continue
                self.flush(text, text_at)
                self.slot(s[i + 1 : close], i)
                i = close + 1
        self.flush(text, text_at)
        if not s:
            self.problems.append("the template is empty; write e.g. '{soft:8} {text} Answer: {label}'")
        if self.unreported:
            self.problems.append(f"... and {self.unreported} more problem(s) of the same kinds")
        if self.problems:
            raise ConfigError(self.problems, _WHERE)
        return self.result()

    def result(self) -> Parsed:
        segments, prefix = self.move_answer_spaces()
        return Parsed(segments, tuple(self.slots), prefix)

    def move_answer_spaces(self) -> tuple[tuple[Segment, ...], str]:
        """Trailing spaces of the hard text right before the answer slot move onto the answer (see render.py)."""
        segs = list(self.segments)
        if self.answer_at is None or len(segs) < 2 or not isinstance(segs[-2], Text):
            return tuple(segs), ""
        kept = segs[-2].text.rstrip(" ")
        prefix = segs[-2].text[len(kept) :]
        segs[-2 : -1] = [Text(kept)] if kept else []
        return tuple(segs), prefix

    def flush(self, text: list[str], at: int) -> None:
        if text:
            self.add(Text("".join(text)), at)
            text.clear()

    def add(self, segment: Segment, at: int) -> None:
        if self.answer_at is not None:
            if not self.after_answer_reported:
                self.problem(at, f"{self.s[at:at + 20]!r} follows the answer slot {{{self.answer_field}}}; "
                                 "the answer slot must be the last thing in the template")
            self.after_answer_reported = True
            return
        self.segments.append(segment)

    def slot(self, body: str, at: int) -> None:
        """Parse the text between '{' (at column `at`) and its '}'."""
        if body.startswith(SOFT + ":"):
            self.soft(body[len(SOFT) + 1 :], at, at + len(SOFT) + 2)
        elif body == SOFT:
            self.problem(at, "'{soft}' needs a length: write {soft:N}, {soft:N:name} or {soft:name}")
        elif not body:
            self.problem(at, "empty slot '{}'; write {field}, {soft:N}, or '{{}}' for literal braces")
        elif not is_name(body):
            self.problem(at + 1, f"invalid slot name {body!r}; input slots are identifiers such as {{text}} "
                                 "(letters, digits, '_'; no spaces)")
        elif body == self.answer_field:
            if self.answer_at is not None:
                self.problem(at, f"second answer slot {{{body}}}; a template has at most one answer slot")
                return
            self.add(Answer(body), at)
            self.answer_at = at
        else:
            self.add(Field(body), at)

    def soft(self, spec: str, at: int, spec_at: int) -> None:
        """Parse 'N', 'N:name', 'name', each optionally followed by '|init text'. spec starts at column spec_at."""
        bar = spec.find("|")
        head, init = (spec, None) if bar == -1 else (spec[:bar], spec[bar + 1 :])
        if init is not None and not init.strip():
            self.problem(spec_at + bar + 1, "empty init text after '|'; write {soft:N|some words} or drop the '|'")
            return
        parts = head.split(":")
        length: int | None = None
        name: str | None = None
        if len(parts) == 1 and is_name(parts[0]):
            name = parts[0]
        elif len(parts) == 1:
            length = self.length(parts[0], spec_at)
        elif len(parts) == 2:
            length = self.length(parts[0], spec_at)
            name = parts[1]
            if not is_name(name):
                self.problem(spec_at + len(parts[0]) + 1,
                             f"invalid soft slot name {name!r}; use an identifier such as {{soft:4:intro}}")
                return
        else:
            self.problem(spec_at, f"cannot read soft slot '{{soft:{spec}}}'; expected {{soft:N}}, {{soft:N|text}}, "
                                  "{soft:N:name}, {soft:N:name|text} or {soft:name}")
            return
        if length == -1:
            return
        if name is None:
            self.new_slot(f"#{len(self.slots)}", length, init, at)
        elif name not in self.by_name:
            if length is None:
                self.problem(at, f"soft slot '{name}' is used before its length is given; "
                                 f"write {{soft:N:{name}}} at its first use")
                return
            self.new_slot(name, length, init, at)
        else:
            self.reuse(name, length, init, at)

    def length(self, digits: str, at: int) -> int:
        """The slot length, or -1 after reporting a problem."""
        if not digits or any(ch not in _DIGITS for ch in digits):
            self.problem(at, f"soft slot length {digits!r} is not a whole number; write e.g. {{soft:8}}")
            return -1
        n = int(digits)
        if not 1 <= n <= MAX_SOFT_LENGTH:
            self.problem(at, f"soft slot length {n} is out of range; use 1 to {MAX_SOFT_LENGTH}")
            return -1
        return n

    def new_slot(self, name: str, length: int, init: str | None, at: int) -> None:
        offset = self.slots[-1].offset + self.slots[-1].length if self.slots else 0
        self.by_name[name] = len(self.slots)
        self.slot_pos[name] = at
        self.slots.append(SoftSlot(name, length, init, offset))
        self.add(Soft(len(self.slots) - 1), at)

    def reuse(self, name: str, length: int | None, init: str | None, at: int) -> None:
        index = self.by_name[name]
        first = self.slots[index]
        first_col = _where(self.s, self.slot_pos[name])[0]
        bad = False
        if length is not None and length != first.length:
            self.problem(at, f"soft slot '{name}' has length {length} here but {first.length} at {first_col}; "
                             f"a shared slot has one length (write {{soft:{name}}} to reuse it)")
            bad = True
        if init is not None and init != first.init_text:
            self.problem(at, f"soft slot '{name}' has init text {init!r} here but {first.init_text!r} at "
                             f"{first_col}; give the init text once, at the slot's first use")
            bad = True
        if not bad:
            self.add(Soft(index), at)


def parse(source: str, answer_field: str = "label") -> Parsed:
    """Parse a template string. Raises ConfigError listing every problem, each with its column and a caret."""
    problems = []
    if not isinstance(source, str):
        problems.append(f"template must be a str, got {type(source).__name__}")
    if not isinstance(answer_field, str) or not is_name(answer_field) or answer_field == SOFT:
        problems.append(f"answer_field={answer_field!r} must be an identifier other than 'soft', e.g. 'label'")
    if problems:
        raise ConfigError(problems, _WHERE)
    parsed = _Parser(source, answer_field).run()
    logger.debug("parsed template with %d segments and %d soft slots", len(parsed.segments), len(parsed.soft_slots))
    return parsed
