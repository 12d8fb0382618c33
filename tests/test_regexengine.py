"""Custom detectors run on RE2: what it refuses is a ConfigError naming the detector; matching is linear."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest

from hybridroute_router.config import ConfigError, PrivacyConfig, RegexDetector, parse_config
from hybridroute_router.detectors import detectors_for
from hybridroute_router.regexengine import PatternError, compile_pattern
from tests.fixtures.upstreams import endpoint

NESTED = "(" * 500 + "a" + ")" * 500
"""Python's `re` raises RecursionError compiling this; RE2 takes it."""


def config_with(pattern: str, name: str = "ticket") -> dict[str, Any]:
    return {
        "endpoints": [endpoint("local-a", "http://127.0.0.1:9/v1")],
        "privacy": {"detectors": [{"name": name, "pattern": pattern}]},
    }


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(\d+)-\1", "invalid escape sequence"),
        (r"(?=secret)\w+", "invalid perl operator"),
        (r"(?<!x)acct-\d+", "invalid perl operator"),
        (r"x{1001}", "invalid repetition size"),
        (r"a**", "bad repetition operator"),
    ],
)
def test_patterns_re2_cannot_run_are_config_errors_naming_the_detector(pattern: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(pattern, name="account-ref"))
    assert "privacy.detectors[account-ref].pattern" in str(caught.value)
    assert why in str(caught.value)
    with pytest.raises(PatternError):
        compile_pattern(pattern)


def test_a_pattern_that_makes_python_re_recurse_is_a_valid_re2_detector() -> None:
    config = parse_config(config_with(NESTED, name="nested"))
    detectors = detectors_for(config.privacy)
    assert detectors.scan(["xx a yy"]) == ("detector:nested",)
    assert detectors.scan(["nothing here"]) == ()


def test_custom_detectors_match_in_linear_time_whatever_the_pattern() -> None:
    """`(a+)+$` on a's then '!' is the textbook catastrophic backtracking case: 2^64 steps on `re`.

    Run in a child process so a backtracking engine cannot hang the test run: it must finish, not be
    killed by the 120 s guard (which is a guard against a hang, not a speed requirement).
    """
    program = textwrap.dedent(
        """
        from hybridroute_router.config import PrivacyConfig, RegexDetector
        from hybridroute_router.detectors import detectors_for
        privacy = PrivacyConfig(detectors=[RegexDetector(name="evil", pattern="(a+)+$")])
        print(detectors_for(privacy).scan(["a" * 64 + "!"]))
        """
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "()"


def test_re2_detectors_find_what_they_should() -> None:
    privacy = PrivacyConfig(
        detectors=[
            RegexDetector(name="employee-id", pattern=r"\bEMP-\d{6}\b"),
            RegexDetector(name="project", pattern=r"(?i)project\s+(?:falcon|osprey)"),
        ]
    )
    detectors = detectors_for(privacy)
    assert detectors.scan(["ask EMP-004211 about PROJECT  Osprey"]) == ("detector:employee-id", "detector:project")
    assert detectors.scan(["EMP-0042110 and the falcon project"]) == ()
