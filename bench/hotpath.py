"""The router's own CPU time per request, in process, with a canned upstream: no sockets, no server.

    .venv/bin/python bench/hotpath.py [--requests 20000] [--log-level info] [--profile] [--audit-file F]
                                      [--fleet-budget]

Drives `RouterApp` through its ASGI interface with one routine chat completion again and again;
the transport answers at once with a fixed OpenAI response. What is left is exactly the router's
code on the request path: body read, JSON parse, profile, decision, attempt bookkeeping, metrics
(GenAI ones included), headers, decision log, and with `--audit-file` the audit record. Much less
noisy than the end-to-end benchmark on a shared machine, so use it to compare changes to the hot
path; `--profile` prints where the time goes (cProfile).

In a real server the same code runs with colder caches between socket events, so it costs about
twice this there (compare router_overhead.py's CPU per request).

`--fleet-budget` serves a policy with a fleet budget (scope policy, a cap far away) whose spend has
been read once, as after the first evaluation: every request then pays for the budget decision the
way a router with a fleet budget does (the evaluation itself runs off the request path).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from hybridroute_router.app import RouterApp
from hybridroute_router.audit import AuditTrail
from hybridroute_router.cli import configure_logging
from hybridroute_router.config import parse_config
from hybridroute_router.fleetbudget import FleetBudget, Spend
from hybridroute_router.loader import ConfigHolder
from hybridroute_router.upstream import UpstreamRequest

ANSWER = orjson.dumps(
    {
        "id": "bench",
        "object": "chat.completion",
        "created": 0,
        "model": "sim",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }
)
BODY = b'{"model":"auto","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":16}'


class CannedResponse:
    status = 200
    headers: Mapping[str, str] = {"content-type": "application/json"}

    async def read(self) -> bytes:
        return ANSWER

    async def chunks(self) -> AsyncIterator[bytes]:
        yield ANSWER

    def close(self) -> None:
        pass


class CannedTransport:
    async def send(self, request: UpstreamRequest) -> CannedResponse:
        return CannedResponse()


FLEET_BUDGET = {"dailyUsd": 1e9, "scope": "policy", "prometheus": {"url": "http://127.0.0.1:9"}}


async def measure(requests: int, profile: bool, audit_file: str | None, fleet_budget: bool) -> float:
    document: dict[str, Any] = {
        "modelAliases": ["auto"],
        "endpoints": [{"name": "local", "type": "local", "baseURL": "http://127.0.0.1:9/v1", "model": "sim"}],
    }
    if fleet_budget:
        document["budget"] = FLEET_BUDGET
    config = parse_config(document)
    app = RouterApp(ConfigHolder(config), transport=CannedTransport())
    if audit_file:
        app.executor.observers.append(AuditTrail(Path(audit_file)))
    session = aiohttp.ClientSession()  # the evaluator's; never used here (no evaluation runs)
    if fleet_budget:  # as after the first answered evaluation
        app.fleet_budget = FleetBudget(session, lambda: config)
        app.fleet_budget.status.spend = Spend(1.0, None, time.time())
    headers = [(b"host", b"127.0.0.1:8040"), (b"content-type", b"application/json")]
    headers += [(b"authorization", b"Bearer bench"), (b"content-length", str(len(BODY)).encode())]
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}
    message = {"type": "http.request", "body": BODY, "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return message

    async def send(event: dict[str, Any]) -> None:
        if event["type"] == "http.response.start":
            statuses.append(event["status"])

    for _ in range(2000):  # warm up: caches, the interpreter's specialisation
        await app(scope, receive, send)
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    started = time.process_time()
    for _ in range(requests):
        await app(scope, receive, send)
    elapsed = time.process_time() - started
    await session.close()
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    if set(statuses) != {200}:
        raise SystemExit(f"unexpected statuses: {sorted(set(statuses))}")
    return elapsed / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary (slows it down)")
    parser.add_argument("--audit-file", help="write the audit trail here (appended; remove it afterwards)")
    parser.add_argument("--fleet-budget", action="store_true", help="serve a policy with a fleet budget")
    args = parser.parse_args()
    configure_logging(args.log_level)
    logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))  # noqa: SIM115 (lives as long as the process)
    per_request = asyncio.run(measure(args.requests, args.profile, args.audit_file, args.fleet_budget))
    audit = "on" if args.audit_file else "off"
    budget = "fleet" if args.fleet_budget else "none"
    settings = f"log level {args.log_level}, audit {audit}, budget {budget}"
    print(f"{per_request:.1f} µs CPU per request (router code only, {settings})")


if __name__ == "__main__":
    main()
