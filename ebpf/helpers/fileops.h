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

/* Whether `path` (len bytes, absolute, its head intact) is scratch space:
 * one lookup of its first bytes, NUL-terminated when they are all of it. */
static __always_inline bool scratch_path(const char *path, u32 len, struct dw_prefix_key *k)
{
	if (len == 0 || path[0] != '/')
		return false;
	u32 n = len < DW_PREFIX_LEN ? len : DW_PREFIX_LEN;
	barrier_var(n);
	n &= DW_PREFIX_LEN * 2 - 1;
	if (n > DW_PREFIX_LEN)
		return false;
	if (bpf_probe_read_kernel(k->data, n, path))
		return false;
	if (n < DW_PREFIX_LEN) {
		k->data[n & (DW_PREFIX_LEN - 1)] = 0;
		n++;
	}
	k->prefixlen = n * 8;
	return bpf_map_lookup_elem(&scratch_prefixes, k) != NULL;
}

/* `name` as the container sees it: absolute names as they are, relative ones
 * joined to the cwd or to the directory `dfd` names. `name` is a user
 * pointer (syscall arguments) unless `kernel_name` (exec's bprm->filename).
 * When the result does not fit in out[0..cap), its tail is kept (the file
 * name tells most) and *trunc is set: the name is read whole first (a
 * successful syscall's name is at most PATH_MAX), the directory gets what
 * the name leaves. `cap` must be a power of two. */
static __always_inline u16 name_path_at(struct task_struct *t, long dfd, const char *name, bool kernel_name, char *out,
					u32 cap, u32 *trunc, u16 *flags)
{
	u32 zero = 0;
	struct dw_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	long n = kernel_name ? bpf_probe_read_kernel_str(s->name, DW_NAME_SCAN, name) :
			       bpf_probe_read_user_str(s->name, DW_NAME_SCAN, name);
	if (n <= 1)
		return 0;
	u32 nlen = (u32)(n - 1) & (DW_NAME_SCAN - 1);
	if (n >= DW_NAME_SCAN) /* longer than PATH_MAX: its head is lost too */
		*trunc = 1;
	u32 at = 0;
	if (s->name[0] != '/') {
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
		if (nlen + 3 < cap) {
			/* The directory keeps its own tail in what the name leaves. */
			u32 len = resolve_path(&dir, &root, out, cap - nlen - 1, trunc);
			at = len == 1 ? 0 : len; /* "/" + "x" is "/x", not "//x" */
		} else {
			*trunc = 1;
		}
		barrier_var(at);
		at &= cap - 1;
		out[at] = '/';
		at += 1;
	}
	u32 room = cap - 1 - at;
	u32 from = 0;
	if (nlen > room) {
		from = nlen - room;
		nlen = room;
		*trunc = 1;
	}
	barrier_var(from);
	barrier_var(nlen);
	barrier_var(at);
	/* cap is a power of two known at each (inlined) call: masking by it
	 * keeps at + nlen inside out[] for older verifiers (6.1), which do not
	 * carry at + nlen < cap from the arithmetic above. */
	from &= DW_NAME_SCAN - 1;
	nlen &= cap - 1;
	at &= cap - 1;
	bpf_probe_read_kernel(out + at, nlen, &s->name[from]);
	return at + nlen;
}

static __always_inline u16 path_at(struct task_struct *t, long dfd, const char *name, char *out, u32 cap,
				   u32 *trunc, u16 *flags)
{
	return name_path_at(t, dfd, name, false, out, cap, trunc, flags);
}

