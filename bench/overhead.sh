#!/usr/bin/env bash
# Overhead benchmark for the driftwatch agent. Run as root on a test node:
#
#   bench/overhead.sh [--quick] [--out FILE] [--rounds N] [--port PORT] [--bin PATH] [--keep]
#                     [--only WORKLOAD[,WORKLOAD...]] [--compare-bin PATH]
#
# Workloads (fixed amount of work; the workload itself measures its wall time and its
# own CPU time, user+sys of it and its children):
#   container_exec_true  fork+exec /bin/true (image binary) in a container: filtered in the kernel
#   container_exec_sh    fork+exec /bin/sh -c : in a container: every exec is a shell finding
#   container_exec_dyn   fork+exec the image's dynamically linked hello-dyn in a container:
#                        ld.so maps libc with mmap(PROT_EXEC) (the mapping sensor judges it, image: filtered)
#   host_open_read       open+read+close a small file on the host (control: no hooks there)
#   host_exec_true       fork+exec /bin/true on the host: filtered in the kernel as host
#   host_getppid         getppid() in a loop on the host: a syscall no sensor needs (the tax
#                        every syscall of the node pays for the syscall hooks)
#   container_write_tmp  open(O_CREAT|O_TRUNC)+write+close cycling names in a container's /tmp
#                        (scratch: rules.file.ignore_prefixes)
#   container_write      the same in the container's /root (an image directory: file drift)
# Modes: baseline (no agent), agent (default flags), exec_only (network and file sensors off:
# no syscall hooks), emit_all (--emit-all-execs, container
# storms only: host execs are dropped before that switch is consulted), peer (no agent;
# bench/peer.bt under Debian's bpftrace instead: an exec + write-open watcher, the peer
# the agent is compared with in the same run; its CPU and RSS are reported as the agent's),
# compare (with --compare-bin: another driftwatch binary, e.g. the previous revision's,
# default flags, in the same rounds: an A/B of a change; compare_emit_all: the same with
# --emit-all-execs, on the workloads that run emit_all), floor (shell storm only, no agent:
# bench/wakefloor sleeps on a timer every sensor.wake_interval_ms beside the storm and each
# time it wakes writes 32 KiB, about one storm look of findings, to a pipe copied by cat as
# the agent's stdout is; its CPU per wakeup times the agent's wakeups, plus its CPU per byte
# written times the bytes the agent wrote, is what waking up and writing the same lines
# alone cost: the floor under the agent's CPU per finding at that cadence).
# Each round runs every mode of a workload back to back, the mode order rotating from
# round to round, so slow drifts of a noisy host hit all modes alike. Ratios are
# agent/baseline medians; per-round ratios are shown as a range. Agent runs also record
# the agent's CPU (ns from /proc/<pid>/task/*/schedstat, until it has drained, less what the harness's
# own /metrics scrapes while waiting for the drain cost it: agent_scrape_cpu_s), kernel events, drops
# (ring buffer + userspace queues) and findings (metric and lines on its stdout). The agent's
# stdout is a pipe that a separate process (cat) copies to a file, as containerd's shim copies a
# pod's stdout to its log file: the agent pays for writing into a pipe, the copier for the log
# file (its CPU is recorded too, as stdout_reader_cpu_s).
#
# DW_BENCH_PERF_STAT=DIR: also count the agent's software events per thread over each agent-mode
# run's workload window (`perf stat --per-thread`: CPU, page faults, context switches, migrations;
# DIR/<workload>-<mode>-<round>.txt): what a look costs besides its instructions.
#
# DW_BENCH_PERF=DIR: also record the agent with `perf record --call-graph dwarf` over each agent-mode
# run's workload window (DIR/<workload>-<mode>-<round>.data), to see where its CPU goes.
#
# Prints a table on stdout and writes JSON (summary + raw runs) to --out
# (default /tmp/driftwatch-bench.json). Exits 1 if the agent dropped anything at
# nominal load (default flags).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")

SOCK=/run/driftwatch-test/containerd.sock
NS=k8s.io
IMAGE=${DRIFTWATCH_BENCH_IMAGE:-localhost/driftwatch-test:1} # the test image (tests/image/build.sh)

