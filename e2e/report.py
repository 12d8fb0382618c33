"""The demo's outputs: a PNG of latency and routing share over time, and a short markdown report.

Inputs are what the traffic run recorded (one `RequestRecord` per request, one `Sample` per second).
`phase_rows`, `breaker_changes`, `spills` and `markdown` are pure; `plot` draws with matplotlib's Agg backend
(no display needed) and `write_report` writes both files and returns their paths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from e2e.dashboard import Sample
from e2e.traffic import Phase, RequestRecord, totals

# Width of the bins the routing-share panel counts requests in.
SHARE_BIN_SECONDS = 5.0
_STATE_COLOURS = {"open": "#d62728", "half-open": "#ffbf00"}


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    # round() first: a product q * n can land a hair above a whole number, and its ceiling skip a rank.
    rank = math.ceil(round(fraction * len(ordered), 9))
    return ordered[min(len(ordered), max(1, rank)) - 1]


@dataclass(frozen=True)
class PhaseRow:
    phase: str
    clients: int
    requests: int
    local_share: float
    local_p95_s: float | None
    cloud_p95_s: float | None
    failed: int


def phase_rows(records: Sequence[RequestRecord], phases: Sequence[Phase], local_endpoint: str) -> list[PhaseRow]:
    rows = []
    for phase in phases:
        mine = [record for record in records if record.phase == phase.name]
        served = [record for record in mine if record.ok]
        local = [record.seconds for record in served if record.endpoint == local_endpoint]
        cloud = [record.seconds for record in served if record.endpoint != local_endpoint]
        rows.append(
            PhaseRow(
                phase=phase.name,
                clients=phase.concurrency,
                requests=len(mine),
                local_share=len(local) / len(served) if served else 0.0,
                local_p95_s=percentile(local, 0.95),
                cloud_p95_s=percentile(cloud, 0.95),
                failed=len(mine) - len(served),
            )
        )
    return rows


def breaker_changes(timeline: Sequence[Sample], endpoint: str) -> list[tuple[float, str]]:
    """(time, new state) each time `endpoint`'s breaker state differs from the previous sample."""
    changes: list[tuple[float, str]] = []
    for sample in timeline:
        state = sample.breakers.get(endpoint)
        if state is not None and (not changes or changes[-1][1] != state):
            changes.append((sample.at, state))
    return changes


def spills(records: Sequence[RequestRecord]) -> list[RequestRecord]:
    """Requests the router spilled: sent to the cloud first because the local pool was saturated,
    short of replicas or in slow start (reason `spill`, docs/saturation.md), in sending order."""
    return sorted((record for record in records if record.spilled), key=lambda r: r.at)


