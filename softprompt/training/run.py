"""Compose a whole job: data set -> task -> train -> evaluate -> save. The CLI and bench scripts call these."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softprompt.errors import InputError
from softprompt.templates import Template, Verbalizer
from softprompt.training.presets import PRESETS
from softprompt.training.task import Task, evaluate
from softprompt.training.tune import TrainConfig, TrainResult, train

log = logging.getLogger(__name__)


@dataclass
class Data:
    train: list[dict]
    validation: list[dict]
    test: list[dict]
    labels: list[str] | None = None
    name: str = ""


def load_data(source: Any, *, seed: int = 0, validation: str | None = None, test: str | None = None,
              fields: dict[str, str] | None = None, split: str | None = None) -> Data:
    """A built-in data set by name, a local file or ``save_to_disk`` folder, or a ``datasets.Dataset`` /
    ``DatasetDict``, split by the one rule of ``training.data.load_dataset`` (stratified, seeded, 80/10/10 of
    train for the splits the source does not bring). A ``validation`` or ``test`` file replaces that split.
    """
    from softprompt.training import data as d

    if isinstance(source, str) and source in d.BUILTIN:
        if fields:
            raise InputError(f"--field {fields}: the built-in {source!r} has the fields 'text' and 'label' (use "
                             "them in --template); --field maps the columns of a data file")
        ds = d.load_builtin(source, seed=seed)
        return Data(ds.train, ds.validation, ds.test, list(ds.labels), source)
    ds = d.load_dataset(source, seed=seed, fields=fields, split=split, validation=0.0 if validation else 0.1,
                        test=0.0 if test else 0.1)
    val = d.load_records(validation, fields) if validation else ds.validation
    tst = d.load_records(test, fields) if test else ds.test
    return Data(ds.train, val, tst, None, ds.name)


def make_task(data_name: str, template: str | None, labels: dict[str, list[str]] | list[str] | None,
              max_length: int = 256, data_labels: list[str] | None = None) -> Task:
    """Task from an explicit template/verbalizer, else the data set's preset."""
    preset = PRESETS.get(data_name)
    if template is None:
        if preset is None:
            raise InputError(f"no template given and no preset for {data_name!r}: pass --template")
        template = preset.template
    if labels is None:
        labels = preset.verbalizer if preset else data_labels
    verb = None
    if labels:
        verb = Verbalizer(labels) if isinstance(labels, dict) else Verbalizer.from_labels(list(labels))
    return Task(Template.parse(template), verb, max_length)


def best_handwritten(base: Any, data: Data, task: Task, templates: tuple[str, ...],
                     n_val: int = 200) -> tuple[str, dict]:
    """Evaluate hand-written templates (no soft tokens) on validation; return the best and its scores."""
    scores = {}
    for t in templates:
        cand = Task(Template.parse(t), task.verbalizer, task.max_length)
        ev = evaluate(base, None, cand, cand.encode_all(data.validation[:n_val], base.tokenizer))
        scores[t] = ev["accuracy"]
    best = max(scores, key=scores.get)
    return best, scores


def fit(prompted: Any, task: Task, data: Any, cfg: TrainConfig, out_dir: str | Path | None = None,
        progress: bool = True, resume: bool = True) -> TrainResult:
    """Train on ``data``: a ``Data``, or anything ``load_data`` reads (a name, a path, a ``datasets.Dataset`` or
    ``DatasetDict``), split with ``cfg.seed``."""
    if not isinstance(data, Data):
        data = load_data(data, seed=cfg.seed)
    tok = prompted.base.tokenizer
    return train(prompted, task, task.encode_all(data.train, tok), task.encode_all(data.validation, tok), cfg,
                 out_dir=out_dir, progress=progress, resume=resume)
