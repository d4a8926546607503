{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "group-enriched-consumer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. The release name alone when it already contains the chart name.
*/}}
{{- define "group-enriched-consumer.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "group-enriched-consumer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "group-enriched-consumer.labels" -}}
helm.sh/chart: {{ include "group-enriched-consumer.chart" . }}
{{ include "group-enriched-consumer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: consumer
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels: stable for the life of a release.
*/}}
{{- define "group-enriched-consumer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "group-enriched-consumer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Service account name.
*/}}
{{- define "group-enriched-consumer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "group-enriched-consumer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image.
*/}}
{{- define "group-enriched-consumer.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Secret holding the Track API token, and the key in it.
*/}}
{{- define "group-enriched-consumer.tokenSecretName" -}}
{{- if .Values.trackApi.existingSecret }}
{{- .Values.trackApi.existingSecret }}
{{- else }}
{{- printf "%s-track-api" (include "group-enriched-consumer.fullname" .) }}
{{- end }}
{{- end }}

{{- define "group-enriched-consumer.tokenSecretKey" -}}
{{- if .Values.trackApi.existingSecret }}
{{- .Values.trackApi.existingSecretKey }}
{{- else }}
{{- "token" }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the consumer's drain time plus a margin for the
last commit and process exit.
*/}}
{{- define "group-enriched-consumer.terminationGracePeriodSeconds" -}}
{{- add .Values.shutdownTimeoutSeconds .Values.terminationGraceMarginSeconds }}
{{- end }}

{{/*
Checks across values that the schema cannot express. Included by the Deployment,
so every render runs them.
*/}}
{{- define "group-enriched-consumer.validate" -}}
{{- if not .Values.kafka.bootstrapServers }}
{{- fail "kafka.bootstrapServers is required" }}
{{- end }}
{{- if and .Values.trackApi.existingSecret .Values.trackApi.token }}
{{- fail "set trackApi.existingSecret or trackApi.token, not both" }}
{{- end }}
{{- if not (or .Values.trackApi.existingSecret .Values.trackApi.token) }}
{{- fail "the Track API token is required: set trackApi.existingSecret (recommended) or trackApi.token" }}
{{- end }}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled (HPA) and keda.enabled are mutually exclusive: enable one" }}
{{- end }}
{{- /* The consumer refuses (exit 2) a drain budget not below its stall timeout: a revoke may wait that long. */}}
{{- $stall := 60.0 }}
{{- range .Values.extraEnv }}{{- if eq .name "HEALTH_STALL_TIMEOUT_S" }}{{- $stall = float64 .value }}{{- end }}{{- end }}
{{- if ge (float64 .Values.shutdownTimeoutSeconds) $stall }}
{{- fail (printf "shutdownTimeoutSeconds (%v) must be below HEALTH_STALL_TIMEOUT_S (%v, 60 unless set in extraEnv): the consumer refuses to start otherwise" .Values.shutdownTimeoutSeconds $stall) }}
{{- end }}
{{- $partitions := int .Values.kafka.partitions }}
{{- range $name, $as := dict "autoscaling" .Values.autoscaling "keda" .Values.keda }}
{{- if $as.enabled }}
{{- if gt (int $as.maxReplicas) $partitions }}
{{- fail (printf "%s.maxReplicas (%d) must not exceed kafka.partitions (%d): consumers beyond the partition count sit idle" $name (int $as.maxReplicas) $partitions) }}
{{- end }}
{{- if gt (int $as.minReplicas) (int $as.maxReplicas) }}
{{- fail (printf "%s.minReplicas (%d) must not exceed %s.maxReplicas (%d)" $name (int $as.minReplicas) $name (int $as.maxReplicas)) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (not .Values.autoscaling.enabled) (not .Values.keda.enabled) (gt (int .Values.replicaCount) $partitions) }}
{{- fail (printf "replicaCount (%d) must not exceed kafka.partitions (%d): consumers beyond the partition count sit idle" (int .Values.replicaCount) $partitions) }}
{{- end }}
{{- end }}
