"""The real node's network: its own network namespace, a veth link to the host, and the pod network.

Everything that programs the network of a Kubernetes node (containerd's CNI plugins, kube-proxy's
iptables rules, the kubelet) runs inside one network namespace per cluster, `hr-<id>`. So two local
clusters on one machine never fight over `KUBE-SERVICES` or a `cni0` bridge, and deleting the
namespace on `stop` takes every bridge, pod veth and iptables chain the node created with it. The
host keeps nothing but one veth (`hr-<id>`) and the route that goes with it, both gone when the
namespace is deleted.

Each cluster owns one /16 of 10.200.0.0/13 that nothing on the host uses yet:

    10.N.255.0/30   the link: host side .1 (the API server binds here), node side .2 (the node IP)
    10.N.0.0/24     pods (the CNI bridge `cni0` is .1)
    10.N.128.0/24   Services (ClusterIPs; the first is the `kubernetes` Service)

The host routes the whole /16 through the node, so tests reach pod IPs and ClusterIPs from the host
exactly as a machine on the node's network would. No address outside that /16 and loopback is used.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The /16 blocks a cluster may take: 10.200.0.0/16 up to 10.207.0.0/16.
_BLOCKS = tuple(ipaddress.ip_network(f"10.{second}.0.0/16") for second in range(200, 208))
# Held while a block is chosen and claimed, so two clusters starting at once never take the same one.
_ALLOCATION_LOCK = Path("/run/lock/hybridroute-podnet.lock")
_NETNS_DIR = Path("/run/netns")
# The CNI plugins Debian's containernetworking-plugins package installs.
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_BRIDGE = "cni0"


class PodNetworkError(RuntimeError):
    """The node's network could not be set up or torn down; the message says which command failed."""


def _run(*argv: str) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise PodNetworkError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _ip_json(*argv: str) -> list[dict[str, Any]]:
    out = _run("ip", "-json", *argv)
    parsed: list[dict[str, Any]] = json.loads(out) if out.strip() else []
    return parsed


