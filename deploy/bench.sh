#!/usr/bin/env bash
# Runs the benchmarks (tests/bench.rs) in release mode and records the results, with the date,
# machine, commit and settings, at the top of BENCHMARKS.md (earlier runs are kept below, newest
# first). Installs the Debian packages the benchmarks need when they are missing (a real etcd).
#
#   deploy/bench.sh                 # all benchmarks, 20 failover runs per fault kind
#   BENCH_RUNS=5 deploy/bench.sh    # fewer failover runs
#   BENCH_FAULTS=node-hang,node-crash deploy/bench.sh c_failover_conductor   # some fault kinds only
#   BENCH_HC_INTERVAL=100ms deploy/bench.sh c_failover   # another --healthcheck.interval (100ms)
#   BENCH_NOTE="..." deploy/bench.sh  # a free-text note recorded with the run
#   deploy/bench.sh c_failover      # only benchmarks whose name contains the filter
#   deploy/bench.sh b_commit        # commit latency at 1 KiB .. 10 MiB vs raw etcd Txns
#   deploy/bench.sh d_soak          # etcd's size over a 30 min soak of realistic blocks
#   BENCH_SOAK_MINUTES=5 deploy/bench.sh d_soak   # a short soak
#
# A run without a filter includes the 30 min soak.
#
# Numbers are whole-system loopback numbers: load generator, sidecars, simulator and etcd share
# the machine. Run it on a quiet machine: the CPU use before and after the run, and any other
# process busy during it (sampled every ~10 s), are recorded, and the run is flagged as on a
# shared machine when other work competed. Per-run failover data and the failover sidecar logs
# are kept in target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash deploy/ensure-deps.sh

runs=${BENCH_RUNS:-20}
out_dir="$root/target/bench"
mkdir -p "$out_dir"
results="$out_dir/results.md"
log="$out_dir/run.log"
: >"$results"

echo "building (release)..."
cargo test --release --locked --test bench --no-run

# Share of all CPUs busy over 2 s, and the busiest processes in that window.
cpu_busy() {
  local a b
  a=($(head -1 /proc/stat)); sleep 2; b=($(head -1 /proc/stat))
  awk -v u1="${a[1]}" -v n1="${a[2]}" -v s1="${a[3]}" -v i1="${a[4]}" -v w1="${a[5]}" -v q1="${a[6]}" -v sq1="${a[7]}" \
      -v u2="${b[1]}" -v n2="${b[2]}" -v s2="${b[3]}" -v i2="${b[4]}" -v w2="${b[5]}" -v q2="${b[6]}" -v sq2="${b[7]}" \
      'BEGIN { busy = (u2-u1)+(n2-n1)+(s2-s1)+(q2-q1)+(sq2-sq1); all = busy+(i2-i1)+(w2-w1);
               printf "%.0f%%", (all > 0 ? 100 * busy / all : 0) }'
}
busiest() {
  top -b -n 2 -d 1 -o %CPU -w 200 2>/dev/null | awk '/^top -/{n++} n==2' | sed -n '8,10p' \
    | awk '$9 > 0 {printf "%s %s%%, ", $12, $9}' | sed 's/, $//'
}

# Whether pid $1 belongs to this run (is a descendant of this script).
ours() {
  local p=$1
  while [ -n "$p" ] && [ "$p" -gt 1 ]; do
    [ "$p" -eq $$ ] && return 0
    p=$(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' ')
  done
  return 1
}
# Every ~10 s: which processes outside this run use at least 5% of a CPU ("T" = one sample).
sample_others() {
  while true; do
    echo "T"
    top -b -n 2 -d 1 -o %CPU -w 200 2>/dev/null | awk '/^top -/{n++} n==2' | sed -n '8,20p' |
      while read -r pid _ _ _ _ _ _ _ cpu _ _ cmd _; do
        awk -v c="$cpu" 'BEGIN { exit !(c >= 5) }' || continue
        ours "$pid" && continue
        echo "P $cmd $cpu"
      done
    sleep 9
  done
}

cpus=$(nproc)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
busy_before=$(cpu_busy || true)
top_before=$(busiest || true)
started=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
t_start=$(date +%s)
others="$out_dir/other-processes.txt"
sample_others >"$others" &
sampler=$!
trap 'kill "$sampler" 2>/dev/null || true' EXIT

set +e
BENCH_OUT="$results" BENCH_RUNS="$runs" BENCH_SOAK_MINUTES="${BENCH_SOAK_MINUTES:-30}" \
  cargo test --release --locked --test bench -- --ignored --nocapture --test-threads 1 "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
