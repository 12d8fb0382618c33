#!/usr/bin/env bash
# Install the Debian packages the tests use when they are missing: prometheus (a real one, started
# by the tests); debootstrap and buildah (e2e/images.py builds the images without a Docker engine);
# the local cluster's real node: containerd + runc (the container runtime), containernetworking-plugins
# (bridge, host-local, portmap), iptables (kube-proxy), iproute2 and util-linux's nsenter (the node's
# network namespace), gcc and libc6-dev (the pause image is compiled here with gcc -static).
# Go must already be present (it builds Kubernetes, etcd and helm); say how to get it.
set -euo pipefail
missing=()
need() { command -v "$1" >/dev/null 2>&1 || [ -e "$1" ] || missing+=("$2"); }
need prometheus prometheus
need debootstrap debootstrap
need buildah buildah
need containerd containerd
need ctr containerd
need runc runc
need /usr/lib/cni/bridge containernetworking-plugins
need iptables iptables
need ip iproute2
need nsenter util-linux
need gcc gcc
[ -e "/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)/libc.a" ] || missing+=(libc6-dev)
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u | sed '/^$/d')
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    echo "error: need ${missing[*]} (Debian packages) and cannot install them without root" >&2
    exit 1
  fi
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  echo "[deps] installing ${missing[*]} from Debian" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's package starts a system prometheus on :9090; the tests run their own on free ports.
# A system containerd may keep running: the node's own has its own socket, root and state.
if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus >/dev/null 2>&1 || true; fi
command -v go >/dev/null || { echo "error: Go is needed to build the test control plane; install Go >= 1.24 (https://go.dev/doc/install)" >&2; exit 1; }
