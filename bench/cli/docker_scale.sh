#!/usr/bin/env bash
# Docker under issue 10's scale load, the peer of bench/cli/scale.sh: a private dockerd (Debian's
# docker.io, its own containerd and runc) in a network namespace of its own, the same load as
# scale.sh gives berthd:
#   * `docker run -d --network NET -p H-H+9:80-89 bb sleep …` of containers 1…N over NETS bridge
#     networks, each timed (medians of blocks 1–10, 91–100, 491–500, the last ten: the Nth
#     container's start against the first);
#   * dockerd's resident memory (VmRSS) and CPU (utime+stime) at 0, 100 and N containers, and
#     its helpers' (containerd and one containerd-shim per container: PSS, CPU);
#   * dockerd's idle CPU over IDLE seconds at 0 and at N containers;
#   * `docker rm -f` of every container, each timed.
# dockerd runs with "userland-proxy": false: with the proxy, 10,000 published ports are 20,000
# docker-proxy processes (3.3 MB each, ../shared/reference/peers.md), more memory than this
# machine has; without it dockerd publishes with iptables rules, as berth with nf_tables.
# The image `bb` is busybox-static imported as a one-layer image (no registry involved).
#
# Usage (root): bench/cli/docker_scale.sh [N] [IDLE_SECS]    (defaults 1000, 10)
#   env: NETS (default 2), PORTS (published ports per container, default 10), BUDGET (seconds
#   allowed for the starts, default 900: the run goes on with the containers it has by then),
#   RM_BUDGET (default 300: the containers left then are ended by PID), MIN_FREE_MIB (stop starting containers below this MemAvailable,
#   default 3072).
# Needs: apt-get install -y --no-install-recommends docker.io containerd runc busybox-static
# Everything happens in a network namespace this script creates (bds<pid>h): dockerd's
# bridges, veths and iptables rules are in there, its containers' namespaces hang off it, the
# machine's own network is never touched. dockerd sees its own /sys/fs/cgroup (the machine's
# cgroup v1 hierarchies mounted again inside `ip netns exec`'s private mount namespace, which
# hides them) and puts its containers' cgroups under `bds<pid>`, removed at the end.
# dockerd, containerd, the shims and the containers left when RM_BUDGET is spent are ended by
# PID.
set -euo pipefail
n="${1:-1000}"
idle="${2:-10}"
nets="${NETS:-2}"
per="${PORTS:-10}"
budget="${BUDGET:-900}"
rm_budget="${RM_BUDGET:-300}"
min_free="${MIN_FREE_MIB:-3072}"
for tool in dockerd docker containerd runc busybox curl bc; do
    command -v "$tool" >/dev/null || {
        echo "missing: $tool (apt-get install -y --no-install-recommends docker.io containerd runc busybox-static curl bc)" >&2
        exit 2
    }
done
ns="bds$$h"
cg="bds$$"
dir="$(mktemp -d /var/tmp/bds.XXXXXX)"
sock="$dir/docker.sock"
dpid=""
launcher=""
hz="$(getconf CLK_TCK)"
d() { docker -H "unix://$sock" "$@"; }
# ms, median, load, mib, note, usage_of, pss_cpu_of, remove_each, block, rblock,
# run_ratio, table_blocks: as scale.sh's.
# shellcheck source=bench/cli/scale_lib.sh
. "$(dirname "$(readlink -f "$0")")/scale_lib.sh"