/* x86_64 syscall numbers of the file operations judged at syscall exit. */
#define DW_NR_OPEN 2
#define DW_NR_TRUNCATE 76
#define DW_NR_RENAME 82
#define DW_NR_MKDIR 83
#define DW_NR_RMDIR 84
#define DW_NR_CREAT 85
#define DW_NR_LINK 86
#define DW_NR_UNLINK 87
#define DW_NR_SYMLINK 88
#define DW_NR_CHMOD 90
#define DW_NR_FCHMOD 91
#define DW_NR_CHOWN 92
#define DW_NR_FCHOWN 93
#define DW_NR_LCHOWN 94
#define DW_NR_OPENAT 257
#define DW_NR_MKDIRAT 258
#define DW_NR_FCHOWNAT 260
#define DW_NR_UNLINKAT 263
#define DW_NR_RENAMEAT 264
#define DW_NR_LINKAT 265
#define DW_NR_SYMLINKAT 266
#define DW_NR_FCHMODAT 268
#define DW_NR_RENAMEAT2 316
#define DW_NR_OPENAT2 437
#define DW_NR_FCHMODAT2 452

#define DW_O_ACCMODE 03

/* Whether an open asked for write access, from its arguments: most opens on
 * a node are reads, and this lets them return after a few plain loads,
 * before any helper call. The file's FMODE_WRITE stays the authority. */
static __always_inline bool open_may_write(unsigned long nr, struct pt_regs *regs)
{
	/* Load both registers up front: selecting between two field addresses
	 * makes clang share one load between pointer kinds, which the verifier
	 * refuses. */
	u64 si = regs->si, dx = regs->dx, how = 0;
	if (nr == DW_NR_CREAT)
		return true;
	if (nr == DW_NR_OPEN)
		return (si & DW_O_ACCMODE) != 0;
	if (nr == DW_NR_OPENAT)
		return (dx & DW_O_ACCMODE) != 0;
	/* openat2: the flags lead struct open_how; unreadable, so look at the file */
	if (bpf_probe_read_user(&how, sizeof(how), (const void *)dx))
		return true;
	return (how & DW_O_ACCMODE) != 0;
}

/* A file operation on names (or on a descriptor: fchmod, fchown), decoded
 * from the syscall's arguments. */
struct named_op {
	u16 op;
	bool by_fd;
	bool raw2; /* name2 is a symlink target: stored as given */
	long dfd, dfd2;
	const char *name, *name2;
	u64 fd;
	u32 mode, uid, gid;
};

/* Maps syscall `nr` and its arguments (the saved user registers, a BTF
 * pointer: plain loads) to the operation; false for any other syscall. */
static __always_inline bool named_op_of(unsigned long nr, struct pt_regs *regs, struct named_op *o)
{
	unsigned long a0 = regs->di, a1 = regs->si, a2 = regs->dx, a3 = regs->r10;
	o->dfd = DW_AT_FDCWD;
	o->dfd2 = DW_AT_FDCWD;
	switch (nr) {
	case DW_NR_UNLINK:
	case DW_NR_RMDIR:
		o->op = DW_FILE_DELETE;
		o->name = (const char *)a0;
		break;
	case DW_NR_UNLINKAT:
		o->op = DW_FILE_DELETE;
		o->dfd = a0;
		o->name = (const char *)a1;
		break;
	case DW_NR_MKDIR:
		o->op = DW_FILE_MKDIR;
		o->name = (const char *)a0;
		break;
	case DW_NR_MKDIRAT:
		o->op = DW_FILE_MKDIR;
		o->dfd = a0;
		o->name = (const char *)a1;
		break;
	case DW_NR_TRUNCATE:
		o->op = DW_FILE_TRUNCATE;
		o->name = (const char *)a0;
		break;
	case DW_NR_RENAME:
	case DW_NR_LINK:
		o->op = nr == DW_NR_RENAME ? DW_FILE_RENAME : DW_FILE_LINK;
		o->name = (const char *)a0;
		o->name2 = (const char *)a1;
		break;
	case DW_NR_RENAMEAT:
	case DW_NR_RENAMEAT2:
	case DW_NR_LINKAT:
		o->op = nr == DW_NR_LINKAT ? DW_FILE_LINK : DW_FILE_RENAME;
		o->dfd = a0;
		o->name = (const char *)a1;
		o->dfd2 = a2;
		o->name2 = (const char *)a3;
		break;
	case DW_NR_SYMLINK: /* symlink(target, linkpath): the event's path is the new link */
		o->op = DW_FILE_SYMLINK;
		o->name = (const char *)a1;
		o->name2 = (const char *)a0;
		o->raw2 = true;
		break;
	case DW_NR_SYMLINKAT: /* symlinkat(target, newdfd, linkpath) */
		o->op = DW_FILE_SYMLINK;
		o->dfd = a1;
		o->name = (const char *)a2;
		o->name2 = (const char *)a0;
		o->raw2 = true;
		break;
	case DW_NR_CHMOD:
		o->op = DW_FILE_CHMOD;
		o->name = (const char *)a0;
		o->mode = a1;
		break;
	case DW_NR_FCHMOD:
		o->op = DW_FILE_CHMOD;
		o->by_fd = true;
		o->fd = a0;
		o->mode = a1;
		break;
	case DW_NR_FCHMODAT:
	case DW_NR_FCHMODAT2:
		o->op = DW_FILE_CHMOD;
		o->dfd = a0;
		o->name = (const char *)a1;
		o->mode = a2;
		break;
	case DW_NR_CHOWN:
	case DW_NR_LCHOWN:
		o->op = DW_FILE_CHOWN;
		o->name = (const char *)a0;
		o->uid = a1;
		o->gid = a2;
		break;
	case DW_NR_FCHOWN:
		o->op = DW_FILE_CHOWN;
		o->by_fd = true;
		o->fd = a0;
		o->uid = a1;
		o->gid = a2;
		break;
	case DW_NR_FCHOWNAT:
		o->op = DW_FILE_CHOWN;
		o->dfd = a0;
		o->name = (const char *)a1;
		o->uid = a2;
		o->gid = a3;
		break;
	default:
		return false;
	}
	return true;
}

