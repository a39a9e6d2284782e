import pytest
import torch

from tests.tiny import ARCHS, tiny_base

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
