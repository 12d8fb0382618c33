"""A real local Kubernetes cluster: etcd, kube-apiserver, kube-controller-manager and a real node.

    python e2e/localcluster.py start  --dir DIR [--port N] [--no-node]  # returns once pods can run
    python e2e/localcluster.py status --dir DIR
    python e2e/localcluster.py stop   --dir DIR              # returns once nothing is left behind

The binaries are built once from the Go module proxy at pinned versions (e2e/toolchain.py) and cached.
The story of `start`:

1. the node's network (e2e/podnet.py): a network namespace and a veth link whose host end the API
   server binds to, so the node and its pods reach it as they would in any cluster;
2. a throwaway PKI (CA, serving and client certificates, the service-account signing key);
3. etcd (plain HTTP on loopback), kube-apiserver (TLS client auth, Node,RBAC authorization) and
   kube-controller-manager, detached, logs in DIR/logs/, pids in DIR/; DIR/kubeconfig is
   cluster-admin (group system:masters); it waits for /readyz and the `default` service account;
4. the node (e2e/node.py): containerd, kubelet, kube-proxy and kube-scheduler; it waits until the
   node is Ready without its not-ready taint and advertises one `nvidia.com/gpu`.

`stop` undoes all of it: every process, mount, cgroup, network namespace, interface and iptables
rule. `--no-node` starts the control plane alone on loopback, for callers that need only the API.
e2e/standin_kubelet.py remains for nodes that cannot exist here (a GPU of a given product) and says why.
Tests use the same code through `LocalCluster` (tests/fixtures/cluster.py).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

if not __package__:
    # Run as `python e2e/localcluster.py`: make the repository root importable so `e2e.*` resolves.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml
from kubernetes import client as k8s_client

from e2e import node as node_module
from e2e import pki, podnet, processes, sandboximage, standin_kubelet, toolchain

# Stopped in reverse: the controller-manager first, etcd last, so nobody loses its backend mid-write.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
# Without a node (`--no-node`), Services get addresses from here; with one, from the node's network.
SERVICE_CIDR = "10.0.0.0/24"
# The first address of SERVICE_CIDR: the `kubernetes` Service's ClusterIP, which the serving cert covers.
_KUBERNETES_SERVICE_IP = "10.0.0.1"
_LOOPBACK = "127.0.0.1"
_ADMIN_USER = "hybridroute-admin"
# Without a real node nothing renews a node's heartbeat, so the controllers that expect one are off:
# they would mark the stand-in node unreachable and evict its pods. A real node needs them on: they
# lift the not-ready taint its Ready kubelet earns.
_CONTROLLERS_WITHOUT_NODE = "*,-node-lifecycle-controller,-taint-eviction-controller,-device-taint-eviction-controller"
_CONTROLLERS_WITH_NODE = "*"
# What the real node advertises that it cannot have: a GPU, so GPU-requesting pools schedule.
NODE_EXTENDED_RESOURCES = {"nvidia.com/gpu": "1"}
_DEFAULT_FAKE_NODE = "standin-gpu-node"


class LocalClusterError(RuntimeError):
    """The control plane did not come up or a command against it failed; the message says why."""


class KubectlError(LocalClusterError):
    """kubectl exited non-zero; the message carries its stderr, the attributes its whole result."""

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(f"kubectl {' '.join(args)} failed ({returncode}): {stderr.strip()}")
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def _log(message: str) -> None:
    print(f"[localcluster] {message}", file=sys.stderr, flush=True)


def close_api_client(api: k8s_client.ApiClient) -> None:
    """Close the client's thread pool and its pooled connections (ApiClient.close leaves the sockets)."""
    api.close()  # type: ignore[no-untyped-call]  # the generated client leaves close() unannotated
    api.rest_client.pool_manager.clear()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _certificate_credentials(pair: pki.KeyPair) -> dict[str, str]:
    return {"client-certificate-data": _b64(pair.cert_pem), "client-key-data": _b64(pair.key_pem)}


def _write_kubeconfig(path: Path, server: str, ca_pem: bytes, user: str, credentials: Mapping[str, str]) -> None:
    """A single-context kubeconfig with everything embedded, so the file can be copied alone."""
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "hybridroute-local", "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}
        ],
        "users": [{"name": user, "user": dict(credentials)}],
        "contexts": [{"name": "hybridroute-local", "context": {"cluster": "hybridroute-local", "user": user}}],
        "current-context": "hybridroute-local",
    }
    path.write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
    path.chmod(0o600)


