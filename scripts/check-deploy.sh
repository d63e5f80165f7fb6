#!/usr/bin/env bash
# Checks everything under deploy/ offline, layer by layer:
#   kustomize render -> yamllint -> Kubernetes/operator schemas -> project rules,
#   promtool (config, rules, rule unit tests), dashboards (types, PromQL),
#   the PrometheusRule in sync with rules.yml.
# Run by ctest (label deploy). Needs scripts/install-deps.sh; kubectl comes
# with the machine image (not from Debian: its kustomize is too old).
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
step() { printf '== %s\n' "$*"; }

for tool in promtool yamllint node; do
  command -v "$tool" >/dev/null || { echo "check-deploy: $tool not found (run scripts/install-deps.sh)" >&2; exit 1; }
done

step "yamllint"
yamllint -s -c .yamllint.yaml deploy/ examples/

step "promtool: config, rules, rule unit tests"
promtool check config deploy/prometheus/prometheus.yml
promtool test rules deploy/prometheus/rules_test.yml
/usr/bin/python3 tools/prometheus_rule.py --check

step "dashboards"
/usr/bin/python3 tools/make_dashboards.py --check
tools/check-dashboards.sh deploy/grafana/*.json

if ! command -v kubectl >/dev/null; then
  echo "check-deploy: kubectl not found: Kubernetes manifests NOT checked" >&2
  exit 77  # ctest: skipped
fi
for overlay in deploy/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  step "kustomize + schemas: $name"
  kubectl kustomize "$overlay" > "$work/$name.yaml"
  node tools/validate-k8s.mjs < "$work/$name.yaml"
  yamllint -s -d '{extends: default, rules: {document-start: disable, line-length: disable, indentation: disable}}' \
    "$work/$name.yaml"
  # Project rules the schemas cannot express.
  /usr/bin/python3 - "$work/$name.yaml" "$name" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
overlay = sys.argv[2]
errors = []
for d in docs:
    spec = d.get("spec", {}).get("template", {}).get("spec")
    if not spec:
        continue
    where = f'{d["kind"]}/{d["metadata"]["name"]}'
    for c in spec.get("containers", []):
        r = c.get("resources", {})
        if "cpu" not in r.get("requests", {}) or "memory" not in r.get("limits", {}):
            errors.append(f"{where}/{c['name']}: needs requests.cpu and limits.memory")
        for probe in ("readinessProbe", "livenessProbe"):
            port = c.get(probe, {}).get("grpc", {}).get("port")
            if port is not None and not isinstance(port, int):
                errors.append(f"{where}/{c['name']}: {probe}.grpc.port must be a number")
        if overlay == "gpu" and d["metadata"]["name"] == "worker":
            if r.get("limits", {}).get("nvidia.com/gpu") is None:
                errors.append(f"{where}/{c['name']}: GPU workers need nvidia.com/gpu in limits")
    if d["kind"] == "Deployment" and d["metadata"]["name"] == "coordinator":
        if d["spec"].get("replicas") != 1 or d["spec"].get("strategy", {}).get("type") != "Recreate":
            errors.append(f"{where}: one replica with strategy Recreate (SQLite has one writer)")
for e in errors:
    print("FAIL", e)
if errors:
    sys.exit(1)
print(f"project rules: OK ({len(docs)} documents)")
PY
done
step "deploy/: all checks passed"
