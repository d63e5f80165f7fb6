#!/usr/bin/env bash
# Type-checks Grafana dashboards against @grafana/schema (TypeScript, strict,
# excess properties refused) and parses every panel's PromQL with promtool.
# usage: tools/check-dashboards.sh deploy/grafana/*.json
set -euo pipefail
tools="$(cd "$(dirname "$0")" && pwd)"
[ -x "$tools/node_modules/.bin/tsc" ] || { echo "check-dashboards: run 'npm ci' in tools/ first" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ln -s "$tools/node_modules" "$work/node_modules"
cat > "$work/tsconfig.json" <<'JSON'
{"compilerOptions": {"strict": true, "noEmit": true, "module": "nodenext", "moduleResolution": "nodenext",
                     "skipLibCheck": true, "typeRoots": [], "resolveJsonModule": false},
 "include": ["*.ts"]}
JSON
for f in "$@"; do
  name="$(basename "$f" .json | tr -c 'A-Za-z0-9_\n' '_')"
  { echo 'import type { Dashboard } from "@grafana/schema";'
    printf 'export const d_%s: Dashboard = ' "$name"
    cat "$f"
    echo ';'; } > "$work/$name.ts"
done
"$tools/node_modules/.bin/tsc" -p "$work"
echo "dashboards type-check: OK ($#)"
/usr/bin/python3 "$tools/dashboard_queries.py" --rules "$work/queries.yml" "$@"
promtool check rules "$work/queries.yml" >/dev/null
echo "dashboard PromQL: OK ($(grep -c 'record:' "$work/queries.yml") queries)"
