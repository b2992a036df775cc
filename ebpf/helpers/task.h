/* SPDX-License-Identifier: GPL-2.0-only */
/* Facts about a task: namespaces, cgroup, terminal, credentials. */
#ifndef DRIFTWATCH_TASK_H
#define DRIFTWATCH_TASK_H

#include "../maps.h"
#include <bpf/bpf_core_read.h>

/* `t` must be a BTF pointer (a tp_btf argument or bpf_get_current_task_btf()):
 * the host filter runs on every open of the node, so it walks the pointers
 * with plain loads (faults read as 0) instead of three helper calls. */
static __always_inline u32 task_mntns(struct task_struct *t)
{
	return t->nsproxy->mnt_ns->ns.inum;
}

/* A mount namespace id that is never reused (inode numbers are), so a new
 * container cannot inherit a dead one's "entrypoint already ran" mark. */
static __always_inline u64 task_mntns_id(struct task_struct *t)
{
	/* `t` is a BTF pointer (see task_mntns): plain loads, on every container open. */
	struct mnt_namespace *ns = t->nsproxy->mnt_ns;
	if (bpf_core_field_exists(ns->ns.ns_id))
		return ns->ns.ns_id;
	if (bpf_core_field_exists(ns->seq))
		return ns->seq;
	return ns->ns.inum;
}

static __always_inline bool task_has_tty(struct task_struct *t)
{
	return BPF_CORE_READ(t, signal, tty) != NULL;
}

static __always_inline struct kernfs_node *kn_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(kn->__parent))
		return BPF_CORE_READ(kn, __parent);
	struct kernfs_node___old *old = (void *)kn;
	return BPF_CORE_READ(old, parent);
}

/* The task's cgroup: the v1 memory controller's when that controller is on a
 * v1 hierarchy (hybrid nodes put containers there), else the v2 cgroup. On a
 * v2 node where memory is not delegated down to the container, the memory
 * css is an ancestor's: the v2 cgroup is the right one there too. */
static __always_inline struct cgroup *task_cgroup(struct task_struct *t, bool *v1)
{
	struct cgroup *dfl = BPF_CORE_READ(t, cgroups, dfl_cgrp);
	*v1 = false;
	if (bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id)) {
		int id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
		if (id >= 0 && id < 12) {
			struct cgroup *mem = BPF_CORE_READ(t, cgroups, subsys[id], cgroup);
			if (mem && dfl && BPF_CORE_READ(mem, root) != BPF_CORE_READ(dfl, root)) {
				*v1 = true;
				return mem;
			}
		}
	}
	return dfl;
}

/* Copy the last DW_CGROUP_LEVELS names of the task's cgroup path, leaf first.
 * Container ids live in the last one or two components for every runtime.
 * Returns the cgroup's key (dw_exec.cgroup_key). */
static __always_inline u64 task_cgroup_names(struct task_struct *t, char out[DW_CGROUP_LEVELS][DW_CGROUP_NAME_LEN])
{
	bool v1;
	struct cgroup *cg = task_cgroup(t, &v1);
	struct kernfs_node *kn = cg ? BPF_CORE_READ(cg, kn) : NULL;
	u64 key = kn ? BPF_CORE_READ(kn, id) : 0;
	if (key && v1)
		key |= 1ull << 63;
#pragma unroll
	for (int i = 0; i < DW_CGROUP_LEVELS; i++) {
		if (!kn)
			break;
		struct kernfs_node *parent = kn_parent(kn);
		if (!parent) /* the root's name is "/": leave the slot empty */
			break;
		const char *name = BPF_CORE_READ(kn, name);
		bpf_probe_read_kernel_str(out[i], DW_CGROUP_NAME_LEN, name);
		kn = parent;
	}
	return key;
}

/* Hide a value from the compiler so masks are really emitted (the verifier
 * needs them to bound variable-length copies). */
#ifndef barrier_var
#define barrier_var(v) asm volatile("" : "+r"(v))
#endif

/* The task's argv (NUL separated, as the kernel keeps it) into
 * out[0..DW_ARGS_LEN); returns the bytes copied, sets *trunc when it did not fit. */
static __always_inline u16 task_args(struct task_struct *task, char out[DW_ARGS_LEN], bool *trunc)
{
	unsigned long arg_start = BPF_CORE_READ(task, mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(task, mm, arg_end);
	unsigned long alen = arg_end > arg_start ? arg_end - arg_start : 0;
	if (alen > DW_ARGS_LEN) {
		alen = DW_ARGS_LEN;
		*trunc = true;
	}
	u32 rlen = alen;
	barrier_var(rlen);
	if (rlen >= DW_ARGS_LEN)
		rlen = DW_ARGS_LEN;
	else
		rlen &= DW_ARGS_LEN - 1;
	if (rlen && bpf_probe_read_user(out, rlen, (void *)arg_start))
		alen = 0;
	return alen;
}

#endif
