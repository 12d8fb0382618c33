"""The built-in PII shapes: e-mail, phone, card and US SSN, each a pattern plus a confirmation.

Tuned to over-detect rather than miss (a false positive only keeps a request local), but not to
take every long number for a card. `bench/detector_precision.py` measures recall and false-positive
rates on a generated, labelled set; docs/privacy.md records them.

- email: local@domain.tld, with `@` or the fullwidth U+FF20, spaces around it, or obfuscated: `a [at] b [dot] com`,
  `a(at)b.com`, `a {at} b.com`, `a at b dot com` (the last only with a worded `dot`: "available at
  docs.python.org" is prose, not an address).
- phone: 10 to 15 digits written with separators, brackets or a leading `+` (not an IPv4 address,
  not part of a longer dashed run).
- card: 13 to 19 digits that pass the Luhn check and start like a payment card (issuer prefixes of
  Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro, Mir, RuPay, UATP), written
  together or in a card's own grouping (4-4-4-4 and 4-4-4-1..3, 4-4-4-4-3, Amex 4-6-5, Diners 4-6-4)
  with one separator throughout (space, dash, dot, slash), also right after a prefix
  (`ref-4111...`). A digit run in any other grouping (`12-3456-7890-1234-5`) is a tag, not a card.
- nationalId: a US SSN, AAA-GG-SSSS with `-`, space or `.` (also after a prefix: `SSN-123-45-6789`),
  or nine digits right after an `SSN` / `social security number` label; area not 000/666/9xx,
  group not 00, serial not 0000.

Every pattern can only start at the beginning of a run of its characters (a look-behind), so a long
run without a match costs linear time, not quadratic.
"""

from __future__ import annotations

import re
from typing import Final

_AT = r"(?:\s*[@\uff20]\s*|\s*[\[({<]\s*at\s*[\])}>]\s*)"
_DOT = r"(?:\.|\s*[\[({<]\s*dot\s*[\])}>]\s*|\s+dot\s+)"
_LABEL = r"[\w-]+"
EMAIL: Final = re.compile(
    r"(?<![\w.%+-])[\w.%+-]+"
    rf"(?:{_AT}{_LABEL}(?:{_DOT}{_LABEL})*{_DOT}[^\W\d_]{{2,}}"  # a real or bracketed at, any dots
    rf"|\s+at\s+{_LABEL}(?:\s+dot\s+{_LABEL})*\s+dot\s+[^\W\d_]{{2,}})"  # a worded at needs worded dots
    r"(?![\w-])",
    re.IGNORECASE,
)
_ENCODED_AT: Final = re.compile(r"%40|&#0*64;|&#[xX]0*40;|&commat;|[\[({<]@[\])}>]")
"""An at sign URL-encoded, as an HTML entity or defanged (`[@]`): read as `@` before `EMAIL` runs."""
_DEFANGED_DOT: Final = re.compile(r"[\[({<]\.[\])}>]")
_EMAIL_WINDOW: Final = 256
_SITE = r"[@\uff20]|%40|&#0*64;|&#[xX]0*40;|&commat;|[\[({<]\s*[aA][tT]\s*[\])}>]|\s[dD][oO][tT]\s"
EMAIL_SITES: Final = re.compile(rf"(?:{_SITE})(?:(?s:.){{0,{2 * _EMAIL_WINDOW}}}?(?:{_SITE}))*")
"""Where an address can be: an at sign (also encoded), a bracketed at, a worded dot; rare in prose.
One match is a cluster of such sites less than two windows apart, so the full `EMAIL` pattern reads
each stretch of text once however many sites it holds (a window per site was quadratic in a text of
nothing but at signs)."""
_BRACKETED_AT: Final = re.compile(r"[\[({<]\s*[aA][tT]\s*[\])}>]")
_WORDED_DOT: Final = re.compile(r"\s[dD][oO][tT]\s")

# Patterns that open with a character class let the regex engine skip ahead fast; the look-behind
# that anchors a match to the start of a run therefore comes after the first character.
PHONE: Final = re.compile(
    r"(?=[+(\d])(?<![\w+])"
    r"(?:\+\d{8,15}"  # E.164 written without separators
    r"|\+\d{1,3}(?:[ .-]\d{2,8}){1,4}"  # international with separators: +49 151 12345678
    r"|(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4})"
    r"(?![\w-])"
)
_DOTTED_QUAD: Final = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_DAY, _MONTH, _YEAR = r"(?:0?[1-9]|[12]\d|3[01])", r"(?:0?[1-9]|1[0-2])", r"(?:19|20)\d\d"
_DATE: Final = re.compile(
    rf"{_YEAR}([-./]){_MONTH}\1{_DAY}(?!\d)|{_DAY}([-./]){_MONTH}\2{_YEAR}(?!\d)|{_MONTH}([-./]){_DAY}\3{_YEAR}(?!\d)"
)
"""A calendar date (ISO, European or US order) at the start of a phone-shaped run: a timestamp."""
_TIME_AFTER: Final = re.compile(r":\d\d")
_IBAN_HEAD: Final = re.compile(r"[A-Z]{2}\d{2}[ ]$")

