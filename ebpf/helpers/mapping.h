/* SPDX-License-Identifier: GPL-2.0-only */
/* Executable mappings: drift that runs through an image program.
 *
 * The kernel maps an executed file and its interpreter itself (judged at
 * sched_process_exec); everything else reaches executable memory through
 * mmap(PROT_EXEC) from userspace: the dynamic loader mapping LD_PRELOAD
 * libraries, dlopen()ed plugins, or a main program (`ld.so /tmp/payload`).
 * mprotect() can add PROT_EXEC to a file mapping later.
 *
 * Judged and sent at syscall exit, once the syscall succeeded (the
 * descriptor mmap was given, or the mapping mprotect named, is still there):
 * image files return after the layer check. Anonymous executable memory
 * (JIT) has no file and is not judged. */
#ifndef DRIFTWATCH_MAPPING_H
#define DRIFTWATCH_MAPPING_H

#include "../maps.h"
#include <bpf/bpf_core_read.h>
#include "emit.h"
#include "task.h"
#include "file.h"
#include "net.h"
#include "origin.h"
#include "protect.h"

#define DW_PROT_EXEC 0x4

/* mprotect(): the file of the mapping at `addr`, through bpf_find_vma (the
 * maple tree cannot be walked by hand within the verifier's limits). */
struct vma_ctx {
	struct file *file;
};

static long vma_file_cb(struct task_struct *task, struct vm_area_struct *vma, void *arg)
{
	struct vma_ctx *c = arg;
	c->file = vma->vm_file;
	return 0;
}

/* The path the process mapped at `addr`, as it opened it. A mapping of an
 * overlayfs file holds a backing file on the layer below; its user path (the
 * overlay's) follows struct file in struct backing_file (Linux 6.6+). Taken
 * only when it is on the task's root mount: anything else is not a backing
 * file of the container's root. A file on a mount outside the task's mount
 * namespace (a layer's private mount, before 6.6) cannot be placed: not
 * judged. False: nothing to judge there. */
static __always_inline bool vma_path_at(struct task_struct *t, u64 addr, struct path *out)
{
	struct vma_ctx c = {};
	if (bpf_find_vma(t, addr, vma_file_cb, &c, 0) || !c.file)
		return false;
	struct file *f = c.file;
	*out = BPF_CORE_READ(f, f_path);
	struct vfsmount *root_mnt = BPF_CORE_READ(t, fs, root.mnt);
	if (out->mnt == root_mnt)
		return true;
	struct path user = {};
	u32 file_size = bpf_core_type_size(struct file);
	if (file_size && !bpf_probe_read_kernel(&user, sizeof(user), (char *)f + file_size) &&
	    user.mnt == root_mnt && user.dentry) {
		*out = user;
		return true;
	}
	if (name_is_memfd(out->dentry)) /* on the kernel's internal shm mount */
		return true;
	struct mnt_namespace *ns = BPF_CORE_READ(real_mount(out->mnt), mnt_ns);
	return ns == BPF_CORE_READ(t, nsproxy, mnt_ns);
}

/* Protect mode: kill the thread's process before the mapped code runs
 * (SIGKILL is taken on the way back to user mode), unless it is the
 * container's main process or an approval of its executable covers the
 * source. True when SIGKILL was sent. */
static __always_inline bool protect_map(struct task_struct *t, u64 ns_id, u32 tgid, u32 source,
					struct dw_scratch *scr)
{
	struct dw_protect *p = bpf_map_lookup_elem(&protect_mntns, &ns_id);
	if (!p || tgid == p->main_tgid)
		return false;
	struct dw_seen *seen = bpf_map_lookup_elem(&seen_mntns, &ns_id);
	if (seen && seen->main_tgid == tgid)
		return false;
	u32 flags = p->flags;
	struct file *exe = BPF_CORE_READ(t, mm, exe_file);
	if ((flags & DW_PROTECT_ALLOW_ALL) ||
	    ((flags & DW_PROTECT_HAS_ALLOW) && exe && file_approved(t, exe, ns_id, source, scr))) {
		kstat_inc(DW_KSTAT_PROTECT_APPROVED);
		return false;
	}
	if (bpf_send_signal(DW_SIGKILL)) {
		kstat_inc(DW_KSTAT_PROTECT_KILL_FAILED);
		return false;
	}
	kstat_inc(DW_KSTAT_PROTECT_KILLED);
	return true;
}