def phase_starts(timeline: Sequence[Sample]) -> list[tuple[str, float]]:
    """(phase, first sample time) in order: where the phases began, as the monitor saw it."""
    starts: list[tuple[str, float]] = []
    for sample in timeline:
        if not starts or starts[-1][0] != sample.phase:
            starts.append((sample.phase, sample.at))
    return starts


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def markdown(
    records: Sequence[RequestRecord],
    timeline: Sequence[Sample],
    phases: Sequence[Phase],
    local_endpoint: str,
    cloud_endpoint: str,
    slo_seconds: float,
    model_server: str,
) -> str:
    done = totals(records, local_endpoint)
    saved = done.cloud_only_usd - done.spend_usd
    saved_share = saved / done.cloud_only_usd if done.cloud_only_usd else 0.0
    lines = [
        "# hybridroute demo report",
        "",
        f"- local endpoint: `{local_endpoint}` ({model_server})",
        f"- cloud endpoint: `{cloud_endpoint}` (the upstream SIMULATOR standing in for a cloud API)",
        f"- requests: {done.requests}, failed: {done.failed}, served locally: {done.share(local_endpoint):.0%}",
        f"- private requests: {done.private}, served anywhere but local: **{done.private_not_local}**",
        f"- cloud spend ${done.spend_usd:.4f} vs ${done.cloud_only_usd:.4f} if every request had gone to the "
        f"cloud: {saved_share:.0%} saved (prices of `{cloud_endpoint}`, tokens estimated the router's way)",
        f"- SLO: p95 {slo_seconds:.1f} s per endpoint, evaluated from Prometheus by the router's breaker",
        "",
        "## Phases",
        "",
        "| phase | clients | requests | served locally | local p95 | cloud p95 | failed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in phase_rows(records, phases, local_endpoint):
        lines.append(
            f"| {row.phase} | {row.clients} | {row.requests} | {row.local_share:.0%} | "
            f"{_seconds(row.local_p95_s)} | {_seconds(row.cloud_p95_s)} | {row.failed} |"
        )
    lines += ["", f"## `{local_endpoint}` breaker", ""]
    changes = breaker_changes(timeline, local_endpoint)
    lines += [f"- t={at:.0f} s: {state}" for at, state in changes] or ["- (no breaker data)"]
    spilled = spills(records)
    lines += ["", "## Spilled before the breaker (saturation admission)", ""]
    if spilled:
        per_phase = ", ".join(f"{phase.name} {sum(1 for r in spilled if r.phase == phase.name)}" for phase in phases)
        lines.append(f"- first spill at t={spilled[0].at:.0f} s; spilled requests per phase: {per_phase}")
    else:
        lines.append("- no request was spilled")
    kinds = sorted({record.kind for record in records})
    lines += ["", "## Where each kind of request went", "", "| kind | requests | local | cloud | failed |"]
    lines.append("| --- | --- | --- | --- | --- |")
    for kind in kinds:
        mine = [record for record in records if record.kind == kind]
        local = sum(1 for record in mine if record.ok and record.endpoint == local_endpoint)
        failed = sum(1 for record in mine if not record.ok)
        lines.append(f"| {kind} | {len(mine)} | {local} | {len(mine) - local - failed} | {failed} |")
    lines += ["", "![latency and routing share over time](demo.png)", ""]
    return "\n".join(lines)


def plot(
    records: Sequence[RequestRecord],
    timeline: Sequence[Sample],
    phases: Sequence[Phase],
    local_endpoint: str,
    cloud_endpoint: str,
    slo_seconds: float,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers or in CI
    import matplotlib.pyplot as plt

    fig, (latency_ax, share_ax) = plt.subplots(2, 1, figsize=(12, 8), sharex=True, height_ratios=(3, 2))
    colours = {local_endpoint: "#1f77b4", cloud_endpoint: "#ff7f0e"}

    for endpoint, colour in colours.items():
        mine = [record for record in records if record.ok and record.endpoint == endpoint]
        latency_ax.scatter(
            [r.at + r.seconds for r in mine],
            [r.seconds for r in mine],
            s=8,
            alpha=0.35,
            color=colour,
            label=f"{endpoint}: each request",
        )
        # NaN where Prometheus had no data (no traffic in the window): a gap, not a line across it.
        p95 = [sample.p95_seconds.get(endpoint, math.nan) for sample in timeline]
        latency_ax.plot([s.at for s in timeline], p95, color=colour, linewidth=2, label=f"{endpoint}: p95 (Prometheus)")
    failed = [record for record in records if not record.ok]
    if failed:
        latency_ax.scatter(
            [r.at + r.seconds for r in failed],
            [r.seconds for r in failed],
            marker="x",
            color="black",
            label="failed",
            s=20,
        )
    spilled = spills(records)
    if spilled:
        latency_ax.scatter(
            [r.at + r.seconds for r in spilled],
            [r.seconds for r in spilled],
            marker="^",
            s=14,
            facecolors="none",
            edgecolors="#2ca02c",
            label="spilled (saturation admission)",
        )
        latency_ax.axvline(spilled[0].at, color="#2ca02c", linewidth=1.2, label="first spill")
    latency_ax.axhline(slo_seconds, color="#d62728", linestyle="--", linewidth=1, label="p95 SLO")
    _shade_breaker(latency_ax, timeline, local_endpoint)
    latency_ax.set_ylabel("latency (s)")
    latency_ax.set_title(
        f"Latency per endpoint; shaded: {local_endpoint} breaker open (red) / half-open (amber)", pad=10
    )
    latency_ax.legend(loc="upper left", bbox_to_anchor=(0, 0.9), fontsize=8)
    latency_ax.grid(alpha=0.3)

    end = max([record.at + record.seconds for record in records] + [sample.at for sample in timeline] + [1.0])
    bins = [index * SHARE_BIN_SECONDS for index in range(int(end // SHARE_BIN_SECONDS) + 1)]
    local_share, cloud_share = [], []
    for start in bins:
        served = [r for r in records if r.ok and start <= r.at + r.seconds < start + SHARE_BIN_SECONDS]
        local = sum(1 for record in served if record.endpoint == local_endpoint)
        local_share.append(local / len(served) if served else 0.0)
        cloud_share.append((len(served) - local) / len(served) if served else 0.0)
    share_ax.bar(
        bins,
        local_share,
        width=SHARE_BIN_SECONDS,
        align="edge",
        color=colours[local_endpoint],
        label=f"share served by {local_endpoint}",
    )
    share_ax.bar(
        bins,
        cloud_share,
        width=SHARE_BIN_SECONDS,
        align="edge",
        bottom=local_share,
        color=colours[cloud_endpoint],
        label=f"share served by {cloud_endpoint}",
    )
    share_ax.set_ylim(0, 1)
    share_ax.set_ylabel("routing share")
    share_ax.set_xlabel("seconds since traffic start")
    clients_ax = share_ax.twinx()
    clients_ax.step(
        [s.at for s in timeline],
        [s.concurrency for s in timeline],
        where="post",
        color="black",
        linewidth=1.5,
        label="concurrent clients",
    )
    clients_ax.set_ylabel("concurrent clients")
    clients_ax.set_ylim(0, max([phase.concurrency for phase in phases] + [1]) * 1.15)
    handles, labels = share_ax.get_legend_handles_labels()
    more_handles, more_labels = clients_ax.get_legend_handles_labels()
    share_ax.legend(handles + more_handles, labels + more_labels, loc="upper left", fontsize=8)

    for name, start in phase_starts(timeline):
        for ax in (latency_ax, share_ax):
            ax.axvline(start, color="grey", linewidth=0.8, linestyle=":")
        latency_ax.text(start + 0.5, 0.97, name, transform=latency_ax.get_xaxis_transform(), fontsize=9, va="top")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _shade_breaker(ax: object, timeline: Sequence[Sample], endpoint: str) -> None:
    changes = breaker_changes(timeline, endpoint)
    ends = [at for at, _ in changes[1:]] + [timeline[-1].at if timeline else 0.0]
    for (start, state), end in zip(changes, ends, strict=True):
        colour = _STATE_COLOURS.get(state)
        if colour is not None:
            ax.axvspan(start, end, color=colour, alpha=0.15, linewidth=0)  # type: ignore[attr-defined]


def write_report(
    directory: Path,
    records: Sequence[RequestRecord],
    timeline: Sequence[Sample],
    phases: Sequence[Phase],
    local_endpoint: str,
    cloud_endpoint: str,
    slo_seconds: float,
    model_server: str,
) -> tuple[Path, Path]:
    """Write DIR/demo.png and DIR/report.md; return (report, png)."""
    png = directory / "demo.png"
    report = directory / "report.md"
    plot(records, timeline, phases, local_endpoint, cloud_endpoint, slo_seconds, png)
    report.write_text(
        markdown(records, timeline, phases, local_endpoint, cloud_endpoint, slo_seconds, model_server), encoding="utf-8"
    )
    return report, png
