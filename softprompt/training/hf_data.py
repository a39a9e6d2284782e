"""Hugging Face ``datasets`` inputs: ``Dataset`` / ``DatasetDict`` objects and ``save_to_disk`` folders as splits.

The ``datasets`` package is optional (``pip install 'softprompt[datasets]'``) and never imported here: an object
is recognised only when the caller has already imported ``datasets`` to build it. A ``save_to_disk`` folder is
read with pyarrow alone (training/data.py).

``given_splits`` returns the splits the source brings, named ``train``/``validation``/``test``; training/data.py
carves the missing ones out of ``train`` with its one split rule (``split_records``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from softprompt.errors import InputError

SPLITS = ("train", "validation", "test")


def hf_kind(obj: Any) -> str | None:
    """'dataset' for a ``datasets.Dataset``, 'dict' for a ``datasets.DatasetDict``, else None."""
    ds = sys.modules.get("datasets")
    if ds is None:
        return None
    if isinstance(obj, ds.DatasetDict):
        return "dict"
    if isinstance(obj, ds.Dataset):
        return "dataset"
    return None


def hf_rows(dataset: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a ``datasets.Dataset`` (its selection and order), ClassLabel integers as their class names."""
    import datasets

    names = {col: f.names for col, f in dataset.features.items() if isinstance(f, datasets.ClassLabel)}
    rows = dataset.to_list()
    for row in rows:
        for col, labels in names.items():
            v = row.get(col)
            if isinstance(v, int) and 0 <= v < len(labels):
                row[col] = labels[v]
    return rows, [f"row {i}" for i in range(len(rows))]


def _pick(available: list[str], split: str | None, source: str) -> dict[str, str]:
    """Which of a DatasetDict's splits become train/validation/test: `split` alone as train, else the standard names."""
    if split is not None:
        if split not in available:
            raise InputError(f"{source} has splits {available}; split={split!r} is not one of them")
        return {"train": split}
    chosen = {s: s for s in SPLITS if s in available}
    if "train" not in chosen:
        raise InputError(f"{source} has splits {available} but no 'train'; pass split= the one to train on "
                         "(the rest of the rule then carves validation and test out of it)")
    return chosen


def given_splits(source: Any, fields: Mapping[str, str] | None, split: str | None) -> tuple[dict[str, list], str]:
    """``({"train": records, ["validation": ..., "test": ...]}, name)`` of a file, folder or ``datasets`` object."""
    from softprompt.training.data import _select, load_records

    kind = hf_kind(source)
    if kind == "dataset":
        if split is not None:
            raise InputError(f"split={split!r} is for a DatasetDict; this is a single datasets.Dataset")
        rows, where = hf_rows(source)
        return {"train": _select(rows, where, fields, "datasets.Dataset")}, "dataset"
    if kind == "dict":
        chosen = _pick(list(source.keys()), split, "the DatasetDict")
        out = {}
        for name, key in chosen.items():
            rows, where = hf_rows(source[key])
            out[name] = _select(rows, where, fields, f"DatasetDict[{key!r}]")
        return out, "dataset"
    if isinstance(source, (str, Path)):
        p = Path(source)
        if (p / "dataset_dict.json").is_file():
            try:
                available = list(json.loads((p / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", []))
            except (ValueError, OSError, AttributeError) as e:
                raise InputError(f"{str(p)!r}: cannot read dataset_dict.json ({e}); re-save the DatasetDict") from None
            chosen = _pick(available, split, repr(str(p)))
            return {name: load_records(p, fields, split=key) for name, key in chosen.items()}, p.name
        return {"train": load_records(p, fields, split=split)}, p.stem
    raise InputError(f"cannot read data from a {type(source).__name__}: pass a built-in name, a file or folder path, "
                     "or a datasets.Dataset / DatasetDict")
