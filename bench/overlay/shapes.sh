# The world shared by the datapath-shape prototypes (ns_shape.sh, mv_shape.sh, bpf_shape.sh;
# sourced, not run; same_run.sh takes only vxlan_floor): a LAN bridge in namespace $P-lan and
# two host namespaces $P-a, $P-b on it, each with berth's real static rules and br_netfilter
# on. Needs P, GOLD and an array NSS (the namespaces made, for the caller's cleanup) and x()
# from the caller (vxlan_floor needs only mac()).

# ns NAME: a namespace with lo up, recorded in NSS.
ns() { ip netns add "$1"; NSS+=("$1"); ip -n "$1" link set lo up; }

# mac NET HOST: the MAC of container HOST on subnet 10.NET.0.0/24.
mac() { printf '02:42:0a:%02x:00:%02x' "$1" "$2"; }

# lan_and_hosts PFX: the LAN bridge (PFX.254/24) and hosts a (PFX.1) and b (PFX.2) on it.
lan_and_hosts() {
    local pfx=$1 i=1 h
    ns $P-lan
    ip -n $P-lan link add lan0 type bridge
    ip -n $P-lan addr add "$pfx.254/24" dev lan0
    ip -n $P-lan link set lan0 up
    for h in a b; do
        ns $P-$h
        ip -n $P-lan link add p$h type veth peer name eth0 netns $P-$h
        ip -n $P-lan link set p$h master lan0 up
        ip -n $P-$h addr add "$pfx.$i/24" dev eth0
        ip -n $P-$h link set eth0 up
        x $P-$h sysctl -qw net.ipv4.ip_forward=1
        # berth's real static rules in every host namespace (both tables), as berthd writes
        # them; br_netfilter on: the host administrator's usual setting (Docker and kube-proxy
        # need it), which berth cannot change.
        x $P-$h nft -f "$GOLD"
        x $P-$h sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
        i=$((i + 1))
    done
}

# vxlan_floor NS LOCAL REMOTE I OI: the floor of any VXLAN overlay, a bare VXLAN device `vxf`
# in host namespace NS (VTEP LOCAL) with 10.74.0.I/24 and the other host's device (10.74.0.OI,
# VTEP REMOTE) as static FDB and neighbour entries: no container, veth, bridge or br_netfilter
# hop, the encapsulation alone. Its own VNI 7400 and UDP port 4793 (4789 is the overlays',
# 4792 berth's encrypted overlay's, which berth's static rules drop unless decrypted).
vxlan_floor() {
    local n=$1 local_ip=$2 remote=$3 i=$4 oi=$5
    ip -n "$n" link add vxf mtu 1450 type vxlan id 7400 local "$local_ip" dstport 4793 nolearning
    ip -n "$n" link set vxf address "$(mac 74 "$i")" up
    ip -n "$n" addr add "10.74.0.$i/24" dev vxf
    ip netns exec "$n" bridge fdb append "$(mac 74 "$oi")" dev vxf dst "$remote" self permanent
    ip -n "$n" neigh add "10.74.0.$oi" lladdr "$(mac 74 "$oi")" dev vxf nud permanent
}
