/* SPDX-License-Identifier: GPL-2.0-only */
/* Every map and load-time knob of driftwatch, in one place. */
#ifndef DRIFTWATCH_MAPS_H
#define DRIFTWATCH_MAPS_H

#include "include/vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include "include/abi.h"

/* Knobs set by the loader (EbpfLoader::override_global) before load. */
const volatile u32 host_mntns = 0; /* mount namespace of the host: never traced */
const volatile u8 emit_all_execs = 0; /* send every container exec (benchmarks, debugging) */
const volatile u32 file_events_per_sec = 100; /* per container; the excess is counted and dropped */
const volatile u64 wake_gap_ns = 10000000; /* sensor.wake_interval_ms; 0: only drift wakes the reader */
const volatile u64 protect_seed = 0; /* random per load: approved-path hashes cannot be forged offline */

/* The one ring buffer. Size is overridden by the loader (power of two pages). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

/* Per-CPU counters: submitted and dropped records per kind, filter counters. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct dw_kstats);
} kstats SEC(".maps");

/* Process lineage of container processes, by tgid. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, struct dw_proc);
} procs SEC(".maps");

/* Container mount namespaces (unique ids) that already ran their entrypoint. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct dw_seen);
} seen_mntns SEC(".maps");

/* Mount namespaces (inode numbers) of processes alive when the agent started:
 * their entrypoint ran before us. Userspace seeds it and prunes dead ones. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, u8);
} preexisting_mntns SEC(".maps");

/* Mount namespaces (unique ids) userspace found not to be containers (host
 * services with a private mount namespace): dropped like host execs. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, u64);
	__type(value, u8);
} not_container_mntns SEC(".maps");

/* Protect mode: containers (mount namespace ids) whose binary drift is killed
 * at exec, and the approved paths that still run in them. Userspace fills
 * both while it runs; empty maps kill nothing (fail-open). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct dw_protect);
} protect_mntns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct dw_allow_key);
	__type(value, u32);
} protect_allow SEC(".maps");

/* `#!` scripts in protect containers whose layer the kernel could not judge
 * at exec (it has released the script's file by then): judged when their
 * interpreter opens them, by tgid. `scripts_pending` counts the entries, so
 * opens on the node pay for the check only while one exists. */
struct dw_script_pending {
	u64 path_hash; /* FNV-1a of the script's absolute path, as the container sees it */
	u64 exec_ktime_ns;
	u32 opens; /* other files the process opened meanwhile */
	u32 _pad;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, struct dw_script_pending);
} script_pending SEC(".maps");
u32 scripts_pending = 0;
/* When a record that did not ask for it last woke the reader (emit_submit;
 * racy across CPUs on purpose: a lost update costs one extra wakeup). */
u64 last_wake_ns = 0;
/* When the events thread last looked (struct dw_reader): written by the agent
 * through an mmap, read by emit_submit. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, u32);
	__type(value, struct dw_reader);
} reader SEC(".maps");

/* Scripts killed at that open, for the finding's `driftwatch.action`. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct dw_script_key);
	__type(value, u8);
} script_killed SEC(".maps");

/* Network endpoints already reported, per mount namespace and program. */
struct dw_net_key {
	u64 mntns_id;
	char comm[DW_COMM_LEN];
	u16 op;
	u16 family;
	u16 sock_type;
	u16 port;
	u8 addr[16];
	/* An exec session's endpoint is never folded into the container's own
	 * (nor the reverse): one is learned, the other never is. */
	u32 origin;
	u32 _pad;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, struct dw_net_key);
	__type(value, u8);
} net_seen SEC(".maps");

/* Write opens already reported, per container and inode. */
struct dw_file_key {
	u64 mntns_id;
	u64 ino;
	u32 origin; /* an exec session's write is not folded into the container's */
	u32 _pad;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct dw_file_key);
	__type(value, u64); /* the file's dentry: an inode number reused by a new file is not folded */
} file_seen SEC(".maps");

/* Scratch paths: file events under them are dropped before the rate limit
 * (written by userspace at load; see struct dw_prefix_key). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, DW_PREFIX_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct dw_prefix_key);
	__type(value, u8);
} scratch_prefixes SEC(".maps");

/* Per-container file event budget: one-second windows. */
struct dw_rate {
	u64 window_ns;
	u32 count;
	u32 _pad;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct dw_rate);
} file_rate SEC(".maps");

/* Executable mappings already reported, per container and inode: a library
 * mapped by a thousand processes is one event. A kill is not folded into a
 * mapping reported alive (nor the reverse). */
struct dw_map_key {
	u64 mntns_id;
	u64 ino;
	u32 killed;
	u32 _pad;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct dw_map_key);
	__type(value, u8);
} map_seen SEC(".maps");

/* comm -> DW_NAME_* class (shells, package managers, interpreters), from policy. */
struct dw_comm_key {
	char comm[DW_COMM_LEN];
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct dw_comm_key);
	__type(value, u32);
} exec_names SEC(".maps");

/* The verdict on an exec, computed before anything is reserved. */
struct exec_verdict {
	u32 exe_source;
	u32 script_source;
	u32 flags;
	u32 magic;
	u32 nlink;
	u32 trunc;
	u64 ino;
};

/* Per-CPU scratch: paths are built backwards in buf (too big for the 512-byte
 * stack), and the exec verdict lives here rather than on the stack: the
 * verifier does not track map memory, so flag bits set on different paths do
 * not become distinct constant states (older verifiers, e.g. 6.1, otherwise
 * explore every combination and hit the 1M-instruction limit). */
#define DW_SCRATCH_LEN 1024 /* power of two, >= DW_PATH_LEN */
#define DW_ENV_SCAN 4096 /* environment bytes scanned for loader variables */
#define DW_NAME_SCAN 4096 /* a syscall's path name: PATH_MAX, power of two */
struct dw_scratch {
	char buf[DW_SCRATCH_LEN * 2];
	struct exec_verdict v;
	/* DW_ENV_LD_* found by the environment scan (helpers/env.h): in map
	 * memory for the same reason as the verdict. */
	u32 env_bits;
	char env[DW_ENV_SCAN];
	/* Twice the name: a masked offset plus a masked length stays inside.
	 * It also follows env, so a 16-byte read at a masked env offset stays
	 * inside the value (helpers/env.h). */
	char name[DW_NAME_SCAN * 2];
	struct dw_prefix_key prefix; /* a scratch_prefixes lookup */
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct dw_scratch);
} scratch SEC(".maps");

#endif
