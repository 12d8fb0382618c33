"""Config sources: file (YAML/JSON, hot reload, refusal keeps the last good one), ConfigMap watch, secrets."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from kubernetes import client

from hybridroute_router.config import CONFIGMAP_KEY, ConfigError, SecretKeyRef, parse_config, secret_env_name
from hybridroute_router.loader import ConfigHolder, ConfigMapSource, FileSource, load_config_file
from hybridroute_router.secrets import SECRETS_DIR_ENV, MissingApiKey, resolve_api_key
from tests.fixtures.upstreams import endpoint, router_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "standalone.yaml"


def document(*aliases: str, url: str = "http://127.0.0.1:9/v1") -> dict[str, Any]:
    return {"modelAliases": list(aliases), "endpoints": [endpoint("local-a", url)]}


def watched(tmp_path: Path, content: dict[str, Any]) -> tuple[ConfigHolder, FileSource, Path, list[str]]:
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(content))
    holder = ConfigHolder()
    refusals: list[str] = []
    holder.on_refused(lambda source, reason: refusals.append(reason))
    return holder, FileSource(path, holder), path, refusals


def rewrite(path: Path, text: str) -> None:
    """Replace the file's content with a visibly new stat (mtime resolution can be coarse)."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_file_source_loads_then_swaps_on_change(tmp_path: Path) -> None:
    holder, source, path, _ = watched(tmp_path, document("auto"))
    swaps: list[list[str]] = []
    holder.on_swap(lambda config: swaps.append(config.model_aliases))

    assert source.check() is True
    assert source.check() is None  # unchanged file: nothing to do
    rewrite(path, yaml.safe_dump(document("auto", "fast")))
    assert source.check() is True

    assert swaps == [["auto"], ["auto", "fast"]]
    assert holder.current is not None
    assert holder.current.config_hash.startswith("sha256:")


def test_invalid_file_is_refused_and_the_last_good_config_keeps_serving(tmp_path: Path) -> None:
    holder, source, path, refusals = watched(tmp_path, document("auto"))
    source.check()
    good = holder.current

    rewrite(path, yaml.safe_dump({"endpoints": []}))
    assert source.check() is False
    rewrite(path, "endpoints: [unclosed")
    assert source.check() is False

    assert holder.current is good
    assert len(refusals) == 2
    assert "endpoints" in refusals[0]


def test_configmap_json_and_standalone_yaml_load_alike(tmp_path: Path) -> None:
    config = router_config(endpoint("local-a", "http://127.0.0.1:9/v1"))
    as_json = tmp_path / CONFIGMAP_KEY
    as_json.write_text(config.to_json())  # exactly what the operator writes into the ConfigMap
    as_yaml = tmp_path / "same.yaml"
    as_yaml.write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True, exclude={"config_hash"})))

    assert load_config_file(as_json) == load_config_file(as_yaml)


def test_a_tampered_configmap_document_is_refused(tmp_path: Path) -> None:
    config = orjson.loads(router_config(endpoint("local-a", "http://127.0.0.1:9/v1")).to_json())
    config["modelAliases"] = ["edited-by-hand"]
    path = tmp_path / CONFIGMAP_KEY
    path.write_bytes(orjson.dumps(config))

    with pytest.raises(ConfigError, match="does not match"):
        load_config_file(path)


def test_the_standalone_example_is_valid() -> None:
    config = load_config_file(EXAMPLE)

    assert {endpoint.type for endpoint in config.endpoints} == {"local", "cloud"}


