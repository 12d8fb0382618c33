"""Content detectors that mark a request as sensitive: built-in PII shapes plus the policy's regexes.

A detector answers one question — does this text contain something of its kind? — and reports only
its own name, never the matched text, so a privacy decision can be logged and explained without
leaking what triggered it.

Built-ins are tuned to over-detect rather than miss (a false positive only keeps a request local):
- email: RFC-ish local@domain.tld;
- phone: 10 to 15 digits written with separators, brackets or a leading `+`;
- card: 13 to 19 digits (spaces or dashes allowed) that pass the Luhn check;
- nationalId: a US SSN shape (AAA-GG-SSSS, area not 000/666/9xx, group not 00, serial not 0000).

Every pattern can only start at the beginning of a run of its characters (a look-behind), so a long
run without a match costs linear time, not quadratic. The policy's own patterns run on RE2
(`regexengine`): linear in the text whatever their author wrote. Compiled sets are cached per privacy
config.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

from .config import BuiltinDetector, PrivacyConfig
from .regexengine import Matcher, compile_pattern

REASON_PREFIX = "detector:"

_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Patterns that open with a character class let the regex engine skip ahead fast; the look-behind
# that anchors a match to the start of a run therefore comes after the first character.
_PHONE = re.compile(
    r"(?=[+(\d])(?<![\w+])"
    r"(?:\+\d{8,15}"  # E.164 written without separators
    r"|(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4})"
    r"(?![\w-])"
)
_CARD = re.compile(r"\d(?<![\d-]\d)(?:[ -]?\d){12,18}(?![\d-])")
_NATIONAL_ID = re.compile(r"\d(?<![\d-]\d)\d\d([- ])\d\d\1\d{4}(?![\d-])")
_DIGIT = re.compile(r"\d")


def luhn_valid(digits: str) -> bool:
    """The Luhn mod-10 checksum that every payment card number satisfies."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _only_digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def _is_card_number(candidate: str) -> bool:
    digits = _only_digits(candidate)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _is_phone_number(candidate: str) -> bool:
    return 10 <= len(_only_digits(candidate)) <= 15


def _is_ssn(candidate: str) -> bool:
    digits = _only_digits(candidate)
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def _has_digit(text: str) -> bool:
    return _DIGIT.search(text) is not None


def _has_at_sign(text: str) -> bool:
    return "@" in text


@dataclass(frozen=True, slots=True)
class Detector:
    """One named pattern, optionally confirmed per match (a regex alone cannot check a Luhn digit).

    `worth_scanning` is a cheap precondition (an @ sign, a digit) that skips the regex for the
    common text that cannot match.
    """

    name: str
    pattern: Matcher
    confirm: Callable[[str], bool] | None = None
    worth_scanning: Callable[[str], bool] | None = None

    def found_in(self, text: str) -> bool:
        if self.worth_scanning is not None and not self.worth_scanning(text):
            return False
        if self.confirm is None:
            return self.pattern.search(text) is not None
        return any(self.confirm(match.group()) for match in self.pattern.finditer(text))


BUILTIN_DETECTORS: dict[BuiltinDetector, Detector] = {
    "email": Detector("email", _EMAIL, worth_scanning=_has_at_sign),
    "phone": Detector("phone", _PHONE, _is_phone_number, _has_digit),
    "card": Detector("card", _CARD, _is_card_number, _has_digit),
    "nationalId": Detector("nationalId", _NATIONAL_ID, _is_ssn, _has_digit),
}


@dataclass(frozen=True, slots=True)
class DetectorSet:
    """The detectors one privacy config asks for, ready to scan request text."""

    detectors: tuple[Detector, ...]

    def scan(self, texts: Iterable[str]) -> tuple[str, ...]:
        """Reasons (`detector:<name>`) for every detector that matches any text, in detector order."""
        if not self.detectors:
            return ()
        remaining = list(self.detectors)
        found: set[str] = set()
        for text in texts:
            if not text:
                continue
            for detector in remaining:
                if detector.found_in(text):
                    found.add(detector.name)
            remaining = [detector for detector in remaining if detector.name not in found]
            if not remaining:
                break
        return tuple(REASON_PREFIX + detector.name for detector in self.detectors if detector.name in found)


def detectors_for(privacy: PrivacyConfig) -> DetectorSet:
    """The compiled detector set for a privacy config (cached by content, so reloads reuse it)."""
    custom = tuple((detector.name, detector.pattern) for detector in privacy.detectors)
    return _compile(tuple(privacy.builtin_detectors), custom)


@lru_cache(maxsize=32)
def _compile(builtins: tuple[BuiltinDetector, ...], custom: tuple[tuple[str, str], ...]) -> DetectorSet:
    chosen = [BUILTIN_DETECTORS[name] for name in dict.fromkeys(builtins)]
    chosen.extend(Detector(name, compile_pattern(pattern)) for name, pattern in custom)
    return DetectorSet(tuple(chosen))
