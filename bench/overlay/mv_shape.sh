#!/bin/bash
# A datapath with fewer hops for the overlay, measured before it is built (issue 11's throughput
# goal: ≥ 1.15× Docker 20.10's classic overlay, ≥ 85 % of the underlay). The overlay berth
# ships (bridge and VXLAN port in an overlay namespace of their own, a veth per container) is
# level with Docker's: same hops, minus br_netfilter, plus berth's guard (ns_shape.sh). This
# prototype removes hops instead of rules: the container's interface is a **macvlan** (bridge
# mode) of the network's VXLAN device, so a frame leaves the container's stack straight into
# the VXLAN device's transmit (no veth backlog, no bridge), and a decapsulated frame is handed
# to the container by the macvlan's receive handler in the same softirq.
# Built by hand with ip(8) and nft(8) (no berthd) on two hosts, iperf3 container → container
# across them in alternated rounds, next to the underlay and the two bridge shapes.
#
#   bench/overlay/mv_shape.sh                # ~3 min on 2 cores; ROUNDS=8 IPERF_T=3 by default
#   NSPFX=h2m ROUNDS=6 IPERF_T=3 bench/overlay/mv_shape.sh
#
# The shapes (each its own subnet and VNI on the same hosts and UDP port 4789):
#   under   host namespace → host namespace over the LAN bridge (the underlay).
#   docker  Docker 20.10's classic overlay as the kernel sees it: bridge and VXLAN port in a
#           namespace of their own, br_netfilter on there, no rules; a veth per container.
#   ns      berth's shape today: the same with `bridge-nf-call-*` = 0 in the overlay namespace
#           and berth's anti-spoofing guard (`table bridge berth` from crates/plan/tests/golden/
#           base.nft, its TCP fast path `port_ok4` first) on the container's bridge port.
#   mv      the VXLAN device in an overlay namespace (made in the host namespace so its socket
#           binds on the underlay, then moved), the container's eth0 a macvlan (mode bridge) of
#           it, moved into the container. Anti-spoofing on the container's own interface: a
#           `netdev` table with an `egress` hook on eth0 in the container's namespace (the hook
#           also sees AF_PACKET sends, with or without PACKET_QDISC_BYPASS); same rules as the
#           bridge guard, keyed on the one interface, fast path first.
#   mv0     mv without the guard: what the guard costs there.
# Checks before measuring: every shape passes traffic across; mv's guard drops a spoofed
# source address and a spoofed MAC (and the same sends pass with the guard's table removed,
# so the check can fail).
#
# Everything lives in namespaces named $NSPFX-* (default h2m), removed on exit; the root
# namespace is never touched. Processes ended: the iperf3 servers this script started (PIDs)
# and whatever lives in its namespaces.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
P=${NSPFX:-h2m}
ROUNDS=${ROUNDS:-8}
IPERF_T=${IPERF_T:-3}
GOLD=$REPO/crates/plan/tests/golden/base.nft
RUN=$(mktemp -d /tmp/$P-shape.XXXXXX)
[ "$(id -u)" = 0 ] || { echo "mv_shape.sh: needs root (namespaces)" >&2; exit 2; }
for t in iperf3 nft ip python3; do command -v $t >/dev/null || { echo "needs $t" >&2; exit 2; }; done
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
x() { local n=$1; shift; ip netns exec "$n" "$@"; }

# shellcheck source=teardown.sh
. "$HERE/teardown.sh"
NSS=()
cleanup() {
    set +e
    stop_recorded "$RUN"
    kill_in_netns "${NSS[@]}"
    for n in "${NSS[@]}"; do ip netns del "$n" 2>/dev/null; done
    rm -rf "$RUN"
    log "cleaned up ($(ip netns list | grep -c "^$P-" || true) $P-* namespaces left)"
}
trap cleanup EXIT
# shellcheck source=shapes.sh
. "$HERE/shapes.sh"
lan_and_hosts 10.242.0

# vxlan HOSTNS INTO NAME VNI LOCAL: made in the host namespace (its socket binds there, on the
# underlay), moved into INTO.
vxlan() {
    ip -n "$1" link add "$3" mtu 1450 type vxlan id "$4" local "$5" dstport 4789 nolearning proxy
    ip -n "$1" link set "$3" netns "$2"
}