cleanup() {
    set +e
    if [ -n "$dpid" ] && kill -0 "$dpid" 2>/dev/null; then
        # Whatever the removal budget left running is ended by PID, not through dockerd (a
        # `docker rm -f` at 600 containers spends seconds in iptables): dockerd stopped first,
        # then the containers' processes (the shims' children), the shims, containerd and
        # dockerd. Their rules and bridges go with the namespace, their mounts with the mount
        # namespace of `ip netns exec`, empty once they are gone.
        kill -STOP "$dpid"
        local s cpid kids="" shim_pids
        cpid=$(containerd_pid)
        shim_pids=$(shims)
        for s in $shim_pids; do kids="$kids $(pgrep -P "$s" | tr '\n' ' ')"; done
        # shellcheck disable=SC2086 # one argument per pid
        kill -KILL $kids 2>/dev/null
        # shellcheck disable=SC2086
        kill -KILL $shim_pids $cpid "$dpid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
    fi
    [ -n "$launcher" ] && wait "$launcher" 2>/dev/null
    ip netns del "$ns" 2>/dev/null
    # The containers' cgroups (children first) and their parent, ours; a killed process's
    # cgroup empties once it is reaped.
    for _ in $(seq 50); do
        for c in /sys/fs/cgroup/*/"$cg"; do [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null; done
        compgen -G "/sys/fs/cgroup/*/$cg" >/dev/null || break
        sleep 0.2
    done
    rm -rf "$dir"
}
trap cleanup EXIT

# dockerd's process, its containerd (a child) and the shims (children of init once started).
shims() { pgrep -f "containerd-shim-runc-v2 -namespace moby -id [0-9a-f]+ -address $dir/" || true; }
containerd_pid() { pgrep -P "$dpid" -x containerd | head -1; }
helpers() { # "PSS_KiB CPU_ms processes" of containerd and the shims
    # shellcheck disable=SC2046 # one argument per pid
    pss_cpu_of $(containerd_pid) $(shims)
}
idle_cpu() { # dockerd's CPU over $idle s, ms
    local c0 c1
    c0=$(awk '{print $14 + $15}' "/proc/$dpid/stat")
    sleep "$idle"
    c1=$(awk '{print $14 + $15}' "/proc/$dpid/stat")
    echo $(((c1 - c0) * 1000 / hz))
}
declare -A fig

ip netns add "$ns"
ip -n "$ns" link set lo up
# No resolver outside this namespace is ever named to a container (none is asked: the
# containers only sleep); the address is in dockerd's namespace, where nothing listens.
printf '{"userland-proxy": false, "dns": ["10.99.0.1"], "cgroup-parent": "/%s", "log-level": "warn"}\n' \
    "$cg" >"$dir/daemon.json"
run_start=$(date -u '+%Y-%m-%d %H:%M UTC')
# shellcheck disable=SC2016 # expanded by the inner shell
ip netns exec "$ns" /bin/bash -c '
set -e
mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
for c in cpu cpuacct cpuset memory devices freezer blkio pids; do
    mkdir -p /sys/fs/cgroup/$c; mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c
done
mkdir -p /sys/fs/cgroup/systemd; mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
exec "$@"' dockerd-in-ns dockerd --data-root "$dir/root" --exec-root "$dir/exec" \
    -H "unix://$sock" --pidfile "$dir/dockerd.pid" --config-file "$dir/daemon.json" \
    >"$dir/dockerd.log" 2>&1 &
launcher=$!
for _ in $(seq 120); do d version >/dev/null 2>&1 && break; sleep 0.5; done
d version >/dev/null 2>&1 || { echo "dockerd did not come up:" >&2; tail -20 "$dir/dockerd.log" >&2; exit 1; }
dpid=$(cat "$dir/dockerd.pid")
note "dockerd $(d version --format '{{.Server.Version}}') up, pid $dpid"

# The image: busybox with its applets, one layer.
mkdir -p "$dir/bb/bin"
cp "$(command -v busybox)" "$dir/bb/bin/busybox"
for a in sh sleep; do ln -s busybox "$dir/bb/bin/$a"; done
tar -C "$dir/bb" -c . | d import - bb >/dev/null
for k in $(seq 0 $((nets - 1))); do
    d network create --subnet "10.$((90 + k)).0.0/22" "s$k" >/dev/null
done
read -r rss cpu thr <<<"$(usage_of "$dpid")"
fig[rss0]=$rss; fig[cpu0]=$cpu; fig[thr0]=$thr
fig[idle0]=$(idle_cpu)
note "0 containers: dockerd RSS $rss KiB, idle CPU ${fig[idle0]} ms over $idle s"

