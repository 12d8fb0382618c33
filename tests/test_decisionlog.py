"""Decision logging: routine requests summarised per interval at INFO, everything else line by line."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from hybridroute_router.decisionlog import DecisionLog, DecisionSummary


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logger() -> Any:
    log = logging.getLogger("test.decisionlog")
    handler = Records()
    log.addHandler(handler)
    log.propagate = False
    yield log, handler.records
    log.removeHandler(handler)


def details() -> dict[str, Any]:
    return {"policy": "p", "status": 200, "attempts": 1}


def test_summary_counts_until_the_interval_ends() -> None:
    clock = Clock()
    summary = DecisionSummary(clock, interval_s=60)
    assert summary.count("local", "routine", "success") is None
    clock.now += 30
    assert summary.count("local", "routine", "success") is None
    assert summary.count("cloud", "complex", "success") is None
    clock.now += 30
    closed = summary.count("local", "routine", "success")
    assert closed == {
        "window_s": 60.0,
        "requests": 4,
        "routes": [
            {"endpoint": "cloud", "reason": "complex", "outcome": "success", "count": 1},
            {"endpoint": "local", "reason": "routine", "outcome": "success", "count": 3},
        ],
    }
    assert summary.count("local", "routine", "success") is None  # a new interval starts empty


def test_summary_refuses_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        DecisionSummary(Clock(), interval_s=0)


def test_routine_requests_at_info_are_summarised_not_logged_one_by_one(logger: Any) -> None:
    log, records = logger
    log.setLevel(logging.INFO)
    clock = Clock()
    decisions = DecisionLog(log, DecisionSummary(clock, interval_s=10))
    for _ in range(5):
        decisions.routed("local", "routine", "success", True, details)
    assert records == []
    clock.now += 10
    decisions.routed("local", "routine", "success", True, details)
    assert [record.getMessage() for record in records] == ["requests routed (summary of routine requests)"]
    assert records[0].levelno == logging.INFO
    assert records[0].__dict__["requests"] == 6


def test_requests_that_went_wrong_are_logged_at_info_with_their_details(logger: Any) -> None:
    log, records = logger
    log.setLevel(logging.INFO)
    decisions = DecisionLog(log, DecisionSummary(Clock()))
    decisions.routed("cloud", "routine", "success", False, lambda: {"attempts": 2, "failures": ["local: 503"]})
    assert len(records) == 1
    line = records[0].__dict__
    assert records[0].levelno == logging.INFO
    assert (line["endpoint"], line["reason"], line["outcome"], line["attempts"]) == ("cloud", "routine", "success", 2)


def test_debug_logs_every_routine_request(logger: Any) -> None:
    log, records = logger
    log.setLevel(logging.DEBUG)
    decisions = DecisionLog(log, DecisionSummary(Clock()))
    decisions.routed("local", "routine", "success", True, details)
    decisions.routed("local", "routine", "success", True, details)
    assert [record.levelno for record in records] == [logging.DEBUG, logging.DEBUG]
    assert records[0].__dict__["status"] == 200


def test_nothing_is_built_or_counted_above_info(logger: Any) -> None:
    log, records = logger
    log.setLevel(logging.WARNING)
    clock = Clock()
    summary = DecisionSummary(clock, interval_s=1)
    decisions = DecisionLog(log, summary)

    def must_not_run() -> dict[str, Any]:
        raise AssertionError("details built for a line nobody writes")

    decisions.routed("local", "routine", "success", True, must_not_run)
    decisions.routed("cloud", "routine", "upstream_error", False, must_not_run)
    clock.now += 5
    assert records == []
    assert summary.count("local", "routine", "success") == {
        "window_s": 5.0,
        "requests": 1,
        "routes": [{"endpoint": "local", "reason": "routine", "outcome": "success", "count": 1}],
    }, "above INFO nothing was counted: only this call is in the window"
