"""Content detectors that mark a request as sensitive: built-in PII shapes plus the policy's regexes.

A detector answers one question — does this text contain something of its kind? — and reports only
its own name, never the matched text, so a privacy decision can be logged and explained without
leaking what triggered it. The built-in shapes (email, phone, card, nationalId) and their precision
are pii.py's; what text a request offers them is content.py's. The policy's own patterns run on RE2
(`regexengine`): linear in the text whatever their author wrote. Compiled sets are cached per privacy
config.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

from . import pii
from .config import BuiltinDetector, PrivacyConfig
from .regexengine import Matcher, compile_pattern

REASON_PREFIX = "detector:"
TEXT_SEPARATOR = "\n\x00\n"
"""Joins texts into one string for the built-in detectors: none of their patterns crosses a NUL, so
values from different fields never combine into a match."""


@dataclass(frozen=True, slots=True)
class Detector:
    """One named pattern, optionally confirmed per match (a regex alone cannot check a Luhn digit).

    `worth_scanning` is a cheap precondition (an @ sign, a digit) that skips the regex for the
    common text that cannot match.
    """

    name: str
    pattern: Matcher
    """Python's `re` for the built-ins, RE2 for a policy's own patterns."""
    confirm: Callable[[re.Match[str]], bool] | None = None
    """Checks one match (its text and its surroundings in `match.string`)."""
    worth_scanning: Callable[[str], bool] | None = None
    joinable: bool = False
    """The pattern may read many texts joined by `TEXT_SEPARATOR` (the built-ins). A policy's own regex
    reads one text at a time, so anchors such as `^...$` keep meaning the start and end of a field."""

    def found_in(self, text: str) -> bool:
        if self.worth_scanning is not None and not self.worth_scanning(text):
            return False
        if self.confirm is None:
            return self.pattern.search(text) is not None
        return any(self.confirm(match) for match in self.pattern.finditer(text))


BUILTIN_DETECTORS: dict[BuiltinDetector, Detector] = {
    "email": Detector("email", pii.EMAIL_SITES, pii.is_email_site, pii.may_hold_email, joinable=True),
    "phone": Detector("phone", pii.PHONE, pii.is_phone, pii.has_digit, joinable=True),
    "card": Detector("card", pii.CARD, pii.is_card, pii.has_digit, joinable=True),
    "nationalId": Detector("nationalId", pii.NATIONAL_ID, pii.is_ssn, pii.has_digit, joinable=True),
}


@dataclass(frozen=True, slots=True)
class DetectorSet:
    """The detectors one privacy config asks for, ready to scan request text."""

    detectors: tuple[Detector, ...]

    def scan(self, texts: Iterable[str]) -> tuple[str, ...]:
        """Reasons (`detector:<name>`) for every detector that matches any text, in detector order.

        A joinable detector reads the texts its cheap precondition lets through as one string, joined
        by `TEXT_SEPARATOR`: one regex pass per detector, however many fields a request has, and none
        over text that cannot match (prose without a digit, say). Others read text by text.
        """
        if not self.detectors:
            return ()
        present = [_readable(text) for text in texts if text]
        joined_by_precondition: dict[Callable[[str], bool] | None, str] = {}
        found = []
        for detector in self.detectors:
            if not detector.joinable:
                hit = any(detector.found_in(text) for text in present)
            else:
                precondition = detector.worth_scanning
                joined = joined_by_precondition.get(precondition)
                if joined is None:
                    passing = present if precondition is None else [text for text in present if precondition(text)]
                    joined = joined_by_precondition[precondition] = TEXT_SEPARATOR.join(passing)
                hit = bool(joined) and detector.found_in(joined)
            if hit:
                found.append(REASON_PREFIX + detector.name)
        return tuple(found)


_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u180e\u200b\u200c\u200d\u2060\ufeff"))
"""Soft hyphen and zero-width characters: invisible to a reader (and a model), so not to a detector either."""


_OTHER_DIGIT = re.compile(r"(?![0-9])\d")


def _readable(text: str) -> str:
    """The text as a reader sees it: NFKC (a fullwidth at sign becomes `@`), every script's digits as 0-9, no
    invisible characters. ASCII text, nearly every request, is returned as it is."""
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    return _OTHER_DIGIT.sub(lambda digit: str(unicodedata.decimal(digit.group())), text)


def detectors_for(privacy: PrivacyConfig) -> DetectorSet:
    """The compiled detector set for a privacy config (cached by content, so reloads reuse it)."""
    custom = tuple((detector.name, detector.pattern) for detector in privacy.detectors)
    return _compile(tuple(privacy.builtin_detectors), custom)


@lru_cache(maxsize=32)
def _compile(builtins: tuple[BuiltinDetector, ...], custom: tuple[tuple[str, str], ...]) -> DetectorSet:
    chosen = [BUILTIN_DETECTORS[name] for name in dict.fromkeys(builtins)]
    chosen.extend(Detector(name, compile_pattern(pattern)) for name, pattern in custom)
    return DetectorSet(tuple(chosen))
