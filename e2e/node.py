"""The local cluster's real node: containerd, kubelet, kube-scheduler and kube-proxy running pods.

A node here is what it is anywhere else: containerd (Debian's, with its CRI plugin) runs pods
through runc and the CNI plugins; the kubelet registers the node, runs pods and probes them; the
scheduler binds pods; kube-proxy turns Services into iptables rules. What makes it local:

- Everything lives in /var/lib/hybridroute/<id> (containerd's root, state and socket, the kubelet's
  root dir, pod logs, the CNI config and address store), so it never touches a containerd or kubelet
  of the host. Not under the cluster's directory: containerd and the kubelet put unix sockets in
  there, and a socket path may not exceed 104 bytes. Like etcd's data, it starts empty every time.
- The network side (containerd's CNI, kubelet, kube-proxy) runs in the node's network namespace
  (e2e/podnet.py). The scheduler needs only the API server and runs on the host.
- Pods run under the cgroup `/hybridroute-<id>` in each cgroup v1 hierarchy (the kernel offers v1
  only; hence `failCgroupV1: false` and the cgroupfs driver).
- No registry is reachable: images come from archives through `import_image`, the sandbox image
  from e2e/sandboximage.py.
- The machine withholds CAP_SYS_RESOURCE, so a negative oom_score_adj is refused and every sandbox
  would fail to start; containerd's `restrict_oom_score_adj` keeps the scores it sets non-negative.
- GPUs cannot exist here: `advertise` adds `nvidia.com/gpu` to the node's capacity through the
  status subresource, the documented way to advertise an extended resource, so GPU pools schedule.

`stop` removes what the node made: every process (components, shims, containers), every mount and
file under /var/lib/hybridroute/<id>, the pods' cgroups and the shims' sockets, and puts back the
kernel settings the kubelet rewrites; the network goes with podnet.delete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any

import tomli_w
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e import podnet, processes, sandboximage

NODE_NAME = "hybridroute-node"
# Started in this order, stopped in reverse: the kubelet goes before the runtime it drives.
COMPONENTS = ("containerd", "kubelet", "kube-proxy", "kube-scheduler")
_CGROUP_ROOT = Path("/sys/fs/cgroup")
# containerd 1.6 keeps every shim's socket here whatever its state dir (runtime/v2/shim/util.go).
_SHIM_SOCKET_DIR = Path("/run/containerd/s")
# Short on purpose: containerd and the kubelet create unix sockets below it (104 bytes at most).
_NODE_ROOT = Path("/var/lib/hybridroute")
_NOT_READY_TAINT = "node.kubernetes.io/not-ready"
# Host-wide kernel settings the kubelet rewrites at start (setupKernelTunables): `stop` puts back the
# values found before, so the host is left as it was.
_KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
_PROC_SYS = Path("/proc/sys")


class NodeError(RuntimeError):
    """The node did not come up or could not be cleaned up; the message says why."""


@dataclasses.dataclass(frozen=True)
class NodeCredentials:
    """The files the node's components authenticate with (written by the cluster's PKI step)."""

    ca_cert: Path
    kubelet_kubeconfig: Path
    kubelet_serving_cert: Path
    kubelet_serving_key: Path
    scheduler_kubeconfig: Path
    proxy_kubeconfig: Path


class Node:
    """The node of the cluster rooted at `state_dir`; `network` is its podnet.NodeNetwork."""

    def __init__(self, state_dir: Path, network: podnet.NodeNetwork) -> None:
        self.state_dir = state_dir
        self.network = network
        self.dir = _NODE_ROOT / podnet.cluster_id(state_dir)
        self.cgroup = f"hybridroute-{podnet.cluster_id(state_dir)}"

    @property
    def containerd_socket(self) -> Path:
        return self.dir / "containerd.sock"

    def pids(self) -> dict[str, int | None]:
        return {name: processes.running_pid(self.state_dir, name) for name in COMPONENTS}

    # -- start ---------------------------------------------------------------------------------------
    def start(self, bins: Mapping[str, str], credentials: NodeCredentials, timeout: float) -> None:
        """Start containerd (with the sandbox image), the kubelet, kube-proxy and the scheduler."""
        shutil.rmtree(self.dir, ignore_errors=True)  # fresh, like the cluster's etcd
        for sub in ("containerd", "kubelet", "pod-logs", "cni/net.d", "cni/ipam", "runc"):
            (self.dir / sub).mkdir(parents=True)
        self._make_cgroups()
        self._save_sysctls()
        (self.dir / "cni" / "net.d" / "10-hybridroute.conflist").write_text(
            json.dumps(self.network.cni_config(self.dir / "cni" / "ipam"), indent=2)
        )
        self._start_containerd()
        self._wait(self._containerd_answers, "containerd", timeout)
        self.import_image(sandboximage.build())
        self._start_kubelet(bins["kubelet"], credentials)
        self._start_proxy(bins["kube-proxy"], credentials)
        processes.spawn(
            self.state_dir,
            "kube-scheduler",
            [
                bins["kube-scheduler"],
                f"--kubeconfig={credentials.scheduler_kubeconfig}",
                # A single instance: leader election would only delay the first binding.
                "--leader-elect=false",
                # No serving port: nothing scrapes it, and a fixed default port would collide.
                "--secure-port=0",
            ],
        )

    def _make_cgroups(self) -> None:
        """The kubelet refuses a cgroup root that does not exist: create it in every v1 hierarchy."""
        for hierarchy in self._hierarchies():
            path = hierarchy / self.cgroup
            path.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":  # a cpuset cgroup starts empty; give it the parent's CPUs and memory
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (path / knob).write_text((hierarchy / knob).read_text())

    @property
    def _sysctl_record(self) -> Path:
        return self.dir / "sysctl-before-kubelet.json"

    def _save_sysctls(self) -> None:
        values = {key: (_PROC_SYS / key).read_text().strip() for key in _KUBELET_SYSCTLS}
        self._sysctl_record.write_text(json.dumps(values))

    def _restore_sysctls(self) -> None:
        if self._sysctl_record.exists():
            for key, value in json.loads(self._sysctl_record.read_text()).items():
                (_PROC_SYS / key).write_text(value)
            self._sysctl_record.unlink()

    @staticmethod
    def _hierarchies() -> list[Path]:
        return sorted(path for path in _CGROUP_ROOT.iterdir() if (path / "cgroup.procs").is_file())

    def _start_containerd(self) -> None:
        base = self.dir / "containerd"
        cri = {
            "sandbox_image": sandboximage.SANDBOX_IMAGE,
            # CAP_SYS_RESOURCE is withheld here: negative scores would fail every sandbox.
            "restrict_oom_score_adj": True,
            "disable_tcp_service": True,
            "stream_server_address": "127.0.0.1",
            "disable_apparmor": True,
            # Pod network namespaces under the state dir, not in the host's shared /run/netns.
            "netns_mounts_under_state_dir": True,
            "containerd": {
                "snapshotter": "overlayfs",
                "default_runtime_name": "runc",
                "runtimes": {
                    "runc": {
                        "runtime_type": "io.containerd.runc.v2",
                        # cgroup v1 with the cgroupfs driver, like the kubelet.
                        "options": {"SystemdCgroup": False, "Root": str(self.dir / "runc")},
                    }
                },
            },
            "cni": {"bin_dir": str(podnet.CNI_BIN_DIR), "conf_dir": str(self.dir / "cni" / "net.d"), "max_conf_num": 1},
        }
        config = {
            "version": 2,
            "root": str(base / "root"),
            "state": str(base / "state"),
            "grpc": {"address": str(self.containerd_socket)},
            "ttrpc": {"address": f"{self.containerd_socket}.ttrpc"},
            # Plugins that would otherwise write under /opt or /var/lib, or that this node never uses.
            "disabled_plugins": [
                "io.containerd.internal.v1.opt",
                "io.containerd.snapshotter.v1.aufs",
                "io.containerd.snapshotter.v1.btrfs",
                "io.containerd.snapshotter.v1.devmapper",
                "io.containerd.snapshotter.v1.zfs",
            ],
            "plugins": {"io.containerd.grpc.v1.cri": cri},
        }
        path = base / "config.toml"
        path.write_text(tomli_w.dumps(config))
        processes.spawn(self.state_dir, "containerd", ["containerd", f"--config={path}"], wrapper=self.network.enter())

    def _containerd_answers(self) -> bool:
        return self._ctr("version", check=False).returncode == 0

    def _ctr(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise NodeError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")
        return proc

    def import_image(self, archive: Path) -> None:
        """Load an image archive (docker-archive or OCI tar) into the node's containerd for pods to run."""
        self._ctr("images", "import", str(archive))

    def _start_kubelet(self, kubelet: str, credentials: NodeCredentials) -> None:
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # The kernel here offers cgroup v1 only.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup}",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": self.network.node_ip,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "tlsCertFile": str(credentials.kubelet_serving_cert),
            "tlsPrivateKeyFile": str(credentials.kubelet_serving_key),
            # Only holders of a certificate from the cluster's CA (the API server) reach the kubelet API.
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(credentials.ca_cert)},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "podLogsDir": str(self.dir / "pod-logs"),
            "volumePluginDir": str(self.dir / "volume-plugins"),
            "failSwapOn": False,
            # Imported images cannot be pulled again: never collect them, never evict for a busy disk.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "registerNode": True,
            # The kubelet compares its node status every 2 s (default 10 s), so an advertised GPU is
            # allocatable soon after start; it still reports an unchanged status only every 5 minutes.
            "nodeStatusUpdateFrequency": "2s",
            "nodeStatusReportFrequency": "5m",
        }
        path = self.dir / "kubelet" / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        processes.spawn(
            self.state_dir,
            "kubelet",
            [
                kubelet,
                f"--config={path}",
                f"--kubeconfig={credentials.kubelet_kubeconfig}",
                f"--root-dir={self.dir / 'kubelet'}",
                f"--cert-dir={self.dir / 'kubelet' / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.network.node_ip}",
            ],
            wrapper=self.network.enter(),
        )

    def _start_proxy(self, kube_proxy: str, credentials: NodeCredentials) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(credentials.proxy_kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": self.network.pod_cidr,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # The conntrack table is the host's, shared with everything else: leave its sizes alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }
        path = self.dir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        processes.spawn(self.state_dir, "kube-proxy", [kube_proxy, f"--config={path}"], wrapper=self.network.enter())

    def _wait(self, ready: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for name, pid in self.pids().items():
                if pid is None and (self.state_dir / f"{name}.pid").exists():
                    raise NodeError(f"{name} exited; end of its log:\n{processes.log_tail(self.state_dir, name)}")
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n} ---\n{processes.log_tail(self.state_dir, n, 2000)}" for n in COMPONENTS)
                raise NodeError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
            time.sleep(0.5)

    def wait_ready(self, api: client.ApiClient, timeout: float) -> None:
        """Return once the node is Ready and its not-ready taint has been lifted (pods can land there)."""
        core = client.CoreV1Api(api)

        def ready() -> bool:
            try:
                node = core.read_node(NODE_NAME)
            except ApiException as exc:
                if exc.status == HTTPStatus.NOT_FOUND:
                    return False
                raise
            conditions = {c.type: c.status for c in node.status.conditions or []}
            taints = {t.key for t in node.spec.taints or []}
            return conditions.get("Ready") == "True" and _NOT_READY_TAINT not in taints

        self._wait(ready, f"node {NODE_NAME} Ready without its {_NOT_READY_TAINT} taint", timeout)

    def advertise(self, api: client.ApiClient, resources: Mapping[str, str], timeout: float) -> None:
        """Add extended resources (say `nvidia.com/gpu: "1"`) to the node's capacity and return once
        the kubelet has carried them into allocatable, which is what the scheduler counts."""
        core = client.CoreV1Api(api)
        patch = [
            {"op": "add", "path": f"/status/capacity/{name.replace('~', '~0').replace('/', '~1')}", "value": value}
            for name, value in resources.items()
        ]
        # The generated client sends a list body as a JSON patch, the documented form of this request.
        core.patch_node_status(NODE_NAME, patch)

        def allocatable() -> bool:
            offered = core.read_node(NODE_NAME).status.allocatable or {}
            return all(offered.get(name) == value for name, value in resources.items())

        self._wait(allocatable, f"the kubelet to offer {dict(resources)} as allocatable", timeout)

    # -- stop ----------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the components, kill every pod process and shim, unmount, remove the cgroups and put
        back the kernel settings the kubelet changed."""
        for name in reversed(COMPONENTS[1:]):
            processes.stop(self.state_dir, name)
        shims = self.shims()
        self._kill_pods()
        for pid in shims:
            _kill(pid)
        processes.stop(self.state_dir, "containerd")
        for pid, socket in shims.items():
            _wait_gone(pid)
            socket.unlink(missing_ok=True)
        for mount in sorted(self._mounts(), key=lambda p: len(p.parts), reverse=True):
            subprocess.run(["umount", "--lazy", str(mount)], capture_output=True, check=False)
        self._remove_cgroups()
        self._restore_sysctls()
        shutil.rmtree(self.dir, ignore_errors=True)

    def shims(self) -> dict[int, Path]:
        """containerd's shims for this node (by the socket they were started with) and their sockets."""
        found = {}
        address = str(self.containerd_socket)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if "-address" in argv and argv[argv.index("-address") + 1] == address and "-id" in argv:
                namespace = argv[argv.index("-namespace") + 1] if "-namespace" in argv else "k8s.io"
                found[int(entry.name)] = _shim_socket(address, namespace, argv[argv.index("-id") + 1])
        return found

    def _cgroup_dirs(self) -> list[Path]:
        """Every cgroup under the node's root, deepest first (os.walk shrugs off ones vanishing meanwhile)."""
        dirs = [
            Path(current) for hierarchy in self._hierarchies() for current, _, _ in os.walk(hierarchy / self.cgroup)
        ]
        return sorted(dirs, key=lambda p: len(p.parts), reverse=True)

    def pod_pids(self) -> set[int]:
        """The processes of every container on the node (they live in the node's cgroups)."""
        pids: set[int] = set()
        for cgroup in self._cgroup_dirs():
            with contextlib.suppress(OSError):  # removed by its runtime since the walk
                pids.update(int(line) for line in (cgroup / "cgroup.procs").read_text().split())
        return pids

    def pod_uid_pids(self, uid: str) -> list[int]:
        """The processes of one pod's containers and sandbox (their cgroup paths carry `pod<uid>`)."""
        found = []
        for pid in self.pod_pids():
            with contextlib.suppress(OSError):  # exited since the listing
                if f"pod{uid}" in Path(f"/proc/{pid}/cgroup").read_text():
                    found.append(pid)
        return sorted(found)

    def _kill_pods(self) -> None:
        deadline = time.monotonic() + 30
        while pids := self.pod_pids():
            for pid in pids:
                _kill(pid)
            if time.monotonic() > deadline:
                raise NodeError(f"pod processes survived SIGKILL: {sorted(pids)}")
            time.sleep(0.1)

    def _remove_cgroups(self) -> None:
        for cgroup in self._cgroup_dirs():
            for _ in range(50):  # a killed task leaves its cgroup a moment after it is reaped
                try:
                    cgroup.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)

    def _mounts(self) -> list[Path]:
        """Mount points under the node's directory (volumes, rootfs, shm, pod network namespaces)."""
        return _mounts_under(self.dir)

    def leftovers(self) -> list[str]:
        """What of the node still exists (empty after `stop`): processes, mounts, cgroups, sockets."""
        found = [f"process {name} ({pid})" for name, pid in self.pids().items() if pid is not None]
        found += [f"shim process {pid}" for pid in self.shims()]
        found += [f"pod process {pid}" for pid in self.pod_pids()]
        found += [f"mount {path}" for path in self._mounts()]
        found += [f"cgroup {path}" for path in self._cgroup_dirs()]
        found += [f"directory {self.dir}"] if self.dir.exists() else []
        return found


def _shim_socket(address: str, namespace: str, container_id: str) -> Path:
    """Where containerd 1.6 put a shim's socket: a hash of its own address, namespace and id."""
    digest = hashlib.sha256(os.path.join(address, namespace, container_id).encode()).hexdigest()
    return _SHIM_SOCKET_DIR / digest


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while processes.is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _mounts_under(directory: Path) -> list[Path]:
    prefix = str(directory.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # The mount point is the fifth field, with spaces and the like escaped as octal.
        point = line.split()[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(Path(point))
    return found
