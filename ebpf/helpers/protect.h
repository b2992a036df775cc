/* SPDX-License-Identifier: GPL-2.0-only */
/* Protect mode: stop binary drift at exec, before its first instruction.
 *
 * Called from the sched_process_exec tracepoint, which runs in the exec'ing
 * task after the new image is loaded and before it returns to user mode:
 * bpf_send_signal(SIGKILL) there kills it before any of its code runs. */
#ifndef DRIFTWATCH_PROTECT_H
#define DRIFTWATCH_PROTECT_H

#include "../maps.h"
#include "emit.h"
#include "file.h"
#include "net.h"
#include "fileops.h"

#define DW_SIGKILL 9
#define DW_SCRIPT_OPENS_MAX 512 /* opens a pending script's interpreter may make before it */
#define DW_FNV_OFFSET 0xcbf29ce484222325ULL
#define DW_FNV_PRIME 0x100000001b3ULL
#define DW_NAME_MASK (DW_NAME_SCAN * 2 - 1)

/* An approval may name rules (exec_new_binary, exec_fileless_memfd, ...),
 * that is executable sources: the source is folded into every key as one
 * more symbol, outside the byte range (0: a script the kernel judged). */
static __always_inline u64 allow_key_hash(u64 h, u32 source)
{
	return (h ^ (0x100 + source)) * DW_FNV_PRIME;
}

/* Hash state of one walk over the executable's path (scratch name[]). */
struct allow_walk {
	u64 ns_id;
	u32 source;
	u64 h; /* seeded FNV-1a of path[0..i] */
	u64 dir_h; /* the same, up to and including the last '/' */
	u32 len;
	bool allowed;
};

static __always_inline bool allow_has(u64 ns_id, u64 h, u32 source, u32 bit)
{
	struct dw_allow_key k = {.mntns_id = ns_id, .hash = allow_key_hash(h, source)};
	u32 *a = bpf_map_lookup_elem(&protect_allow, &k);
	return a && (*a & bit);
}

/* One byte: fold it in; at a '/', the prefix so far is a directory that a
 * `dir/` + `**` approval may cover. */
static long allow_step(u32 i, void *arg)
{
	struct allow_walk *w = arg;
	if (i >= w->len)
		return 1;
	u32 zero = 0;
	struct dw_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 1;
	u8 c = s->name[i & DW_NAME_MASK];
	w->h = (w->h ^ c) * DW_FNV_PRIME;
	if (c == '/') {
		w->dir_h = w->h;
		if (allow_has(w->ns_id, w->h, w->source, DW_ALLOW_TREE)) {
			w->allowed = true;
			return 1;
		}
	}
	return 0;
}

/* An approval the kernel can decide covers the executable: its exact path,
 * its directory (dir/ *) or a directory above it (dir/ **). A cut path is
 * never approved: its head is unknown. */
static __always_inline bool file_approved(struct task_struct *task, struct file *file, u64 ns_id, u32 source,
					  struct dw_scratch *scr)
{
	struct path root = BPF_CORE_READ(task, fs, root);
	struct path fpath = BPF_CORE_READ(file, f_path);
	u32 trunc = 0;
	u16 len = resolve_path(&fpath, &root, scr->name, DW_PATH_LEN, &trunc);
	if (trunc || len == 0)
		return false;
	struct allow_walk w = {.ns_id = ns_id, .source = source, .h = DW_FNV_OFFSET ^ protect_seed, .len = len};
	w.dir_h = w.h;
	bpf_loop(DW_PATH_LEN, allow_step, &w, 0);
	if (w.allowed)
		return true;
	return allow_has(ns_id, w.dir_h, source, DW_ALLOW_DIR) || allow_has(ns_id, w.h, source, DW_ALLOW_EXACT);
}

static __always_inline bool exec_approved(struct task_struct *task, struct linux_binprm *bprm, u64 ns_id,
					  u32 source, struct dw_scratch *scr)
{
	return file_approved(task, BPF_CORE_READ(bprm, file), ns_id, source, scr);
}

/* The kill decision, on the verdict judge_exec computed: binary drift (an
 * executable, or a script the kernel could judge, not from the image) in a
 * protect container, except the entrypoint, the container's main process
 * and what an approval covers. True when SIGKILL was sent. */
