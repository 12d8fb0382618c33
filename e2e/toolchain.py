"""Build and cache the test infrastructure binaries from the Go module proxy.

The local control plane needs kube-apiserver, kube-controller-manager, kubectl and etcd, its real
node the kubelet, kube-scheduler and kube-proxy; the chart
tests need helm. None of them may be downloaded prebuilt here, so each is compiled once from its Go
module at a pinned version into a per-version cache directory and reused afterwards (the envtest idea,
without the download). k8s.io/kubernetes points its staging modules at ./staging with `replace`
lines, which only work inside its own repository; a wrapper module re-points them at the published
k8s.io/* v0.x.y modules of the matching release, read from k8s.io/kubernetes' own go.mod.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

KUBERNETES_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.20.2"

_GO_MISSING = (
    "Go is required to build the test control plane (kube-apiserver, etcd, helm) from the Go module "
    "proxy, but `go` is not on PATH. Install Go 1.24 or newer (https://go.dev/doc/install, or "
    "`apt-get install golang`) and run again."
)


# Written next to the binaries once they are all built; a cache hit needs it to match the current recipe.
_RECIPE_FILE = "recipe.json"
# A Kubernetes build is silent for minutes; say it is still alive this often.
_HEARTBEAT_SECONDS = 30.0


class ToolchainError(RuntimeError):
    """A binary could not be built; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class GoBuild:
    """One wrapper module and the packages to compile from it."""

    name: str
    module: str
    version: str
    packages: tuple[str, ...]
    staging_replaces: bool = False
    # Binary names, one per package, where the package path does not end in the command's name.
    names: tuple[str, ...] = ()
    # `-X variable=value` link stamps: release builds set version variables this way, and without them
    # the binaries report v0.0.0 (kubectl warns about version skew, `helm version` is vague).
    stamps: tuple[tuple[str, str], ...] = ()

    @property
    def binaries(self) -> tuple[str, ...]:
        return self.names or tuple(pkg.rstrip("/").rsplit("/", 1)[-1] for pkg in self.packages)

    @property
    def ldflags(self) -> str:
        return " ".join(["-s", "-w", *(f"-X {variable}={value}" for variable, value in self.stamps)])

    def fingerprint(self) -> str:
        """What the cached binaries were built from; a change to the recipe invalidates the cache."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def _kubernetes_version_stamps(version: str) -> tuple[tuple[str, str], ...]:
    """The variables hack/lib/version.sh stamps, in both packages that report a Kubernetes version."""
    major, minor = version.removeprefix("v").split(".")[:2]
    values = {"gitVersion": version, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean"}
    return tuple(
        (f"{package}.{variable}", value)
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for variable, value in values.items()
    )


KUBERNETES = GoBuild(
    name="kubernetes",
    module="k8s.io/kubernetes",
    version=KUBERNETES_VERSION,
    packages=(
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "k8s.io/kubernetes/cmd/kubectl",
        # The real node: the kubelet runs pods through containerd, the scheduler binds them, and
        # kube-proxy programs Service addresses into iptables.
        "k8s.io/kubernetes/cmd/kubelet",
        "k8s.io/kubernetes/cmd/kube-scheduler",
        "k8s.io/kubernetes/cmd/kube-proxy",
    ),
    staging_replaces=True,
    stamps=_kubernetes_version_stamps(KUBERNETES_VERSION),
)
# etcd's main package lives at the root of its server module (server/main.go), whose path ends in "v3".
ETCD = GoBuild(
    name="etcd",
    module="go.etcd.io/etcd/server/v3",
    version=ETCD_VERSION,
    packages=("go.etcd.io/etcd/server/v3",),
    names=("etcd",),
)
HELM = GoBuild(
    name="helm",
    module="helm.sh/helm/v3",
    version=HELM_VERSION,
    packages=("helm.sh/helm/v3/cmd/helm",),
    stamps=(("helm.sh/helm/v3/internal/version.version", HELM_VERSION),),
)


def cache_root() -> Path:
    """Where built binaries live: $HYBRIDROUTE_CACHE, else the user cache dir."""
    override = os.environ.get("HYBRIDROUTE_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hybridroute"


def _log(message: str) -> None:
    print(f"[toolchain] {message}", file=sys.stderr, flush=True)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolchainError(_GO_MISSING)
    return go


def _run_go(args: Sequence[str], cwd: Path) -> str:
    env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0", GOWORK="off")
    started = time.monotonic()
    proc = subprocess.Popen([_go(), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while True:
        try:
            stdout, stderr = proc.communicate(timeout=_HEARTBEAT_SECONDS)
            break
        except subprocess.TimeoutExpired:
            _log(f"  ... still running `go {args[0]}` ({time.monotonic() - started:.0f} s)")
    if proc.returncode != 0:
        raise ToolchainError(f"`go {' '.join(args)}` failed in {cwd}:\n{stderr[-4000:]}")
    return stdout


def _staging_replaces(workdir: Path, version: str) -> list[str]:
    """Read k8s.io/kubernetes' go.mod and map each ./staging replace to the published v0.x.y."""
    download = json.loads(_run_go(["mod", "download", "-json", f"k8s.io/kubernetes@{version}"], workdir))
    if download.get("Error") or not download.get("GoMod"):
        raise ToolchainError(f"go mod download k8s.io/kubernetes@{version} failed: {download.get('Error')}")
    modfile = Path(download["GoMod"])
    staging_version = "v0." + version.removeprefix("v1.")
    modules = re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/", modfile.read_text(), flags=re.MULTILINE)
    if not modules:
        raise ToolchainError(f"no staging replace lines found in {modfile}")
    return [f"replace {mod} => {mod} {staging_version}" for mod in modules]


