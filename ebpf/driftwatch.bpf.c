/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * driftwatch kernel sensor: tracepoints only (tp_btf), so it loads where
 * kprobes, fentry and BPF-LSM are unavailable.
 *
 *   sched_process_exec  decide, in the kernel, whether a container exec is drift
 *   sched_process_fork  keep lineage (drifted ancestors) for container processes
 *   sched_process_exit  forget the process
 *   mmap / mprotect     judge files mapped executable (helpers/mapping.h)
 */
#include "include/vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "include/abi.h"
#include "maps.h"
#include "helpers/emit.h"
#include "helpers/task.h"
#include "helpers/file.h"
#include "helpers/net.h"
#include "helpers/fileops.h"
#include "helpers/env.h"
#include "helpers/origin.h"
#include "helpers/protect.h"
#include "helpers/mapping.h"

char LICENSE[] SEC("license") = "GPL";

static __always_inline u32 comm_class(const char comm[DW_COMM_LEN])
{
	struct dw_comm_key key = {};
	__builtin_memcpy(key.comm, comm, DW_COMM_LEN);
	u32 *cls = bpf_map_lookup_elem(&exec_names, &key);
	return cls ? *cls : 0;
}

/* judge_exec computes the verdict apart from the emitting code so a prevent
 * mode can act on it (bpf_send_signal from this tracepoint stops the new image
 * before its first instruction). */
static __always_inline void judge_exec(struct task_struct *task, struct linux_binprm *bprm,
				       struct exec_verdict *v)
{
	struct vfsmount *root_mnt = BPF_CORE_READ(task, fs, root.mnt);
	u32 root_magic = (u32)BPF_CORE_READ(root_mnt, mnt_sb, s_magic);
	bool overlay_root = root_magic == OVERLAYFS_SUPER_MAGIC;
	struct file *file = BPF_CORE_READ(bprm, file);

	if (overlay_root)
		v->flags |= DW_EXEC_OVERLAY_ROOT;
	v->exe_source = file_source(file, root_mnt, overlay_root, &v->magic, &v->nlink, &v->ino);
	if (source_is_drift(v->exe_source))
		v->flags |= DW_EXEC_DRIFT;

