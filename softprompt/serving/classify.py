"""Classification with a task's verbalizer: render the input with the task's template up to its answer slot (the
same `Task` the training recipe used), then score each class by log sum_w p(w | prefix) over its words w (each
word's tokens scored as a continuation)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from softprompt.errors import ConfigError, InputError
from softprompt.training.task import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidates:
    """For one input: the prompt ids before the label, and every (class, word) continuation."""

    prefix: list[int]
    labels: list[str]
    words: list[list[int]]  # token ids of each candidate word
    owner: list[int]  # index into labels of each candidate word


def task_of(extra: dict[str, Any], task: str) -> Task:
    """The task (template + verbalizer) saved in a prompt's manifest by `softprompt train`."""
    if not isinstance((extra or {}).get("verbalizer"), dict):
        raise InputError(f"task {task!r} has no verbalizer, so it cannot classify: train it as a classification "
                         "task (softprompt train --labels ...), whose manifest records the template and verbalizer")
    try:
        return Task.from_extra(extra)
    except (ConfigError, InputError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"task {task!r} has an unusable template or verbalizer: {e}") from None


def candidates(extra: dict[str, Any], task: str, text: str, tokenizer: Any) -> Candidates:
    """The prompt before the answer slot (rendered exactly as in training) and every (class, word) continuation."""
    t = task_of(extra, task)
    fields = t.template.fields
    if len(fields) != 1:
        raise InputError(f"task {task!r}'s template has input slots {list(fields)}; /v1/classify fills exactly one")
    prefix = t.encode({fields[0]: text}, tokenizer).ids
    labels, words, owner = list(t.verbalizer.classes), [], []
    for i, class_words in enumerate(t.word_ids(tokenizer)):
        for ids in class_words:
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
