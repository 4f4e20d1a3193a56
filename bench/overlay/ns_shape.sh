#!/bin/bash
# Where an overlay network's bridge should live, measured before it is built (issue 11): the
# same two-host VXLAN overlay in six shapes, side by side on one underlay, built by hand with
# ip(8) and nft(8) (no berthd), iperf3 container → container across the hosts in alternated
# rounds, plus the underlay and a container's egress to the LAN. Before measuring it checks
# what the proposed shape must keep: its guard drops a spoofed source (and the check passes
# the same ping once the port is unguarded, so it can fail), berth's host rules keyed on its
# host veth isolate it from the host shape's network and from the LAN, and a port published
# through berth's DNAT map reaches its container through that veth.
#
#   bench/overlay/ns_shape.sh               # ~4 min on 2 cores; ROUNDS=6 IPERF_T=3 by default
#   NSPFX=h1s ROUNDS=4 IPERF_T=2 bench/overlay/ns_shape.sh
# (Run a copy when editing the script meanwhile: bash reads a running script as it goes.)
#
# The shapes (each its own subnet and VNI, all on the same hosts, the same UDP port 4789):
#   host    berth today: bridge and VXLAN port in the host namespace, where br_netfilter hands
#           every bridged frame to the inet hooks (`bridge-nf-call-iptables` = 1, the host
#           administrator's setting), with berth's real static rules (crates/plan/tests/golden/
#           base.nft) and the elements berth adds for the network and its container.
#   ns      the proposed shape: bridge and VXLAN port (created in the host namespace so that
#           its UDP socket binds on the underlay, then moved with `ip link set … netns`, i.e.
#           IFLA_NET_NS_FD) in an overlay namespace of their own with
#           `bridge-nf-call-{iptables,ip6tables,arptables}` = 0 there, the anti-spoofing guard
#           (`table bridge berth`) there; egress through a veth pair overlay ns ↔ host ns
#           (`ip_forward` in the overlay namespace, the subnet routed to the veth in the host,
#           masqueraded there by berth's rules keyed on that veth).
#   nsx     the ns shape with two cheaper details: its VXLAN packets untracked in the host
#           namespace (`notrack` for their UDP port in raw prerouting and output; its own port
#           4790 so that the other shapes keep conntrack), and an IPv4 TCP fast path at the top
#           of the guard (`ip protocol tcp iifname . ether saddr . ip saddr @fast4 accept`: one
#           lookup for a container's own TCP, every other rule for the rest).
#   ng      the ns shape without the anti-spoofing guard: what the guard costs, and the most
#           the bridge in a namespace can give.
#   nr      no bridge at all: the container's veth and the VXLAN device in the overlay
#           namespace, which routes (a /32 route and a permanent neighbour entry per remote
#           container through the VXLAN device, `proxy_arp` on the veth): whether skipping the
#           bridge is cheaper than bridging.
#   docker  Docker 20.10's classic overlay as far as the kernel sees it: bridge and VXLAN port in
#           a namespace of their own, br_netfilter on there (as Docker leaves it), no rules.
# The VXLAN packets of every shape cross the same host namespace with berth's table in it.
#
# Everything lives in namespaces named $NSPFX-* (default h1s), removed on exit; the root
# namespace is never touched. Processes ended: the iperf3 servers this script started (PIDs).
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
P=${NSPFX:-h1s}
ROUNDS=${ROUNDS:-6}
IPERF_T=${IPERF_T:-3}
GOLD=$REPO/crates/plan/tests/golden/base.nft
RUN=$(mktemp -d /tmp/$P-shape.XXXXXX)
[ "$(id -u)" = 0 ] || { echo "ns_shape.sh: needs root (namespaces)" >&2; exit 2; }
for t in iperf3 nft ip python3; do command -v $t >/dev/null || { echo "needs $t" >&2; exit 2; }; done
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
x() { local n=$1; shift; ip netns exec "$n" "$@"; }

