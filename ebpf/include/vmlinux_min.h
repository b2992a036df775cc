/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The few kernel types driftwatch reads, declared for CO-RE.
 *
 * preserve_access_index makes clang emit relocations instead of fixed
 * offsets: the loader (aya) matches each field by name against the running
 * kernel's BTF, so only the fields listed here must exist, at any offset.
 * This replaces a generated 130k-line vmlinux.h.
 */
#ifndef DRIFTWATCH_VMLINUX_MIN_H
#define DRIFTWATCH_VMLINUX_MIN_H

#include <linux/types.h>
#include <linux/bpf.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef int pid_t;
typedef _Bool bool;
#define true 1
#define false 0

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct qstr {
	union {
		struct {
			u32 hash;
			u32 len;
		};
		u64 hash_len;
	};
	const unsigned char *name;
};

struct super_block {
	unsigned long s_magic;
	u32 s_dev;
};

struct inode {
	unsigned short i_mode;
	struct super_block *i_sb;
	unsigned long i_ino;
	unsigned int __i_nlink;
};

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
	struct inode *d_inode;
};

struct vfsmount {
	struct dentry *mnt_root;
	struct super_block *mnt_sb;
};

struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
	struct mnt_namespace *mnt_ns;
};

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
};

struct file {
	struct path f_path;
	struct inode *f_inode;
	unsigned int f_mode; /* FMODE_WRITE = 0x2 */
	void *private_data; /* struct socket for sockets */
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct in6_addr {
	union {
		u8 u6_addr8[16];
	} in6_u;
};

struct sock_common {
	u32 skc_rcv_saddr;
	u16 skc_num; /* local port, host order */
	unsigned short skc_family;
	struct in6_addr skc_v6_rcv_saddr;
};

struct sock {
	struct sock_common __sk_common;
};

struct socket {
	short type;
	struct sock *sk;
};

struct linux_binprm {
	struct file *file;
	struct file *executable; /* since 5.8: the file first opened (the script) */
	const char *filename; /* as passed to execve: the script for #! files */
	const char *interp; /* the interpreter for #! files, else == filename */
};

struct ns_common {
	unsigned int inum; /* recycled when the namespace dies */
	u64 ns_id; /* 6.18+: unique for the boot */
};

struct mnt_namespace {
	struct ns_common ns;
	u64 seq; /* before 6.18: unique for the boot */
};

struct nsproxy {
	struct mnt_namespace *mnt_ns;
};

struct fs_struct {
	struct path root;
	struct path pwd;
};

struct kernfs_node {
	struct kernfs_node *__parent; /* named parent before 6.15 */
	const char *name;
	u64 id; /* a u64 since 5.5 */
};

struct kernfs_node___old {
	struct kernfs_node *parent;
};

struct cgroup_root;

struct cgroup {
	struct kernfs_node *kn;
	struct cgroup_root *root; /* the hierarchy it belongs to */
};

struct cgroup_subsys_state {
	struct cgroup *cgroup;
};

struct css_set {
	struct cgroup_subsys_state *subsys[12];
	struct cgroup *dfl_cgrp;
};

enum cgroup_subsys_id {
	memory_cgrp_id = 4,
};

struct tty_struct;

struct signal_struct {
	struct tty_struct *tty;
};

typedef struct {
	u32 val;
} kuid_t;

typedef struct {
	u32 val;
} kgid_t;

struct cred {
	kuid_t uid;
	kgid_t gid;
};

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
	unsigned long env_start;
	unsigned long env_end;
	struct file *exe_file;
};

/* A mapping: only its file is read (bpf_find_vma hands it over). */
struct vm_area_struct {
	struct file *vm_file;
};

/* x86_64: the syscall number of the current syscall. */
struct pt_regs {
	unsigned long r10;
	unsigned long r8;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long orig_ax;
};

/* A pid as each pid namespace from the root down to `level` sees it. */
struct upid {
	int nr;
	void *ns;
};

struct pid {
	unsigned int level;
	struct upid numbers[1];
};

struct task_struct {
	pid_t pid;
	pid_t tgid;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	const struct cred *cred;
	char comm[16];
	struct fs_struct *fs;
	struct nsproxy *nsproxy;
	struct signal_struct *signal;
	struct css_set *cgroups;
	struct mm_struct *mm;
	struct files_struct *files;
	struct pid *thread_pid;
};

#pragma clang attribute pop

/* Context of the syscalls:sys_exit_* tracepoints (the tracepoint format:
 * 8 bytes of common fields, the syscall number, its result). No program is
 * on a sys_enter_* tracepoint (ebpf/driftwatch.bpf.c, syscall_regs). */
struct dw_sys_exit {
	u64 common;
	long id;
	long ret;
};

#endif
