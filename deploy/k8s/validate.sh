#!/usr/bin/env bash
# Validates deploy/k8s against the Kubernetes OpenAPI schemas (kubernetes-validate, from PyPI,
# schemas bundled: no cluster, no network beyond the package index) and the ServiceMonitor CRD
# against the vendored schema. Installs the validator into a venv under target/ if missing.
set -euo pipefail
cd "$(dirname "$0")"
venv=${K8S_VENV:-../../target/k8s-venv}
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'kubernetes-validate==1.37.0'
fi
# Native sidecars (initContainers with restartPolicy: Always) need Kubernetes 1.29 or later.
"$venv/bin/kubernetes-validate" --strict --kubernetes-version "${K8S_VERSION:-1.30.0}" \
  config.yaml secret.example.yaml service.yaml statefulset.yaml pdb.yaml
"$venv/bin/python" - servicemonitor.yaml servicemonitor.schema.json <<'PY'
import json, sys, yaml, jsonschema
doc = yaml.safe_load(open(sys.argv[1]))
jsonschema.validate(doc, json.load(open(sys.argv[2])))
print(f"{sys.argv[1]} is valid (vendored ServiceMonitor schema)")
PY
# Every file kustomization.yaml names exists.
"$venv/bin/python" - <<'PY'
import os, yaml
k = yaml.safe_load(open("kustomization.yaml"))
missing = [r for r in k["resources"] if not os.path.exists(r)]
assert not missing, f"kustomization.yaml names missing files: {missing}"
print("kustomization.yaml resources exist")
PY