/* Builds and submits one file event; `f` is the file when it is open,
 * otherwise `name` (relative to `dfd`) names it. */
static __always_inline void file_event(struct task_struct *t, u64 ns_id, u16 op, struct file *f, long dfd,
				       const char *name, long dfd2, const char *name2, u32 mode, u32 owner_uid,
				       u32 owner_gid, bool raw2, u32 origin)
{
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
	e->origin = origin;
	e->_reserved = 0;
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
	if (scr->v.trunc)
		flags |= DW_FILE_PATH_TRUNC;
	scr->v.trunc = 0;
	if (name2 && raw2) {
		/* A symlink's target is stored as given, not resolved. */
		long n = bpf_probe_read_user_str(e->path2, DW_SCRIPT_LEN, name2);
		e->path2_len = n > 0 ? n - 1 : 0;
		if (n >= DW_SCRIPT_LEN)
			scr->v.trunc = 1;
	} else if (name2) {
		e->path2_len = path_at(t, dfd2, name2, e->path2, DW_SCRIPT_LEN, &scr->v.trunc, &flags);
	}
	if (scr->v.trunc)
		flags |= DW_FILE_PATH2_TRUNC;
	if (flags & (DW_FILE_PATH_TRUNC | DW_FILE_PATH2_TRUNC))
		kstat_inc(DW_KSTAT_FILE_PATH_TRUNCATED);
	e->flags = flags;
	/* Scratch space is dropped here, before it counts against the rate
	 * limit: a container busy in /tmp keeps its budget for drift. A rename
	 * or link out of scratch space (/tmp/x -> /usr/bin/x) is drift. */
	if (!(flags & DW_FILE_PATH_TRUNC) && scratch_path(e->path, e->path_len, &scr->prefix) &&
	    (!name2 || raw2 || (!(flags & DW_FILE_PATH2_TRUNC) && scratch_path(e->path2, e->path2_len, &scr->prefix)))) {
		kstat_inc(DW_KSTAT_FILE_SCRATCH);
		bpf_ringbuf_discard(e, 0);
		return;
	}
	if (!file_rate_ok(ns_id)) {
		bpf_ringbuf_discard(e, 0);
		return;
	}
	e->cgroup_key = task_cgroup_names(t, e->cgroup);
	/* Judged in userspace against the image (and scratch prefixes the trie
	 * could not hold): not drift yet, so no wakeup of its own. */
	emit_submit(e, DW_KIND_FILE, DW_WAKE_GATED);
}

#endif
