#!/bin/bash
# berth's overlay next to Docker 20.10's classic overlay on etcd, in ONE run, on ONE underlay.
#
#   bench/overlay/same_run.sh            # ~6 min on 2 cores; results in $RES (default /tmp/berth-overlay-same-run)
#   QUICK=1 bench/overlay/same_run.sh    # smoke test with tiny counts
#   LAB_ONLY=1 …  leaves the world up for experiments (no measurement); CLEAN=1 … removes it
#   BERTH_BIN=DIR  berthd and berth from DIR (default target/release, built if missing)
#
# The world (namespaces only; the root netns is never touched, everything is removed on exit):
#   bso-lan : bridge bsolan0 10.238.0.10/24 (the "LAN"), one etcd 3.4 member (v2 enabled for
#             Docker's libkv, v3 for berth) on 10.238.0.10:23795
#   bso-d1, bso-d2 : dockerd 20.10 #1 and #2 (10.238.0.1, .2), --cluster-store etcd, overlay ov1
#   bso-b1, bso-b2 : berthd #1 and #2 (10.238.0.3, .4), --cluster-store etcd, overlay bov
# Every host is one veth port of the same LAN bridge, so both overlays cross the same underlay.
#
# Measured, interleaved round by round so machine noise hits every scenario alike:
#   1. iperf3 TCP (IPERF_T s, DRUNS rounds): underlay host→host (d1→d2 and b1→b2), Docker overlay
#      container→container across hosts, berth overlay container→container across hosts, and a
#      bare VXLAN device host→host in berth's host namespaces (the floor of any VXLAN overlay).
#   2. ping RTT (200 echoes at 2 ms) for the same paths.
#   3. Propagation (N rounds each, alternating): a container started on host 2 (`docker run -d` /
#      `berth run -d`), probed from a container on host 1 by name (the container's own resolver)
#      and then by ICMP once `run` has returned: resolvable after run started, pingable after run
#      returned. Method and probe (poll_name.py) as in ../shared/reference/docker-overlay-lab.
# Tools run in the containers' network namespaces with nsenter --net (host binaries), alike for
# both. Needs root. Installs docker.io, containerd, runc, busybox-static, etcd-server, iperf3 if
# missing (no service is started: policy-rc.d).
set -euo pipefail
export LC_ALL=C PYTHONDONTWRITEBYTECODE=1
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
if [ -n "${QUICK:-}" ]; then DRUNS=1 IPERF_T=2 PRUNS=1 N=2; fi
DRUNS=${DRUNS:-5}; IPERF_T=${IPERF_T:-4}; PRUNS=${PRUNS:-2}; N=${N:-10}
RES=${RES:-/tmp/berth-overlay-same-run}
RUN=/var/tmp/bso            # state of this world (short: unix socket paths live under it)
NSS="bso-lan bso-d1 bso-d2 bso-b1 bso-b2"
DOCKER=/usr/bin/docker      # Debian's 20.10 CLI, same version as the daemon
BIN=${BERTH_BIN:-$REPO/target/release}
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
# shellcheck source=teardown.sh
. "$HERE/teardown.sh"
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
[ "$(id -u)" = 0 ] || { echo "same_run.sh: needs root (namespaces, dockerd)" >&2; exit 2; }