# shellcheck source=teardown.sh
. "$HERE/teardown.sh"
NSS=()
cleanup() {
    set +e
    stop_recorded "$RUN"
    # Anything else still living in our namespaces (nothing should): one walk of /proc for all
    # of them (teardown.sh's kill_in_netns walks it once per namespace, slow for 25).
    local -A mine=()
    local n p l
    for n in "${NSS[@]}"; do
        [ -e "/run/netns/$n" ] && mine["net:[$(stat -L -c %i "/run/netns/$n")]"]=1
    done
    for p in /proc/[0-9]*; do
        l=$(readlink "$p/ns/net" 2>/dev/null) || continue
        [ -n "${mine[$l]:-}" ] && kill -9 "${p#/proc/}" 2>/dev/null
    done
    for n in "${NSS[@]}"; do ip netns del "$n" 2>/dev/null; done
    rm -rf "$RUN"
    log "cleaned up ($(ip netns list | grep -c "^$P-" || true) $P-* namespaces left)"
}
trap cleanup EXIT
# shellcheck source=shapes.sh
. "$HERE/shapes.sh"
lan_and_hosts 10.241.0

# container NS NETNS_OF_BRIDGE BRIDGE VETH IP/24 MAC GW: a container namespace with eth0 on the
# bridge (the veth's host side is created where the bridge is).
container() {
    local c=$1 where=$2 br=$3 veth=$4 ip=$5 m=$6 gw=$7
    ns "$c"
    ip -n "$where" link add "$veth" mtu 1450 type veth peer name eth0 netns "$c"
    ip -n "$where" link set "$veth" master "$br" up
    ip -n "$c" link set eth0 address "$m" mtu 1450 up
    ip -n "$c" addr add "$ip" dev eth0
    ip -n "$c" route add default via "$gw"
}

# vxlan HOSTNS INTO BRIDGE NAME VNI LOCAL: created in the host namespace (its socket binds
# there, on the underlay), moved into INTO (no-op when INTO is the host), a port of BRIDGE.
vxlan() {
    local hns=$1 into=$2 br=$3 dev=$4 vni=$5 local=$6 port=${7:-4789}
    ip -n "$hns" link add "$dev" mtu 1450 type vxlan id "$vni" local "$local" dstport "$port" nolearning proxy
    [ "$into" = "$hns" ] || ip -n "$hns" link set "$dev" netns "$into"
    ip -n "$into" link set "$dev" master "$br" up
}

guard_elements() {   # NS VETH MAC IP CONTAINER
    x "$1" nft -f - <<EOF
add element bridge berth guarded { "$2" }
add element bridge berth port_mac { "$2" . $3 }
add element bridge berth port_ip4 { "$2" . $4 }
EOF
}

# overlay_ns NS K NET VNI NF GUARD [PORT]: for host $h (index $i, underlay address $L), an
# overlay namespace NS with bridge ob$K (gateway 10.NET.0.1), VXLAN port vx$K (VNI, UDP PORT,
# default 4789) made in the host namespace and moved in, and container $P-$h-c$K on the bridge
# (veth v$K$h); `bridge-nf-call-*` = NF there; with GUARD=1 berth's `table bridge berth` and
# the container's anti-spoofing elements.
overlay_ns() {
    local o=$1 k=$2 net=$3 vni=$4 nf=$5 guard=$6 port=${7:-4789}
    ns "$o"
    x "$o" sysctl -qw net.bridge.bridge-nf-call-iptables="$nf" \
        net.bridge.bridge-nf-call-ip6tables="$nf" net.bridge.bridge-nf-call-arptables="$nf" \
        net.ipv4.ip_forward=1
    ip -n "$o" link add name "ob$k" mtu 1450 type bridge
    ip -n "$o" addr add "10.$net.0.1/24" dev "ob$k"
    ip -n "$o" link set "ob$k" up
    vxlan "$H" "$o" "ob$k" "vx$k" "$vni" "$L" "$port"
    container "$P-$h-c$k" "$o" "ob$k" "v$k$h" "10.$net.0.$((10 + i))/24" "$(mac "$net" "$i")" \
        "10.$net.0.1"
    if [ "$guard" = 1 ]; then
        sed -n '/^add table bridge berth/,$p' "$GOLD" | grep -v '^add element' | x "$o" nft -f -
        guard_elements "$o" "v$k$h" "$(mac "$net" "$i")" "10.$net.0.$((10 + i))"
    fi
}

