"""A task = template (+ verbalizer for classification): encodes records, scores classes, computes losses.

Fast path: classification needs the hidden state at the answer position only (the last column of the packed
batch) and logits only for the verbalizer's tokens, which is exact for the class cross-entropy because the
softmax normaliser over the vocabulary cancels between classes. Multi-token words are scored by their summed
log-probability. Generation tasks compute logits only at the target positions.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from softprompt.errors import InputError
from softprompt.model.inject import hidden_mixed, pad_batch
from softprompt.templates import Template, Verbalizer


@dataclass
class Example:
    ids: list[int]  # rendered input (negative ids: soft-slot placeholders)
    label: int = -1  # class index (classification)
    answer: list[int] = field(default_factory=list)  # target tokens (generation)


@dataclass
class Task:
    template: Template
    verbalizer: Verbalizer | None = None
    max_length: int = 256
    """Inputs longer than this many tokens keep the start of their longest input field and lose its end; the
    template's hard text and soft slots are never cut."""

    @property
    def kind(self) -> str:
        return "classification" if self.verbalizer is not None else "generation"

    def to_extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {"template": self.template.to_dict(), "max_length": self.max_length}
        if self.verbalizer is not None:
            out["verbalizer"] = self.verbalizer.to_dict()
        return out

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> Task:
        if "template" not in extra:
            raise InputError("this prompt was saved without a template; pass --template")
        verb = Verbalizer.from_dict(extra["verbalizer"]) if extra.get("verbalizer") else None
        return cls(Template.from_dict(extra["template"]), verb, int(extra.get("max_length", 256)))

    # --- encoding ---
    def encode(self, record: Mapping[str, Any], tokenizer: Any) -> Example:
        ids = self.template.render(record, tokenizer)
        if len(ids) > self.max_length:
            ids = self._shorten(record, ids, tokenizer)
        answer_field = self.template.answer_field
        if self.verbalizer is not None:
            label = str(record[answer_field]) if answer_field and answer_field in record else None
            if label is None:
                return Example(ids)
            if label not in self.verbalizer.classes:
                raise InputError(f"label {label!r} is not a verbalizer class ({', '.join(self.verbalizer.classes)})")
            return Example(ids, label=self.verbalizer.classes.index(label))
        answer = record.get(answer_field) if answer_field else None
        return Example(ids, answer=self.template.answer_ids(str(answer), tokenizer) if answer is not None else [])

    def _shorten(self, record: Mapping[str, Any], ids: list[int], tokenizer: Any) -> list[int]:
        """Cut the end off the longest input field (then the next longest, ...) until the ids fit ``max_length``.

        Cutting the whole sequence instead would drop the template's instruction or its leading soft slots.
        Re-tokenising can merge differently at the cut, so the cut is re-checked after rendering.
        """
        record = dict(record)
        while len(ids) > self.max_length:
            name = max(self.template.fields, key=lambda f: len(str(record[f])), default=None)
            value = str(record[name]) if name is not None else ""
            tok = list(tokenizer.encode(value, add_special_tokens=False))
            if not tok:  # every field is empty already
                raise InputError(f"the template's own text and soft slots take {len(ids)} tokens, more than "
                                 f"max_length={self.max_length}; raise max_length or shorten the template")
            keep = max(0, len(tok) - (len(ids) - self.max_length))
            cut = tokenizer.decode(tok[:keep])
            record[name] = cut if len(cut) < len(value) else value[: len(value) * keep // len(tok)]
            ids = self.template.render(record, tokenizer)
        return ids

    def encode_all(self, records: Sequence[Mapping[str, Any]], tokenizer: Any) -> list[Example]:
        return [self.encode(r, tokenizer) for r in records]

    # --- scoring ---
    def word_ids(self, tokenizer: Any) -> list[list[list[int]]]:
        cached = getattr(self, "_word_ids", None)
        if cached is None or cached[0] is not tokenizer:
            # the words continue the prompt exactly as an answer would (the template's answer-space rule)
            self._word_ids = (tokenizer, self.verbalizer.word_ids(tokenizer, prefix=self.template.answer_prefix))
        return self._word_ids[1]

    def class_scores(self, base: Any, prompts: Sequence[Any], batch: Sequence[Example]) -> torch.Tensor:
        """[B,C] class scores (log-probabilities up to a per-row constant)."""
        words = self.word_ids(base.tokenizer)
        ids, mask = pad_batch([e.ids for e in batch], base.tokenizer.pad_token_id or 0)
        if all(len(w) == 1 for cls in words for w in cls):
            flat = torch.tensor([w[0] for cls in words for w in cls], device=base.device)
            h, _ = hidden_mixed(base, prompts, ids, mask)
            logits = base.logits(h[:, -1], flat).float()  # [B,W] answer position, verbalizer tokens only
            return _per_class(logits, words)
        return self._multi_token_scores(base, prompts, batch, words)

    def _multi_token_scores(self, base, prompts, batch, words) -> torch.Tensor:
        rows, row_prompts, spans = [], [], []
        for b, e in enumerate(batch):
            for cls in words:
                for w in cls:
                    rows.append(e.ids + w)
                    row_prompts.append(prompts[b])
                    spans.append(len(w))
        ids, mask = pad_batch(rows, base.tokenizer.pad_token_id or 0)
        h, _ = hidden_mixed(base, row_prompts, ids, mask)
        lp = torch.stack([_answer_logprob(base, h[i], rows[i][-n:], n) for i, n in enumerate(spans)])
        return _per_class(lp.view(len(batch), -1), words)

    def units(self, batch: Sequence[Example]) -> int:
        """How many terms `loss` averages over for this batch: examples, or answer tokens for generation."""
        return len(batch) if self.verbalizer is not None else sum(len(e.answer) for e in batch)

    def loss(self, base: Any, prompts: Sequence[Any], batch: Sequence[Example]) -> tuple[torch.Tensor, dict]:
        """Mean loss over the batch and a dict of batch statistics (correct, count, tokens)."""
        if self.verbalizer is not None:
            scores = self.class_scores(base, prompts, batch)
            labels = torch.tensor([e.label for e in batch], device=scores.device)
            loss = torch.nn.functional.cross_entropy(scores, labels)
            correct = int((scores.argmax(-1) == labels).sum())
            return loss, {"correct": correct, "count": len(batch)}
        return self._generation_loss(base, prompts, batch)

    def _generation_loss(self, base, prompts, batch) -> tuple[torch.Tensor, dict]:
        if any(not e.answer for e in batch):
            raise InputError("a generation example has no answer: every training record needs the answer field")
        rows = [e.ids + e.answer for e in batch]
        ids, mask = pad_batch(rows, base.tokenizer.pad_token_id or 0)
        h, _ = hidden_mixed(base, prompts, ids, mask)
        T = h.shape[1]
        # positions predicting each answer token: row content ends at T-1, so answer token j sits at T-n+j
        pos = torch.cat([torch.arange(T - len(e.answer) - 1, T - 1) for e in batch]).to(h.device)
        row = torch.cat([torch.full((len(e.answer),), b) for b, e in enumerate(batch)]).to(h.device)
        tgt = torch.tensor([t for e in batch for t in e.answer], device=h.device)
        logits = base.logits(h[row, pos]).float()  # [N,V] target positions only
        loss = torch.nn.functional.cross_entropy(logits, tgt)
        correct = int((logits.argmax(-1) == tgt).sum())
        return loss, {"correct": correct, "count": len(tgt)}


def _answer_logprob(base: Any, h_row: torch.Tensor, word: list[int], n: int) -> torch.Tensor:
    T = h_row.shape[0]
    logits = base.logits(h_row[T - n - 1:T - 1]).float()  # [n,V]
    return logits.log_softmax(-1).gather(1, torch.tensor(word, device=logits.device)[:, None]).sum()


def _per_class(word_scores: torch.Tensor, words: list[list[list[int]]]) -> torch.Tensor:
    """[B,W] per-word scores -> [B,C]: logsumexp over each class's words."""
    out, i = [], 0
    for cls in words:
        out.append(word_scores[:, i:i + len(cls)].logsumexp(-1))
        i += len(cls)
    return torch.stack(out, dim=-1)


def length_batches(examples: Sequence[Example], batch_size: int, seed: int) -> list[list[int]]:
    """Dynamic padding: shuffle, sort by length within chunks of 50 batches, split, shuffle the batches."""
    rng = random.Random(seed)
    idx = list(range(len(examples)))
    rng.shuffle(idx)
    chunk = batch_size * 50
    batches = []
    for c in range(0, len(idx), chunk):
        part = sorted(idx[c:c + chunk], key=lambda i: len(examples[i].ids) + len(examples[i].answer))
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def eval_sums(base: Any, prompt: Any, task: Task, examples: Sequence[Example], batch_size: int = 32,
              progress: bool = False) -> tuple[float, int, int]:
    """(loss sum, correct, count) of `prompt` over `examples`, in batches of similar length."""
    from tqdm.auto import tqdm

    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    correct = count = 0
    loss_sum = 0.0
    for s in tqdm(range(0, len(order), batch_size), desc="eval", leave=False, disable=not progress):
        batch = [examples[i] for i in order[s:s + batch_size]]
        loss, st = task.loss(base, [prompt] * len(batch), batch)
        correct += st["correct"]
        count += st["count"]
        loss_sum += float(loss) * st["count"]
    return loss_sum, correct, count


def evaluate(base: Any, prompt: Any, task: Task, examples: Sequence[Example], batch_size: int = 32,
             progress: bool = False) -> dict[str, float]:
    """Accuracy (classification) or token accuracy + loss (generation) of `prompt` (None: plain model)."""
    loss_sum, correct, count = eval_sums(base, prompt, task, examples, batch_size, progress)
    return {"accuracy": correct / max(count, 1), "loss": loss_sum / max(count, 1), "n": len(examples)}