quick=0
out=/tmp/driftwatch-bench.json
rounds=
port=18789
bin=$REPO/target/release/driftwatch
keep=0
only=
compare_bin=
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) quick=1 ;;
    --out) out=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --port) port=$2; shift ;;
    --bin) bin=$2; shift ;;
    --keep) keep=1 ;;
    --only) only=$2; shift ;;
    --compare-bin) compare_bin=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "overhead.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

# Work per run. Full sizes take each run to ~5-15 s on a 2-core VM: long enough that
# agent start-up and scheduler noise are small against it.
if ((quick)); then
  : "${rounds:=2}"; n_cexec=5000; n_open=500000; n_hexec=3000; n_net=20000; n_sys=5000000
else
  : "${rounds:=3}"; n_cexec=20000; n_open=2000000; n_hexec=10000; n_net=100000; n_sys=20000000
fi

log() { echo "[overhead] $*" >&2; }
die() { log "error: $*"; exit 1; }
ctr_() { ctr --address "$SOCK" -n "$NS" --timeout 60s "$@"; }

[[ $(id -u) -eq 0 ]] || die "run as root (loads eBPF, enters container namespaces)"
# The peer runs under Debian's bpftrace, which the test setup does not install.
command -v bpftrace >/dev/null || apt-get install -y -q bpftrace >&2 || die "cannot install bpftrace"
for tool in ctr gcc curl python3 bpftrace; do
  command -v "$tool" >/dev/null || die "$tool not found"
done

work=$(mktemp -d /tmp/driftwatch-bench.XXXXXX)
runs=$work/runs.jsonl
findings=$work/findings.jsonl # agent stdout, as copied from its pipe by $stdout_reader_pid
stdout_fifo=$work/stdout.fifo
mkfifo "$stdout_fifo"
stdout_reader_pid=
agent_log=$work/agent.log
agent_pid=
peer_pid=
cid=
sandbox=
pod_bin=