static __always_inline bool protect_exec(struct task_struct *task, struct linux_binprm *bprm, u64 ns_id, u32 tgid,
					 u32 main_tgid, struct exec_verdict *v, struct dw_scratch *scr)
{
	/* Image execs stop here, before any lookup: protect mode costs them nothing. */
	if (!(v->flags & DW_EXEC_DRIFT) || (v->flags & DW_EXEC_ENTRYPOINT))
		return false;
	struct dw_protect *p = bpf_map_lookup_elem(&protect_mntns, &ns_id);
	if (!p)
		return false;
	if (tgid == main_tgid || tgid == p->main_tgid)
		return false;
	u32 flags = p->flags;
	u32 source = source_is_drift(v->exe_source) ? v->exe_source : 0;
	if ((flags & DW_PROTECT_ALLOW_ALL) ||
	    ((flags & DW_PROTECT_HAS_ALLOW) && exec_approved(task, bprm, ns_id, source, scr))) {
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

/* FNV-1a of scratch env[0..len) (the per-CPU buffer the exec program is
 * done with once it judged the environment). */
struct hash_walk {
	u64 h;
	u32 len;
};

static long hash_step(u32 i, void *arg)
{
	struct hash_walk *w = arg;
	if (i >= w->len)
		return 1;
	u32 zero = 0;
	struct dw_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 1;
	w->h = (w->h ^ (u8)s->env[i & (DW_ENV_SCAN - 1)]) * DW_FNV_PRIME;
	return 0;
}

static __always_inline u64 hash_env(u32 len)
{
	struct hash_walk w = {.h = DW_FNV_OFFSET ^ protect_seed, .len = len};
	bpf_loop(DW_PATH_LEN, hash_step, &w, 0);
	return w.h;
}

/* The script an interpreter exec names as its first operand, when it is an
 * absolute path: `sh /tmp/x.sh`, `perl /tmp/x.pl`, `busybox sh /tmp/x.sh`
 * (options before it, or a relative name, are left to userspace, which
 * reports them). Copied to scr->env[0..len); returns len, 0 for none. */
static __always_inline u32 interpreter_operand(struct task_struct *task, const char comm[DW_COMM_LEN],
					       struct dw_scratch *scr)
{
	unsigned long at = BPF_CORE_READ(task, mm, arg_start);
	unsigned long end = BPF_CORE_READ(task, mm, arg_end);
	/* argv[0], and the applet for busybox: skipped by their lengths. */
	bool busybox = comm[0] == 'b' && comm[1] == 'u' && comm[2] == 's' && comm[3] == 'y' && comm[4] == 'b' &&
		       comm[5] == 'o' && comm[6] == 'x' && comm[7] == 0;
	long n = bpf_probe_read_user_str(scr->env, DW_PATH_LEN, (void *)at);
	if (n <= 0)
		return 0;
	at += n;
	if (busybox) {
		n = bpf_probe_read_user_str(scr->env, DW_PATH_LEN, (void *)at);
		if (n <= 0)
			return 0;
		at += n;
	}
	if (at >= end)
		return 0;
	n = bpf_probe_read_user_str(scr->env, DW_PATH_LEN, (void *)at);
	if (n <= 1 || n >= DW_PATH_LEN || scr->env[0] != '/')
		return 0;
	return n - 1;
}

/* A `#!` script the kernel could not judge at exec, or the script named to
 * an interpreter (`interp`: the exec's comm is a shell or interpreter), in a
 * protect container: remember its absolute path so the open by its
 * interpreter judges it (protect_script_open), before the interpreter reads
 * its first line. */
static __always_inline void protect_script(struct task_struct *task, struct linux_binprm *bprm, u64 ns_id, u32 tgid,
					   u32 main_tgid, struct exec_verdict *v, struct dw_scratch *scr, u64 ktime,
					   u32 interp, const char comm[DW_COMM_LEN])
{
	bool shebang = (v->flags & DW_EXEC_SCRIPT) && v->script_source == DW_SRC_UNKNOWN;
	if ((!shebang && !interp) || (v->flags & (DW_EXEC_ENTRYPOINT | DW_EXEC_DRIFT)))
		return;
	struct dw_protect *p = bpf_map_lookup_elem(&protect_mntns, &ns_id);
	if (!p || tgid == main_tgid || tgid == p->main_tgid)
		return;
	/* A script finding's executable is its interpreter (rule exec_new_script:
	 * source 0), as userspace matches approvals. */
	u32 flags = p->flags;
	if ((flags & DW_PROTECT_ALLOW_ALL) || ((flags & DW_PROTECT_HAS_ALLOW) && exec_approved(task, bprm, ns_id, 0, scr))) {
		kstat_inc(DW_KSTAT_PROTECT_APPROVED);
		return;
	}
	if (!shebang) {
		u32 len = interpreter_operand(task, comm, scr);
		if (len == 0)
			return;
		struct dw_script_pending sp = {.path_hash = hash_env(len), .exec_ktime_ns = ktime};
		if (!bpf_map_update_elem(&script_pending, &tgid, &sp, BPF_NOEXIST))
			__sync_fetch_and_add(&scripts_pending, 1);
		else
			bpf_map_update_elem(&script_pending, &tgid, &sp, BPF_EXIST);
		return;
	}
	/* `./run.sh`: the interpreter's open resolves to /cwd/run.sh, not /cwd/./run.sh. */
	const char *name = BPF_CORE_READ(bprm, filename);
#pragma unroll
	for (int i = 0; i < 4; i++) {
		char two[2] = {};
		bpf_probe_read_kernel(two, sizeof(two), name);
		if (two[0] != '.' || two[1] != '/')
			break;
		name += 2;
	}
	u32 trunc = 0;
	u16 unused = 0;
	u16 len = name_path_at(task, DW_AT_FDCWD, name, true, scr->env, DW_PATH_LEN, &trunc, &unused);
	if (trunc || len == 0)
		return;
	struct dw_script_pending sp = {.path_hash = hash_env(len), .exec_ktime_ns = ktime};
	if (!bpf_map_update_elem(&script_pending, &tgid, &sp, BPF_NOEXIST))
		__sync_fetch_and_add(&scripts_pending, 1);
	else
		bpf_map_update_elem(&script_pending, &tgid, &sp, BPF_EXIST);
}

static __always_inline void script_pending_done(u32 tgid)
{
	if (!bpf_map_delete_elem(&script_pending, &tgid))
		__sync_fetch_and_add(&scripts_pending, (u32)-1); /* XADD: no fetch needed */
}

/* An open (returning `fd`) by a process whose script is pending: when the
 * opened file is the script, judge its layer; drift is killed there. */
static __always_inline void protect_script_open(long fd)
{
	struct task_struct *t = bpf_get_current_task_btf();
	u32 tgid = t->tgid;
	struct dw_script_pending *sp = bpf_map_lookup_elem(&script_pending, &tgid);
	if (!sp)
		return;
	u32 zero = 0;
	struct dw_scratch *scr = bpf_map_lookup_elem(&scratch, &zero);
	struct file *f = fd_file(t, (u64)fd);
	if (!scr || !f)
		return;
	struct path root = BPF_CORE_READ(t, fs, root);
	struct path fpath = BPF_CORE_READ(f, f_path);
	u32 trunc = 0;
	u16 len = resolve_path(&fpath, &root, scr->env, DW_PATH_LEN, &trunc);
	if (trunc || len == 0 || hash_env(len) != sp->path_hash) {
		/* Another file (the interpreter's own libraries, ...). A script
		 * named through a symlink or `..` never matches: give up after a
		 * bound, so the node's opens stop paying for it. */
		if (++sp->opens > DW_SCRIPT_OPENS_MAX)
			script_pending_done(tgid);
		return;
	}
	struct dw_script_key k = {.tgid = tgid, .exec_ktime_ns = sp->exec_ktime_ns};
	script_pending_done(tgid);
	struct vfsmount *root_mnt = root.mnt;
	bool overlay_root = (u32)BPF_CORE_READ(root_mnt, mnt_sb, s_magic) == OVERLAYFS_SUPER_MAGIC;
	u32 m, n;
	u64 ino;
	if (!source_is_drift(file_source(f, root_mnt, overlay_root, &m, &n, &ino)))
		return;
	if (bpf_send_signal(DW_SIGKILL)) {
		kstat_inc(DW_KSTAT_PROTECT_KILL_FAILED);
		return;
	}
	kstat_inc(DW_KSTAT_PROTECT_KILLED);
	u8 one = 1;
	bpf_map_update_elem(&script_killed, &k, &one, BPF_ANY);
}

#endif