/* The file at `p`, just mapped executable by the current (container) thread
 * `t`: drift is killed (protect mode) and sent, once per (container, inode). */
static __always_inline void map_judge(struct task_struct *t, u64 ns_id, struct path *p, u32 prot, u32 flags)
{
	kstat_inc(DW_KSTAT_MAP_EXEC);
	struct vfsmount *root_mnt = BPF_CORE_READ(t, fs, root.mnt);
	bool overlay_root = (u32)BPF_CORE_READ(root_mnt, mnt_sb, s_magic) == OVERLAYFS_SUPER_MAGIC;
	u32 magic, nlink;
	u64 ino;
	struct inode *inode = BPF_CORE_READ(p, dentry, d_inode);
	u32 source = inode_source(inode, p->mnt, p->dentry, root_mnt, overlay_root, &magic, &nlink, &ino);
	if (!source_is_drift(source)) {
		kstat_inc(DW_KSTAT_MAP_FILTERED);
		return;
	}
	u32 zero = 0;
	struct dw_scratch *scr = bpf_map_lookup_elem(&scratch, &zero);
	if (!scr)
		return;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (protect_map(t, ns_id, tgid, source, scr))
		flags |= DW_MAP_KILLED;

	struct dw_map_key k = {.mntns_id = ns_id, .ino = ino, .killed = flags & DW_MAP_KILLED};
	if (bpf_map_lookup_elem(&map_seen, &k)) {
		kstat_inc(DW_KSTAT_MAP_FOLDED);
		return;
	}
	u8 one = 1;
	bpf_map_update_elem(&map_seen, &k, &one, BPF_ANY);

	struct dw_map *e = emit_reserve(DW_KIND_MAP, sizeof(*e));
	if (!e)
		return;
	emit_header(&e->hdr, DW_KIND_MAP, sizeof(*e), bpf_ktime_get_boot_ns());
	e->mntns_id = ns_id;
	e->ino = ino;
	e->ppid = BPF_CORE_READ(t, real_parent, tgid);
	e->uid = (u32)bpf_get_current_uid_gid();
	e->source = source;
	e->prot = prot;
	e->fs_magic = magic;
	e->origin = task_origin(t, ns_id);
	e->_reserved = 0;
	e->_pad = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));

	struct path root = BPF_CORE_READ(t, fs, root);
	u32 trunc = 0;
	e->path_len = resolve_path(p, &root, e->path, DW_PATH_LEN, &trunc);
	if (trunc)
		flags |= DW_MAP_PATH_TRUNC;
	e->exe_len = 0;
	struct file *exe = BPF_CORE_READ(t, mm, exe_file);
	if (exe) {
		trunc = 0;
		struct path epath = BPF_CORE_READ(exe, f_path);
		e->exe_len = resolve_path(&epath, &root, e->exe, DW_PATH_LEN, &trunc);
		if (trunc)
			flags |= DW_MAP_EXE_TRUNC;
	}
	bool args_trunc = false;
	e->args_len = task_args(t, e->args, &args_trunc);
	if (args_trunc)
		flags |= DW_MAP_ARGS_TRUNC;
	if (flags & (DW_MAP_PATH_TRUNC | DW_MAP_EXE_TRUNC))
		kstat_inc(DW_KSTAT_PATH_TRUNCATED);
	e->flags = flags;
	e->cgroup_key = task_cgroup_names(t, e->cgroup);
	/* Binary drift: wake the reader at once, like a drifted exec. */
	emit_submit(e, DW_KIND_MAP, DW_WAKE_NOW);
}

#endif
