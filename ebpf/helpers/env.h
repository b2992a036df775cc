/* SPDX-License-Identifier: GPL-2.0-only */
/* Dynamic-loader injection: LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT in a new
 * image's environment. The first DW_ENV_SCAN bytes are copied once and scanned
 * eight bytes at a time; only words holding an 'L' are looked at closely, so a
 * typical environment costs a few hundred cheap iterations.
 *
 * Written for the verifier as much as for speed: a name is compared as two
 * 64-bit words, not byte by byte, and the bits found go to map memory, not
 * the stack. Byte-wise compares with the bits on the stack made the verifier
 * walk 422k instructions of the exec program and take ~700 MB of kernel
 * memory (charged to the agent's cgroup) for ~3 s at every start; now 50k
 * and 56 MB (6.18, bench/verifier.sh). */
#ifndef DRIFTWATCH_ENV_H
#define DRIFTWATCH_ENV_H

#include "../maps.h"
#include <bpf/bpf_core_read.h>

#define DW_ENV_MASK (DW_ENV_SCAN - 1)

struct env_scan {
	u32 len;
	u64 whole; /* FNV-1a 64 over the words: the whole environment, for env_changed */
};

/* Little-endian words of the loader variables' names. */
#define DW_ENV_W_LD_AUDIT 0x54494455415f444cULL /* "LD_AUDIT" */
#define DW_ENV_W_LD_PRELO 0x4f4c4552505f444cULL /* "LD_PRELO" */
#define DW_ENV_W_AD_EQ 0x3d4441ULL /* "AD=" */
#define DW_ENV_W_LD_LIBRA 0x415242494c5f444cULL /* "LD_LIBRA" */
#define DW_ENV_W_RY_PATH_EQ 0x3d485441505f5952ULL /* "RY_PATH=" */

_Static_assert(__builtin_offsetof(struct dw_scratch, name) ==
		       __builtin_offsetof(struct dw_scratch, env) + DW_ENV_SCAN,
	       "a 16-byte read at a masked env offset must stay inside the scratch value");

