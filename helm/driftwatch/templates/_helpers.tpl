{{- define "driftwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "driftwatch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "driftwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "driftwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "driftwatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "driftwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "driftwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "driftwatch.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The agent's config file: chart-managed keys, then .Values.config over them. */}}
{{- define "driftwatch.config" -}}
{{- $cfg := dict "metrics_addr" (printf "0.0.0.0:%d" (int .Values.metrics.port)) -}}
{{- if .Values.health.enabled -}}
{{- if eq (int .Values.health.port) (int .Values.metrics.port) -}}
{{- fail "health.port must differ from metrics.port: the probes get a listener of their own" -}}
{{- end -}}
{{- $_ := set $cfg "health_addr" (printf "0.0.0.0:%d" (int .Values.health.port)) -}}
{{- end -}}
{{- if .Values.runtime.endpoint -}}
{{- $_ := set $cfg "runtime" (dict "endpoint" .Values.runtime.endpoint) -}}
{{- end -}}
{{- $_ := set $cfg "kubernetes" (dict "enabled" (.Values.kubernetesApi.enabled | default false)) -}}
{{- if .Values.clusterName -}}
{{- $_ := set $cfg "cluster_name" .Values.clusterName -}}
{{- end -}}
{{- $sensors := .Values.sensors | default dict -}}
{{- $_ := set $cfg "sensor" (dict "network" (ternary $sensors.network true (hasKey $sensors "network")) "files" (ternary $sensors.files true (hasKey $sensors "files")) "mappings" (ternary $sensors.mappings true (hasKey $sensors "mappings"))) -}}
{{- $_ := set $cfg "rules" (dict "network" (dict "state_dir" (ternary "/var/lib/driftwatch" "" (not (empty .Values.hostPaths.state))))) -}}
{{- $am := dict "runbook_base_url" (include "driftwatch.runbookBaseUrl" .) -}}
{{- $amv := .Values.alertmanager -}}
{{- if and $amv.url $amv.urls -}}
{{- fail "alertmanager.url and alertmanager.urls: set one or the other" -}}
{{- end -}}
{{- if $amv.url -}}
{{- $_ := set $am "url" $amv.url -}}
{{- end -}}
{{- if $amv.urls -}}
{{- $_ := set $am "urls" $amv.urls -}}
{{- end -}}
{{- $amTls := include "driftwatch.tlsConfig" (dict "tls" $amv.tls "prefix" "alertmanager") | fromYaml -}}
{{- if $amTls -}}
{{- $_ := set $am "tls" $amTls -}}
{{- end -}}
{{- if ($amv.bearerTokenSecret | default dict).name -}}
{{- $_ := set $am "bearer_token_file" "/var/run/secrets/driftwatch/alertmanager-token/token" -}}
{{- end -}}
{{- $basic := $amv.basicAuth | default dict -}}
{{- if $basic.username -}}
{{- if not ($basic.passwordSecret | default dict).name -}}
{{- fail "alertmanager.basicAuth.username needs alertmanager.basicAuth.passwordSecret.name" -}}
{{- end -}}
{{- $_ := set $am "basic_auth" (dict "username" $basic.username "password_file" "/var/run/secrets/driftwatch/alertmanager-password/password") -}}
{{- end -}}
{{- if $amv.headers -}}
{{- $_ := set $am "headers" $amv.headers -}}
{{- end -}}
{{- $_ := set $cfg "alertmanager" $am -}}
{{- $otlp := dict -}}
{{- if .Values.otlp.endpoint -}}
{{- $_ := set $otlp "endpoint" .Values.otlp.endpoint -}}
{{- if .Values.otlp.protocol -}}
{{- $_ := set $otlp "protocol" .Values.otlp.protocol -}}
{{- end -}}
{{- end -}}
{{- $otlpTls := include "driftwatch.tlsConfig" (dict "tls" .Values.otlp.tls "prefix" "otlp") | fromYaml -}}
{{- if $otlpTls -}}
{{- $_ := set $otlp "tls" $otlpTls -}}
{{- end -}}
{{- if $otlp -}}
{{- $_ := set $cfg "otlp" $otlp -}}
{{- end -}}
{{- $rv := .Values.redaction | default dict -}}
{{- $redaction := dict "enabled" (ternary $rv.enabled true (hasKey $rv "enabled")) -}}
{{- if $rv.builtinPatterns -}}
{{- $_ := set $redaction "builtin_patterns" $rv.builtinPatterns -}}
{{- end -}}
{{- if $rv.flags -}}
{{- $_ := set $redaction "flags" $rv.flags -}}
{{- end -}}
{{- if $rv.patterns -}}
{{- $_ := set $redaction "patterns" $rv.patterns -}}
{{- end -}}
{{- $_ := set $cfg "redaction" $redaction -}}
{{- $pv := .Values.policy | default dict -}}
{{- $policy := dict -}}
{{- range $k, $v := dict "approvals" $pv.approvals "modes" $pv.modes "default_mode" $pv.defaultMode "emit_approved" $pv.emitApproved "approve_pod_spec" $pv.approvePodSpec -}}
{{- if not (kindIs "invalid" $v) -}}
{{- $_ := set $policy $k $v -}}
{{- end -}}
{{- end -}}
{{- if $policy -}}
{{- $_ := set $cfg "policy" $policy -}}
{{- end -}}
{{- $cfg = merge $cfg (include "driftwatch.responseConfig" . | fromYaml) -}}
{{- $cfg = mergeOverwrite $cfg (deepCopy .Values.config) -}}
{{- include "driftwatch.checkResponse" (dict "cfg" $cfg "Values" .Values) -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* "true" when a syscall-tracepoint sensor (network, files, mappings) is on in the
rendered config (config: may override sensors:): only then does the agent need tracefs
(its preflight refuses to start without it). */}}
{{- define "driftwatch.needsTracefs" -}}
{{- $sensor := (include "driftwatch.config" . | fromYaml).sensor | default dict -}}
{{- if or (ne (toString $sensor.network) "false") (ne (toString $sensor.files) "false") (ne (toString $sensor.mappings) "false") -}}true{{- end -}}
{{- end -}}

{{/* The port of the rendered config's health_addr (config: may override health:), or ""
when it has none: the probes then go to the metrics port. */}}
{{- define "driftwatch.healthPort" -}}
{{- $addr := (include "driftwatch.config" . | fromYaml).health_addr -}}
{{- if $addr -}}{{ regexFind "[0-9]+$" (toString $addr) }}{{- end -}}
{{- end -}}

{{/* The config's tls: section of a sink (dict "tls" <values> "prefix" otlp|alertmanager):
the files where the Secrets of driftwatch.secretVolumes are mounted. */}}
{{- define "driftwatch.tlsConfig" -}}
{{- $t := .tls | default dict -}}
{{- $dir := "/var/run/secrets/driftwatch" -}}
{{- $out := dict -}}
{{- if $t.caSecret -}}
{{- $_ := set $out "ca_file" (printf "%s/%s-ca/ca.crt" $dir .prefix) -}}
{{- end -}}
{{- if $t.clientCertSecret -}}
{{- $_ := set $out "cert_file" (printf "%s/%s-client/tls.crt" $dir .prefix) -}}
{{- $_ := set $out "key_file" (printf "%s/%s-client/tls.key" $dir .prefix) -}}
{{- end -}}
{{- if $t.serverName -}}
{{- $_ := set $out "server_name" $t.serverName -}}
{{- end -}}
{{- if $out -}}
{{- toYaml $out -}}
{{- end -}}
{{- end -}}

{{/* The Secrets the agent reads as files (TLS material, token, password): a YAML list of
{name, secret, mountPath, items}, mounted read-only under /var/run/secrets/driftwatch/. */}}
{{- define "driftwatch.secretVolumes" -}}
{{- $dir := "/var/run/secrets/driftwatch" -}}
{{- $vols := list -}}
{{- range $sink := list "otlp" "alertmanager" -}}
{{- $t := (index $.Values $sink).tls | default dict -}}
{{- if $t.caSecret -}}
{{- $vols = append $vols (dict "name" (printf "%s-ca" $sink) "secret" $t.caSecret "mountPath" (printf "%s/%s-ca" $dir $sink) "items" (list (dict "key" "ca.crt" "path" "ca.crt"))) -}}
{{- end -}}
{{- if $t.clientCertSecret -}}
{{- $vols = append $vols (dict "name" (printf "%s-client" $sink) "secret" $t.clientCertSecret "mountPath" (printf "%s/%s-client" $dir $sink) "items" (list (dict "key" "tls.crt" "path" "tls.crt") (dict "key" "tls.key" "path" "tls.key"))) -}}
{{- end -}}
{{- end -}}
{{- $token := .Values.alertmanager.bearerTokenSecret | default dict -}}
{{- if $token.name -}}
{{- $vols = append $vols (dict "name" "alertmanager-token" "secret" $token.name "mountPath" (printf "%s/alertmanager-token" $dir) "items" (list (dict "key" ($token.key | default "token") "path" "token"))) -}}
{{- end -}}
{{- if include "driftwatch.respond.nodeAgentOn" . -}}
{{- $t := .Values.respond.nodeAgent.tokenSecret -}}
{{- $vols = append $vols (dict "name" "admin-token" "secret" $t.name "mountPath" (include "driftwatch.respond.adminTokenDir" .) "items" (list (dict "key" ($t.key | default "token") "path" "token"))) -}}
{{- end -}}
{{- $pw := (.Values.alertmanager.basicAuth | default dict).passwordSecret | default dict -}}
{{- if $pw.name -}}
{{- $vols = append $vols (dict "name" "alertmanager-password" "secret" $pw.name "mountPath" (printf "%s/alertmanager-password" $dir) "items" (list (dict "key" ($pw.key | default "password") "path" "password"))) -}}
{{- end -}}
{{- toYaml $vols -}}
{{- end -}}

{{/* One scrape endpoint of the ServiceMonitor or the PodMonitor (their values share
these keys), after its port. */}}
{{- define "driftwatch.scrapeEndpoint" -}}
{{- $node := .node }}
{{- with .m -}}
path: /metrics
interval: {{ .interval }}
scrapeTimeout: {{ .scrapeTimeout }}
honorLabels: {{ .honorLabels }}
scheme: {{ .scheme | default "http" }}
{{- with .tlsConfig }}
tlsConfig:
  {{- toYaml . | nindent 2 }}
{{- end }}
relabelings:
  # The node the agent runs on: per-agent alerts and dashboards group by it
  # (prometheusRule.nodeLabel), not by the pod IP.
  - sourceLabels: [__meta_kubernetes_pod_node_name]
    targetLabel: {{ $node }}
  # The target's namespace/container labels would stand in for the empty ones of
  # containers without pod metadata: the agent's own labels are the only ones.
  - action: labeldrop
    regex: (namespace|container)
  {{- with .relabelings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The runbooks' base URL: runbookBaseUrl, or the docs of the tag this chart is
released from (chart-releaser's <name>-<version>). */}}
{{- define "driftwatch.runbookBaseUrl" -}}
{{- if .Values.runbookBaseUrl -}}
{{- trimSuffix "/" .Values.runbookBaseUrl -}}
{{- else -}}
{{- printf "https://github.com/driftwatch/driftwatch/blob/%s-%s/docs/runbooks" .Chart.Name .Chart.Version -}}
{{- end -}}
{{- end -}}
