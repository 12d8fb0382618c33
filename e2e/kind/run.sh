#!/usr/bin/env bash
# End-to-end run on a real kind cluster: create the cluster, build and load both images, install the
# chart, run `helm test`, apply a policy and an app, and check that the app got its router sidecar
# and can list models through it. Needs Docker, kind, kubectl and helm. Not part of `make test`.
#
#   e2e/kind/run.sh            # creates cluster "hybridroute-e2e", deletes it at the end
#   KEEP_CLUSTER=1 e2e/kind/run.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CLUSTER=${KIND_CLUSTER:-hybridroute-e2e}
NAMESPACE=hybridroute-system
APP_NAMESPACE=hybridroute-e2e
TAG=${IMAGE_TAG:-e2e-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo local)}

die() { echo "e2e/kind: $*" >&2; exit 1; }
step() { echo; echo "==> $*"; }

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed; this script needs docker, kind, kubectl and helm (see e2e/kind/README.md)"
done
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (docker info failed); start Docker and run again. Nothing was run, so nothing passed."

if ! kind get clusters | grep -qx "$CLUSTER"; then
  step "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config "$ROOT/e2e/kind/cluster.yaml" --wait 120s
fi
if [[ -z "${KEEP_CLUSTER:-}" ]]; then
  trap 'kind delete cluster --name "$CLUSTER"' EXIT
fi
export KUBECONFIG
KUBECONFIG=$(mktemp)
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"

step "building images (tag $TAG)"
docker build --target operator -t "hybridroute-operator:$TAG" "$ROOT"
docker build --target router -t "hybridroute-router:$TAG" "$ROOT"
kind load docker-image --name "$CLUSTER" "hybridroute-operator:$TAG" "hybridroute-router:$TAG"

step "installing the chart"
helm upgrade --install hybridroute "$ROOT/charts/hybridroute" \
  --namespace "$NAMESPACE" --create-namespace \
  --set image.repository=hybridroute-operator --set image.tag="$TAG" --set image.pullPolicy=Never \
  --set injection.image.repository=hybridroute-router --set injection.image.tag="$TAG" \
  --set injection.image.pullPolicy=Never \
  --wait --timeout 5m
helm test hybridroute --namespace "$NAMESPACE" --logs --timeout 3m

step "applying the e2e policy and app"
kubectl create namespace "$APP_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$APP_NAMESPACE" apply -f "$ROOT/e2e/kind/demo.yaml"
# Compiled and published; not Ready, honestly: its one endpoint has nothing listening (NoEndpointsReady).
kubectl -n "$APP_NAMESPACE" wait --for=jsonpath='{.status.conditions[?(@.type=="Ready")].reason}'=NoEndpointsReady \
  rp/e2e --timeout 120s
kubectl -n "$APP_NAMESPACE" get configmap e2e >/dev/null
kubectl -n "$APP_NAMESPACE" rollout status deployment/app --timeout 180s

step "checking the injected Pod"
pod=$(kubectl -n "$APP_NAMESPACE" get pod -l app=e2e -o jsonpath='{.items[0].metadata.name}')
sidecar=$(kubectl -n "$APP_NAMESPACE" get pod "$pod" -o jsonpath='{.spec.initContainers[0].name}')
[[ "$sidecar" == hybridroute-router ]] || die "pod $pod has no router sidecar (first init container: '$sidecar')"
base_url=$(kubectl -n "$APP_NAMESPACE" exec "$pod" -c app -- printenv OPENAI_BASE_URL)
[[ "$base_url" == http://127.0.0.1:8040/v1 ]] || die "OPENAI_BASE_URL is '$base_url'"
models=$(kubectl -n "$APP_NAMESPACE" exec "$pod" -c app -- curl -fsS "$base_url/models")
grep -q '"auto"' <<<"$models" || die "the router did not list the 'auto' alias: $models"
kubectl -n "$APP_NAMESPACE" get ie,rp

echo
echo "e2e/kind: all checks passed on cluster $CLUSTER"