def test_cli_router_hot_reloads_and_refuses_bad_documents(
    upstream_sim: Any, router_process: Any, tmp_path: Path
) -> None:
    sim = upstream_sim("local")
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(document("auto", url=sim.base_url)))
    running = router_process(path)

    def aliases() -> list[str]:
        with urllib.request.urlopen(f"{running.base_url}/models", timeout=5) as response:
            return [model["id"] for model in orjson.loads(response.read())["data"]]

    def eventually(predicate: Any, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return False

    rewrite(path, yaml.safe_dump(document("auto", "fast", url=sim.base_url)))
    assert eventually(lambda: aliases() == ["auto", "fast"])

    rewrite(path, yaml.safe_dump({"endpoints": [{"name": "Bad Name", "type": "local"}]}))
    assert eventually(lambda: "config refused" in running.log())
    with urllib.request.urlopen(f"{running.metrics_url}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert f'hybridroute_config_reload_failures_total{{source="file:{path}"}} 1.0' in metrics
    assert aliases() == ["auto", "fast"]


@pytest.mark.cluster
async def test_configmap_source_follows_the_operator_configmap(
    local_cluster: Any, kube_api: client.ApiClient, k8s_namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    first = router_config(endpoint("local-a", "http://127.0.0.1:9/v1"))
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="policy-a"), data={CONFIGMAP_KEY: first.to_json()})
    core.create_namespaced_config_map(k8s_namespace, body)
    holder = ConfigHolder()
    events: asyncio.Queue[str] = asyncio.Queue()  # listeners run on this loop (the watch thread posts to it)
    holder.on_swap(lambda config: events.put_nowait("swap"))
    holder.on_refused(lambda source, reason: events.put_nowait("refused"))
    source = ConfigMapSource(k8s_namespace, "policy-a", holder, kubeconfig=str(local_cluster.kubeconfig), retry_s=0.2)
    task = asyncio.create_task(source.run())
    try:
        assert await asyncio.wait_for(events.get(), 20) == "swap"
        assert holder.current is not None
        assert holder.current.config_hash == first.finalize().config_hash

        second = first.model_copy(update={"model_aliases": ["auto", "big"]})
        core.patch_namespaced_config_map("policy-a", k8s_namespace, {"data": {CONFIGMAP_KEY: second.to_json()}})
        assert await asyncio.wait_for(events.get(), 20) == "swap"
        assert holder.current.model_aliases == ["auto", "big"]

        core.patch_namespaced_config_map("policy-a", k8s_namespace, {"data": {CONFIGMAP_KEY: "{not json"}})
        assert await asyncio.wait_for(events.get(), 20) == "refused"
        assert holder.current.model_aliases == ["auto", "big"]
    finally:
        task.cancel()


def test_api_key_resolution_order(tmp_path: Path) -> None:
    from hybridroute_router.config import ApiKeyRef

    ref = SecretKeyRef(name="openai", key="api-key")
    (tmp_path / "openai").mkdir()
    (tmp_path / "openai" / "api-key").write_text("from-file\n")

    assert resolve_api_key(None, {}) is None
    assert resolve_api_key(ApiKeyRef(env="MY_KEY", secret_ref=ref), {"MY_KEY": "from-env"}) == "from-env"
    derived = {secret_env_name(ref): "from-derived-env"}
    assert resolve_api_key(ApiKeyRef(env="MY_KEY", secret_ref=ref), derived) == "from-derived-env"
    assert resolve_api_key(ApiKeyRef(secret_ref=ref), {SECRETS_DIR_ENV: str(tmp_path)}) == "from-file"
    with pytest.raises(MissingApiKey) as caught:
        resolve_api_key(ApiKeyRef(env="MY_KEY", secret_ref=ref), {SECRETS_DIR_ENV: str(tmp_path / "none")})
    assert "$MY_KEY" in str(caught.value)
    assert "openai/api-key" in str(caught.value)


def test_cli_file_watcher_survives_documents_that_used_to_kill_it(
    upstream_sim: Any, router_process: Any, tmp_path: Path
) -> None:
    """Deep YAML (RecursionError while parsing) and a detector pattern Python's `re` cannot compile."""
    sim = upstream_sim("local")
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(document("auto", url=sim.base_url)))
    running = router_process(path)

    def aliases() -> list[str]:
        with urllib.request.urlopen(f"{running.base_url}/models", timeout=5) as response:
            return [model["id"] for model in orjson.loads(response.read())["data"]]

    def eventually(predicate: Any, timeout: float = 15) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return False

    rewrite(path, "endpoints: " + "[" * 5000 + "]" * 5000)
    assert eventually(lambda: "config refused" in running.log())
    nested = {
        **document("auto", "nested", url=sim.base_url),
        "privacy": {"detectors": [{"name": "n", "pattern": "(" * 500 + "a" + ")" * 500}]},
    }
    rewrite(path, yaml.safe_dump(nested))
    assert eventually(lambda: aliases() == ["auto", "nested"])
    rewrite(path, yaml.safe_dump(document("auto", "later", url=sim.base_url)))
    assert eventually(lambda: aliases() == ["auto", "later"])
    with urllib.request.urlopen(f"{running.url}/readyz", timeout=5) as response:
        assert response.status == 200


def test_every_unparseable_document_is_a_config_error(tmp_path: Path) -> None:
    deep_yaml = tmp_path / "deep.yaml"
    deep_yaml.write_text("a: " + "[" * 5000 + "]" * 5000)
    with pytest.raises(ConfigError, match="does not parse"):
        load_config_file(deep_yaml)
    holder, source, path, refusals = watched(tmp_path, document("auto"))
    assert source.check() is True
    rewrite(path, "{" * 3000 + "}" * 3000)
    assert source.check() is False
    assert len(refusals) == 1
    assert holder.current is not None


