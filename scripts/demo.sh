#!/usr/bin/env bash
# The main job, one command: sets up a fresh Debian 12 machine, builds, starts
# a coordinator (SQLite state) and two worker agents on loopback, submits the
# bundled fine-food reviews job (world size 2 over Gloo), watches it to
# SUCCEEDED and prints the evaluation table and where the model and reports are.
# usage: scripts/demo.sh [SPEC]   (default examples/fine_foods.yaml; for example
# examples/spdx_chat.yaml, the decoder fine-tuned on licence conversations)
set -euo pipefail
spec=$(realpath -m "${1:-$(dirname "$0")/../examples/fine_foods.yaml}")
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Only the three binaries it runs (tests and benches are scripts/test.sh's).
bash scripts/build.sh attune-coordinator attune-worker attune
export OMP_WAIT_POLICY=PASSIVE
run=runs/demo
mkdir -p "$run"
[ -f "$spec" ] || { echo "scripts/demo.sh: no spec $spec" >&2; exit 2; }
# A fresh run of the spec: its output_dir (a path under runs/) is emptied.
out=$(sed -n 's/^output_dir: *//p' "$spec")
case "$out" in *..*) ;; runs/?*) rm -rf "$out" ;; esac
rm -rf "$run/state.db" "$run/state.db-wal" "$run/state.db-shm"
# PORT if it is free, else any free port.
port_or_free() {
  /usr/bin/python3 -c 'import socket,sys
s=socket.socket()
try: s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError: s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' "$1"
}
addr=127.0.0.1:$(port_or_free 0)
# The ports deploy/prometheus/prometheus.yml scrapes, when they are free.
metrics=(127.0.0.1:$(port_or_free 9464) 127.0.0.1:$(port_or_free 9465) 127.0.0.1:$(port_or_free 9466))
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
build/bin/attune-coordinator --listen "$addr" --state "$run/state.db" --data-root "$PWD" \
  --metrics-listen "${metrics[0]}" > "$run/coordinator.log" 2>&1 &
pids+=($!)
for w in 1 2; do
  build/bin/attune-worker agent --coordinator "$addr" --worker-id "worker-$w" --cpus 1 --data-root "$PWD" \
    --work-dir "$run/agent-$w" --metrics-listen "${metrics[$w]}" > "$run/agent-$w.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 50); do build/bin/attune list --coordinator "$addr" --timeout_s 1 >/dev/null 2>&1 && break; sleep 0.2; done
echo "coordinator $addr, agents worker-1 and worker-2 (logs in $run/)"
echo "Prometheus metrics: http://${metrics[0]}/metrics (coordinator), http://${metrics[1]}/metrics and http://${metrics[2]}/metrics (agents)"
build/bin/attune submit -f "$spec" --coordinator "$addr" --watch
