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
	__type(value, u8);
} seen_mntns SEC(".maps");

/* Mount namespaces (inode numbers) of processes alive when the agent started:
 * their entrypoint ran before us. Userspace seeds it and prunes dead ones. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, u8);
} preexisting_mntns SEC(".maps");

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

/* Scratch space for building paths backwards (too big for the 512-byte stack). */
#define DW_SCRATCH_LEN 1024 /* power of two, >= DW_PATH_LEN */
struct dw_scratch {
	char buf[DW_SCRATCH_LEN * 2];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct dw_scratch);
} scratch SEC(".maps");

#endif
