"""The `hybridroute` command for users: one click group, one subcommand per job."""

from __future__ import annotations

from pathlib import Path

import click

from hybridroute_operator.validate import validate_paths


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


def main() -> None:
    """Console-script entry point."""
    hybridroute(prog_name="hybridroute")