def test_readyz_reports_a_stopped_background_loop(router: Any) -> None:
    class BrokenSource:
        async def run(self) -> None:
            raise RuntimeError("the watch died")

    running = router(router_config(endpoint("local-a", "http://127.0.0.1:9/v1")), sources=[BrokenSource()])

    def readyz() -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"{running.url}/readyz", timeout=5) as response:
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read())

    deadline = time.monotonic() + 10
    while readyz()[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    status, answer = readyz()
    assert status == 503
    assert answer["error"]["code"] == "router_not_ready"
    assert "BrokenSource" in answer["error"]["message"]


async def test_configmap_source_run_ends_with_the_error_when_its_thread_dies() -> None:
    class DyingWatch(ConfigMapSource):
        def _watch_forever(self) -> None:
            raise RuntimeError("watch thread died")

    source = DyingWatch("team-a", "policy", ConfigHolder())
    with pytest.raises(RuntimeError, match="watch thread died"):
        await asyncio.wait_for(source.run(), 10)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
VALID = {
    "modelAliases": ["auto"],
    "endpoints": [endpoint("local-a", "http://127.0.0.1:9/v1", maxContextTokens=4096)],
    "privacy": {"detectors": [{"name": "ticket", "pattern": "T-[0-9]+"}]},
    "circuitBreaker": {"halfOpenProbes": 2, "prometheus": {"url": "http://127.0.0.1:9090"}},
    "slo": {"ttftMs": 1000},
    "budget": {"dailyUsd": 1.0},
}


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in `node` a value sits at (dict keys and list indexes)."""
    found = [prefix]
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        found += paths(child, (*prefix, key))
    return found


@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_any_wrong_value_anywhere_is_a_refusal_never_a_crash(data: st.DataObject) -> None:
    """A random value at a random place of a valid document (or the whole document): refused or served, nothing else."""
    import copy

    holder = ConfigHolder()
    assert holder.offer(VALID, "test")
    good = holder.current
    mutated: Any = copy.deepcopy(VALID)
    where = data.draw(st.sampled_from(paths(VALID)))
    value = data.draw(JSON_VALUES)
    if where:
        parent = mutated
        for key in where[:-1]:
            parent = parent[key]
        parent[where[-1]] = value
    else:
        mutated = value
    encoded = orjson.dumps(mutated, option=orjson.OPT_NON_STR_KEYS) if data.draw(st.booleans()) else None
    try:
        accepted = holder.offer(encoded if encoded is not None else mutated, "test")
    except TypeError:  # offer() is typed for mappings and text: a non-mapping object is the caller's bug
        assume(not isinstance(mutated, dict) and encoded is None)
        return
    assert accepted in (True, False)
    if not accepted:
        assert holder.current is good


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe{not utf-8",
        b'{"endpoints": "\xed\xa0\x80"}',
        b"[]",
        b'["endpoints"]',
        b"null",
        b"42",
        b'"text"',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"endpoints": [], "modelAliases": {"$ne": 1}}',
        b'{"privacy": {"detectors": [{"name": "d", "pattern": "' + b"(" * 3000 + b"a" + b")" * 3000 + b'"}]}}',
        b'{"privacy": {"detectors": [{"name": "d", "pattern": "a{1001}"}]}}',
        b'{"privacy": {"detectors": [{"name": "d", "pattern": "(?<=a)b"}]}}',
        b'{"slo": {"ttftMs": 1e400}}',
        b'{"slo": {"ttftMs": NaN}}',
    ],
    ids=[
        "invalid-utf8",
        "lone-surrogate",
        "empty-list",
        "list",
        "null",
        "number",
        "string",
        "lists-100k-deep",
        "objects-100k-deep",
        "operator-injection",
        "regex-3000-deep",
        "regex-repeat-over-re2-cap",
        "regex-lookbehind",
        "overflowing-number",
        "nan",
    ],
)
def test_every_bad_document_is_a_config_error_and_keeps_the_last_good(raw: bytes) -> None:
    holder = ConfigHolder()
    refusals: list[str] = []
    holder.on_refused(lambda _source, reason: refusals.append(reason))
    assert holder.offer(VALID, "test")
    good = holder.current

    assert holder.offer(raw, "test") is False

    assert holder.current is good
    assert len(refusals) == 1
    with pytest.raises(ConfigError):
        parse_config(raw)


def test_a_yaml_file_whose_aliases_expand_beyond_reason_is_refused_at_once(tmp_path: Path) -> None:
    """A "billion laughs" file: ten lines, 10^9 values once expanded: refused before anything walks them.

    (The file is checked on the event loop; whatever would walk the expanded tree, validation of a
    free-form field or the config hash, would stall the router.)
    """
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]" for level in range(1, 9)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join([*levels, "endpoints: *a8", ""]))
    holder, source, _, refusals = watched(tmp_path, document("auto"))
    assert source.check() is True

    rewrite(source.path, path.read_text())

    assert source.check() is False
    assert "expands to more than" in refusals[-1]
    assert holder.current is not None
    with pytest.raises(ConfigError, match="expands to more than"):
        load_config_file(path)


def test_yaml_anchors_of_an_ordinary_config_still_load(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(
        "defaults: &local {type: local, baseURL: 'http://127.0.0.1:9/v1', maxContextTokens: 4096}\n"
        "endpoints:\n"
        "  - {<<: *local, name: local-a, model: a}\n"
        "  - {<<: *local, name: local-b, model: b}\n"
    )
    document_read = yaml.safe_load(path.read_text())
    document_read.pop("defaults")
    path.write_text(yaml.safe_dump(document_read))
    assert [endpoint.name for endpoint in load_config_file(path).endpoints] == ["local-a", "local-b"]
