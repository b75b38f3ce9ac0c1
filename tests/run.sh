#!/usr/bin/env bash
# Runs the whole test suite. Installs the Debian packages the tests need when they are missing
# (the tests start their own etcd and fail, not skip, without it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/ensure-deps.sh
cargo test --workspace --locked "$@"
