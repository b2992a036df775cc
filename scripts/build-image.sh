#!/usr/bin/env bash
# Build the agent's OCI image without a registry or a Docker engine.
#
#   scripts/build-image.sh [--out FILE] [--import CONTAINERD_SOCKET]
#
# Two layers, from Debian packages and the release binary only:
#   1. the runtime: Debian 12's libc6 and what it depends on (libgcc-s1,
#      gcc-12-base) -- the binary links glibc, libm and libgcc_s and nothing
#      else (ldd) --, extracted by mmdebstrap (--variant=extract: no shell, no
#      package manager, no maintainer scripts), with a dpkg status file listing
#      those packages for image scanners, /etc/passwd and /etc/group. Cached
#      under $DRIFTWATCH_IMAGE_CACHE (/var/cache/driftwatch-image) and rebuilt
#      when older than $DRIFTWATCH_IMAGE_BASE_MAX_AGE_DAYS (7) days (security
#      updates) or when its recipe changes;
#   2. the release binary (cargo build --release, or $DRIFTWATCH_BIN), debug
#      sections stripped like the Dockerfile's (symbols kept for backtraces).
# Entrypoint, cmd, user, exposed ports, labels, env, working directory and the
# binary's path are read from the Dockerfile's runtime stage, so both images
# agree (an instruction this script does not know there is an error). Packed
# with umoci into an OCI image layout, archived as OUT (default
# $DRIFTWATCH_IMAGE_CACHE/driftwatch-<version>.oci.tar) with the annotation
# `io.containerd.image.name: localhost/driftwatch:<version>` ($DRIFTWATCH_IMAGE_REF),
# which `ctr -n k8s.io images import OUT` uses as the image name.
#
# Rebuilt only when the binary, this script or the Dockerfile changed (a stamp
# beside OUT). Prints "REF sha256:<manifest digest> OUT" on stdout.
# Needs root (mmdebstrap's root mode), mmdebstrap, umoci, python3 (Debian
# packages; scripts/install-deps.sh installs them) and the Debian archive.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
script="$repo/scripts/build-image.sh"

out=""
import_socket=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --import) import_socket=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { echo "build-image.sh: $*" >&2; }
die() { echo "build-image.sh: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap extracts packages as root)"
for tool in mmdebstrap umoci python3 sha256sum tar objcopy; do
  command -v "$tool" >/dev/null || die "$tool missing: run scripts/install-deps.sh"
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -1)
[ -n "$version" ] || die "no version in Cargo.toml"
ref=${DRIFTWATCH_IMAGE_REF:-localhost/driftwatch:$version}
tag=${ref##*:}
cache=${DRIFTWATCH_IMAGE_CACHE:-/var/cache/driftwatch-image}
out=${out:-$cache/driftwatch-$version.oci.tar}
max_age=${DRIFTWATCH_IMAGE_BASE_MAX_AGE_DAYS:-7}
mirror=${DRIFTWATCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DRIFTWATCH_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
suite=bookworm
packages=libc6
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) die "unsupported architecture $(uname -m)" ;;
esac
mkdir -p "$cache" "$(dirname "$out")"

# ---------------------------------------------------------------- the binary
if [ -n "${DRIFTWATCH_BIN:-}" ]; then
  bin=$DRIFTWATCH_BIN
else
  say "cargo build --release"
  # The commit goes into driftwatch_build_info{git_revision} (src/metrics/kernel.rs).
  rev=${DRIFTWATCH_GIT_REVISION:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)}
  (cd "$repo" && DRIFTWATCH_GIT_REVISION=$rev cargo build --release --locked --quiet --bin driftwatch) || die "cargo build --release failed"
  bin=${CARGO_TARGET_DIR:-$repo/target}/release/driftwatch
fi
[ -x "$bin" ] || die "$bin is not an executable"

