/* SPDX-License-Identifier: GPL-2.0-only */
/* Facts about an executed file: which layer or filesystem it comes from, and
 * its path as the container sees it. */
#ifndef DRIFTWATCH_FILE_H
#define DRIFTWATCH_FILE_H

#include "../maps.h"
#include <bpf/bpf_core_read.h>

#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#define TMPFS_MAGIC 0x01021994
#define HUGETLBFS_MAGIC 0x958458f6

/* overlayfs keeps the upper dentry right after the VFS inode in struct
 * ovl_inode (stable since 4.x). Reading it by offset avoids needing the
 * overlay module's BTF on kernels where overlay is a module. */
static __always_inline bool ovl_has_upper(struct inode *inode)
{
	struct dentry *upper = NULL;
	u32 inode_size = bpf_core_type_size(struct inode);
	if (!inode_size)
		return false;
	bpf_probe_read_kernel(&upper, sizeof(upper), (char *)inode + inode_size);
	return upper != NULL;
}

static __always_inline bool name_is_memfd(struct dentry *d)
{
	char prefix[6] = {};
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	bpf_probe_read_kernel(prefix, sizeof(prefix), name);
	return prefix[0] == 'm' && prefix[1] == 'e' && prefix[2] == 'm' && prefix[3] == 'f' &&
	       prefix[4] == 'd' && prefix[5] == ':';
}

/* Decide where the file `inode` at (`mnt`, `dentry`) comes from, relative
 * to the task's root mount. */
static __always_inline u32 inode_source(struct inode *inode, struct vfsmount *mnt, struct dentry *dentry,
					struct vfsmount *root_mnt, bool overlay_root, u32 *magic_out, u32 *nlink_out,
					u64 *ino_out)
{
	u32 magic = (u32)BPF_CORE_READ(inode, i_sb, s_magic);
	u32 nlink = BPF_CORE_READ(inode, __i_nlink);
	*magic_out = magic;
	*nlink_out = nlink;
	*ino_out = BPF_CORE_READ(inode, i_ino);

	if ((magic == TMPFS_MAGIC || magic == HUGETLBFS_MAGIC) && name_is_memfd(dentry))
		return DW_SRC_MEMFD;
	if (nlink == 0)
		return DW_SRC_DELETED;
	if (mnt != root_mnt)
		return magic == TMPFS_MAGIC ? DW_SRC_TMPFS : DW_SRC_VOLUME;
	if (!overlay_root || magic != OVERLAYFS_SUPER_MAGIC)
		return DW_SRC_UNKNOWN;
	return ovl_has_upper(inode) ? DW_SRC_UPPER : DW_SRC_IMAGE;
}

/* Decide where `f` comes from, relative to the task's root mount. */
static __always_inline u32 file_source(struct file *f, struct vfsmount *root_mnt, bool overlay_root,
				       u32 *magic_out, u32 *nlink_out, u64 *ino_out)
{
	return inode_source(BPF_CORE_READ(f, f_inode), BPF_CORE_READ(f, f_path.mnt), BPF_CORE_READ(f, f_path.dentry),
			    root_mnt, overlay_root, magic_out, nlink_out, ino_out);
}

static __always_inline bool source_is_drift(u32 src)
{
	return src == DW_SRC_UPPER || src == DW_SRC_MEMFD || src == DW_SRC_DELETED ||
	       src == DW_SRC_TMPFS || src == DW_SRC_VOLUME;
}

static __always_inline struct mount *real_mount(struct vfsmount *mnt)
{
	return (struct mount *)((char *)mnt - bpf_core_field_offset(struct mount, mnt));
}

/* Hide a value from the compiler so the masks below are really emitted:
 * the verifier needs them to bound variable-length copies. */
#ifndef barrier_var
#define barrier_var(v) asm volatile("" : "+r"(v))
#endif

#define DW_PATH_DEPTH 40
#define DW_NAME_MAX 255
#define DW_SCRATCH_MASK (DW_SCRATCH_LEN - 1)

/* State of one path walk, shared with the bpf_loop callback. */
struct walk_ctx {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	struct dentry *root_dentry;
	struct vfsmount *root_mnt;
	u32 off; /* names occupy scratch[off, DW_SCRATCH_LEN) */
	bool done;
	bool trunc;
};

/* One step up the tree: prepend a name, or cross a mount. Returns 1 to stop.
 * A bpf_loop callback is verified once, however many steps run, which keeps
 * the exec program far below the verifier's complexity limit. */
static long walk_step(u32 i, void *arg)
{
	struct walk_ctx *w = arg;
	u32 zero = 0;
	struct dw_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 1;
	/* Locals, not w->x, inside BPF_CORE_READ: the macro would otherwise
	 * record a CO-RE relocation against struct walk_ctx itself. */
	struct dentry *dentry = w->dentry;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt = w->mnt;
	if (dentry == w->root_dentry && vfsmnt == w->root_mnt) {
		w->done = true;
		return 1;
	}
	struct dentry *mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
	if (dentry == mnt_root) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);
		if (up == mnt) { /* top of the mount tree, outside the root */
			w->done = true;
			return 1;
		}
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = up;
		w->vfsmnt = (struct vfsmount *)((char *)up + bpf_core_field_offset(struct mount, mnt));
		return 0;
	}
	struct qstr q = BPF_CORE_READ(dentry, d_name);
	u32 len = q.len;
	if (len > DW_NAME_MAX)
		len = DW_NAME_MAX;
	u32 off = w->off;
	if (len + 1 > off) {
		w->trunc = true;
		w->done = true;
		return 1;
	}
	off -= len + 1;
	w->off = off;
	barrier_var(len);
	barrier_var(off);
	s->buf[off & DW_SCRATCH_MASK] = '/';
	bpf_probe_read_kernel(&s->buf[(off + 1) & DW_SCRATCH_MASK], len & DW_NAME_MAX, q.name);
	if (dentry == parent) { /* a pseudo file (memfd, pipe): no parent */
		w->done = true;
		return 1;
	}
	w->dentry = parent;
	return 0;
}

/* Build the path of `p` as seen from `root` into out[0..cap), walking dentries
 * and crossing mounts (bpf_d_path is not available to tracepoints). Names are
 * written backwards into the per-CPU scratch buffer. Returns the length; sets
 * *trunc when the path was too deep or too long (the tail is kept). */
static __always_inline u16 resolve_path(struct path *p, struct path *root, char *out, u32 cap,
					u32 *trunc)
{
	u32 zero = 0;
	struct dw_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	struct walk_ctx w = {
		.dentry = BPF_CORE_READ(p, dentry),
		.vfsmnt = BPF_CORE_READ(p, mnt),
		.root_dentry = BPF_CORE_READ(root, dentry),
		.root_mnt = BPF_CORE_READ(root, mnt),
		.off = DW_SCRATCH_LEN,
	};
	w.mnt = real_mount(w.vfsmnt);
	bpf_loop(DW_PATH_DEPTH, walk_step, &w, 0);
	if (!w.done || w.trunc)
		*trunc = true;

	u32 off = w.off;
	if (off > DW_SCRATCH_LEN)
		return 0;
	u32 len = DW_SCRATCH_LEN - off;
	if (len == 0) {
		out[0] = '/';
		return 1;
	}
	if (len > cap - 1) { /* keep the tail: the file name matters most */
		off += len - (cap - 1);
		len = cap - 1;
		*trunc = true;
	}
	barrier_var(len);
	barrier_var(off);
	len &= DW_PATH_LEN - 1;
	bpf_probe_read_kernel(out, len, &s->buf[off & DW_SCRATCH_MASK]);
	return len;
}

#endif
