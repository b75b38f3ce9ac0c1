#!/usr/bin/env bash
# Installs the Debian packages op-sidecar's devnet, tests and benchmarks need, if missing:
# etcd (server and etcdctl) and protoc (to build etcd-client). Extra package names may be given
# as arguments. Sourced or run by deploy/devnet.sh, deploy/bench.sh and tests/run.sh.
set -euo pipefail
ensure_deps_need=()
command -v etcd >/dev/null || ensure_deps_need+=(etcd-server)
command -v etcdctl >/dev/null || ensure_deps_need+=(etcd-client)
command -v protoc >/dev/null || ensure_deps_need+=(protobuf-compiler)
# The TLS tests (etcd's, the RPC listener's, the config checks) make their certificates with openssl.
command -v openssl >/dev/null || ensure_deps_need+=(openssl)
for pkg in "$@"; do
  command -v "$pkg" >/dev/null || ensure_deps_need+=("$pkg")
done
if [ ${#ensure_deps_need[@]} -gt 0 ]; then
  echo "installing: ${ensure_deps_need[*]}"
  ensure_deps_sudo=""
  [ "$(id -u)" -ne 0 ] && ensure_deps_sudo=sudo
  $ensure_deps_sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $ensure_deps_sudo apt-get install -y -qq "${ensure_deps_need[@]}" >/dev/null
fi
