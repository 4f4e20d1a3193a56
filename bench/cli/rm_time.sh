#!/usr/bin/env bash
# `berth rm` through the CLI (issue 10): N containers on a private berthd (bench/cli/private_berthd.sh:
# its own namespace; the machine's network is never touched), `rm -f` of running ones and `rm`
# of exited ones, each timed; prints medians and p90s.
# Usage (root): bench/cli/rm_time.sh BIN_DIR [N]   (default 20)
set -euo pipefail
bin="${1:?BIN_DIR}"
n="${2:-20}"
. "$(dirname "$0")/private_berthd.sh"
start_private_berthd brm "$bin/berthd" "$bin/berth"
b() { "$bin/berth" -H "unix://$sock" "$@"; }
b network create --subnet 10.93.0.0/24 n1 >/dev/null
for i in $(seq $n); do b run -d --network n1 --name r$i sleep 1000 >/dev/null; done
sleep 0.3
for i in $(seq $n); do s=${EPOCHREALTIME/./}; b rm -f r$i >/dev/null; e=${EPOCHREALTIME/./}; echo $((e-s)); sleep 0.05; done | sort -n | awk '{v[NR]=$1} END {printf "rm -f median %.2f ms p90 %.2f\n", v[int((NR+1)/2)]/1000, v[int(NR*0.9)]/1000}'
for i in $(seq $n); do b run -d --network none --name s$i true >/dev/null; done
sleep 0.5
for i in $(seq $n); do s=${EPOCHREALTIME/./}; b rm s$i >/dev/null; e=${EPOCHREALTIME/./}; echo $((e-s)); sleep 0.05; done | sort -n | awk '{v[NR]=$1} END {printf "rm (exited) median %.2f ms p90 %.2f\n", v[int((NR+1)/2)]/1000, v[int(NR*0.9)]/1000}'
