"""What the per-request observers (GenAI metrics, audit trail) cost the router's own code, in process.

    .venv/bin/python bench/observers_cost.py [--chunks 50] [--chunk 300]

The same driver as `hotpath.py` (one routine chat completion through `RouterApp`'s ASGI interface,
a canned upstream), with the executor's observers switched between chunks of requests: none, the
GenAI metrics only, the audit trail only, both. Switching inside one process, chunk by chunk, puts
every variant under the same machine load, which on a shared machine moves far more between two
processes than the difference measured. The garbage collector is settled as the app's lifespan does
in a real server. Reports CPU time per request: the minimum over chunks (the least disturbed) and the
median. The audit trail writes to a temporary file, removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hotpath import BODY, CannedTransport

from hybridroute_router.app import RouterApp, _settle_garbage_collector
from hybridroute_router.audit import AuditTrail
from hybridroute_router.cli import configure_logging
from hybridroute_router.config import parse_config
from hybridroute_router.loader import ConfigHolder
from hybridroute_router.outcome import RequestOutcome


async def measure(chunks: int, chunk: int, audit_path: Path) -> dict[str, list[float]]:
    config = parse_config(
        {
            "modelAliases": ["auto"],
            "endpoints": [{"name": "local", "type": "local", "baseURL": "http://127.0.0.1:9/v1", "model": "sim"}],
        }
    )
    app = RouterApp(ConfigHolder(config), transport=CannedTransport())
    genai = list(app.executor.observers)
    trail = AuditTrail(audit_path)
    variants: dict[str, list[Callable[[RequestOutcome], None]]] = {
        "none": [],
        "genai": genai,
        "audit": [trail],
        "genai+audit": [*genai, trail],
    }
    headers = [(b"host", b"127.0.0.1:8040"), (b"content-type", b"application/json")]
    headers += [(b"authorization", b"Bearer bench"), (b"content-length", str(len(BODY)).encode())]
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}
    message = {"type": "http.request", "body": BODY, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(event: dict[str, Any]) -> None:
        if event["type"] == "http.response.start" and event["status"] != 200:
            raise SystemExit(f"unexpected status {event['status']}")

    for _ in range(2000):  # warm up
        await app(scope, receive, send)
    _settle_garbage_collector()
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(chunks):
        for name, observers in variants.items():
            app.executor.observers[:] = observers
            started = time.process_time()
            for _ in range(chunk):
                await app(scope, receive, send)
            results[name].append((time.process_time() - started) / chunk * 1e6)
    trail.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=50, help="chunks per variant")
    parser.add_argument("--chunk", type=int, default=300, help="requests per chunk")
    args = parser.parse_args()
    configure_logging("info")
    logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))  # noqa: SIM115 (lives as long as the process)
    with tempfile.TemporaryDirectory(prefix="hybridroute-observers-") as folder:
        results = asyncio.run(measure(args.chunks, args.chunk, Path(folder) / "audit.jsonl"))
    floor = min(results["none"])
    for name, values in results.items():
        low, median = min(values), statistics.median(values)
        print(f"{name:<12} min {low:6.1f}  median {median:6.1f} µs CPU per request  (min +{low - floor:.1f})")


if __name__ == "__main__":
    main()
