#!/usr/bin/env bash
# shellcheck disable=SC2154,SC2034 # made, runs, rms, removed, rm_budget, fig, hz: the caller's (below)
# Helpers shared by bench/cli/scale.sh (berth) and bench/cli/docker_scale.sh (its Docker peer),
# sourced by both so that the two tables are computed the same way. They use the caller's
# globals: `made` (containers started), `runs` (each start's ms, in order), `rms` (each
# removal's ms, last container first), `removed`, `rm_budget`, `hz` (clock ticks per second) and
# the associative array `fig`.

# Times from bash's own clock ($EPOCHREALTIME, µs): ms between $1 and $2.
ms() { echo "scale=3; ($2 - $1) / 1000" | bc; }
median() { sort -n | awk '{v[NR]=$1} END {if (NR) print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2); else print "-"}'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
mib() { [[ "$1" =~ ^[0-9]+$ ]] && echo "scale=1; $1 / 1024" | bc || echo "-"; }
note() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# "RSS_KiB CPU_ms threads" of process $1 (a daemon: berthd, dockerd).
usage_of() {
    local rss thr cpu
    read -r rss thr < <(awk '/^VmRSS:/ {r = $2} /^Threads:/ {t = $2} END {print r, t}' "/proc/$1/status")
    cpu=$(awk -v hz="$hz" '{print ($14 + $15) * 1000 / hz}' "/proc/$1/stat")
    echo "$rss $cpu $thr"
}

# "PSS_KiB CPU_ms processes" summed over the processes given (those gone meanwhile skipped).
pss_cpu_of() {
    local p pss=0 cpu=0 k=0 v
    for p in "$@"; do
        v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null) || continue
        pss=$((pss + ${v:-0}))
        v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null) || continue
        cpu=$((cpu + ${v:-0}))
        k=$((k + 1))
    done
    echo "$pss $((cpu * 1000 / hz)) $k"
}

# Removes containers c$made … c1, one `"$@" rm -f cN` each, timed into rms, until rm_budget
# seconds are spent; sets removed and fig[rm_s].
remove_each() {
    local i t0 t1 t_begin=$SECONDS
    rms=()
    removed=0
    for i in $(seq "$made" -1 1); do
        t0=${EPOCHREALTIME/./}
        "$@" rm -f "c$i" >/dev/null
        t1=${EPOCHREALTIME/./}
        rms+=("$(ms "$t0" "$t1")")
        removed=$((removed + 1))
        if [ $((SECONDS - t_begin)) -gt "$rm_budget" ]; then
            note "removal budget of $rm_budget s spent after $removed: the rest go with the clean-up"
            break
        fi
    done
    fig[rm_s]=$((SECONDS - t_begin))
}

# Medians of blocks of containers, by container index (the runs in start order, the removals
# in reverse, so rms[made - i] is container i's).
block() { # array-name first last
    local -n arr="$1"
    local k
    [ "$3" -le "${#arr[@]}" ] || { echo "-"; return; }
    for k in $(seq "$2" "$3"); do echo "${arr[$((k - 1))]}"; done | median
}
rblock() { # removals of containers first..last
    local k
    [ "$3" -le "$made" ] && [ "$((made - $2 + 1))" -le "$removed" ] || { echo "-"; return; }
    for k in $(seq "$2" "$3"); do echo "${rms[$((made - k))]}"; done | median
}

# "median ratio" of array $1's entries $3..$4 (container indexes) against $2 (the first
# block's median); "- -" where the run did not get that far.
run_ratio() {
    local m ratio="-"
    m=$(block "$1" "$3" "$4")
    [ "$m" != "-" ] && ratio=$(echo "scale=2; $m / $2" | bc)
    echo "$m $ratio"
}

# The blocks the tables show ("first last" each): 1–10, 91–100, 491–500, 991–1000, and the
# last ten when the run stopped elsewhere.
table_blocks() {
    blocks=("1 10" "91 100" "491 500" "991 1000")
    local last="$((made - 9)) $made"
    case " ${blocks[*]} " in *" $last "*) ;; *) [ "$made" -gt 10 ] && blocks+=("$last") ;; esac
    return 0
}
