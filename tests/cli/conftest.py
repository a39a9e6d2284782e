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
