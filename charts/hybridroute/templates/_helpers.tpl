{{/* Names and labels shared by every template. */}}

{{- define "hybridroute.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or just <release> when it already contains the chart name. */}}
{{- define "hybridroute.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "hybridroute.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hybridroute.labels" -}}
helm.sh/chart: {{ include "hybridroute.chart" . }}
{{ include "hybridroute.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hybridroute
{{- end }}

{{- define "hybridroute.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hybridroute.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "hybridroute.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hybridroute.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest; the tag defaults to the chart's appVersion. */}}
{{- define "hybridroute.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) }}
{{- end }}
{{- end }}

{{- define "hybridroute.operatorImage" -}}
{{- include "hybridroute.imageRef" (dict "image" .Values.image "appVersion" .Chart.AppVersion) }}
{{- end }}

{{- define "hybridroute.routerImage" -}}
{{- include "hybridroute.imageRef" (dict "image" .Values.injection.image "appVersion" .Chart.AppVersion) }}
{{- end }}

{{- define "hybridroute.webhookServiceName" -}}
{{- printf "%s-webhook" (include "hybridroute.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hybridroute.webhookTLSSecretName" -}}
{{- printf "%s-webhook-tls" (include "hybridroute.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The kopf handler id of the injection webhook; kopf serves it at /<id>. Keep in sync with webhook.py. */}}
{{- define "hybridroute.webhookPath" -}}
/inject-router
{{- end }}

{{/* kopf peering object name; settings.py sets settings.peering.name to the same value. */}}
{{- define "hybridroute.peeringName" -}}
hybridroute
{{- end }}
