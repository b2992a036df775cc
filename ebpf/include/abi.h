/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * THE kernel <-> user contract of driftwatch.
 *
 * Compiled into the eBPF object by clang and turned into Rust by bindgen
 * (build.rs), so both sides share this one definition. Rules:
 *  - fixed-width types only, no kernel types, no pointers;
 *  - every ring-buffer record starts with struct dw_header;
 *  - kinds and flag bits are stable numbers: append, never renumber;
 *  - a layout test (tests in src/abi.rs) pins sizes and offsets.
 */
#ifndef DRIFTWATCH_ABI_H
#define DRIFTWATCH_ABI_H

#ifdef __BPF__
typedef unsigned char dw_u8;
typedef unsigned short dw_u16;
typedef unsigned int dw_u32;
typedef unsigned long long dw_u64;
#else
#include <stdint.h>
typedef uint8_t dw_u8;
typedef uint16_t dw_u16;
typedef uint32_t dw_u32;
typedef uint64_t dw_u64;
#endif

#define DW_ABI_VERSION 4

/* Record kinds (dw_header.kind). 0 is never valid. */
enum dw_kind {
	DW_KIND_EXEC = 1,
	DW_KIND_NET = 2,
	DW_KIND_FILE = 3,
	DW_KIND_MAP = 4,
	DW_KIND_MAX = 8, /* size of the per-kind counter arrays */
};

#define DW_COMM_LEN 16
#define DW_PATH_LEN 512 /* resolved executable path */
#define DW_SCRIPT_LEN 256 /* script path when the kernel ran an interpreter */
#define DW_ARGS_LEN 512 /* argv, NUL separated */
#define DW_CGROUP_LEVELS 4
#define DW_CGROUP_NAME_LEN 128

/* Where the executed file lives (dw_exec.exe_source). */
enum dw_exe_source {
	DW_SRC_UNKNOWN = 0, /* root is not overlayfs: image membership unknown */
	DW_SRC_IMAGE = 1, /* overlay lower layer: part of the image */
	DW_SRC_UPPER = 2, /* overlay upper layer: new or copied-up file */
	DW_SRC_MEMFD = 3, /* memfd_create() file: fileless */
	DW_SRC_DELETED = 4, /* no links left: fileless */
	DW_SRC_TMPFS = 5, /* a tmpfs mount other than the root (emptyDir medium Memory) */
	DW_SRC_VOLUME = 6, /* another mount inside the container (emptyDir, hostPath, ...) */
};

/* Where a container process came from (the origin field of dw_exec, dw_net
 * and dw_file): the container's own process tree, descended from its init, or
 * an exec session (kubectl exec, CRI ExecSync, runc exec, nsenter) and what
 * that session started. */
enum dw_origin {
	DW_ORIGIN_CONTAINER = 0,
	DW_ORIGIN_EXEC_SESSION = 1,
};

/* dw_exec.flags */
#define DW_EXEC_DRIFT (1u << 0) /* kernel verdict: exe or script is not from the image */
#define DW_EXEC_ENTRYPOINT (1u << 1) /* first exec in a new container mount namespace */
#define DW_EXEC_TTY (1u << 2) /* process has a controlling terminal */
#define DW_EXEC_ANCESTOR_DRIFT (1u << 3) /* an ancestor executed a drifted file */
#define DW_EXEC_PATH_TRUNC (1u << 4) /* exe path did not fit / too deep */
#define DW_EXEC_ARGS_TRUNC (1u << 5) /* argv did not fit */
#define DW_EXEC_SCRIPT (1u << 6) /* script_path holds the script run by an interpreter */
#define DW_EXEC_OVERLAY_ROOT (1u << 7) /* container root is overlayfs */
#define DW_EXEC_KILLED (1u << 8) /* protect mode sent SIGKILL before the new image ran */
#define DW_EXEC_ENV_DRIFT (1u << 9) /* loader variables the main process did not start with */
#define DW_EXEC_UNFILTERED (1u << 10) /* sent only because emit_all_execs is on: the kernel's filter found nothing in it, and it wakes nobody */
#define DW_EXEC_ENV_CHANGED (1u << 15) /* a variable added or changed against the entrypoint's (issue 16) */

/* Dynamic-loader variables in an environment (dw_exec.env_loader). */
#define DW_ENV_LD_PRELOAD (1u << 0)
#define DW_ENV_LD_LIBRARY_PATH (1u << 1)
#define DW_ENV_LD_AUDIT (1u << 2)
#define DW_ENV_LOADER_MASK 0x7u

