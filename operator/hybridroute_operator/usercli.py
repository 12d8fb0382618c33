"""The `hybridroute` command for users: one click group, one subcommand per job."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
import orjson

from hybridroute_operator.validate import validate_paths
from hybridroute_router.auditquery import AuditSummary, read_paths, summarize

AUDIT_VIOLATION, AUDIT_NO_EVIDENCE = 1, 3
"""`hybridroute audit` exit codes besides 0 (2 is click's usage error)."""


def _instant(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A point in time: ISO 8601 (`2026-12-01T00:00:00Z`; no offset means UTC) or Unix seconds."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither ISO 8601 nor Unix seconds") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def hybridroute() -> None:
    """hybridroute: route LLM traffic between local GPU model servers and cloud APIs."""


@hybridroute.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def validate(paths: tuple[Path, ...]) -> None:
    """Check InferenceEndpoint and RoutingPolicy manifests offline.

    PATHS are files or directories (searched for *.yaml, *.yml, *.json); multi-document YAML is fine and
    other kinds are skipped. Each problem prints as `file:docIndex: kind/name: field.path: message`
    (docIndex counts documents from 0). Exits 1 if any manifest is invalid.
    """
    report = validate_paths(paths)
    for problem in report.problems:
        click.echo(str(problem))
    verdict = f"{len(report.problems)} problem(s)" if report.problems else "all valid"
    click.echo(f"checked {report.checked} manifest(s) in {report.files} file(s): {verdict}", err=True)
    if not report.ok:
        raise SystemExit(1)


def _iso(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _print_summary(summary: AuditSummary) -> None:
    click.echo(f"records: {summary.records} ({_iso(summary.first_ts)} .. {_iso(summary.last_ts)})")
    click.echo(
        f"private requests: {summary.private} (served: {summary.private_served}, refused: {summary.private_refused})"
    )
    click.echo(f"private requests that reached a cloud endpoint: {len(summary.violations)}")
    click.echo(f"public requests: {summary.public} (served by a cloud endpoint: {summary.public_cloud})")
    for violation in summary.violations:
        click.echo(
            f"VIOLATION {_iso(violation.ts)} {violation.namespace}/{violation.pod} policy {violation.policy}: "
            f"sent to {', '.join(violation.cloud_endpoints)}"
        )
    if summary.unreadable:
        click.echo(f"unreadable lines (not audit records): {summary.unreadable}", err=True)
    for path in summary.unreadable_files:
        click.echo(f"unreadable file: {path}", err=True)


@hybridroute.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--since", callback=_instant, help="First instant counted (ISO 8601 or Unix seconds; UTC if no offset).")
@click.option("--until", callback=_instant, help="End of the period, exclusive.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
def audit(paths: tuple[Path, ...], since: float | None, until: float | None, as_json: bool) -> None:
    """Did any private request reach a cloud endpoint in a period? Answered from router audit records.

    PATHS are audit files (the router's `--audit-file`, and its rotations `<file>.1`, ...) or
    directories holding them. From a pod: `kubectl cp -c hybridroute-router
    NS/POD:/var/lib/hybridroute/audit ./audit-POD`, or `kubectl exec -n NS POD -c hybridroute-router --
    cat /var/lib/hybridroute/audit/audit.jsonl > POD.jsonl`.

    Exit codes: 0 no private request reached a cloud endpoint; 1 at least one did (each is listed);
    3 nothing to judge: no record in the period, or a file or line that could not be read.
    """
    if since is not None and until is not None and until <= since:
        raise click.BadParameter("--until must be later than --since", param_hint="--until")
    summary = AuditSummary()
    summarize(read_paths(paths, summary), since, until, summary)
    if as_json:
        click.echo(orjson.dumps(summary.as_dict()).decode())
    else:
        _print_summary(summary)
    if summary.violations:
        raise SystemExit(AUDIT_VIOLATION)
    if summary.records == 0 or summary.unreadable or summary.unreadable_files:
        if summary.records == 0:
            click.echo("no audit records in the period: nothing to vouch for", err=True)
        raise SystemExit(AUDIT_NO_EVIDENCE)


def main() -> None:
    """Console-script entry point."""
    hybridroute(prog_name="hybridroute")
