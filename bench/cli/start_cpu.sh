#!/usr/bin/env bash
# CPU per container start of berthd and what it spawns (the inits and their commands: perf
# stat's counters follow the threads and processes made after it attaches), A/B in one run:
# `perf stat` of each build's berthd over RUNS `berth run --rm --network NET true` (bridge),
# alternating the builds ROUNDS times. Counts task-clock, context switches and write/openat
# system calls (a restarted system call counts again: a sysctl handler spinning on
# `rtnl_trylock` shows as writes).
# Usage (root, perf installed): bench/cli/start_cpu.sh RUNS A_BIN_DIR B_BIN_DIR [ROUNDS]
# Each berthd runs in a network namespace this script creates (bcpu<pid>a / bcpu<pid>b) and
# removes; the machine's own network is never touched.
set -euo pipefail
runs="${1:-100}"
A="${2:?A_BIN_DIR}"
B="${3:?B_BIN_DIR}"
rounds="${4:-2}"
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 2; }
dir="$(mktemp -d /tmp/bsc.XXXXXX)"
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    for t in a b; do ip netns del "bcpu$$$t" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
one() { # tag bin subnet
    local ns="bcpu$$$1" sock="$dir/$1.sock"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    rm -rf "$dir/$1"
    ip netns exec "$ns" "$2/berthd" --state-dir "$dir/$1/state" --socket "$sock" \
        --log-level warn >"$dir/$1.log" 2>&1 &
    pid=$!
    for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
    "$2/berth" -H "unix://$sock" network create --subnet "$3" n >/dev/null
    # Warm-up, not counted.
    for _ in 1 2 3; do "$2/berth" -H "unix://$sock" run --rm --network n true; done
    perf stat -x, -e 'task-clock,context-switches,syscalls:sys_enter_write,syscalls:sys_enter_openat' \
        -p "$pid" -o "$dir/stat" &
    local perf_pid=$!
    sleep 0.3
    for _ in $(seq "$runs"); do "$2/berth" -H "unix://$sock" run --rm --network n true; done
    kill -INT "$perf_pid"; wait "$perf_pid" || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
    pid=""
    ip netns del "$ns"
    rm -f "$sock"
    # Per start: task-clock in ms, the others as counts.
    awk -F, -v n="$runs" -v tag="$1" -v load="$(cut -d' ' -f1 /proc/loadavg)" '
        $3 == "task-clock" {c = $1 / n}
        $3 == "context-switches" {s = $1 / n}
        $3 ~ /sys_enter_write/ {w = $1 / n}
        $3 ~ /sys_enter_openat/ {o = $1 / n}
        END {printf "| %s | %.2f | %.0f | %.0f | %.0f | %s |\n", tag, c, s, w, o, load}' "$dir/stat"
}
printf '| berthd + inits, per start (n=%s) | CPU ms | context switches | write() | openat() | load |\n' "$runs"
printf '|---|---|---|---|---|---|\n'
for r in $(seq "$rounds"); do
    if [ $((r % 2)) = 1 ]; then one a "$A" 10.94.0.0/24; one b "$B" 10.95.0.0/24
    else one b "$B" 10.95.0.0/24; one a "$A" 10.94.0.0/24; fi
done
echo "a = $A, b = $B"
