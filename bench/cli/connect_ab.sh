#!/usr/bin/env bash
# Two berthd builds side by side, as a user sees them: `berth network connect` / `disconnect`
# of a running container through each build's CLI against its own private berthd, the two
# alternated in every round and their order swapped every round (so a slow minute hits both),
# with GAP_S of pause before every command. Prints the medians (p10-p90) per build.
# For a change's gain, run it twice with the builds in swapped slots; with the same build in
# both slots it shows the noise (an A/A run).
#
# Usage (root): bench/cli/connect_ab.sh A_BIN_DIR B_BIN_DIR [ROUNDS] [GAP_S]
#   A_BIN_DIR, B_BIN_DIR   directories with berthd, berth and berth-init
#   ROUNDS                 default 40; GAP_S default 0.2 (as connect_peers.sh)
# Everything happens in network namespaces this script creates (bca<pid>a, bca<pid>b) and
# removes; the machine's own network is never touched.
set -euo pipefail
a_bin="$(readlink -f "$1")"
b_bin="$(readlink -f "$2")"
rounds="${3:-40}"
gap="${4:-0.2}"
declare -A BIN NS DIR PID
BIN[a]="$a_bin"
BIN[b]="$b_bin"
cleanup() {
    for k in a b; do
        [ -n "${DIR[$k]:-}" ] || continue
        ids="$("${BIN[$k]}/berth" -H "unix://${DIR[$k]}/s.sock" ps -aq 2>/dev/null || true)"
        # shellcheck disable=SC2086 # one argument per id
        [ -n "$ids" ] && "${BIN[$k]}/berth" -H "unix://${DIR[$k]}/s.sock" rm -f $ids >/dev/null 2>&1 || true
        [ -n "${PID[$k]:-}" ] && kill "${PID[$k]}" 2>/dev/null && wait "${PID[$k]}" 2>/dev/null || true
        ip netns del "${NS[$k]}" 2>/dev/null || true
        rm -rf "${DIR[$k]}"
    done
}
trap cleanup EXIT
for k in a b; do
    for tool in berthd berth berth-init; do
        [ -x "${BIN[$k]}/$tool" ] || { echo "missing: ${BIN[$k]}/$tool" >&2; exit 2; }
    done
    NS[$k]="bca$$$k"
    DIR[$k]="$(mktemp -d /tmp/bca.XXXXXX)"
    ip netns add "${NS[$k]}"
    ip -n "${NS[$k]}" link set lo up
    : >"${DIR[$k]}/resolv.conf"
    ip netns exec "${NS[$k]}" "${BIN[$k]}/berthd" --state-dir "${DIR[$k]}/state" \
        --socket "${DIR[$k]}/s.sock" --resolv-conf "${DIR[$k]}/resolv.conf" \
        --log-level warn >"${DIR[$k]}/log" 2>&1 &
    PID[$k]=$!
    for _ in $(seq 200); do [ -S "${DIR[$k]}/s.sock" ] && break; sleep 0.05; done
    b() { "${BIN[$k]}/berth" -H "unix://${DIR[$k]}/s.sock" "$@"; }
    b network create --subnet 10.77.0.0/24 a >/dev/null
    b network create --subnet 10.78.0.0/24 c >/dev/null
    b run -d --name s --network a sleep 3600 >/dev/null
    # One discarded pair: the first connect to c creates its bridge.
    b network connect c s
    b network disconnect c s
done
echo "connect_ab: A $a_bin, B $b_bin, $rounds rounds, gap ${gap}s, load $(cut -d' ' -f1-3 /proc/loadavg)"
ca=(); da=(); cb=(); db=()
for i in $(seq "$rounds"); do
    order="a b"
    [ $((i % 2)) = 0 ] && order="b a"
    for k in $order; do
        s="unix://${DIR[$k]}/s.sock"
        sleep "$gap"
        t0=${EPOCHREALTIME/./}; "${BIN[$k]}/berth" -H "$s" network connect c s; t1=${EPOCHREALTIME/./}
        sleep "$gap"
        t2=${EPOCHREALTIME/./}; "${BIN[$k]}/berth" -H "$s" network disconnect c s; t3=${EPOCHREALTIME/./}
        if [ "$k" = a ]; then ca+=($((t1 - t0))); da+=($((t3 - t2)))
        else cb+=($((t1 - t0))); db+=($((t3 - t2))); fi
    done
done
stats() { # median (p10-p90) in ms
    printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {
        m = (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)
        printf "%.3f (%.3f-%.3f)", m / 1000, v[int(NR * 0.1) + 1] / 1000, v[int(NR * 0.9)] / 1000 }'
}
echo
echo "| build | connect ms | disconnect ms |"
echo "|---|---|---|"
echo "| A $a_bin | $(stats "${ca[@]}") | $(stats "${da[@]}") |"
echo "| B $b_bin | $(stats "${cb[@]}") | $(stats "${db[@]}") |"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
