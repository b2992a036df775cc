#!/usr/bin/env bash
# Boot Debian 12's 6.1 cloud kernel under QEMU (TCG) and prove the driftwatch
# sensor passes the 6.1 verifier and reports drift in a simulated container.
#
#   tests/vm/run-6.1.sh            (root, Debian 12; needs the Debian archive)
#
# Steps:
#   1. apt-get install qemu-system-x86, cpio, busybox-static when missing;
#      fetch linux-image-6.1.0-N-cloud-amd64-unsigned (the candidate the
#      linux-image-cloud-amd64 metapackage points at) into $DW_VM_CACHE and
#      unpack it with dpkg -x (reused when already there).
#   2. build an initramfs: static busybox, the driftwatch binary with the
#      libraries ldd lists and the dynamic loader, overlay.ko of the same
#      kernel, and an /init that starts the agent, simulates a container
#      (overlayfs root, new mount + pid namespace, cgroup k8s.io/<64 hex>),
#      drops a binary into the writable layer and runs it, enters with
#      nsenter for `sh -c true`, prints the agent's output and powers off.
#   3. boot it with qemu-system-x86_64 -accel tcg, the console captured to
#      $DW_VM_LOG, and check the log.
#
# Exit status: 0 PASS, 1 FAIL (the reasons and the log path are printed).
#
# Environment:
#   DRIFTWATCH_BIN   agent binary to test (default: cargo build --release,
#                    then target/release/driftwatch)
#   DW_VM_CACHE      cache directory (default /var/cache/driftwatch-vm)
#   DW_VM_LOG        console log (default $DW_VM_CACHE/run-6.1.log)
#   DW_VM_KPKG       kernel package to use instead of the candidate
#   DW_VM_TIMEOUT    seconds before the VM is killed (default 300)
#   DW_VM_RUST_LOG   RUST_LOG for the agent in the VM (default info; "debug"
#                    prints the verifier log when a program is rejected)
#   DW_VM_ACCEL      QEMU accelerator (default tcg; KVM is broken on some hosts)
#   DW_VM_CGROUP_CONTROLLERS  controllers enabled down to the container's
#                    cgroup (default "+memory +pids", as on a node; "" = none)
set -euo pipefail

t_start=$(date +%s)
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

CACHE=${DW_VM_CACHE:-/var/cache/driftwatch-vm}
LOG=${DW_VM_LOG:-$CACHE/run-6.1.log}
TIMEOUT=${DW_VM_TIMEOUT:-300}
RUST_LOG_VM=${DW_VM_RUST_LOG:-info}
CONTROLLERS=${DW_VM_CGROUP_CONTROLLERS-+memory +pids}
ACCEL=${DW_VM_ACCEL:-tcg}
# Container id the simulated container's cgroup carries (k8s.io/<id>, the
# containerd cgroupfs layout).
CID=4d7f1e0c9b2a8d6f3e5c7a9b1d0f2e4c6a8b0d2f4e6c8a0b2d4f6e8a0c2e4f6a

say() { echo "run-6.1: $*" >&2; }
die() { echo "run-6.1: FAIL: $*" >&2; exit 1; }
elapsed() { echo $(($(date +%s) - t_start)); }

[ "$(id -u)" = 0 ] || die "run as root (apt-get, dpkg -x, mknod)"
mkdir -p "$CACHE" "$(dirname "$LOG")"

# ---------------------------------------------------------------- host tools
need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
command -v cpio >/dev/null || need_pkgs+=(cpio)
if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then
  need_pkgs+=(busybox-static) # /bin/busybox must be the static one
fi
command -v gzip >/dev/null || need_pkgs+=(gzip)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${need_pkgs[@]}" >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${need_pkgs[@]}" >/dev/null; } ||
    die "apt-get install ${need_pkgs[*]} failed"
fi
ldd /bin/busybox >/dev/null 2>&1 && die "/bin/busybox is dynamically linked; install busybox-static"

# ------------------------------------------------------------ agent binary
if [ -n "${DRIFTWATCH_BIN:-}" ]; then
  BIN=$DRIFTWATCH_BIN
