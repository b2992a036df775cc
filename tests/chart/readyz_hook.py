"""The `helm test` hook's script (helm/driftwatch/files/test-readyz.sh), run by a POSIX sh
against two local stand-in agents: 127.0.0.1 ready (200), 127.0.0.2 not (503). nslookup
is a stub printing what busybox's prints (both formats); wget is a stub over Python's urllib (the
script's only use: GET a URL, fail on a non-2xx answer). Checks: all ready -> exit 0 and
each address named; one unready -> exit 1 naming it; no address -> exit 1 with a hint."""
import http.server, os, shutil, subprocess, sys, threading

SCRIPT = "helm/driftwatch/files/test-readyz.sh"


class Agent(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ready = self.server.server_address[0] == "127.0.0.1"
        code = 200 if ready and self.path == "/readyz" else 503
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"ready\n" if code == 200 else b"not ready: sensor\n")

    def log_message(self, *_):
        pass


def serve(addr, port):
    s = http.server.ThreadingHTTPServer((addr, port), Agent)
    threading.Thread(target=s.serve_forever, daemon=True).start()
    return s.server_address[1]


STUBS = r'''
nslookup() {
  [ "$1" = "$WANT_NAME" ] || return 1
  if [ "$FORMAT" = new ]; then
    printf 'Server:\t\t10.96.0.10\nAddress:\t10.96.0.10:53\n\nName:\t%s\n' "$1"
    for a in $ADDRS; do printf 'Address: %s\n' "$a"; done
  else
    printf 'Server:    10.96.0.10\nAddress 1: 10.96.0.10 kube-dns.kube-system.svc.cluster.local\n\nName:      %s\n' "$1"
    i=1; for a in $ADDRS; do printf 'Address %d: %s %s.pod\n' "$i" "$a" "$a"; i=$((i + 1)); done
  fi
}
wget() { eval "url=\${$#}"; "$PYBIN" -c 'import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode(), end="")' "$url" "$TIMEOUT" 2>/dev/null; }
'''


def run(addrs, fmt="new", want_name="dw-driftwatch.security.svc"):
    sh = shutil.which("busybox")
    cmd = [sh, "sh"] if sh else ["sh"]
    env = dict(os.environ, ADDRS=addrs, FORMAT=fmt, WANT_NAME=want_name, SERVICE="dw-driftwatch.security.svc",
               CLUSTER_DOMAIN="cluster.local", PORT=str(PORT), TIMEOUT="5", PYBIN=sys.executable)
    r = subprocess.run(cmd + ["-c", STUBS + open(SCRIPT).read()], env=env, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def serve_both():
    """One port on both addresses (the script asks every agent on the same port); the
    second bind can lose a race for that port: take another."""
    for _ in range(50):
        port = serve("127.0.0.1", 0)
        try:
            serve("127.0.0.2", port)
            return port
        except OSError:
            continue
    sys.exit("readyz_hook: no port free on both 127.0.0.1 and 127.0.0.2")


PORT = serve_both()
failures = []
for fmt in ("new", "old"):
    code, out = run("127.0.0.1", fmt)
    if code != 0 or "ok    127.0.0.1" not in out:
        failures.append(f"{fmt} format, one ready agent: exit {code}: {out}")
    code, out = run("127.0.0.1 127.0.0.2", fmt)
    if code != 1 or "FAIL  127.0.0.2" not in out or "ok    127.0.0.1" not in out:
        failures.append(f"{fmt} format, an unready agent: exit {code}: {out}")
# Only the fully qualified name resolves: the script falls back to it.
code, out = run("127.0.0.1", want_name="dw-driftwatch.security.svc.cluster.local")
if code != 0:
    failures.append(f"cluster-domain fallback: exit {code}: {out}")
code, out = run("")
if code != 1 or "no agent address" not in out:
    failures.append(f"no agents: exit {code}: {out}")
if failures:
    sys.exit("helm test hook script:\n  " + "\n  ".join(failures))
print("chart: the helm test hook passes with ready agents and names the unready one")