cleanup() {
  local rc=$?
  set +e
  [[ -n $agent_pid ]] && stop_agent
  [[ -n $peer_pid ]] && stop_peer
  [[ -n $sandbox ]] && "$pod_bin" down "$SOCK" "$sandbox" >&2
  if ((keep)); then log "kept $work"; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. binaries ------------------------------------------------------------------
if [[ ! -x $bin ]]; then
  log "building $bin"
  (cd "$REPO" && cargo build --release) >&2
fi
(cd "$REPO" && cargo build --release --example bench-pod -q) >&2
pod_bin=$REPO/target/release/examples/bench-pod
# Static, so the same binary runs on the host and inside a busybox container.
for prog in execstorm openstorm netstorm getppidstorm wakefloor; do
  gcc -O2 -static -Wall -o "$work/$prog" "$HERE/$prog.c"
done

# --- 2. container -----------------------------------------------------------------
if ! ctr --address "$SOCK" --connect-timeout 3s version >/dev/null 2>&1 \
  || ! ctr_ images ls -q | grep -qxF "$IMAGE"; then
  # The test harness (tests/support/mod.rs) starts the private containerd, imports the
  # test image and leaves both in place for later runs.
  log "private containerd or $IMAGE missing: starting it through the smoke test"
  (cd "$REPO" && DRIFTWATCH_PRIVILEGED_TESTS=1 cargo test --test containerd_smoke) >&2
fi
# A pod made through CRI as a kubelet makes it (bench/pod.rs: namespace, a
# Deployment's pod name and labels), so the agent, pointed at this runtime, puts the
# pod's metadata in every finding as on a node. Its container runs with PATH only, as
# execstorm's children do: any other PATH makes every exec environment drift
# (environment_changed, DW_EXEC_ENV_CHANGED), sent to userspace instead of filtered.
read -r sandbox cid cpid < <("$pod_bin" up "$SOCK" "$IMAGE" "$(cat /proc/sys/kernel/random/uuid)") ||
  die "bench-pod could not start the bench's pod"
[[ -n $cpid ]] || die "bench-pod could not start the bench's pod"
log "pod bench/storm-7d9f8b6c5d-x2k4q: container ${cid:0:12} init pid $cpid"

# cgroup.procs files of every hierarchy pid $1 belongs to (v1, v2 or hybrid).
cgroup_procs_files() {
  local _hier ctrls path mnt
  while IFS=: read -r _hier ctrls path; do
    if [[ -z $ctrls ]]; then
      mnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
    else
      mnt=$(awk -v c="$ctrls" '$3 == "cgroup" {
          n = split(c, want, ","); ok = 1
          for (i = 1; i <= n; i++) if (index("," $4 ",", "," want[i] ",") == 0) ok = 0
          if (ok) { print $2; exit } }' /proc/mounts)
    fi
    if [[ -n $mnt ]]; then echo "$mnt$path/cgroup.procs"; fi
  done <"/proc/$1/cgroup"
}
mapfile -t container_cgroups < <(cgroup_procs_files "$cpid")
((${#container_cgroups[@]})) || die "no cgroups found for container pid $cpid"

# The agent with only its exec/fork/exit tracepoints: no syscall hooks.
exec_only_cfg=$work/exec-only.yaml
printf 'sensor:\n  network: false\n  files: false\n  mappings: false\n' >"$exec_only_cfg"

small=$work/small.txt
head -c 100 /dev/urandom >"$small"

# Runs workload $1 with $2 iterations; prints its wall time and CPU time in seconds.
# Container storms: the subshell joins the container's cgroups (as runc exec does) and
# execstorm then enters its pid+mount namespaces itself. Running execstorm from the
# container's /tmp instead would make it drift, and every child of a drifted process
# reaches userspace (exec_by_drifted_process), so /bin/true would no longer be quiet.
run_workload() {
  local w=$1 n=$2
  case $w in
    container_exec_true|container_exec_sh|container_exec_dyn)
      (
        for f in "${container_cgroups[@]}"; do echo "$BASHPID" >"$f"; done
        if [[ $w == container_exec_true ]]; then
          exec "$work/execstorm" -t "$cpid" "$n" /bin/true
        elif [[ $w == container_exec_dyn ]]; then
          exec "$work/execstorm" -t "$cpid" -q "$n" /usr/bin/hello-dyn
        else
          exec "$work/execstorm" -t "$cpid" "$n" /bin/sh -c :
        fi
      ) ;;
    container_net)
      (
        for f in "${container_cgroups[@]}"; do echo "$BASHPID" >"$f"; done
        exec "$work/netstorm" -t "$cpid" "$n"
      ) ;;
    host_net) "$work/netstorm" "$n" ;;
    container_read)
      (
        for f in "${container_cgroups[@]}"; do echo "$BASHPID" >"$f"; done
        exec "$work/openstorm" -t "$cpid" "$n" /etc/passwd
      ) ;;
    container_write)
      # /root is on the container's overlay rootfs: every name is file drift
      # once (then folded per inode in the kernel).
      (
        for f in "${container_cgroups[@]}"; do echo "$BASHPID" >"$f"; done
        exec "$work/openstorm" -t "$cpid" -w "$n" /root
      ) ;;
    container_write_tmp)
      (
        for f in "${container_cgroups[@]}"; do echo "$BASHPID" >"$f"; done
        exec "$work/openstorm" -t "$cpid" -w "$n" /tmp
      ) ;;
    host_getppid) "$work/getppidstorm" "$n" ;;
    host_open_read) "$work/openstorm" "$n" "$small" ;;
    host_exec_true) "$work/execstorm" "$n" /bin/true ;;
  esac
}

# --- agent ------------------------------------------------------------------------
url=http://127.0.0.1:$port
if curl -s -o /dev/null --max-time 2 "$url/metrics"; then
  die "something already listens on 127.0.0.1:$port (use --port)"
fi

start_agent() { # $@: extra flags; $agent_bin: the binary (default --bin)
  # The shim's part: copy the pipe to the log file until the agent closes it.
  cat "$stdout_fifo" >>"$findings" &
  stdout_reader_pid=$!
  "${agent_bin:-$bin}" run --metrics-addr "127.0.0.1:$port" --runtime-endpoint "unix://$SOCK" "$@" \
    >"$stdout_fifo" 2>>"$agent_log" &
  agent_pid=$!
  local i
  for ((i = 0; i < 300; i++)); do
    if curl -sf -o /dev/null --max-time 1 "$url/readyz"; then
      sleep 0.3 # let start-up work (e.g. scanning existing containers) finish
      return 0
    fi
    kill -0 "$agent_pid" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$agent_log" >&2
  die "agent did not become ready"
}

stop_agent() {
  local i
  kill -TERM "$agent_pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$agent_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$agent_pid" 2>/dev/null || true
  wait "$agent_pid" 2>/dev/null || true
  agent_pid=
  # The pipe's last writer is gone: the copier reads what is left and exits.
  wait "$stdout_reader_pid" 2>/dev/null || true
  stdout_reader_pid=
}

