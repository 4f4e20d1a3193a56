// SPDX-License-Identifier: GPL-2.0
// The overlay datapath of bench/overlay/bpf_shape.sh (a measurement, not part of berth): a
// container's frames go from its veth's host side straight into an `external` (collect_md)
// VXLAN device, and decapsulated frames straight into the container, with no bridge and no
// br_netfilter hop: Cilium's shape. Built per host by the script with clang -target bpf and
// the constants below (-D...).
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifdef OUT
// tc ingress of the container's host-side veth: every IPv4 frame the container sends is
// tunnelled to the one remote VTEP (bpf_skb_set_tunnel_key) and handed to the VXLAN device
// (bpf_redirect: its ndo_start_xmit, no routing or bridging in between).
SEC("tc") int to_tunnel(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct bpf_tunnel_key key = {};

	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	key.remote_ipv4 = REMOTE_VTEP;
	key.tunnel_id = VNI;
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(VXE_IFINDEX, 0);
}
#endif

#ifdef IN
// tc ingress of the external VXLAN device: frames of our VNI go to the container's side of
// the veth (bpf_redirect_peer: into its namespace without a second backlog pass).
SEC("tc") int from_tunnel(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};

	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return TC_ACT_SHOT;
	if (key.tunnel_id != VNI)
		return TC_ACT_SHOT;
	return bpf_redirect_peer(VE_IFINDEX, 0);
}
#endif

char _license[] SEC("license") = "GPL";
