{{/*
Helpers of the KernelSeal chart. The templates keep to plain Go template
syntax and Helm's standard functions (include, toYaml, nindent, quote,
default, trunc, dict, list; for the webhook's generated certificate
lookup, dig, genCA, genSignedCert, b64enc): they render with Helm 3 and
Helm 4.
*/}}

{{/* The name prefix of every object: the release name when it already
says "kernelseal" (release "kernelseal" -> kernelseal-agent, as in
deploy/manifests), otherwise "<release>-kernelseal". */}}
{{- define "kernelseal.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kernelseal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of an object; call with (dict "ctx" $ "component" "agent"). */}}
{{- define "kernelseal.labels" -}}
helm.sh/chart: {{ include "kernelseal.chart" .ctx }}
{{ include "kernelseal.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end -}}

{{- define "kernelseal.selectorLabels" -}}
app.kubernetes.io/name: kernelseal
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{- define "kernelseal.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "kernelseal.agentEnabled" -}}
{{- if or (eq .Values.mode "agent") (eq .Values.mode "both") }}true{{ end -}}
{{- end -}}

{{- define "kernelseal.csiEnabled" -}}
{{- if or (eq .Values.mode "csi-provider") (eq .Values.mode "both") }}true{{ end -}}
{{- end -}}
