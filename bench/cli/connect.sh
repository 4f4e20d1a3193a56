#!/usr/bin/env bash
# End-to-end timing of what a user types, through the berth CLI against a private berthd:
#   berth network connect / disconnect of a running container, and
#   berth run --rm --network NET true vs --network none true.
# Usage (root): bench/cli/connect.sh [RUNS] [BIN_DIR]   (defaults 20, target/release)
# Everything happens in a network namespace this script creates (bcr<pid>h) and removes; the
# machine's own network is never touched. Prints medians in ms.
set -euo pipefail
runs="${1:-20}"
bin="${2:-target/release}"
. "$(dirname "$0")/private_berthd.sh"
start_private_berthd bcr "$bin/berthd" "$bin/berth"
b() { "$bin/berth" -H "unix://$sock" "$@"; }
b network create --subnet 10.77.0.0/24 a >/dev/null
b network create --subnet 10.78.0.0/24 c >/dev/null
b run -d --name s --network a sleep 600 >/dev/null
# Times from bash's own clock ($EPOCHREALTIME, µs): a `date` process per reading added its
# own start-up (~1 ms) to every interval.
ms() { echo "scale=3; ($2 - $1) / 1000" | bc; }
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
con=(); dis=(); net=(); none=()
for i in $(seq "$runs"); do
    t0=${EPOCHREALTIME/./}; b network connect c s; t1=${EPOCHREALTIME/./}
    b network disconnect c s; t2=${EPOCHREALTIME/./}
    con+=("$(ms "$t0" "$t1")"); dis+=("$(ms "$t1" "$t2")")
    t0=${EPOCHREALTIME/./}; b run --rm --network a true; t1=${EPOCHREALTIME/./}
    b run --rm --network none true; t2=${EPOCHREALTIME/./}
    net+=("$(ms "$t0" "$t1")"); none+=("$(ms "$t1" "$t2")")
done
printf '| what (n=%s, load %s) | median ms |\n|---|---|\n' "$runs" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '| berth network connect (running container) | %s |\n' "$(printf '%s\n' "${con[@]}" | median)"
printf '| berth network disconnect | %s |\n' "$(printf '%s\n' "${dis[@]}" | median)"
printf '| berth run --rm --network NET true | %s |\n' "$(printf '%s\n' "${net[@]}" | median)"
printf '| berth run --rm --network none true | %s |\n' "$(printf '%s\n' "${none[@]}" | median)"
