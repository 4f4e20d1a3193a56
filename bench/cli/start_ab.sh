#!/usr/bin/env bash
# A/B of container start latency between two builds, in one run, interleaved:
#   berth run --rm --network none true, and --network NET true (bridge, anti-spoofing on),
# each through its own CLI against its own private berthd.
# Usage (root): bench/cli/start_ab.sh RUNS A_BIN_DIR B_BIN_DIR
#   e.g. bench/cli/start_ab.sh 40 /tmp/berth-before target/release
# Each berthd runs in a network namespace this script creates (bsa<pid>a / bsa<pid>b) and
# removes; the machine's own network is never touched. Prints medians and p90 in ms.
set -euo pipefail
runs="${1:-30}"
A="${2:?A_BIN_DIR}"
B="${3:?B_BIN_DIR}"
dir="$(mktemp -d /tmp/bsa.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
    for t in a b; do ip netns del "bsa$$$t" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
start() { # tag bin subnet
    local ns="bsa$$$1"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip netns exec "$ns" "$2/berthd" --state-dir "$dir/$1/state" --socket "$dir/$1.sock" \
        --log-level warn >"$dir/$1.log" 2>&1 &
    pids+=("$!")
    for _ in $(seq 200); do [ -S "$dir/$1.sock" ] && break; sleep 0.05; done
    "$2/berth" -H "unix://$dir/$1.sock" network create --subnet "$3" n >/dev/null
}
start a "$A" 10.91.0.0/24
start b "$B" 10.92.0.0/24
# Times from bash's own clock ($EPOCHREALTIME, µs): a `date` process per reading added its
# own start-up (~1 ms) to every interval.
ms() { echo "scale=3; ($2 - $1) / 1000" | bc; }
stats() { sort -n | awk '{v[NR]=$1} END {printf "%.2f (p90 %.2f)", (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2), v[int(NR*0.9+0.5)]}'; }
declare -A t
for i in $(seq "$runs"); do
    for tag in a b; do
        bin="$A"; [ "$tag" = b ] && bin="$B"
        for net in none n; do
            t0=${EPOCHREALTIME/./}
            "$bin/berth" -H "unix://$dir/$tag.sock" run --rm --network "$net" true
            t1=${EPOCHREALTIME/./}
            # The first two rounds warm caches; not counted.
            [ "$i" -gt 2 ] && t[$tag$net]+="$(ms "$t0" "$t1") "
        done
    done
done
printf '| berth run --rm … true (n=%s, load %s) | A: %s | B: %s |\n|---|---|---|\n' \
    "$((runs - 2))" "$(cut -d' ' -f1-3 /proc/loadavg)" "$A" "$B"
for net in none n; do
    label="--network none"; [ "$net" = n ] && label="--network NET (bridge)"
    printf '| %s | %s | %s |\n' "$label" \
        "$(tr ' ' '\n' <<<"${t[a$net]}" | grep . | stats)" \
        "$(tr ' ' '\n' <<<"${t[b$net]}" | grep . | stats)"
done
