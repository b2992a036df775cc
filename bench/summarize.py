#!/usr/bin/env python3
"""Summarise bench/overhead.sh runs (JSON lines): table on stdout, JSON to --out.

Exit status 1 when the agent dropped events or findings at nominal load (mode "agent",
default flags); drops under --emit-all-execs are reported but are not a failure.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

WORKLOAD_DOC = {
    "container_exec_true": "fork+exec /bin/true in a container (image binary, filtered in kernel)",
    "container_exec_sh": "fork+exec /bin/sh -c : in a container (shell: event + finding each)",
    "container_exec_dyn": "fork+exec the dynamically linked hello-dyn in a container (ld.so maps libc "
    "with mmap(PROT_EXEC): judged in the kernel at the mmap syscall, image, filtered)",
    "host_open_read": "open+read+close a small file on the host (the open-exit hook returns at the host check)",
    "host_exec_true": "fork+exec /bin/true on the host (filtered in kernel as host)",
    "host_getppid": "getppid() on the host: a syscall no sensor needs (the traced-path tax)",
    "container_write_tmp": "open(O_CREAT|O_TRUNC)+write+close of 1000 names cycled in a container's /tmp "
    "(scratch: rules.file.ignore_prefixes)",
    "container_net": "listen+connect+UDP bind on the container's loopback, 1000 ports cycled "
    "(first of each reaches userspace, repeats folded in kernel)",
    "host_net": "the same on the host (filtered in kernel as host)",
    "container_read": "open+read+close /etc/passwd in a container (reads return in the kernel at once)",
    "container_write": "open(O_CREAT|O_TRUNC)+write+close of 1000 names cycled in a container's /root "
    "(first write of each is file drift, then folded per inode; per-container rate limit applies)",
}
# Issue 15's goals: throughput with the agent / without (baseline s / agent s).
GOALS = {
    "host_getppid": 0.90,
    "host_open_read": 0.95,
    "host_exec_true": 0.98,
    "container_exec_true": 0.97,
    "container_read": 0.97,
    "container_write_tmp": 0.95,
    "container_write": 0.90,
}
COUNTERS = [
    "agent_cpu_s", "kernel_events", "kernel_ringbuf_drops", "userspace_drops_events",
    "userspace_drops_findings", "events_decoded", "findings", "findings_lines",
    "host_filtered", "container_filtered", "container_sent", "net_folded", "file_folded",
    "map_image_filtered",
    "file_rate_limited", "reader_wakeups", "floor_wakeups", "agent_write_syscalls",
    "stdout_reader_cpu_s", "findings_bytes", "floor_write_cpu_s", "floor_bytes",
]
# Issue 15's latency goal (kernel event -> finding, p99): no look cadence can be
# longer than this and meet it, so it bounds how few wakeups any reader can have.
LATENCY_GOAL_MS = 20


def median(xs):
    return statistics.median(xs) if xs else None


def quantile(q, buckets):
    """histogram_quantile over {le: cumulative count}: linear within a bucket."""
    pts = sorted((float(le), c) for le, c in buckets.items())
    if not pts or pts[-1][1] <= 0:
        return None
    rank = q * pts[-1][1]
    prev_le, prev_c = 0.0, 0
    for le, c in pts:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 1)
        prev_le, prev_c = le, c
    return None


def summarise(runs, wake_ms=None):
    by = {}
    for r in runs:
        by.setdefault(r["workload"], {}).setdefault(r["mode"], []).append(r)
    out = []
    for w, modes in by.items():
        base = modes.get("baseline", [])
        base_med = median([r["seconds"] for r in base])
        base_cpu = median([r["workload_cpu_s"] for r in base])
        base_by_round = {r["round"]: r["seconds"] for r in base}
        for mode, rs in modes.items():
            if mode == "baseline":
                continue
            n = rs[0]["n"]
            med = median([r["seconds"] for r in rs])
            cpu_med = median([r["workload_cpu_s"] for r in rs])
            paired = [r["seconds"] / base_by_round[r["round"]] for r in rs if r["round"] in base_by_round]
            s = {
                "workload": w,
                "mode": mode,
                "n": n,
                "runs": len(rs),
                "baseline_median_s": base_med,
                "agent_median_s": med,
                "overhead_ratio": med / base_med if base_med else None,
                "per_round_ratios": paired,
                # The workload's own CPU (user+sys, incl. the eBPF programs run in its
                # syscalls): less sensitive than wall time to a busy shared host, and
                # blind to the agent competing for the CPUs.
                "baseline_workload_cpu_median_s": base_cpu,
                "agent_workload_cpu_median_s": cpu_med,
                "workload_cpu_ratio": cpu_med / base_cpu if base_cpu else None,
                "baseline_us_per_op": base_med / n * 1e6 if base_med else None,
                "added_us_per_op": (med - base_med) / n * 1e6 if base_med else None,
            }
            for c in COUNTERS:
                s[c + "_median"] = median([r.get(c, 0) for r in rs])
            if not any("agent_write_syscalls" in r for r in rs):
                s["agent_write_syscalls_median"] = None  # runs of a bench before it was counted
            s["drops_total"] = sum(
                r.get("kernel_ringbuf_drops", 0) + r.get("userspace_drops_events", 0)
                + r.get("userspace_drops_findings", 0) for r in rs
            )
            lat = {}
            for r in rs:
                for le, c in r.get("latency_buckets", {}).items():
                    lat[le] = lat.get(le, 0) + c
            s["latency_p50_s"] = quantile(0.5, lat)
            s["latency_p99_s"] = quantile(0.99, lat)
            s["throughput_ratio"] = base_med / med if med else None
            ev = sum(r.get("kernel_events", 0) for r in rs)
            cpu = sum(r["agent_cpu_s"] for r in rs)
            # Below ~1000 events a per-event figure is mostly the agent's idle timers.
            s["agent_cpu_s_per_1m_kernel_events"] = cpu / ev * 1e6 if ev >= 1000 * len(rs) else None
            fi = sum(r.get("findings", 0) for r in rs)
            s["agent_cpu_s_per_1m_findings"] = cpu / fi * 1e6 if fi >= 1000 * len(rs) else None
            # What copying the agent's stdout to a file costs its reader (containerd's shim in a pod).
            copier = [r["stdout_reader_cpu_s"] for r in rs if "stdout_reader_cpu_s" in r]
            s["stdout_reader_cpu_s_per_1m_findings"] = (
                sum(copier) / fi * 1e6 if copier and len(copier) == len(rs) and fi >= 1000 * len(rs) else None
            )
            s["agent_vmhwm_kb_max"] = max(r["agent_vmhwm_kb"] for r in rs)
            if mode == "floor":
                woke = sum(r.get("floor_wakeups", 0) for r in rs)
                wrote = sum(r.get("floor_write_cpu_s", 0) for r in rs)
                nbytes = sum(r.get("floor_bytes", 0) for r in rs)
                # The wakeup alone: its CPU less what its writes took.
                s["floor_us_per_wakeup"] = (cpu - wrote) / woke * 1e6 if woke else None
                s["floor_write_ns_per_byte"] = wrote / nbytes * 1e9 if nbytes else None
            out.append(s)
    wake_floor(out, wake_ms)
    above_idle(out, runs)
    return out


def above_idle(summary, runs):
    """The agent's CPU per event less what it spends with no event at all: its
    timers (the drain backstop, the runtime's /proc scan, metrics) run whether
    events come or not. The idle rate is the agent's CPU per second in the runs
    of this bench that sent it no kernel event (default flags on a workload
    the kernel filters, e.g. container_exec_true), over the same rounds; each
    run with events is charged that rate for its length."""
    idle = [r for r in runs if r.get("mode") in ("agent", "exec_only") and "kernel_events" in r
            and r.get("kernel_events", 0) == 0 and not r.get("findings")]
    secs = sum(r["seconds"] for r in idle)
    if len(idle) < 2 or secs <= 0:
        return
    rate = sum(r["agent_cpu_s"] for r in idle) / secs
    for s in summary:
        s["agent_idle_cpu_ms_per_s"] = rate * 1e3
        rs = [r for r in runs if r.get("workload") == s["workload"] and r.get("mode") == s["mode"]]
        busy = sum(r["agent_cpu_s"] - rate * r["seconds"] for r in rs if "agent_cpu_s" in r)
        if s.get("agent_cpu_s_per_1m_kernel_events") is not None:
            ev = sum(r.get("kernel_events", 0) for r in rs)
            s["agent_cpu_s_per_1m_kernel_events_above_idle"] = max(busy, 0) / ev * 1e6
        if s.get("agent_cpu_s_per_1m_findings") is not None:
            fi = sum(r.get("findings", 0) for r in rs)
            s["agent_cpu_s_per_1m_findings_above_idle"] = max(busy, 0) / fi * 1e6


def wake_floor(summary, wake_ms=None):
    """The floor under the agent's CPU per finding at its look cadence, from what
    a process that does nothing else cost beside the same storm (mode floor,
    bench/wakefloor): the agent's own wakeups (driftwatch_reader_wakeups_total)
    times a bare timer wakeup, plus the bytes the agent wrote to its stdout pipe
    times a byte written the same way (one write a wakeup, to a pipe copied by
    cat). With wake_ms, also that floor at the longest cadence the latency goal
    allows: the wakeups scale with the interval, the bytes do not."""
    floor = {s["workload"]: s for s in summary if s["mode"] == "floor"}
    # Runs whose events are judged but make no finding (e.g. --emit-all-execs of image
    # binaries): the wakeups are their floor too, at the one floor run's cost (the shell
    # storm's: same host, same rounds; no lines written).
    any_floor = next((f for f in floor.values() if f.get("floor_us_per_wakeup") is not None), None)
    for s in summary:
        if s["mode"] == "floor" or any_floor is None or s.get("findings_median") or not s.get("reader_wakeups_median"):
            continue
        if s.get("agent_cpu_s_per_1m_kernel_events") is None:
            continue
        events = s["events_decoded_median"] or s["kernel_events_median"]
        if events:
            s["wake_floor_s_per_1m_kernel_events"] = any_floor["floor_us_per_wakeup"] * s["reader_wakeups_median"] / events
            s["events_per_wakeup"] = events / s["reader_wakeups_median"]
    for s in summary:
        f = floor.get(s["workload"])
        if s["mode"] == "floor" or f is None or f.get("floor_us_per_wakeup") is None or not s.get("findings_median"):
            continue
        us = f["floor_us_per_wakeup"]
        wakeups, findings = s["reader_wakeups_median"], s["findings_median"]
        s["floor_us_per_wakeup"] = us
        s["wake_floor_s_per_1m_findings"] = us * wakeups / findings if wakeups else None
        s["findings_per_wakeup"] = findings / wakeups if wakeups else None
        writes = s.get("agent_write_syscalls_median")
        s["writes_per_wakeup"] = writes / wakeups if wakeups and writes is not None else None
        per_byte, nbytes = f.get("floor_write_ns_per_byte"), s.get("findings_bytes_median")
        if per_byte is None or not nbytes or s["wake_floor_s_per_1m_findings"] is None:
            continue
        s["floor_write_ns_per_byte"] = per_byte
        s["bytes_per_finding"] = nbytes / findings
        s["output_floor_s_per_1m_findings"] = per_byte * nbytes / findings / 1e3
        s["floor_s_per_1m_findings"] = s["wake_floor_s_per_1m_findings"] + s["output_floor_s_per_1m_findings"]
        if wake_ms:
            s["floor_s_per_1m_findings_at_latency_goal"] = (
                s["wake_floor_s_per_1m_findings"] * min(1.0, wake_ms / LATENCY_GOAL_MS)
                + s["output_floor_s_per_1m_findings"]
            )


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(summary):
    head = (
        f"{'workload':<20} {'mode':<8} {'n':>8} {'base s':>8} {'agent s':>8} {'ratio':>6} {'per-round':>13} {'cpu ratio':>9} "
        f"{'+us/op':>7} {'k.events':>9} {'drops':>5} {'findings':>8} {'cpu s':>6} {'cpu s/1M ev':>11} {'cpu s/1M f':>10}"
    )
    lines = [head, "-" * len(head)]
    for s in summary:
        pr = s["per_round_ratios"]
        rng = f"{min(pr):.3f}-{max(pr):.3f}" if pr else "-"
        lines.append(
            f"{s['workload']:<20} {s['mode']:<8} {s['n']:>8} {fmt(s['baseline_median_s'], '.3f'):>8} "
            f"{fmt(s['agent_median_s'], '.3f'):>8} {fmt(s['overhead_ratio'], '.3f'):>6} {rng:>13} {fmt(s['workload_cpu_ratio'], '.3f'):>9} "
            f"{fmt(s['added_us_per_op'], '.2f'):>7} {fmt(s['kernel_events_median'], '.0f'):>9} "
            f"{s['drops_total']:>5} {fmt(s['findings_median'], '.0f'):>8} {fmt(s['agent_cpu_s_median'], '.3f'):>6} "
            f"{fmt(s['agent_cpu_s_per_1m_kernel_events'], '.1f'):>11} {fmt(s.get('agent_cpu_s_per_1m_findings'), '.1f'):>10}"
        )
    return "\n".join(lines)


def goals_table(summary):
    """One row per workload: throughput ratio (baseline/with) of driftwatch and
    of the bpftrace peer, both measured in the same interleaved rounds."""
    by = {(s["workload"], s["mode"]): s for s in summary}
    has_cmp = any(s["mode"] == "compare" for s in summary)
    head = f"{'workload':<20} {'driftwatch':>10} {'per-round':>13} {'peer':>6} {'per-round':>13} {'goal':>5} {'met':>4} {'p50 ms':>7} {'p99 ms':>7}"
    if has_cmp:
        head += f" {'compare':>7}"
    lines = [head, "-" * len(head)]
    for w in dict.fromkeys(s["workload"] for s in summary):
        a, p = by.get((w, "agent")), by.get((w, "peer"))
        if not a:
            continue
        def rng(s):
            pr = [1 / x for x in s["per_round_ratios"]] if s else []
            return f"{min(pr):.3f}-{max(pr):.3f}" if pr else "-"
        goal = GOALS.get(w)
        tr = a["throughput_ratio"]
        met = "-" if goal is None or tr is None else ("yes" if tr >= goal else "no")
        p50 = a["latency_p50_s"] * 1e3 if a["latency_p50_s"] is not None else None
        p99 = a["latency_p99_s"] * 1e3 if a["latency_p99_s"] is not None else None
        lines.append(
            f"{w:<20} {fmt(tr, '.3f'):>10} {rng(a):>13} {fmt(p and p['throughput_ratio'], '.3f'):>6} {rng(p):>13} "
            f"{fmt(goal, '.2f'):>5} {met:>4} {fmt(p50, '.1f'):>7} {fmt(p99, '.1f'):>7}"
            + (f" {fmt(by[(w, 'compare')]['throughput_ratio'] if (w, 'compare') in by else None, '.3f'):>7}" if has_cmp else "")
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", default="0")
    ap.add_argument("--agent-version", default="unknown")
    ap.add_argument("--wake-ms", type=int, default=None, help="the agent's sensor.wake_interval_ms")
    a = ap.parse_args()
    with open(a.runs) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    summary = summarise(runs, a.wake_ms)
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "quick": a.quick == "1",
        "agent_version": a.agent_version,
        "wake_interval_ms": a.wake_ms,
        "workloads": WORKLOAD_DOC,
    }
    with open(a.out, "w") as f:
        json.dump({"meta": meta, "summary": summary, "runs": runs}, f, indent=2)
        f.write("\n")

    print(f"driftwatch overhead ({meta['agent_version']}, kernel {meta['kernel']}, {meta['cpus']} cpus"
          f"{', quick' if meta['quick'] else ''}): medians of {summary[0]['runs'] if summary else 0} rounds")
    print(table(summary))
    print(
        "\nratio = median(agent)/median(baseline) wall time; per-round = min-max of same-round agent/baseline;"
        "\ncpu ratio = same for the workload's own CPU time (user+sys, incl. eBPF programs in its context);"
        "\n+us/op = added wall time per iteration; k.events = kernel ring-buffer records per run (median);"
        "\ndrops = kernel ringbuf + userspace queue drops summed over runs; cpu s = agent CPU per run"
        "\n(ns, summed over its threads' schedstat; median, incl. draining after the workload);"
        "\ncpu s/1M ev = agent CPU per 1M kernel events; cpu s/1M f = per 1M findings (runs with findings)."
    )
    print("\nthroughput with / without (issue 15's goals; peer = bench/peer.bt under bpftrace, same rounds;"
          "\np50/p99 = kernel event to finding, driftwatch_detection_latency_seconds, runs with findings only;"
          "\ncompare = --compare-bin's binary, same rounds):")
    print(goals_table(summary))
    floors = [s for s in summary if s.get("wake_floor_s_per_1m_findings") is not None]
    if floors:
        print("\nfloor (mode floor: bench/wakefloor wakes on a timer at the agent's wake interval beside the"
              "\nsame storm, no agent, and writes to a pipe copied by cat in one write a wakeup; its CPU per"
              "\nwakeup times the agent's reader wakeups, plus its CPU per byte written times the bytes the"
              "\nagent wrote = what waking up and writing the same lines alone cost per 1M findings):")
        for s in floors:
            print(f"{s['workload']:<20} {s['mode']:<8} {s['floor_us_per_wakeup']:6.1f} us a wakeup, {s['findings_per_wakeup']:5.1f} findings "
                  f"and {fmt(s.get('writes_per_wakeup'), '.2f')} write syscalls a wakeup: "
                  f"wake floor {s['wake_floor_s_per_1m_findings']:5.2f} s per 1M findings of the agent's "
                  f"{fmt(s.get('agent_cpu_s_per_1m_findings'), '.2f')}")
            if s.get("floor_s_per_1m_findings") is not None:
                line = (f"{'':<29} {s['floor_write_ns_per_byte']:.2f} ns a byte written, {s['bytes_per_finding']:.0f} bytes a finding: "
                        f"output {s['output_floor_s_per_1m_findings']:.2f} s; floor {s['floor_s_per_1m_findings']:.2f} s per 1M findings")
                if s.get("floor_s_per_1m_findings_at_latency_goal") is not None:
                    line += f" ({s['floor_s_per_1m_findings_at_latency_goal']:.2f} s at one look every {LATENCY_GOAL_MS} ms)"
                print(line)
            if s.get("agent_cpu_s_per_1m_findings_above_idle") is not None:
                print(f"{'':<29} the agent above its idle CPU ({s['agent_idle_cpu_ms_per_s']:.2f} ms a second with no event): "
                      f"{s['agent_cpu_s_per_1m_findings_above_idle']:.2f} s per 1M findings")
    quiet = [s for s in summary if s.get("wake_floor_s_per_1m_kernel_events") is not None]
    if quiet:
        print("\nevents judged without a finding: the wakeups at the floor run's cost are their floor:")
        for s in quiet:
            print(f"{s['workload']:<20} {s['mode']:<8} {s['events_per_wakeup']:5.1f} events a wakeup: "
                  f"wake floor {s['wake_floor_s_per_1m_kernel_events']:5.2f} s per 1M events of the agent's "
                  f"{fmt(s.get('agent_cpu_s_per_1m_kernel_events'), '.2f')}")
            if s.get("agent_cpu_s_per_1m_kernel_events_above_idle") is not None:
                print(f"{'':<29} above its idle CPU ({s['agent_idle_cpu_ms_per_s']:.2f} ms a second with no event, "
                      f"same rounds): {s['agent_cpu_s_per_1m_kernel_events_above_idle']:.2f} s per 1M events")
    copiers = [s for s in summary if s.get("stdout_reader_cpu_s_per_1m_findings") is not None]
    if copiers:
        print("\nthe agent's stdout is a pipe; a copier (cat, as containerd's shim for a pod) writes it to a file:")
        for s in copiers:
            print(f"{s['workload']:<20} {s['mode']:<8} copier {s['stdout_reader_cpu_s_per_1m_findings']:5.2f} s per 1M findings "
                  f"(agent {fmt(s.get('agent_cpu_s_per_1m_findings'), '.2f')})")
    print(f"JSON: {a.out}")
    bad = [s for s in summary if s["mode"] == "agent" and s["drops_total"]]
    for s in bad:
        print(f"FAIL: {s['workload']}: {s['drops_total']} drops at nominal load", file=sys.stderr)
    lost = [s for s in summary if s["mode"] == "agent" and s["findings_median"] != s["findings_lines_median"]]
    for s in lost:
        print(f"WARNING: {s['workload']}: findings metric {s['findings_median']} != stdout lines "
              f"{s['findings_lines_median']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
