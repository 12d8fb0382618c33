# hybridroute images: one build stage, two small runtime targets. From the repository root:
#   docker build --target operator -t hybridroute-operator:dev .
#   docker build --target router   -t hybridroute-router:dev .
# Both run the same Python package (the operator imports the router's config model), so they share
# the virtualenv built once; only the entrypoint differs. The runtime stages copy that virtualenv
# onto a clean slim base: no pip cache, sources or build tools reach the images.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/hybridroute
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY router-sidecar/ router-sidecar/
# The root filesystem is read-only at runtime: compile bytecode now, never at import.
RUN /opt/hybridroute/bin/pip install . \
 && /opt/hybridroute/bin/python -m compileall -q /opt/hybridroute/lib

FROM ${PYTHON_IMAGE} AS runtime
COPY --from=build /opt/hybridroute /opt/hybridroute
ENV PATH=/opt/hybridroute/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.source="https://github.com/hybridroute/hybridroute" \
      org.opencontainers.image.licenses="Apache-2.0"
# 65532: the conventional "nonroot" uid/gid; the chart and the injected sidecar run with it too.
# It needs a passwd entry: kopf names its peering identity after the user (getpass.getuser), and a
# uid without one crashed every operator pod at start ("getpwuid(): uid not found: 65532").
RUN groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nonroot
USER 65532:65532

# The sidecar. The injector runs it as `hybridroute-router --config=... --host=127.0.0.1 --port=8040
# --metrics-host=0.0.0.0 --metrics-port=8041`: the API stays on loopback, and only /metrics, /healthz
# and /readyz (what Prometheus and the kubelet's HTTP probes use) are reachable on the pod IP.
FROM runtime AS router
LABEL org.opencontainers.image.title="hybridroute-router"
EXPOSE 8041
ENTRYPOINT ["hybridroute-router"]
CMD ["--help"]

# The operator (kopf). Last, so a plain `docker build .` yields the operator.
FROM runtime AS operator
LABEL org.opencontainers.image.title="hybridroute-operator"
EXPOSE 8080 9443
ENTRYPOINT ["kopf", "run", "--module=hybridroute_operator.main"]
CMD ["--all-namespaces", "--standalone", "--liveness=http://0.0.0.0:8080/healthz"]
