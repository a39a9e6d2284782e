import csv
import random

import pytest
import torch

from tests.tiny import ARCHS, tiny_base, tiny_model, tiny_tokenizer, tiny_word_tokenizer

torch.set_num_threads(2)


@pytest.fixture(params=ARCHS)
def arch(request):
    return request.param


@pytest.fixture
def base(arch):
    return tiny_base(arch)


@pytest.fixture
def llama_base():
    return tiny_base("llama")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny random llama and its tokenizer saved as a local model directory (no test writes into it)."""
    d = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def word_model_dir(tmp_path_factory):
    """model_dir's model with a tokenizer where ' positive' and ' negative' are one token each (the bench
    scripts score rotten_tomatoes from one logit per class, as SmolLM2's tokenizer allows)."""
    d = tmp_path_factory.mktemp("tiny-llama-words")
    tok = tiny_word_tokenizer()
    model = tiny_model("llama")
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def reviews_csv(tmp_path_factory):
    """A 60-row CSV of two columns (review, sentiment), labels alternating good / bad."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for i in range(60):
            w.writerow([f"{i} " + "".join(rng.choice("abcxyz") for _ in range(6)), ["good", "bad"][i % 2]])
    return path
