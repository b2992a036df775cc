#!/usr/bin/env bash
# Stop the private containerd used by the privileged tests (tests/support/mod.rs):
# deletes its tasks and containers, stops the daemon and its shims. Never touches
# the system containerd. With --purge also removes its root/state directories.
set -uo pipefail

ROOT=/var/lib/driftwatch-test
RUN=/run/driftwatch-test
CONFIG=$ROOT/config.toml
SOCK=$RUN/containerd.sock
purge=0
[ "${1:-}" = "--purge" ] && purge=1

ctr_() { ctr --address "$SOCK" --timeout 60s "$@"; }

# pids whose NUL-separated cmdline contains the exact argument pair $1 $2
pids_with_args() {
  local p
  for p in /proc/[0-9]*; do
    tr '\0' '\n' 2>/dev/null < "$p/cmdline" | grep -qxF -- "$2" || continue
    tr '\0' '\n' 2>/dev/null < "$p/cmdline" | grep -A1 -xF -- "$1" | grep -qxF -- "$2" \
      && echo "${p#/proc/}"
  done
}

if [ -S "$SOCK" ] && ctr_ --connect-timeout 3s version >/dev/null 2>&1; then
  for ns in $(ctr_ namespaces ls -q); do
    for id in $( (ctr_ -n "$ns" tasks ls -q; ctr_ -n "$ns" containers ls -q) | sort -u); do
      ctr_ -n "$ns" tasks kill --signal SIGKILL "$id" >/dev/null 2>&1
      ctr_ -n "$ns" tasks delete --force "$id" >/dev/null 2>&1
      ctr_ -n "$ns" containers delete "$id" >/dev/null 2>&1
    done
  done
fi

daemons=$(pids_with_args --config "$CONFIG")
if [ -n "$daemons" ]; then
  kill -TERM $daemons 2>/dev/null
  for _ in $(seq 100); do
    alive=""
    for p in $daemons; do [ -d "/proc/$p" ] && alive="$alive $p"; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  [ -n "$alive" ] && kill -KILL $alive 2>/dev/null
fi
shims=$(pids_with_args -address "$SOCK")
[ -n "$shims" ] && kill -KILL $shims 2>/dev/null
rm -f "$SOCK" "$SOCK.ttrpc"

if [ "$purge" = 1 ]; then
  # unmount anything left below our dirs (deepest first), then remove them
  awk -v a="$ROOT/" -v b="$RUN/" 'index($2,a)==1 || index($2,b)==1 {print $2}' /proc/mounts \
    | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$ROOT" "$RUN"
fi
echo "stopped private test containerd${daemons:+ (pid $daemons)}"
