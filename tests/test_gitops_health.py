"""The Argo CD health checks in docs/gitops.md, run on objects the real operator wrote (issue 11, item 8).

The Lua is read from the document itself and run in Lua 5.1 (`lupa.lua51`): Argo CD evaluates health
scripts with gopher-lua, a Lua 5.1 implementation, so 5.1 semantics are the faithful ones (Debian's
`lua5.4` would accept 5.4-only syntax Argo CD rejects). lupa embeds the interpreter, so the test
needs a wheel, not a system package, and hands the object over as Lua tables the way Argo CD does
(JSON objects and arrays to tables). The objects come from the API server with the operator running.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from e2e.upstream_sim import UpstreamSim
from hybridroute_operator.api import ENDPOINT_PLURAL, POLICY_PLURAL
from tests.fixtures.operator import Kube, eventually

GITOPS = Path(__file__).resolve().parents[1] / "docs" / "gitops.md"
HEALTH_KEY = "resource.customizations.health.hybridroute.io_{kind}"


def health_scripts() -> dict[str, str]:
    """{kind: Lua} from the argocd-cm example in docs/gitops.md."""
    for block in re.findall(r"```yaml\n(.*?)```", GITOPS.read_text(), flags=re.S):
        document = yaml.safe_load(block)
        if isinstance(document, dict) and (document.get("metadata") or {}).get("name") == "argocd-cm":
            data = document["data"]
            return {kind: data[HEALTH_KEY.format(kind=kind)] for kind in ("InferenceEndpoint", "RoutingPolicy")}
    raise AssertionError("docs/gitops.md has no argocd-cm example")


class ArgoHealth:
    """Runs a health script the way Argo CD does: `obj` in scope, returns {status, message}."""

    def __init__(self, script: str) -> None:
        self.runtime = lua51.LuaRuntime()
        self.check = self.runtime.eval(f"function(obj)\n{script}\nend")

    def __call__(self, obj: dict[str, Any]) -> tuple[str, str]:
        result = self.check(self.runtime.table_from(obj, recursive=True))
        return str(result["status"]), str(result["message"])


def test_the_scripts_are_lua_5_1_and_handle_an_object_without_status() -> None:
    for kind, script in health_scripts().items():
        status, _ = ArgoHealth(script)({"apiVersion": "hybridroute.io/v1alpha1", "kind": kind, "metadata": {}})
        assert status == "Progressing"


@pytest.mark.cluster
def test_health_of_real_objects_matches_what_ready_means(
    kube: Kube, running_operator: Path, upstream_sim: Callable[..., UpstreamSim]
) -> None:
    scripts = health_scripts()
    endpoint_health = ArgoHealth(scripts["InferenceEndpoint"])
    policy_health = ArgoHealth(scripts["RoutingPolicy"])

    sim = upstream_sim("workstation")
    kube.create(ENDPOINT_PLURAL, "workstation", {"type": "local", "local": {"url": sim.base_url, "model": "m"}})
    kube.create(ENDPOINT_PLURAL, "gone", {"type": "local", "local": {"url": "http://127.0.0.1:9/v1", "model": "m"}})
    policies = {
        "healthy": ["workstation"],
        "partial": ["workstation", "gone"],
        "typo": ["workstation", "wrokstation"],
        "starting": ["gone"],
    }
    for name, endpoints in policies.items():
        kube.create(POLICY_PLURAL, name, {"endpoints": [{"name": endpoint} for endpoint in endpoints]})

    def observed(plural: str, name: str, condition: str, status: str, reason: str) -> dict[str, Any]:
        def settled() -> dict[str, Any] | None:
            found = kube.get(plural, name) or {}
            current = found.get("status") or {}
            fresh = current.get("observedGeneration") == found["metadata"]["generation"]
            return found if fresh and kube.condition_is(plural, name, condition, status, reason) else None

        return eventually(settled, f"{plural}/{name} {condition}={status} ({reason})")

    workstation = observed(ENDPOINT_PLURAL, "workstation", "Ready", "True", "EndpointReachable")
    gone = observed(ENDPOINT_PLURAL, "gone", "Ready", "False", "EndpointUnreachable")
    assert endpoint_health(workstation)[0] == "Healthy"
    assert endpoint_health(gone)[0] == "Degraded"

    healthy = observed(POLICY_PLURAL, "healthy", "ResolvedRefs", "True", "EndpointsResolved")
    assert policy_health(healthy)[0] == "Healthy"

    partial = observed(POLICY_PLURAL, "partial", "ResolvedRefs", "False", "EndpointsNotReady")
    assert kube.condition_is(POLICY_PLURAL, "partial", "Ready", "True", "Compiled")
    status, message = policy_health(partial)
    assert status == "Healthy"
    assert "gone" in message

    typo = observed(POLICY_PLURAL, "typo", "Ready", "False", "EndpointsMissing")
    status, message = policy_health(typo)
    assert status == "Degraded"
    assert "EndpointsMissing" in message
    assert "wrokstation" in message

    starting = observed(POLICY_PLURAL, "starting", "Ready", "False", "NoEndpointsReady")
    assert policy_health(starting)[0] == "Progressing"

    # A change the operator has not observed yet is Progressing, whatever the last conditions say.
    stale = {**healthy, "metadata": {**healthy["metadata"], "generation": healthy["metadata"]["generation"] + 1}}
    assert policy_health(stale)[0] == "Progressing"
