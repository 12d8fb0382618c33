"""Where the served config comes from: a file (standalone, hot reload) or the operator's ConfigMap.

Every source hands raw documents to one `ConfigHolder`, which validates them with `parse_config`,
refuses anything invalid (one log line without document content, a metric via `on_refused`) while
the last good config keeps serving, and swaps a valid one in with a single reference assignment.
Requests read `holder.current` once and keep that object for their whole life, so a swap never
changes a config under a request.

File source: polls the file's (mtime, size, inode) once a second. A stat per second costs nothing,
needs no extra dependency, and also sees the atomic symlink swap Kubernetes uses for mounted
ConfigMaps, which inotify-based watchers can miss.

ConfigMap source: the `kubernetes` client's list+watch in a daemon thread (imported lazily so a
standalone router never pays its import time or memory); documents are posted back to the event
loop. A watch that ends or fails is re-listed after a short backoff.

No source dies from one bad input: every document problem is a `ConfigError` (a refusal), and each
source's loop survives anything else an iteration raises. Should a source stop anyway (its thread
died), its `run` ends with the error, and the app reports itself not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import orjson
import yaml

from .config import CONFIGMAP_KEY, ConfigError, RouterConfig, parse_config

log = logging.getLogger("hybridroute.router.loader")

SwapListener = Callable[[RouterConfig], None]
RefusalListener = Callable[[str, str], None]


MAX_CONFIG_VALUES = 1_000_000
"""Values a standalone config file may expand to; real configs hold thousands at most."""


class ConfigHolder:
    """The config being served, plus the listeners told about swaps and refusals."""

    def __init__(self, initial: RouterConfig | None = None) -> None:
        self.current: RouterConfig | None = initial
        self._on_swap: list[SwapListener] = []
        self._on_refused: list[RefusalListener] = []

    def on_swap(self, listener: SwapListener) -> None:
        self._on_swap.append(listener)
        if self.current is not None:
            listener(self.current)

    def on_refused(self, listener: RefusalListener) -> None:
        self._on_refused.append(listener)

    def offer(self, document: bytes | str | dict[str, Any], source: str) -> bool:
        """Validate and serve `document`; False (last good config kept) when it is refused."""
        try:
            config = parse_config(document)
        except ConfigError as exc:
            self.refuse(source, str(exc))
            return False
        if self.current is not None and self.current.config_hash == config.config_hash:
            return True
        self.current = config  # the atomic swap: one reference assignment
        log.info(
            "config loaded",
            extra={"source": source, "policy": config.policy.name, "config_hash": config.config_hash},
        )
        for listener in self._on_swap:
            listener(config)
        return True

    def refuse(self, source: str, reason: str) -> None:
        # Validation messages name fields and constraints only; documents hold secret references, never keys.
        log.error("config refused; keeping the last good one", extra={"source": source, "reason": reason})
        for listener in self._on_refused:
            listener(source, reason)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a standalone config (YAML or JSON, camelCase fields) as a mapping; raise ConfigError."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        document = orjson.loads(raw) if path.suffix == ".json" else yaml.safe_load(raw)
    except Exception as exc:  # YAMLError, JSONDecodeError, RecursionError on deep nesting: all refusals
        raise ConfigError(f"{path} does not parse: {type(exc).__name__}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path} must hold a mapping")
    if _expands_beyond(document, MAX_CONFIG_VALUES):
        raise ConfigError(f"{path} expands to more than {MAX_CONFIG_VALUES} values (YAML aliases nested in aliases?)")
    return document


def _expands_beyond(document: Any, limit: int) -> bool:
    """True when `document`, with every YAML alias expanded, holds more than `limit` values.

    A few lines of nested aliases (a "billion laughs" file) load as a small graph of shared objects,
    but validation walks the expanded tree: counted here first, stopping at `limit`.
    """
    count, stack = 0, [document]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def load_config_file(path: Path) -> RouterConfig:
    """Read and validate a config file once (startup): the caller decides what a failure means."""
    return parse_config(read_config_file(path))


class FileSource:
    """Hot reload of a config file by polling its stat once per `interval_s`."""

    def __init__(self, path: Path, holder: ConfigHolder, interval_s: float = 1.0) -> None:
        self.path = path
        self.holder = holder
        self.interval_s = interval_s
        self._seen: tuple[int, int, int] | None = None

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def check(self) -> bool | None:
        """Reload when the file changed: True/False for accepted/refused, None when unchanged."""
        signature = self._signature()
        if signature is None or signature == self._seen:
            return None
        self._seen = signature
        source = f"file:{self.path}"
        try:
            document = read_config_file(self.path)
        except ConfigError as exc:
            self.holder.refuse(source, str(exc))
            return False
        return self.holder.offer(document, source)

    async def run(self) -> None:
        while True:
            try:
                self.check()
            except Exception as exc:  # a listener's bug must not end hot reload for good
                log.error(
                    "config file check failed", extra={"source": f"file:{self.path}", "error": type(exc).__name__}
                )
            await asyncio.sleep(self.interval_s)


class ConfigMapSource:
    """Watches one ConfigMap's `config.json` through the Kubernetes API in a daemon thread."""

    def __init__(
        self, namespace: str, name: str, holder: ConfigHolder, kubeconfig: str | None = None, retry_s: float = 2.0
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.holder = holder
        self.kubeconfig = kubeconfig
        self.retry_s = retry_s
        self.source = f"configmap:{namespace}/{name}"
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop, ended: asyncio.Future[None] | None = None) -> None:
        """Start the watch thread; `ended` (a future of `loop`) settles when the thread stops, with its error."""
        self._loop = loop

        def watch() -> None:
            error: BaseException | None = None
            try:
                self._watch_forever()
            except BaseException as exc:  # handed to `run`, which raises it on the loop
                error = exc
            finally:
                if ended is not None and not loop.is_closed():
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                        loop.call_soon_threadsafe(_settle, ended, error)

        threading.Thread(target=watch, name="configmap-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Watch until cancelled (the app's lifespan runs every source as a task); raise if the thread dies."""
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.start(asyncio.get_running_loop(), ended)
        try:
            await ended
        finally:
            self.stop()

    def _deliver(self, configmap: Any) -> None:
        data = (configmap.data or {}) if configmap is not None else {}
        document = data.get(CONFIGMAP_KEY)
        assert self._loop is not None
        if document is None:
            self._loop.call_soon_threadsafe(self.holder.refuse, self.source, f"ConfigMap has no {CONFIGMAP_KEY} key")
        else:
            self._loop.call_soon_threadsafe(self.holder.offer, document, self.source)

    def _watch_forever(self) -> None:
        # Lazy: only a ConfigMap-watching router pays for the kubernetes client. Typed as Any because
        # the client's generated stubs leave these calls untyped.
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        kube_config: Any = importlib.import_module("kubernetes.config")
        kube_watch: Any = importlib.import_module("kubernetes.watch")
        selector = f"metadata.name={self.name}"
        api: Any = None
        while not self._stop.is_set():
            try:
                if api is None:
                    api = self._api(client, kube_config)
                listing = api.list_namespaced_config_map(self.namespace, field_selector=selector)
                for item in listing.items:
                    self._deliver(item)
                stream = kube_watch.Watch().stream(
                    api.list_namespaced_config_map,
                    self.namespace,
                    field_selector=selector,
                    resource_version=cast(Any, listing.metadata).resource_version,
                    timeout_seconds=30,
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._deliver(event["object"])
                    elif event["type"] == "DELETED":
                        log.warning("configmap deleted; keeping the last good config", extra={"source": self.source})
            except ApiException as exc:
                log.warning("configmap watch failed", extra={"source": self.source, "status": exc.status})
                self._stop.wait(self.retry_s)
            except Exception as exc:  # network trouble, an unreadable kubeconfig: the thread survives, retries
                log.warning("configmap watch failed", extra={"source": self.source, "error": type(exc).__name__})
                self._stop.wait(self.retry_s)

    def _api(self, client: Any, kube_config: Any) -> Any:
        # A client of its own: loading into the global default would change every other client in the process.
        configuration = client.Configuration()
        try:
            kube_config.load_incluster_config(client_configuration=configuration)
        except kube_config.ConfigException:
            kube_config.load_kube_config(config_file=self.kubeconfig, client_configuration=configuration)
        return client.CoreV1Api(client.ApiClient(configuration))


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