i=1
for h in a b; do
    H=$P-$h; L=10.241.0.$i
    # host: net 51 in the host namespace.
    ip -n $H link add name brh mtu 1450 type bridge
    ip -n $H addr add 10.51.0.1/24 dev brh
    ip -n $H link set brh up
    vxlan $H $H brh vxh 5101 $L
    container $P-$h-ch $H brh vh$h 10.51.0.$((10 + i))/24 "$(mac 51 $i)" 10.51.0.1
    x $H nft -f - <<EOF
add element inet berth bridges { "brh" }
add element inet berth same_bridge { "brh" . "brh" }
add element inet berth masq4 { 10.51.0.0/24 }
add element inet berth dns { "brh" }
EOF
    guard_elements $H vh$h "$(mac 51 $i)" 10.51.0.$((10 + i))

    # ns: net 52 in the overlay namespace.
    O=$P-$h-o
    overlay_ns $O n 52 5102 0 1
    # The path to the host: a veth pair, the subnet routed to it, masqueraded in the host.
    ip -n $O link add up0 type veth peer name ovn netns $H
    ip -n $O addr add 169.254.52.2/30 dev up0
    ip -n $H addr add 169.254.52.1/30 dev ovn
    ip -n $O link set up0 up
    ip -n $H link set ovn up
    ip -n $O route add default via 169.254.52.1
    ip -n $H route add 10.52.0.0/24 via 169.254.52.2
    x $H nft -f - <<EOT
add element inet berth bridges { "ovn" }
add element inet berth masq4 { 10.52.0.0/24 }
EOT

    # nsx: net 54, the ns shape with notrack for its VXLAN port and the guard's fast path.
    X=$P-$h-x
    overlay_ns $X x 54 5104 0 1 4790
    x $X nft -f - <<EOT
add set bridge berth fast4 { type ifname . ether_addr . ipv4_addr; }
insert rule bridge berth guard ip protocol tcp iifname . ether saddr . ip saddr @fast4 accept
add element bridge berth fast4 { "vx$h" . $(mac 54 $i) . 10.54.0.$((10 + i)) }
EOT
    x $H nft -f - <<EOT
add table inet h1notrack
add chain inet h1notrack pre { type filter hook prerouting priority raw - 1; }
add chain inet h1notrack out { type filter hook output priority raw - 1; }
add rule inet h1notrack pre udp dport 4790 fib daddr type local notrack
add rule inet h1notrack out udp dport 4790 notrack
EOT

    # ng: net 55, the ns shape without the guard (no bridge table at all).
    overlay_ns $P-$h-g g 55 5105 0 0

    # docker: net 53 in a namespace of its own, br_netfilter on there, no rules.
    overlay_ns $P-$h-d d 53 5103 1 0

    # nr: net 56, routed in the overlay namespace, no bridge; the VXLAN device has a MAC of
    # its own, which the other host's neighbour entries name.
    R=$P-$h-r
    ns $R
    x $R sysctl -qw net.ipv4.ip_forward=1
    ip -n $H link add vxr mtu 1450 type vxlan id 5106 local $L dstport 4789 nolearning
    ip -n $H link set vxr netns $R
    ip -n $R link set vxr address "$(mac 56 $((100 + i)))" up
    ns $P-$h-cr
    ip -n $R link add vr$h mtu 1450 type veth peer name eth0 netns $P-$h-cr
    ip -n $R link set vr$h up
    x $R sysctl -qw net.ipv4.conf.vr$h.proxy_arp=1
    ip -n $P-$h-cr link set eth0 address "$(mac 56 $i)" mtu 1450 up
    ip -n $P-$h-cr addr add 10.56.0.$((10 + i))/24 dev eth0
    ip -n $R route add 10.56.0.$((10 + i))/32 dev vr$h
    i=$((i + 1))
done

