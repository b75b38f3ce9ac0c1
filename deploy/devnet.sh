#!/usr/bin/env bash
# Local devnet: one etcd, three simulated sequencers (op-node + op-geth), one op-sidecar each.
# Installs what is missing (Debian packages), builds, starts everything, prints where each part
# listens and how to watch it, and runs until Ctrl-C, then stops everything it started.
#
#   bash deploy/devnet.sh                 # sidecar-driven mode
#   MODE=conductor bash deploy/devnet.sh  # simulated op-nodes commit every block through their sidecar
#
# Ports (override with env): etcd 2379/2380, op-node 9545,9547,9549, op-geth 9546,9548,9550,
# sidecar RPC 8547-8549, sidecar admin 7300-7302, simulator control 9500.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
N=${NODES:-3}
MODE=${MODE:-driven}
ETCD_PORT=${ETCD_PORT:-2379}
SIM_BASE=${SIM_BASE:-9545}
SIM_CONTROL=${SIM_CONTROL:-9500}
RPC_BASE=${RPC_BASE:-8547}
ADMIN_BASE=${ADMIN_BASE:-7300}
PREFIX=${PREFIX:-/op-sidecar/devnet}
BLOCK_TIME=${BLOCK_TIME:-1s}
state=${DEVNET_DIR:-$root/.devnet}

# Every port this devnet binds, checked before anything is built or started.
ports=("$ETCD_PORT" "$((ETCD_PORT + 1))" "$SIM_CONTROL")
for ((i = 0; i < N; i++)); do
  ports+=("$((SIM_BASE + 2 * i))" "$((SIM_BASE + 2 * i + 1))" "$((RPC_BASE + i))" "$((ADMIN_BASE + i))")
