/* SPDX-License-Identifier: GPL-2.0-only */
/* Dynamic-loader injection: LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT in a new
 * image's environment. The first DW_ENV_SCAN bytes are copied once and scanned
 * eight bytes at a time; only words holding an 'L' are looked at closely, so a
 * typical environment costs a few hundred cheap iterations. */
#ifndef DRIFTWATCH_ENV_H
#define DRIFTWATCH_ENV_H

#include "../maps.h"
#include <bpf/bpf_core_read.h>

#define DW_ENV_MASK (DW_ENV_SCAN - 1)

struct env_scan {
	u32 len;
	u32 bits;
};

static __always_inline bool env_is(const char *env, u32 at, u32 len, const char *want, u32 n)
{
	for (u32 k = 0; k < n; k++) {
		if (at + k >= len || env[(at + k) & DW_ENV_MASK] != want[k])
			return false;
	}
	return true;
}

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
	/* Does any byte of the word equal 'L' (0x4c)? */
	u64 x = w ^ 0x4c4c4c4c4c4c4c4cULL;
	if (!((x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL))
		return 0;
	for (u32 j = 0; j < 8; j++) {
		u32 p = off + j;
		if (p + 3 >= s->len || scr->env[p & DW_ENV_MASK] != 'L')
			continue;
		if (p > 0 && scr->env[(p - 1) & DW_ENV_MASK] != 0)
			continue; /* not the start of a variable */
		if (!env_is(scr->env, p + 1, s->len, "D_", 2))
			continue;
		if (env_is(scr->env, p + 3, s->len, "PRELOAD=", 8))
			s->bits |= DW_ENV_LD_PRELOAD;
		else if (env_is(scr->env, p + 3, s->len, "LIBRARY_PATH=", 13))
			s->bits |= DW_ENV_LD_LIBRARY_PATH;
		else if (env_is(scr->env, p + 3, s->len, "AUDIT=", 6))
			s->bits |= DW_ENV_LD_AUDIT;
	}
	return 0;
}

/* DW_ENV_* bits of the current task's (new) environment. */
static __always_inline u32 env_loader_vars(struct task_struct *t, struct dw_scratch *scr)
{
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
	struct env_scan s = {.len = len};
	bpf_loop(DW_ENV_SCAN / 8, env_word, &s, 0);
	return s.bits;
}

#endif
