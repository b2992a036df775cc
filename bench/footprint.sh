#!/usr/bin/env bash
# Code footprint of a look: the distinct 64-byte lines of machine code the
# userspace pipeline (benches/pipeline.rs) executes for every batch of events,
# counted by valgrind's callgrind. In a storm the events thread wakes every
# sensor.wake_interval_ms to a CPU whose caches the workload has refilled, so
# each look fetches this code again: the part of a finding's cost that
# instruction counts (bench/instructions.sh) do not see. Same binary, same
# number, whatever else the host is doing.
#
#   bench/footprint.sh [stage] [top]   (default: shell_finding_pod, 30 functions)
#
# Batches of DW_BENCH_BATCH events (default 16, a storm look's size). A line
# counts if it ran at least once per batch on average over the stage's
# 8.1 x N events, so start-up and first-time paths (a pod's metadata parsed,
# regex caches filled) drop out and what is left is the path every look runs.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "footprint.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
stage=${1:-shell_finding_pod}
top=${2:-30}
batch=${DW_BENCH_BATCH:-16}
n=${DW_FOOTPRINT_N:-2000}

# shellcheck source=bench/pipeline-bin.sh
. bench/pipeline-bin.sh
bin=$(pipeline_bench_bin)
[[ -x $bin ]] || { echo "footprint.sh: bench binary not built" >&2; exit 1; }

out=$(mktemp /tmp/dw-footprint.XXXXXX)
trap 'rm -f "$out"' EXIT
# Absolute instruction addresses (--compress-pos=no), only inside the bench's
# batch loop (pipeline::run: decode, judge, emit, the JSON line).
DW_BENCH_BATCH=$batch DW_BENCH_ONLY=$stage DW_BENCH_N=$n valgrind --tool=callgrind --dump-instr=yes \
  --compress-pos=no --compress-strings=no --toggle-collect='pipeline::run' \
  --callgrind-out-file="$out" "$bin" --bench >/dev/null 2>&1
grep -q '^fn=' "$out" || { echo "footprint.sh: stage '$stage' did not run" >&2; exit 1; }

python3 - "$out" "$stage" "$n" "$batch" "$top" <<'EOF'
import collections, sys
path, stage, n, batch, top = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
# measure() runs the stage over n/10 + n + 7n events.
batches = sum(-(-k // batch) for k in [n // 10, n] + [n] * 7)
ob = fn = None
count, owner = collections.Counter(), {}
call_site = False
for line in open(path):
    if line.startswith("ob="):
        ob = line[3:].strip()
    elif line.startswith("fn="):
        fn = line[3:].strip()
    elif line.startswith("calls="):
        call_site = True  # the next cost line is the callee's inclusive cost
    elif line.startswith("0x"):
        f = line.split()
        addr = int(f[0], 16)
        if not call_site:
            count[(ob, addr)] += int(f[2]) if len(f) > 2 else 0
            owner[(ob, addr)] = fn
        call_site = False
lines, by_fn = collections.defaultdict(set), collections.defaultdict(set)
for (o, a), c in count.items():
    if c >= batches:
        lines[o].add(a // 64)
        by_fn[owner[(o, a)]].add((o, a // 64))
total = sum(len(v) for v in lines.values())
print(f"{stage}: {total} code lines ({total * 64 / 1024:.1f} KiB) run every look of {batch} events ({batches} looks)")
for o, v in sorted(lines.items(), key=lambda x: -len(x[1])):
    print(f"  {len(v):6d}  {o}")
print(f"functions with the most lines:")
for f, v in sorted(by_fn.items(), key=lambda x: -len(x[1]))[:top]:
    print(f"  {len(v):6d}  {f[:150]}")
EOF
