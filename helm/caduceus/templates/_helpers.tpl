{{/* Names and labels. */}}
{{- define "caduceus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "caduceus.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else if contains (include "caduceus.name" .) .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "caduceus.name" .) | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "caduceus.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "caduceus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of one component's objects and pods: call with (dict "ctx" $ "component" "ray"). */}}
{{- define "caduceus.componentLabels" -}}
{{ include "caduceus.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "ray"). */}}
{{- define "caduceus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "caduceus.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "caduceus.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
The model presets: the GPU layout of each, kept in step with the service's preset table.
tp x pp GPUs per replica; placement is the Ray placement-group strategy the service uses.
*/}}
{{- define "caduceus.presets" -}}
hermes-3-405b: {hf: NousResearch/Hermes-3-Llama-3.1-405B-FP8, tp: 8, pp: 1, placement: STRICT_PACK, maxModelLen: 131072}
hermes-3-405b-bf16: {hf: NousResearch/Hermes-3-Llama-3.1-405B, tp: 8, pp: 2, placement: PACK, maxModelLen: 131072}
hermes-2-theta-70b: {hf: NousResearch/Hermes-2-Theta-Llama-3-70B, tp: 8, pp: 1, placement: STRICT_PACK, maxModelLen: 8192}
hermes-2-theta-70b-tp4: {hf: NousResearch/Hermes-2-Theta-Llama-3-70B, tp: 4, pp: 1, placement: STRICT_PACK, maxModelLen: 8192}
hermes-2-pro-8b: {hf: NousResearch/Hermes-2-Pro-Llama-3-8B, tp: 1, pp: 1, placement: STRICT_PACK, maxModelLen: 8192}
hermes-3-3b: {hf: NousResearch/Hermes-3-Llama-3.2-3B, tp: 1, pp: 1, placement: STRICT_PACK, maxModelLen: 131072}
{{- end }}

{{/*
The GPU worker group of one model entry, as YAML: gpus (per replica), gpusPerPod, podsPerReplica, replicas,
maxReplicas. Call with (dict "ctx" $ "model" $model). A replica of tp*pp GPUs takes
ceil(tp*pp / gpusPerNode) pods of min(tp*pp, gpusPerNode) GPUs each; the pod counts are the model's
replica bounds times that.
*/}}
{{- define "caduceus.gpuGroup" -}}
{{- $presets := include "caduceus.presets" .ctx | fromYaml }}
{{- $p := get $presets .model.preset }}
{{- if not $p }}{{ fail (printf "models: unknown preset %q" .model.preset) }}{{ end }}
{{- $perNode := int .ctx.Values.gpuWorkers.gpusPerNode }}
{{- $gpus := mul (int $p.tp) (int $p.pp) }}
{{- $pods := div (add $gpus $perNode -1) $perNode }}
{{- if and (eq $p.placement "STRICT_PACK") (gt $gpus $perNode) }}
{{- fail (printf "models: preset %s packs its %d GPUs on one node (STRICT_PACK), more than gpuWorkers.gpusPerNode=%d" .model.preset $gpus $perNode) }}
{{- end }}
{{- if and (gt $gpus $perNode) (ne (mod $gpus $perNode) 0) }}
{{- fail (printf "models: preset %s needs %d GPUs, not a multiple of gpuWorkers.gpusPerNode=%d" .model.preset $gpus $perNode) }}
{{- end }}
gpus: {{ $gpus }}
gpusPerPod: {{ min $gpus $perNode }}
podsPerReplica: {{ $pods }}
replicas: {{ mul $pods (int .model.replicas.min) }}
maxReplicas: {{ mul $pods (int .model.replicas.max) }}
{{- end }}

{{/* The custom Ray resource that each GPU of a preset's worker group carries, so its bundles land there. */}}
{{- define "caduceus.presetResource" -}}
caduceus-{{ . }}
{{- end }}

{{- define "caduceus.toolResource" -}}
caduceus-tools
{{- end }}

{{/* Carried by the head only: the API ingress and orchestrator replicas require it, so they run where their secrets are. */}}
{{- define "caduceus.controlResource" -}}
caduceus-control
{{- end }}

{{- define "caduceus.redisHost" -}}
{{ include "caduceus.fullname" . }}-redis
{{- end }}

{{- define "caduceus.otlpEndpoint" -}}
{{- if .Values.observability.otelCollector.enabled -}}
http://{{ include "caduceus.fullname" . }}-otel-collector:4317
{{- else -}}
{{ .Values.observability.otlpEndpoint }}
{{- end }}
{{- end }}

{{- define "caduceus.modelCacheClaim" -}}
{{ .Values.modelCache.existingClaim | default (printf "%s-model-cache" (include "caduceus.fullname" .)) }}
{{- end }}

{{/*
Checks that the schema cannot express; each fails rendering with a message naming the value.
*/}}
{{- define "caduceus.validate" -}}
{{- $seen := dict }}
{{- $scaling := false }}
{{- range .Values.models }}
{{- if hasKey $seen .preset }}{{ fail (printf "models: preset %q is listed twice" .preset) }}{{ end }}
{{- $_ := set $seen .preset true }}
{{- if gt (int .replicas.min) (int .replicas.max) }}{{ fail (printf "models[%s].replicas: min %d exceeds max %d" .preset (int .replicas.min) (int .replicas.max)) }}{{ end }}
{{- if ne (int .replicas.min) (int .replicas.max) }}{{ $scaling = true }}{{ end }}
{{- end }}
{{- range $name, $r := dict "orchestrator.replicas" .Values.orchestrator.replicas "toolWorkers.replicas" .Values.toolWorkers.replicas "toolWorkers.pool.replicas" .Values.toolWorkers.pool.replicas }}
{{- if gt (int $r.min) (int $r.max) }}{{ fail (printf "%s: min %d exceeds max %d" $name (int $r.min) (int $r.max)) }}{{ end }}
{{- end }}
{{- if and .Values.toolWorkers.pool.enabled (ne (int .Values.toolWorkers.pool.replicas.min) (int .Values.toolWorkers.pool.replicas.max)) }}{{ $scaling = true }}{{ end }}
{{- if and $scaling (not .Values.ray.autoscaler.enabled) }}
{{- fail "a replicas.max exceeds its replicas.min (models or toolWorkers.pool) but ray.autoscaler.enabled is false: enable the autoscaler or fix the pod counts" }}
{{- end }}
{{- if eq .Values.redis.mode "external" }}
{{- with .Values.redis.external }}
{{- if and .urlKey (not .existingSecret) }}{{ fail "redis.external.urlKey needs redis.external.existingSecret" }}{{ end }}
{{- if and .passwordKey (not .existingSecret) }}{{ fail "redis.external.passwordKey needs redis.external.existingSecret" }}{{ end }}
{{- if and (not .urlKey) (not .url) }}{{ fail "redis.mode=external needs redis.external.url or redis.external.existingSecret + urlKey" }}{{ end }}
{{- end }}
{{- end }}
{{- if not .Values.apiKeys.existingSecret }}{{ fail "apiKeys.existingSecret is required: the name of a secret holding the API keys" }}{{ end }}
{{- end }}

{{/*
The control plane's environment (the head: API ingress and orchestrator): the API keys and Redis. Worker
pods never get it; tool workers run model-directed code and must not hold credentials.
*/}}
{{- define "caduceus.controlEnv" -}}
- name: CADUCEUS_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.apiKeys.existingSecret }}
      key: {{ .Values.apiKeys.key }}
{{- if eq .Values.redis.mode "external" }}
{{- with .Values.redis.external }}
{{- if .urlKey }}
- name: CADUCEUS_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .urlKey }}
{{- else }}
- name: CADUCEUS_REDIS_URL
  value: {{ .url | quote }}
{{- end }}
{{- if .passwordKey }}
- name: CADUCEUS_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
{{- end }}
{{- end }}
{{- else }}
- name: CADUCEUS_REDIS_URL
  value: {{ printf "redis://%s:6379/0" (include "caduceus.redisHost" .) | quote }}
{{- if .Values.redis.internal.existingSecret }}
- name: CADUCEUS_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.internal.existingSecret }}
      key: {{ .Values.redis.internal.passwordKey }}
{{- end }}
{{- end }}
{{- end }}

