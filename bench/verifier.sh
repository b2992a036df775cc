#!/usr/bin/env bash
# What the kernel's verifier costs for each sensor program, and the kernel memory
# loading them takes (the kernel charges it to the loader's memory cgroup: in a
# pod, to the pod, against its limit). Run as root:
#
#   bench/verifier.sh [--budget N]
#
# Compiles ebpf/driftwatch.bpf.c as build.rs does, loads every program with
# `bpftool prog loadall` inside a fresh memory cgroup, and prints each program's
# verified instructions (`verified_insns` of its fd in /proc/self/fdinfo, Linux
# 5.16+) and the cgroup's peak (cgroup v1: memory.kmem.max_usage_in_bytes,
# kernel memory only; v2: memory.peak, everything). The programs load with the
# object's default globals, not the agent's overrides: counts can differ from
# the running agent's by a few instructions (tests/e2e_exec.rs reads the
# agent's own). Exits 1 if a program passes the budget (default 150000, the
# test's). Needs clang-19 (or $CLANG), bpftool and python3.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
budget=150000
while [[ $# -gt 0 ]]; do
  case $1 in
    --budget) budget=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "verifier.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ $(id -u) -eq 0 ]] || { echo "verifier.sh: run as root" >&2; exit 2; }
command -v bpftool >/dev/null || apt-get install -y -q bpftool >&2
clang=${CLANG:-$(command -v clang-19 || command -v clang)}
work=$(mktemp -d /tmp/driftwatch-verifier.XXXXXX)
pin=/sys/fs/bpf/driftwatch-verifier-$$
cg=
cleanup() {
  rm -rf "$pin" "$work"
  [[ -n $cg ]] && rmdir "$cg" 2>/dev/null
  return 0
}
trap cleanup EXIT

"$clang" -g -O2 -target bpf -Wall -Werror -D__TARGET_ARCH_x86 -I/usr/include/x86_64-linux-gnu \
  -c "$repo/ebpf/driftwatch.bpf.c" -o "$work/driftwatch.bpf.o"

# A fresh memory cgroup for the loader, v1 (kernel memory) or v2.
if [[ -d /sys/fs/cgroup/memory ]]; then
  cg=/sys/fs/cgroup/memory/driftwatch-verifier-$$
  mkdir "$cg"
  peak_file=$cg/memory.kmem.max_usage_in_bytes
  what="kernel memory (cgroup v1 memory.kmem.max_usage_in_bytes)"
else
  cg=/sys/fs/cgroup/driftwatch-verifier-$$
  mkdir "$cg"
  peak_file=$cg/memory.peak
  what="memory (cgroup v2 memory.peak)"
fi
t0=$(date +%s%N)
sh -c "echo \$\$ > '$cg/cgroup.procs'; exec bpftool prog loadall '$work/driftwatch.bpf.o' '$pin'"
t1=$(date +%s%N)
peak=$(cat "$peak_file")

# verified_insns of each pinned program (BPF_OBJ_GET, then its fdinfo).
rc=0
python3 - "$budget" "$pin"/* <<'PY' || rc=$?
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
budget, worst = int(sys.argv[1]), 0
for path in sys.argv[2:]:
    name = ctypes.create_string_buffer(path.encode())
    attr = ctypes.create_string_buffer(struct.pack("QII", ctypes.addressof(name), 0, 0) + bytes(104))
    fd = libc.syscall(321, 7, attr, len(attr.raw))  # bpf(BPF_OBJ_GET)
    if fd < 0:
        sys.exit(f"{path}: BPF_OBJ_GET failed (errno {ctypes.get_errno()})")
    info = open(f"/proc/self/fdinfo/{fd}").read()
    os.close(fd)
    n = next((int(l.split()[1]) for l in info.splitlines() if l.startswith("verified_insns")), None)
    if n is None:
        sys.exit("this kernel does not report verified_insns (Linux 5.16+)")
    worst = max(worst, n)
    print(f"{os.path.basename(path):<20} {n:>9} verified instructions")
print(f"{'most':<20} {worst:>9} (budget {budget})")
sys.exit(1 if worst > budget else 0)
PY
echo "loading peak: $((peak / 1048576)) MB of $what, in $(((t1 - t0) / 1000000)) ms"
exit $rc
