"""CloudWatch Logs filter patterns for unstructured lines (FilterLogEvents): a pure function.

Supported: terms that must all appear (case-sensitive), ``"quoted phrases"``, ``-term`` that
must not appear, ``?term ?other`` of which any, and ``%regex%``. JSON (``{ $.a = 1 }``) and
space-delimited (``[ip, user, ...]``) patterns are refused with an InvalidParameterException.
A pattern names the ``needles`` every matching line contains (its required terms, longest
first), so a reader can skip whole blocks of a file without them and look at only the lines
holding the first.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from modelhost.errors import InvalidParameterException


@dataclass(frozen=True)
class Pattern:
    test: Callable[[str], bool]
    needles: tuple[str, ...] = ()

    def __call__(self, message: str) -> bool:
        return self.test(message)


def pattern_matcher(pattern: str | None) -> Pattern:
    text = (pattern or "").strip()
    if not text:
        return Pattern(lambda _: True)
    if text.startswith(("{", "[")):
        raise InvalidParameterException(
            "modelhost supports term, phrase and %regex% filter patterns only; JSON and "
            "space-delimited patterns are not supported."
        )
    if len(text) >= 2 and text.startswith("%") and text.endswith("%"):
        try:
            regex = re.compile(text[1:-1])
        except re.error as exc:
            raise InvalidParameterException(f"Invalid regex filter pattern: {exc}") from exc
        return Pattern(lambda m: regex.search(m) is not None)
    try:
        terms = shlex.split(text)
    except ValueError as exc:
        raise InvalidParameterException(f"Invalid filter pattern: {exc}") from exc
    anyof = [t[1:] for t in terms if t.startswith("?") and len(t) > 1]
    if anyof:
        return Pattern(lambda m: any(t in m for t in anyof))
    must = [t for t in terms if not t.startswith("-")]
    must_not = [t[1:] for t in terms if t.startswith("-") and len(t) > 1]
    needles = tuple(sorted(must, key=len, reverse=True))
    if len(must) == 1 and not must_not:
        (needle,) = must
        return Pattern(lambda m: needle in m, needles)
    return Pattern(
        lambda m: all(t in m for t in must) and not any(t in m for t in must_not), needles
    )