_SEPARATOR = r"(?:[./_-]|[ \t]{1,3})"
CARD: Final = re.compile(
    r"\d(?<!\d\d)"
    r"(?:\d{12,18}(?!\d)"  # written together
    rf"|\d{{3}}(?P<sep>{_SEPARATOR})"  # or grouped as cards are printed, one separator throughout:
    r"(?:\d{4}(?P=sep)\d{4}(?P=sep)(?:\d{4}(?P=sep)\d{3}|\d{1,4})"  # 4-4-4-1..4, 4-4-4-4-3
    r"|\d{6}(?P=sep)\d{4,5})"  # Amex 4-6-5, Diners 4-6-4
    r"(?!\d))"
)
_JOINERS: Final = "-./_"
"""Separators that make a digit run one token (a tag, an id); spaces and tabs between numbers do not."""

NATIONAL_ID: Final = re.compile(
    r"[\dSs]"  # one leading character class, so the engine skips ahead fast
    r"(?:(?<=\d)(?<!\d\d)\d\d(?P<sep>[- ._/])\d\d(?P=sep)\d{4}(?!\d)"  # AAA-GG-SSSS
    r"|(?<![A-Za-z][Ss])(?i:sn|ocial\s+security)"  # SSN: 123456789, my SSN is 123456789
    r"(?i:\s+(?:number|num|no\.?|is|was|=|\#)){0,2}[\s#:.=-]{0,3}\d{9}(?!\d))"
)
_DIGIT: Final = re.compile(r"\d")


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


def card_issuer_prefix(digits: str) -> bool:
    """Starts like a payment card: 4; 51-55, 2221-2720 (Mastercard); 2200-2204 (Mir); 34, 37 (Amex);
    30, 36, 38, 39 (Diners); 35 (JCB); 50, 56-58, 6 (Maestro, Discover, UnionPay, RuPay); 81, 82
    (RuPay); 1 (UATP)."""
    two, four = int(digits[:2]), int(digits[:4])
    return (
        digits[0] in "146"
        or 50 <= two <= 58
        or 2221 <= four <= 2720
        or 2200 <= four <= 2204
        or two in (30, 34, 35, 36, 37, 38, 39, 81, 82)
    )


def _digits(text: str) -> str:
    return "".join(char for char in text if "0" <= char <= "9")


def _inside_longer_run(match: re.Match[str], joiners: str, end: int | None = None) -> bool:
    """The match (up to `end`) continues a digit run joined by `joiners`: `12-<match>`, `<match>-7`."""
    text, start = match.string, match.start()
    end = match.end() if end is None else end
    before = start >= 2 and text[start - 1] in joiners and text[start - 2].isdigit()
    after = end + 1 < len(text) and text[end] in joiners and text[end + 1].isdigit()
    return before or after


def _card_number(digits: str) -> bool:
    if digits[0] == "1" and len(digits) != 15:
        return False  # UATP numbers have 15 digits; a 13-digit epoch in milliseconds is not one
    return 13 <= len(digits) <= 19 and card_issuer_prefix(digits) and luhn_valid(digits)


def is_card(match: re.Match[str]) -> bool:
    if _IBAN_HEAD.search(match.string, max(0, match.start() - 5), match.start()):
        return False  # the groups of an IBAN (DE89 3704 0044 0532 0130 00), not a card
    separator = match.group("sep")
    candidate = match.group()
    joiners = separator if separator is not None and separator in _JOINERS else _JOINERS
    if not _inside_longer_run(match, joiners) and _card_number(_digits(candidate)):
        return True  # a longer run (`12-4111-1111-1111-1111-9`) is a tag in another grouping, not a card
    if separator is None or separator in _JOINERS:
        return False
    # Spaced groups may run on into a short number written after the card (an expiry, a CVV).
    head = candidate.rsplit(separator, 1)[0]
    end = match.start() + len(head)
    return not _inside_longer_run(match, _JOINERS, end) and _card_number(_digits(head))


def is_phone(match: re.Match[str]) -> bool:
    candidate = match.group()
    if _inside_longer_run(match, _JOINERS) or _DOTTED_QUAD.fullmatch(candidate):
        return False  # a longer dashed tag, or an IPv4 address
    if _DATE.match(candidate) or _TIME_AFTER.match(match.string, match.end()):
        return False  # a date and time: 2024-01-15 10:30:00, 15.01.2024 10:30
    return 10 <= len(_digits(candidate)) <= 15


def is_ssn(match: re.Match[str]) -> bool:
    if match.group("sep") is not None and _inside_longer_run(match, match.group("sep")):
        return False
    digits = _digits(match.group())[-9:]
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def has_digit(text: str) -> bool:
    return _DIGIT.search(text) is not None


def may_hold_email(text: str) -> bool:
    """Cheap precondition: an at sign (also encoded), a bracketed at or a worded dot (each a fast scan)."""
    return (
        "@" in text
        or "\uff20" in text
        or "%40" in text
        or "&#" in text
        or "&commat;" in text
        or _BRACKETED_AT.search(text) is not None
        or _WORDED_DOT.search(text) is not None
    )


def is_email_site(match: re.Match[str]) -> bool:
    """An address in the text around an `EMAIL_SITES` cluster, encoded at signs and dots decoded."""
    text = match.string
    window = text[max(0, match.start() - _EMAIL_WINDOW) : match.end() + _EMAIL_WINDOW]
    window = _DEFANGED_DOT.sub(".", _ENCODED_AT.sub("@", window))
    return EMAIL.search(window) is not None