static long env_word(u32 i, void *arg)
{
	struct env_scan *s = arg;
	u32 zero = 0;
	struct dw_scratch *scr = bpf_map_lookup_elem(&scratch, &zero);
	if (!scr)
		return 1;
	u32 off = i * 8;
	if (off >= s->len)
		return 1;
	u64 w = 0;
	__builtin_memcpy(&w, &scr->env[off & (DW_ENV_MASK & ~7u)], 8);
	/* The bytes past the end are an earlier exec's: not hashed. */
	u64 m = w;
	if (off + 8 > s->len)
		m &= (1ULL << (((s->len - off) & 7) * 8)) - 1;
	s->whole = (s->whole ^ m) * 0x100000001b3ULL;
	/* Does any byte of the word equal 'L' (0x4c)? */
	u64 x = w ^ 0x4c4c4c4c4c4c4c4cULL;
	if (!((x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL))
		return 0;
	for (u32 j = 0; j < 8; j++) {
		u32 p = off + j;
		/* The shortest name, LD_AUDIT=, needs 9 bytes. */
		if (p + 9 > s->len || scr->env[p & DW_ENV_MASK] != 'L')
			continue;
		if (p > 0 && scr->env[(p - 1) & DW_ENV_MASK] != 0)
			continue; /* not the start of a variable */
		const char *at = scr->env + (p & DW_ENV_MASK);
		u64 a, b;
		__builtin_memcpy(&a, at, 8);
		__builtin_memcpy(&b, at + 8, 8);
		if (a == DW_ENV_W_LD_AUDIT && (u8)b == '=')
			scr->env_bits |= DW_ENV_LD_AUDIT;
		else if (a == DW_ENV_W_LD_PRELO && (b & 0xffffff) == DW_ENV_W_AD_EQ && p + 11 <= s->len)
			scr->env_bits |= DW_ENV_LD_PRELOAD;
		else if (a == DW_ENV_W_LD_LIBRA && b == DW_ENV_W_RY_PATH_EQ && p + 16 <= s->len)
			scr->env_bits |= DW_ENV_LD_LIBRARY_PATH;
	}
	return 0;
}

/* DW_ENV_* bits of the current task's (new) environment; its copied length
 * in *copied (the bytes stay in scr->env for env_changed/env_baseline). */
static __always_inline u32 env_loader_vars_len(struct task_struct *t, struct dw_scratch *scr, u32 *copied,
					      u64 *whole)
{
	*copied = 0;
	*whole = 0;
	unsigned long start = BPF_CORE_READ(t, mm, env_start);
	unsigned long end = BPF_CORE_READ(t, mm, env_end);
	if (end <= start)
		return 0;
	u32 len = end - start;
	if (len > DW_ENV_SCAN)
		len = DW_ENV_SCAN;
	barrier_var(len);
	len &= DW_ENV_SCAN * 2 - 1;
	if (len > DW_ENV_SCAN)
		return 0;
	if (bpf_probe_read_user(scr->env, len, (void *)start))
		return 0;
	*copied = len;
	scr->env_bits = 0;
	struct env_scan s = {.len = len, .whole = 0xcbf29ce484222325ULL};
	bpf_loop(DW_ENV_SCAN / 8, env_word, &s, 0);
	*whole = s.whole;
	return scr->env_bits;
}

static __always_inline u32 env_loader_vars(struct task_struct *t, struct dw_scratch *scr)
{
	u32 unused;
	u64 unused_hash;
	return env_loader_vars_len(t, scr, &unused, &unused_hash);
}

/* Environment drift in general (issue 16). Every complete NAME=value of the
 * copied environment is hashed twice (FNV-1a 32: the name, and the whole
 * variable) into two 1024-bit Bloom filters per mount namespace: the
 * entrypoint's set. A later exec whose name is not in the first filter added
 * a variable, whose NAME=value is not in the second changed one. Removed
 * variables are not drift. Values never leave the kernel; userspace names the
 * variables from /proc only for flagged execs. A false positive of the
 * filters (about 0.3% at 30 variables) hides a change, never invents one. */
#define DW_ENV_BLOOM_WORDS 16
#define DW_ENV_BLOOM_MASK (DW_ENV_BLOOM_WORDS * 64 - 1)
#define DW_ENV_FNV_OFFSET 2166136261u
#define DW_ENV_FNV_PRIME 16777619u

struct dw_env_base {
	u64 names[DW_ENV_BLOOM_WORDS];
	u64 vars[DW_ENV_BLOOM_WORDS];
	/* The whole environment's hash: the same environment (the common case:
	 * inherited unchanged) skips the per-variable pass. */
	u64 whole;
};

/* Mount namespace id -> its entrypoint's filters (LRU: a gone container's
 * entry ages out, no pruning needed). 264 bytes an entry. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, u64);
	__type(value, struct dw_env_base);
} env_base SEC(".maps");

/* Where the filters are built or compared (an array lookup is inlined). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct dw_env_base);
} env_work SEC(".maps");

#define DW_ENV_ADDED (1u << 0)
#define DW_ENV_CHANGED (1u << 1)

struct env_hash_scan {
	u32 len;
	u32 hn; /* name hash, final once '=' was seen */
	u32 hv; /* NAME=value hash */
	u32 in_name;
	u32 build;
	u32 found; /* DW_ENV_ADDED | DW_ENV_CHANGED */
};

/* Names that change as a matter of course (shells, terminals): never drift.
 * FNV-1a 32 of PWD OLDPWD SHLVL _ TERM COLUMNS LINES HOSTNAME; the Rust side
 * checks these constants (classify::config_changes, VOLATILE_ENV). */
static __always_inline bool env_volatile(u32 h)
{
	return h == 0x9a24aca4 || h == 0xffa193c1 || h == 0x807a7e24 || h == 0xda0c196e || h == 0xa5d4e6d7 ||
	       h == 0x32d9a99c || h == 0x8c28ccdc || h == 0x702d8cac;
}

