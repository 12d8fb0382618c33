"""What profiling a request costs (`build_profile` with all four built-in detectors), against a git ref.

In process, no server: the privacy scan of a chat body (every string, the seams between messages and
parts) is the part of the router's per-request work that grows with the body, so a change to what the
detectors read is measured here first. Three conversation shapes of prose that holds digits and the
word "at" (what wakes the detectors' preconditions): 2 messages of 60 words, 10 of 60, 40 of 200.

    .venv/bin/python bench/profile_cost.py --baseline-ref 03dc25e --rounds 5

`--baseline-ref REF` also measures the router's code at REF (`git archive` into a temp dir, run by
the same interpreter in a subprocess), interleaved with this tree round by round; each row reports
the best round of each and the ratio, since on a shared machine only ratios within one run compare.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {
    "2 messages x 60 words": (2, 60, 2000),
    "10 messages x 60 words": (10, 60, 1000),
    "40 messages x 200 words": (40, 200, 100),
}
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "at",
    "noon",
    "on",
    "day",
    "12",
    "of",
    "the",
    "3rd",
    "month",
]


def measure() -> dict[str, float]:
    """Microseconds per `build_profile` call for each shape, with whatever hybridroute_router is importable."""
    from hybridroute_router.config import EndpointConfig, PrivacyConfig, RouterConfig
    from hybridroute_router.profile import build_profile

    local = EndpointConfig(name="local", type="local", base_url="http://127.0.0.1:9/v1", model="m")
    config = RouterConfig(
        endpoints=[local], privacy=PrivacyConfig(builtin_detectors=["email", "phone", "card", "nationalId"])
    )
    rng = random.Random(1)
    results = {}
    for label, (messages, words, number) in SHAPES.items():
        body = {
            "model": "auto",
            "messages": [
                {"role": ("user", "assistant")[index % 2], "content": " ".join(rng.choice(WORDS) for _ in range(words))}
                for index in range(messages)
            ],
        }
        seconds = min(timeit.repeat(lambda body=body: build_profile("chat", body, {}, config), number=number, repeat=3))
        results[label] = seconds / number * 1e6
    return results


def measure_in(source: Path) -> dict[str, float]:
    """`measure()` in a subprocess that imports the router from `source`."""
    code = (
        f"import sys, json; sys.path[:0] = [{str(source / 'router-sidecar')!r}, {str(ROOT)!r}]; "
        "from bench.profile_cost import measure; print(json.dumps(measure()))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return dict(json.loads(output))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", help="also measure the router at this git ref, as `baseline`")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        sources = {"router": ROOT}
        if args.baseline_ref:
            baseline = Path(workdir) / "baseline"
            baseline.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.baseline_ref, "router-sidecar"],
                capture_output=True,
                check=True,
            )
            subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive.stdout, check=True)
            sources["baseline"] = baseline
        best: dict[str, dict[str, float]] = {target: {} for target in sources}
        for _ in range(args.rounds):
            for target, source in sources.items():
                for label, micros in measure_in(source).items():
                    best[target][label] = min(micros, best[target].get(label, micros))
    header = "| shape | router µs |" + (" baseline µs | router / baseline |" if args.baseline_ref else "")
    print(header)
    print("|---|---:|" + ("---:|---:|" if args.baseline_ref else ""))
    for label in SHAPES:
        row = f"| {label} | {best['router'][label]:.1f} |"
        if args.baseline_ref:
            base = best["baseline"][label]
            row += f" {base:.1f} | {best['router'][label] / base:.2f} |"
        print(row)


if __name__ == "__main__":
    main()
