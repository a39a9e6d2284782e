"""One split rule for files, folders and datasets objects, in the library and the CLI."""

from __future__ import annotations

import csv

import pytest

from softprompt.errors import InputError
from softprompt.training.data import load_dataset, split_records
from softprompt.training.run import load_data


def _rows(n: int = 50) -> list[dict]:
    return [{"text": f"review {i}", "label": ["pos", "neg", "neg"][i % 3]} for i in range(n)]


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "r.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(_rows())
    return path


def test_cli_and_library_split_a_file_the_same_way(csv_file):
    lib = load_dataset(csv_file, seed=5)
    cli = load_data(str(csv_file), seed=5)
    assert (cli.train, cli.validation, cli.test) == (lib.train, lib.validation, lib.test)
    assert (lib.train, lib.validation, lib.test) == split_records(_rows(), seed=5)
    assert cli.test and {r["label"] for r in cli.test} == {"pos", "neg"}  # stratified, test not empty
    assert load_data(str(csv_file), seed=6).test != cli.test


def test_given_validation_file_is_not_carved_again(csv_file, tmp_path):
    val = tmp_path / "v.csv"
    val.write_text("text,label\nextra,pos\n")
    data = load_data(str(csv_file), validation=str(val))
    assert data.validation == [{"text": "extra", "label": "pos"}]
    assert len(data.train) + len(data.test) == 50 and data.test


def test_datasets_objects_in_the_library():
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    rows = [{"text": f"t{i}", "label": i % 2} for i in range(40)]
    ds = datasets.Dataset.from_list(rows, features=feats)
    one = load_dataset(ds, seed=1)
    assert one.labels == ("neg", "pos") and {r["label"] for r in one.test} == {"neg", "pos"}
    assert (one.train, one.validation, one.test) == split_records([{"text": f"t{i}", "label": ["neg", "pos"][i % 2]}
                                                                   for i in range(40)], seed=1)
    dd = datasets.DatasetDict({"train": ds.select(range(30)), "test": ds.select(range(30, 40))})
    both = load_dataset(dd)
    assert len(both.test) == 10 and both.test[0] == {"text": "t30", "label": "neg"}  # its own test split kept
    assert len(both.validation) == 4 and len(both.train) == 26  # validation carved out of its train (2+2)
    assert load_data(dd).test == both.test  # the CLI's composer takes the same objects
    only = load_dataset(dd, split="test", fields={"review": "text"})
    assert set(only.train[0]) == {"review"}
    with pytest.raises(InputError, match="no 'train'"):
        load_dataset(datasets.DatasetDict({"dev": ds}))


def test_fit_trains_on_a_dataset_object():
    datasets = pytest.importorskip("datasets")
    import softprompt as sp
    from softprompt.templates import Template, Verbalizer
    from softprompt.training.run import fit
    from softprompt.training.task import Task
    from softprompt.training.tune import TrainConfig
    from tests.tiny import tiny_base

    base = tiny_base("llama")
    prompted = sp.attach(base, sp.PromptTuningConfig(num_virtual_tokens=2))
    task = Task(Template.parse("{text}:{label}"), Verbalizer.from_labels(["a", "b"]), 32)
    ds = datasets.Dataset.from_list([{"text": f"x{i}", "label": "ab"[i % 2]} for i in range(20)])
    res = fit(prompted, task, ds, TrainConfig(steps=2, batch_size=4, eval_every=0, checkpoint_every=0),
              progress=False)
    assert res.steps_done == 2
