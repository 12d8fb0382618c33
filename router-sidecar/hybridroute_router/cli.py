"""`hybridroute-router`: runs the sidecar under uvicorn (uvloop, httptools, one worker).

    hybridroute-router --config examples/standalone.yaml          # standalone, hot reload
    hybridroute-router --configmap team-a/my-policy               # in a pod, next to the app

Two listeners in one process and event loop:
- the API (`--host`/`--port`, 127.0.0.1:8040): the OpenAI API and explain. Port 8040 is clear of the
  usual app ports (8000, 8080) and of model servers (vLLM 8000, Ollama 11434). It binds loopback: it
  spends the pod's cloud keys, so it serves its own pod only;
- operations (`--metrics-host`/`--metrics-port`, 127.0.0.1:8041 by default): /metrics, /healthz and
  /readyz only (`opsapp`). The injected sidecar binds it to 0.0.0.0 so Prometheus can scrape it and
  the kubelet can probe it on the pod IP.
The API listener owns the process's signals and the app's lifespan; the operations listener stops
with it.

Observability beyond /metrics, both off unless asked for:
- `--audit-file PATH`: one JSON line per request to PATH (`audit`), rotated at `--audit-max-bytes`
  keeping `--audit-backups` old files; read with `hybridroute audit`;
- `--otel-traces`: one span per request over OTLP/HTTP (`tracing`), configured by the standard
  OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...).

Logs are JSON lines on stderr; the extra fields a log call passes become keys of the line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import orjson
import uvicorn

from .app import DEFAULT_MAX_BODY_BYTES, RouterApp, Source
from .audit import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, AuditTrail
from .config import ConfigError
from .loader import ConfigHolder, ConfigMapSource, FileSource, load_config_file
from .opsapp import OpsApp

DEFAULT_PORT = 8040
DEFAULT_METRICS_PORT = 8041

_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the call's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update((key, value) for key, value in vars(record).items() if key not in _RECORD_FIELDS)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def build_app(
    config_file: Path | None, configmap: str | None, kubeconfig: str | None, max_body_bytes: int
) -> RouterApp:
    """The app with its config source; a standalone file must be valid at startup (fail fast)."""
    holder = ConfigHolder()
    sources: list[Source] = []
    if config_file is not None:
        try:
            holder = ConfigHolder(load_config_file(config_file))
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        file_source = FileSource(config_file, holder)
        file_source.check()  # records the file's signature so the first poll does not reload it
        sources.append(file_source)
    if configmap is not None:
        namespace, _, name = configmap.partition("/")
        if not namespace or not name:
            raise click.BadParameter("expected NAMESPACE/NAME", param_hint="--configmap")
        sources.append(ConfigMapSource(namespace, name, holder, kubeconfig))
    return RouterApp(holder, sources=sources, max_body_bytes=max_body_bytes)


class _OpsServer(uvicorn.Server):
    """The operations listener: leaves the process's signals to the API server and stops with it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def serve(app: RouterApp, api: tuple[str, int], ops: tuple[str, int], log_level: str) -> None:
    """Run the API and operations listeners on one uvloop event loop until the API server stops."""
    common: dict[str, Any] = {
        "loop": "uvloop",
        "http": "httptools",
        "workers": 1,
        "ws": "none",  # no WebSocket on either listener: an upgrade request is plain HTTP (a 404/405 in OpenAI's shape)
        "access_log": False,  # the router logs one decision line per request instead
        "log_config": None,
        "log_level": log_level,
    }
    api_server = uvicorn.Server(uvicorn.Config(app, host=api[0], port=api[1], lifespan="on", **common))
    ops_server = _OpsServer(uvicorn.Config(OpsApp(app), host=ops[0], port=ops[1], lifespan="off", **common))

    async def both() -> None:
        ops_task = asyncio.create_task(ops_server.serve())
        try:
            await api_server.serve()
        finally:
            ops_server.should_exit = True
            await ops_task

    with asyncio.Runner(loop_factory=api_server.config.get_loop_factory()) as runner:
        runner.run(both())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Standalone config file (YAML or JSON); reloaded when it changes.",
)
@click.option("--configmap", metavar="NAMESPACE/NAME", help="Watch this ConfigMap's config.json (in a cluster).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="Kubeconfig for --configmap outside a pod.")
@click.option("--host", default="127.0.0.1", show_default=True, help="API address (keep it loopback: it spends keys).")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535), help="API port.")
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address of the /metrics, /healthz, /readyz listener (0.0.0.0 in a pod, for Prometheus and probes).",
)
@click.option("--metrics-port", default=DEFAULT_METRICS_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--max-body-bytes",
    default=DEFAULT_MAX_BODY_BYTES,
    show_default=True,
    type=click.IntRange(1),
    help="Larger request bodies get 413.",
)
@click.option(
    "--audit-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="HYBRIDROUTE_AUDIT_FILE",
    help="Append one audit record (JSON line) per request here; on a volume that outlives the container.",
)
@click.option(
    "--audit-max-bytes",
    default=DEFAULT_MAX_BYTES,
    show_default=True,
    type=click.IntRange(1024),
    help="Rotate the audit file when it would grow past this size.",
)
@click.option(
    "--audit-backups",
    default=DEFAULT_BACKUPS,
    show_default=True,
    type=click.IntRange(0),
    help="Rotated audit files kept (<file>.1 is the newest); older ones are deleted.",
)
@click.option(
    "--otel-traces/--no-otel-traces",
    default=False,
    show_default=True,
    envvar="HYBRIDROUTE_OTEL_TRACES",
    help="Export one span per request over OTLP/HTTP (endpoint etc. from the standard OTEL_* variables).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
def main(
    config_file: Path | None,
    configmap: str | None,
    kubeconfig: str | None,
    host: str,
    port: int,
    metrics_host: str,
    metrics_port: int,
    max_body_bytes: int,
    audit_file: Path | None,
    audit_max_bytes: int,
    audit_backups: int,
    otel_traces: bool,
    log_level: str,
) -> None:
    """OpenAI-compatible router sidecar: local GPU model servers first, cloud APIs when needed."""
    if (config_file is None) == (configmap is None):
        raise click.UsageError("give exactly one of --config FILE or --configmap NAMESPACE/NAME")
    configure_logging(log_level)
    if port == metrics_port:
        raise click.UsageError("--metrics-port must differ from --port: the API never shares its listener")
    app = build_app(config_file, configmap, kubeconfig, max_body_bytes)
    with contextlib.ExitStack() as stack:
        if audit_file is not None:
            try:
                trail = AuditTrail(audit_file, audit_max_bytes, audit_backups)
            except OSError as exc:
                raise click.ClickException(f"cannot open the audit file {audit_file}: {exc.strerror}") from None
            stack.callback(trail.close)
            app.executor.observers.append(trail)
            app.metrics.registry.register(trail)
        if otel_traces:
            from .tracing import start_tracing

            spans = start_tracing()
            stack.callback(spans.shutdown)
            app.executor.observers.append(spans)
            app.executor.trace_context = True
        serve(app, (host, port), (metrics_host, metrics_port), log_level)


if __name__ == "__main__":
    main()