# --- tools ---------------------------------------------------------------------------------------
need=()
for t in /usr/sbin/dockerd:docker.io /usr/bin/containerd:containerd /usr/sbin/runc:runc \
         /bin/busybox:busybox-static /usr/bin/etcd:etcd-server /usr/bin/iperf3:iperf3 \
         /usr/bin/nsenter:util-linux /usr/bin/ping:iputils-ping; do
    [ -x "${t%%:*}" ] || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]} (services kept from starting)"
    policy=/usr/sbin/policy-rc.d; had=1
    [ -e $policy ] || { had=0; printf '#!/bin/sh\nexit 101\n' > $policy; chmod +x $policy; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2
    [ $had = 1 ] || rm -f $policy
fi
if [ -z "${CLEAN:-}" ] && { [ ! -x "$BIN/berthd" ] || [ ! -x "$BIN/berth" ]; }; then
    log "building berth (release)"
    (cd "$REPO" && cargo build --release -q -p berthd && crates/front/install.sh release)
fi

d() { local i=$1; shift; DOCKER_HOST=unix://$RUN/docker$i.sock $DOCKER "$@"; }
# Each berthd has a socket directory of its own: its run directory, where it mounts its
# overlay networks' namespaces (two berthds sharing one would share the mount points).
b() { local i=$1; shift; "$BIN/berth" -H "unix://$RUN/run$i/berthd.sock" "$@"; }

# --- teardown (always) ---------------------------------------------------------------------------
cleanup() {
    set +e
    for i in 1 2; do
        if [ -S $RUN/docker$i.sock ]; then
            ids=$(d $i ps -aq 2>/dev/null); [ -n "$ids" ] && d $i rm -f $ids >/dev/null 2>&1
        fi
        if [ -S $RUN/run$i/berthd.sock ]; then
            ids=$(b $i ps -aq 2>/dev/null); [ -n "$ids" ] && b $i rm -f $ids >/dev/null 2>&1
        fi
    done
    # daemons and helpers: by the PIDs we recorded only
    stop_recorded $RUN
    # anything still living in OUR namespaces (containerd shims, containers, iperf3 servers)
    # shellcheck disable=SC2086
    kill_in_netns $NSS
    sleep 0.5
    for n in $NSS; do ip netns del $n 2>/dev/null; done
    # dockerd's mounts live in the private mount namespaces of `ip netns exec`: gone with them
    cp $RUN/berthd*.log $RUN/dockerd*.log "$RES/" 2>/dev/null
    rm -rf $RUN
    log "cleaned up ($(ip netns list | grep -c '^bso-' || true) bso-* namespaces left)"
}
trap cleanup EXIT
cleanup 2>/dev/null
[ -z "${CLEAN:-}" ] || exit 0
mkdir -p "$RES" $RUN
rm -f "$RES"/*.txt

# --- the LAN and etcd ----------------------------------------------------------------------------
for n in $NSS; do ip netns add $n; ip -n $n link set lo up; done
ip -n bso-lan link add bsolan0 type bridge
ip -n bso-lan addr add 10.238.0.10/24 dev bsolan0
ip -n bso-lan link set bsolan0 up
i=1
for h in bso-d1 bso-d2 bso-b1 bso-b2; do
    ip -n bso-lan link add bso-p$i type veth peer name lan0 netns $h
    ip -n bso-lan link set bso-p$i master bsolan0 up
    ip -n $h addr add 10.238.0.$i/24 dev lan0
    ip -n $h link set lan0 up
    i=$((i + 1))
done
ip netns exec bso-lan etcd --name lan --data-dir $RUN/etcd --enable-v2 \
    --listen-client-urls http://10.238.0.10:23795 --advertise-client-urls http://10.238.0.10:23795 \
    --listen-peer-urls http://10.238.0.10:23805 --initial-advertise-peer-urls http://10.238.0.10:23805 \
    --initial-cluster lan=http://10.238.0.10:23805 > $RUN/etcd.log 2>&1 &
echo $! > $RUN/etcd.pid
for _ in $(seq 1 40); do
    ip netns exec bso-d1 curl -sf -m1 http://10.238.0.10:23795/health >/dev/null 2>&1 && break; sleep 0.25
done
# Containers of both get this resolver for outside names: nothing listens there, so no query
# ever leaves our namespaces.
echo "nameserver 10.238.0.10" > $RUN/resolv.conf

# --- Docker 20.10: two dockerd (as in the Docker overlay lab) ------------------------------------
for i in 1 2; do
    mkdir -p $RUN/docker$i/etc
    echo "{\"dns\":[\"10.238.0.10\"],\"cluster-store\":\"etcd://10.238.0.10:23795\",\"cluster-advertise\":\"10.238.0.$i:2376\"}" \
        > $RUN/docker$i/etc/daemon.json
    # dockerd needs the cgroup hierarchies that `ip netns exec` hides when it remounts /sys, and
    # a UTS namespace with a unique hostname (the classic overlay's serf needs unique node names).
    ip netns exec bso-d$i /bin/bash -c '
        set -e
        mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
        for c in cpu cpuacct cpuset memory devices freezer blkio pids; do
            mkdir -p /sys/fs/cgroup/$c; mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c; done
        mkdir -p /sys/fs/cgroup/systemd; mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
        exec unshare --uts /bin/sh -c "hostname bso-d$0; exec /usr/sbin/dockerd \
            --data-root $1/docker$0/root --exec-root $1/docker$0/exec -H unix://$1/docker$0.sock \
            --pidfile $1/docker$0/dockerd.pid --config-file $1/docker$0/etc/daemon.json"' \
        "$i" "$RUN" > $RUN/dockerd$i.log 2>&1 &
    echo $! > $RUN/dockerd$i-launcher.pid
done
for i in 1 2; do
    for _ in $(seq 1 60); do d $i version >/dev/null 2>&1 && break; sleep 0.5; done
    d $i version >/dev/null || { tail -30 $RUN/dockerd$i.log; exit 1; }
    cp $RUN/docker$i/dockerd.pid $RUN/dockerd$i.pid
done
BB=$RUN/bbroot
mkdir -p $BB/{bin,etc,proc,sys,dev,tmp,root}
cp /bin/busybox $BB/bin/busybox
for a in $($BB/bin/busybox --list); do [ -e $BB/bin/$a ] || ln -s busybox $BB/bin/$a; done
echo 'root:x:0:0:root:/root:/bin/sh' > $BB/etc/passwd
for i in 1 2; do tar -C $BB -c . | d $i import - bb >/dev/null; done
d 1 network create -d overlay --subnet 10.239.0.0/24 --attachable ov1 >/dev/null
for _ in $(seq 1 20); do [ -n "$(d 2 network ls -q -f name=ov1)" ] && break; sleep 0.5; done
d 1 run -d --network ov1 --name o1 bb sleep 100000 >/dev/null
d 2 run -d --network ov1 --name o2 bb sleep 100000 >/dev/null

# --- berth: two berthd ---------------------------------------------------------------------------
for i in 1 2; do
    mkdir -p $RUN/run$i
    ip netns exec bso-b$i "$BIN/berthd" --state-dir $RUN/berth$i --socket $RUN/run$i/berthd.sock \
        --resolv-conf $RUN/resolv.conf --cluster-store etcd://10.238.0.10:23795 \
        --advertise-addr 10.238.0.$((i + 2)) --node-name bso-b$i --log-level "${BERTH_LOG:-info}" \
        > $RUN/berthd$i.log 2>&1 &
    echo $! > $RUN/berthd$i.pid
done
for i in 1 2; do
    for _ in $(seq 1 40); do b $i info >/dev/null 2>&1 && break; sleep 0.25; done
    b $i info >/dev/null || { tail -30 $RUN/berthd$i.log; exit 1; }
done
b 1 network create -d overlay --subnet 10.240.0.0/24 bov >/dev/null
for _ in $(seq 1 20); do b 2 network inspect bov >/dev/null 2>&1 && break; sleep 0.25; done
b 1 run -d --network bov --name s1 sleep 100000 >/dev/null
b 2 run -d --network bov --name s2 sleep 100000 >/dev/null

# The floor of any VXLAN overlay here: a bare VXLAN device straight in berth's two host
# namespaces (berthd's real rules around it), no container, veth, bridge or br_netfilter hop
# (vxlan_floor, bench/overlay/shapes.sh). Host b1 -> 10.74.0.2 on b2.
# shellcheck source=shapes.sh
. "$HERE/shapes.sh"
for i in 1 2; do
    vxlan_floor bso-b$i 10.238.0.$((i + 2)) 10.238.0.$((5 - i)) $i $((3 - i))
done

dpid() { d "$1" inspect -f '{{.State.Pid}}' "$2"; }
bpid() { b "$1" inspect -f '{{.State.Pid}}' "$2"; }
PO1=$(dpid 1 o1); PO2=$(dpid 2 o2); PS1=$(bpid 1 s1); PS2=$(bpid 2 s2)
O2=$(d 2 inspect -f '{{(index .NetworkSettings.Networks "ov1").IPAddress}}' o2)
S2=$(b 2 inspect -f '{{.NetworkSettings.Networks.bov.IPAddress}}' s2)
{
    echo "date: $(date -u +%FT%TZ)  kernel: $(uname -r)  cpus: $(nproc)"
    dpkg-query -W -f='${Package} ${Version}\n' docker.io containerd runc etcd-server iperf3 2>/dev/null
    echo "berth: $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null)"
    echo "MTU docker o1 eth0: $(nsenter --net=/proc/$PO1/ns/net ip -o link show eth0 | grep -o 'mtu [0-9]*')"
    echo "MTU berth s1 eth0: $(nsenter --net=/proc/$PS1/ns/net ip -o link show eth0 | grep -o 'mtu [0-9]*')"
} > "$RES/versions.txt"
cat "$RES/versions.txt" >&2
log "lab up: docker o2=$O2, berth s2=$S2; load $(loadavg)"
if [ -n "${LAB_ONLY:-}" ]; then
    # Leave the world up for experiments; `CLEAN=1 same_run.sh` removes it.
    trap - EXIT
    echo "o1=$PO1 o2=$PO2 s1=$PS1 s2=$PS2 O2=$O2 S2=$S2" > $RUN/pids
    exit 0
fi

# --- 1+2. data path ------------------------------------------------------------------------------
EO1="nsenter --net=/proc/$PO1/ns/net"; EO2="nsenter --net=/proc/$PO2/ns/net"
ES1="nsenter --net=/proc/$PS1/ns/net"; ES2="nsenter --net=/proc/$PS2/ns/net"
EH1="ip netns exec bso-d1"; EH2="ip netns exec bso-d2"
EB1="ip netns exec bso-b1"; EB2="ip netns exec bso-b2"
n=0
for E in "$EH2" "$EO2" "$EB2" "$ES2"; do
    n=$((n + 1))
    $E iperf3 -s -p 5201 >/dev/null 2>&1 &
    echo $! > $RUN/iperf3-$n.pid
done
sleep 1
SCEN=("underlay-docker-hosts|$EH1|10.238.0.2" "docker-overlay|$EO1|$O2"
      "underlay-berth-hosts|$EB1|10.238.0.4" "berth-overlay|$ES1|$S2" "vxlan-floor|$EB1|10.74.0.2")
echo "start $(loadavg)" > "$RES/loadavg.txt"
for r in $(seq 1 "$DRUNS"); do
    # odd rounds in order, even rounds reversed: no scenario always runs first or last
    order=("${SCEN[@]}")
    if [ $((r % 2)) = 0 ]; then order=(); for ((k = ${#SCEN[@]} - 1; k >= 0; k--)); do order+=("${SCEN[k]}"); done; fi
    for s in "${order[@]}"; do
        IFS='|' read -r name E ip <<< "$s"
        $E timeout $((IPERF_T + 10)) iperf3 -c "$ip" -p 5201 -t "$IPERF_T" -O 1 -J > $RUN/iperf.json 2>&1 || true
        python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.3f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' \
            $RUN/iperf.json >> "$RES/$name-gbps.txt" 2>/dev/null || log "iperf3 $name failed: $(tail -c 300 $RUN/iperf.json)"
    done
    log "throughput round $r/$DRUNS ($(loadavg))"
done
for r in $(seq 1 "$PRUNS"); do
    for s in "${SCEN[@]}"; do
        IFS='|' read -r name E ip <<< "$s"
        $E ping -c 200 -i 0.002 -q -W 1 "$ip" 2>/dev/null | awk -F'/' '/rtt/ {printf "%.1f\n", $5*1000}' >> "$RES/$name-ping-us.txt"
    done
done
echo "after datapath $(loadavg)" >> "$RES/loadavg.txt"

# --- 3. propagation ------------------------------------------------------------------------------
resolver() { nsenter -t "$1" -m awk '/^nameserver/ {print $2; exit}' /etc/resolv.conf; }
RD=$(resolver "$PO1"); RB=$(resolver "$PS1")
log "resolvers: docker o1 $RD, berth s1 $RB"
for i in $(seq 1 "$N"); do
    for who in docker berth; do
        X=p$who$(date +%s)$i
        PF=$RUN/poll.out; GO=$RUN/poll.go; : > $PF; rm -f $GO
        if [ $who = docker ]; then pid=$PO1; srv=$RD; else pid=$PS1; srv=$RB; fi
        nsenter --net=/proc/$pid/ns/net "$HERE/poll_name.py" "$srv" "$X" 30 "$GO" > $PF 2>>"$RES/errors.log" &
        POLL=$!
        for _ in $(seq 1 200); do grep -q READY $PF && break; sleep 0.01; done
        t0=$EPOCHREALTIME
        if [ $who = docker ]; then d 2 run -d --network ov1 --name "$X" bb sleep 1000 >/dev/null
        else b 2 run -d --network bov --name "$X" sleep 1000 >/dev/null; fi
        t1=$EPOCHREALTIME
        touch $GO
        wait $POLL || true
        out=$(grep -v READY $PF || true)
        python3 - "$t0" "$t1" "$out" "$RES/prop-$who" <<'PY'
import sys
t0, t1, out, p = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3].split(), sys.argv[4]
open(p + "-run-ms.txt", "a").write("%.1f\n" % ((t1 - t0) * 1000))
if out and out[0] != "FAIL":
    open(p + "-resolve-from-start-ms.txt", "a").write("%.1f\n" % ((float(out[0]) - t0) * 1000))
    open(p + "-ping-after-return-ms.txt", "a").write("%.1f\n" % ((float(out[1]) - t1) * 1000))
else:
    open(p + "-fail.txt", "a").write(" ".join(out) + "\n")
PY
        sleep 0.3
    done
    log "propagation round $i/$N"
done
echo "end $(loadavg)" >> "$RES/loadavg.txt"

# --- summary -------------------------------------------------------------------------------------
med() { python3 -c 'import statistics,sys; xs=[float(l) for l in open(sys.argv[1]) if l.strip()]; print("%.3f" % statistics.median(xs) if xs else "nan")' "$1" 2>/dev/null || echo nan; }
ratio() { python3 -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print("%.2f" % (a/b) if b==b and b>0 and a==a else "n/a")' "$1" "$2"; }
{
    echo "# berth overlay vs Docker 20.10 classic overlay, same run ($(date -u +%FT%TZ))"
    echo
    echo "| what | median | min | max | p25–p75 | n | unit |"
    echo "|---|---|---|---|---|---|---|"
    for f in underlay-docker-hosts underlay-berth-hosts docker-overlay berth-overlay vxlan-floor; do
        python3 "$HERE/stats.py" "$RES/$f-gbps.txt" "iperf3 TCP $f" "Gbit/s"
    done
    for f in underlay-docker-hosts underlay-berth-hosts docker-overlay berth-overlay vxlan-floor; do
        python3 "$HERE/stats.py" "$RES/$f-ping-us.txt" "ping avg RTT $f" "µs"
    done
    for who in docker berth; do
        python3 "$HERE/stats.py" "$RES/prop-$who-run-ms.txt" "$who run -d on host 2 (CLI wall time)" ms
        python3 "$HERE/stats.py" "$RES/prop-$who-resolve-from-start-ms.txt" "$who: name resolvable on host 1, after run starts" ms
        python3 "$HERE/stats.py" "$RES/prop-$who-ping-after-return-ms.txt" "$who: pingable from host 1, after run returns" ms
    done
    echo
    ud=$(med "$RES/underlay-docker-hosts-gbps.txt"); ub=$(med "$RES/underlay-berth-hosts-gbps.txt")
    do_=$(med "$RES/docker-overlay-gbps.txt"); bo=$(med "$RES/berth-overlay-gbps.txt")
    echo "- berth overlay / its underlay: $(ratio "$bo" "$ub"); Docker overlay / its underlay: $(ratio "$do_" "$ud"); berth / Docker: $(ratio "$bo" "$do_")"
    vf=$(med "$RES/vxlan-floor-gbps.txt")
    echo "- bare VXLAN device host→host (the floor of any VXLAN overlay here) / its underlay: $(ratio "$vf" "$ub"); / Docker overlay: $(ratio "$vf" "$do_"); berth overlay / it: $(ratio "$bo" "$vf")"
    echo "- load average: $(tr '\n' ';' < "$RES/loadavg.txt")"
    for who in docker berth; do
        [ -s "$RES/prop-$who-fail.txt" ] && echo "- $who probe failures: $(wc -l < "$RES/prop-$who-fail.txt")"
    done
    true
} > "$RES/summary.md"
cat "$RES/summary.md"