# Remote entries, as berth programs them: a permanent forwarding entry and neighbour entry per
# remote container on the VXLAN port.
remote() {   # NS DEV MAC IP VTEP
    x "$1" bridge fdb append "$3" dev "$2" dst "$5" self permanent
    ip -n "$1" neigh add "$4" lladdr "$3" dev "$2" nud permanent
}
for s in "h:51" "n:52" "d:53" "x:54" "g:55"; do
    k=${s%%:*}; net=${s#*:}
    for pair in "a:b:1:2" "b:a:2:1"; do
        IFS=: read -r me other mi oi <<<"$pair"
        where=$P-$me; [ $k = n ] && where=$P-$me-o; [ $k = d ] && where=$P-$me-d; [ $k = x ] && where=$P-$me-x; [ $k = g ] && where=$P-$me-g
        remote "$where" vx$k "$(mac "$net" "$oi")" 10.$net.0.$((10 + oi)) 10.241.0.$oi
    done
done

for pair in "a:1:2" "b:2:1"; do
    IFS=: read -r me mi oi <<<"$pair"
    x $P-$me-r bridge fdb append "$(mac 56 $((100 + oi)))" dev vxr dst 10.241.0.$oi self permanent
    ip -n $P-$me-r neigh add 10.56.0.$((10 + oi)) lladdr "$(mac 56 $((100 + oi)))" dev vxr nud permanent
    ip -n $P-$me-r route add 10.56.0.$((10 + oi))/32 dev vxr
done

# --- checks: the shapes are what they claim -------------------------------------------------------
[ "$(x $P-a-o cat /proc/sys/net/bridge/bridge-nf-call-iptables)" = 0 ]
[ "$(x $P-a cat /proc/sys/net/bridge/bridge-nf-call-iptables)" = 1 ]
ip -n $P-a-o -d link show vxn | grep -q 'vxlan id 5102' 
for c in ch cn cd cx cg cr; do
    net=51; [ $c = cn ] && net=52; [ $c = cd ] && net=53; [ $c = cx ] && net=54; [ $c = cg ] && net=55
    [ $c = cr ] && net=56
    x $P-b-$c ping -c1 -W2 -q 10.$net.0.11 >/dev/null || { echo "shape $c: no path across" >&2; exit 1; }
done
# The guard holds in the overlay namespace: a container pinging its gateway from an address
# that is not its own gets no answer; with its port taken out of `guarded` the same ping is
# answered (so the check can fail).
x $P-b-cn ip addr add 10.52.0.99/24 dev eth0
spoof() { x $P-b-o ip neigh flush dev obn; x $P-b-cn ping -c3 -i0.3 -W1 -q -I 10.52.0.99 10.52.0.1 >/dev/null 2>&1; }
if spoof; then
    echo "anti-spoofing in the overlay namespace did not drop a spoofed source" >&2; exit 1
fi
x $P-b-o nft delete element bridge berth guarded '{ "vnb" }'
spoof || { echo "the spoofing check cannot fail: unguarded, the spoofed ping is lost too" >&2; exit 1; }
x $P-b-o nft add element bridge berth guarded '{ "vnb" }'
x $P-b-o ip neigh flush dev obn
x $P-b-cn ip addr del 10.52.0.99/24 dev eth0
x $P-b-cn ping -c1 -W2 -q 10.241.0.254 >/dev/null || { echo "ns shape: no egress" >&2; exit 1; }
# berth's host rules keyed on the ns shape's host veth (`ovn`) instead of a bridge keep the
# guarantees: no path between the ns network and the host shape's network on the same host
# (either way), no direct path from the LAN to a container address, while a port published
# with the same DNAT map berth uses reaches the container through the veth (checked below,
# once the servers listen).
for pair in "cn:10.51.0.11" "ch:10.52.0.11"; do
    if x $P-a-${pair%%:*} ping -c2 -i0.3 -W1 -q ${pair#*:} >/dev/null 2>&1; then
        echo "isolation: $P-a-${pair%%:*} reached ${pair#*:}" >&2; exit 1
    fi
done
ip -n $P-lan route add 10.52.0.0/24 via 10.241.0.1
if x $P-lan ping -c2 -i0.3 -W1 -q 10.52.0.11 >/dev/null 2>&1; then
    echo "a container address of the ns shape is reachable from the LAN unpublished" >&2; exit 1
fi
x $P-a nft add element inet berth publish4_any '{ tcp . 8080 : 10.52.0.11 . 5303 }'
log "world up; all six shapes pass traffic, the ns shape's guard drops a spoofed source, isolation holds through its host veth"

# --- servers -------------------------------------------------------------------------------------
srv() {   # NAME NS ADDR PORT
    # `ip netns exec` execs iperf3: $! is the server's own PID (not a subshell's).
    ip netns exec "$2" iperf3 -s -B "$3" -p "$4" >/dev/null 2>&1 &
    echo $! > "$RUN/$1.pid"
}
srv under $P-a 10.241.0.1 5301
srv ch $P-a-ch 10.51.0.11 5302
srv cn $P-a-cn 10.52.0.11 5303
srv cd $P-a-cd 10.53.0.11 5304
srv cx $P-a-cx 10.54.0.11 5306
srv cg $P-a-cg 10.55.0.11 5307
srv cr $P-a-cr 10.56.0.11 5308
srv egress $P-lan 10.241.0.254 5305
sleep 1
x $P-lan python3 -c 'import socket; socket.create_connection(("10.241.0.1", 8080), 2).close()' ||
    { echo "-p: 10.241.0.1:8080 does not reach the ns shape's container" >&2; exit 1; }
log "-p through the ns shape's host veth reaches the container"

gbps() {   # NS ADDR PORT
    x "$1" timeout $((IPERF_T + 15)) iperf3 -c "$2" -p "$3" -t "$IPERF_T" -J 2>/dev/null |
        python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))' \
        2>/dev/null || echo nan
}
declare -A R
order=(under ch cn cx cg cr cd egh egn)
for r in $(seq 1 "$ROUNDS"); do
    # rotate the order each round so no scenario always runs first
    rot=("${order[@]:$((r % 9))}" "${order[@]:0:$((r % 9))}")
    line="round $r (load $(cut -d' ' -f1 /proc/loadavg)):"
    for s in "${rot[@]}"; do
        case $s in
            under) v=$(gbps $P-b 10.241.0.1 5301) ;;
            ch) v=$(gbps $P-b-ch 10.51.0.11 5302) ;;
            cn) v=$(gbps $P-b-cn 10.52.0.11 5303) ;;
            cd) v=$(gbps $P-b-cd 10.53.0.11 5304) ;;
            cx) v=$(gbps $P-b-cx 10.54.0.11 5306) ;;
            cg) v=$(gbps $P-b-cg 10.55.0.11 5307) ;;
            cr) v=$(gbps $P-b-cr 10.56.0.11 5308) ;;
            egh) v=$(gbps $P-a-ch 10.241.0.254 5305) ;;
            egn) v=$(gbps $P-a-cn 10.241.0.254 5305) ;;
        esac
        R[$s]="${R[$s]:-} $v"
        line="$line $s=$v"
    done
    log "$line"
