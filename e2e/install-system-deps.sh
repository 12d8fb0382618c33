#!/usr/bin/env bash
# Install the Debian packages the tests use when they are missing: prometheus (a real one, started
# by the tests); debootstrap and buildah (e2e/images.py builds the images without a Docker engine);
# containerd and runc (tests/test_images.py imports and runs those images). Go must already be
# present (it builds kube-apiserver, etcd and helm); say how to get it.
set -euo pipefail
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
command -v runc >/dev/null 2>&1 || missing+=(runc)
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
if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus >/dev/null 2>&1 || true; fi
command -v go >/dev/null || { echo "error: Go is needed to build the test control plane; install Go >= 1.24 (https://go.dev/doc/install)" >&2; exit 1; }
