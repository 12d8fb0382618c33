"""The regex engine custom privacy detectors run on: RE2, linear in the text whatever the pattern.

A policy author's pattern is searched in every request's text, so a backtracking engine (Python's
`re`) would let one careless pattern such as `(a+)+$` stall the router on a crafted prompt, and a
deeply nested one can even raise `RecursionError` while compiling. RE2 (`google-re2`, the Python
binding Google maintains) guarantees time linear in the input and bounded memory, and refuses what it
cannot do in that budget: backreferences, look-around, repetition counts over 1000, programs over
`MAX_PROGRAM_BYTES`. Refusals are `PatternError`s, which config validation turns into a refused
config naming the detector.

RE2 syntax: https://github.com/google/re2/wiki/Syntax (Perl classes, Unicode classes, named groups).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final, Protocol

import re2

MAX_PROGRAM_BYTES: Final = 8 << 20
"""RE2's memory budget per compiled pattern (its default): a larger pattern is refused, not slow."""


class Matcher(Protocol):
    """What a detector needs from a compiled pattern (Python's `re.Pattern` has the same shape)."""

    def search(self, text: str, /) -> Any: ...

    def finditer(self, text: str, /) -> Iterator[Any]: ...


class PatternError(ValueError):
    """The pattern cannot run on RE2; the message says why (RE2's words, e.g. `invalid perl operator: (?=`)."""


def compile_pattern(pattern: str) -> Matcher:
    """Compile `pattern` for RE2, or raise PatternError."""
    options = re2.Options()
    options.max_mem = MAX_PROGRAM_BYTES
    options.log_errors = False  # RE2 would print the pattern to stderr; the refusal is reported instead
    try:
        compiled: Matcher = re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        text = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
        raise PatternError(f"not supported by the RE2 engine: {text}") from None
    except Exception as exc:  # anything else the binding may raise on odd input is a refusal too
        raise PatternError(f"does not compile on the RE2 engine ({type(exc).__name__})") from None
    return compiled
