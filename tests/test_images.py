"""The images: the Dockerfile's required properties by parsing it, then real builds run in containerd.

Per target image: a pinned base (no `latest`, Python minor fixed), a numeric non-root USER, an
exec-form ENTRYPOINT naming a command the package installs, and no build tools in runtime stages.
Then every image e2e/images.py builds: tagged by its content hash and cached, uid 65532, bytecode
compiled, and run from its archive by a throwaway containerd with a read-only root filesystem.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import images, processes
from hybridroute_operator.api import LocalSpec
from hybridroute_operator.render import Owner, managed_pool
from tests.fixtures.containerd import Containerd

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse(path: Path) -> dict[str, Stage]:
    """Stages by name (unnamed ones by index), with continuation lines joined and ARGs resolved."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", path.read_text())
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and current is None:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            base, _, alias = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest).partition(" AS ")
            current = stages[alias.strip() or str(len(stages))] = Stage(alias.strip(), base.strip())
        else:
            assert current is not None, f"{keyword} before FROM"
            current.instructions.append((keyword, rest.strip()))
    return stages


def chain(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The target stage and the stages it builds on, innermost last."""
    found = [stages[target]]
    while found[-1].base in stages:
        found.append(stages[found[-1].base])
    return found


def effective(stages: dict[str, Stage], target: str, keyword: str) -> str | None:
    for stage in chain(stages, target):
        values = [value for key, value in stage.instructions if key == keyword]
        if values:
            return values[-1]
    return None


STAGES = parse(DOCKERFILE)
TARGETS = ["operator", "router"]


def test_the_build_is_multi_stage_with_both_targets() -> None:
    assert set(TARGETS) <= set(STAGES)
    assert "build" in STAGES
    assert all(stage.name != "build" for target in TARGETS for stage in chain(STAGES, target))


@pytest.mark.parametrize("target", TARGETS)
def test_base_image_is_pinned(target: str) -> None:
    base = chain(STAGES, target)[-1].base

    repository, _, tag = base.partition(":")
    assert repository == "python"
    assert tag
    assert "latest" not in tag
    assert re.match(r"3\.11(\.\d+)?-slim", tag), tag


@pytest.mark.parametrize("target", TARGETS)
def test_runs_as_numeric_non_root_user(target: str) -> None:
    user = effective(STAGES, target, "USER")

    assert user is not None
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)


@pytest.mark.parametrize("target", TARGETS)
def test_no_build_tools_or_package_installs_in_runtime_stages(target: str) -> None:
    for stage in chain(STAGES, target):
        for keyword, value in stage.instructions:
            if keyword == "RUN":
                assert not re.search(r"apt-get|apk |gcc|build-essential|pip install", value), value
        assert all(keyword != "COPY" or "--from=build" in value for keyword, value in stage.instructions)


def test_entrypoints_are_exec_form_and_exist() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    router = json.loads(effective(STAGES, "router", "ENTRYPOINT") or "null")
    operator = json.loads(effective(STAGES, "operator", "ENTRYPOINT") or "null")

    assert router == ["hybridroute-router"]
    assert router[0] in scripts
    assert operator[:2] == ["kopf", "run"]
    # The chart runs the same module the image's default entrypoint names.
    deployment = (ROOT / "charts/hybridroute/templates/deployment.yaml").read_text()
    module = next(arg for arg in operator if arg.startswith("--module="))
    assert f"- {module}" in deployment


def test_dockerignore_lets_only_the_package_in() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]

    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        source.rstrip("/")
        for keyword, value in STAGES["build"].instructions
        if keyword == "COPY"
        for source in value.split()[:-1]
    }
    assert copied == allowed


def test_chart_images_are_never_latest() -> None:
    values = yaml.safe_load((ROOT / "charts/hybridroute/values.yaml").read_text())

    for image in (values["image"], values["injection"]["image"], values["tests"]["image"]):
        assert image.get("tag", "") != "latest"
    assert values["tests"]["image"]["tag"]


# Real builds: e2e/images.py builds every image with buildah (cached by content hash; `make images`
# runs it before `make test`), and a throwaway containerd imports and runs them as a node would.

APP_IMAGES = ["operator", "router", "simulator", "llamacpp", "app"]


@pytest.fixture(scope="session")
def built() -> dict[str, images.Image]:
    return {image.name: image for image in images.build()}


@pytest.fixture(scope="session")
def imported(built: dict[str, images.Image], scratch_containerd: Containerd) -> Containerd:
    for image in built.values():
        scratch_containerd.ctr("images", "import", str(image.archive))
    return scratch_containerd


def test_tags_follow_the_content_of_every_input(tmp_path: Path) -> None:
    source = tmp_path / "upstream_sim.py"
    source.write_text("print('one')\n")
    spec = images.ImageSpec("sim", images.SPECS["simulator"].containerfile, context={"upstream_sim.py": source})
    first = images.image_tag(spec, "localhost/hybridroute-base:aaaa")

    source.write_text("print('two')\n")
    changed = images.image_tag(spec, "localhost/hybridroute-base:aaaa")
    source.write_text("print('one')\n")

    assert changed != first
    assert images.image_tag(spec, "localhost/hybridroute-base:aaaa") == first
    assert images.image_tag(spec, "localhost/hybridroute-base:bbbb") != first
    assert re.fullmatch(r"[0-9a-f]{16}", first)


def test_the_dockerfile_images_hash_what_dockerignore_lets_into_the_context() -> None:
    files = images.context_files(images.SPECS["router"])

    assert {"Dockerfile", ".dockerignore", "pyproject.toml", "README.md"} <= set(files)
    assert "router-sidecar/hybridroute_router/app.py" in files
    assert "operator/hybridroute_operator/render.py" in files
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]
    assert not [name for name in files if name.split("/")[0] in {"tests", "e2e", "charts", ".venv"}]


@pytest.mark.images
@pytest.mark.timeout(3600)  # a cold cache compiles llama.cpp (the fixture's build runs in this test's time)
def test_every_image_is_tagged_by_its_hash_and_a_second_build_is_a_cache_hit(built: dict[str, images.Image]) -> None:
    # A rebuild writes a new file (renamed into place); a cache hit only marks the archive as used.
    inodes = {name: image.archive.stat().st_ino for name, image in built.items()}

    again = {image.name: image for image in images.build()}

    assert set(built) == {"base", *APP_IMAGES}
    assert again == built
    for name, image in built.items():
        repository, _, tag = image.ref.rpartition(":")
        assert repository == f"localhost/hybridroute-{name}"
        assert re.fullmatch(r"[0-9a-f]{16}", tag), image.ref
        assert image.archive.name == f"{name}-{tag}.tar"
        assert image.archive.stat().st_ino == inodes[name], f"{name} was rebuilt without a change"


@pytest.mark.images
@pytest.mark.timeout(1200)
def test_a_source_change_is_a_new_tag_and_a_rebuild(built: dict[str, images.Image], tmp_path: Path) -> None:
    """The simulator with one more line: a cache miss and a new archive, then a hit for the same source.
    More changes keep the most recent builds only (other worktrees may use them), so nothing piles up."""
    source = tmp_path / "upstream_sim.py"
    variant = {"simulator-changed": dataclasses.replace(images.SPECS["simulator"], context={"upstream_sim.py": source})}
    builds: list[images.Image] = []
    try:
        for change in range(images.KEPT_BUILDS + 1):
            source.write_text((ROOT / "e2e/upstream_sim.py").read_text() + f"# change {change}\n")
            [image] = images.build(["simulator-changed"], specs=variant)
            builds.append(image)
            if change == 0:
                inode = image.archive.stat().st_ino
                [again] = images.build(["simulator-changed"], specs=variant)
                assert again == image
                assert again.archive.stat().st_ino == inode

        assert builds[0].ref.rpartition(":")[2] != built["simulator"].ref.rpartition(":")[2]
        assert len({image.ref for image in builds}) == len(builds)
        assert not builds[0].archive.exists()
        assert not images.storage().has(builds[0].ref)
        assert all(image.archive.is_file() for image in builds[1:])
        assert built["simulator"].archive.is_file()
        assert (
            images.archive_config(builds[-1].archive)["Entrypoint"]
            == images.archive_config(built["simulator"].archive)["Entrypoint"]
        )
    finally:
        for image in builds:
            images.remove(image)


@pytest.mark.images
def test_the_base_looks_like_python_slim(built: dict[str, images.Image]) -> None:
    config = images.archive_config(built["base"].archive)
    files = images.archive_files(built["base"].archive)

    assert "usr/local/bin/python" in files
    assert "usr/lib/python3.11/ensurepip/__init__.py" in files  # python -m venv works
    assert any(entry.startswith("PATH=/usr/local/bin:") or ":/usr/local/bin:" in entry for entry in config["Env"])
    assert not [name for name in files if name.startswith(("usr/share/doc/", "var/lib/apt/lists/", "dev/"))]


@pytest.mark.images
@pytest.mark.parametrize("name", APP_IMAGES)
def test_images_run_as_65532_with_bytecode_compiled_for_a_read_only_root(
    built: dict[str, images.Image], name: str
) -> None:
    config = images.archive_config(built[name].archive)
    files = images.archive_files(built[name].archive)
    sources = [path for path in files if path.startswith("opt/") and path.endswith(".py")]
    missing = [
        path
        for path in sources
        if "{}/__pycache__/{}.cpython-311.pyc".format(*path[: -len(".py")].rsplit("/", 1)) not in files
    ]

    assert config["User"] == "65532:65532"
    assert config["Entrypoint"]
    assert "PYTHONDONTWRITEBYTECODE=1" in config["Env"]
    assert len(sources) > 10
    assert missing == []


@pytest.mark.images
@pytest.mark.timeout(900)  # the first containerd test imports every archive
def test_the_operator_image_runs_its_entrypoint_as_65532(imported: Containerd, built: dict[str, images.Image]) -> None:
    help_text = imported.run(built["operator"], "operator-help", ["--help"])
    uid = imported.run(built["operator"], "operator-id", command=["id", "-u"])

    assert "Usage: kopf run" in help_text
    assert "--standalone" in help_text
    assert uid.strip() == "65532"


@pytest.mark.images
@pytest.mark.timeout(900)
def test_the_router_image_serves_the_standalone_example_from_the_simulator_images(
    imported: Containerd, built: dict[str, images.Image], tmp_path: Path
) -> None:
    """examples/standalone.yaml with its two upstreams as simulator containers: a request is routed."""
    local, cloud, router = processes.free_port(), processes.free_port(), processes.free_port()
    config = yaml.safe_load((ROOT / "examples/standalone.yaml").read_text())
    ports = {"local-sim": local, "cloud-sim": cloud}
    for endpoint in config["endpoints"]:
        endpoint["baseURL"] = f"http://127.0.0.1:{ports[endpoint['name']]}/v1"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        for name, port in ports.items():
            imported.start_container(built["simulator"], name, ["--port", str(port), "--model", name])
        imported.start_container(
            built["router"],
            "router",
            ["--config=/etc/hybridroute/config.yaml", "--host=127.0.0.1", f"--port={router}"],
            mounts=[f"type=bind,src={tmp_path / 'config.yaml'},dst=/etc/hybridroute/config.yaml,options=rbind:ro"],
            env=["CLOUD_API_KEY=sk-image-test"],
        )
        models = http_json(f"http://127.0.0.1:{local}/v1/models", imported, "local-sim")
        alive = http_json(f"http://127.0.0.1:{router}/healthz", imported, "router")
        ready = http_json(f"http://127.0.0.1:{router}/readyz", imported, "router")
        answer = http_json(
            f"http://127.0.0.1:{router}/v1/chat/completions",
            imported,
            "router",
            {"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        )

        assert [model["id"] for model in models["data"]] == ["local-sim"]
        assert alive == {"status": "ok"}
        assert ready["status"] == "ready"
        assert ready["configHash"]
        assert answer["choices"][0]["message"]["content"] == "Hello from the upstream simulator."
        assert answer["model"] == "local-sim"
    finally:
        for name in ("router", *ports):
            imported.remove(name)


@pytest.mark.images
@pytest.mark.timeout(900)
def test_the_llamacpp_image_serves_gemma_as_a_managed_endpoint_renders_it(
    imported: Containerd, built: dict[str, images.Image]
) -> None:
    """The operator's Deployment for `server: llamacpp` with this image: its args, its probe, a completion."""
    port = processes.free_port()
    spec = LocalSpec.model_validate(
        {
            "server": "llamacpp",
            "model": "gemma-3-270m",
            "image": built["llamacpp"].ref,
            "port": port,
            "maxContextTokens": 1024,
            "maxConcurrency": 1,
        }
    )
    pool = managed_pool(Owner(name="gemma", namespace="models", uid="0"), spec)
    [container] = pool.deployment["spec"]["template"]["spec"]["containers"]
    probe = container["readinessProbe"]["httpGet"]["path"]
    try:
        imported.start_container(built["llamacpp"], "llamacpp", container["args"])
        health = http_json(f"http://127.0.0.1:{port}{probe}", imported, "llamacpp", timeout=600)
        models = http_json(f"http://127.0.0.1:{port}/v1/models", imported, "llamacpp")
        completion = http_json(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            imported,
            "llamacpp",
            {"model": "gemma-3-270m", "max_tokens": 8, "messages": [{"role": "user", "content": "Say hello."}]},
        )

        assert container["image"] == built["llamacpp"].ref
        assert health == {"status": "ok"}
        assert [model["id"] for model in models["data"]] == ["gemma-3-270m"]
        assert completion["usage"]["completion_tokens"] > 0
        assert completion["choices"][0]["message"]["content"].strip()
    finally:
        imported.remove("llamacpp")


def http_json(
    url: str, containerd: Containerd, container: str, body: dict[str, Any] | None = None, timeout: float = 120
) -> Any:
    """GET (or POST `body`) until the container answers 200; its JSON. Fails with the container's log."""
    data = json.dumps(body).encode() if body is not None else None
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.load(response)
        except (urllib.error.URLError, ConnectionError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url}: {exc}\n{container} log:\n{containerd.logs(container)}") from exc
            time.sleep(0.5)
