"""The operations listener's ASGI app: /metrics, /healthz and /readyz, on a port of their own.

The API port spends the pod's cloud keys, so it binds loopback and serves the pod it sits in only.
Prometheus and the kubelet must reach the pod IP, so these three read-only paths get their own
listener (`--metrics-host`/`--metrics-port`, 0.0.0.0:8041 in an injected pod). Nothing here reads a
request body, reaches an upstream or explains a decision: every other path is a 404.

    GET /metrics    Prometheus text format
    GET /healthz    the process is up
    GET /readyz     a valid config is loaded and every background loop runs (else 503)
"""

from __future__ import annotations

from .app import RouterApp, guarded
from .asgi import Receive, Scope, Send, respond
from .errors import MethodNotAllowed, NotFound, RouterError


class OpsApp:
    """Serves the operations paths of one `RouterApp` (its metrics registry and readiness)."""

    def __init__(self, router: RouterApp) -> None:
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # run with lifespan off: the API listener owns the router's lifespan
        await guarded(self._route, scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        try:
            if path not in ("/metrics", "/healthz", "/readyz"):
                raise NotFound(f"no route for {scope['method']} {path} on the metrics listener")
            if scope["method"] not in ("GET", "HEAD"):
                raise MethodNotAllowed("use GET")
            if path == "/metrics":
                metrics = self.router.metrics
                await respond(send, 200, metrics.render(), [(b"content-type", metrics.content_type.encode())])
            elif path == "/healthz":
                await respond(send, 200, b'{"status":"ok"}')
            else:
                await respond(send, 200, self.router.readiness(self.router.holder.current))
        except RouterError as exc:
            await respond(send, exc.status, exc.body())
