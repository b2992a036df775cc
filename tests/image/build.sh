#!/usr/bin/env bash
# Build the tiny driftwatch OCI test image archive by hand (no docker/skopeo/umoci).
#
#   tests/image/build.sh OUT.tar
#
# OUT.tar is an OCI image layout archive holding two images that share one layer:
#   localhost/driftwatch-test:1   Cmd ["/bin/sh"]       (test workloads)
#   localhost/driftwatch-pause:1  Entrypoint ["/pause"] (CRI sandbox image)
# Import with: ctr -n k8s.io images import OUT.tar
#
# The build is reproducible for a given toolchain and busybox: fixed mtimes,
# sorted tar entries, numeric root ownership, gzip -n. The manifest digest of the
# images are printed on stdout, one "REF sha256:DIGEST" line each, so callers can
# tell whether an already-imported image is current.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUT.tar" >&2
  exit 2
fi
out=$1
here=$(cd "$(dirname "$0")" && pwd)

TEST_REF=localhost/driftwatch-test:1
PAUSE_REF=localhost/driftwatch-pause:1

busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "build.sh: $busybox missing (apt-get install busybox-static)" >&2; exit 1; }
if ! file_out=$(LC_ALL=C "$busybox" true 2>&1); then
  echo "build.sh: $busybox does not run: $file_out" >&2; exit 1
fi
command -v gcc >/dev/null || { echo "build.sh: gcc missing" >&2; exit 1; }

case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  armv7l) arch=arm ;;
  *) arch=$(uname -m) ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/driftwatch-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
layout=$work/layout
mkdir -p "$root" "$layout/blobs/sha256"

# --- rootfs -------------------------------------------------------------------
for d in bin sbin usr/bin usr/sbin etc root tmp scratch proc sys dev run var/tmp; do
  mkdir -p "$root/$d"
done
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0700 "$root/root"
chmod 0777 "$root/scratch"

install -m 0755 "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  case "$applet" in busybox|*/*) continue ;; esac
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
[ -L "$root/bin/sh" ] || { echo "build.sh: busybox has no sh applet" >&2; exit 1; }

cflags="-static -O2 -Wall -Wextra -s"
gcc $cflags -o "$root/usr/bin/memexec" "$here/memexec.c"
gcc $cflags -o "$root/usr/bin/hello" "$here/hello.c"
gcc $cflags -o "$root/usr/bin/truncate-path" "$here/truncate-path.c"
gcc $cflags -o "$root/pause" "$here/pause.c"

# Dynamic programs (issue 14: drift through the dynamic loader, LD_PRELOAD,
# dlopen and interpreters): the host's glibc loader and the libraries they
# need, at their paths; perl (perl-base, no modules) as an interpreter. Adds
# about 7 MB (loader, libc, libm, libcrypt, perl).
copy_libs() { # BIN: copies the shared objects BIN needs, and the loader, into the rootfs
  ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do
    real=$(readlink -f "$lib")
    [ -e "$root$real" ] || install -D -m 0755 "$real" "$root$real"
    if [ "$lib" != "$real" ] && [ ! -e "$root$lib" ]; then
      mkdir -p "$root$(dirname "$lib")"
      ln -s "$real" "$root$lib"
    fi
  done
}
gcc -O2 -Wall -Wextra -s -o "$root/usr/bin/hello-dyn" "$here/hello.c"
gcc -O2 -Wall -Wextra -s -o "$root/usr/bin/dwdlopen" "$here/dlopen.c" -ldl
mkdir -p "$root/usr/lib/dwtest"
gcc -O2 -Wall -Wextra -s -shared -fPIC -o "$root/usr/lib/dwtest/libdwtest.so" "$here/libdwtest.c"
gcc $cflags -o "$root/usr/bin/maptool" "$here/maptool.c"
perl=$(readlink -f /usr/bin/perl)
[ -x "$perl" ] || { echo "build.sh: /usr/bin/perl missing (apt-get install perl-base)" >&2; exit 1; }
install -m 0755 "$perl" "$root/usr/bin/perl"
for bin in "$root/usr/bin/hello-dyn" "$root/usr/bin/dwdlopen" "$root/usr/bin/perl"; do
  copy_libs "$bin"
done
printf 'echo image-script\n' > "$root/usr/lib/dwtest/hello.sh"
printf 'print "image-script\\n";\n' > "$root/usr/lib/dwtest/hello.pl"

cat > "$root/usr/bin/apt-get" <<'SH'
#!/bin/sh
echo "fake apt-get: $*"
SH
cat > "$root/usr/bin/pip" <<'SH'
#!/bin/sh
echo "fake pip: $*"
SH
chmod 0755 "$root/usr/bin/apt-get" "$root/usr/bin/pip"

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
printf 'driftwatch-test\n' > "$root/etc/hostname"
printf 'driftwatch test image\n' > "$root/etc/motd"

# --- layer --------------------------------------------------------------------
(cd "$root" && tar --sort=name --format=gnu --numeric-owner --owner=0 --group=0 \
   --mtime=@0 -cf "$work/layer.tar" .)
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -9 -c "$work/layer.tar" > "$work/layer.tar.gz"
layer_digest=$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)
layer_size=$(stat -c %s "$work/layer.tar.gz")
mv "$work/layer.tar.gz" "$layout/blobs/sha256/$layer_digest"

# put_blob FILE -> echoes "DIGEST SIZE" after storing FILE as a blob
put_blob() {
  local f=$1 dg sz
  dg=$(sha256sum "$f" | cut -d' ' -f1)
  sz=$(stat -c %s "$f")
  mv "$f" "$layout/blobs/sha256/$dg"
  echo "$dg $sz"
}

# make_image NAME CONFIG_PROCESS_JSON -> echoes "MANIFEST_DIGEST MANIFEST_SIZE"
make_image() {
  local proc=$1 cfg_dg cfg_sz
  printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"tests/image/build.sh"}],"created":"1970-01-01T00:00:00Z"}' \
    "$arch" "$proc" "$diff_id" > "$work/config.json"
  read -r cfg_dg cfg_sz < <(put_blob "$work/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$cfg_dg" "$cfg_sz" "$layer_digest" "$layer_size" > "$work/manifest.json"
  put_blob "$work/manifest.json"
}

read -r test_dg test_sz < <(make_image '"Cmd":["/bin/sh"]')
read -r pause_dg pause_sz < <(make_image '"Entrypoint":["/pause"]')

manifest_entry() { # digest size ref
  printf '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}' \
    "$1" "$2" "$arch" "$3" "$3"
}
printf '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s,%s]}' \
  "$(manifest_entry "$test_dg" "$test_sz" "$TEST_REF")" \
  "$(manifest_entry "$pause_dg" "$pause_sz" "$PAUSE_REF")" > "$layout/index.json"

mkdir -p "$(dirname "$out")"
(cd "$layout" && tar --sort=name --format=gnu --numeric-owner --owner=0 --group=0 \
   --mtime=@0 -cf "$work/out.tar" oci-layout index.json blobs)
mv "$work/out.tar" "$out"
echo "$TEST_REF sha256:$test_dg"
echo "$PAUSE_REF sha256:$pause_dg"