	/* A script run through its #! line: bprm->file is the interpreter and
	 * bprm->filename the script. The kernel has released the script's file by
	 * now, so its layer is judged only when binfmt_misc kept it open
	 * (bprm->executable); otherwise userspace gets its path. */
	if (BPF_CORE_READ(bprm, filename) != BPF_CORE_READ(bprm, interp)) {
		v->flags |= DW_EXEC_SCRIPT;
		v->script_source = DW_SRC_UNKNOWN;
		if (bpf_core_field_exists(bprm->executable)) {
			struct file *script = BPF_CORE_READ(bprm, executable);
			if (script && script != file) {
				u32 m, n;
				u64 ino;
				v->script_source = file_source(script, root_mnt, overlay_root, &m, &n, &ino);
				if (source_is_drift(v->script_source))
					v->flags |= DW_EXEC_DRIFT;
			}
		}
	}
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(dw_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	u32 mntns = task_mntns(task);
	if (mntns == host_mntns || mntns == 0) {
		kstat_inc(DW_KSTAT_HOST_EXEC_FILTERED);
		return 0;
	}
	u64 ns_id = task_mntns_id(task);
	if (bpf_map_lookup_elem(&not_container_mntns, &ns_id)) {
		kstat_inc(DW_KSTAT_NOT_CONTAINER_FILTERED);
		return 0;
	}
	kstat_inc(DW_KSTAT_CONTAINER_EXEC);

	u32 tgid = BPF_CORE_READ(task, tgid);
	u32 zero = 0;
	struct dw_scratch *scr = bpf_map_lookup_elem(&scratch, &zero);
	if (!scr)
		return 0;
	struct exec_verdict *vp = &scr->v;
	__builtin_memset(vp, 0, sizeof(*vp));
	judge_exec(task, bprm, vp);

	/* The first exec in a mount namespace we have not seen is the container's
	 * entrypoint, whatever the runtime, unless the namespace predates us. Its
	 * loader variables are the container's baseline: a later process with
	 * LD_PRELOAD & co. that the main process did not have is environment drift.
	 * The main process re-executing itself (`exec app` at the end of an
	 * entrypoint script) moves the baseline. */
	u32 env_len;
	u64 env_hash;
	u32 env = env_loader_vars_len(task, scr, &env_len, &env_hash);
	struct dw_seen *seen = bpf_map_lookup_elem(&seen_mntns, &ns_id);
	if (!seen) {
		struct dw_seen fresh = {.main_tgid = tgid, .env_loader = env};
		if (!bpf_map_lookup_elem(&preexisting_mntns, &mntns)) {
			vp->flags |= DW_EXEC_ENTRYPOINT;
			env_baseline(ns_id, env_len, env_hash);
		} else {
			/* The first exec since we started, maybe an exec session's:
			 * not the main process (the origin trusts main_tgid). */
			fresh.main_tgid = 0;
			fresh.flags = DW_SEEN_ENV_UNKNOWN;
		}
		if (bpf_map_update_elem(&seen_mntns, &ns_id, &fresh, BPF_ANY))
			kstat_inc(DW_KSTAT_MNTNS_TABLE_FULL);
	} else if (seen->main_tgid == tgid) {
		seen->env_loader = env;
		env_baseline(ns_id, env_len, env_hash);
	} else if (!(seen->flags & DW_SEEN_ENV_UNKNOWN) && (env & ~seen->env_loader & DW_ENV_LOADER_MASK)) {
		vp->flags |= DW_EXEC_ENV_DRIFT;
	}
	if (seen && seen->main_tgid != tgid && env_changed(ns_id, env_len, env_hash))
		vp->flags |= DW_EXEC_ENV_CHANGED;
	if (protect_exec(task, bprm, ns_id, tgid, seen ? seen->main_tgid : tgid, vp, scr))
		vp->flags |= DW_EXEC_KILLED;

	/* Lineage: inherit drift from the parent recorded at fork. */
	struct dw_proc *me = bpf_map_lookup_elem(&procs, &tgid);
	struct dw_proc entry = {};
	if (me)
		entry = *me;
	else {
		entry.ppid = BPF_CORE_READ(task, real_parent, tgid);
		/* No tracked parent: decide the origin once; children inherit it. */
		entry.flags = origin_proc_flags(task, ns_id, vp->flags & DW_EXEC_ENTRYPOINT);
	}
	entry.exec_ktime_ns = bpf_ktime_get_boot_ns();
	if (entry.flags & (DW_PROC_DRIFTED | DW_PROC_ANCESTOR_DRIFTED)) {
		entry.flags |= DW_PROC_ANCESTOR_DRIFTED;
		vp->flags |= DW_EXEC_ANCESTOR_DRIFT;
	}
	entry.flags &= ~DW_PROC_DRIFTED;
	if (vp->flags & DW_EXEC_DRIFT)
		entry.flags |= DW_PROC_DRIFTED;
	if (bpf_map_update_elem(&procs, &tgid, &entry, BPF_ANY))
		kstat_inc(DW_KSTAT_PROC_TABLE_FULL);
	char comm[DW_COMM_LEN] = {};
	bpf_probe_read_kernel(comm, sizeof(comm), task->comm);
	u32 cls = comm_class(comm);
	protect_script(task, bprm, ns_id, tgid, seen ? seen->main_tgid : tgid, vp, scr, entry.exec_ktime_ns,
		       cls & (DW_NAME_SHELL | DW_NAME_INTERPRETER), comm);

	/* In-kernel filter: only drift, named classes (shells, package managers,
	 * interpreters whose argv userspace inspects), entrypoints, children of
	 * drifted processes and #! scripts whose layer only userspace can judge
	 * cost ring-buffer space. */
	bool unjudged_script = (vp->flags & DW_EXEC_SCRIPT) && vp->script_source == DW_SRC_UNKNOWN;
	bool interesting =
		(vp->flags & (DW_EXEC_DRIFT | DW_EXEC_ENTRYPOINT | DW_EXEC_ANCESTOR_DRIFT | DW_EXEC_ENV_DRIFT |
			      DW_EXEC_ENV_CHANGED)) ||
		cls ||
		unjudged_script;
	if (!interesting && !emit_all_execs) {
		kstat_inc(DW_KSTAT_EXEC_FILTERED);
		return 0;
	}

	struct dw_exec *e = emit_reserve(DW_KIND_EXEC, sizeof(*e));
	if (!e)
		return 0;

	/* The exec tracepoint runs in the exec'ing task: "current" is `task`. */
	emit_header(&e->hdr, DW_KIND_EXEC, sizeof(*e), entry.exec_ktime_ns);
	e->ppid = entry.ppid;
	e->uid = BPF_CORE_READ(task, cred, uid.val);
	e->gid = BPF_CORE_READ(task, cred, gid.val);
	e->mntns = mntns;
	e->mntns_id = ns_id;
	if (task_has_tty(task))
		vp->flags |= DW_EXEC_TTY;
	e->exe_source = vp->exe_source;
	e->script_source = vp->script_source;
	e->exe_fs_magic = vp->magic;
	e->exe_nlink = vp->nlink;
	e->exe_ino = vp->ino;
	e->name_class = cls;
	e->env_loader = env;
	__builtin_memcpy(e->comm, comm, DW_COMM_LEN);
	bpf_probe_read_kernel_str(e->parent_comm, DW_COMM_LEN, BPF_CORE_READ(task, real_parent, comm));

	struct path root = BPF_CORE_READ(task, fs, root);
	struct file *file = BPF_CORE_READ(bprm, file);
	struct path fpath = BPF_CORE_READ(file, f_path);
	e->path_len = resolve_path(&fpath, &root, e->path, DW_PATH_LEN, &vp->trunc);
	e->script_len = 0;
	if (vp->flags & DW_EXEC_SCRIPT) {
		/* `./run.sh` names the script relative to the cwd, which userspace
		 * may no longer be able to read when the script has exited. */
		u16 unused = 0;
		e->script_len = name_path_at(task, DW_AT_FDCWD, BPF_CORE_READ(bprm, filename), true, e->script,
					     DW_SCRIPT_LEN, &vp->trunc, &unused);
	}
	if (vp->trunc) {
		vp->flags |= DW_EXEC_PATH_TRUNC;
		kstat_inc(DW_KSTAT_PATH_TRUNCATED);
	}

	bool args_trunc = false;
	e->args_len = task_args(task, e->args, &args_trunc);
	if (args_trunc)
		vp->flags |= DW_EXEC_ARGS_TRUNC;

	e->cgroup_key = task_cgroup_names(task, e->cgroup);
	if (!interesting)
		vp->flags |= DW_EXEC_UNFILTERED;
	e->flags = vp->flags;
	e->origin = (entry.flags & DW_PROC_EXEC_SESSION) ? DW_ORIGIN_EXEC_SESSION : DW_ORIGIN_CONTAINER;
	e->_reserved = 0;

	/* Only binary drift and entrypoints (one per container: protect mode is
	 * armed from it) wake the reader at once: a shell storm must not cost one
	 * wakeup per exec; the rest of what the filter keeps is gated; what only
	 * emit_all_execs sends waits for the drain timer. */
	enum dw_wake how = (vp->flags & (DW_EXEC_DRIFT | DW_EXEC_ENTRYPOINT)) ? DW_WAKE_NOW
			   : interesting					 ? DW_WAKE_GATED
									 : DW_WAKE_LAZY;
	emit_submit(e, DW_KIND_EXEC, how);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(dw_fork, struct task_struct *parent, struct task_struct *child)
{
	u32 child_tgid = BPF_CORE_READ(child, tgid);
	u32 child_pid = BPF_CORE_READ(child, pid);
	if (child_tgid != child_pid) /* a new thread, not a new process */
		return 0;
	u32 ptgid = BPF_CORE_READ(parent, tgid);
	struct dw_proc *p = bpf_map_lookup_elem(&procs, &ptgid);
	if (!p) /* untracked: host process, or started before the agent */
		return 0;
	struct dw_proc c = {
		.ppid = ptgid,
		.flags = (p->flags & (DW_PROC_DRIFTED | DW_PROC_ANCESTOR_DRIFTED)) ?
				 DW_PROC_ANCESTOR_DRIFTED :
				 0,
		.exec_ktime_ns = p->exec_ktime_ns,
	};
	/* fork image == parent image: a drifted parent's child runs drifted code */
	if (p->flags & DW_PROC_DRIFTED)
		c.flags |= DW_PROC_DRIFTED;
	c.flags |= p->flags & DW_PROC_EXEC_SESSION;
	if (bpf_map_update_elem(&procs, &child_tgid, &c, BPF_ANY))
		kstat_inc(DW_KSTAT_PROC_TABLE_FULL);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(dw_exit, struct task_struct *task)
{
	u32 tgid = BPF_CORE_READ(task, tgid);
	u32 pid = BPF_CORE_READ(task, pid);
	if (tgid == pid) {
		bpf_map_delete_elem(&procs, &tgid);
		if (scripts_pending)
			script_pending_done(tgid);
	}
	return 0;
}

/* Every syscall program is on a syscall's exit tracepoint, none on an entry
 * one: with any sys_enter_* tracepoint enabled, every syscall of the node
 * (getppid included) also pays the entry side's dispatch, about an eighth of
 * the syscall tax (README "Benchmark", "Exits only"). The arguments
 * are still in the saved user registers at exit. */
static __always_inline struct pt_regs *syscall_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

/* Network drift: classic syscall tracepoints fire only for these syscalls, so
 * nothing else pays for them (a raw sys_exit hook would tax every syscall).
 * Seen at exit, whatever the result, like an attempt at entry: a blocking
 * connect is reported once it completes or fails. */
SEC("tracepoint/syscalls/sys_exit_connect")
int dw_connect(struct dw_sys_exit *ctx)
{
	u64 ns_id;
	struct task_struct *t = container_task(&ns_id);
	if (!t)
		return 0;
	struct pt_regs *regs = syscall_regs();
	u64 fd = regs->di, uaddr = regs->si, len = regs->dx;
	struct dw_net_key k = {.op = DW_NET_CONNECT};
	if (!read_user_sockaddr((const void *)uaddr, len, &k))
		return 0;
	struct socket *sock = fd_socket(t, fd);
	k.sock_type = sock ? BPF_CORE_READ(sock, type) : 0;
	if (k.sock_type != DW_SOCK_STREAM && k.sock_type != DW_SOCK_DGRAM)
		return 0;
	emit_net(t, ns_id, &k);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_listen")
int dw_listen(struct dw_sys_exit *ctx)
{
	u64 ns_id;
	struct task_struct *t = container_task(&ns_id);
	if (!t)
		return 0;
	struct socket *sock = fd_socket(t, syscall_regs()->di);
	if (!sock)
		return 0;
	struct sock *sk = BPF_CORE_READ(sock, sk);
	struct dw_net_key k = {.op = DW_NET_LISTEN, .sock_type = DW_SOCK_STREAM};
	k.family = BPF_CORE_READ(sk, __sk_common.skc_family);
	k.port = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (k.family == DW_AF_INET) {
		u32 a = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__builtin_memcpy(k.addr, &a, 4);
	} else if (k.family == DW_AF_INET6) {
		BPF_CORE_READ_INTO(&k.addr, sk, __sk_common.skc_v6_rcv_saddr);
	} else {
		return 0;
	}
	emit_net(t, ns_id, &k);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_bind")
int dw_bind(struct dw_sys_exit *ctx)
{
	u64 ns_id;
	struct task_struct *t = container_task(&ns_id);
	if (!t)
		return 0;
	struct pt_regs *regs = syscall_regs();
	u64 fd = regs->di, uaddr = regs->si, len = regs->dx;
	/* A UDP socket "listens" by binding; TCP binds are reported at listen(). */
	struct socket *sock = fd_socket(t, fd);
	if (!sock || BPF_CORE_READ(sock, type) != DW_SOCK_DGRAM)
		return 0;
	struct dw_net_key k = {.op = DW_NET_BIND_UDP, .sock_type = DW_SOCK_DGRAM};
	if (!read_user_sockaddr((const void *)uaddr, len, &k) || k.port == 0)
		return 0;
	emit_net(t, ns_id, &k);
	return 0;
}

/* File drift, seen at syscall exit. One program, attached to the classic
 * tracepoint of each syscall it judges (src/bpf/mod.rs FILE_PROGRAM): the
 * kernel checks a syscall's bit before any BPF runs, so the node's other
 * syscalls pay only the traced path, never this program (as one program on
 * the raw sys_exit it ran for every syscall: a getppid loop at 0.50 of its
 * speed, 0.76 now, README "Benchmark").
 * - a write open: the returned descriptor names the real file (symlinks
 *   resolved) and FMODE_WRITE says the intent; reads return at once.
 * - operations on names (unlink, rename, chmod, chown, link, symlink, mkdir,
 *   rmdir, truncate), once they succeeded: `rm -f` of a missing file or
 *   `mkdir -p` over existing directories changes nothing and is not drift.
 *   Their arguments are still in the saved user registers. */
SEC("tracepoint/syscalls/sys_exit_openat")
int dw_file_exit(struct dw_sys_exit *ctx)
{
	long ret = ctx->ret;
	if (ret < 0)
		return 0;
	/* __syscall_nr is an int in the tracepoint's record. */
	unsigned long nr = (unsigned int)ctx->id;
	struct pt_regs *regs = syscall_regs();
	bool open = nr == DW_NR_OPENAT || nr == DW_NR_OPEN || nr == DW_NR_CREAT || nr == DW_NR_OPENAT2;
	/* Protect mode: a pending #! script is judged when its interpreter opens it. */
	if (open && scripts_pending)
		protect_script_open(ret);
	struct named_op o = {};
	if (open ? !open_may_write(nr, regs) : !named_op_of(nr, regs, &o))
		return 0;
	u64 ns_id;
	struct task_struct *t = container_task(&ns_id);
	if (!t)
		return 0;
	if (!open) {
		struct file *f = NULL;
		if (o.by_fd) {
			f = fd_file(t, o.fd);
			if (!f)
				return 0;
		}
		file_event(t, ns_id, o.op, f, o.dfd, o.name, o.dfd2, o.name2, o.mode, o.uid, o.gid, o.raw2,
			   task_origin(t, ns_id));
		return 0;
	}
	struct file *f = fd_file(t, (u64)ret);
	if (!f || !(BPF_CORE_READ(f, f_mode) & DW_FMODE_WRITE))
		return 0;
	/* Regular files only: /dev/null, pipes and sockets are not drift. */
	if ((BPF_CORE_READ(f, f_inode, i_mode) & DW_S_IFMT) != DW_S_IFREG)
		return 0;
	struct dw_file_key k = {.mntns_id = ns_id, .ino = BPF_CORE_READ(f, f_inode, i_ino)};
	k.origin = task_origin(t, ns_id);
	/* Folded only for the same file: a deleted file's inode number comes
	 * back for the next new file (often at once), whose name differs, and
	 * so does its dentry (a deleted name's stays, negative, in the cache). */
	u64 dentry = (u64)BPF_CORE_READ(f, f_path.dentry);
	u64 *seen = bpf_map_lookup_elem(&file_seen, &k);
	if (seen && *seen == dentry) {
		kstat_inc(DW_KSTAT_FILE_FOLDED);
		return 0;
	}
	bpf_map_update_elem(&file_seen, &k, &dentry, BPF_ANY);
	file_event(t, ns_id, DW_FILE_WRITE, f, 0, NULL, 0, NULL, 0, 0, 0, false, k.origin);
	return 0;
}

/* Executable mappings (helpers/mapping.h): classic syscall tracepoints, so
 * only mmap and mprotect pay; PROT_EXEC of a file is the first test. Judged at
 * exit, once the syscall succeeded, before the mapped code can run. */
SEC("tracepoint/syscalls/sys_exit_mmap")
int dw_mmap_exit(struct dw_sys_exit *ctx)
{
	if (ctx->ret < 0) /* -errno, else the mapping's address */
		return 0;
	struct pt_regs *regs = syscall_regs();
	u32 prot = regs->dx;
	int fd = (int)regs->r8;
	if (!(prot & DW_PROT_EXEC) || fd < 0) /* anonymous executable memory (JIT) is not a file */
		return 0;
	u64 ns_id;
	struct task_struct *t = container_task(&ns_id);
	if (!t)
		return 0;
	struct file *f = fd_file(t, (u64)fd);
	if (!f)
		return 0;
	struct path p = BPF_CORE_READ(f, f_path);
	map_judge(t, ns_id, &p, prot, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_mprotect")
int dw_mprotect_exit(struct dw_sys_exit *ctx)
{
	if (ctx->ret < 0)
		return 0;
	struct pt_regs *regs = syscall_regs();
	u32 prot = regs->dx;
	u64 addr = regs->di;
	if (!(prot & DW_PROT_EXEC))
		return 0;
	u64 ns_id;
	struct task_struct *t = container_task(&ns_id);
	if (!t)
		return 0;
	struct path p;
	if (vma_path_at(t, addr, &p))
		map_judge(t, ns_id, &p, prot, DW_MAP_MPROTECT);
	return 0;
}