/* Value of the seen_mntns map: the container's main process and the loader
 * variables it started with. */
struct dw_seen {
	dw_u32 main_tgid; /* 0: unknown (the container predates the agent) */
	dw_u16 env_loader; /* DW_ENV_* of the main process */
	dw_u16 flags; /* DW_SEEN_* */
};
#define DW_SEEN_ENV_UNKNOWN (1u << 0) /* the main process's environment was never seen */

/* Value of the protect_mntns map: a container in protect mode, by mount
 * namespace id (filled by userspace; absent: nothing is killed). */
struct dw_protect {
	dw_u32 main_tgid; /* the container's main process (never killed); 0: unknown */
	dw_u32 flags; /* DW_PROTECT_* */
};
#define DW_PROTECT_ALLOW_ALL (1u << 0) /* an approval covers every binary of the container */
#define DW_PROTECT_HAS_ALLOW (1u << 1) /* protect_allow holds path entries for it */

/* Key of the protect_allow map: an approved executable path, or a directory
 * prefix ending in '/', hashed with the load-time seed (protect_seed). */
struct dw_allow_key {
	dw_u64 mntns_id;
	dw_u64 hash;
};
/* Key of the script_killed map: a `#!` script protect mode stopped when its
 * interpreter opened it, by process and the kernel time of its exec. */
struct dw_script_key {
	dw_u32 tgid;
	dw_u32 _pad;
	dw_u64 exec_ktime_ns;
};

/* protect_allow values: how the hashed text approves. */
#define DW_ALLOW_EXACT (1u << 0) /* this exact path */
#define DW_ALLOW_DIR (1u << 1) /* files directly in this directory (dir/ *) */
#define DW_ALLOW_TREE (1u << 2) /* files anywhere below this directory (dir/ **) */

/* Name classes, values of the exec_names map (filled by userspace). */
#define DW_NAME_SHELL (1u << 0)
#define DW_NAME_PACKAGE (1u << 1)
#define DW_NAME_INTERPRETER (1u << 2)

/* Common header of every ring-buffer record. */
struct dw_header {
	dw_u16 kind; /* enum dw_kind */
	dw_u16 size; /* total record size in bytes, header included */
	dw_u32 cpu;
	dw_u64 ktime_ns; /* bpf_ktime_get_boot_ns() */
	dw_u64 cgroup_id; /* cgroup v2 id of the task */
	dw_u32 tgid;
	dw_u32 pid;
};

struct dw_exec {
	struct dw_header hdr;
	dw_u32 ppid; /* tgid of real_parent */
	dw_u32 uid;
	dw_u32 gid;
	dw_u32 mntns; /* mount namespace inode number */
	dw_u32 flags; /* DW_EXEC_* */
	dw_u32 exe_source; /* enum dw_exe_source, for the executed binary */
	dw_u32 script_source; /* enum dw_exe_source, for the script (DW_EXEC_SCRIPT) */
	dw_u32 exe_fs_magic; /* super_block magic of the executed file */
	dw_u32 name_class; /* DW_NAME_* bits of comm */
	dw_u32 exe_nlink;
	dw_u64 exe_ino;
	dw_u64 mntns_id; /* never-reused mount namespace id (ns_id/seq) */
	dw_u16 path_len; /* bytes used in path, without NUL */
	dw_u16 script_len;
	dw_u16 args_len; /* bytes used in args */
	dw_u16 env_loader; /* DW_ENV_* found in the new image's environment */
	char comm[DW_COMM_LEN];
	char parent_comm[DW_COMM_LEN];
	char path[DW_PATH_LEN];
	char script[DW_SCRIPT_LEN];
	char args[DW_ARGS_LEN];
	/* cgroup path components, leaf first (cgroup[0] is the task's own cgroup) */
	char cgroup[DW_CGROUP_LEVELS][DW_CGROUP_NAME_LEN];
	dw_u32 origin; /* enum dw_origin */
	dw_u32 _reserved;
	/* The cgroup whose path cgroup[] names: its kernfs node id (never reused
	 * in a boot), top bit set on the v1 memory hierarchy (another id space);
	 * 0: none. Equal keys name equal paths, so the reader decodes a path once. */
	dw_u64 cgroup_key;
};

