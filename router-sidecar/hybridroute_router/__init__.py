"""hybridroute router sidecar: an OpenAI-compatible proxy that routes between local and cloud LLMs.

Request path: `app` (ASGI) → `profile` → `policy.decide` → `executor` (attempts via `upstream`,
bytes via `proxy`) with `breaker`, `limiter`, `retrybudget` and `budget` as runtime state; `p95` and
`fleetbudget` read the fleet's latency and spend from Prometheus; `loader` feeds it configs (`config`
is the contract with the operator); `metrics` exports it all.
"""