else
  say "cargo build --release"
  (cd "$repo" && cargo build --release --quiet) || die "cargo build --release failed"
  BIN=$repo/target/release/driftwatch
fi
[ -x "$BIN" ] || die "agent binary $BIN missing"

# ------------------------------------------------------------------ kernel
resolve_kpkg() {
  local img
  img=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    awk '/Depends: linux-image-6\.1\.0-[0-9]+-cloud-amd64$/ {print $2; exit}')
  if [ -z "$img" ]; then
    img=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$' 2>/dev/null |
      awk '{print $1}' | sed 's/-unsigned$//' | sort -V | tail -n1)
  fi
  [ -n "$img" ] && echo "${img}-unsigned"
}
KPKG=${DW_VM_KPKG:-}
if [ -z "$KPKG" ]; then
  KPKG=$(resolve_kpkg || true)
  if [ -z "$KPKG" ]; then
    say "no 6.1 cloud kernel in the apt lists; apt-get update"
    apt-get update >/dev/null || true
    KPKG=$(resolve_kpkg || true)
  fi
fi
KVER=""
[ -n "$KPKG" ] && KVER=$(apt-cache policy "$KPKG" 2>/dev/null | awk '/Candidate:/ {print $2}')
if [ -z "$KPKG" ] || [ -z "$KVER" ] || [ "$KVER" = "(none)" ]; then
  # Offline: reuse the newest kernel already unpacked in the cache.
  kdir=$(ls -d "$CACHE"/linux-image-6.1.0-*-cloud-amd64-unsigned_*/ 2>/dev/null | sort -V | tail -n1 || true)
  [ -n "$kdir" ] || die "cannot resolve a linux-image-6.1.0-*-cloud-amd64-unsigned package (apt-cache) and none cached"
  kdir=${kdir%/}
  say "apt-cache has no candidate; reusing $kdir"
else
  kdir=$CACHE/${KPKG}_${KVER}
  if [ ! -e "$kdir/.complete" ]; then
    say "fetching $KPKG $KVER"
    rm -rf "$kdir" "$CACHE/${KPKG}"_*.deb.partial
    deb=$(ls "$CACHE/${KPKG}_${KVER//:/%3a}"_*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ]; then
      (cd "$CACHE" && apt-get download "$KPKG=$KVER" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) ||
        die "apt-get download $KPKG=$KVER failed"
      deb=$(ls "$CACHE/${KPKG}_"*.deb | head -n1)
    fi
    mkdir -p "$kdir.tmp"
    dpkg -x "$deb" "$kdir.tmp"
    mv "$kdir.tmp" "$kdir"
    touch "$kdir/.complete"
    rm -f "$deb"
  fi
fi
VMLINUZ=$(ls "$kdir"/boot/vmlinuz-* | head -n1)
KCONFIG=$(ls "$kdir"/boot/config-* | head -n1)
KREL=${VMLINUZ##*/vmlinuz-}
grep -q '^CONFIG_DEBUG_INFO_BTF=y' "$KCONFIG" || die "$KREL has no CONFIG_DEBUG_INFO_BTF"
for opt in CONFIG_SERIAL_8250_CONSOLE CONFIG_DEVTMPFS CONFIG_BLK_DEV_INITRD CONFIG_RD_GZIP CONFIG_CGROUPS CONFIG_PID_NS; do
  grep -q "^$opt=y" "$KCONFIG" || die "$KREL: $opt is not built in"
done
OVL_KO=""
if grep -q '^CONFIG_OVERLAY_FS=m' "$KCONFIG"; then
  OVL_KO=$(find "$kdir/lib/modules/$KREL" -name 'overlay.ko*' | head -n1)
  [ -n "$OVL_KO" ] || die "$KREL: overlay is a module but overlay.ko is missing"
  case "$OVL_KO" in *.ko) ;; *) die "$OVL_KO is compressed; busybox insmod needs a plain .ko" ;; esac
