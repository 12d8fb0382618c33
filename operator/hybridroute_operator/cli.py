"""`hybridroute-operator`: run the kopf operator with our handlers, JSON logs by default.

A thin front for `kopf run -m hybridroute_operator.main`: it names the flags that matter for this
operator and hands them to kopf's own CLI in the same process, so kopf's behaviour (signals,
liveness endpoint, peering) is exactly kopf's.
"""

from __future__ import annotations

import os

import click
import kopf.cli

from hybridroute_operator.probes import AllowList

HANDLERS_MODULE = "hybridroute_operator.main"


def kopf_arguments(
    *,
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    standalone: bool,
    liveness: str | None,
    peering: str | None,
    priority: int | None,
    verbose: bool,
    debug: bool,
    log_format: str,
) -> list[str]:
    """The `kopf run` command line equivalent to our options."""
    arguments = ["run", "--module", HANDLERS_MODULE, "--log-format", log_format]
    for namespace in namespaces:
        arguments += ["--namespace", namespace]
    if all_namespaces:
        arguments.append("--all-namespaces")
    if standalone:
        arguments.append("--standalone")
    if liveness:
        arguments += ["--liveness", liveness]
    if peering:
        arguments += ["--peering", peering]
    if priority is not None:
        arguments += ["--priority", str(priority)]
    if verbose:
        arguments.append("--verbose")
    if debug:
        arguments.append("--debug")
    return arguments


@click.command(context_settings={"auto_envvar_prefix": "HYBRIDROUTE_OPERATOR"})
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Watch this namespace (repeatable; globs ok).")
@click.option("-A", "--all-namespaces", is_flag=True, help="Watch every namespace (needs cluster-wide RBAC).")
@click.option("--standalone", is_flag=True, help="Single replica: no peering with other operator replicas.")
@click.option("-L", "--liveness", metavar="URL", help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz.")
@click.option("-P", "--peering", metavar="NAME", help="Peering object name for several replicas (default hybridroute).")
@click.option("-p", "--priority", type=int, help="Peering priority of this replica (highest is active).")
@click.option(
    "--prometheus-url",
    metavar="URL",
    help="Prometheus aggregating the routers' metrics: fills p95 and circuit in InferenceEndpoint status.",
)
@click.option(
    "--probe-allowed-hosts",
    metavar="LIST",
    help="Comma-separated CIDRs and host names (*.suffix ok) whose spec.local.url the operator may probe; "
    "default none (such endpoints report ProbeNotAllowed).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@click.option("-d", "--debug", is_flag=True, help="Log everything, kopf internals included.")
@click.option(
    "--log-format",
    type=click.Choice(["json", "full", "plain"]),
    default="json",
    show_default=True,
    help="Log line format.",
)
def main(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    standalone: bool,
    liveness: str | None,
    peering: str | None,
    priority: int | None,
    verbose: bool,
    debug: bool,
    log_format: str,
    prometheus_url: str | None,
    probe_allowed_hosts: str | None,
) -> None:
    """Run the hybridroute operator (InferenceEndpoints and RoutingPolicies)."""
    arguments = kopf_arguments(
        namespaces=namespaces,
        all_namespaces=all_namespaces,
        standalone=standalone,
        liveness=liveness,
        peering=peering,
        priority=priority,
        verbose=verbose,
        debug=debug,
        log_format=log_format,
    )
    # read by settings.Tuning in the same process (kopf owns the rest of the command line)
    if prometheus_url:
        os.environ["HYBRIDROUTE_PROMETHEUS_URL"] = prometheus_url
    if probe_allowed_hosts is not None:
        try:
            AllowList.parse(probe_allowed_hosts.split(","))  # a malformed entry fails here, naming it
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--probe-allowed-hosts") from None
        os.environ["HYBRIDROUTE_PROBE_ALLOWED_HOSTS"] = probe_allowed_hosts
    kopf.cli.main(args=arguments, prog_name="hybridroute-operator")


if __name__ == "__main__":
    main()
