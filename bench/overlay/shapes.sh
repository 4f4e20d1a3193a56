# The world shared by the datapath-shape prototypes (ns_shape.sh, mv_shape.sh; sourced, not
# run): a LAN bridge in namespace $P-lan and two host namespaces $P-a, $P-b on it, each with
# berth's real static rules and br_netfilter on. Needs P, GOLD and an array NSS (the namespaces
# made, for the caller's cleanup) and x() from the caller.

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