# bridge_shape K NET VNI NF GUARD: overlay namespace $P-$h-K with bridge b$K, VXLAN port vx$K
# and container $P-$h-cK on a veth (v$K$h); `bridge-nf-call-*` = NF; GUARD=1: berth's guard.
bridge_shape() {
    local k=$1 net=$2 vni=$3 nf=$4 guard=$5 o=$P-$h-$1 c=$P-$h-c$1
    local ip=10.$net.0.$((10 + i)) m
    m=$(mac "$net" "$i")
    ns "$o"
    x "$o" sysctl -qw net.bridge.bridge-nf-call-iptables="$nf" \
        net.bridge.bridge-nf-call-ip6tables="$nf" net.bridge.bridge-nf-call-arptables="$nf"
    ip -n "$o" link add name "b$k" mtu 1450 type bridge
    ip -n "$o" link set "b$k" up
    vxlan "$H" "$o" "vx$k" "$vni" "$L"
    ip -n "$o" link set "vx$k" master "b$k" up
    ns "$c"
    ip -n "$o" link add "v$k$h" mtu 1450 type veth peer name eth0 netns "$c"
    ip -n "$o" link set "v$k$h" master "b$k" up
    ip -n "$c" link set eth0 address "$m" mtu 1450 up
    ip -n "$c" addr add "$ip/24" dev eth0
    if [ "$guard" = 1 ]; then
        sed -n '/^add table bridge berth/,$p' "$GOLD" | grep -v '^add element' | x "$o" nft -f -
        x "$o" nft -f - <<EOF
add element bridge berth guarded { "v$k$h" }
add element bridge berth port_mac { "v$k$h" . $m }
add element bridge berth port_ip4 { "v$k$h" . $ip }
add element bridge berth port_ok4 { "v$k$h" . $m . $ip }
EOF
    fi
}

# mv_guard C MAC IP: the bridge guard's rules on the container's own eth0 (egress hook of a
# netdev table in its namespace): the same tests without `iifname`, since there is one port.
mv_guard() {
    x "$1" nft -f - <<EOF
add table netdev berth
add set netdev berth ok4 { type ether_addr . ipv4_addr; }
add chain netdev berth guard { type filter hook egress device "eth0" priority filter; policy accept; }
add rule netdev berth guard meta l4proto tcp ether saddr . ip saddr @ok4 accept
add rule netdev berth guard ether saddr != $2 drop
add rule netdev berth guard ether type != { ip, ip6, arp } drop
add rule netdev berth guard arp saddr ether != $2 drop
add rule netdev berth guard arp saddr ip != 0.0.0.0 arp saddr ip != $3 drop
add rule netdev berth guard ether type ip ip saddr != $3 drop
add rule netdev berth guard icmpv6 type { nd-router-advert, nd-redirect } drop
add rule netdev berth guard udp sport { 67, 547 } drop
add element netdev berth ok4 { $2 . $3 }
EOF
}

# mv_shape K NET VNI GUARD: overlay namespace $P-$h-K with VXLAN device vx$K; container
# $P-$h-cK whose eth0 is a macvlan (bridge mode) of vx$K.
mv_shape() {
    local k=$1 net=$2 vni=$3 guard=$4 o=$P-$h-$1 c=$P-$h-c$1
    local ip=10.$net.0.$((10 + i)) m
    m=$(mac "$net" "$i")
    ns "$o"
    vxlan "$H" "$o" "vx$k" "$vni" "$L"
    ip -n "$o" link set "vx$k" up
    ns "$c"
    ip -n "$o" link add link "vx$k" name "m$k$h" address "$m" type macvlan mode bridge
    ip -n "$o" link set "m$k$h" netns "$c"
    ip -n "$c" link set "m$k$h" name eth0
    ip -n "$c" link set eth0 up
    ip -n "$c" addr add "$ip/24" dev eth0
    [ "$guard" = 1 ] && mv_guard "$c" "$m" "$ip"
    return 0
}

i=1
for h in a b; do
    H=$P-$h; L=10.242.0.$i
    bridge_shape d 61 6101 1 0
    bridge_shape n 62 6102 0 1
    mv_shape m 63 6103 1
    mv_shape z 64 6104 0
    i=$((i + 1))
done