busy_after=$(cpu_busy || true)
top_after=$(busiest || true)
# samples, samples with another process busy, and the busiest other processes (max % of a CPU).
read -r samples foreign_samples < <(awk '$1 == "T" { n++; if (busy) f++; busy = 0 } $1 == "P" { busy = 1 }
  END { if (busy) f++; print n + 0, f + 0 }' "$others")
foreign_top=$(awk '$1 == "P" { if ($3 > m[$2]) m[$2] = $3 } END { for (c in m) printf "%s %s\n", m[c], c }' "$others" |
  sort -rn | head -5 | awk '{ printf "%s up to %s%%, ", $2, $1 }' | sed 's/, $//')
minutes=$(( ($(date +%s) - t_start + 59) / 60 ))
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
[ -n "$cpu_model" ] || cpu_model=$(uname -m)
mem_total=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then commit="$commit (with uncommitted changes)"; fi
tmp_fs=$(df --output=fstype "${TMPDIR:-/tmp}" | tail -1 | tr -d ' ')
etcd_version=$(etcd --version 2>/dev/null | head -1)
rustc_version=$(rustc --version)

# Contention: other work keeping a quarter of the CPUs busy just before or after the run, or
# another process busy in at least a tenth of the samples taken during it. (Load averages are
# recorded but not used: they include this run's own build and load generators.)
contention=$(awk -v b1="${busy_before%\%}" -v b2="${busy_after%\%}" -v n="$samples" -v f="$foreign_samples" \
  'BEGIN { print (b1 >= 25 || b2 >= 25 || (n > 0 && f / n >= 0.1)) ? "yes" : "no" }')

run_md="$out_dir/run.md"
{
  echo "## Run of $started"
  echo
  if [ "$status" -ne 0 ]; then
    echo "**The benchmark command FAILED (exit $status); the sections below are what finished.**"
    echo
  fi
  echo "- machine: \`$(uname -srm)\`, $cpus CPUs ($cpu_model), $mem_total RAM; temp dirs (etcd data) on $tmp_fs"
  echo "- software: $rustc_version, $etcd_version, release build (\`[profile.release] debug = 1\`)"
  echo "- commit: $commit"
  echo "- command: \`deploy/bench.sh${*:+ $*}\` (BENCH_RUNS=$runs${BENCH_SOAK_MINUTES:+, BENCH_SOAK_MINUTES=$BENCH_SOAK_MINUTES}${BENCH_FAULTS:+, BENCH_FAULTS=$BENCH_FAULTS}${BENCH_HC_INTERVAL:+, BENCH_HC_INTERVAL=$BENCH_HC_INTERVAL}), $minutes min"
  echo "- before the run: load average (1/5/15 min) $load_before, CPUs busy over 2 s: $busy_before${top_before:+ ($top_before)}"
  echo "- after the run: load average $load_after, CPUs busy over 2 s: $busy_after${top_after:+ ($top_after)}"
  echo "- during the run: another process used ≥ 5% of a CPU in $foreign_samples of $samples samples (every ~10 s)${foreign_top:+: $foreign_top}"
  if [ "$contention" = yes ]; then
    echo "- **shared machine**: other work competed for the CPUs around this run (see the load figures above and in each section), so absolute numbers are pessimistic; the same-run baselines remain comparable"
  fi
  if [ -n "${BENCH_NOTE:-}" ]; then
    echo "- note: $BENCH_NOTE"
  fi
  echo
  cat "$results"
} >"$run_md"

bench_md="$root/BENCHMARKS.md"
{
  echo "# op-sidecar benchmarks"
  echo
  echo "Produced by \`deploy/bench.sh\` (the \`#[ignore]\`d benchmarks in \`tests/bench.rs\`, release build)."
  echo "Each run records its date, machine and commit; every sidecar number is set against a baseline"
  echo "measured in the same run (a direct call to the simulated op-node, a raw etcd Txn)."
  echo "Newest run first."
  echo
  cat "$run_md"
  if [ -f "$bench_md" ]; then
    # Earlier sections (runs, and fault campaigns recorded by hand): everything from the first
    # second-level heading of the previous file on.
    awk 'found || /^## /{found=1; print}' "$bench_md"
  fi
} >"$bench_md.new"
mv "$bench_md.new" "$bench_md"

echo
echo "results written to BENCHMARKS.md (this run also in $run_md; log in $log)"
exit "$status"
