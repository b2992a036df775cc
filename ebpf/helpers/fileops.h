/* SPDX-License-Identifier: GPL-2.0-only */
/* File drift: writes, deletes, renames and mode changes by container
 * processes. Reads never reach the ring buffer: write opens are recognised by
 * the opened file's FMODE_WRITE, everything else is a write-intent syscall. */
#ifndef DRIFTWATCH_FILEOPS_H
#define DRIFTWATCH_FILEOPS_H

#include "../maps.h"
#include <bpf/bpf_core_read.h>
#include "emit.h"
#include "task.h"
#include "file.h"
#include "net.h"

#define DW_AT_FDCWD (-100)
#define DW_FMODE_WRITE 0x2
#define DW_S_IFMT 00170000
#define DW_S_IFREG 0100000

/* One-second windows of at most file_events_per_sec events per container: a
 * container that writes thousands of files cannot flood the ring buffer. */
static __always_inline bool file_rate_ok(u64 ns_id)
{
	u64 now = bpf_ktime_get_boot_ns();
	struct dw_rate *r = bpf_map_lookup_elem(&file_rate, &ns_id);
	if (!r) {
		struct dw_rate fresh = {.window_ns = now, .count = 1};
		bpf_map_update_elem(&file_rate, &ns_id, &fresh, BPF_ANY);
		return true;
	}
	if (now - r->window_ns > 1000000000ULL) {
		r->window_ns = now;
		r->count = 1;
		return true;
	}
	if (r->count >= file_events_per_sec) {
		kstat_inc(DW_KSTAT_FILE_RATE_LIMITED);
		return false;
	}
	r->count++;
	return true;
}

/* `name` as the container sees it: absolute names as they are, relative ones
 * joined to the cwd or to the directory `dfd` names. `name` is a user
 * pointer (syscall arguments) unless `kernel_name` (exec's bprm->filename). */
static __always_inline u16 name_path_at(struct task_struct *t, long dfd, const char *name, bool kernel_name, char *out,
					u32 cap, u32 *trunc, u16 *flags)
{
	char first = 0;
	if (kernel_name)
		bpf_probe_read_kernel(&first, 1, name);
	else
		bpf_probe_read_user(&first, 1, name);
	if (first == '/') {
		long n = kernel_name ? bpf_probe_read_kernel_str(out, cap, name) : bpf_probe_read_user_str(out, cap, name);
		return n > 0 ? n - 1 : 0;
	}
	*flags |= DW_FILE_RELATIVE;
	struct path root = BPF_CORE_READ(t, fs, root);
	struct path dir;
	/* An int in a 64-bit register: compare as the kernel does. */
	if ((int)dfd == DW_AT_FDCWD) {
		dir = BPF_CORE_READ(t, fs, pwd);
	} else {
		struct file *df = fd_file(t, (u64)dfd);
		if (!df)
			return 0;
		dir = BPF_CORE_READ(df, f_path);
	}
	u32 len = resolve_path(&dir, &root, out, cap, trunc);
	u32 off = len == 1 ? 0 : len; /* "/" + "x" is "/x", not "//x" */
	if (off + 2 >= cap) {
		*trunc = 1;
		return len;
	}
	barrier_var(off);
	off &= DW_PATH_LEN - 1;
	out[off] = '/';
	u32 room = (cap - 1 - off) & (DW_PATH_LEN - 1);
	long n = kernel_name ? bpf_probe_read_kernel_str(out + off + 1, room, name) :
			       bpf_probe_read_user_str(out + off + 1, room, name);
	return n > 0 ? off + n : off + 1;
}

static __always_inline u16 path_at(struct task_struct *t, long dfd, const char *name, char *out, u32 cap,
				   u32 *trunc, u16 *flags)
{
	return name_path_at(t, dfd, name, false, out, cap, trunc, flags);
}

/* Builds and submits one file event; `f` is the file when it is open,
 * otherwise `name` (relative to `dfd`) names it. */
static __always_inline void file_event(struct task_struct *t, u64 ns_id, u16 op, struct file *f, long dfd,
				       const char *name, long dfd2, const char *name2, u32 mode, u32 owner_uid,
				       u32 owner_gid, bool raw2)
{
	if (!file_rate_ok(ns_id))
		return;
	struct dw_file *e = emit_reserve(DW_KIND_FILE, sizeof(*e));
	if (!e)
		return;
	u32 zero = 0;
	struct dw_scratch *scr = bpf_map_lookup_elem(&scratch, &zero);
	if (!scr) {
		bpf_ringbuf_discard(e, 0);
		return;
	}
	scr->v.trunc = 0;
	emit_header(&e->hdr, DW_KIND_FILE, sizeof(*e), bpf_ktime_get_boot_ns());
	e->mntns_id = ns_id;
	e->ppid = BPF_CORE_READ(t, real_parent, tgid);
	e->uid = (u32)bpf_get_current_uid_gid();
	e->op = op;
	e->flags = 0;
	e->mode = mode;
	e->owner_uid = owner_uid;
	e->owner_gid = owner_gid;
	e->ino = 0;
	e->source = DW_SRC_UNKNOWN;
	e->path_len = 0;
	e->path2_len = 0;
	e->path[0] = 0;
	e->path2[0] = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	u16 flags = 0;
	if (f) {
		struct path root = BPF_CORE_READ(t, fs, root);
		struct path fpath = BPF_CORE_READ(f, f_path);
		struct vfsmount *root_mnt = root.mnt;
		bool overlay_root = (u32)BPF_CORE_READ(root_mnt, mnt_sb, s_magic) == OVERLAYFS_SUPER_MAGIC;
		u32 magic, nlink;
		u64 ino;
		e->source = file_source(f, root_mnt, overlay_root, &magic, &nlink, &ino);
		e->ino = ino;
		e->path_len = resolve_path(&fpath, &root, e->path, DW_PATH_LEN, &scr->v.trunc);
	} else {
		e->path_len = path_at(t, dfd, name, e->path, DW_PATH_LEN, &scr->v.trunc, &flags);
	}
	if (name2 && raw2) {
		/* A symlink's target is stored as given, not resolved. */
		long n = bpf_probe_read_user_str(e->path2, DW_SCRIPT_LEN, name2);
		e->path2_len = n > 0 ? n - 1 : 0;
	} else if (name2) {
		e->path2_len = path_at(t, dfd2, name2, e->path2, DW_SCRIPT_LEN, &scr->v.trunc, &flags);
	}
	if (scr->v.trunc)
		flags |= DW_FILE_PATH_TRUNC;
	e->flags = flags;
	task_cgroup_names(t, e->cgroup);
	/* Judged in userspace against scratch paths and the image: no wakeup. */
	emit_submit(e, DW_KIND_FILE, false);
}

#endif
