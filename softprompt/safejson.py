"""Bounded, typed JSON from untrusted bytes: the one parser for request bodies, manifests and adapter configs.

`json.loads` alone lets a client send 100,000 nested brackets (RecursionError), a 5,000-digit integer
(ValueError from int()), `NaN` / `1e999` (non-finite floats) and lone surrogate escapes ("\\ud800", a string
that cannot be encoded to UTF-8 and breaks the tokenizer later). `loads` refuses all of these with one
exception type, `JsonLimitError`, whose message names the problem and the limit; callers map it to their own
error (HTTP 400 for a request body, ArtifactError for a manifest).
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64
"""Most nested arrays/objects (an OpenAI chat body needs 4, a manifest 5)."""
MAX_NUMBER_CHARS = 64
"""Longest number literal (a 64-bit seed has 20 characters)."""


class JsonLimitError(ValueError):
    """The text is not JSON, or is JSON beyond the limits above. The message names which."""


def _parse_int(s: str) -> int:
    if len(s) > MAX_NUMBER_CHARS:
        raise JsonLimitError(f"an integer of {len(s)} digits; numbers may have at most {MAX_NUMBER_CHARS} "
                             "characters")
    return int(s)


def _parse_float(s: str) -> float:
    if len(s) > MAX_NUMBER_CHARS:
        raise JsonLimitError(f"a number of {len(s)} characters; numbers may have at most {MAX_NUMBER_CHARS}")
    v = float(s)
    if not math.isfinite(v):
        raise JsonLimitError(f"the number {s} is too large for a 64-bit float; send a finite number")
    return v


def _parse_constant(s: str) -> Any:
    raise JsonLimitError(f"{s} is not JSON (NaN and Infinity are not numbers in JSON); send a finite number")


def _has_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_tree(obj: Any, max_depth: int = MAX_DEPTH) -> None:
    """Refuse a decoded value nested deeper than `max_depth` or holding a string (or key) with a lone surrogate.
    Iterative, so it is safe on any input."""
    stack: list[tuple[Any, int, str]] = [(obj, 1, "$")]
    while stack:
        node, depth, where = stack.pop()
        if isinstance(node, str):
            if _has_surrogate(node):
                raise JsonLimitError(f"the string at {where} holds a lone UTF-16 surrogate escape (\\ud800-\\udfff "
                                     "without its pair); send valid Unicode text")
            continue
        if not isinstance(node, (dict, list)):
            continue
        if depth > max_depth:
            raise JsonLimitError(f"JSON nested deeper than {max_depth} levels (at {where}); flatten the value")
        if isinstance(node, dict):
            for k, v in node.items():
                if _has_surrogate(k):
                    raise JsonLimitError(f"a key in {where} holds a lone UTF-16 surrogate escape; send valid "
                                         "Unicode text")
                stack.append((v, depth + 1, f"{where}.{k}" if len(where) < 200 else where))
        else:
            stack.extend((v, depth + 1, f"{where}[{i}]" if len(where) < 200 else where) for i, v in enumerate(node))


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Decode UTF-8 JSON within the limits above; raises JsonLimitError (a ValueError) for anything else."""
    if isinstance(raw, (bytes, bytearray)):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as e:
            raise JsonLimitError(f"not valid UTF-8 (byte {e.start}); send UTF-8 encoded JSON") from None
    else:
        text = raw
    try:
        obj = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except JsonLimitError:
        raise
    except RecursionError:  # the C scanner counts its nesting and stops at the interpreter's recursion limit
        raise JsonLimitError(f"JSON nested deeper than {max_depth} levels; flatten the value") from None
    except json.JSONDecodeError as e:
        raise JsonLimitError(f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except ValueError as e:  # anything else the decoder refuses
        raise JsonLimitError(f"not valid JSON: {e}") from None
    check_tree(obj, max_depth)
    return obj