peer_out=$work/peer.out
# The agent's look cadence while findings keep coming (its default config).
wake_ms=$("$bin" default-config | awk '$1 == "wake_interval_ms:" { print $2; exit }')
[[ $wake_ms =~ ^[0-9]+$ && $wake_ms -gt 0 ]] || die "no sensor.wake_interval_ms in $bin default-config"
# What the floor writes each wakeup: about one storm look of the agent's (~14 shell
# findings of ~1.9 KB in one write). The summary scales its cost per byte to the
# bytes the agent wrote.
floor_bytes=32768
start_peer() {
  : >"$peer_out"
  bpftrace "$HERE/peer.bt" >"$peer_out" 2>&1 &
  peer_pid=$!
  local i
  for ((i = 0; i < 300; i++)); do
    if grep -q '^Attaching' "$peer_out"; then
      sleep 0.5 # the probes attach after the banner
      return 0
    fi
    kill -0 "$peer_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$peer_out" >&2
  die "bpftrace did not start"
}

stop_peer() {
  kill -INT "$peer_pid" 2>/dev/null || true
  wait "$peer_pid" 2>/dev/null || true
  peer_pid=
}

# Sum of the samples whose "name{labels}" matches ERE $2 in scrape file $1.
msum() {
  awk -v re="$2" '!/^#/ { v = $NF; $NF = ""; if ($0 ~ re) s += v } END { printf "%d\n", s }' "$1"
}

# Change of the samples matching ERE $3 from scrape $1 to scrape $2.
delta() { echo $(($(msum "$2" "$3") - $(msum "$1" "$3"))); }

# CPU (utime+stime, clock ticks, all threads) of pid $1 (the agent's by default).
# Fields counted after "comm)".
agent_ticks() { sed 's/.*) //' "/proc/${1:-$agent_pid}/stat" | awk '{ print $12 + $13 }'; }

