"""Demo traffic: a realistic request mix sent through the router with the real `openai` SDK, in phases.

The mix is what an application next to a router sends: routine short prompts (local is good enough),
complex reasoning prompts (the policy's complexity rule prefers the cloud), private ones (the privacy
header, or an e-mail address in the text: they must stay local) and long-context ones (larger than the
local model's window: only the cloud can take them). Phases hold a number of concurrent clients for a
while: low first, then up until the local model queues and its p95 climbs, then down again.

`plan_request` and `totals` are pure (a seeded RNG picks the words); `Traffic.run` drives the phases
and records one `RequestRecord` per request, including the endpoint the router picked (its headers).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

import openai

from e2e.demo_manifests import CLOUD_INPUT_PER_MTOK, CLOUD_OUTPUT_PER_MTOK, PRIVACY_HEADER, PRIVACY_HEADER_VALUE
from hybridroute_router.profile import CHARS_PER_TOKEN, MESSAGE_OVERHEAD_TOKENS

RequestKind = Literal["routine", "complex", "private-header", "private-email", "long-context"]
# Private traffic is a small share on purpose: on two CPU cores the local model serves about one short
# answer a second, and private requests can go nowhere else, so their queue is the local model's floor.
MIX: Final[tuple[tuple[RequestKind, float], ...]] = (
    ("routine", 0.65),
    ("complex", 0.15),
    ("private-header", 0.05),
    ("private-email", 0.05),
    ("long-context", 0.10),
)
# Short answers for what the local model may serve: its latency is mostly tokens generated.
SHORT_ANSWER_TOKENS: Final = 24
LONG_ANSWER_TOKENS: Final = 60
PRIVATE_KINDS: Final = frozenset({"private-header", "private-email"})
MODEL_ALIAS: Final = "auto"

_TOPICS = ("a load balancer", "a circuit breaker", "a GPU", "a Kubernetes pod", "a vector database", "TLS", "a cache")
_TRADE_OFFS = (
    ("latency", "cost"),
    ("consistency", "availability"),
    ("batching", "time to first token"),
    ("quantization", "answer quality"),
)
_NAMES = ("jane.doe", "m.rossi", "k.tanaka", "a.okafor")
_DAYS = ("Monday", "Tuesday", "Thursday")
# Long-context prompts: synthetic notes well past the local model's window (its maxContextTokens),
# worded without complexity keywords so that the context window alone is what sends them to the cloud.
_LONG_NOTES_PARAGRAPHS = 50
_NOTES_PARAGRAPH = (
    "Meeting notes, item {index}: the team reviewed the capacity figures for the inference cluster, the "
    "rollout of the new routing policy and the incident from last week, and agreed on follow-ups. "
)


@dataclass(frozen=True)
class Phase:
    """Hold `concurrency` clients sending back to back for `seconds`."""

    name: str
    concurrency: int
    seconds: float


def demo_phases(steady_s: float, ramp_s: float, peak_s: float, recovery_s: float, peak: int) -> tuple[Phase, ...]:
    """Low, up to `peak` concurrent clients, and back down: saturation and recovery in one run."""
    half = max(2, peak // 2)
    return (
        Phase("steady", 1, steady_s),
        Phase("ramp-up", half, ramp_s),
        Phase("peak", peak, peak_s),
        Phase("ramp-down", half, ramp_s),
        Phase("recovery", 1, recovery_s),
    )


@dataclass(frozen=True)
class PlannedRequest:
    kind: RequestKind
    messages: list[dict[str, str]]
    headers: dict[str, str]
    max_tokens: int

    @property
    def private(self) -> bool:
        return self.kind in PRIVATE_KINDS

    @property
    def estimated_input_tokens(self) -> int:
        """The router's own estimate (characters / 4 plus per-message overhead), for cost comparisons."""
        chars = sum(len(message["content"]) for message in self.messages)
        return -(-chars // CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * len(self.messages)


def plan_request(kind: RequestKind, rng: random.Random) -> PlannedRequest:
    """One request of `kind`, worded from `rng` (pure: the same seed gives the same traffic)."""
    topic = rng.choice(_TOPICS)
    if kind == "routine":
        return _chat(kind, f"In one sentence, what is {topic}?", SHORT_ANSWER_TOKENS)
    if kind == "complex":
        first, second = rng.choice(_TRADE_OFFS)
        prompt = (
            f"Analyze step by step the trade-off between {first} and {second} for an LLM platform, "
            "then plan a migration in three stages and compare the risks of each stage."
        )
        return _chat(kind, prompt, LONG_ANSWER_TOKENS)
    if kind == "private-header":
        headers = {PRIVACY_HEADER: PRIVACY_HEADER_VALUE}
        return _chat(kind, f"In one sentence, what is {topic}?", SHORT_ANSWER_TOKENS, headers)
    if kind == "private-email":
        prompt = f"Write a two-line reply to {rng.choice(_NAMES)}@example.com confirming {rng.choice(_DAYS)}."
        return _chat(kind, prompt, SHORT_ANSWER_TOKENS)
    notes = "".join(_NOTES_PARAGRAPH.format(index=index) for index in range(_LONG_NOTES_PARAGRAPHS))
    return _chat(kind, notes + "\nSummarize the notes above in two sentences.", LONG_ANSWER_TOKENS)


def _chat(kind: RequestKind, prompt: str, max_tokens: int, headers: dict[str, str] | None = None) -> PlannedRequest:
    return PlannedRequest(kind, [{"role": "user", "content": prompt}], headers or {}, max_tokens)


def cloud_price_usd(input_tokens: int, output_tokens: int) -> float:
    """What the cloud endpoint charges for a request of this size."""
    return (input_tokens * CLOUD_INPUT_PER_MTOK + output_tokens * CLOUD_OUTPUT_PER_MTOK) / 1_000_000


@dataclass(frozen=True)
class RequestRecord:
    """One request as the client saw it."""

    at: float
    """Seconds from the start of the traffic to sending."""
    seconds: float
    """Client-side latency."""
    phase: str
    concurrency: int
    kind: str
    private: bool
    status: int
    """HTTP status; 0 when no answer came (connection error, client timeout)."""
    endpoint: str
    """The endpoint that served it (x-hybridroute-endpoint); empty when none did."""
    reason: str
    """The router's reason (x-hybridroute-reason)."""
    attempts: int
    input_tokens: int
    """Estimated the router's way, so local and cloud requests compare."""
    output_tokens: int
    """From the upstream's usage."""
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def spilled(self) -> bool:
        """Sent to the cloud first because the local pool was saturated, short of replicas or in slow
        start (the router's reason `spill`, docs/saturation.md)."""
        return self.reason.split(";")[0] == "spill"

    @property
    def cloud_price_usd(self) -> float:
        """What this request costs, or would have cost, at the cloud endpoint."""
        return cloud_price_usd(self.input_tokens, self.output_tokens)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Traffic:
    """Runs phases of concurrent clients against the router and records every request."""

    client: openai.AsyncOpenAI
    phases: Sequence[Phase]
    rng: random.Random = field(default_factory=lambda: random.Random(42))
    clock: Callable[[], float] = time.monotonic
    on_record: Callable[[RequestRecord], object] | None = None
    records: list[RequestRecord] = field(default_factory=list)
    phase: Phase | None = None
    started: float = 0.0
    _target: int = 0

    def elapsed(self) -> float:
        return self.clock() - self.started if self.started else 0.0

    async def run(self) -> None:
        """Every phase in order; returns once the last request has finished."""
        self.started = self.clock()
        workers: dict[int, asyncio.Task[None]] = {}
        for phase in self.phases:
            self.phase = phase
            self._target = phase.concurrency
            for index in range(phase.concurrency):
                if index not in workers or workers[index].done():
                    workers[index] = asyncio.create_task(self._worker(index), name=f"client-{index}")
            await asyncio.sleep(phase.seconds)
        self._target = 0
        await asyncio.gather(*workers.values())

    async def _worker(self, index: int) -> None:
        # A worker above the phase's concurrency stops after its current request: ramps are gradual.
        while index < self._target:
            await self.send(plan_request(self._pick_kind(), self.rng))

    def _pick_kind(self) -> RequestKind:
        kinds = [kind for kind, _ in MIX]
        return self.rng.choices(kinds, weights=[weight for _, weight in MIX])[0]

    async def send(self, planned: PlannedRequest) -> RequestRecord:
        phase = self.phase or Phase("-", 0, 0)
        at = self.elapsed()
        began = self.clock()
        status, headers, output_tokens, error = 0, {}, 0, ""
        try:
            raw = await self.client.chat.completions.with_raw_response.create(
                model=MODEL_ALIAS,
                messages=planned.messages,  # type: ignore[arg-type]  # plain dicts are what the API takes
                max_tokens=planned.max_tokens,
                extra_headers=planned.headers,
            )
            completion = raw.parse()
            status, headers = raw.status_code, dict(raw.headers)
            output_tokens = completion.usage.completion_tokens if completion.usage else 0
        except openai.APIStatusError as exc:
            status, headers, error = exc.status_code, dict(exc.response.headers), _short(exc.message)
        except openai.APIError as exc:  # connection refused, reset, client-side timeout
            error = _short(str(exc))
        record = RequestRecord(
            at=at,
            seconds=self.clock() - began,
            phase=phase.name,
            concurrency=phase.concurrency,
            kind=planned.kind,
            private=planned.private,
            status=status,
            endpoint=headers.get("x-hybridroute-endpoint", "") if 200 <= status < 300 else "",
            reason=headers.get("x-hybridroute-reason", ""),
            attempts=int(headers.get("x-hybridroute-attempts", "0") or 0),
            input_tokens=planned.estimated_input_tokens,
            output_tokens=output_tokens,
            error=error,
        )
        self.records.append(record)
        if self.on_record is not None:
            self.on_record(record)
        return record


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


@dataclass(frozen=True)
class Totals:
    """What the records add up to (the dashboard shows it live, the report at the end)."""

    requests: int
    failed: int
    served: dict[str, int]
    """Successful requests by serving endpoint."""
    private: int
    private_not_local: int
    """Private requests that some endpoint other than the local one served: must stay 0."""
    spend_usd: float
    """Cloud spend: the cloud-served requests at the cloud's price."""
    cloud_only_usd: float
    """What every successful request would have cost on the cloud endpoint."""
    spilled: int = 0
    """Requests the router spilled to the cloud before its breaker would have opened."""

    def share(self, endpoint: str) -> float:
        served = sum(self.served.values())
        return self.served.get(endpoint, 0) / served if served else 0.0


def totals(records: Sequence[RequestRecord], local_endpoint: str) -> Totals:
    served: dict[str, int] = {}
    for record in records:
        if record.ok:
            served[record.endpoint] = served.get(record.endpoint, 0) + 1
    return Totals(
        requests=len(records),
        failed=sum(1 for record in records if not record.ok),
        served=served,
        private=sum(1 for record in records if record.private),
        private_not_local=sum(1 for r in records if r.private and r.ok and r.endpoint != local_endpoint),
        spend_usd=sum(r.cloud_price_usd for r in records if r.ok and r.endpoint and r.endpoint != local_endpoint),
        cloud_only_usd=sum(record.cloud_price_usd for record in records if record.ok),
        spilled=sum(1 for record in records if record.spilled),
    )
