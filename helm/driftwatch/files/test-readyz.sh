# The chart's `helm test` (templates/tests/readyz.yaml): GET /readyz of every agent
# behind the headless Service $SERVICE (busybox sh, nslookup and wget). Exits 1 unless
# every address answers 200, naming each failing one.
set -u
# The addresses nslookup prints after "Name:" (both busybox formats: "Address: IP" and
# "Address 1: IP name"); the short name first, then the fully qualified one.
lookup() { nslookup "$1" 2>/dev/null | awk '/^Name:/ { seen = 1 } seen && /^Address/ { sub(/^Address[^:]*: */, ""); split($0, a, " "); print a[1] }'; }
addrs=$(lookup "$SERVICE")
[ -n "$addrs" ] || addrs=$(lookup "$SERVICE.$CLUSTER_DOMAIN")
if [ -z "$addrs" ]; then
  echo "no agent address behind $SERVICE (is the DaemonSet running? kubectl get pods -l app.kubernetes.io/name=driftwatch)"
  exit 1
fi
failed=0
for a in $addrs; do
  case "$a" in *:*) host="[$a]" ;; *) host="$a" ;; esac
  if body=$(wget -q -T "$TIMEOUT" -O - "http://$host:$PORT/readyz" 2>&1); then
    echo "ok    $a: $body"
  else
    echo "FAIL  $a: $body (the agent's /readyz names the failing check: sensor, reader, registry, stdout, runtime)"
    failed=1
  fi
done
exit "$failed"