static __always_inline bool bloom_has(u64 *set, u32 h)
{
	u32 a = h & DW_ENV_BLOOM_MASK, b = (h >> 11) & DW_ENV_BLOOM_MASK;
	return (set[(a >> 6) & (DW_ENV_BLOOM_WORDS - 1)] & (1ULL << (a & 63))) &&
	       (set[(b >> 6) & (DW_ENV_BLOOM_WORDS - 1)] & (1ULL << (b & 63)));
}

static __always_inline void bloom_add(u64 *set, u32 h)
{
	u32 a = h & DW_ENV_BLOOM_MASK, b = (h >> 11) & DW_ENV_BLOOM_MASK;
	set[(a >> 6) & (DW_ENV_BLOOM_WORDS - 1)] |= 1ULL << (a & 63);
	set[(b >> 6) & (DW_ENV_BLOOM_WORDS - 1)] |= 1ULL << (b & 63);
}

/* One byte per iteration: an unrolled word loop with the per-variable
 * branches below is more than the verifier's budget for the exec program. */
static long env_hash_byte(u32 p, void *arg)
{
	struct env_hash_scan *s = arg;
	u32 zero = 0;
	if (p >= s->len)
		return 1;
	struct dw_scratch *scr = bpf_map_lookup_elem(&scratch, &zero);
	struct dw_env_base *w = bpf_map_lookup_elem(&env_work, &zero);
	if (!scr || !w)
		return 1;
	u8 c = scr->env[p & DW_ENV_MASK];
	if (c) {
		s->hv = (s->hv ^ c) * DW_ENV_FNV_PRIME;
		if (c == '=')
			s->in_name = 0;
		if (s->in_name)
			s->hn = (s->hn ^ c) * DW_ENV_FNV_PRIME;
		return 0;
	}
	/* The end of one variable: judge it, start the next. */
	u32 hn = s->hn, hv = s->hv;
	s->hn = DW_ENV_FNV_OFFSET;
	s->hv = DW_ENV_FNV_OFFSET;
	s->in_name = 1;
	if (hv == DW_ENV_FNV_OFFSET || env_volatile(hn))
		return 0;
	if (s->build) {
		bloom_add(w->names, hn);
		bloom_add(w->vars, hv);
	} else if (!bloom_has(w->names, hn)) {
		s->found |= DW_ENV_ADDED;
	} else if (!bloom_has(w->vars, hv)) {
		s->found |= DW_ENV_CHANGED;
	}
	return 0;
}

static __always_inline u32 env_hash_scan(u32 len, u32 build)
{
	struct env_hash_scan s = {
		.len = len, .hn = DW_ENV_FNV_OFFSET, .hv = DW_ENV_FNV_OFFSET, .in_name = 1, .build = build};
	bpf_loop(DW_ENV_SCAN, env_hash_byte, &s, 0);
	return s.found;
}

/* The entrypoint's (or the main process re-executing itself) environment,
 * copied by env_loader_vars_len, becomes the baseline of `ns_id`. */
static __always_inline void env_baseline(u64 ns_id, u32 len, u64 whole)
{
	u32 zero = 0;
	struct dw_env_base *w = bpf_map_lookup_elem(&env_work, &zero);
	if (!w)
		return;
	__builtin_memset(w, 0, sizeof(*w));
	env_hash_scan(len, 1);
	w->whole = whole;
	bpf_map_update_elem(&env_base, &ns_id, w, BPF_ANY);
}

/* DW_ENV_ADDED / DW_ENV_CHANGED of the copied environment against the
 * baseline of `ns_id`; 0 without a baseline (the namespace predates us). */
static __always_inline u32 env_changed(u64 ns_id, u32 len, u64 whole)
{
	u32 zero = 0;
	struct dw_env_base *base = bpf_map_lookup_elem(&env_base, &ns_id);
	struct dw_env_base *w = bpf_map_lookup_elem(&env_work, &zero);
	if (!base || !w || base->whole == whole)
		return 0;
	__builtin_memcpy(w, base, sizeof(*w));
	return env_hash_scan(len, 0);
}

#endif
