#!/usr/bin/env bash
# Two sets of `berth run --rm` options against ONE private berthd, interleaved run by run: what
# an option costs, the order alternating run by run (e.g. the seccomp filter: "--network n" against "--network n --security-opt
# seccomp=unconfined"). A network `n` (bridge) exists.
# Usage (root): bench/cli/opts_ab.sh RUNS BIN_DIR "OPTIONS A" "OPTIONS B"
# berthd runs in a network namespace this script creates (bop<pid>h, private_berthd.sh) and
# removes; the machine's own network is never touched. Prints medians and p90 in ms; the first
# two rounds warm caches and are not counted.
set -euo pipefail
runs="${1:-40}"
bin="${2:?BIN_DIR}"
opts_a="${3:?OPTIONS A}"
opts_b="${4:?OPTIONS B}"
# shellcheck source=bench/cli/private_berthd.sh
. "$(dirname "$0")/private_berthd.sh"
start_private_berthd bop "$bin/berthd" "$bin/berth"
cli() { "$bin/berth" -H "unix://$sock" "$@"; }
cli network create --subnet 10.94.0.0/24 n >/dev/null
ms() { echo "scale=3; ($2 - $1) / 1000" | bc; }
stats() { sort -n | awk '{v[NR]=$1} END {printf "%.2f (p90 %.2f)", (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2), v[int(NR*0.9+0.5)]}'; }
ta=""
tb=""
one() { # options: prints the ms of one run
    local t0 t1
    t0=${EPOCHREALTIME/./}
    # shellcheck disable=SC2086 # the options are words on purpose
    cli run --rm $1 true
    t1=${EPOCHREALTIME/./}
    ms "$t0" "$t1"
}
# The order alternates run by run: the second of a pair measured 0.2-0.7 ms quicker than the
# first with the same options (the first's removal finishing beside it).
for i in $(seq "$runs"); do
    if [ $((i % 2)) = 1 ]; then
        a="$(one "$opts_a")"
        b="$(one "$opts_b")"
    else
        b="$(one "$opts_b")"
        a="$(one "$opts_a")"
    fi
    if [ "$i" -gt 2 ]; then
        ta+="$a "
        tb+="$b "
    fi
done
printf '| berth run --rm … true (n=%s, load %s) | median ms (p90) |\n|---|---|\n' \
    "$((runs - 2))" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '| A: %s | %s |\n' "$opts_a" "$(tr ' ' '\n' <<<"$ta" | grep . | stats)"
printf '| B: %s | %s |\n' "$opts_b" "$(tr ' ' '\n' <<<"$tb" | grep . | stats)"
