"""`hybridroute validate`: samples pass; every malformed manifest fails, naming its file and field.

The malformed manifests in tests/manifests/invalid/ are shared with test_crd_validation.py, where the
real API server must reject each one too. Each file's first line says which field is wrong:
`# expect: spec.cloud.apiKeySecretRef`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hybridroute_operator.usercli import hybridroute
from hybridroute_operator.validate import check_file, validate_paths

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = REPO_ROOT / "crds" / "samples"
INVALID_DIR = REPO_ROOT / "tests" / "manifests" / "invalid"


def expected_field(manifest: Path) -> str:
    """The field path a malformed manifest's header comment says is wrong."""
    first_line = manifest.read_text().splitlines()[0]
    assert first_line.startswith("# expect: "), f"{manifest.name} must start with '# expect: <field path>'"
    return first_line.removeprefix("# expect: ").strip()


INVALID_MANIFESTS = sorted(INVALID_DIR.glob("*.yaml"))


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(hybridroute, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_samples_pass() -> None:
    code, out, err = _run("validate", str(SAMPLES))
    assert (code, out) == (0, "")
    assert "checked 4 manifest(s) in 4 file(s): all valid" in err


def test_there_are_at_least_a_dozen_malformed_manifests() -> None:
    assert len(INVALID_MANIFESTS) >= 12


@pytest.mark.parametrize("manifest", INVALID_MANIFESTS, ids=lambda path: path.stem)
def test_each_malformed_manifest_fails_naming_file_and_field(manifest: Path) -> None:
    code, out, _ = _run("validate", str(manifest))
    assert code == 1
    lines = out.splitlines()
    assert lines, "no problem reported"
    field = expected_field(manifest)
    assert any(line.startswith(f"{manifest}:0: ") and f": {field}: " in line for line in lines), out


def test_a_directory_reports_every_file_and_fails() -> None:
    report = validate_paths([INVALID_DIR])
    assert report.files == report.checked == len(INVALID_MANIFESTS)
    assert {problem.source for problem in report.problems} == {str(path) for path in INVALID_MANIFESTS}
    assert not report.ok


def test_multi_document_files_report_the_document_index_and_skip_other_kinds(tmp_path: Path) -> None:
    manifest = tmp_path / "stack.yaml"
    manifest.write_text(
        (SAMPLES / "cloud-openai.yaml").read_text()  # a Secret (skipped) and a valid endpoint
        + "---\n"
        + (INVALID_DIR / "ie-replicas-out-of-range.yaml").read_text()
        + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: not-ours}\nspec: {replicas: -5}\n"
    )
    checked, problems = check_file(manifest)
    assert checked == 2
    assert [str(problem) for problem in problems] == [
        f"{manifest}:2: InferenceEndpoint/bad-replicas: spec.local.replicas: Input should be less than or equal to 100"
    ]


def test_list_duplicates_and_cross_field_problems_are_all_reported(tmp_path: Path) -> None:
    manifest = tmp_path / "policy.yaml"
    manifest.write_text(
        "apiVersion: hybridroute.io/v1alpha1\nkind: RoutingPolicy\nmetadata: {name: p}\n"
        "spec:\n  endpoints: [{name: a}, {name: a}]\n  modelAliases: [auto, auto]\n"
        "  circuitBreaker: {openSeconds: 30, maxOpenSeconds: 20}\n"
    )
    _, problems = check_file(manifest)
    assert [(problem.field, problem.message) for problem in problems] == [
        ("spec.circuitBreaker.openSeconds", "openSeconds must not exceed maxOpenSeconds"),
        ("spec.endpoints[1]", "duplicate value: name='a'"),
        ("spec.modelAliases[1]", "duplicate value: 'auto'"),
    ]


def test_yaml_syntax_errors_are_problems_too(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: InferenceEndpoint\nspec: [unclosed\n")
    code, out, _ = _run("validate", str(broken))
    assert code == 1
    assert out.startswith(f"{broken}:0: <file>/<unreadable>: <document>: ")


def test_missing_path_is_a_usage_error() -> None:
    code, _, err = _run("validate", "/nonexistent/manifests")
    assert code == 2
    assert "does not exist" in err


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "hybridroute"
    result = subprocess.run(
        [str(script), "validate", str(INVALID_DIR / "rp-without-endpoints.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "RoutingPolicy/bad-no-endpoints: spec.endpoints: set endpoints" in result.stdout


def test_detector_patterns_the_router_engine_refuses_fail_offline(tmp_path: Path) -> None:
    """The API server takes any string as a pattern; the offline check compiles it on RE2 like the router."""
    manifest = tmp_path / "policy.yaml"
    manifest.write_text(
        """
apiVersion: hybridroute.io/v1alpha1
kind: RoutingPolicy
metadata: {name: guarded}
spec:
  endpoints: [{name: local}]
  privacy:
    detectors:
      - {name: fine, pattern: 'EMP-\\d{6}'}
      - {name: lookahead, pattern: '(?=secret)\\w+'}
"""
    )

    report = validate_paths([manifest])

    assert not report.ok
    problems = [(problem.field, problem.message) for problem in report.problems]
    assert problems == [
        (
            "spec.privacy.detectors[1].pattern",
            "detector lookahead: not supported by the RE2 engine: invalid perl operator: (?=",
        )
    ]