def build(spec: GoBuild) -> Path:
    """Build `spec` once and return the directory holding its binaries."""
    target = cache_root() / f"{spec.name}-{spec.version}"
    bindir = target / "bin"
    recipe = bindir / _RECIPE_FILE
    if recipe.is_file() and recipe.read_text() == spec.fingerprint():
        return bindir
    workdir = target / "src"
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    _log(f"building {spec.name} {spec.version} from the Go module proxy into {bindir} (first run only; minutes)")
    (workdir / "go.mod").write_text(f"module hybridroute.local/{spec.name}-build\n\ngo 1.24\n")
    (workdir / "tools.go").write_text(
        "//go:build tools\n\npackage tools\n\nimport (\n" + "".join(f'\t_ "{p}"\n' for p in spec.packages) + ")\n"
    )
    if spec.staging_replaces:
        with (workdir / "go.mod").open("a") as mod:
            mod.write("\n" + "\n".join(_staging_replaces(workdir, spec.version)) + "\n")
    _run_go(["get", f"{spec.module}@{spec.version}"], workdir)
    _run_go(["mod", "tidy"], workdir)
    tmp_bin = target / "bin.partial"
    shutil.rmtree(tmp_bin, ignore_errors=True)
    tmp_bin.mkdir()
    for package, name in zip(spec.packages, spec.binaries, strict=True):
        _log(f"  go build {package}")
        _run_go(["build", "-trimpath", f"-ldflags={spec.ldflags}", "-o", str(tmp_bin / name), package], workdir)
    (tmp_bin / _RECIPE_FILE).write_text(spec.fingerprint())
    shutil.rmtree(bindir, ignore_errors=True)
    tmp_bin.rename(bindir)
    _log(f"built {spec.name} {spec.version} in {time.monotonic() - started:.0f} s")
    return bindir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="*", choices=["kubernetes", "etcd", "helm"], default=["kubernetes", "etcd"])
    args = parser.parse_args(argv)
    specs = {"kubernetes": KUBERNETES, "etcd": ETCD, "helm": HELM}
    try:
        for name in args.what:
            print(build(specs[name]))
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