def cluster_id(state_dir: Path) -> str:
    """A short, stable name for the cluster rooted at `state_dir` (interface names allow 15 characters)."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]


@dataclasses.dataclass(frozen=True)
class NodeNetwork:
    """The addresses and names of one cluster's node network (pure data; `create` makes it real)."""

    name: str  # the network namespace and the host's veth share it
    block: str  # the /16 this cluster owns

    @classmethod
    def for_block(cls, state_dir: Path, block: ipaddress.IPv4Network) -> NodeNetwork:
        return cls(name=f"hr-{cluster_id(state_dir)}", block=str(block))

    def _address(self, offset: int) -> str:
        return str(ipaddress.ip_network(self.block)[offset])

    @property
    def host_ip(self) -> str:
        """The host end of the link: what the node (and pods) use to reach the API server."""
        return self._address(255 * 256 + 1)

    @property
    def node_ip(self) -> str:
        """The node's InternalIP: the kubelet serves here, in the node's namespace."""
        return self._address(255 * 256 + 2)

    @property
    def pod_cidr(self) -> str:
        return f"{self._address(0)}/24"

    @property
    def service_cidr(self) -> str:
        return f"{self._address(128 * 256)}/24"

    @property
    def kubernetes_service_ip(self) -> str:
        """The first Service address, which the API server gives the `kubernetes` Service."""
        return self._address(128 * 256 + 1)

    @property
    def netns_path(self) -> Path:
        return _NETNS_DIR / self.name

    def enter(self) -> tuple[str, ...]:
        """The argv prefix that runs a command inside the node's network namespace (and nothing else)."""
        return ("nsenter", f"--net={self.netns_path}", "--")

    def exec(self, *argv: str) -> str:
        """Run a command inside the node's network namespace; its stdout."""
        return _run(*self.enter(), *argv)

    def cni_config(self, data_dir: Path) -> dict[str, Any]:
        """The CNI network list containerd reads: a bridge with host-local addresses and port maps."""
        return {
            "cniVersion": "1.0.0",
            "name": "hybridroute",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": CNI_BRIDGE,
                    "isGateway": True,
                    # Pods reaching the host (the API server) leave with the node's address.
                    "ipMasq": True,
                    # A pod reaching itself through its own Service address comes back over the bridge.
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        # Its default is /var/lib/cni, shared by every cluster on the machine.
                        "dataDir": str(data_dir),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 prefix the host has an address or a route in."""
    used = []
    for link in _ip_json("-4", "addr", "show"):
        for info in link.get("addr_info", []):
            used.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for route in _ip_json("-4", "route", "show", "table", "all"):
        destination = route.get("dst", "default")
        if destination != "default" and not destination.startswith(("broadcast", "local")):
            used.append(ipaddress.ip_network(destination if "/" in destination else f"{destination}/32", strict=False))
    return used


@contextmanager
def _allocation_lock() -> Iterator[None]:
    _ALLOCATION_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with _ALLOCATION_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def create(state_dir: Path) -> NodeNetwork:
    """Claim a free /16, create the namespace and the link, and route the block to the node."""
    with _allocation_lock():
        used = _used_networks()
        free = [block for block in _BLOCKS if not any(block.overlaps(net) for net in used)]
        if not free:
            raise PodNetworkError(f"every node network block ({_BLOCKS[0]} .. {_BLOCKS[-1]}) is in use on this host")
        network = NodeNetwork.for_block(state_dir, free[0])
        delete(network.name)  # leftovers of a crashed cluster in the same directory
        _run("ip", "netns", "add", network.name)
        try:
            _wire(network)
        except BaseException:
            delete(network.name)
            raise
    return network


def _wire(network: NodeNetwork) -> None:
    peer = f"{network.name}-n"[:15]
    _run("ip", "link", "add", network.name, "type", "veth", "peer", "name", peer)
    _run("ip", "link", "set", peer, "netns", network.name)
    _run("ip", "addr", "add", f"{network.host_ip}/30", "dev", network.name)
    _run("ip", "link", "set", network.name, "up")
    _run("ip", "route", "add", network.block, "via", network.node_ip, "dev", network.name)
    # No default route inside: the node reaches the host's end of the link and nothing beyond it, so
    # an image pull or a pod aiming past this machine fails at once instead of leaving it.
    inside: Sequence[Sequence[str]] = (
        ("ip", "link", "set", "lo", "up"),
        ("ip", "link", "set", peer, "name", "eth0"),
        ("ip", "addr", "add", f"{network.node_ip}/30", "dev", "eth0"),
        ("ip", "link", "set", "eth0", "up"),
        # A node routes between its pods, its Service rules and the link.
        ("sysctl", "-qw", "net.ipv4.ip_forward=1"),
        # kube-proxy's rules must see pod-to-pod traffic that crosses the bridge (per namespace).
        ("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"),
    )
    for argv in inside:
        network.exec(*argv)


def exists(name: str) -> bool:
    return (_NETNS_DIR / name).exists()


def delete(name: str) -> None:
    """Delete the namespace (its bridge, pod veths and iptables rules go with it) and the host's veth."""
    if exists(name):
        _run("ip", "netns", "delete", name)
    # The host end of the veth goes with its peer once the kernel has torn the namespace down (a
    # moment later); a half-built link whose peer never moved needs deleting by hand.
    deadline = time.monotonic() + 5
    while _host_link_exists(name) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _host_link_exists(name):
        _run("ip", "link", "delete", name)


def _host_link_exists(name: str) -> bool:
    return any(link["ifname"] == name for link in _ip_json("link", "show"))


def leftovers(name: str) -> list[str]:
    """What of network `name` still exists on the host (empty once `delete` has run)."""
    found = [f"network namespace {name}"] if exists(name) else []
    found += [f"interface {name}"] if _host_link_exists(name) else []
    return found
