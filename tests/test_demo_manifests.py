"""e2e/demo_manifests.py's pod-shape objects: pure checks against the operator's own models and the webhook's label."""

from __future__ import annotations

from e2e import demo_manifests as manifests
from e2e import modelserver
from hybridroute_operator.api import InferenceEndpointSpec
from hybridroute_operator.injection import POLICY_LABEL


def test_managed_pool_is_a_valid_llamacpp_endpoint_with_the_demo_model_and_threads() -> None:
    endpoint = manifests.managed_llamacpp_endpoint("local-gemma", "localhost/llamacpp:abc", "gemma-3-270m", 16, 2)

    spec = InferenceEndpointSpec.model_validate(endpoint["spec"])

    assert spec.local is not None
    assert (spec.local.server, spec.local.image, spec.local.extra_args) == (
        "llamacpp",
        "localhost/llamacpp:abc",
        ["--threads", "2"],
    )
    # The long-context requests must not fit, as with the host-process model server.
    assert spec.local.max_context_tokens == modelserver.GEMMA_CONTEXT_TOKENS


def test_simulator_pod_runs_the_same_simulator_as_the_host_process_and_listens_where_its_probe_looks() -> None:
    pod = manifests.simulator_pod(manifests.CLOUD_SIMULATOR, "localhost/simulator:abc")

    [container] = pod["spec"]["containers"]
    host_argv = modelserver.simulator_argv(manifests.CLOUD_SIMULATOR, manifests.SIMULATOR_PORT)
    assert host_argv[-len(container["args"]) :] == container["args"]
    assert container["readinessProbe"]["tcpSocket"]["port"] == manifests.SIMULATOR_PORT
    service = manifests.service(manifests.CLOUD_ENDPOINT, manifests.SIMULATOR_PORT)
    assert service["spec"]["selector"] == pod["metadata"]["labels"]


def test_app_pod_is_labelled_for_injection_and_maps_service_names_without_dns() -> None:
    pod = manifests.app_pod("localhost/app:abc", {"local-gemma.hybridroute-demo.svc": "10.0.128.7"})

    assert pod["metadata"]["labels"] == {POLICY_LABEL: manifests.POLICY_NAME}
    assert pod["spec"]["hostAliases"] == [{"ip": "10.0.128.7", "hostnames": ["local-gemma.hybridroute-demo.svc"]}]
    [container] = pod["spec"]["containers"]
    assert {"name": "OPENAI_API_KEY", "value": manifests.APP_OWN_KEY} in container["env"]
