"""The Dockerfile's required properties, checked by parsing it (no Docker engine or hadolint here).

Per target image: a pinned base (no `latest`, Python minor fixed), a numeric non-root USER, an
exec-form ENTRYPOINT naming a command the package installs, and no build tools in runtime stages.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

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