/* dw_net.op */
#define DW_NET_CONNECT 1 /* connect(): remote address and port */
#define DW_NET_LISTEN 2 /* listen(): local address and port */
#define DW_NET_BIND_UDP 3 /* bind() of a UDP socket: local address and port */

/* A container process opened a network endpoint (DW_KIND_NET). Sent once per
 * (mount namespace, comm, op, endpoint): repeats are folded in the kernel. */
struct dw_net {
	struct dw_header hdr;
	dw_u64 mntns_id;
	dw_u32 ppid;
	dw_u32 uid;
	dw_u16 op; /* DW_NET_* */
	dw_u16 family; /* AF_INET (2) or AF_INET6 (10) */
	dw_u16 sock_type; /* SOCK_STREAM (1) or SOCK_DGRAM (2) */
	dw_u16 port; /* host byte order */
	dw_u8 addr[16]; /* network byte order; IPv4 in the first 4 bytes */
	char comm[DW_COMM_LEN];
	char cgroup[DW_CGROUP_LEVELS][DW_CGROUP_NAME_LEN];
	dw_u32 origin; /* enum dw_origin */
	dw_u32 _reserved;
	/* The cgroup whose path cgroup[] names: its kernfs node id (never reused
	 * in a boot), top bit set on the v1 memory hierarchy (another id space);
	 * 0: none. Equal keys name equal paths, so the reader decodes a path once. */
	dw_u64 cgroup_key;
};

/* dw_file.op */
#define DW_FILE_WRITE 1 /* opened for writing (created, written or truncated) */
#define DW_FILE_DELETE 2 /* unlink, unlinkat, rmdir (files and directories) */
#define DW_FILE_RENAME 3 /* rename, renameat, renameat2: path -> path2 */
#define DW_FILE_CHMOD 4 /* chmod, fchmod, fchmodat */
#define DW_FILE_LINK 5 /* link, linkat: path (existing) -> path2 (new name) */
#define DW_FILE_SYMLINK 6 /* symlink, symlinkat: path (the link) -> path2 (its target, as given) */
#define DW_FILE_CHOWN 7 /* chown, lchown, fchown, fchownat */
#define DW_FILE_MKDIR 8 /* mkdir, mkdirat (seen when they succeed) */
#define DW_FILE_TRUNCATE 9 /* truncate by path (ftruncate needs a write open, seen as DW_FILE_WRITE) */

/* dw_file.flags */
#define DW_FILE_PATH_TRUNC (1u << 0) /* path did not fit: its tail is kept */
#define DW_FILE_RELATIVE (1u << 1) /* path built from the cwd/dirfd and a name */
#define DW_FILE_PATH2_TRUNC (1u << 2) /* path2 did not fit: its tail is kept */

/* A container process changed a file (DW_KIND_FILE). Write opens are folded
 * per (container, inode); every kind is rate limited per container. */
struct dw_file {
	struct dw_header hdr;
	dw_u64 mntns_id;
	dw_u64 ino; /* 0 when the file was named, not opened */
	dw_u32 ppid;
	dw_u32 uid;
	dw_u16 op; /* DW_FILE_* */
	dw_u16 flags; /* DW_FILE_* flags */
	dw_u16 path_len;
	dw_u16 path2_len;
	dw_u32 source; /* enum dw_exe_source of the opened file; DW_SRC_UNKNOWN when named */
	dw_u32 mode; /* chmod mode */
	dw_u32 owner_uid; /* chown: new owner (u32 max: unchanged) */
	dw_u32 owner_gid;
	char comm[DW_COMM_LEN];
	char path[DW_PATH_LEN];
	char path2[DW_SCRIPT_LEN];
	char cgroup[DW_CGROUP_LEVELS][DW_CGROUP_NAME_LEN];
	dw_u32 origin; /* enum dw_origin */
	dw_u32 _reserved;
	/* The cgroup whose path cgroup[] names: its kernfs node id (never reused
	 * in a boot), top bit set on the v1 memory hierarchy (another id space);
	 * 0: none. Equal keys name equal paths, so the reader decodes a path once. */
	dw_u64 cgroup_key;
};