done

python3 - "${R[under]}" "${R[ch]}" "${R[cn]}" "${R[cd]}" "${R[egh]}" "${R[egn]}" "${R[cx]}" "${R[cg]}" "${R[cr]}" <<'EOF'
import sys, statistics as st
names = ["underlay host→host", "host shape (berth today)", "ns shape (proposed)",
         "docker shape", "egress, host shape", "egress, ns shape", "nsx shape", "ng shape (no guard)", "nr shape (routed)"]
vals = [[float(x) for x in a.split() if x != "nan"] for a in sys.argv[1:]]
rounds = list(zip(*vals)) if all(len(v) == len(vals[0]) for v in vals) else []
print(f"{'scenario':28} {'median Gbit/s':>14}  range")
for n, v in zip(names, vals):
    if v:
        print(f"{n:28} {st.median(v):14.2f}  {min(v):.2f}-{max(v):.2f}")
if rounds:
    r = lambda i, j: st.median(x[i] / x[j] for x in rounds if x[j] > 0)
    print("per-round medians of ratios:")
    print(f"  ns / underlay      {r(2, 0):.2f}   host / underlay {r(1, 0):.2f}   docker / underlay {r(3, 0):.2f}")
    print(f"  ns / docker        {r(2, 3):.2f}   host / docker   {r(1, 3):.2f}")
    print(f"  ns / host          {r(2, 1):.2f}   egress ns / egress host {r(5, 4):.2f}")
    print(f"  nsx / underlay     {r(6, 0):.2f}   nsx / docker    {r(6, 3):.2f}   nsx / ns {r(6, 2):.2f}")
    print(f"  ng / underlay      {r(7, 0):.2f}   ng / docker     {r(7, 3):.2f}   ng / ns  {r(7, 2):.2f}")
    print(f"  nr / underlay      {r(8, 0):.2f}   nr / docker     {r(8, 3):.2f}   nr / ng  {r(8, 7):.2f}")
EOF
