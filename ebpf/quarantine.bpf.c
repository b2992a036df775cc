/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Node quarantine: cgroup_skb programs the agent attaches to a container's
 * cgroup v2 directory (src/bpf/quarantine.rs). A separate object from the
 * sensor: its maps and links are pinned in bpffs and outlive the agent.
 *
 * Verdict, per packet of a socket in the cgroup (or below it):
 *   - the remote side (destination on egress, source on ingress), address and
 *     port, is looked up in q_allow: allowed when an entry names it;
 *   - traffic on the loopback device is allowed for containers with their own
 *     network namespace (dwq_in/dwq_out): it never leaves the pod. Containers
 *     in the node's namespace (hostNetwork) get dwq_in_host/dwq_out_host,
 *     where loopback reaches the node's own services and is dropped;
 *   - everything else is dropped (TCP, UDP, ICMP, any protocol).
 * Ports are the remote side's only: `10.0.0.5/32:8789` lets the container
 * reach that service and hear its answers, but does not let 10.0.0.5 in to a
 * server in the container (allow the address without a port for that), nor
 * let the container pick local port 8789 to reach 10.0.0.5 on other ports.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "include/abi.h"

char LICENSE[] SEC("license") = "GPL";

#define LOOPBACK_IFINDEX 1 /* the loopback device's ifindex in every network namespace */
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_SCTP 132
#define PROTO_UDPLITE 136
#define V6_HOPOPTS 0
#define V6_ROUTING 43
#define V6_FRAGMENT 44
#define V6_DSTOPTS 60
#define V6_EXT_MAX 4 /* extension headers walked before giving up on the port */

/* response.quarantine.allow, written by the agent at every start. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, DW_QALLOW_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct dw_qallow_key);
	__type(value, dw_u32);
} q_allow SEC(".maps");

/* Quarantined containers by cgroup v2 id: the agent's record, and drop counts. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DW_Q_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, dw_u64);
	__type(value, struct dw_quarantine);
} q_entries SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, dw_u32);
	__type(value, struct dw_qstats);
} q_stats SEC(".maps");

/* Fills k with the remote address and port; port 0 when the packet has none
 * (ICMP, a later fragment, an IPv6 header chain too long to walk). */
static __always_inline int remote_of(struct __sk_buff *skb, int ingress, struct dw_qallow_key *k)
{
	dw_u8 b[40];
	dw_u32 l4 = 0;
	dw_u8 proto = 0;

	if (bpf_skb_load_bytes(skb, 0, b, 20))
		return -1;
	if ((b[0] >> 4) == 4) {
		k->addr[10] = 0xff;
		k->addr[11] = 0xff;
		__builtin_memcpy(&k->addr[12], &b[ingress ? 12 : 16], 4);
		/* Only the first fragment carries the ports. */
		if (((b[6] & 0x1f) | b[7]) == 0) {
			l4 = (b[0] & 0x0f) * 4;
			proto = b[9];
		}
	} else if ((b[0] >> 4) == 6) {
		if (bpf_skb_load_bytes(skb, 0, b, 40))
			return -1;
		__builtin_memcpy(k->addr, &b[ingress ? 8 : 24], 16);
		proto = b[6];
		l4 = 40;
		for (int i = 0; i < V6_EXT_MAX; i++) {
			dw_u8 ext[4];
			if (proto != V6_HOPOPTS && proto != V6_ROUTING && proto != V6_DSTOPTS && proto != V6_FRAGMENT)
				break;
			if (bpf_skb_load_bytes(skb, l4, ext, 4))
				return 0;
			if (proto == V6_FRAGMENT) {
				if ((ext[2] << 5 | ext[3] >> 3) != 0)
					return 0; /* not the first fragment */
				l4 += 8;
			} else {
				l4 += (ext[1] + 1) * 8;
			}
			proto = ext[0];
		}
	} else {
		return -1;
	}
	if (proto == PROTO_TCP || proto == PROTO_UDP || proto == PROTO_SCTP || proto == PROTO_UDPLITE) {
		dw_u8 ports[4];
		if (bpf_skb_load_bytes(skb, l4, ports, 4) == 0) {
			k->port_be[0] = ports[ingress ? 0 : 2];
			k->port_be[1] = ports[ingress ? 1 : 3];
		}
	}
	return 0;
}

static __always_inline int is_loopback_addr(const struct dw_qallow_key *k)
{
	const dw_u8 *a = k->addr;
	dw_u8 zero_0_9 = 0;

	for (int i = 0; i < 10; i++)
		zero_0_9 |= a[i];
	if (zero_0_9)
		return 0;
	/* ::ffff:127.0.0.0/104 (IPv4 127/8, stored mapped) */
	if (a[10] == 0xff && a[11] == 0xff)
		return a[12] == 127;
	/* ::1 */
	return (a[10] | a[11] | a[12] | a[13] | a[14]) == 0 && a[15] == 1;
}

static __always_inline int allowed(struct __sk_buff *skb, int ingress, int loopback_ok)
{
	struct dw_qallow_key k = {};

	if (loopback_ok && skb->ifindex == LOOPBACK_IFINDEX)
		return 1;
	if (remote_of(skb, ingress, &k))
		return 0;
	if (loopback_ok && is_loopback_addr(&k))
		return 1;
	k.prefixlen = 16 + 128;
	if (bpf_map_lookup_elem(&q_allow, &k))
		return 1;
	if (k.port_be[0] | k.port_be[1]) {
		k.port_be[0] = 0;
		k.port_be[1] = 0;
		if (bpf_map_lookup_elem(&q_allow, &k))
			return 1;
	}
	return 0;
}

static __always_inline int verdict(struct __sk_buff *skb, int ingress, int loopback_ok)
{
	int allow = allowed(skb, ingress, loopback_ok);
	dw_u32 zero = 0;
	struct dw_qstats *s = bpf_map_lookup_elem(&q_stats, &zero);

	if (s) {
		if (ingress && allow)
			s->ingress_allowed++;
		else if (ingress)
			s->ingress_dropped++;
		else if (allow)
			s->egress_allowed++;
		else
			s->egress_dropped++;
	}
	if (!allow) {
		/* The socket's own cgroup: a container's processes in a cgroup
		 * below its own are counted in q_stats only. */
		dw_u64 cg = bpf_skb_cgroup_id(skb);
		struct dw_quarantine *q = bpf_map_lookup_elem(&q_entries, &cg);
		if (q)
			__sync_fetch_and_add(ingress ? &q->ingress_dropped : &q->egress_dropped, 1);
	}
	return allow;
}

SEC("cgroup_skb/ingress")
int dwq_in(struct __sk_buff *skb)
{
	return verdict(skb, 1, 1);
}

SEC("cgroup_skb/egress")
int dwq_out(struct __sk_buff *skb)
{
	return verdict(skb, 0, 1);
}

SEC("cgroup_skb/ingress")
int dwq_in_host(struct __sk_buff *skb)
{
	return verdict(skb, 1, 0);
}

SEC("cgroup_skb/egress")
int dwq_out_host(struct __sk_buff *skb)
{
	return verdict(skb, 0, 0);
}
