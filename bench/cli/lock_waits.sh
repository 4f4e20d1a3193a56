#!/usr/bin/env bash
# What makes a request wait for berthd's lock (issue 10): N back-to-back `network connect` +
# `disconnect` pairs of a running container through a private berthd at debug level; prints the
# connect/disconnect medians and p90s, the lock waits the handlers logged (`locked_us`), what
# woke the drift loop (`drift loop: looked wakes=…`) and which notifications counted as someone
# else's (the monitors' debug lines).
# Usage (root): bench/cli/lock_waits.sh [N] [BIN_DIR]   (defaults 40, target/release)
set -euo pipefail
n="${1:-40}"
bin="${2:-target/release}"
# shellcheck source=private_berthd.sh
. "$(dirname "$0")/private_berthd.sh"
BERTHD_LOG=debug start_private_berthd blw "$bin/berthd" "$bin/berth"
b() { "$bin/berth" -H "unix://$sock" "$@"; }
b network create --subnet 10.93.0.0/24 n1 >/dev/null
b network create --subnet 10.94.0.0/24 n2 >/dev/null
b run -d --name c1 --network n1 sleep 100000 >/dev/null
sleep 0.5
from=$(wc -l <"$dir/berthd.log")
con=(); dis=()
for _ in $(seq "$n"); do
    t0=${EPOCHREALTIME/./}; b network connect n2 c1
    t1=${EPOCHREALTIME/./}; b network disconnect n2 c1
    t2=${EPOCHREALTIME/./}
    con+=($((t1 - t0))); dis+=($((t2 - t1)))
done
sleep 0.5
stats() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {printf "median %.2f ms, p90 %.2f ms, max %.2f ms", v[int((NR+1)/2)]/1000, v[int(NR*0.9)]/1000, v[NR]/1000}'; }
echo "connect: $(stats "${con[@]}")"
echo "disconnect: $(stats "${dis[@]}")"
log="$(tail -n +"$((from + 1))" "$dir/berthd.log" | sed 's/\x1b\[[0-9;]*m//g')"
echo "lock waits (locked_us of connect and disconnect): $(grep -o 'locked_us=[0-9]*' <<<"$log" | cut -d= -f2 | sort -n |
    awk '{v[NR]=$1} END {printf "median %d us, p90 %d us, max %d us, n %d", v[int((NR+1)/2)], v[int(NR*0.9)], v[NR], NR}')"
echo "drift-loop looks: $(grep -c 'drift loop: looked' <<<"$log" || true)"
grep -o 'drift loop: looked.*' <<<"$log" | sed 's/Container("[0-9a-f]*")/Container(id)/; s/held_us=.*//' | sort | uniq -c | sort -rn | head -5 || true
echo "notifications counted as someone else's:"
grep -o 'notification from someone else.*' <<<"$log" | sort | uniq -c | sort -rn | head -5 || true
