{{/* The config's admin_addr and response (values response.*; README "Investigate and
isolate"), as YAML {admin_addr, response}. Every tunable is rendered, on or off, so
`driftwatch check-config` sees them; a feature that is off gets on_steps []. */}}
{{- define "driftwatch.responseConfig" -}}
{{- $r := .Values.response -}}
{{- $cap := $r.capture -}}
{{- $q := $r.quarantine -}}
{{- if lt (int64 $cap.retention.maxBytes) (int64 $cap.maxBundleBytes) -}}
{{- fail (printf "response.capture.retention.maxBytes (%d) must be at least response.capture.maxBundleBytes (%d): one bundle may be that large" (int64 $cap.retention.maxBytes) (int64 $cap.maxBundleBytes)) -}}
{{- end -}}
{{- $capture := dict
  "on_steps" (ternary $cap.onSteps (list) $cap.enabled)
  "dir" $cap.hostPath
  "window_s" (int64 $cap.windowSeconds)
  "max_file_bytes" (int64 $cap.maxFileBytes)
  "max_bundle_bytes" (int64 $cap.maxBundleBytes)
  "hash_limit_bytes" (int64 $cap.hashLimitBytes)
  "retention" (dict "max_bytes" (int64 $cap.retention.maxBytes) "max_bundles" (int64 $cap.retention.maxBundles)) -}}
{{- $quarantine := dict
  "on_steps" (ternary $q.onSteps (list) $q.enabled)
  "allow" $q.allow
  "modes" $q.modes
  "pin_dir" (printf "%s/driftwatch/quarantine" $q.bpffs) -}}
{{- $adminAddr := ternary (printf "unix://%s/admin.sock" $r.admin.socketDir) "" $r.admin.enabled -}}
{{- $out := dict "response" (dict "capture" $capture "quarantine" $quarantine) -}}
{{- if include "driftwatch.respond.nodeAgentOn" . -}}
{{- /* The responder reaches the agent at its pod IP: TCP, with the token (respond.nodeAgent). */ -}}
{{- $adminAddr = printf "0.0.0.0:%d" (int64 .Values.respond.nodeAgent.port) -}}
{{- $_ := set $out "admin_token_file" (include "driftwatch.respond.adminTokenFile" .) -}}
{{- end -}}
{{- $_ := set $out "admin_addr" $adminAddr -}}
{{- toYaml $out -}}
{{- end -}}

{{/* Fails when the rendered config (after config:) needs a mount or a privilege the
response.* values did not grant: those come from explicit values only, never from config:.
Argument: dict "cfg" <rendered config> "Values" .Values. */}}
{{- define "driftwatch.checkResponse" -}}
{{- $r := .Values.response -}}
{{- $resp := .cfg.response | default dict -}}
{{- $cap := $resp.capture | default dict -}}
{{- $q := $resp.quarantine | default dict -}}
{{- $addr := toString (.cfg.admin_addr | default "") | trim -}}
{{- if hasPrefix "unix://" $addr -}}
{{- if not $r.admin.enabled -}}
{{- fail (printf "config.admin_addr %s is a Unix socket but response.admin.enabled is false: set response.admin.enabled=true (the chart then mounts its directory from the host)" $addr) -}}
{{- end -}}
{{- $sock := trimPrefix "unix://" $addr -}}
{{- if ne (dir $sock) (clean $r.admin.socketDir) -}}
{{- fail (printf "config.admin_addr %s is not in response.admin.socketDir %s (the directory the chart mounts): set response.admin.socketDir instead" $addr $r.admin.socketDir) -}}
{{- end -}}
{{- end -}}
{{- if $cap.on_steps -}}
{{- if not $r.capture.enabled -}}
{{- fail "config.response.capture.on_steps is set but response.capture.enabled is false: set response.capture.enabled=true and response.capture.onSteps (the chart then mounts the evidence directory)" -}}
{{- end -}}
{{- if ne (clean (toString $cap.dir)) (clean $r.capture.hostPath) -}}
{{- fail (printf "config.response.capture.dir %v is not response.capture.hostPath %s (the directory the chart mounts): set response.capture.hostPath instead" $cap.dir $r.capture.hostPath) -}}
{{- end -}}
{{- end -}}
{{- if and $q.on_steps (not $r.quarantine.enabled) -}}
{{- fail "config.response.quarantine.on_steps is set but response.quarantine.enabled is false: set response.quarantine.enabled=true and response.quarantine.onSteps (the chart then mounts the BPF filesystem and the node's cgroups, and adds NET_ADMIN)" -}}
{{- end -}}
{{- if $r.quarantine.enabled -}}
{{- $pin := clean (toString $q.pin_dir) -}}
{{- if not (hasPrefix (printf "%s/" (clean $r.quarantine.bpffs)) $pin) -}}
{{- fail (printf "config.response.quarantine.pin_dir %s is not under response.quarantine.bpffs %s (the BPF filesystem the chart mounts)" $pin $r.quarantine.bpffs) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The host directories of the response features that are on: a YAML list of
{name, value (the value that names it), hostPath, mountPath, type, readOnly}. A mount path another mount of the
chart already uses fails the rendering. */}}
{{- define "driftwatch.responseMounts" -}}
{{- $r := .Values.response -}}
{{- $mounts := list -}}
{{- if and $r.admin.enabled (not (include "driftwatch.respond.nodeAgentOn" .)) -}}
{{- /* The same path as on the node: root there runs `driftwatch quarantine list`. */ -}}
{{- $mounts = append $mounts (dict "name" "admin-socket" "value" "response.admin.socketDir" "hostPath" $r.admin.socketDir "mountPath" $r.admin.socketDir "type" "DirectoryOrCreate" "readOnly" false) -}}
{{- end -}}
{{- if $r.capture.enabled -}}
{{- $mounts = append $mounts (dict "name" "evidence" "value" "response.capture.hostPath" "hostPath" $r.capture.hostPath "mountPath" $r.capture.hostPath "type" "DirectoryOrCreate" "readOnly" false) -}}
{{- end -}}
{{- if $r.quarantine.enabled -}}
{{- /* The host's bpffs instance, so the pins outlive the pod. */ -}}
{{- $mounts = append $mounts (dict "name" "bpffs" "value" "response.quarantine.bpffs" "hostPath" $r.quarantine.bpffs "mountPath" $r.quarantine.bpffs "type" "Directory" "readOnly" false) -}}
{{- /* The agent finds a container's cgroup directory among its cgroup2 mounts
(/proc/self/mountinfo), wherever they are mounted. */ -}}
{{- $mounts = append $mounts (dict "name" "host-cgroup" "value" "response.quarantine.cgroupRoot" "hostPath" $r.quarantine.cgroupRoot "mountPath" (printf "/host%s" $r.quarantine.cgroupRoot) "type" "Directory" "readOnly" true) -}}
{{- end -}}
{{- $taken := list "/etc/driftwatch" "/tmp" "/sys/kernel/btf" "/sys/kernel/tracing" "/var/run/secrets/driftwatch" -}}
{{- if .Values.hostPaths.state -}}
{{- $taken = append $taken "/var/lib/driftwatch" -}}
{{- end -}}
{{- $taken = concat $taken (.Values.runtime.socketDirs | default list) -}}
{{- range $mounts -}}
{{- $at := clean .mountPath -}}
{{- if has $at $taken -}}
{{- fail (printf "%s: %s is already a mount path of the chart (a runtime socket directory, the state directory, another response.* directory, ...): choose another directory" .value $at) -}}
{{- end -}}
{{- $taken = append $taken $at -}}
{{- end -}}
{{- toYaml $mounts -}}
{{- end -}}
