#!/usr/bin/env bash
# Instructions per event of each userspace pipeline stage (benches/pipeline.rs),
# counted by valgrind's callgrind. Unlike the bench's nanoseconds they are the
# same for the same binary whatever else the host is doing, so a change to the
# per-event path can be compared on a shared, noisy machine.
#
#   bench/instructions.sh [stage ...]     (default: every stage)
#
# Each stage runs twice under callgrind, with N1 and N2 events per sample; the
# difference of the two totals, divided by the difference in events, leaves out
# start-up (configuration, regex compilation) and counts only the loop. Each
# stage processes 8.1 N events (a warm-up of N/10, one pass counting
# allocations, seven timed samples), per time it appears in the bench's list.
# Counts user-space instructions only (no syscalls: the bench writes to
# io::sink), and not cache misses: a cold path costs more time than its count.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "instructions.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
N1=${DW_INSN_N1:-1000}
N2=${DW_INSN_N2:-5000}
stages=("$@")
[[ ${#stages[@]} -gt 0 ]] || stages=(decode classify_no_finding shell_finding_json shell_finding_pod shell_finding_100_approvals json_line_only)

# shellcheck source=bench/pipeline-bin.sh
. bench/pipeline-bin.sh
bin=$(pipeline_bench_bin)
[[ -x $bin ]] || { echo "instructions.sh: bench binary not built" >&2; exit 1; }

# Prints "<instructions> <times the stage ran>" for stage $1 at N=$2.
count() {
  local out
  out=$(DW_BENCH_ONLY=$1 DW_BENCH_N=$2 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" --bench 2>&1)
  echo "$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' <<<"$out") $(grep -c "^$1 " <<<"$out")"
}

printf '%-28s %14s\n' stage instructions/event
for s in "${stages[@]}"; do
  read -r i1 k1 < <(count "$s" "$N1")
  read -r i2 k2 < <(count "$s" "$N2")
  if [[ $k1 -eq 0 || $k1 -ne $k2 ]]; then
    echo "instructions.sh: stage '$s' did not run" >&2
    exit 1
  fi
  awk -v s="$s" -v a="$i1" -v b="$i2" -v k="$k1" -v n1="$N1" -v n2="$N2" \
    'BEGIN { printf "%-28s %14.0f\n", s, (b - a) / (8.1 * (n2 - n1) * k) }'
done
