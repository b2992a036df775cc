/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Where a container process came from: the container's own process tree
 * (descended from its init) or an exec session (kubectl exec, CRI ExecSync,
 * runc exec, nsenter).
 *
 * runc starts the init and every exec'd process alike (runc init, nsexec
 * double fork): both have a parent outside the container, so the parent alone
 * says nothing. What differs: the init is the first exec in the container's
 * new mount namespace (DW_EXEC_ENTRYPOINT, its tgid is seen_mntns.main_tgid)
 * and, with a pid namespace of its own, pid 1 there. The origin is decided
 * once, when a process first shows up without a tracked parent, and kept in
 * `procs` (DW_PROC_EXEC_SESSION), inherited at fork: a process reparented to
 * the init when its exec session ends keeps its origin.
 */
#ifndef DRIFTWATCH_ORIGIN_H
#define DRIFTWATCH_ORIGIN_H

#include "../maps.h"
#include <bpf/bpf_core_read.h>
#include "task.h"

/* Ancestors looked at for a process that predates the agent. */
#define DW_ORIGIN_WALK 16

/* The pid of `t` in its own pid namespace (the innermost one). */
static __always_inline int task_ns_pid(struct task_struct *t)
{
	struct pid *p = BPF_CORE_READ(t, thread_pid);
	if (!p)
		return 0;
	unsigned int level = BPF_CORE_READ(p, level);
	/* numbers[] is as long as level + 1 (MAX_PID_NS_LEVEL is 32). */
	struct upid *up = (void *)((char *)p + bpf_core_field_offset(struct pid, numbers) +
				   (u64)(level & 31) * bpf_core_type_size(struct upid));
	int nr = 0;
	bpf_core_read(&nr, sizeof(nr), &up->nr);
	return nr;
}

/* The origin of a container process that has no lineage entry: its parent is
 * outside the container (runc, the shim, nsenter) or started before the agent.
 * The topmost ancestor still in the container's mount namespace, at most
 * DW_ORIGIN_WALK levels up, is the container's init when it is pid 1 of its
 * pid namespace or the namespace's recorded main process (a pod sharing its
 * pid namespace has the pause process as pid 1); anything else came in from
 * outside: an exec session. `in_tree`: `t` has a parent in the container. */
static __always_inline u32 origin_walk(struct task_struct *t, u64 ns_id, bool *in_tree)
{
	struct mnt_namespace *mnt = BPF_CORE_READ(t, nsproxy, mnt_ns);
	struct task_struct *top = t;
#pragma unroll
	for (int i = 0; i < DW_ORIGIN_WALK; i++) {
		struct task_struct *p = BPF_CORE_READ(top, real_parent);
		if (!p || p == top || BPF_CORE_READ(p, nsproxy, mnt_ns) != mnt)
			break;
		top = p;
	}
	*in_tree = top != t;
	if (task_ns_pid(top) == 1)
		return DW_ORIGIN_CONTAINER;
	struct dw_seen *seen = bpf_map_lookup_elem(&seen_mntns, &ns_id);
	if (!seen) {
		/* No exec yet in a namespace younger than the agent: runc is still
		 * setting up the container's init (an exec session needs a
		 * started container). */
		u32 inum = task_mntns(t);
		return bpf_map_lookup_elem(&preexisting_mntns, &inum) ? DW_ORIGIN_EXEC_SESSION : DW_ORIGIN_CONTAINER;
	}
	u32 top_tgid = BPF_CORE_READ(top, tgid);
	if (seen->main_tgid && seen->main_tgid == top_tgid)
		return DW_ORIGIN_CONTAINER;
	return DW_ORIGIN_EXEC_SESSION;
}

/* The origin of the current container task `t`: from its lineage entry when
 * it has one (one lookup: the common case), else from its ancestors. */
static __always_inline u32 task_origin(struct task_struct *t, u64 ns_id)
{
	u32 tgid = BPF_CORE_READ(t, tgid);
	struct dw_proc *p = bpf_map_lookup_elem(&procs, &tgid);
	if (p)
		return (p->flags & DW_PROC_EXEC_SESSION) ? DW_ORIGIN_EXEC_SESSION : DW_ORIGIN_CONTAINER;
	bool in_tree = false;
	u32 origin = origin_walk(t, ns_id, &in_tree);
	/* Decided once for a process of the container's own tree that predates
	 * the agent (a server's next connect costs one lookup, and it keeps its
	 * origin if orphaned later); not for one that came in from outside and
	 * may leave again (runc init before its exec, nsenter, a host tool). */
	if (in_tree || origin == DW_ORIGIN_CONTAINER) {
		struct dw_proc e = {
			.ppid = BPF_CORE_READ(t, real_parent, tgid),
			.flags = origin == DW_ORIGIN_EXEC_SESSION ? DW_PROC_EXEC_SESSION : 0,
		};
		bpf_map_update_elem(&procs, &tgid, &e, BPF_NOEXIST);
	}
	return origin;
}

/* DW_PROC_EXEC_SESSION for the lineage entry of a process exec'ing without one. */
static __always_inline u32 origin_proc_flags(struct task_struct *t, u64 ns_id, bool entrypoint)
{
	if (entrypoint)
		return 0;
	bool in_tree;
	return origin_walk(t, ns_id, &in_tree) == DW_ORIGIN_EXEC_SESSION ? DW_PROC_EXEC_SESSION : 0;
}

#endif
