#!/usr/bin/env bash
# Idempotently install every Debian package the driftwatch build and tests need,
# and mount tracefs / bpffs. Quiet unless it has something to do. Run as root.
set -euo pipefail

PKGS=(
  clang-19 libclang1-19 llvm-19 libbpf-dev linux-libc-dev
  containerd runc busybox-static
  gcc libc6-dev protobuf-compiler python3 ca-certificates
  python3-prometheus-client
  mmdebstrap umoci binutils
  iproute2 util-linux
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: must run as root" >&2
  exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps.sh: installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Alertmanager for tests/e2e_alertmanager.rs and Prometheus (server + promtool)
# for the alert rules (alerts/, tests/e2e_alert_rules.rs), run by the tests on
# free loopback ports. Installed with service starts denied (policy-rc.d), so no
# system Alertmanager or Prometheus is started; an existing policy-rc.d is left alone.
svc_missing=()
for p in prometheus-alertmanager prometheus; do
  if ! dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed; then
    svc_missing+=("$p")
  fi
done
if [ "${#svc_missing[@]}" -gt 0 ]; then
  echo "install-deps.sh: installing: ${svc_missing[*]} (service start denied)" >&2
  export DEBIAN_FRONTEND=noninteractive
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  [ "${#missing[@]}" -gt 0 ] || apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${svc_missing[@]}" >/dev/null
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# The Debian containerd package may start the system containerd via systemd; the
# tests never use it (they run a private instance), so leave it alone either way.

mount_if_needed() { # fstype dir
  local fstype=$1 dir=$2
  if ! awk -v d="$dir" -v t="$fstype" '$2==d && $3==t {found=1} END {exit !found}' /proc/mounts; then
    mkdir -p "$dir" 2>/dev/null || true
    if ! mount -t "$fstype" "$fstype" "$dir" 2>/dev/null; then
      echo "install-deps.sh: warning: could not mount $fstype at $dir" >&2
    fi
  fi
}
mount_if_needed tracefs /sys/kernel/tracing
mount_if_needed bpf /sys/fs/bpf
