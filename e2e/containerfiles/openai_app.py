"""An application's OpenAI client for the real-node tests: the `openai` SDK, base URL from the environment.

The SDK reads OPENAI_BASE_URL (set by the injected router sidecar) and OPENAI_API_KEY (the app's own
key, which must never reach a cloud endpoint) itself; nothing here names the router. Retries are off
(`max_retries=0`) so every error the router returns is counted, not hidden by the SDK.

    python openai_app.py ask KIND [KIND ...]   # one request per KIND, a JSON line per answer
    python openai_app.py loop                  # routine and private requests in turn until stdin closes

KIND is `routine`, `complex` or `private`. Each line: {"kind", "status", "endpoint", "reason", "content"}
for an answer, {"kind", "status", "error"} for an error status.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import openai

MESSAGES = {
    "routine": "Say hello.",
    "complex": "Analyze this architecture step by step and compare the trade-off of each design.",
    "private": "Say hello to patient 4711.",  # the tests look for 4711 where it must never arrive
}
# The policy's privacy header (the router's default header name).
PRIVATE_HEADERS = {"x-hybridroute-privacy": "private"}


def ask(client: openai.OpenAI, kind: str) -> dict[str, Any]:
    headers = PRIVATE_HEADERS if kind == "private" else {}
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="chat",
            messages=[{"role": "user", "content": MESSAGES[kind]}],
            max_tokens=8,
            extra_headers=headers,
        )
    except openai.APIStatusError as exc:
        return {"kind": kind, "status": exc.status_code, "error": exc.message}
    except openai.APIError as exc:  # no status: the connection itself failed
        return {"kind": kind, "status": 0, "error": str(exc)}
    completion = raw.parse()
    return {
        "kind": kind,
        "status": raw.http_response.status_code,
        "endpoint": raw.headers.get("x-hybridroute-endpoint"),
        "reason": raw.headers.get("x-hybridroute-reason"),
        "content": completion.choices[0].message.content,
    }


def main(argv: list[str]) -> None:
    client = openai.OpenAI(max_retries=0, timeout=60)
    if argv[:1] == ["ask"]:
        for kind in argv[1:]:
            print(json.dumps(ask(client, kind)), flush=True)
        return
    if argv != ["loop"]:
        raise SystemExit(__doc__)
    stdin_closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stdin_closed.set()), daemon=True).start()
    while not stdin_closed.is_set():
        for kind in ("routine", "private"):
            print(json.dumps({**ask(client, kind), "at": time.time()}), flush=True)
        time.sleep(0.2)


if __name__ == "__main__":
    main(sys.argv[1:])
