"""examples/standalone.yaml, run the way its header says: the router CLI answering the `openai` SDK.

The example's two upstreams are our simulator on fixed ports; here they run on free ports and the
example's base URLs are pointed at them. Everything else — endpoints, privacy detectors, SLO,
fallback, the API-key reference — is the example as shipped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from e2e.upstream_sim import UpstreamSim
from tests.fixtures.upstreams import RouterProcess

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "standalone.yaml"
CLOUD_KEY = "sk-demo-standalone-key"


def test_standalone_example_answers_the_openai_sdk(
    upstream_sim: Callable[..., UpstreamSim],
    router_process: Callable[..., RouterProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    sims = {entry["name"]: upstream_sim(entry["name"]) for entry in document["endpoints"]}
    for entry in document["endpoints"]:
        entry["baseURL"] = sims[entry["name"]].base_url
    config = tmp_path / "standalone.yaml"
    config.write_text(yaml.safe_dump(document))
    monkeypatch.setenv("CLOUD_API_KEY", CLOUD_KEY)  # the example's cloud endpoint reads its key from here
    running = router_process(config)
    with openai.OpenAI(base_url=running.base_url, api_key="the-app-s-own-key", max_retries=0) as sdk:
        ask_the_router(sdk, sims)


def ask_the_router(sdk: openai.OpenAI, sims: dict[str, UpstreamSim]) -> None:

    routine = sdk.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Say hello."}]
    )
    assert routine.headers["x-hybridroute-endpoint"] == "local-sim"
    assert routine.parse().choices[0].message.content

    private = sdk.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Write to jane.doe@example.com and analyze the plan."}]
    )
    assert private.headers["x-hybridroute-endpoint"] == "local-sim"  # e-mail detector: local only

    complex_request = sdk.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "Analyze and compare both architectures step by step, then plan."}],
    )
    assert complex_request.headers["x-hybridroute-endpoint"] == "cloud-sim"
    cloud_seen = sims["cloud-sim"].requests[-1]
    assert cloud_seen.headers["authorization"] == f"Bearer {CLOUD_KEY}"  # never the app's own key
    assert all("the-app-s-own-key" not in str(r.headers) for sim in sims.values() for r in sim.requests)
    assert all("jane.doe" not in str(r.body) for r in sims["cloud-sim"].requests)

    streamed = sdk.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Say hello."}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert text == sims["local-sim"].behavior.content