runs=()
t_begin=$SECONDS
made=0
for i in $(seq "$n"); do
    net="s$(( (i - 1) % nets ))"
    hp=$((20000 + (i - 1) * per))
    t0=${EPOCHREALTIME/./}
    d run -d --name "c$i" --network "$net" -p "$hp-$((hp + per - 1)):80-$((80 + per - 1))" bb sleep 100000 >/dev/null
    t1=${EPOCHREALTIME/./}
    runs+=("$(ms "$t0" "$t1")")
    made=$i
    if [ "$i" -eq 100 ]; then
        read -r rss cpu thr <<<"$(usage_of "$dpid")"
        fig[rss100]=$rss; fig[cpu100]=$cpu; fig[thr100]=$thr; fig[h100]=$(helpers)
    fi
    if [ $((i % 100)) -eq 0 ]; then note "$i containers, last run ${runs[-1]} ms, load $(load)"; fi
    if [ $((SECONDS - t_begin)) -gt "$budget" ]; then
        note "budget of $budget s spent after $i containers: going on with those"
        break
    fi
    free=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
    if [ "$free" -lt "$min_free" ]; then
        note "MemAvailable $free MiB < $min_free after $i containers: going on with those"
        break
    fi
done
fig[runs_s]=$((SECONDS - t_begin)); fig[load_runs]=$(load)
read -r rss cpu thr <<<"$(usage_of "$dpid")"
fig[rssN]=$rss; fig[cpuN]=$cpu; fig[thrN]=$thr; fig[hN]=$(helpers)
fig[idleN]=$(idle_cpu)
fig[rules]=$(ip netns exec "$ns" iptables -t nat -S 2>/dev/null | wc -l)
note "$made containers: dockerd RSS $rss KiB, idle CPU ${fig[idleN]} ms over $idle s"

remove_each d

first=$(block runs 1 10)
printf '\n## Docker at scale: %s containers on %s networks, %s ports each (%s, dockerd %s, userland-proxy off)\n\n' \
    "$made" "$nets" "$per" "$run_start" "$(dockerd --version | awk '{print $3}' | tr -d ,)"
printf '| containers i | `docker run -d` median ms | ratio to 1–10 | `docker rm -f` median ms |\n|---|---|---|---|\n'
table_blocks
for r in "${blocks[@]}"; do
    set -- $r
    read -r m ratio <<<"$(run_ratio runs "$first" "$1" "$2")"
    printf '| %s–%s | %s | %s | %s |\n' "$1" "$2" "$m" "$ratio" "$(rblock rms "$1" "$2")"
done
printf '\n%s starts in %s s (load after: %s); %s removals in %s s; iptables nat rules at %s: %s\n' \
    "$made" "${fig[runs_s]}" "${fig[load_runs]}" "$removed" "${fig[rm_s]}" "$made" "${fig[rules]}"
read -r hp100 hc100 hn100 <<<"${fig[h100]:-- - -}"
read -r hpN hcN hnN <<<"${fig[hN]}"
printf '\n| dockerd | 0 containers | 100 | %s |\n|---|---|---|---|\n' "$made"
printf '| VmRSS MiB | %s | %s | %s |\n' "$(mib "${fig[rss0]}")" "$(mib "${fig[rss100]:-}")" "$(mib "${fig[rssN]}")"
printf '| threads | %s | %s | %s |\n' "${fig[thr0]}" "${fig[thr100]:--}" "${fig[thrN]}"
printf '| CPU used so far, ms | %s | %s | %s |\n' "${fig[cpu0]}" "${fig[cpu100]:--}" "${fig[cpuN]}"
printf '| idle CPU over %s s, ms | %s | | %s |\n' "$idle" "${fig[idle0]}" "${fig[idleN]}"
printf '| helpers (containerd + shims): processes, PSS MiB, CPU ms | | %s, %s, %s | %s, %s, %s |\n' \
    "$hn100" "$(mib "$hp100")" "$hc100" "$hnN" "$(mib "$hpN")" "$hcN"