def _write_pair(directory: Path, stem: str, pair: pki.KeyPair, public_suffix: str = ".crt") -> tuple[Path, Path]:
    key, cert = directory / f"{stem}.key", directory / f"{stem}{public_suffix}"
    key.write_bytes(pair.key_pem)
    key.chmod(0o600)
    cert.write_bytes(pair.cert_pem)
    return key, cert


class LocalCluster:
    """One local cluster rooted at `directory` (state, PKI, etcd data, node, logs, kubeconfig)."""

    def __init__(self, directory: Path | str, with_node: bool = True) -> None:
        self.dir = Path(directory).resolve()
        self.with_node = with_node
        self.kubeconfig = self.dir / "kubeconfig"
        self._state_file = self.dir / "cluster.json"
        self._fake_node: str | None = None
        # Seconds spent making the binaries available and bringing the daemons up, set by start().
        self.timings: dict[str, float] = {}

    # -- state ---------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        if not self._state_file.is_file():
            raise LocalClusterError(f"no local cluster in {self.dir}: run `e2e/localcluster.py start --dir {self.dir}`")
        state: dict[str, Any] = json.loads(self._state_file.read_text())
        return state

    @property
    def server(self) -> str:
        """The API server URL, https://127.0.0.1:PORT."""
        return str(self._state()["server"])

    def _bin(self, name: str) -> Path:
        return Path(self._state()["bin"][name])

    @property
    def network(self) -> podnet.NodeNetwork | None:
        """The node's network (addresses, namespace), or None for a cluster without a node."""
        recorded = self._state().get("network")
        return podnet.NodeNetwork(**recorded) if recorded else None

    @property
    def node(self) -> node_module.Node | None:
        """The real node (containerd, kubelet, kube-proxy, scheduler), or None without one."""
        network = self.network
        return node_module.Node(self.dir, network) if network else None

    def _components(self) -> tuple[str, ...]:
        with_node = self._state_file.is_file() and bool(self._state().get("network"))
        return COMPONENTS + (node_module.COMPONENTS if with_node else ())

    def pids(self) -> dict[str, int | None]:
        """Each component's pid, or None where it is not running."""
        return {name: processes.running_pid(self.dir, name) for name in self._components()}

    def is_running(self) -> bool:
        return all(pid is not None for pid in self.pids().values())

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self, port: int | None = None, timeout: float = 180.0) -> LocalCluster:
        """Build or reuse the binaries, start the daemons and return once the API is usable."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._state_file.is_file() and self.is_running():
            _log(f"already running at {self.server} (kubeconfig {self.kubeconfig})")
            return self
        self.stop()  # leftovers of a half-started or crashed cluster
        began = time.monotonic()
        bins = self._ensure_binaries()
        self.timings["toolchain_s"] = time.monotonic() - began
        began = time.monotonic()
        ports = {
            "etcd": processes.free_port(),
            "etcd-peer": processes.free_port(),
            "api": port or processes.free_port(),
        }
        state: dict[str, Any] = {"ports": ports, "bin": bins, "network": None}
        self._state_file.write_text(json.dumps(state))  # from here on, stop() knows what to undo
        try:
            network = podnet.create(self.dir) if self.with_node else None
            api_address = network.host_ip if network else _LOOPBACK
            state.update(
                server=f"https://{api_address}:{ports['api']}", network=network and dataclasses.asdict(network)
            )
            self._state_file.write_text(json.dumps(state, indent=2))
            paths = self._write_pki(self.server, network)
            self._start_etcd(ports)
            self._wait(lambda: self._etcd_healthy(ports["etcd"]), "etcd", timeout)
            self._start_apiserver(ports, paths, network)
            self._wait(lambda: self._api_get("/readyz") is not None, "kube-apiserver /readyz", timeout)
            self._start_controller_manager(paths)
            self._wait(
                lambda: self._api_get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
                "kube-controller-manager (the default service account)",
                timeout,
            )
            self.timings["control_plane_s"] = time.monotonic() - began
            if network:
                self._start_node(bins, paths, network, timeout)
                self.timings["node_s"] = time.monotonic() - began - self.timings["control_plane_s"]
        except BaseException:
            self.stop()
            raise
        self.timings["start_s"] = time.monotonic() - began
        _log(
            f"cluster ready at {self.server} in {self.timings['start_s']:.1f} s "
            f"(control plane {self.timings['control_plane_s']:.1f} s, node {self.timings.get('node_s', 0):.1f} s, "
            f"binaries ready in {self.timings['toolchain_s']:.1f} s); kubeconfig: {self.kubeconfig}"
        )
        return self

    def _start_node(
        self, bins: Mapping[str, str], paths: Mapping[str, Path], network: podnet.NodeNetwork, timeout: float
    ) -> None:
        node = node_module.Node(self.dir, network)
        credentials = node_module.NodeCredentials(
            ca_cert=paths["ca.crt"],
            kubelet_kubeconfig=paths["kubelet.kubeconfig"],
            kubelet_serving_cert=paths["kubelet-serving.crt"],
            kubelet_serving_key=paths["kubelet-serving.key"],
            scheduler_kubeconfig=paths["scheduler.kubeconfig"],
            proxy_kubeconfig=paths["proxy.kubeconfig"],
        )
        began = time.monotonic()
        node.start(bins, credentials, timeout)
        self.timings["node_processes_s"] = time.monotonic() - began
        with self.api() as api:
            node.wait_ready(api, timeout)
            self.timings["node_ready_s"] = time.monotonic() - began
            node.advertise(api, NODE_EXTENDED_RESOURCES, timeout)
        _log(
            f"node {node_module.NODE_NAME}: containerd, kubelet, kube-proxy and scheduler started in "
            f"{self.timings['node_processes_s']:.1f} s, Ready and untainted after "
            f"{self.timings['node_ready_s']:.1f} s, "
            f"{NODE_EXTENDED_RESOURCES} allocatable after {time.monotonic() - began:.1f} s"
        )

    def stop(self) -> None:
        """Stop the node and the control plane; return only once nothing of them is left."""
        network = podnet.NodeNetwork(**self._state()["network"]) if self._has_network_state() else None
        name = network.name if network else f"hr-{podnet.cluster_id(self.dir)}"
        if network:
            node_module.Node(self.dir, network).stop()
        for component in reversed(COMPONENTS):
            processes.stop(self.dir, component)
        podnet.delete(name)
        left = [f"{component} ({pid})" for component, pid in self.pids().items() if pid is not None]
        if network:
            left += node_module.Node(self.dir, network).leftovers()
        left += podnet.leftovers(name)
        if left:
            raise LocalClusterError(f"still there after stop: {left}")

    def _has_network_state(self) -> bool:
        return self._state_file.is_file() and bool(self._state().get("network"))

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _ensure_binaries(self) -> dict[str, str]:
        kubernetes_bin = toolchain.build(toolchain.KUBERNETES)
        etcd_bin = toolchain.build(toolchain.ETCD)
        return {
            **{name: str(kubernetes_bin / name) for name in toolchain.KUBERNETES.binaries},
            "etcd": str(etcd_bin / "etcd"),
        }

    def _write_pki(self, server: str, network: podnet.NodeNetwork | None) -> dict[str, Path]:
        """Fresh keys per start: nothing outlives the cluster that trusted it."""
        pki_dir = self.dir / "pki"
        shutil.rmtree(pki_dir, ignore_errors=True)
        pki_dir.mkdir(mode=0o700)
        ca = pki.CertificateAuthority()
        paths: dict[str, Path] = {}
        paths["ca.key"], paths["ca.crt"] = _write_pair(pki_dir, "ca", ca.pair)
        api_addresses = (network.host_ip, network.kubernetes_service_ip) if network else (_KUBERNETES_SERVICE_IP,)
        paths["serving.key"], paths["serving.crt"] = _write_pair(
            pki_dir, "serving", ca.serving_pair((_LOOPBACK, *api_addresses))
        )
        paths["sa.key"], paths["sa.pub"] = _write_pair(
            pki_dir, "service-account", pki.service_account_signing_pair(), public_suffix=".pub"
        )
        admin = ca.client_pair(_ADMIN_USER, ("system:masters",))
        paths["admin.key"], paths["admin.crt"] = _write_pair(pki_dir, "admin", admin)
        # The bootstrap RBAC policy binds this user name to the controller-manager's cluster role.
        controller_manager = ca.client_pair("system:kube-controller-manager")
        paths["kcm.kubeconfig"] = pki_dir / "controller-manager.kubeconfig"
        identities = [
            (paths["kcm.kubeconfig"], "system:kube-controller-manager", controller_manager),
            (self.kubeconfig, _ADMIN_USER, admin),
        ]
        if network:
            identities += self._node_pki(ca, pki_dir, network, paths)
        for target, user, pair in identities:
            _write_kubeconfig(target, server, ca.pair.cert_pem, user, _certificate_credentials(pair))
        return paths

    @staticmethod
    def _node_pki(
        ca: pki.CertificateAuthority, pki_dir: Path, network: podnet.NodeNetwork, paths: dict[str, Path]
    ) -> list[tuple[Path, str, pki.KeyPair]]:
        """The node's identities (the bootstrap RBAC policy and the Node authorizer know these names)
        and the kubelet's serving certificate, which the API server verifies when it proxies logs/exec."""
        node_user = f"system:node:{node_module.NODE_NAME}"
        paths["kubelet-serving.key"], paths["kubelet-serving.crt"] = _write_pair(
            pki_dir,
            "kubelet-serving",
            ca.serving_pair((network.node_ip,), common_name=node_user, dns_names=(node_module.NODE_NAME,)),
        )
        # The API server's identity towards the kubelet, which trusts any certificate from this CA.
        paths["kubelet-client.key"], paths["kubelet-client.crt"] = _write_pair(
            pki_dir, "apiserver-kubelet-client", ca.client_pair("kube-apiserver-kubelet-client")
        )
        identities = []
        for stem, user, groups in (
            ("kubelet", node_user, ("system:nodes",)),
            ("scheduler", "system:kube-scheduler", ()),
            ("proxy", "system:kube-proxy", ()),
        ):
            paths[f"{stem}.kubeconfig"] = pki_dir / f"{stem}.kubeconfig"
            identities.append((paths[f"{stem}.kubeconfig"], user, ca.client_pair(user, groups)))
        return identities

    def _start_etcd(self, ports: Mapping[str, int]) -> None:
        data_dir = self.dir / "etcd-data"
        shutil.rmtree(data_dir, ignore_errors=True)
        client_url = f"http://{_LOOPBACK}:{ports['etcd']}"
        peer_url = f"http://{_LOOPBACK}:{ports['etcd-peer']}"
        processes.spawn(
            self.dir,
            "etcd",
            [
                str(self._bin("etcd")),
                "--name=default",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                # Throwaway data on a shared, busy disk: fsync latency would only slow every test down.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(
        self, ports: Mapping[str, int], paths: Mapping[str, Path], network: podnet.NodeNetwork | None
    ) -> None:
        address = network.host_ip if network else _LOOPBACK
        if network:
            node_flags = [
                f"--kubelet-client-certificate={paths['kubelet-client.crt']}",
                f"--kubelet-client-key={paths['kubelet-client.key']}",
                f"--kubelet-certificate-authority={paths['ca.crt']}",
                "--kubelet-preferred-address-types=InternalIP",
                # Pods reach the API server through the `kubernetes` Service at its address on the link.
                "--endpoint-reconciler-type=lease",
            ]
        else:
            # The `kubernetes` Service cannot list a loopback endpoint (validation forbids it), and
            # nothing runs in-cluster that could use one: leave its endpoints unmanaged.
            node_flags = ["--endpoint-reconciler-type=none"]
        processes.spawn(
            self.dir,
            "kube-apiserver",
            [
                str(self._bin("kube-apiserver")),
                f"--etcd-servers=http://{_LOOPBACK}:{ports['etcd']}",
                f"--bind-address={address}",
                f"--advertise-address={address}",
                f"--secure-port={ports['api']}",
                f"--tls-cert-file={paths['serving.crt']}",
                f"--tls-private-key-file={paths['serving.key']}",
                f"--client-ca-file={paths['ca.crt']}",
                "--authorization-mode=Node,RBAC",
                "--anonymous-auth=false",
                f"--service-cluster-ip-range={network.service_cidr if network else SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={paths['sa.pub']}",
                f"--service-account-signing-key-file={paths['sa.key']}",
                "--allow-privileged=true",
                *node_flags,
                f"--cert-dir={self.dir / 'pki'}",
                "--profiling=false",
            ],
        )

    def _start_controller_manager(self, paths: Mapping[str, Path]) -> None:
        processes.spawn(
            self.dir,
            "kube-controller-manager",
            [
                str(self._bin("kube-controller-manager")),
                f"--kubeconfig={paths['kcm.kubeconfig']}",
                f"--controllers={_CONTROLLERS_WITH_NODE if self.with_node else _CONTROLLERS_WITHOUT_NODE}",
                # Each controller acts as its own service account, as in a real cluster, so RBAC applies.
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={paths['sa.key']}",
                f"--root-ca-file={paths['ca.crt']}",
                f"--cluster-signing-cert-file={paths['ca.crt']}",
                f"--cluster-signing-key-file={paths['ca.key']}",
                # A single instance: leader election would only delay the start by a lease period.
                "--leader-elect=false",
                # Its default is under /usr/libexec, which the controller-manager would create on the host.
                f"--flex-volume-plugin-dir={self.dir / 'flexvolume'}",
                # No metrics/health port: nothing scrapes it, and a fixed default port would collide.
                "--secure-port=0",
            ],
        )

    def _wait(self, ready: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        _log(f"waiting for {what}")
        while not ready():
            for name, pid in self.pids().items():
                if pid is None and (self.dir / f"{name}.pid").exists():
                    raise LocalClusterError(f"{name} exited; end of its log:\n{processes.log_tail(self.dir, name)}")
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n} ---\n{processes.log_tail(self.dir, n, 1500)}" for n in self._components())
                raise LocalClusterError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
            time.sleep(0.2)

    @staticmethod
    def _etcd_healthy(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://{_LOOPBACK}:{port}/health", timeout=2) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _api_get(self, path: str) -> bytes | None:
        """GET `path` as cluster-admin; the body on 200, None on any failure (used for polling)."""
        pki_dir = self.dir / "pki"
        context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
        context.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
        try:
            with urllib.request.urlopen(self.server + path, context=context, timeout=5) as response:
                return bytes(response.read())
        except OSError:
            return None

    # -- clients -------------------------------------------------------------------------------------
    @property
    def kubectl_path(self) -> Path:
        """The built kubectl binary (the version matching the server)."""
        return self._bin("kubectl")

    def kubectl(self, *args: str, input: str | None = None, kubeconfig: Path | None = None) -> str:
        """Run the built kubectl as cluster-admin (or as `kubeconfig`'s user); stdout, else KubectlError."""
        argv = [str(self.kubectl_path), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise KubectlError(args, proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout

    def token_kubeconfig(self, path: Path, token: str, user: str = "token-user") -> Path:
        """Write a kubeconfig for this cluster that authenticates with a bearer token only.

        For acting as a service account (a TokenRequest token): no client certificate is included,
        because the API server would authenticate that first and the request would run as admin.
        """
        ca_pem = (self.dir / "pki" / "ca.crt").read_bytes()
        _write_kubeconfig(path, self.server, ca_pem, user, {"token": token})
        return path

    def api_client(self) -> k8s_client.ApiClient:
        """A cluster-admin kubernetes.client.ApiClient; release it with `close_api_client`."""
        pki_dir = self.dir / "pki"
        configuration = k8s_client.Configuration(host=self.server)
        configuration.ssl_ca_cert = str(pki_dir / "ca.crt")
        configuration.cert_file = str(pki_dir / "admin.crt")
        configuration.key_file = str(pki_dir / "admin.key")
        return k8s_client.ApiClient(configuration)

    @contextlib.contextmanager
    def api(self) -> Iterator[k8s_client.ApiClient]:
        """`api_client()` for the length of a with-block."""
        api = self.api_client()
        try:
            yield api
        finally:
            close_api_client(api)

    # -- the stand-in kubelet (see e2e/standin_kubelet.py for why it exists) --------------------------
    def register_fake_node(
        self,
        name: str = _DEFAULT_FAKE_NODE,
        labels: Mapping[str, str] | None = None,
        capacity: Mapping[str, str] | None = None,
    ) -> str:
        """Create a Ready node (GPU capacity by default) that mark_pods_ready binds pods to."""
        with self.api() as api:
            standin_kubelet.register_node(api, name, labels, capacity or {"nvidia.com/gpu": "1"})
        self._fake_node = name
        return name

    def mark_pods_ready(self, namespace: str, label_selector: str) -> list[str]:
        """Bind matching pods to the fake node and report them Ready; the names of the Ready pods."""
        node = self._fake_node or self.register_fake_node()
        with self.api() as api:
            return standin_kubelet.mark_pods_ready(api, namespace, label_selector, node)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--dir", type=Path, required=True, help="state directory (kubeconfig, logs, pids, etcd data)")
    parser.add_argument("--port", type=int, help="API server port (default: a free one)")
    parser.add_argument(
        "--no-node", action="store_true", help="the control plane alone, on loopback (no kubelet, no pods run)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    cluster = LocalCluster(args.dir, with_node=not args.no_node)
    try:
        if args.command == "start":
            cluster.start(port=args.port)
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "stop":
            cluster.stop()
            _log(f"stopped (nothing left running from {cluster.dir})")
        else:
            pids = cluster.pids()
            for name, pid in pids.items():
                print(f"{name:<24} {'running, pid ' + str(pid) if pid else 'stopped'}")
            if all(pids.values()):
                print(f"server {cluster.server}\nkubeconfig {cluster.kubeconfig}")
            return 0 if all(pids.values()) else 3
    except (
        LocalClusterError,
        toolchain.ToolchainError,
        node_module.NodeError,
        podnet.PodNetworkError,
        sandboximage.SandboxImageError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