elif ! grep -q '^CONFIG_OVERLAY_FS=y' "$KCONFIG"; then
  die "$KREL has no overlayfs"
fi
say "kernel $KREL ($(basename "$kdir")), BTF: yes, overlay: $([ -n "$OVL_KO" ] && echo "module $(basename "$OVL_KO")" || echo "built in")"

# --------------------------------------------------------------- initramfs
work=$(mktemp -d "$CACHE/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,etc,lib/modules,container}
cp /bin/busybox "$root/bin/busybox"
for a in $(/bin/busybox --list); do
  [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
done
mknod -m 600 "$root/dev/console" c 5 1
mknod -m 666 "$root/dev/null" c 1 3

# The agent, stripped (debug info only slows the boot), with its libraries
# at the paths ldd names, and the dynamic loader.
strip -o "$root/bin/driftwatch" "$BIN" 2>/dev/null || cp "$BIN" "$root/bin/driftwatch"
chmod 755 "$root/bin/driftwatch"
if ldd "$BIN" >/dev/null 2>&1; then
  while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done < <(ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
fi
[ -n "$OVL_KO" ] && cp "$OVL_KO" "$root/lib/modules/overlay.ko"

# The container image: busybox and its applets, and the entrypoint script.
img=$root/container-image
mkdir -p "$img"/{bin,tmp,proc,etc,root}
cp /bin/busybox "$img/bin/busybox"
for a in sh ash cp sleep true echo cat ls mount unshare chroot touch; do ln -s busybox "$img/bin/$a"; done
cat >"$img/entry.sh" <<'EOF'
# The container's entrypoint (pid 1 of its pid namespace): not a finding.
mount -t proc proc /proc
echo "DW-CT: entrypoint running, pid $$"
# Drift: a binary written into the writable layer, then executed.
cp /bin/busybox /tmp/busybox
/tmp/busybox echo "DW-CT: dropped /tmp/busybox ran"
touch /tmp/.drift-done
exec sleep 600
EOF
chmod 755 "$img/entry.sh"

cat >"$root/etc/dw-vm.env" <<EOF
CID=$CID
RUST_LOG_VM=$RUST_LOG_VM
CONTROLLERS="$CONTROLLERS"
EOF

cat >"$root/init" <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || echo "DW-VM: tracefs mount failed"
. /etc/dw-vm.env

finish() {
  echo "===== DW-VM AGENT STDOUT BEGIN ====="
  cat /tmp/dw.out 2>/dev/null
  echo "===== DW-VM AGENT STDOUT END ====="
  echo "===== DW-VM AGENT STDERR BEGIN ====="
  cat /tmp/dw.err 2>/dev/null
  echo "===== DW-VM AGENT STDERR END ====="
  if [ -s /tmp/ct.log ]; then
    echo "===== DW-VM CONTAINER OUTPUT BEGIN ====="
    cat /tmp/ct.log
    echo "===== DW-VM CONTAINER OUTPUT END ====="
  fi
  if [ -s /tmp/metrics ]; then
    echo "===== DW-VM METRICS BEGIN ====="
    grep -E '^driftwatch_(findings_total|kernel_execs_total|bpf_programs_attached|enrich_failures_total|decode_errors_total|execs_not_findings_total|kernel_ringbuf_drops_total|userspace_drops_total)' /tmp/metrics | grep -v ' 0$'
    echo "===== DW-VM METRICS END ====="
  fi
  echo "DW-VM: $1"
  sync
  poweroff -f
}

echo "DW-VM: kernel $(uname -r), $(nproc) cpus"
if [ -e /sys/kernel/btf/vmlinux ]; then
  echo "DW-VM: BTF present: /sys/kernel/btf/vmlinux ($(wc -c </sys/kernel/btf/vmlinux) bytes)"
else
  echo "DW-VM: BTF MISSING"
fi
if [ -e /lib/modules/overlay.ko ]; then
  insmod /lib/modules/overlay.ko || echo "DW-VM: insmod overlay.ko failed"
fi
grep -qw overlay /proc/filesystems || finish "overlayfs unavailable"
ip link set lo up

# A node's cgroup tree: controllers enabled down to the container's cgroup,
# as systemd/containerd/kubelet do.
mkdir -p /sys/fs/cgroup/k8s.io/$CID
if [ -n "$CONTROLLERS" ]; then
  for c in $CONTROLLERS; do
    echo "$c" >/sys/fs/cgroup/cgroup.subtree_control
    echo "$c" >/sys/fs/cgroup/k8s.io/cgroup.subtree_control
  done
fi
echo "DW-VM: cgroup controllers of k8s.io/<id>: $(cat /sys/fs/cgroup/k8s.io/$CID/cgroup.controllers)"

echo "DW-VM: starting driftwatch"
: >/tmp/dw.err
RUST_LOG=$RUST_LOG_VM /bin/driftwatch run --metrics-addr 127.0.0.1:8789 >/tmp/dw.out 2>>/tmp/dw.err &
DW=$!
t=0
while ! grep -q 'driftwatch sensor attached' /tmp/dw.err; do
  kill -0 $DW 2>/dev/null || { wait $DW; finish "driftwatch exited with status $? before attaching"; }
  [ $t -ge 240 ] && finish "driftwatch not attached after 120 s"
  sleep 0.5; t=$((t+1))
done
echo "DW-VM: driftwatch sensor attached after $((t/2)) s"

# The container: an overlayfs root (image = lower, writable layer = upper),
# a new mount + pid namespace, a containerd-style cgroup, joined before the
# entrypoint's exec.
C=/container
mount -t tmpfs tmpfs $C
mkdir -p $C/lower $C/upper $C/work $C/merged
cp -a /container-image/. $C/lower/
mount -t overlay overlay -o lowerdir=$C/lower,upperdir=$C/upper,workdir=$C/work $C/merged ||
  finish "mount overlay failed"
sh -c "echo \$\$ >/sys/fs/cgroup/k8s.io/$CID/cgroup.procs && exec chroot $C/merged /bin/unshare -m -p -f /bin/sh /entry.sh" >/tmp/ct.log 2>&1 &
CT=$!
t=0
CPID=""
while [ -z "$CPID" ]; do
  CPID=$(cat /proc/$CT/task/$CT/children 2>/dev/null | awk '{print $1}')
  [ $t -ge 60 ] && finish "container did not start"
  [ -z "$CPID" ] && { sleep 0.5; t=$((t+1)); }
done
echo "DW-VM: container started, host pid $CPID, cgroup $(cat /proc/$CPID/cgroup)"
t=0
while [ ! -e $C/merged/tmp/.drift-done ]; do
  [ $t -ge 60 ] && finish "the container did not run its dropped binary"
  sleep 0.5; t=$((t+1))
done
# A shell exec'd into the running container (kubectl exec / ctr task exec).
sh -c "echo \$\$ >/sys/fs/cgroup/k8s.io/$CID/cgroup.procs && exec nsenter -t $CPID -m -p -r -w /bin/sh -c true" >>/tmp/ct.log 2>&1 ||
  echo "DW-VM: nsenter failed"
echo "DW-VM: exec'd sh -c true into the container"

t=0
while ! { grep -q '"upper_layer"' /tmp/dw.out && grep -q '"kind":"shell"' /tmp/dw.out; }; do
  [ $t -ge 60 ] && break
  sleep 0.5; t=$((t+1))
done
wget -q -O /tmp/metrics http://127.0.0.1:8789/metrics 2>/dev/null || echo "DW-VM: GET /metrics failed"
kill -INT $DW 2>/dev/null
t=0
while kill -0 $DW 2>/dev/null && [ $t -lt 10 ]; do sleep 0.5; t=$((t+1)); done
finish "done"
EOF
chmod 755 "$root/init"

INITRD=$work/initrd.gz
(cd "$root" && find . -print0 | sort -z | cpio --null -o -H newc --quiet) | gzip -1 >"$INITRD"
say "initramfs $(du -h "$INITRD" | cut -f1) built at $(elapsed) s"

# -------------------------------------------------------------------- boot
say "booting $KREL under qemu ($ACCEL), timeout ${TIMEOUT}s, console -> $LOG"
t_boot=$(date +%s)
set +e
timeout --foreground -k 10 "$TIMEOUT" qemu-system-x86_64 \
  -accel "$ACCEL" -cpu max -m 1024 -smp 2 -nographic -no-reboot -net none \
  -kernel "$VMLINUZ" -initrd "$INITRD" \
  -append "console=ttyS0 panic=-1 quiet" </dev/null >"$LOG" 2>&1
qrc=$?
set -e
t_vm=$(($(date +%s) - t_boot))
# Plain text: no CRs, no terminal control sequences from the firmware.
sed -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' "$LOG" >"$LOG.tmp" && mv "$LOG.tmp" "$LOG"

# ------------------------------------------------------------------- check
out=$(sed -n '/^===== DW-VM AGENT STDOUT BEGIN =====$/,/^===== DW-VM AGENT STDOUT END =====$/p' "$LOG" | grep '^{' || true)
fails=()
[ $qrc -eq 124 ] || [ $qrc -eq 137 ] && fails+=("VM timed out after ${TIMEOUT}s")
grep -q 'BTF present' "$LOG" || fails+=("no /sys/kernel/btf/vmlinux in the guest")
grep -q 'driftwatch sensor attached' "$LOG" || fails+=("sensor did not attach")
binary=$(echo "$out" | grep '"kind":"binary"' | grep '"driftwatch.exe.source":"upper_layer"' | grep '"process.executable.path":"/tmp/busybox"' || true)
[ -n "$binary" ] || fails+=("no binary finding with driftwatch.exe.source upper_layer for /tmp/busybox")
[ -z "$binary" ] || echo "$binary" | grep -q "\"container.id\":\"$CID\"" || fails+=("binary finding lacks container.id $CID")
# The cgroup path must come from the kernel (not a /proc fallback), whatever
# controllers are delegated.
[ -z "$binary" ] || echo "$binary" | grep -q "\"driftwatch.cgroup.path\":\"k8s.io/$CID\"" || fails+=("binary finding lacks the kernel cgroup path k8s.io/$CID")
shell=$(echo "$out" | grep '"kind":"shell"' | grep '"driftwatch.process.parent.name":"nsenter"' || true)
[ -n "$shell" ] || fails+=("no shell finding for sh -c true (parent nsenter)")
# Origin (issue 11): the container's own tree dropped the binary; nsenter is an exec session.
[ -z "$binary" ] || echo "$binary" | grep -q '"driftwatch.process.origin":"container"' || fails+=("binary finding's origin is not container")
[ -z "$shell" ] || echo "$shell" | grep -q '"driftwatch.process.origin":"exec_session"' || fails+=("nsenter shell's origin is not exec_session")
echo "$out" | grep -q 'entry\.sh' && fails+=("the entrypoint (sh /entry.sh) was reported")

echo
if [ ${#fails[@]} -eq 0 ]; then
  echo "run-6.1: PASS on $KREL: sensor attached, upper_layer binary and shell findings," \
    "entrypoint not reported (VM ${t_vm}s, total $(elapsed)s). Log: $LOG"
  exit 0
fi
echo "run-6.1: FAIL on $KREL (qemu status $qrc, VM ${t_vm}s, total $(elapsed)s). Log: $LOG"
for f in "${fails[@]}"; do echo "  - $f"; done
grep -E '^DW-VM:|Kernel panic' "$LOG" | sed 's/^/  | /'
if grep -q '^===== DW-VM AGENT STDERR BEGIN' "$LOG"; then
  echo "  agent stderr (last 60 lines; DW_VM_RUST_LOG=debug for the verifier log):"
  sed -n '/^===== DW-VM AGENT STDERR BEGIN =====$/,/^===== DW-VM AGENT STDERR END =====$/p' "$LOG" |
    sed '1d;$d' | tail -n 60 | sed 's/^/  | /'
fi
exit 1