# ------------------------------------------------------ the Dockerfile's stage
# JSON: {"entrypoint": [...], "cmd": [...], "user": "0:0", "expose": ["8789/tcp"],
#        "labels": {...}, "env": {...}, "workdir": "/", "binary": "/usr/local/bin/driftwatch"}
dockerfile_json=$(python3 - "$repo/Dockerfile" <<'PY'
import json, shlex, sys
lines, cur = [], ""
for raw in open(sys.argv[1]):
    line = raw.rstrip("\n")
    if not cur and (not line.strip() or line.lstrip().startswith("#")):
        continue
    if line.endswith("\\"):
        cur += line[:-1] + " "
        continue
    lines.append(cur + line)
    cur = ""
stages = [i for i, l in enumerate(lines) if l.split(None, 1)[0].upper() == "FROM"]
if not stages:
    sys.exit("Dockerfile: no FROM")
stage = lines[stages[-1] + 1:]
img = {"entrypoint": None, "cmd": None, "user": "", "expose": [], "labels": {}, "env": {}, "workdir": "", "binary": None}
def words(arg):
    arg = arg.strip()
    return json.loads(arg) if arg.startswith("[") else ["/bin/sh", "-c", arg]
def pairs(arg):
    out = {}
    for w in shlex.split(arg):
        if "=" not in w:
            sys.exit(f"Dockerfile: expected KEY=VALUE, got {w!r}")
        k, v = w.split("=", 1)
        out[k] = v
    return out
for l in stage:
    instr, _, arg = l.strip().partition(" ")
    instr = instr.upper()
    if instr == "RUN":
        continue  # the runtime packages: this image has its own (libc6 only), see the header
    elif instr == "COPY":
        w = shlex.split(arg)
        if w[:1] != ["--from=build"] or len(w) != 3:
            sys.exit(f"Dockerfile: unexpected COPY in the runtime stage: {l}")
        img["binary"] = w[2]
    elif instr == "ENTRYPOINT":
        img["entrypoint"] = words(arg)
    elif instr == "CMD":
        img["cmd"] = words(arg)
    elif instr == "USER":
        img["user"] = arg.strip()
    elif instr == "EXPOSE":
        img["expose"] += [p if "/" in p else p + "/tcp" for p in arg.split()]
    elif instr == "LABEL":
        img["labels"].update(pairs(arg))
    elif instr == "ENV":
        img["env"].update(pairs(arg))
    elif instr == "WORKDIR":
        img["workdir"] = arg.strip()
    else:
        sys.exit(f"Dockerfile: build-image.sh does not know {instr} in the runtime stage: teach it (scripts/build-image.sh)")
if not img["binary"] or not img["entrypoint"]:
    sys.exit("Dockerfile: the runtime stage needs COPY --from=build ... and ENTRYPOINT")
print(json.dumps(img, sort_keys=True))
PY
) || die "cannot read the Dockerfile's runtime stage"

# ------------------------------------------------------------------ up to date?
sha() { sha256sum "$1" | cut -d' ' -f1; }
base_recipe="v1 suite=$suite arch=$arch packages=$packages mirror=$mirror security=$security_mirror"
base_key=$(printf '%s' "$base_recipe" | sha256sum | cut -c1-16)
base=$cache/base-$base_key.tar
stamp_want="bin=$(sha "$bin") script=$(sha "$script") dockerfile=$(sha "$repo/Dockerfile") base=$base_key ref=$ref"
stamp=$out.stamp
fresh_base() { [ -s "$base" ] && [ -z "$(find "$base" -mtime "+$max_age" 2>/dev/null)" ]; }
if [ -s "$out" ] && [ -s "$stamp" ] && fresh_base && [ "$(head -1 "$stamp")" = "$stamp_want" ]; then
  echo "$(sed -n 2p "$stamp") $out"
  built=0
else
  built=1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/driftwatch-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# -------------------------------------------------------------- the base layer
