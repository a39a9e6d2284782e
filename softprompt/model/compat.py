"""One place that knows how this transformers install names the K/V cache.

transformers renamed the forward argument and the output field `past_key_values` to `cache` (the old name warns
from 5.24 and is removed in 5.40). Every call that passes or reads a cache goes through `cache_kw` / `cache_of`,
so the library speaks whichever name the installed model classes accept, with no deprecated call.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

NEW, OLD = "cache", "past_key_values"


@functools.cache
def _arg_name(cls: type) -> str:
    """The cache argument of `cls.forward` ("cache" on current transformers, "past_key_values" before)."""
    params = inspect.signature(cls.forward).parameters  # follows the deprecation wrapper's __wrapped__
    return NEW if NEW in params else OLD


def cache_kw(module: Any, cache: Any) -> dict[str, Any]:
    """Keyword arguments that hand `cache` to `module`'s forward under the name it accepts."""
    return {_arg_name(type(module)): cache}


def cache_of(output: Any) -> Any:
    """The K/V cache a forward returned (None when it returned none), read without the deprecated alias."""
    for key in (NEW, OLD):
        if key in output.keys():  # ModelOutput is a dict of its non-None fields
            return output[key]
    return None