# CPU in nanoseconds of pid $1's live threads (the scheduler's own sum_exec_runtime
# from /proc/<pid>/task/*/schedstat): the ticks above are 10 ms, as much as a whole
# storm costs a quiet agent. A thread that exits between two readings takes its
# share with it, so both are recorded and the ticks bound it from above.
agent_ns() { cat /proc/"${1:-$agent_pid}"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }'; }
# Write syscalls so far of pid $1's live threads (syscw: stdout's writes, a scrape's reply).
agent_writes() { cat /proc/"${1:-$agent_pid}"/task/*/io 2>/dev/null | awk '$1 == "syscw:" { s += $2 } END { printf "%d\n", s }'; }
# Seconds, from nanoseconds $1 (a difference of two agent_ns readings).
ns_to_s() { awk -v t="$1" 'BEGIN { printf "%.6f", t / 1e9 }'; }

# The detection-latency histogram's bucket counts added from scrape $1 to $2, as JSON.
latency_json() {
  local -A a=() b=()
  local le v
  buckets() { sed -n 's/^driftwatch_detection_latency_seconds_bucket{le="\([^"]*\)"} \([0-9.e+]*\)$/\1 \2/p' "$1"; }
  while read -r le v; do a[$le]=$v; done < <(buckets "$1")
  while read -r le v; do b[$le]=$v; done < <(buckets "$2")
  local out="" sep=""
  for le in "${!b[@]}"; do
    out+="$sep\"$le\":$(awk -v x="${b[$le]}" -v y="${a[$le]:-0}" 'BEGIN { printf "%d", x - y }')"
    sep=,
  done
  echo "{$out}"
}

scrape() { curl -sf --max-time 5 "$url/metrics" >"$1"; }

# Waits until the agent has handled everything the kernel submitted (decoded count
# caught up and the counters stop moving), so its CPU for this workload is all counted.
# Each scrape costs the agent CPU (~0.3 ms: encoding every series), which is the harness's,
# not the workload's: it is summed in drain_scrape_ns and taken off the run's agent CPU
# (recorded apart as agent_scrape_cpu_s). Events read at the agent's idle timer (up to 1 s
# later: what only --emit-all-execs sends) take a few scrapes more than events read at once;
# the wait between scrapes doubles (0.1 s up to 0.8 s).
drain_scrape_ns=0
drain() {
  local before=$1 cur=$work/drain.prom prev="" now i pause=0.1 a b
  for ((i = 0; i < 60; i++)); do
    a=$(agent_ns)
    scrape "$cur"
    b=$(agent_ns)
    drain_scrape_ns=$((drain_scrape_ns + b - a))
    now="$(msum "$cur" '^driftwatch_(events|decode_errors|findings|sink_writes|userspace_drops)_total')"
    if (($(msum "$cur" '^driftwatch_(events|decode_errors)_total') - $(msum "$before" '^driftwatch_(events|decode_errors)_total') \
      + $(msum "$cur" '^driftwatch_userspace_drops_total\{queue="events"') - $(msum "$before" '^driftwatch_userspace_drops_total\{queue="events"') \
      >= $(msum "$cur" '^driftwatch_kernel_events_total') - $(msum "$before" '^driftwatch_kernel_events_total') \
      - $(msum "$cur" '^driftwatch_kernel_ringbuf_drops_total') + $(msum "$before" '^driftwatch_kernel_ringbuf_drops_total'))) \
      && [[ $now == "$prev" ]]; then
      return 0
    fi
    prev=$now
    sleep "$pause"
    pause=$(awk -v p="$pause" 'BEGIN { print (p * 2 > 0.8 ? 0.8 : p * 2) }')
  done
  log "warning: agent still busy 45 s after the workload"
}

# One measured run: workload $1, mode $2, round $3, iterations $4. Appends a JSON line.
measure() {
  local w=$1 mode=$2 round=$3 n=$4 res secs wcpu
  if [[ $mode == baseline ]]; then
    res=$(run_workload "$w" "$n") # a plain assignment, so set -e stops on a failed workload
    read -r secs wcpu <<<"$res"
    printf '{"workload":"%s","mode":"%s","round":%d,"n":%d,"seconds":%s,"workload_cpu_s":%s}\n' \
      "$w" "$mode" "$round" "$n" "$secs" "$wcpu" >>"$runs"
    log "round $round $w $mode: ${secs}s (workload cpu ${wcpu}s)"
    return
  fi
  if [[ $mode == peer ]]; then
    start_peer
    local p0 p1 n0 n1 phwm pcpu ptick
    p0=$(agent_ticks "$peer_pid")
    n0=$(agent_ns "$peer_pid")
    res=$(run_workload "$w" "$n")
    read -r secs wcpu <<<"$res"
    sleep 0.2 # let it print what is buffered
    p1=$(agent_ticks "$peer_pid")
    n1=$(agent_ns "$peer_pid")
    phwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$peer_pid/status")
    stop_peer
    ptick=$(awk -v t=$((p1 - p0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { print t / hz }')
    pcpu=$(ns_to_s $((n1 - n0)))
    printf '{"workload":"%s","mode":"%s","round":%d,"n":%d,"seconds":%s,"workload_cpu_s":%s,"agent_cpu_s":%s,"agent_cpu_ticks_s":%s,"agent_vmhwm_kb":%d,"peer_lines":%d}\n' \
      "$w" "$mode" "$round" "$n" "$secs" "$wcpu" "$pcpu" "$ptick" "$phwm" "$(grep -c -e '^exec ' -e '^open ' "$peer_out" || true)" >>"$runs"
    log "round $round $w $mode: ${secs}s (workload cpu ${wcpu}s), bpftrace cpu ${pcpu}s"
    return
  fi
  if [[ $mode == floor ]]; then
    # Its stdout is a pipe copied by cat, as the agent's: each wakeup writes
    # $floor_bytes there, about what a storm look of the agent writes.
    local floor_out=$work/floor.out floor_fifo=$work/floor.fifo fpid cpid n0 n1 w0 w1 fhwm
    local wn0 wn1 b0 b1
    : >"$floor_out"
    rm -f "$floor_fifo" && mkfifo "$floor_fifo"
    cat "$floor_fifo" >"$work/floor.lines" &
    cpid=$!
    "$work/wakefloor" "$wake_ms" "$floor_bytes" >"$floor_fifo" 2>"$floor_out" &
    fpid=$!
    sleep 0.2 # past its exec
    # Its wakeups and CPU over the same window: SIGUSR1 makes it print its counts.
    n0=$(agent_ns "$fpid")
    kill -USR1 "$fpid"
    res=$(run_workload "$w" "$n")
    read -r secs wcpu <<<"$res"
    n1=$(agent_ns "$fpid")
    kill -USR1 "$fpid"
    sleep 0.1
    fhwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$fpid/status")
    kill -TERM "$fpid"
    wait "$fpid" || die "wakefloor failed"
    wait "$cpid" || true
    rm -f "$work/floor.lines"
    { read -r w0 wn0 b0 && read -r w1 wn1 b1; } <"$floor_out" || die "wakefloor did not report"
    printf '{"workload":"%s","mode":"%s","round":%d,"n":%d,"seconds":%s,"workload_cpu_s":%s,"agent_cpu_s":%s,"agent_vmhwm_kb":%d,"floor_wakeups":%d,"floor_write_cpu_s":%s,"floor_bytes":%d}\n' \
      "$w" "$mode" "$round" "$n" "$secs" "$wcpu" "$(ns_to_s $((n1 - n0)))" "$fhwm" \
      $((w1 - w0)) "$(ns_to_s $((wn1 - wn0)))" $((b1 - b0)) >>"$runs"
    log "round $round $w $mode: ${secs}s (workload cpu ${wcpu}s), $((w1 - w0)) timer wakeups every ${wake_ms} ms, $((b1 - b0)) bytes written"
    return
  fi
  local flags=()
  [[ $mode == emit_all || $mode == compare_emit_all ]] && flags=(--emit-all-execs)
  [[ $mode == exec_only ]] && flags=(--config "$exec_only_cfg")
  agent_bin=$bin
  [[ $mode == compare || $mode == compare_emit_all ]] && agent_bin=$compare_bin
  start_agent "${flags[@]}"
  local m0=$work/m0.prom m1=$work/m1.prom t0 t1 n0 n1 f0 f1 fb0 fb1 hwm cpu tick y0 y1 r0 r1
  scrape "$m0"
  f0=$(wc -l <"$findings")
  fb0=$(stat -c %s "$findings")
  t0=$(agent_ticks)
  n0=$(agent_ns)
  y0=$(agent_writes)
  r0=$(agent_ns "$stdout_reader_pid")
  local perf_pid=
  if [[ -n ${DW_BENCH_PERF:-} ]]; then
    mkdir -p "$DW_BENCH_PERF"
    perf record -q --call-graph dwarf,16384 -F 10000 -e cpu-clock -p "$agent_pid" -o "$DW_BENCH_PERF/$w-$mode-$round.data" 2>/dev/null &
    perf_pid=$!
  fi
  local stat_pid=
  if [[ -n ${DW_BENCH_PERF_STAT:-} ]]; then
    mkdir -p "$DW_BENCH_PERF_STAT"
    perf stat --per-thread -e task-clock,page-faults,context-switches,cpu-migrations -p "$agent_pid" \
      -o "$DW_BENCH_PERF_STAT/$w-$mode-$round.txt" 2>/dev/null &
    stat_pid=$!
  fi
  res=$(run_workload "$w" "$n")
  read -r secs wcpu <<<"$res"
  drain_scrape_ns=0
  drain "$m0"
  if [[ -n $stat_pid ]]; then
    kill -INT "$stat_pid" 2>/dev/null || true
    wait "$stat_pid" 2>/dev/null || true
  fi
  if [[ -n $perf_pid ]]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
  fi
  t1=$(agent_ticks)
  n1=$(agent_ns)
  y1=$(agent_writes)
  r1=$(agent_ns "$stdout_reader_pid")
  scrape "$m1"
  hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$agent_pid/status")
  stop_agent
  f1=$(wc -l <"$findings") # after the copier has read the pipe to its end
  fb1=$(stat -c %s "$findings")
  tick=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { print t / hz }')
  cpu=$(ns_to_s $((n1 - n0 - drain_scrape_ns)))
  local -A c=(
    [kernel_events]='^driftwatch_kernel_events_total'
    [kernel_ringbuf_drops]='^driftwatch_kernel_ringbuf_drops_total'
    [userspace_drops_events]='^driftwatch_userspace_drops_total\{queue="events"'
    [userspace_drops_findings]='^driftwatch_userspace_drops_total\{queue="findings_stdout"'
    [events_decoded]='^driftwatch_events_total'
    [findings]='^driftwatch_findings_total'
    [host_filtered]='^driftwatch_kernel_execs_total\{verdict="host_filtered"'
    [container_filtered]='^driftwatch_kernel_execs_total\{verdict="container_filtered"'
    [container_sent]='^driftwatch_kernel_execs_total\{verdict="container_sent"'
    [net_folded]='^driftwatch_kernel_net_folded_total'
    [file_folded]='^driftwatch_kernel_file_folded_total'
    [file_rate_limited]='^driftwatch_kernel_file_rate_limited_total'
    [map_image_filtered]='^driftwatch_kernel_exec_mappings_total\{verdict="image_filtered"'
    [reader_wakeups]='^driftwatch_reader_wakeups_total'
  )
  local json k
  json=$(printf '{"workload":"%s","mode":"%s","round":%d,"n":%d,"seconds":%s,"workload_cpu_s":%s,"agent_cpu_s":%s,"agent_cpu_ticks_s":%s,"agent_vmhwm_kb":%d,"findings_lines":%d,"findings_bytes":%d,"agent_write_syscalls":%d,"stdout_reader_cpu_s":%s,"agent_scrape_cpu_s":%s' \
    "$w" "$mode" "$round" "$n" "$secs" "$wcpu" "$cpu" "$tick" "$hwm" $((f1 - f0)) $((fb1 - fb0)) $((y1 - y0)) "$(ns_to_s $((r1 - r0)))" \
    "$(ns_to_s "$drain_scrape_ns")")
  for k in "${!c[@]}"; do json+=",\"$k\":$(delta "$m0" "$m1" "${c[$k]}")"; done
  json+=",\"latency_buckets\":$(latency_json "$m0" "$m1")"
  echo "$json}" >>"$runs"
  log "round $round $w $mode: ${secs}s (workload cpu ${wcpu}s), agent cpu ${cpu}s, $(delta "$m0" "$m1" "${c[kernel_events]}") kernel events"
}

# --- 3. measure -------------------------------------------------------------------
workloads=(host_getppid host_open_read host_exec_true container_exec_true container_exec_sh container_exec_dyn
  container_net host_net container_read container_write_tmp container_write)
if [[ -n $only ]]; then
  IFS=, read -ra workloads <<<"$only"
fi
declare -A size=([container_exec_true]=$n_cexec [container_exec_sh]=$n_cexec [container_exec_dyn]=$n_cexec
  [container_net]=$n_net
  [host_net]=$n_net [container_read]=$n_open [container_write]=$n_net [container_write_tmp]=$n_net
  [host_open_read]=$n_open [host_exec_true]=$n_hexec [host_getppid]=$n_sys)
declare -A modes=([container_exec_true]="baseline agent peer exec_only emit_all"
  [container_exec_sh]="baseline agent peer emit_all floor" [container_exec_dyn]="baseline agent peer"
  [container_net]="baseline agent" [host_net]="baseline agent"
  [container_read]="baseline agent peer exec_only" [container_write]="baseline agent peer"
  [container_write_tmp]="baseline agent peer" [host_getppid]="baseline agent peer exec_only"
  [host_open_read]="baseline agent peer exec_only" [host_exec_true]="baseline agent peer")
if [[ -n $compare_bin ]]; then
  [[ -x $compare_bin ]] || die "--compare-bin $compare_bin is not an executable"
  for w in "${!modes[@]}"; do
    modes[$w]+=" compare"
    # The other binary with --emit-all-execs too, where this one runs with it.
    [[ " ${modes[$w]} " == *" emit_all "* ]] && modes[$w]+=" compare_emit_all"
  done
fi

log "warm-up (page cache, first-exec costs)"
for w in "${workloads[@]}"; do run_workload "$w" $((size[$w] / 20)) >/dev/null; done

for ((r = 0; r < rounds; r++)); do
  for w in "${workloads[@]}"; do
    read -ra ms <<<"${modes[$w]}"
    for ((k = 0; k < ${#ms[@]}; k++)); do
      measure "$w" "${ms[(k + r) % ${#ms[@]}]}" "$r" "${size[$w]}"
    done
  done
done

# --- 4. report --------------------------------------------------------------------
python3 "$HERE/summarize.py" --runs "$runs" --out "$out" --quick "$quick" \
  --agent-version "$("$bin" --version 2>/dev/null || echo unknown)" --wake-ms "$wake_ms"
