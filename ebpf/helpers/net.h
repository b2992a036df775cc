/* SPDX-License-Identifier: GPL-2.0-only */
/* Network endpoints of container processes: connect(), listen(), UDP bind(). */
#ifndef DRIFTWATCH_NET_H
#define DRIFTWATCH_NET_H

#include "../maps.h"
#include <bpf/bpf_core_read.h>
#include "emit.h"
#include "task.h"
#include "origin.h"

#define DW_AF_INET 2
#define DW_AF_INET6 10
#define DW_SOCK_STREAM 1
#define DW_SOCK_DGRAM 2

/* The file behind descriptor `fd` of task `t`, or NULL. */
static __always_inline struct file *fd_file(struct task_struct *t, u64 fd)
{
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd & 0xffff]);
	return f;
}

/* The socket behind file descriptor `fd` of task `t`, or NULL. */
static __always_inline struct socket *fd_socket(struct task_struct *t, u64 fd)
{
	struct file *f = fd_file(t, fd);
	return f ? BPF_CORE_READ(f, private_data) : NULL;
}

/* A container task, or NULL for the host and known non-containers. */
static __always_inline struct task_struct *container_task(u64 *ns_id)
{
	struct task_struct *t = bpf_get_current_task_btf();
	u32 mntns = task_mntns(t);
	if (mntns == host_mntns || mntns == 0)
		return NULL;
	*ns_id = task_mntns_id(t);
	if (bpf_map_lookup_elem(&not_container_mntns, ns_id))
		return NULL;
	return t;
}

/* Sends the endpoint unless this namespace's program already did. */
static __always_inline void emit_net(struct task_struct *t, u64 ns_id, struct dw_net_key *k)
{
	k->mntns_id = ns_id;
	bpf_get_current_comm(k->comm, sizeof(k->comm));
	k->origin = task_origin(t, ns_id);
	if (bpf_map_lookup_elem(&net_seen, k)) {
		kstat_inc(DW_KSTAT_NET_FOLDED);
		return;
	}
	u8 one = 1;
	if (bpf_map_update_elem(&net_seen, k, &one, BPF_ANY))
		kstat_inc(DW_KSTAT_NET_TABLE_FULL);

	struct dw_net *e = emit_reserve(DW_KIND_NET, sizeof(*e));
	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	emit_header(&e->hdr, DW_KIND_NET, sizeof(*e), bpf_ktime_get_boot_ns());
	e->mntns_id = ns_id;
	e->ppid = BPF_CORE_READ(t, real_parent, tgid);
	e->uid = (u32)bpf_get_current_uid_gid();
	e->op = k->op;
	e->family = k->family;
	e->sock_type = k->sock_type;
	e->port = k->port;
	__builtin_memcpy(e->addr, k->addr, sizeof(e->addr));
	__builtin_memcpy(e->comm, k->comm, sizeof(e->comm));
	e->origin = k->origin;
	e->cgroup_key = task_cgroup_names(t, e->cgroup);
	/* Network drift is judged against a baseline in userspace: no wakeup. */
	emit_submit(e, DW_KIND_NET, DW_WAKE_GATED);
}

/* Reads a sockaddr_in / sockaddr_in6 from user memory into the key. */
static __always_inline bool read_user_sockaddr(const void *uaddr, u64 len, struct dw_net_key *k)
{
	u16 family = 0;
	if (!uaddr || len < 8 || bpf_probe_read_user(&family, sizeof(family), uaddr))
		return false;
	u16 port_be = 0;
	bpf_probe_read_user(&port_be, sizeof(port_be), (const char *)uaddr + 2);
	k->port = __builtin_bswap16(port_be);
	k->family = family;
	if (family == DW_AF_INET) {
		bpf_probe_read_user(k->addr, 4, (const char *)uaddr + 4);
		return true;
	}
	if (family == DW_AF_INET6 && len >= 24) {
		bpf_probe_read_user(k->addr, 16, (const char *)uaddr + 8);
		return true;
	}
	return false; /* AF_UNIX, AF_NETLINK, ...: not network drift */
}

#endif