/* dw_map.flags */
#define DW_MAP_MPROTECT (1u << 0) /* PROT_EXEC added by mprotect() to a file mapping (else mmap()) */
#define DW_MAP_KILLED (1u << 1) /* protect mode sent SIGKILL before the mapped code ran */
#define DW_MAP_PATH_TRUNC (1u << 2) /* path did not fit: its tail is kept */
#define DW_MAP_EXE_TRUNC (1u << 3) /* exe did not fit: its tail is kept */
#define DW_MAP_ARGS_TRUNC (1u << 4) /* argv did not fit */

/* A container process mapped a file executable (DW_KIND_MAP): mmap() with
 * PROT_EXEC of a file, or mprotect() adding PROT_EXEC to a file mapping,
 * whose file is not from the image (the dynamic loader mapping a dropped
 * library or program). Image files never reach the ring buffer; drift is
 * folded per (container, inode). */
struct dw_map {
	struct dw_header hdr;
	dw_u64 mntns_id;
	dw_u64 ino; /* inode of the mapped file */
	dw_u32 ppid;
	dw_u32 uid;
	dw_u32 source; /* enum dw_exe_source of the mapped file (a drift value) */
	dw_u32 flags; /* DW_MAP_* */
	dw_u32 prot; /* PROT_* asked for */
	dw_u32 fs_magic; /* super_block magic of the mapped file */
	dw_u16 path_len; /* bytes used in path */
	dw_u16 exe_len; /* bytes used in exe */
	dw_u16 args_len; /* bytes used in args */
	dw_u16 _pad;
	char comm[DW_COMM_LEN];
	char path[DW_PATH_LEN]; /* the mapped file, as the container sees it */
	char exe[DW_PATH_LEN]; /* the mapping process's executable */
	char args[DW_ARGS_LEN]; /* its argv, NUL separated */
	char cgroup[DW_CGROUP_LEVELS][DW_CGROUP_NAME_LEN];
	dw_u32 origin; /* enum dw_origin */
	dw_u32 _reserved;
	/* The cgroup whose path cgroup[] names: its kernfs node id (never reused
	 * in a boot), top bit set on the v1 memory hierarchy (another id space);
	 * 0: none. Equal keys name equal paths, so the reader decodes a path once. */
	dw_u64 cgroup_key;
};

/* Kernel-side counters, one per CPU (summed by userspace). */
enum dw_kstat {
	DW_KSTAT_HOST_EXEC_FILTERED = 0, /* host execs dropped by the in-kernel filter */
	DW_KSTAT_CONTAINER_EXEC = 1, /* container execs seen */
	DW_KSTAT_EXEC_FILTERED = 2, /* container execs not interesting enough to send */
	DW_KSTAT_PROC_TABLE_FULL = 3, /* lineage inserts that failed */
	DW_KSTAT_MNTNS_TABLE_FULL = 4,
	DW_KSTAT_PATH_TRUNCATED = 5,
	DW_KSTAT_NOT_CONTAINER_FILTERED = 6, /* execs in namespaces userspace found not to be containers */
	DW_KSTAT_NET_FOLDED = 7, /* network events folded into one already sent */
	DW_KSTAT_NET_TABLE_FULL = 8,
	DW_KSTAT_FILE_FOLDED = 9, /* write opens folded into one already sent (same container and inode) */
	DW_KSTAT_FILE_RATE_LIMITED = 10, /* file events over the per-container rate, dropped */
	DW_KSTAT_FILE_PATH_TRUNCATED = 11, /* file events whose path or target did not fit (the tail is kept) */
	DW_KSTAT_PROTECT_KILLED = 12, /* drifted execs killed in protect mode */
	DW_KSTAT_PROTECT_KILL_FAILED = 13, /* bpf_send_signal refused: the exec ran */
	DW_KSTAT_PROTECT_APPROVED = 14, /* drifted execs in protect mode an approval let run */
	DW_KSTAT_MAP_EXEC = 15, /* executable file mappings by container processes, judged */
	DW_KSTAT_MAP_FILTERED = 16, /* ... of image files (or unknown layer): dropped in the kernel */
	DW_KSTAT_MAP_FOLDED = 17, /* ... of drift folded into one already sent (same container and inode) */
	DW_KSTAT_MAP_LOST = 18, /* kept for the metric's series: always 0 since mappings are judged at exit only */
	DW_KSTAT_FILE_SCRATCH = 19, /* file events on scratch paths (rules.file.ignore_prefixes), dropped */
	DW_KSTAT_MAX = 24,
};

