"""The pod sandbox ("pause") image, built here because no image registry is reachable.

Every pod starts with a sandbox container that holds its namespaces. containerd runs the image its
`sandbox_image` setting names; Kubernetes' own is `registry.k8s.io/pause`, built from a single C file.
This module compiles that file, `build/pause/linux/pause.c` from the pinned `k8s.io/kubernetes`
module (the toolchain build already downloaded it), with `gcc -static` as Kubernetes' Makefile does,
and wraps the binary as a one-layer image archive that `ctr images import` reads. The archive is
cached under the toolchain cache, keyed by the hash of the source, and rebuilt when it changes.

`static_image` does the same for any one-file C program: tests use it for a tiny HTTP server image.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from e2e import toolchain

# Kubernetes v1.35's build/pause/Makefile tags its image 3.10.1; the name says it was built here.
PAUSE_VERSION = "3.10.1"
SANDBOX_IMAGE = f"hybridroute.local/pause:{PAUSE_VERSION}"


class SandboxImageError(RuntimeError):
    """The pause image could not be built; the message says what is missing."""


def _pause_source() -> Path:
    """pause.c from the k8s.io/kubernetes module in the Go module cache (downloaded if it is not there)."""
    go = shutil.which("go")
    if go is None:
        raise SandboxImageError("Go is needed to fetch k8s.io/kubernetes (the pause source); see e2e/toolchain.py")
    proc = subprocess.run(
        [go, "mod", "download", "-json", f"k8s.io/kubernetes@{toolchain.KUBERNETES_VERSION}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=toolchain.cache_root() if toolchain.cache_root().is_dir() else None,
    )
    if proc.returncode != 0:
        raise SandboxImageError(f"go mod download k8s.io/kubernetes failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    source = Path(json.loads(proc.stdout)["Dir"]) / "build" / "pause" / "linux" / "pause.c"
    if not source.is_file():
        raise SandboxImageError(f"{source} is missing from the k8s.io/kubernetes module")
    return source


def _tar_bytes(files: Mapping[str, tuple[bytes, int]]) -> bytes:
    """A deterministic tar of `path -> (content, mode)`: same files, same bytes, same digest."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(content), mode, 0
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def write_archive(
    target: Path,
    name: str,
    files: Mapping[str, tuple[bytes, int]],
    entrypoint: Sequence[str],
) -> Path:
    """Write a one-layer image archive (the docker-archive format `ctr images import` reads)."""
    layer = _tar_bytes(files)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": list(entrypoint), "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]},
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest = [{"Config": "config.json", "RepoTags": [name], "Layers": ["layer.tar"]}]
    archive = _tar_bytes(
        {
            "config.json": (config_bytes, 0o644),
            "layer.tar": (layer, 0o644),
            "manifest.json": (json.dumps(manifest).encode(), 0o644),
        }
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(archive)
    partial.rename(target)
    return target


def _static_binary(source: Path, output: Path, defines: Sequence[str]) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise SandboxImageError(f"gcc is needed to compile {source.name}: run e2e/install-system-deps.sh")
    proc = subprocess.run(
        [gcc, "-Os", "-Wall", "-Werror", "-static", *(f"-D{d}" for d in defines), "-o", str(output), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise SandboxImageError(f"gcc {source} failed:\n{proc.stderr[-3000:]}")
    return output


def static_image(source: Path, name: str, binary: str, defines: Sequence[str] = ()) -> Path:
    """An image archive holding one C file compiled static as /BINARY (its entrypoint), no libc needed.

    Cached under the toolchain cache by the hash of the source, the name and the defines, so a
    changed source builds a new archive and an unchanged one costs nothing.
    """
    key = hashlib.sha256(b"\0".join([source.read_bytes(), name.encode(), *(d.encode() for d in defines)]))
    stem = f"{binary}-{key.hexdigest()[:16]}"
    archive = toolchain.cache_root() / "images" / f"{stem}.tar"
    if archive.is_file():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    compiled = _static_binary(source, archive.with_name(f"{stem}.bin"), defines)
    try:
        return write_archive(archive, name, {binary: (compiled.read_bytes(), 0o755)}, [f"/{binary}"])
    finally:
        compiled.unlink()


def build() -> Path:
    """The pause image archive, built on first use and whenever pause.c changes."""
    return static_image(_pause_source(), SANDBOX_IMAGE, "pause", (f"VERSION=v{PAUSE_VERSION}-hybridroute",))
