#!/usr/bin/env bash
# The berth CLI's own cost, two builds side by side against one private berthd:
#   perf stat -r RUNS of `berth network ls` and of a `network connect` + `disconnect` pair
#   (through `sh -c`, the same shell for both builds), the builds alternating in rounds of
#   RUNS/5 so that load changes hit both; then per-command medians of RUNS single runs
#   (task-clock and wall time) for connect and disconnect.
# Usage (root): bench/cli/cli_ab.sh BERTHD OLD_BERTH NEW_BERTH [RUNS]   (RUNS default 50)
# Everything happens in a network namespace this script creates (bab<pid>h, private_berthd.sh)
# and removes; the machine's own network is never touched.
set -euo pipefail
berthd="$1"
old="$2"
new="$3"
runs="${4:-50}"
. "$(dirname "$0")/private_berthd.sh"
start_private_berthd bab "$berthd" "$new"
"$new" -H "unix://$sock" network create --subnet 10.77.0.0/24 a >/dev/null
"$new" -H "unix://$sock" network create --subnet 10.78.0.0/24 b >/dev/null
"$new" -H "unix://$sock" run -d --name s --network a sleep 600 >/dev/null
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# perf stat -r: `name value` lines (task-clock ms, page-faults, duration_time ms).
stat_r() {
    local n="$1"
    shift
    perf stat -r "$n" -x, -e task-clock,page-faults,duration_time -- "$@" 2>&1 >/dev/null |
        awk -F, '$3 ~ /task-clock/ {printf "cpu_ms %.3f\n", $1}
                 $3 ~ /page-faults/ {printf "faults %d\n", $1}
                 $3 ~ /duration_time/ {printf "wall_ms %.3f\n", $1 / 1e6}'
}
round=$((runs / 5))
declare -A acc
for rep in 1 2 3 4 5; do
    for which in old new; do
        bin="${!which}"
        while read -r k v; do acc["$which ls $k"]+="$v "; done < <(stat_r "$round" "$bin" -H "unix://$sock" network ls)
        while read -r k v; do acc["$which pair $k"]+="$v "; done < <(stat_r "$round" sh -c \
            "'$bin' -H 'unix://$sock' network connect b s && '$bin' -H 'unix://$sock' network disconnect b s")
    done
done
mean() { tr ' ' '\n' | awk 'NF {s += $1; n++} END {printf "%.3f", s / n}'; }
printf '\n| perf stat -r %s (5 alternating rounds of %s), mean | old CPU ms | new CPU ms | old faults | new faults | old wall ms | new wall ms |\n|---|---|---|---|---|---|---|\n' "$runs" "$round"
for what in ls pair; do
    row="| $what"
    for k in cpu_ms faults wall_ms; do
        row+=" | $(echo "${acc["old $what $k"]}" | mean) | $(echo "${acc["new $what $k"]}" | mean)"
    done
    echo "$row |"
done

# Single commands, interleaved: task-clock from perf stat, wall time from bash's clock.
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
one() { perf stat -x, -e task-clock -- "$@" 2>&1 >/dev/null | awk -F, '$3 ~ /task-clock/ {print $1}'; }
declare -A cpu wall
for i in $(seq "$runs"); do
    for which in old new; do
        bin="${!which}"
        for op in connect disconnect; do
            t0=${EPOCHREALTIME/./}
            c=$(one "$bin" -H "unix://$sock" network "$op" b s)
            t1=${EPOCHREALTIME/./}
            cpu["$which $op"]+="$c "
            wall["$which $op"]+="$(( t1 - t0 )) "
        done
    done
done
printf '\n| n=%s interleaved, median | old CPU ms | new CPU ms | old wall ms (incl. perf) | new wall ms (incl. perf) |\n|---|---|---|---|---|\n' "$runs"
for op in connect disconnect; do
    printf '| %s | %s | %s | %s | %s |\n' "$op" \
        "$(echo "${cpu["old $op"]}" | tr ' ' '\n' | grep . | median)" \
        "$(echo "${cpu["new $op"]}" | tr ' ' '\n' | grep . | median)" \
        "$(echo "${wall["old $op"]}" | tr ' ' '\n' | grep . | median | awk '{printf "%.3f", $1 / 1000}')" \
        "$(echo "${wall["new $op"]}" | tr ' ' '\n' | grep . | median | awk '{printf "%.3f", $1 / 1000}')"
done

# End to end as a user types it (no perf in between), interleaved, bash's clock.
declare -A e2e
for i in $(seq "$runs"); do
    for which in old new; do
        bin="${!which}"
        t0=${EPOCHREALTIME/./}
        "$bin" -H "unix://$sock" network connect b s
        t1=${EPOCHREALTIME/./}
        "$bin" -H "unix://$sock" network disconnect b s
        t2=${EPOCHREALTIME/./}
        e2e["$which connect"]+="$(( t1 - t0 )) "
        e2e["$which disconnect"]+="$(( t2 - t1 )) "
    done
done
printf '\n| n=%s interleaved, end to end, median ms | old | new |\n|---|---|---|\n' "$runs"
for op in connect disconnect; do
    printf '| network %s | %s | %s |\n' "$op" \
        "$(echo "${e2e["old $op"]}" | tr ' ' '\n' | grep . | median | awk '{printf "%.3f", $1 / 1000}')" \
        "$(echo "${e2e["new $op"]}" | tr ' ' '\n' | grep . | median | awk '{printf "%.3f", $1 / 1000}')"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
