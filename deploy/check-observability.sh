#!/usr/bin/env bash
# Checks the alert rules (promtool check + unit tests), that the Grafana dashboard is valid JSON
# with unique panel ids, and that every op_sidecar_* metric the rules and the dashboard use is
# registered in src/metrics.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
promtool check rules deploy/prometheus/op-sidecar-alerts.yml
(cd deploy/prometheus && promtool test rules op-sidecar-alerts.test.yml)
python3 - <<'PY'
import json, re, sys
d = json.load(open("deploy/grafana/op-sidecar.json"))
ids = [p["id"] for p in d["panels"]]
assert len(ids) == len(set(ids)), f"duplicate panel ids {ids}"
used = set(re.findall(r"op_sidecar_[a-z_]+", open("deploy/grafana/op-sidecar.json").read()))
used |= set(re.findall(r"op_sidecar_[a-z_]+", open("deploy/prometheus/op-sidecar-alerts.yml").read()))
src = open("src/metrics.rs").read()
registered = {"op_sidecar_" + n for n in re.findall(r'register\(\s*"([a-z_]+)"', src)}
def base(m):
    for suffix in ("_total", "_bucket", "_sum", "_count"):
        if m.endswith(suffix) and m[: -len(suffix)] in registered:
            return m[: -len(suffix)]
    return m
missing = sorted(m for m in used if base(m) not in registered)
if missing:
    sys.exit(f"metrics used by the dashboard or alerts but not registered: {missing}")
print(f"dashboard and alerts use {len(used)} metric names, all registered")
PY