struct dw_kstats {
	dw_u64 submitted[DW_KIND_MAX]; /* records submitted, per kind */
	dw_u64 ringbuf_full[DW_KIND_MAX]; /* failed reserves, per kind */
	dw_u64 counters[DW_KSTAT_MAX];
};

/* The events thread's side of the wake gate (map `reader`, one entry, mmapped
 * by the agent and written at each look at the ring buffer): records within
 * wake_gap_ns of a look do not force a wakeup, the reader's own timer looks
 * again one gap after it (one wakeup per gap in a storm, not up to two). */
struct dw_reader {
	dw_u64 look_ns; /* CLOCK_BOOTTIME ns (bpf_ktime_get_boot_ns) */
};

/* Lineage entry, per tgid, kernel only (the map is read for diagnostics). */
struct dw_proc {
	dw_u32 ppid;
	dw_u32 flags; /* DW_PROC_* */
	dw_u64 exec_ktime_ns; /* 0: a process that predates the agent, entered for its origin */
};

/* Key of the scratch_prefixes LPM trie (rules.file.ignore_prefixes): a
 * directory as a prefix ending in '/' ("/tmp/": everything under it) and as
 * its name ending in NUL ("/tmp\0": the directory itself), prefixlen in bits.
 * Prefixes longer than DW_PREFIX_LEN - 1 bytes are judged in userspace only. */
#define DW_PREFIX_LEN 64
#define DW_PREFIX_MAX 256 /* entries: two per prefix */
struct dw_prefix_key {
	dw_u32 prefixlen;
	dw_u8 data[DW_PREFIX_LEN];
};

#define DW_PROC_DRIFTED (1u << 0) /* this process image is drift */
#define DW_PROC_ANCESTOR_DRIFTED (1u << 1)
#define DW_PROC_EXEC_SESSION (1u << 2) /* origin: an exec session (inherited at fork) */

/* ---- Node quarantine (ebpf/quarantine.bpf.c, a separate object) ----------
 * cgroup_skb programs on a container's cgroup drop every packet whose remote
 * side (destination on egress, source on ingress) no allow entry names. Its
 * maps are pinned in bpffs, so these layouts outlive an agent: change them
 * only with a new pin directory layout (see src/bpf/quarantine.rs). */

/* Key of the quarantine_allow LPM trie: port first, then the address, so one
 * lookup with the packet's remote port finds the CIDR:port entries and one
 * with port 0 the CIDR entries (any port). IPv4 is stored IPv4-mapped
 * (::ffff:a.b.c.d), so a /n IPv4 prefix is 16 + 96 + n bits. */
struct dw_qallow_key {
	dw_u32 prefixlen; /* bits of port_be and addr that must match: 16 + address bits */
	dw_u8 port_be[2]; /* remote port, big endian; 0 0: any port */
	dw_u8 addr[16]; /* remote address: IPv6, or IPv4-mapped IPv6 */
	dw_u8 _pad[2];
};
#define DW_QALLOW_MAX 64 /* entries of quarantine_allow (response.quarantine.allow) */

#define DW_Q_ID_LEN 80 /* container id, NUL terminated */
#define DW_Q_PATH_LEN 256 /* cgroup v2 path, NUL terminated (truncated) */
#define DW_Q_REASON_LEN 128 /* why, NUL terminated (truncated) */
#define DW_Q_MAX 1024 /* quarantined containers per node */

/* Value of the quarantined map, by cgroup v2 id: written by userspace before
 * the programs are attached; the programs add to its drop counters. */
struct dw_quarantine {
	dw_u64 cgroup_id;
	dw_u64 since_unix_ns; /* when it was applied (CLOCK_REALTIME) */
	dw_u64 ingress_dropped; /* packets to the container's sockets dropped */
	dw_u64 egress_dropped; /* packets from the container's sockets dropped */
	dw_u32 flags; /* DW_Q_* */
	dw_u32 _pad;
	char container_id[DW_Q_ID_LEN];
	char cgroup_path[DW_Q_PATH_LEN];
	char reason[DW_Q_REASON_LEN];
};
#define DW_Q_HOST_NETNS (1u << 0) /* the container shares the node's network namespace: loopback is not allowed */

/* Per-CPU counters of the quarantine programs, over every quarantined container. */
struct dw_qstats {
	dw_u64 ingress_allowed;
	dw_u64 ingress_dropped;
	dw_u64 egress_allowed;
	dw_u64 egress_dropped;
};

#endif
