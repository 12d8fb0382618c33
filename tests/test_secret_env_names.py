"""Secret references reach the router under one environment variable each (issue 11, item 5).

`llm-keys/openai` and `llm.keys/openai` used to become the same variable, and so did
`providers/OPENAI_KEY` and `providers/openai-key`: one provider's key could be sent to another.
The cluster test runs the whole chain on the real API server: the operator compiles a policy naming
four cloud endpoints with those references, the injector builds the router container from the
published ConfigMap, the variables are filled from the real Secrets the way the kubelet would, and
the router's own key resolution must give every endpoint its own key.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client

from hybridroute_operator.api import ENDPOINT_PLURAL, POLICY_PLURAL, Reason
from hybridroute_operator.compile import CompileError, check_secret_env_names
from hybridroute_operator.injection import InjectionSettings, router_container, secret_refs
from hybridroute_router.config import CONFIGMAP_KEY, SecretKeyRef, parse_config, secret_env_name
from hybridroute_router.secrets import resolve_api_key
from tests.fixtures.operator import Kube, eventually

COLLIDING = [
    SecretKeyRef(name="llm-keys", key="openai"),
    SecretKeyRef(name="llm.keys", key="openai"),
    SecretKeyRef(name="providers", key="OPENAI_KEY"),
    SecretKeyRef(name="providers", key="openai-key"),
]
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def legacy_env_name(ref: SecretKeyRef) -> str:
    """The mapping before issue 11 (not injective), to show the compile-time check refuses a clash."""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"HYBRIDROUTE_SECRET_{ref.name}_{ref.key}").upper()


def test_the_reported_collisions_get_distinct_names() -> None:
    names = [secret_env_name(ref) for ref in COLLIDING]
    assert len(set(names)) == len(COLLIDING)
    assert all(ENV_NAME.match(name) for name in names)
    assert names[0].startswith("HYBRIDROUTE_SECRET_LLM_KEYS_OPENAI_")


secret_names = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,20}[a-z0-9])?", fullmatch=True)
secret_keys = st.from_regex(r"[-._a-zA-Z0-9]{1,20}", fullmatch=True)
refs = st.builds(SecretKeyRef, name=secret_names, key=secret_keys)


@given(st.lists(refs, min_size=2, max_size=8, unique=True))
def test_distinct_references_never_share_a_name(references: list[SecretKeyRef]) -> None:
    assert len({secret_env_name(ref) for ref in references}) == len(references)
    check_secret_env_names(references)  # nothing to refuse


def folded_spellings(ref: SecretKeyRef) -> st.SearchStrategy[SecretKeyRef]:
    """References whose readable part folds to `ref`'s: separators swapped (- . _), key case changed."""
    separators = st.sampled_from("-._")

    def respell(text: str, seps: list[str], upper: bool) -> str:
        out = "".join(seps[i % len(seps)] if ch in "-._" else ch for i, ch in enumerate(text))
        return out.upper() if upper else out

    return st.builds(
        lambda name_seps, key_seps, upper: SecretKeyRef(
            name=respell(ref.name, name_seps, upper=False).replace("_", "-"),
            key=respell(ref.key, key_seps, upper),
        ),
        st.lists(separators.filter(lambda sep: sep != "_"), min_size=1, max_size=4),
        st.lists(separators, min_size=1, max_size=4),
        st.booleans(),
    )


@given(refs.flatmap(lambda ref: st.tuples(st.just(ref), folded_spellings(ref))))
def test_spellings_that_fold_together_still_get_their_own_variable(pair: tuple[SecretKeyRef, SecretKeyRef]) -> None:
    ref, other = pair
    if ref != other:
        assert secret_env_name(ref) != secret_env_name(other)
        assert legacy_env_name(ref) == legacy_env_name(other), "the pair folds together in the readable part"


def test_the_compiler_refuses_references_that_would_share_a_variable() -> None:
    with pytest.raises(CompileError) as refused:
        check_secret_env_names(COLLIDING[:2], env_name=legacy_env_name)
    assert refused.value.reason == Reason.COMPILE_FAILED
    assert "llm-keys/openai and llm.keys/openai" in refused.value.message
    check_secret_env_names([COLLIDING[0], COLLIDING[0]], env_name=legacy_env_name)  # one ref twice is fine


@pytest.mark.cluster
def test_every_endpoint_gets_its_own_key_through_operator_injector_and_router(
    kube: Kube, running_operator: Path
) -> None:
    values = {
        ("llm-keys", "openai"): "sk-team-a-0001",
        ("llm.keys", "openai"): "sk-team-b-0002",
        ("providers", "OPENAI_KEY"): "sk-openai-0003",
        ("providers", "openai-key"): "sk-compatible-0004",
    }
    for secret in ("llm-keys", "llm.keys", "providers"):
        data = {key: value for (name, key), value in values.items() if name == secret}
        kube.core.create_namespaced_secret(
            kube.namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=secret), string_data=data)
        )
    endpoints = []
    for index, ref in enumerate(COLLIDING):
        name = f"cloud-{index}"
        endpoints.append({"name": name})
        kube.create(
            ENDPOINT_PLURAL,
            name,
            {
                "type": "cloud",
                "cloud": {
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "apiKeySecretRef": {"name": ref.name, "key": ref.key},
                },
            },
        )
    kube.create(POLICY_PLURAL, "default", {"endpoints": endpoints})

    def compiled_with_every_endpoint_available() -> str | None:
        config_map = kube.config_map("default")
        document = (config_map.data or {}).get(CONFIGMAP_KEY) if config_map else None
        if document is None:
            return None
        config = parse_config(document)
        return document if all(endpoint.available for endpoint in config.endpoints) else None

    config = parse_config(eventually(compiled_with_every_endpoint_available, "the compiled config"))
    assert kube.condition_is(POLICY_PLURAL, "default", "Ready", "True", "Compiled")

    # The router container the webhook would inject, its variables filled as the kubelet does.
    container = router_container(secret_refs(config), InjectionSettings(image="router:test"))
    environment = {}
    for variable in container["env"]:
        selector = variable["valueFrom"]["secretKeyRef"]
        secret = kube.core.read_namespaced_secret(selector["name"], kube.namespace)
        environment[variable["name"]] = base64.b64decode(secret.data[selector["key"]]).decode()
    assert len(environment) == len(COLLIDING)

    resolved = {endpoint.name: resolve_api_key(endpoint.api_key, environment) for endpoint in config.endpoints}
    expected = {f"cloud-{index}": values[(ref.name, ref.key)] for index, ref in enumerate(COLLIDING)}
    assert resolved == expected
