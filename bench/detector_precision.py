"""Recall and false-positive rate of the built-in privacy detectors on a generated, labelled set.

Generates (seeded) texts that hold one PII value of a known class, in the formats people write
them (cards with every separator, after a prefix, Amex and Diners groupings; SSNs with a label or a
prefix; e-mails plain and obfuscated; phones national and international), and texts that hold none
but look alike (digit tags with dashes, some Luhn-valid on purpose; long order numbers; dates,
times, versions, IP addresses, UUIDs, ISBNs, prices, ZIP+4 codes, prose with "at" and "dot",
@mentions, bare domains). Each text is wrapped in a little filler prose.

For every detector: recall = share of its class's positives it flags, per format and overall;
false-positive rate = share of the negatives it flags, per negative family and overall.

    .venv/bin/python bench/detector_precision.py [--per-format 500] [--seed 7] [--json bench/results/precision.json]
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from hybridroute_router.config import PrivacyConfig
from hybridroute_router.detectors import detectors_for
from hybridroute_router.pii import luhn_valid

Generator = Callable[[random.Random], str]
CLASSES = ("email", "phone", "card", "nationalId")


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(count))


def _with_check_digit(body: str) -> str:
    """`body` plus the digit that makes it pass Luhn."""
    return next(body + digit for digit in string.digits if luhn_valid(body + digit))


def _card(rng: random.Random) -> str:
    prefix, length = rng.choice(
        [
            ("4", 16),
            ("4", 13),
            ("4", 19),
            (str(rng.randint(51, 55)), 16),
            (str(rng.randint(2221, 2720)), 16),
            (rng.choice(["34", "37"]), 15),
            ("6011", 16),
            (str(rng.randint(644, 649)), 16),
            ("65", 16),
            (str(rng.randint(3528, 3589)), 16),
            (rng.choice(["36", "38", "300", "305"]), 14),
            ("62", rng.choice([16, 17, 18, 19])),
        ]
    )
    return _with_check_digit(prefix + _digits(rng, length - len(prefix) - 1))


def _grouped(number: str, separator: str) -> str:
    if len(number) in (14, 15):  # Diners 4-6-4, Amex 4-6-5
        groups = [number[:4], number[4:10], number[10:]]
    else:
        groups = [number[i : i + 4] for i in range(0, len(number), 4)]
    return separator.join(groups)


def card_formats() -> dict[str, Generator]:
    def grouped(separator: str) -> Generator:
        return lambda rng: _grouped(_card(rng), separator)

    return {
        "together": _card,
        "spaces": grouped(" "),
        "dashes": grouped("-"),
        "dots": grouped("."),
        "slashes": grouped("/"),
        "double spaces": grouped("  "),
        "after a prefix (ref-)": lambda rng: "ref-" + _card(rng),
        "after a prefix (card#)": lambda rng: "card#" + _grouped(_card(rng), rng.choice([" ", "-"])),
        "then an expiry": lambda rng: f"{_grouped(_card(rng), ' ')} {rng.randint(1, 12):02d}/{rng.randint(25, 31)}",
        "underscores": grouped("_"),
        "no-break spaces": grouped("\u00a0"),
        "thin spaces": grouped("\u2009"),
        "zero-width spaces": grouped("\u200b"),
        "fullwidth digits": lambda rng: _grouped(_card(rng), " ").translate(_FULLWIDTH),
        "after a prefix (card:)": lambda rng: "card:" + _card(rng),
        "after letters (cardno)": lambda rng: "cardno" + _card(rng),
    }


_FULLWIDTH = {ord("0") + digit: 0xFF10 + digit for digit in range(10)} | {ord("+"): 0xFF0B}
"""Fullwidth digits and plus sign (NFKC reads them as ASCII)."""


def _ssn(rng: random.Random) -> tuple[str, str, str]:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"


def ssn_formats() -> dict[str, Generator]:
    return {
        "dashes": lambda rng: "-".join(_ssn(rng)),
        "spaces": lambda rng: " ".join(_ssn(rng)),
        "dots": lambda rng: ".".join(_ssn(rng)),
        "after a prefix (SSN-)": lambda rng: "SSN-" + "-".join(_ssn(rng)),
        "labelled, together (SSN: )": lambda rng: "SSN: " + "".join(_ssn(rng)),
        "labelled, together (social security number )": lambda rng: "social security number " + "".join(_ssn(rng)),
        "underscores": lambda rng: "_".join(_ssn(rng)),
        "slashes": lambda rng: "/".join(_ssn(rng)),
        "after a prefix (ssn:)": lambda rng: "ssn:" + "".join(_ssn(rng)),
        "labelled in a sentence (my SSN is )": lambda rng: "my SSN is " + "".join(_ssn(rng)),
        "labelled in a sentence (SSN number )": lambda rng: "SSN number " + "-".join(_ssn(rng)),
    }


def _local(rng: random.Random) -> str:
    first = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 8)))
    last = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 8)))
    return rng.choice([first, f"{first}.{last}", f"{first}{rng.randint(1, 99)}", f"{first}+{last}", f"{first}_{last}"])


def _domain(rng: random.Random) -> tuple[str, str]:
    name = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 10)))
    return name, rng.choice(["com", "org", "io", "de", "co.uk", "example"])


def email_formats() -> dict[str, Generator]:
    def shape(at: str, dot: str, upper: bool = False) -> Generator:
        def make(rng: random.Random) -> str:
            name, tld = _domain(rng)
            text = f"{_local(rng)}{at}{name}{dot}{tld.replace('.', dot)}"
            return text.replace(" at ", " AT ").replace(" dot ", " DOT ") if upper else text

        return make

    return {
        "plain": shape("@", "."),
        "[at] [dot]": shape(" [at] ", " [dot] "),
        "(at)": shape("(at)", "."),
        "{at} {dot}": shape(" {at} ", " {dot} "),
        "at dot (words)": shape(" at ", " dot "),
        "AT DOT (words)": shape(" at ", " dot ", upper=True),
        "spaces around @": shape(" @ ", "."),
        "fullwidth at": shape("\uff20", "."),
        "in angle brackets": lambda rng: f"<{shape('@', '.')(rng)}>",
        "defanged [@] [.]": shape("[@]", "[.]"),
        "@ and [.]": shape("@", "[.]"),
        "URL-encoded %40": shape("%40", "."),
        "HTML entity &#64;": shape("&#64;", "."),
        "small at (U+FE6B)": shape("\ufe6b", "."),
        "zero-width space inside": lambda rng: shape("@", ".")(rng).replace("@", "\u200b@\u200b"),
        "internationalised domain": lambda rng: f"{_local(rng)}@{_domain(rng)[0]}ü.de",
    }


def phone_formats() -> dict[str, Generator]:
    def us(rng: random.Random) -> tuple[str, str, str]:
        return str(rng.randint(201, 989)), str(rng.randint(200, 999)), _digits(rng, 4)

    return {
        "(555) 123-4567": lambda rng: "({}) {}-{}".format(*us(rng)),
        "555-123-4567": lambda rng: "-".join(us(rng)),
        "555.123.4567": lambda rng: ".".join(us(rng)),
        "+1 555 123 4567": lambda rng: "+1 " + " ".join(us(rng)),
        "+44 20 7946 0958": lambda rng: f"+44 20 {_digits(rng, 4)} {_digits(rng, 4)}",
        "+49 151 12345678": lambda rng: f"+49 151 {_digits(rng, 8)}",
        "+4915112345678": lambda rng: "+49151" + _digits(rng, 8),
        "no-break spaces": lambda rng: "+1\u00a0" + "\u00a0".join(us(rng)),
        "fullwidth": lambda rng: ("+1 " + " ".join(us(rng))).translate(_FULLWIDTH),
        "tel: URI": lambda rng: "tel:+1" + "".join(us(rng)),
    }


def _tag(rng: random.Random, luhn: bool) -> str:
    total = rng.randint(13, 19)
    digits = _digits(rng, total - 1)
    digits = _with_check_digit(digits) if luhn else digits + rng.choice(string.digits)
    groups, start = [], 0
    while start < total:
        size = min(rng.randint(1, 6), total - start)
        groups.append(digits[start : start + size])
        start += size
    if len(groups) == 1 or [len(g) for g in groups] in ([4, 4, 4, 4], [4, 4, 4, 4, 3], [4, 6, 5], [4, 6, 4]):
        groups = [digits[:2], digits[2:]]  # a tag, not a card's grouping
    return "-".join(groups)


def negative_families() -> dict[str, Generator]:
    def words(rng: random.Random, count: int) -> str:
        return " ".join(rng.choice(PROSE) for _ in range(count))

    return {
        "digit tag with dashes (random grouping)": lambda rng: "tag " + _tag(rng, luhn=False),
        "digit tag with dashes (Luhn-valid)": lambda rng: "tag " + _tag(rng, luhn=True),
        "long order number (13-19 digits, together)": lambda rng: "order " + _digits(rng, rng.randint(13, 19)),
        "date": lambda rng: f"{rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "timestamp": lambda rng: (
            f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            f"T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
        ),
        "version": lambda rng: ".".join(str(rng.randint(0, 40)) for _ in range(rng.randint(2, 4))),
        "IPv4 address": lambda rng: ".".join(str(rng.randint(1, 254)) for _ in range(4)),
        "UUID": lambda rng: str(uuid.UUID(int=rng.getrandbits(128))),
        "ISBN-13": lambda rng: f"978-{rng.randint(0, 9)}-{_digits(rng, 3)}-{_digits(rng, 5)}-{rng.randint(0, 9)}",
        "price": lambda rng: f"${rng.randint(1, 999)},{_digits(rng, 3)}.{_digits(rng, 2)}",
        "ZIP+4": lambda rng: f"{_digits(rng, 5)}-{_digits(rng, 4)}",
        "hex hash": lambda rng: f"{rng.getrandbits(160):040x}",
        "prose with at and dot": lambda rng: f"{words(rng, 3)} at {words(rng, 2)}. {words(rng, 2)} dot {words(rng, 1)}",
        "bare domain after 'at'": lambda rng: f"docs are at {_domain(rng)[0]}.{_domain(rng)[1]}",
        "@mention": lambda rng: f"thanks @{_local(rng).replace('.', '')} for the review",
        "three numbers": lambda rng: f"{rng.randint(1, 99)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
        "date and time": lambda rng: (
            f"{rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            f" {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        ),
        "European date and time": lambda rng: (
            f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randint(1990, 2030)}"
            f" {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
        ),
        "epoch milliseconds": lambda rng: str(rng.randint(1_000_000_000_000, 1_999_999_999_999)),
        "MAC address": lambda rng: ":".join(f"{rng.getrandbits(8):02x}" for _ in range(6)),
        "IPv6 address": lambda rng: ":".join(f"{rng.getrandbits(16):04x}" for _ in range(8)),
        "semantic version with build": lambda rng: (
            f"v{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}+build.{_digits(rng, 8)}"
        ),
        "IBAN": lambda rng: "DE" + _digits(rng, 2) + " " + " ".join(_digits(rng, 4) for _ in range(4)) + " 00",
    }


PROSE = ["the", "a", "report", "meeting", "quarter", "plan", "team", "sent", "review", "draft", "budget", "notes"]


def wrap(rng: random.Random, value: str) -> str:
    before = " ".join(rng.choice(PROSE) for _ in range(rng.randint(0, 6)))
    after = " ".join(rng.choice(PROSE) for _ in range(rng.randint(0, 6)))
    return f"{before} {value}{rng.choice(['', '.', ',', ';'])} {after}".strip()


def measure(per_format: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    detectors = {name: detectors_for(PrivacyConfig(builtin_detectors=[name])) for name in CLASSES}  # type: ignore[list-item]
    positives = {
        "card": card_formats(),
        "nationalId": ssn_formats(),
        "email": email_formats(),
        "phone": phone_formats(),
    }
    result: dict[str, Any] = {"seed": seed, "perFormat": per_format, "recall": {}, "falsePositives": {}}
    for name, formats in positives.items():
        by_format = {}
        for label, make in formats.items():
            hits = sum(bool(detectors[name].scan([wrap(rng, make(rng))])) for _ in range(per_format))
            by_format[label] = hits / per_format
        overall = sum(by_format.values()) / len(by_format)
        result["recall"][name] = {"overall": overall, "byFormat": by_format}
    negatives = [
        (family, wrap(rng, make(rng))) for family, make in negative_families().items() for _ in range(per_format)
    ]
    for name in CLASSES:
        by_family: dict[str, int] = defaultdict(int)
        for family, text in negatives:
            by_family[family] += bool(detectors[name].scan([text]))
        result["falsePositives"][name] = {
            "overall": sum(by_family.values()) / len(negatives),
            "byFamily": {family: count / per_format for family, count in by_family.items() if count},
        }
    result["negatives"] = len(negatives)
    return result


def render(result: dict[str, Any]) -> str:
    lines = [
        f"seed {result['seed']}, {result['perFormat']} texts per format and per negative family, "
        f"{result['negatives']} negatives",
        "",
        "| detector | recall | false-positive rate | missed formats (recall < 100 %) | families it fires on |",
        "|---|---:|---:|---|---|",
    ]
    for name in CLASSES:
        recall = result["recall"][name]
        fp = result["falsePositives"][name]
        missed = ", ".join(f"{label} {share:.1%}" for label, share in recall["byFormat"].items() if share < 1) or "none"
        fires = ", ".join(f"{family} {share:.1%}" for family, share in fp["byFamily"].items()) or "none"
        lines.append(f"| {name} | {recall['overall']:.2%} | {fp['overall']:.2%} | {missed} | {fires} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-format", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = measure(args.per_format, args.seed)
    print(render(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        print(f"\nwritten to {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
