#!/bin/bash
# Overlay propagation with many hosts: HOSTS (default 20) berthd "hosts" on one underlay and one
# etcd, a container started on one host, probed from containers on other hosts.
#
#   bench/overlay/hosts20.sh                  # 20 hosts, N=20 rounds, ~2 min on 2 cores
#   HOSTS=2 N=10 bench/overlay/hosts20.sh     # the same with fewer hosts
#   LAB_ONLY=1 …  leaves the world up for experiments; CLEAN=1 … removes it
#   BERTH_BIN=DIR (default target/release), BERTH_LOG=debug (berthd's --log-level),
#   BERTHD_ARGS="…" (extra berthd flags), OBS=4 (observer hosts per round), RES=DIR (results)
#   MAX_SECS=900 (the whole measurement stops after this many seconds, whatever N says)
#
# The world (namespaces only; the root netns is never touched; removed on exit, also on failure):
#   b20-lan : bridge b20lan0 10.243.0.250/24 (the "LAN"), one etcd member on 10.243.0.250:23797
#   b20-h1 … b20-hHOSTS : berthd #i on 10.243.0.i (its own state dir and socket under /var/tmp/b20),
#             --cluster-store etcd, every host a veth port of the LAN bridge
#   overlay network `b20` (10.244.0.0/16), one long-lived container w<i> on every host
#
# Each round r starts `berth run -d --network b20 --name pR sleep 1000` on host k (round robin)
# and probes it from OBS other hosts spread over the cluster (k+1, k+1+HOSTS/OBS, …) with
# probe_many.py: one process with sockets in each observer container's network namespace,
# DNS every 1 ms through the observer's own resolver, then ICMP every 1 ms once `run` returned.
#   resolvable : name answered on the other host, ms after `run` started (CLI invoked)
#   reachable  : first echo reply on the other host, ms after `run` returned
# Every observer of every round is one sample; median and p90 over all samples.
set -euo pipefail
export LC_ALL=C PYTHONDONTWRITEBYTECODE=1
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
HOSTS=${HOSTS:-20}; N=${N:-20}; OBS=${OBS:-4}; MAX_SECS=${MAX_SECS:-900}
RES=${RES:-/tmp/berth-overlay-hosts$HOSTS}
RUN=/var/tmp/b20
BIN=${BERTH_BIN:-$REPO/target/release}
ETCD_IP=10.243.0.250
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
# shellcheck source=teardown.sh
. "$HERE/teardown.sh"
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
[ "$(id -u)" = 0 ] || { echo "hosts20.sh: needs root (namespaces)" >&2; exit 2; }
[ "$HOSTS" -ge 2 ] && [ "$HOSTS" -le 60 ] || { echo "HOSTS must be 2..60" >&2; exit 2; }
[ "$N" -ge 1 ] && [ "$N" -le 500 ] || { echo "N must be 1..500" >&2; exit 2; }
[ "$OBS" -lt "$HOSTS" ] || OBS=$((HOSTS - 1))
for t in /usr/bin/etcd /usr/bin/nsenter; do
    [ -x $t ] || { echo "hosts20.sh: $t missing (Debian etcd-server, util-linux)" >&2; exit 2; }
done
if [ -z "${CLEAN:-}" ] && { [ ! -x "$BIN/berthd" ] || [ ! -x "$BIN/berth" ]; }; then
    echo "hosts20.sh: no berthd/berth in $BIN (CARGO_INCREMENTAL=0 cargo build --release -p berthd; crates/front/install.sh release)" >&2
    exit 2
fi
# Each berthd has a socket directory of its own: its run directory (overlay namespaces).
b() { local i=$1; shift; "$BIN/berth" -H "unix://$RUN/r$i/berthd.sock" "$@"; }
nss() { echo b20-lan; for i in $(seq 1 "$HOSTS"); do echo "b20-h$i"; done; }

