import csv
import random

import pytest

import softprompt as sp


class ModelLoaded(Exception):
    """Raised by the fake load_base: the command got past its validation."""


@pytest.fixture
def no_model(monkeypatch):
    """load_base replaced by one that records its call and stops the command there."""
    calls = []

    def fake(*a, **kw):
        calls.append((a, kw))
        raise ModelLoaded

    monkeypatch.setattr(sp, "load_base", fake)
    return calls


@pytest.fixture(scope="session")
def reviews_csv(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for i in range(60):
            w.writerow([f"{i} " + "".join(rng.choice("abcxyz") for _ in range(6)), ["good", "bad"][i % 2]])
    return path
