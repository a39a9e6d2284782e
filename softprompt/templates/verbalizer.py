"""Verbalizers: class labels -> label words, and class scores from label-word log-probabilities.

Pattern-verbalizer pairs come from PET (Schick & Schütze, 2021, https://arxiv.org/abs/2001.07676);
several words per class scored together follow KPT (Hu et al., 2022, https://arxiv.org/abs/2108.02035).

Scoring rule: a word of T tokens scores the SUM of its T token log-probabilities given the prompt and
the word's earlier tokens, ``log p(word | prompt)``; a class scores the logsumexp over its words,
``log sum_w p(w | prompt)``, i.e. the log-probability that the model says any of the class's words.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from softprompt.errors import ConfigError, InputError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

FORMAT = "softprompt.verbalizer/1"


@dataclass(frozen=True)
class Verbalizer:
    """Ordered ``class -> label words``. A str value is one word: ``{"pos": "good"} == {"pos": ["good"]}``.

    Words are written without a leading space; ``word_ids`` adds the template's answer prefix.
    """

    label_words: Mapping[str, Sequence[str]]

    def __post_init__(self) -> None:
        problems = _validate(self.label_words)
        if problems:
            raise ConfigError(problems, "verbalizer")
        words = {c: (w,) if isinstance(w, str) else tuple(w) for c, w in self.label_words.items()}
        object.__setattr__(self, "label_words", MappingProxyType(words))

    @classmethod
    def from_labels(cls, labels: Sequence[str]) -> Verbalizer:
        """Each label is its own (only) word: ``["positive", "negative"]``."""
        if isinstance(labels, str) or not isinstance(labels, Sequence):
            raise ConfigError([f"labels must be a list of str, got {labels!r}"], "verbalizer")
        duplicated = sorted({lab for lab in labels if labels.count(lab) > 1})
        if duplicated:
            raise ConfigError([f"label {lab!r} is listed twice; list each class once" for lab in duplicated],
                              "verbalizer")
        return cls({lab: [lab] for lab in labels})

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in the order given (score columns follow this order)."""
        return tuple(self.label_words)

    def word_class_index(self) -> tuple[int, ...]:
        """For each word of the flattened ``class -> words`` list, the index of its class."""
        return tuple(c for c, words in enumerate(self.label_words.values()) for _ in words)

    def word_ids(self, tokenizer: Any, prefix: str = " ") -> list[list[list[int]]]:
        """``[class][word] -> token ids`` of ``prefix + word`` (no special tokens).

        Use the template's ``answer_prefix`` as ``prefix`` so words are tokenized as they continue the prompt.
        Raises ConfigError if a word has no tokens or two words share the same ids (indistinguishable).
        """
        out: list[list[list[int]]] = []
        seen: dict[tuple[int, ...], list[str]] = {}
        problems = []
        for cls_name, words in self.label_words.items():
            out.append([])
            for w in words:
                ids = list(tokenizer.encode(prefix + w, add_special_tokens=False))
                if not ids:
                    problems.append(f"word {w!r} of class {cls_name!r} has no tokens; choose another word")
                seen.setdefault(tuple(ids), []).append(f"{cls_name}:{w!r}")
                out[-1].append(ids)
        problems += [f"words {', '.join(names)} tokenize to the same ids {list(ids)}; they cannot be told apart"
                     for ids, names in seen.items() if ids and len(names) > 1]
        if problems:
            raise ConfigError(problems, "verbalizer")
        return out

    def single_token(self, tokenizer: Any, prefix: str = " ") -> bool:
        """True when every word is exactly one token: class scores then need a single forward pass."""
        return all(len(ids) == 1 for words in self.word_ids(tokenizer, prefix) for ids in words)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (class order is kept in ``classes``)."""
        return {"format": FORMAT, "classes": list(self.classes),
                "label_words": {c: list(w) for c, w in self.label_words.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verbalizer:
        """Inverse of ``to_dict``."""
        problems = []
        if not isinstance(d, Mapping):
            raise ConfigError([f"verbalizer manifest must be a JSON object, got {type(d).__name__}"], "verbalizer")
        if d.get("format", FORMAT) != FORMAT:
            problems.append(f"format={d.get('format')!r} is not {FORMAT!r}; upgrade softprompt to read it")
        words, classes = d.get("label_words"), d.get("classes")
        if not isinstance(words, Mapping):
            problems.append(f"label_words={words!r} must be an object of class -> list of words")
        elif classes is None:
            classes = list(words)
        elif not isinstance(classes, list) or sorted(map(str, classes)) != sorted(words):
            problems.append(f"classes={classes!r} must list exactly the keys of label_words {sorted(words)}")
        if problems:
            raise ConfigError(problems, "verbalizer")
        return cls({c: words[c] for c in classes})


def _validate(label_words: Any) -> list[str]:
    """Every problem with a class -> words mapping, in one list."""
    if not isinstance(label_words, Mapping):
        return [f"label_words must be a mapping of class -> words, got {type(label_words).__name__}"]
    if not label_words:
        return ["label_words is empty; give at least two classes, e.g. {'positive': ['good'], 'negative': ['bad']}"]
    problems = []
    owner: dict[str, list[str]] = {}
    for cls_name, words in label_words.items():
        if not isinstance(cls_name, str) or not cls_name.strip():
            problems.append(f"class name {cls_name!r} must be a non-empty str")
        if isinstance(words, str):
            words = [words]
        if not isinstance(words, Sequence) or not words:
            problems.append(f"class {cls_name!r} has no words ({words!r}); give at least one, e.g. [{cls_name!r}]")
            continue
        for w in words:
            if not isinstance(w, str) or not w.strip():
                problems.append(f"class {cls_name!r} has an empty word {w!r}; remove it or write the word")
            elif w != w.strip():
                problems.append(f"word {w!r} of class {cls_name!r} has surrounding whitespace; write {w.strip()!r} "
                                "(the space before the answer comes from the template)")
            elif cls_name in owner.get(w, []):
                problems.append(f"word {w!r} is listed twice in class {cls_name!r}; list it once")
            else:
                owner.setdefault(w, []).append(cls_name)
    problems += [f"word {w!r} is shared by classes {classes}; a word may belong to one class only"
                 for w, classes in owner.items() if len(classes) > 1]
    return problems


def _logsumexp(xs: Sequence[float]) -> float:
    m = max(xs)
    if m == -math.inf:
        return -math.inf
    return m + math.log(sum(math.exp(x - m) for x in xs))


def score_classes(word_logprobs: Sequence[Sequence[float | Sequence[float]]]) -> list[float]:
    """Per-class scores from per-word log-probabilities: ``score[c] = logsumexp_w logp(w)``.

    ``word_logprobs[c][w]`` is either the word's log-probability (its token log-probs already summed)
    or the list of its token log-probabilities, which are summed here. Classes keep their order.
    """
    scores = []
    for c, words in enumerate(word_logprobs):
        if not words:
            raise InputError(f"class {c} has no word log-probabilities; every class needs at least one word")
        per_word = [float(w) if isinstance(w, (int, float)) else float(sum(w)) for w in words]
        scores.append(_logsumexp(per_word))
    return scores


def class_scores(word_scores: torch.Tensor, word_class: Sequence[int], num_classes: int) -> torch.Tensor:
    """Batched, differentiable ``score_classes``: ``[..., W]`` word log-probs -> ``[..., C]`` class scores.

    ``word_class[w]`` is the class of word ``w`` (``Verbalizer.word_class_index()``).
    """
    import torch

    index = torch.as_tensor(list(word_class), device=word_scores.device)  # [W]
    if index.numel() != word_scores.shape[-1]:
        raise InputError(f"word_scores has {word_scores.shape[-1]} words but word_class has {index.numel()}")
    member = index.unsqueeze(0) == torch.arange(num_classes, device=word_scores.device).unsqueeze(1)  # [C, W]
    mask = torch.zeros(member.shape, dtype=word_scores.dtype, device=word_scores.device)
    mask = mask.masked_fill(~member, float("-inf"))  # [C, W]: 0 where the word is in the class
    return torch.logsumexp(word_scores.unsqueeze(-2) + mask, dim=-1)  # [..., 1, W] + [C, W] -> [..., C]