# Remote entries as berth programs them: a permanent forwarding entry and neighbour entry per
# remote container on the VXLAN device.
for s in "d:61" "n:62" "m:63" "z:64"; do
    k=${s%%:*}; net=${s#*:}
    for pair in "a:2" "b:1"; do
        me=${pair%%:*}; oi=${pair#*:}
        x $P-$me-$k bridge fdb append "$(mac "$net" "$oi")" dev vx$k dst 10.242.0.$oi self permanent
        ip -n $P-$me-$k neigh add 10.$net.0.$((10 + oi)) lladdr "$(mac "$net" "$oi")" dev vx$k nud permanent
    done
done

# --- checks ------------------------------------------------------------------------------------
for s in "d:61" "n:62" "m:63" "z:64"; do
    x $P-b-c${s%%:*} ping -c1 -W2 -q 10.${s#*:}.0.11 >/dev/null ||
        { echo "shape ${s%%:*}: no path across" >&2; exit 1; }
done
# mv's guard: a spoofed source address, then a spoofed MAC, get no answer; without the guard's
# table the same sends are answered (so the checks can fail).
spoof_ip() {
    x $P-b-cm ip addr add 10.63.0.99/24 dev eth0
    ip -n $P-a-m neigh add 10.63.0.99 lladdr "$(mac 63 2)" dev vxm nud permanent 2>/dev/null || true
    local r=0
    x $P-b-cm ping -c3 -i0.3 -W1 -q -I 10.63.0.99 10.63.0.11 >/dev/null 2>&1 || r=1
    x $P-b-cm ip addr del 10.63.0.99/24 dev eth0
    return $r
}
spoof_mac() {
    # A raw frame from another MAC: the guard drops it at eth0's egress, so the remote VXLAN
    # device never counts it.
    local before after
    before=$(ip -n $P-a-m -s -j link show vxm | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])')
    x $P-b-cm python3 - "$(mac 63 1)" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
dst = bytes.fromhex(sys.argv[1].replace(":", ""))
src = bytes.fromhex("02420a3f0077")            # not the container's MAC
for _ in range(20):
    try:
        s.send(dst + src + b"\x88\xb5" + b"x" * 46)   # local experimental ethertype
    except OSError:
        pass   # ENOBUFS: the egress hook dropped it (NET_XMIT_DROP)
EOF
    sleep 0.3
    after=$(ip -n $P-a-m -s -j link show vxm | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])')
    [ $((after - before)) -ge 20 ]
}
if spoof_ip; then echo "mv guard: a spoofed source address was answered" >&2; exit 1; fi
if spoof_mac; then echo "mv guard: a frame from a spoofed MAC crossed" >&2; exit 1; fi
x $P-b-cm nft delete table netdev berth
spoof_ip || { echo "the address check cannot fail: unguarded, the spoofed ping is lost too" >&2; exit 1; }
spoof_mac || { echo "the MAC check cannot fail: unguarded, the raw frames are lost too" >&2; exit 1; }
mv_guard $P-b-cm "$(mac 63 2)" 10.63.0.12
log "world up; every shape passes traffic; mv's guard drops a spoofed address and MAC (and they pass without it)"

# --- servers and rounds ----------------------------------------------------------------------------
srv() {   # NAME NS ADDR PORT
    ip netns exec "$2" iperf3 -s -B "$3" -p "$4" >/dev/null 2>&1 &
    echo $! > "$RUN/$1.pid"
}
srv under $P-a 10.242.0.1 5401
srv d $P-a-cd 10.61.0.11 5402
srv n $P-a-cn 10.62.0.11 5403
srv m $P-a-cm 10.63.0.11 5404
srv z $P-a-cz 10.64.0.11 5405
sleep 1

gbps() {   # NS ADDR PORT
    x "$1" timeout $((IPERF_T + 15)) iperf3 -c "$2" -p "$3" -t "$IPERF_T" -J 2>/dev/null |
        python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))' \
        2>/dev/null || echo nan
}
declare -A R
order=(under d n m z)
for r in $(seq 1 "$ROUNDS"); do
    rot=("${order[@]:$((r % 5))}" "${order[@]:0:$((r % 5))}")
    line="round $r (load $(cut -d' ' -f1 /proc/loadavg)):"
    for s in "${rot[@]}"; do
        case $s in
            under) v=$(gbps $P-b 10.242.0.1 5401) ;;
            d) v=$(gbps $P-b-cd 10.61.0.11 5402) ;;
            n) v=$(gbps $P-b-cn 10.62.0.11 5403) ;;
            m) v=$(gbps $P-b-cm 10.63.0.11 5404) ;;
            z) v=$(gbps $P-b-cz 10.64.0.11 5405) ;;
        esac
        R[$s]="${R[$s]:-} $v"
        line="$line $s=$v"
    done
    log "$line"
done

python3 - "${R[under]}" "${R[d]}" "${R[n]}" "${R[m]}" "${R[z]}" <<'EOF'
import sys, statistics as st
names = ["underlay host→host", "docker shape", "ns shape (berth today)", "mv shape (macvlan, guarded)",
         "mv0 (macvlan, no guard)"]
vals = [[float(x) for x in a.split() if x != "nan"] for a in sys.argv[1:]]
print(f"{'scenario':30} {'median Gbit/s':>14}  range")
for n, v in zip(names, vals):
    if v:
        print(f"{n:30} {st.median(v):14.2f}  {min(v):.2f}-{max(v):.2f}")
if all(len(v) == len(vals[0]) for v in vals):
    rounds = list(zip(*vals))
    r = lambda i, j: st.median(x[i] / x[j] for x in rounds if x[j] > 0)
    print("per-round medians of ratios:")
    print(f"  docker / underlay {r(1, 0):.2f}   ns / underlay {r(2, 0):.2f}   mv / underlay {r(3, 0):.2f}   mv0 / underlay {r(4, 0):.2f}")
    print(f"  ns / docker       {r(2, 1):.2f}   mv / docker   {r(3, 1):.2f}   mv0 / docker  {r(4, 1):.2f}   mv / ns {r(3, 2):.2f}")
EOF