# --- teardown (always) ---------------------------------------------------------------------------
cleanup() {
    set +e
    for i in $(seq 1 "$HOSTS"); do
        if [ -S $RUN/r$i/berthd.sock ]; then
            ids=$(b "$i" ps -aq 2>/dev/null); [ -n "$ids" ] && b "$i" rm -f $ids >/dev/null 2>&1
        fi
    done
    # daemons, etcd, probes: by the PIDs recorded only
    stop_recorded $RUN
    # anything still living in OUR namespaces (containers)
    # shellcheck disable=SC2046
    kill_in_netns $(nss)
    sleep 0.5
    for n in $(nss); do ip netns del $n 2>/dev/null; done
    mkdir -p "$RES"; cp $RUN/h*.log $RUN/etcd.log "$RES/" 2>/dev/null
    rm -rf $RUN
    log "cleaned up ($(ip netns list | grep -c '^b20-' || true) b20-* namespaces left)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup 2>/dev/null
[ -z "${CLEAN:-}" ] || exit 0
mkdir -p "$RES" $RUN
rm -f "$RES"/*.txt "$RES"/*.log

# --- the LAN and etcd ----------------------------------------------------------------------------
for n in $(nss); do ip netns add $n; ip -n $n link set lo up; done
ip -n b20-lan link add b20lan0 type bridge
ip -n b20-lan addr add $ETCD_IP/24 dev b20lan0
ip -n b20-lan link set b20lan0 up
for i in $(seq 1 "$HOSTS"); do
    ip -n b20-lan link add b20-p$i type veth peer name lan0 netns b20-h$i
    ip -n b20-lan link set b20-p$i master b20lan0 up
    ip -n b20-h$i addr add 10.243.0.$i/24 dev lan0
    ip -n b20-h$i link set lan0 up
done
ip netns exec b20-lan etcd --name lan --data-dir $RUN/etcd \
    --listen-client-urls http://$ETCD_IP:23797 --advertise-client-urls http://$ETCD_IP:23797 \
    --listen-peer-urls http://$ETCD_IP:23807 --initial-advertise-peer-urls http://$ETCD_IP:23807 \
    --initial-cluster lan=http://$ETCD_IP:23807 > $RUN/etcd.log 2>&1 &
echo $! > $RUN/etcd.pid
for _ in $(seq 1 40); do
    ip netns exec b20-h1 curl -sf -m1 http://$ETCD_IP:23797/health >/dev/null 2>&1 && break; sleep 0.25
done
# Containers get this resolver for outside names: nothing listens there, so no query leaves.
echo "nameserver $ETCD_IP" > $RUN/resolv.conf

# --- the hosts -----------------------------------------------------------------------------------
# shellcheck disable=SC2086
for i in $(seq 1 "$HOSTS"); do
    mkdir -p $RUN/r$i
    ip netns exec b20-h$i "$BIN/berthd" --state-dir $RUN/h$i --socket $RUN/r$i/berthd.sock \
        --resolv-conf $RUN/resolv.conf --cluster-store etcd://$ETCD_IP:23797 \
        --advertise-addr 10.243.0.$i --node-name b20-h$i --log-level "${BERTH_LOG:-info}" \
        ${BERTHD_ARGS:-} > $RUN/h$i.log 2>&1 &
    echo $! > $RUN/berthd$i.pid
done
for i in $(seq 1 "$HOSTS"); do
    for _ in $(seq 1 80); do b "$i" info >/dev/null 2>&1 && break; sleep 0.25; done
    b "$i" info >/dev/null || { tail -30 $RUN/h$i.log; exit 1; }
done
b 1 network create -d overlay --subnet 10.244.0.0/16 b20 >/dev/null
for i in $(seq 2 "$HOSTS"); do
    for _ in $(seq 1 40); do b "$i" network inspect b20 >/dev/null 2>&1 && break; sleep 0.25; done
done
for i in $(seq 1 "$HOSTS"); do b "$i" run -d --network b20 --name w$i sleep 100000 >/dev/null; done
declare -A WPID RESOLVER
for i in $(seq 1 "$HOSTS"); do
    WPID[$i]=$(b "$i" inspect -f '{{.State.Pid}}' w$i)
    RESOLVER[$i]=$(nsenter -t "${WPID[$i]}" -m awk '/^nameserver/ {print $2; exit}' /etc/resolv.conf)
done
pids_of_berthd() { for i in $(seq 1 "$HOSTS"); do cat $RUN/berthd$i.pid; done; }
rss_mib() { for p in $(pids_of_berthd); do awk '/VmRSS/ {print $2}' /proc/$p/status; done |
            awk '{s += $1; if ($1 > m) m = $1} END {printf "%.1f MiB total, %.1f MiB max per berthd", s/1024, m/1024}'; }
cpu_ticks() { for p in $(pids_of_berthd); do awk '{print $14 + $15}' /proc/$p/stat; done | awk '{s += $1} END {print s}'; }
{
    echo "date: $(date -u +%FT%TZ)  kernel: $(uname -r)  cpus: $(nproc)  hosts: $HOSTS"
    echo "berth: $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null)  berthd args: ${BERTHD_ARGS:-}"
    echo "etcd: $(etcd --version 2>/dev/null | head -1)"
    echo "after setup: berthd RSS $(rss_mib); load $(loadavg)"
} > "$RES/versions.txt"
cat "$RES/versions.txt" >&2
sleep 1
log "lab up: $HOSTS hosts; load $(loadavg)"
if [ -n "${LAB_ONLY:-}" ]; then
    trap - EXIT
    for i in $(seq 1 "$HOSTS"); do echo "w$i=${WPID[$i]} resolver=${RESOLVER[$i]}"; done > $RUN/pids
    exit 0
fi

# --- propagation ---------------------------------------------------------------------------------
echo "start $(loadavg)" > "$RES/loadavg.txt"
cpu0=$(cpu_ticks); start=$SECONDS
for r in $(seq 1 "$N"); do
    if [ $((SECONDS - start)) -ge "$MAX_SECS" ]; then log "MAX_SECS reached after $((r - 1)) rounds"; break; fi
    k=$(( (r - 1) % HOSTS + 1 ))
    args=()
    for j in $(seq 0 $((OBS - 1))); do
        o=$(( (k - 1 + 1 + j * ((HOSTS - 1) / OBS)) % HOSTS + 1 ))
        args+=("${WPID[$o]}:${RESOLVER[$o]}")
    done
    X=p$r$(date +%s)
    PF=$RUN/probe.out; GO=$RUN/probe.go; : > $PF; rm -f $GO
    python3 "$HERE/probe_many.py" "$X" 10 "$GO" "${args[@]}" > $PF 2>>"$RES/errors.log" &
    echo $! > $RUN/probe.pid
    for _ in $(seq 1 300); do grep -q READY $PF && break; sleep 0.01; done
    t0=$EPOCHREALTIME
    b "$k" run -d --network b20 --name "$X" sleep 1000 >/dev/null
    t1=$EPOCHREALTIME
    : > "$GO"   # a builtin: no fork between run returning and the probe being told
    wait "$(cat $RUN/probe.pid)" || true
    rm -f $RUN/probe.pid
    python3 - "$t0" "$t1" "$PF" "$RES" "$k" <<'PY'
import sys
t0, t1, pf, res, k = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
open(res + "/run-ms.txt", "a").write("%.1f\n" % ((t1 - t0) * 1000))
for line in open(pf):
    f = line.split()
    if not f or f[0] == "READY":
        continue
    if f[1] == "-" or f[2] == "-":
        open(res + "/fail.txt", "a").write("host %s observer %s: %s\n" % (k, f[0], line.strip()))
        continue
    open(res + "/resolve-from-start-ms.txt", "a").write("%.2f\n" % ((float(f[1]) - t0) * 1000))
    open(res + "/resolve-after-return-ms.txt", "a").write("%.2f\n" % ((float(f[1]) - t1) * 1000))
    open(res + "/ping-after-return-ms.txt", "a").write("%.2f\n" % ((float(f[2]) - t1) * 1000))
    if f[3] != "-":
        open(res + "/ping-after-go-ms.txt", "a").write("%.2f\n" % ((float(f[2]) - float(f[3])) * 1000))
PY
    b "$k" rm -f "$X" >/dev/null
    sleep 0.2
    [ $((r % 5)) -eq 0 ] && log "round $r/$N ($(loadavg))"
done
cpu1=$(cpu_ticks)
echo "end $(loadavg)" >> "$RES/loadavg.txt"
hz=$(getconf CLK_TCK)
{
    echo "# berth overlay propagation, $HOSTS hosts, $(date -u +%FT%TZ)"
    echo
    echo "| what | median | min | max | p25–p75 | n | unit |"
    echo "|---|---|---|---|---|---|---|"
    python3 "$HERE/stats.py" "$RES/run-ms.txt" "berth run -d (CLI wall time)" ms
    python3 "$HERE/stats.py" "$RES/resolve-from-start-ms.txt" "name resolvable on another host, after run starts" ms
    python3 "$HERE/stats.py" "$RES/resolve-after-return-ms.txt" "name resolvable on another host, after run returns" ms
    python3 "$HERE/stats.py" "$RES/ping-after-return-ms.txt" "pingable from another host, after run returns" ms
    python3 "$HERE/stats.py" "$RES/ping-after-go-ms.txt" "… first echo reply after the probe saw run return" ms
    echo
    for f in resolve-from-start ping-after-return ping-after-go; do
        python3 -c 'import sys; sys.path.insert(0, sys.argv[3]); from stats import q; xs=[float(l) for l in open(sys.argv[1]) if l.strip()]; print("- %s: median %.2f ms, p90 %.2f ms (n=%d)" % (sys.argv[2], q(xs, .5), q(xs, .9), len(xs)))' \
            "$RES/$f-ms.txt" "$f" "$HERE" 2>/dev/null || echo "- $f: no samples"
    done
    echo "- berthd CPU during the rounds: $(( (cpu1 - cpu0) / hz )) s over $((SECONDS - start)) s (all $HOSTS); RSS $(rss_mib)"
    echo "- load average: $(tr '\n' ';' < "$RES/loadavg.txt")"
    [ -s "$RES/fail.txt" ] && echo "- probe failures: $(wc -l < "$RES/fail.txt")"
    true
} > "$RES/summary.md"
cat "$RES/summary.md"
