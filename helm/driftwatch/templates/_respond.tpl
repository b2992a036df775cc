{{/* The responder (`driftwatch respond`, values respond.*): its names, labels and config.
Its pods carry app.kubernetes.io/name <name>-respond: the agent's Service and
ServiceMonitor select <name> only, and its scrape job (job label) is not the agent's
(the agent's alert rules select job="driftwatch"). */}}
{{- define "driftwatch.respond.fullname" -}}
{{- printf "%s-respond" (include "driftwatch.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{- define "driftwatch.respond.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-respond" (include "driftwatch.name" . | trunc 55 | trimSuffix "-") }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "driftwatch.respond.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "driftwatch.respond.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: respond
{{- end -}}

{{/* Where the webhook token Secret is mounted, and the file the config names. */}}
{{- define "driftwatch.respond.tokenDir" -}}/var/run/secrets/driftwatch/respond-token{{- end -}}
{{- define "driftwatch.respond.tokenFile" -}}{{ include "driftwatch.respond.tokenDir" . }}/token{{- end -}}
{{- define "driftwatch.respond.tlsDir" -}}/var/run/secrets/driftwatch/respond-tls{{- end -}}
{{- define "driftwatch.respond.clientCaDir" -}}/var/run/secrets/driftwatch/respond-client-ca{{- end -}}

{{/* The agents' admin API on TCP for the responder (values respond.nodeAgent): "true" or "". */}}
{{- define "driftwatch.respond.nodeAgentOn" -}}
{{- if and .Values.respond.enabled .Values.respond.nodeAgent.enabled -}}
{{- if not .Values.respond.nodeAgent.tokenSecret.name -}}
{{- fail "respond.nodeAgent.enabled needs respond.nodeAgent.tokenSecret.name: a Secret holding the agents' admin API bearer token (a TCP admin API is never open)" -}}
{{- end -}}
{{- if not .Values.response.admin.enabled -}}
{{- fail "respond.nodeAgent.enabled needs response.admin.enabled: the agents' admin API serves the evidence" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{/* Where the admin token Secret is mounted (agent and responder alike), and its file. */}}
{{- define "driftwatch.respond.adminTokenDir" -}}/var/run/secrets/driftwatch/admin-token{{- end -}}
{{- define "driftwatch.respond.adminTokenFile" -}}{{ include "driftwatch.respond.adminTokenDir" . }}/token{{- end -}}

{{/* The responder's config file (YAML, top key respond). Every key is rendered so the
responder's own parser sees them all; the release namespace (the agent's and the
responder's) is always protected. Fails when the webhook has no token Secret. */}}
{{- define "driftwatch.respond.config" -}}
{{- $r := .Values.respond -}}
{{- $tls := $r.webhook.tls | default dict -}}
{{- if and $tls.clientCaSecret (not $tls.secret) -}}
{{- fail "respond.webhook.tls.clientCaSecret needs respond.webhook.tls.secret: client certificates are asked over HTTPS only" -}}
{{- end -}}
{{- if not (or $r.webhook.tokenSecret.name $tls.clientCaSecret) -}}
{{- fail "respond.enabled needs respond.webhook.tokenSecret.name: a Secret holding the bearer token Alertmanager sends (or respond.webhook.tls.clientCaSecret for client certificates; the webhook is never open)" -}}
{{- end -}}
{{- $webhook := dict "token_file" (ternary (include "driftwatch.respond.tokenFile" .) "" (not (empty $r.webhook.tokenSecret.name))) "max_body_bytes" (int64 $r.webhook.maxBodyBytes) -}}
{{- if $tls.secret -}}
{{- $_ := set $webhook "tls" (dict
  "cert_file" (printf "%s/tls.crt" (include "driftwatch.respond.tlsDir" .))
  "key_file" (printf "%s/tls.key" (include "driftwatch.respond.tlsDir" .))
  "client_ca_file" (ternary (printf "%s/ca.crt" (include "driftwatch.respond.clientCaDir" .)) "" (not (empty $tls.clientCaSecret)))) -}}
{{- end -}}
{{- $namespaces := dict -}}
{{- range $ns, $o := $r.namespaces -}}
{{- $over := dict -}}
{{- if hasKey $o "steps" -}}
{{- $_ := set $over "steps" $o.steps -}}
{{- end -}}
{{- if hasKey $o "dryRun" -}}
{{- $_ := set $over "dry_run" $o.dryRun -}}
{{- end -}}
{{- $_ := set $namespaces $ns $over -}}
{{- end -}}
{{- $rl := $r.rateLimits -}}
{{- $cfg := dict
  "dry_run" $r.dryRun
  "steps" $r.steps
  "webhook" $webhook
  "isolate" (dict "allow_dns" $r.allowDns)
  "evict" (dict "allow_unowned" $r.evict.allowUnowned)
  "dedup_window_s" (int64 $r.dedupWindowSeconds)
  "rate_limits" (dict
    "global" (dict "max" (int64 $rl.global.max) "window_s" (int64 $rl.global.windowSeconds))
    "per_namespace" (dict "max" (int64 $rl.perNamespace.max) "window_s" (int64 $rl.perNamespace.windowSeconds)))
  "protected_namespaces" (append $r.protectedNamespaces .Release.Namespace | uniq)
  "namespaces" $namespaces
  "escalate" $r.escalate -}}
{{- if include "driftwatch.respond.nodeAgentOn" . -}}
{{- $sel := list -}}
{{- range $k, $v := include "driftwatch.selectorLabels" . | fromYaml -}}
{{- $sel = append $sel (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- $_ := set $cfg "node_agent" (dict
  "namespace" .Release.Namespace
  "selector" (join "," $sel)
  "port" (int64 $r.nodeAgent.port)
  "token_file" (include "driftwatch.respond.adminTokenFile" .)
  "timeout_s" (int64 $r.nodeAgent.timeoutSeconds)) -}}
{{- end -}}
{{- toYaml (dict "respond" $cfg) -}}
{{- end -}}
