"""Classification with a task's verbalizer: format the input with the task's template up to `{label}`, then score
each class by log sum_w p(w | prefix) over its words w (each word's tokens scored as a continuation)."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from softprompt.errors import InputError

log = logging.getLogger(__name__)
DEFAULT_TEMPLATE = "{text} {label}"
_FIELD = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class Candidates:
    """For one input: the prompt ids before the label, and every (class, word) continuation."""

    prefix: list[int]
    labels: list[str]
    words: list[list[int]]  # token ids of each candidate word
    owner: list[int]  # index into labels of each candidate word


def verbalizer(extra: dict[str, Any], task: str) -> dict[str, list[str]]:
    v = (extra or {}).get("verbalizer")
    if not isinstance(v, dict) or not isinstance(v.get("classes"), dict):
        raise InputError(f"task {task!r} has no verbalizer, so it cannot classify: push a version whose manifest "
                         'extra holds "verbalizer": {"classes": {"label": ["word", ...]}}')
    return {label: ([w] if isinstance(w, str) else list(w)) for label, w in v["classes"].items()}


def _render_prefix(head: str, text: str, tokenizer: Any) -> list[int]:
    """Token ids of the template part before `{label}`, with `{text}` filled in."""
    try:
        from softprompt.templates import Template  # the shared hybrid-template parser, when present
    except ImportError:
        Template = None
    if Template is not None:
        try:
            return list(Template.parse(head).render({"text": text}, tokenizer))
        except Exception as e:  # noqa: BLE001 - fall back to the plain format below when it covers the template
            log.warning("softprompt.templates could not render %r (%s); using plain {text} formatting", head, e)
    others = [f for f in _FIELD.findall(head) if f != "text"]
    if others:
        raise InputError(f"the task's template uses {{{others[0]}}}, which plain formatting cannot fill "
                         "(only {text} and {label} are supported without softprompt.templates)")
    return tokenizer(head.replace("{text}", text))["input_ids"]


def candidates(extra: dict[str, Any], task: str, text: str, tokenizer: Any) -> Candidates:
    classes = verbalizer(extra, task)
    template = (extra or {}).get("template") or DEFAULT_TEMPLATE
    if "{label}" not in template:
        raise InputError(f"task {task!r} has a template without {{label}}, so it cannot classify: {template!r}")
    head = template[:template.index("{label}")]
    space = ""
    if head.endswith(" "):  # the space belongs to the word, as BPE vocabularies spell " positive"
        head, space = head[:-1], " "
    prefix = _render_prefix(head, text, tokenizer)
    if not prefix:
        raise InputError("the input formats to an empty prompt; send a non-empty text")
    labels, words, owner = list(classes), [], []
    for i, label in enumerate(labels):
        for w in classes[label]:
            ids = tokenizer(space + w, add_special_tokens=False)["input_ids"]
            if ids:
                words.append(ids)
                owner.append(i)
    return Candidates(prefix, labels, words, owner)


def aggregate(c: Candidates, word_logps: list[float]) -> dict[str, Any]:
    """Per class log sum exp of its words' log-probabilities, normalised over the classes."""
    per: list[list[float]] = [[] for _ in c.labels]
    for lp, i in zip(word_logps, c.owner):
        per[i].append(lp)
    scores = [_logsumexp(v) if v else -math.inf for v in per]
    z = _logsumexp(scores)
    probs = [math.exp(s - z) for s in scores]
    best = max(range(len(scores)), key=lambda i: scores[i])
    return {"label": c.labels[best], "scores": dict(zip(c.labels, scores)), "probs": dict(zip(c.labels, probs))}


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    if m == -math.inf:
        return m
    return m + math.log(sum(math.exp(x - m) for x in xs))
