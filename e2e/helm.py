"""Helm for the local cluster: the binary built from the Go module proxy, run with isolated state, and
`helm install` of charts/hybridroute with the images built here (e2e/images.py).

The real-node tests and `make demo` install the chart the same way: two operator replicas from the
operator image, the router image as the injected sidecar, and the operator's probes allowed into the
cluster's Service range (the model servers are reached by ClusterIP or Service name).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2e import images, toolchain
from e2e.localcluster import KubectlError, LocalCluster

CHART = Path(__file__).resolve().parent.parent / "charts" / "hybridroute"
RELEASE = "hr"


class HelmError(AssertionError):
    """`helm` failed; the message carries its stderr. An AssertionError so a test reports it as a failed check."""


@dataclass(frozen=True)
class Helm:
    """Runs the helm binary with its cache, config and data directories under `home`."""

    binary: Path
    home: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `helm ARGS`; with check, a failure raises HelmError carrying helm's stderr."""
        proc = subprocess.run([str(self.binary), *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise HelmError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def template(
        self,
        values_files: Iterable[Path] = (),
        set_values: Mapping[str, str] | None = None,
        *,
        release: str = RELEASE,
        namespace: str = "hybridroute-system",
        extra: Iterable[str] = (),
    ) -> list[dict[str, Any]]:
        """Render the chart offline and return its documents (empty ones dropped)."""
        args = self.template_args(values_files, set_values, release=release, namespace=namespace)
        rendered = self.run(*args, *extra).stdout
        return [doc for doc in yaml.safe_load_all(rendered) if doc]

    def template_args(
        self,
        values_files: Iterable[Path] = (),
        set_values: Mapping[str, str] | None = None,
        *,
        release: str = RELEASE,
        namespace: str = "hybridroute-system",
    ) -> list[str]:
        args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", kube_version()]
        for path in values_files:
            args += ["--values", str(path)]
        for key, value in (set_values or {}).items():
            args += ["--set", f"{key}={value}"]
        return args


def kube_version() -> str:
    """The Kubernetes version the local control plane runs, without the leading v."""
    return toolchain.KUBERNETES_VERSION.removeprefix("v")


def helm_binary() -> Path:
    """The helm binary, built once from helm.sh/helm/v3 at the pinned version (ToolchainError if it cannot be)."""
    return toolchain.build(toolchain.HELM) / "helm"


def helm_cluster_args(cluster: LocalCluster, namespace: str) -> list[str]:
    return ["--kubeconfig", str(cluster.kubeconfig), "--namespace", namespace]


def adopt_existing(cluster: LocalCluster, namespace: str, *names: str) -> None:
    """Let Helm adopt CRDs that were applied without Helm (earlier tests, a host-process demo)."""
    for name in names:
        try:
            cluster.kubectl("get", "crd", name)
        except KubectlError:
            continue
        cluster.kubectl("label", "--overwrite", "crd", name, "app.kubernetes.io/managed-by=Helm")
        cluster.kubectl(
            "annotate",
            "--overwrite",
            "crd",
            name,
            f"meta.helm.sh/release-name={RELEASE}",
            f"meta.helm.sh/release-namespace={namespace}",
        )


def _repository_and_tag(image: images.Image) -> tuple[str, str]:
    repository, tag = image.ref.rsplit(":", 1)
    return repository, tag


def install_chart(
    helm: Helm,
    cluster: LocalCluster,
    namespace: str,
    built: Mapping[str, images.Image],
    values: Mapping[str, str] | None = None,
) -> None:
    """`helm install` with the operator and router images built here, plus `values` (`--set` pairs);
    `--wait` returns once its Deployment is available."""
    operator_repository, operator_tag = _repository_and_tag(built["operator"])
    router_repository, router_tag = _repository_and_tag(built["router"])
    adopt_existing(cluster, namespace, "inferenceendpoints.hybridroute.io", "routingpolicies.hybridroute.io")
    network = cluster.network
    assert network is not None, "the cluster runs a real node"
    helm.run(
        "install",
        RELEASE,
        str(CHART),
        *helm_cluster_args(cluster, namespace),
        "--set",
        f"image.repository={operator_repository}",
        "--set",
        f"image.tag={operator_tag}",
        "--set",
        f"injection.image.repository={router_repository}",
        "--set",
        f"injection.image.tag={router_tag}",
        # The operator probes only allow-listed hosts (none by default); the model servers here are
        # reached by ClusterIP, as a platform team would allow its own Service range.
        "--set",
        f"probes.allowedHosts={{{network.service_cidr}}}",
        *(argument for key, value in (values or {}).items() for argument in ("--set", f"{key}={value}")),
        "--wait",
        "--timeout=240s",
        timeout=300,
    )


def uninstall_chart(helm: Helm, cluster: LocalCluster, namespace: str) -> None:
    helm.run("uninstall", RELEASE, *helm_cluster_args(cluster, namespace), "--wait", timeout=180)