{{/* Every Ray container: where traces go. */}}
{{- define "caduceus.telemetryEnv" -}}
{{- with include "caduceus.otlpEndpoint" . }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: OTEL_SERVICE_NAME
  value: caduceus
{{- end }}

{{- define "caduceus.hasRedisPassword" -}}
{{- if eq .Values.redis.mode "external" }}{{ if .Values.redis.external.passwordKey }}true{{ end }}
{{- else if .Values.redis.internal.existingSecret }}true{{ end }}
{{- end }}

{{/*
The serve config's `args`: the document deploy.app:build_app validates (see README, "The serve-config
arguments"). Keys are snake_case; every replica bound is {min, max}.
*/}}
{{- define "caduceus.serveArgs" -}}
api:
  ray_resource: {{ include "caduceus.controlResource" . }}
models:
{{- range .Values.models }}
  - preset: {{ .preset }}
    replicas: {min: {{ int .replicas.min }}, max: {{ int .replicas.max }}}
    max_ongoing_requests: {{ int .maxOngoingRequests }}
    ray_resource: {{ include "caduceus.presetResource" .preset }}
{{- end }}
orchestrator:
  replicas: {min: {{ int .Values.orchestrator.replicas.min }}, max: {{ int .Values.orchestrator.replicas.max }}}
  max_concurrent_runs: {{ int .Values.orchestrator.maxConcurrentRuns }}
  runs_per_replica: {{ int .Values.orchestrator.runsPerReplica }}
  upscale_delay_s: {{ .Values.orchestrator.upscaleDelaySeconds }}
  downscale_delay_s: {{ .Values.orchestrator.downscaleDelaySeconds }}
  ray_resource: {{ include "caduceus.controlResource" . }}
tool_workers:
  replicas: {min: {{ int .Values.toolWorkers.replicas.min }}, max: {{ int .Values.toolWorkers.replicas.max }}}
  max_concurrent_calls: {{ int .Values.toolWorkers.maxConcurrentCalls }}
  spare_hosts: {{ int .Values.toolWorkers.spareHosts }}
  ray_resource: {{ if .Values.toolWorkers.pool.enabled }}{{ include "caduceus.toolResource" . }}{{ else }}{{ include "caduceus.controlResource" . }}{{ end }}
redis:
  url_env: CADUCEUS_REDIS_URL
  password_env: {{ if include "caduceus.hasRedisPassword" . }}CADUCEUS_REDIS_PASSWORD{{ else }}null{{ end }}
api_keys_env: CADUCEUS_API_KEYS
otlp_endpoint: {{ include "caduceus.otlpEndpoint" . | default "null" }}
model_cache_dir: {{ if .Values.modelCache.enabled }}{{ .Values.modelCache.mountPath }}{{ else }}null{{ end }}
{{- end }}
