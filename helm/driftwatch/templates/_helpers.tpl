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
{{- $sensors := .Values.sensors | default dict -}}
{{- $_ := set $cfg "sensor" (dict "network" (ternary $sensors.network true (hasKey $sensors "network")) "files" (ternary $sensors.files true (hasKey $sensors "files"))) -}}
{{- $_ := set $cfg "rules" (dict "network" (dict "state_dir" (ternary "/var/lib/driftwatch" "" (not (empty .Values.hostPaths.state))))) -}}
{{- $am := dict "runbook_base_url" .Values.runbookBaseUrl -}}
{{- if .Values.alertmanager.url -}}
{{- $_ := set $am "url" .Values.alertmanager.url -}}
{{- end -}}
{{- $_ := set $cfg "alertmanager" $am -}}
{{- if .Values.otlp.endpoint -}}
{{- $otlp := dict "endpoint" .Values.otlp.endpoint -}}
{{- if .Values.otlp.protocol -}}
{{- $_ := set $otlp "protocol" .Values.otlp.protocol -}}
{{- end -}}
{{- $_ := set $cfg "otlp" $otlp -}}
{{- end -}}
{{- toYaml (mergeOverwrite $cfg (deepCopy .Values.config)) -}}
{{- end -}}

{{/* "true" when a syscall-tracepoint sensor (network, files) is on in the rendered
config (config: may override sensors:): only then does the agent need tracefs. */}}
{{- define "driftwatch.needsTracefs" -}}
{{- $sensor := (include "driftwatch.config" . | fromYaml).sensor | default dict -}}
{{- if ne (toString $sensor.network) "false" -}}true{{- end -}}
{{- end -}}

{{/* The port of the rendered config's health_addr (config: may override health:), or ""
when it has none: the probes then go to the metrics port. */}}
{{- define "driftwatch.healthPort" -}}
{{- $addr := (include "driftwatch.config" . | fromYaml).health_addr -}}
{{- if $addr -}}{{ regexFind "[0-9]+$" (toString $addr) }}{{- end -}}
{{- end -}}
