{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "lookalike.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects; each component appends -<component>. */}}
{{- define "lookalike.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lookalike.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lookalike.labels" -}}
helm.sh/chart: {{ include "lookalike.chart" . }}
app.kubernetes.io/name: {{ include "lookalike.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lookalike
{{- end }}

{{/* Selector labels of the whole release (the mesh). */}}
{{- define "lookalike.meshSelector" -}}
app.kubernetes.io/name: {{ include "lookalike.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway") */}}
{{- define "lookalike.selector" -}}
{{ include "lookalike.meshSelector" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "lookalike.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lookalike.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The components, one Deployment each: values key, Dockerfile target (image name), whether it uses the
object store (S3 credentials), whether it has a Service, whether it autoscales.
*/}}
{{- define "lookalike.components" -}}
gateway: {values: gateway, target: gateway, s3: true, service: true, hpa: false}
ingest: {values: ingest, target: ingest, s3: true, service: true, hpa: false}
ingest-worker: {values: ingestWorker, target: ingest-worker, s3: true, service: false, hpa: true}
encoder: {values: encoder, target: encoder, s3: false, service: true, hpa: true}
search: {values: search, target: search, s3: false, service: true, hpa: true}
rerank: {values: rerank, target: rerank, s3: true, service: true, hpa: false}
{{- end }}

{{/* Image of a component: (dict "root" $ "target" "gateway" "values" .Values.gateway) */}}
{{- define "lookalike.image" -}}
{{- $root := .root }}
{{- $override := .values.image | default dict }}
{{- $repository := $override.repository | default (printf "%s/%s" $root.Values.image.repository .target) }}
{{- if and $root.Values.image.registry (not $override.repository) }}
{{- $repository = printf "%s/%s" $root.Values.image.registry $repository }}
{{- end }}
{{- $tag := $override.tag | default $root.Values.image.tag | default $root.Chart.AppVersion }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}

{{/* gRPC address of a component's Service. */}}
{{- define "lookalike.address" -}}
{{- printf "%s-%s:50051" (include "lookalike.fullname" .root) .component }}
{{- end }}

{{- define "lookalike.s3SecretName" -}}
{{- .Values.s3Credentials.existingSecret | default (printf "%s-s3" (include "lookalike.fullname" .)) }}
{{- end }}

{{/* Endpoints: the release's own server when its upstream chart is enabled, else the value given. */}}
{{- define "lookalike.milvusUri" -}}
{{- if .Values.milvus.enabled }}{{ printf "http://%s-milvus:19530" .Release.Name }}{{ else }}{{ .Values.endpoints.milvus.uri }}{{ end }}
{{- end }}

{{- define "lookalike.s3Endpoint" -}}
{{- if .Values.minio.enabled }}{{ printf "%s-minio:9000" .Release.Name }}{{ else }}{{ .Values.endpoints.s3.endpoint }}{{ end }}
{{- end }}

{{- define "lookalike.natsUrl" -}}
{{- if .Values.nats.enabled }}{{ printf "nats://%s-nats:4222" .Release.Name }}{{ else }}{{ .Values.endpoints.nats.url }}{{ end }}
{{- end }}

{{/* Encoder backend and Triton address (triton.enabled wins over the values given). */}}
{{- define "lookalike.encoderBackend" -}}
{{- if .Values.triton.enabled }}triton{{ else }}{{ .Values.encoder.backend }}{{ end }}
{{- end }}

{{- define "lookalike.tritonUrl" -}}
{{- if .Values.triton.enabled }}
{{- printf "%s-triton:8001" (include "lookalike.fullname" .) }}
{{- else if eq .Values.encoder.backend "triton" }}
{{- required "encoder.backend=triton needs triton.enabled=true or endpoints.triton.url" .Values.endpoints.triton.url }}
{{- else }}
{{- .Values.endpoints.triton.url }}
{{- end }}
{{- end }}

{{/* ConfigMap data; also hashed into the pods' checksum/config annotation. */}}
{{- define "lookalike.configData" -}}
LOOKALIKE_LOG_LEVEL: {{ .Values.log.level | quote }}
LOOKALIKE_LOG_FORMAT: {{ .Values.log.format | quote }}
LOOKALIKE_GATEWAY_ADDR: {{ include "lookalike.address" (dict "root" . "component" "gateway") | quote }}
LOOKALIKE_INGEST_ADDR: {{ include "lookalike.address" (dict "root" . "component" "ingest") | quote }}
LOOKALIKE_ENCODER_ADDR: {{ include "lookalike.address" (dict "root" . "component" "encoder") | quote }}
LOOKALIKE_SEARCH_ADDR: {{ include "lookalike.address" (dict "root" . "component" "search") | quote }}
LOOKALIKE_RERANK_ADDR: {{ include "lookalike.address" (dict "root" . "component" "rerank") | quote }}
LOOKALIKE_LISTEN_ADDR: "0.0.0.0:50051"
LOOKALIKE_METRICS_PORT: {{ .Values.metrics.port | quote }}
LOOKALIKE_SHUTDOWN_GRACE_S: {{ .Values.shutdownGraceSeconds | quote }}
LOOKALIKE_MILVUS_URI: {{ include "lookalike.milvusUri" . | quote }}
LOOKALIKE_S3_ENDPOINT: {{ include "lookalike.s3Endpoint" . | quote }}
LOOKALIKE_S3_SECURE: {{ .Values.endpoints.s3.secure | quote }}
LOOKALIKE_S3_REGION: {{ .Values.endpoints.s3.region | quote }}
LOOKALIKE_S3_BUCKET: {{ .Values.endpoints.s3.bucket | quote }}
{{- with .Values.endpoints.s3.publicEndpoint }}
LOOKALIKE_S3_PUBLIC_ENDPOINT: {{ . | quote }}
{{- end }}
LOOKALIKE_NATS_URL: {{ include "lookalike.natsUrl" . | quote }}
LOOKALIKE_INGEST_WORKERS: {{ .Values.ingestWorker.workersPerPod | quote }}
{{- range $key, $value := .Values.extraConfig }}
{{ $key }}: {{ $value | quote }}
{{- end }}
{{- end }}
