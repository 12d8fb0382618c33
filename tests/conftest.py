"""Shared pytest configuration: each real part has its own fixture module under tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.cluster",
    "tests.fixtures.upstreams",
    "tests.fixtures.prometheus",
    "tests.fixtures.helm",
    "tests.fixtures.operator",
    "tests.fixtures.containerd",
]
