/* SPDX-License-Identifier: GPL-2.0-only */
/* Counters and ring-buffer reserve/submit: every failed reserve is counted. */
#ifndef DRIFTWATCH_EMIT_H
#define DRIFTWATCH_EMIT_H

#include "../maps.h"

static __always_inline struct dw_kstats *kstats_get(void)
{
	u32 zero = 0;
	return bpf_map_lookup_elem(&kstats, &zero);
}

static __always_inline void kstat_inc(u32 idx)
{
	struct dw_kstats *s = kstats_get();
	if (s && idx < DW_KSTAT_MAX)
		s->counters[idx]++;
}

/* The common header of every record, for the current task. */
static __always_inline void emit_header(struct dw_header *h, u32 kind, u32 size, u64 ktime_ns)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	h->kind = kind;
	h->size = size;
	h->cpu = bpf_get_smp_processor_id();
	h->ktime_ns = ktime_ns;
	h->cgroup_id = bpf_get_current_cgroup_id();
	h->tgid = pid_tgid >> 32;
	h->pid = (u32)pid_tgid;
}

/* Reserve a record of `size` bytes for `kind`; counts a drop on failure. */
static __always_inline void *emit_reserve(u32 kind, u64 size)
{
	void *rec = bpf_ringbuf_reserve(&events, size, 0);
	if (!rec) {
		struct dw_kstats *s = kstats_get();
		if (s && kind < DW_KIND_MAX)
			s->ringbuf_full[kind]++;
	}
	return rec;
}

/* How a submitted record wakes the reader (emit_submit). */
enum dw_wake {
	DW_WAKE_NOW, /* at once: drift, a container's entrypoint */
	DW_WAKE_GATED, /* at most once per wake_gap_ns, and not within a gap of the reader's look */
	DW_WAKE_LAZY, /* never by itself: read at the reader's next look or drain timer */
};

/* Submit. Drift wakes the reader at once, other records at most once per
 * wake_gap_ns (sensor.wake_interval_ms): a storm costs at most that many
 * wakeups (a wakeup per record cost a shell storm 19%), and no finding waits
 * for the reader's drain timer. A look of the reader's own (its timer, after
 * a look that read records) counts as a wakeup: records within a gap of it
 * wait for its next look, at most one gap later, instead of waking it again
 * just after it went back to sleep. Signed differences: the agent's clock
 * read may be a little ahead of this CPU's. Lazy records (emit_all_execs'
 * extras) wait for the drain timer. Whatever the class, a ring buffer half
 * full wakes the reader, so that a lazy or gated storm is read before it
 * overflows (with wake_gap_ns 0, "records never wake it", only drift does). */
static __always_inline void emit_submit(void *rec, u32 kind, enum dw_wake how)
{
	struct dw_kstats *s = kstats_get();
	if (s && kind < DW_KIND_MAX)
		s->submitted[kind]++;
	bool wake = how == DW_WAKE_NOW;
	if (!wake && wake_gap_ns) {
		if (how == DW_WAKE_GATED) {
			u64 now = bpf_ktime_get_boot_ns();
			u32 zero = 0;
			struct dw_reader *r = bpf_map_lookup_elem(&reader, &zero);
			u64 look = r ? *(volatile u64 *)&r->look_ns : 0;
			wake = (s64)(now - last_wake_ns) >= (s64)wake_gap_ns && (s64)(now - look) >= (s64)wake_gap_ns;
			if (wake)
				last_wake_ns = now;
		}
		/* Not counted in last_wake_ns: a reader woken for lazy records
		 * alone goes back to sleep without a look due, and the next gated
		 * record must still wake it at once. */
		if (!wake)
			wake = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >=
			       bpf_ringbuf_query(&events, BPF_RB_RING_SIZE) / 2;
	}
	bpf_ringbuf_submit(rec, wake ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

#endif
