"""Hugging Face ``datasets`` inputs: ``Dataset`` / ``DatasetDict`` objects, ``save_to_disk`` folders and the
Arrow / Parquet files they hold, as splits.

The ``datasets`` package is optional (``pip install 'softprompt[datasets]'``) and never imported to read files:
an object is recognised only when the caller has already imported ``datasets`` to build it, and a
``save_to_disk`` folder is read with pyarrow alone (its state.json names the Arrow shards).

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
SUPPORTED_HINT = ".csv, .tsv, .jsonl, .parquet, .arrow"


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {str(p)!r} ({e}); re-save the dataset with save_to_disk") from None


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise InputError("reading .parquet/.arrow files and datasets.save_to_disk folders needs pyarrow: "
                         "pip install pyarrow") from None
    return pyarrow


def read_table(p: Path) -> Any:
    """A pyarrow Table from a Parquet file or an Arrow IPC stream (what ``datasets`` writes) or IPC file."""
    pa = _pyarrow()
    try:
        if p.suffix.lower() == ".parquet":
            return pa.parquet.read_table(p)
        try:
            with pa.memory_map(str(p), "r") as src:
                return pa.ipc.open_stream(src).read_all()
        except pa.ArrowInvalid:
            with pa.memory_map(str(p), "r") as src:
                return pa.ipc.open_file(src).read_all()
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"cannot read {str(p)!r} as {p.suffix[1:]}: {e}") from None


def read_saved(p: Path, split: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a ``datasets.save_to_disk`` folder: state.json names the Arrow shards."""
    if (p / "dataset_dict.json").is_file():
        splits = _read_json(p / "dataset_dict.json").get("splits", [])
        if split not in splits:
            raise InputError(f"{str(p)!r} is a DatasetDict with splits {splits}; pass split= one of them "
                             f"(got {split!r}) or point at the split's folder")
        return read_saved(p / split, None)
    state_file = p / "state.json"
    if not state_file.is_file():
        raise InputError(f"{str(p)!r} is a folder but not one written by datasets.save_to_disk (no state.json); "
                         f"point at a file ({SUPPORTED_HINT}) instead")
    state = _read_json(state_file)
    names = [f.get("filename", "") for f in state.get("_data_files", [])]
    unsafe = [n for n in names if not n or Path(n).name != n or n in (".", "..")]
    if unsafe or not names:
        raise InputError(f"{str(state_file)!r} lists no usable shard files ({unsafe or names}); re-save the dataset")
    if state.get("_indices_data_files"):
        raise InputError(f"{str(p)!r} stores an indices mapping; call dataset.flatten_indices() and save it again")
    tables = [read_table(p / n) for n in names]
    pa = _pyarrow()
    return table_rows(pa.concat_tables(tables) if len(tables) > 1 else tables[0])


def table_rows(table: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a pyarrow Table; ClassLabel ints become names using the table's ``huggingface`` schema metadata."""
    meta = (table.schema.metadata or {}).get(b"huggingface")
    features = {}
    if meta:
        try:
            features = json.loads(meta).get("info", {}).get("features", {}) or {}
        except (ValueError, AttributeError):
            features = {}
    names = {k: f["names"] for k, f in features.items()
             if isinstance(f, dict) and f.get("_type") == "ClassLabel" and isinstance(f.get("names"), list)}
    rows = table.to_pylist()
    return _with_class_names(rows, names)


def _with_class_names(rows: list[dict[str, Any]],
                      names: dict[str, list[str]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows with each ClassLabel column's integers replaced by their class names (`names`: column -> names),
    and a "row i" tag for each row's messages."""
    for row in rows:
        for col, labels in names.items():
            v = row.get(col)
            if isinstance(v, int) and 0 <= v < len(labels):
                row[col] = labels[v]
    return rows, [f"row {i}" for i in range(len(rows))]

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
    return _with_class_names(rows, names)


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
            available = list(_read_json(p / "dataset_dict.json").get("splits", []))
            chosen = _pick(available, split, repr(str(p)))
            return {name: load_records(p, fields, split=key) for name, key in chosen.items()}, p.name
        return {"train": load_records(p, fields, split=split)}, p.stem
    raise InputError(f"cannot read data from a {type(source).__name__}: pass a built-in name, a file or folder path, "
                     "or a datasets.Dataset / DatasetDict")
