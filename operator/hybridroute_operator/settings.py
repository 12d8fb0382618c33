"""Every kopf setting and operator knob, decided in one startup handler.

What kopf writes to our objects, and why it is acceptable to GitOps tools (which compare the fields
they applied, so additions under our own prefix are not drift):
- no finalizer: the reconciler daemons do not require one (handlers/__init__.py says why). The name
  stays configured as `hybridroute.io/finalizer` so that kopf removes the one older operators put on
  objects, the first time it sees them;
- no diff-base or progress annotations in practice (the operator has no on.create/on.update
  handlers, only level-based reconcilers), but both storages are pointed at the `hybridroute.io`
  prefix in annotations so that nothing ever lands in `spec` or in a `status.kopf` field the CRD
  schema would prune.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import kopf

from hybridroute_operator import webhook
from hybridroute_operator.apply import Cluster
from hybridroute_operator.compile import POLICY_LABEL
from hybridroute_operator.fleet import EndpointKey, FleetObservation
from hybridroute_operator.handlers import Doorbells, SecretUsers
from hybridroute_operator.probes import AllowList
from hybridroute_operator.render import ENDPOINT_LABEL, MANAGED_BY, MANAGED_BY_LABEL

if TYPE_CHECKING:
    from hybridroute_operator.handlers.secrets import SecretWatches

ANNOTATION_PREFIX = "hybridroute.io"


@dataclass(frozen=True)
class Tuning:
    """Operator knobs (not kopf's), read from the environment so a Deployment or a test can set them."""

    resync_seconds: float = 30.0
    """Level-based re-check of every object even without events (external probes; Secrets have a watch)."""
    probe_timeout_seconds: float = 3.0
    """Bound on one health probe of an external server."""
    error_backoff_seconds: float = 2.0
    """First delay after a failed reconcile; doubles up to resync_seconds."""
    prometheus_url: str | None = None
    """Where the routers' metrics are aggregated; enables p95/circuit in InferenceEndpoint status."""
    fleet_interval_seconds: float = 10.0
    """How often the fleet view (p95, circuit) is read from Prometheus."""
    probe_allow_list: AllowList = field(default_factory=AllowList)
    """Hosts and networks whose `spec.local.url` the operator may probe; empty: none (probes.py)."""

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Tuning:
        source = os.environ if environ is None else environ
        return cls(
            resync_seconds=float(source.get("HYBRIDROUTE_RESYNC_SECONDS", cls.resync_seconds)),
            probe_timeout_seconds=float(source.get("HYBRIDROUTE_PROBE_TIMEOUT_SECONDS", cls.probe_timeout_seconds)),
            error_backoff_seconds=float(source.get("HYBRIDROUTE_ERROR_BACKOFF_SECONDS", cls.error_backoff_seconds)),
            prometheus_url=source.get("HYBRIDROUTE_PROMETHEUS_URL") or None,
            fleet_interval_seconds=float(source.get("HYBRIDROUTE_FLEET_INTERVAL_SECONDS", cls.fleet_interval_seconds)),
            probe_allow_list=AllowList.parse(source.get("HYBRIDROUTE_PROBE_ALLOWED_HOSTS", "").split(",")),
        )


@dataclass
class OperatorState:
    """What every handler shares for one operator run, kept in kopf's memo (fresh per run)."""

    cluster: Cluster
    tuning: Tuning
    endpoint_doorbells: Doorbells = field(default_factory=Doorbells)
    policy_doorbells: Doorbells = field(default_factory=Doorbells)
    fleet: dict[EndpointKey, FleetObservation] = field(default_factory=dict)
    """Latest meaningful p95/circuit per endpoint from Prometheus (see handlers/fleet.py)."""
    fleet_task: asyncio.Task[None] | None = None
    secret_users: SecretUsers = field(default_factory=SecretUsers)
    """Which endpoint references which API-key Secret (handlers/secrets.py wakes them)."""
    secret_watches: SecretWatches | None = None


def state_of(memo: Any) -> OperatorState:
    state = memo.hybridroute
    if not isinstance(state, OperatorState):
        raise RuntimeError("operator state missing: the startup handler did not run")
    return state


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Watches: ask the server to close each watch after 5 minutes and give up on our side a bit
    # later, so a silently dropped connection (NAT, load balancer) costs minutes, not forever.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # API calls kopf makes itself (patches, events) must not hang a worker forever either.
    settings.networking.request_timeout = 60

    # Several replicas: kopf's peering elects one active instance; `--standalone` (the CLI flag)
    # turns this off for a single replica. Without the peering CRD kopf falls back to standalone
    # unless `--peering NAME` was given (then it is mandatory). Our name unless the CLI chose one.
    if settings.peering.name == "default":
        settings.peering.name = "hybridroute"
    # kopf pauses every instance while live peers share a priority, and a Deployment's replicas all
    # start with the same one: draw a random priority so exactly one replica is active.
    if not settings.peering.standalone and settings.peering.priority == 0:
        settings.peering.priority = secrets.randbelow(2**31) + 1

    # Children are watched (pool Deployments for readiness, policy ConfigMaps for hand edits) by
    # label on the server's side: kopf's handler filters alone would stream every Deployment and
    # ConfigMap in the cluster through the operator.
    settings.watching.label_selectors["apps", "v1", "deployments"] = f"{MANAGED_BY_LABEL}={MANAGED_BY},{ENDPOINT_LABEL}"
    settings.watching.label_selectors["", "v1", "configmaps"] = f"{MANAGED_BY_LABEL}={MANAGED_BY},{POLICY_LABEL}"

    # Kubernetes Events: only warnings and errors from the log become Events; the handlers post
    # the few normal Events that matter (compiled, recovered) explicitly.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "hybridroute-operator"
    settings.posting.event_name_prefix = "hybridroute-"

    # Persistence: see the module docstring.
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )

    memo.hybridroute = OperatorState(cluster=Cluster.connect(), tuning=Tuning.from_environment())
    # Sidecar injection: registered only when the chart enables the webhook (environment), because a
    # kopf run without a webhook server must not carry admission handlers.
    webhook.configure(settings, memo, webhook.WebhookSettings.from_environment(), memo.hybridroute.cluster)