done
taken=()
for p in "${ports[@]}"; do
  # Something accepts connections there (bash's /dev/tcp: no extra tool needed).
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then taken+=("$p"); fi
done
if [ ${#taken[@]} -gt 0 ]; then
  echo "error: port(s) ${taken[*]} already in use on 127.0.0.1 (another devnet still running?)." >&2
  echo "Stop whatever listens there, or move the devnet: ETCD_PORT, SIM_BASE, SIM_CONTROL, RPC_BASE, ADMIN_BASE." >&2
  exit 1
fi

bash deploy/ensure-deps.sh curl

# Cargo's own progress (one line per crate); the first build compiles ~300 crates.
echo "building op-sidecar and the op-node simulator (release; the first build takes several minutes)..."
if ! cargo build --release --bin op-sidecar -p op-sidecar --bin op-node-sim -p op-node-sim 2>&1 |
  { grep --line-buffered -E '^ *(Compiling|Finished)|^error' || true; }; then
  echo "build failed; run: cargo build --release --bin op-sidecar -p op-sidecar" >&2
  exit 1
fi
bin="$root/target/release"

rm -rf "$state"
mkdir -p "$state"
pids=()
cleanup() {
  local code=$?
  trap - INT TERM EXIT
  echo
  echo "stopping the devnet..."
  # pids: [0] etcd, [1] simulator, [2..] sidecars. Sidecars first, all at once, and wait: they
  # stop their sequencer and resign, which needs etcd. Then the simulator, then etcd.
  for ((i = 2; i < ${#pids[@]}; i++)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for ((i = 2; i < ${#pids[@]}; i++)); do wait "${pids[$i]}" 2>/dev/null || true; done
  for i in 1 0; do
    if [ -n "${pids[$i]:-}" ]; then
      kill -TERM "${pids[$i]}" 2>/dev/null || true
      wait "${pids[$i]}" 2>/dev/null || true
    fi
  done
  echo "stopped; logs are in $state"
  exit "$code"
}
trap cleanup INT TERM EXIT

# Children run in their own sessions (setsid): Ctrl-C reaches only this script, which then
# sends each child exactly one SIGTERM. Otherwise the sidecars would see Ctrl-C's SIGINT and
# then our SIGTERM as a second signal, which means "exit now" and skips the graceful resign.
setsid etcd --name devnet --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
  --initial-cluster "devnet=http://127.0.0.1:$((ETCD_PORT + 1))" --log-level error >"$state/etcd.log" 2>&1 &
pids+=($!)
etcd_pid=$!
export ETCDCTL_API=3
for _ in $(seq 50); do
  etcdctl --endpoints "http://127.0.0.1:$ETCD_PORT" endpoint health >/dev/null 2>&1 && break
  kill -0 "$etcd_pid" 2>/dev/null || { echo "etcd failed to start:"; cat "$state/etcd.log"; exit 1; }
  sleep 0.2
done

conductor_args=()
if [ "$MODE" = conductor ]; then
  urls=$(for ((i = 0; i < N; i++)); do printf 'http://127.0.0.1:%d,' $((RPC_BASE + i)); done)
  conductor_args=(--conductor-rpc "${urls%,}")
fi
setsid "$bin/op-node-sim" --nodes "$N" --block-time "$BLOCK_TIME" --base-port "$SIM_BASE" --control-port "$SIM_CONTROL" "${conductor_args[@]}" >"$state/sim.log" 2>&1 &
pids+=($!)
sleep 1

for ((i = 0; i < N; i++)); do
  RUST_LOG=${RUST_LOG:-info} setsid "$bin/op-sidecar" run \
    --server.id "seq-$i" \
    --node.rpc "http://127.0.0.1:$((SIM_BASE + 2 * i))" \
    --execution.rpc "http://127.0.0.1:$((SIM_BASE + 2 * i + 1))" \
    --etcd.endpoints "http://127.0.0.1:$ETCD_PORT" --etcd.prefix "$PREFIX" \
    --rpc.port $((RPC_BASE + i)) --admin.port $((ADMIN_BASE + i)) \
    --lease.ttl 2s --healthcheck.interval 500ms --healthcheck.unsafe-interval 4s \
    >"$state/sidecar-$i.log" 2>&1 &
  pids+=($!)
done

# "up" means a leader is producing: some sidecar answers /leader with 200 and its node's unsafe
# head (op_sidecar_unsafe_head_number) moves.
head_of() {
  curl -sf "http://127.0.0.1:$((ADMIN_BASE + $1))/metrics" 2>/dev/null |
    awk '$1 == "op_sidecar_unsafe_head_number" { print $2 }' || true
}
printf 'waiting for a leader to produce blocks'
deadline=$((SECONDS + ${UP_TIMEOUT:-90}))
leader=""
while :; do
  for ((i = 0; i < N; i++)); do
    kill -0 "${pids[$((i + 2))]}" 2>/dev/null || { echo; echo "sidecar seq-$i exited:"; tail -5 "$state/sidecar-$i.log"; exit 1; }
  done
  for ((i = 0; i < N; i++)); do
    if curl -sf -o /dev/null "http://127.0.0.1:$((ADMIN_BASE + i))/leader"; then
      first=$(head_of "$i"); sleep 1.5; second=$(head_of "$i")
      if [ -n "$first" ] && [ -n "$second" ] && [ "$second" -gt "$first" ]; then leader=$i; fi
      break
    fi
  done
  [ -n "$leader" ] && break
  if [ $SECONDS -ge $deadline ]; then
    echo; echo "error: no leader produced blocks within ${UP_TIMEOUT:-90}s; see the logs in $state" >&2
    exit 1
  fi
  printf '.'
  sleep 0.5
done
echo

cat <<EOF

op-sidecar devnet is up ($MODE mode, $N sequencers, block time $BLOCK_TIME): seq-$leader leads and produces. Logs: $state

EOF
for ((i = 0; i < N; i++)); do
  printf '  seq-%d  sidecar rpc http://127.0.0.1:%d  admin http://127.0.0.1:%d/metrics  op-node http://127.0.0.1:%d  op-geth http://127.0.0.1:%d\n' \
    "$i" $((RPC_BASE + i)) $((ADMIN_BASE + i)) $((SIM_BASE + 2 * i)) $((SIM_BASE + 2 * i + 1))
done
cat <<EOF
  etcd   http://127.0.0.1:$ETCD_PORT   simulator control http://127.0.0.1:$SIM_CONTROL

Watch the leader:
  ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:$ETCD_PORT elect -l $PREFIX/leader
  ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:$ETCD_PORT watch --prefix $PREFIX/leader/
  ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:$ETCD_PORT get --prefix $PREFIX/
See and steer the cluster:
  $bin/op-sidecar ctl --rpc http://127.0.0.1:$RPC_BASE status
  $bin/op-sidecar ctl --rpc http://127.0.0.1:$RPC_BASE transfer seq-2
Ask any sidecar:
  curl -s -XPOST -H 'content-type: application/json' http://127.0.0.1:$((RPC_BASE + 1)) -d '{"jsonrpc":"2.0","id":1,"method":"coordinator_getMaster","params":[]}'
  curl -s -XPOST -H 'content-type: application/json' http://127.0.0.1:$RPC_BASE -d '{"jsonrpc":"2.0","id":1,"method":"coordinator_setMaster","params":["seq-2"]}'
  curl -s -XPOST -H 'content-type: application/json' http://127.0.0.1:$RPC_BASE -d '{"jsonrpc":"2.0","id":1,"method":"optimism_syncStatus","params":[]}'
Break things (simulator control), then check the chain has no fork:
  curl -s -XPOST http://127.0.0.1:$SIM_CONTROL -d '{"jsonrpc":"2.0","id":1,"method":"sim_crash","params":[0]}'
  curl -s -XPOST http://127.0.0.1:$SIM_CONTROL -d '{"jsonrpc":"2.0","id":1,"method":"sim_check","params":[]}'

Ctrl-C stops everything.
EOF

# Wait until Ctrl-C, or until etcd or the simulator dies. Sidecars may be killed on purpose
# (that is how failover is explored), so their exit only gets a note.
declare -A noted=()
while true; do
  for pid in "${pids[0]}" "${pids[1]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "etcd or the simulator (pid $pid) exited; see $state"; exit 1; }
  done
  for ((i = 2; i < ${#pids[@]}; i++)); do
    if ! kill -0 "${pids[$i]}" 2>/dev/null && [ -z "${noted[$i]:-}" ]; then
      noted[$i]=1
      echo "note: sidecar seq-$((i - 2)) exited; see $state/sidecar-$((i - 2)).log"
    fi
  done
  sleep 1
done