if [ "$built" = 1 ] && ! fresh_base; then
  say "mmdebstrap $suite: $packages (cache $base)"
  t0=$(date +%s)
  # Status entries from the packages' own control files (extract runs no dpkg),
  # so scanners see libc6 and its version.
  status_hook='set -e; st="$1/var/lib/dpkg/status"; : > "$st"
    for deb in "$1"/var/cache/apt/archives/*.deb; do
      dpkg-deb -f "$deb" | awk '"'"'NR == 1 { print; print "Status: install ok installed"; next } { print }'"'"' >> "$st"
      echo >> "$st"
    done'
  mmdebstrap --quiet --mode=root --variant=extract --include="$packages" --architectures="$arch" \
    --skip=output/dev \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/lib/*/gconv/*' \
    --extract-hook="$status_hook" \
    "$suite" "$work/base.tar" \
    "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security_mirror $suite-security main" \
    </dev/null >&2 || die "mmdebstrap failed"
  mv "$work/base.tar" "$base"
  find "$cache" -maxdepth 1 -name 'base-*.tar' ! -name "base-$base_key.tar" -delete
  say "base layer built in $(($(date +%s) - t0)) s"
fi

if [ "$built" = 1 ]; then
  epoch=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
  created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
  # umoci's own bundle: layer 1 is the base, layer 2 what changed after it
  # (the binary). (`umoci insert` of Debian 12's umoci 0.4.7 cuts the end off
  # a layer whose last entry is a file; repack writes whole layers.)
  layout=$work/oci
  image="$layout:$tag"
  bundle=$work/bundle
  rootfs=$bundle/rootfs
  umoci init --layout "$layout"
  umoci new --image "$image"
  umoci unpack --image "$image" "$bundle" >/dev/null
  tar -xf "$base" -C "$rootfs" --numeric-owner
  # What apt, mmdebstrap and the build host left: not part of the runtime.
  rm -rf "$rootfs/etc/apt" "$rootfs/var/cache/apt" "$rootfs/var/lib/apt" "$rootfs/var/log/apt" \
    "$rootfs/etc/dpkg/dpkg.cfg.d/99mmdebstrap" "$rootfs/etc/hostname" "$rootfs/etc/resolv.conf" \
    "$rootfs/etc/fstab" "$rootfs/dev"
  printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' > "$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
  mkdir -p "$rootfs/root" "$rootfs/tmp"
  chmod 0700 "$rootfs/root"
  chmod 1777 "$rootfs/tmp"
  find "$rootfs" -newermt "@$epoch" -exec touch -h -d "@$epoch" {} +
  umoci repack --image "$image" --refresh-bundle --history.created="$created" \
    --history.created_by="mmdebstrap --variant=extract --include=$packages $suite (scripts/build-image.sh)" "$bundle"

  dest=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["binary"])' "$dockerfile_json")
  # umoci config flags from the Dockerfile's runtime stage.
  mapfile -t config_flags < <(python3 - "$dockerfile_json" <<'PY'
import json, sys
img = json.loads(sys.argv[1])
for w in img["entrypoint"]:
    print(f"--config.entrypoint={w}")
for w in img["cmd"] or []:
    print(f"--config.cmd={w}")
if img["user"]:
    print(f"--config.user={img['user']}")
for p in img["expose"]:
    print(f"--config.exposedports={p}")
for k, v in sorted(img["labels"].items()):
    print(f"--config.label={k}={v}")
env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", **img["env"]}
for k, v in env.items():
    print(f"--config.env={k}={v}")
print(f"--config.workingdir={img['workdir'] or '/'}")
PY
)
  mkdir -p "$rootfs$(dirname "$dest")"
  # Debug sections stripped like the Dockerfile's (symbols kept: panics still name functions).
  objcopy --strip-debug "$bin" "$rootfs$dest"
  chmod 0755 "$rootfs$dest"
  find "$rootfs" -newermt "@$epoch" -exec touch -h -d "@$epoch" {} +
  umoci repack --image "$image" --history.created="$created" \
    --history.created_by="COPY driftwatch $dest (scripts/build-image.sh)" "$bundle"
  umoci config --image "$image" --architecture="$arch" --os=linux --created="$created" \
    --history.created="$created" --history.created_by="scripts/build-image.sh: config from the Dockerfile" \
    "${config_flags[@]}"
  umoci gc --layout "$layout"

  # Name the image for `ctr images import` (it takes io.containerd.image.name).
  digest=$(python3 - "$layout/index.json" "$tag" "$ref" <<'PY'
import json, sys
path, tag, ref = sys.argv[1:]
idx = json.load(open(path))
m = [d for d in idx["manifests"] if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
if len(m) != 1:
    sys.exit(f"index.json: expected one manifest tagged {tag}, got {len(m)}")
m[0]["annotations"]["io.containerd.image.name"] = ref
json.dump(idx, open(path, "w"), separators=(",", ":"))
print(m[0]["digest"])
PY
)
  (cd "$layout" && tar --sort=name --format=gnu --numeric-owner --owner=0 --group=0 --mtime="@$epoch" \
    -cf "$work/image.tar" oci-layout index.json blobs)
  mv "$work/image.tar" "$out"
  printf '%s\n%s %s\n' "$stamp_want" "$ref" "$digest" > "$stamp"
  say "built $ref ($digest): $out, $(du -k "$out" | cut -f1) KiB archive"
  echo "$ref $digest $out"
fi

if [ -n "$import_socket" ]; then
  ctr --address "$import_socket" --namespace k8s.io images import "$out" >&2 || die "ctr images import failed"
fi
