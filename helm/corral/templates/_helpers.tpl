{{/*
Names, labels and the pieces of the pod spec shared by the Deployment and the test hook.
*/}}

{{- define "corral.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "corral.fullname" -}}
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

{{- define "corral.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "corral.selectorLabels" -}}
app.kubernetes.io/name: {{ include "corral.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "corral.labels" -}}
helm.sh/chart: {{ include "corral.chart" . }}
{{ include "corral.selectorLabels" . }}
app.kubernetes.io/version: {{ include "corral.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: corral
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "corral.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "corral.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "corral.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* registry/repository:tag or @digest */}}
{{- define "corral.image" -}}
{{- $repo := .Values.image.repository }}
{{- if .Values.image.registry }}{{ $repo = printf "%s/%s" .Values.image.registry $repo }}{{ end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (include "corral.imageTag" .) }}
{{- end }}
{{- end }}

{{/* The queues list as the node's comma string. */}}
{{- define "corral.queues" -}}
{{- join "," .Values.corral.queues }}
{{- end }}

{{- define "corral.mountTasks" -}}
{{- if or .Values.tasks.files .Values.tasks.existingConfigMap }}true{{ end }}
{{- end }}

{{- define "corral.tasksDir" -}}
{{- if include "corral.mountTasks" . }}{{ .Values.tasks.mountPath }}{{ else }}{{ .Values.corral.tasksDir }}{{ end }}
{{- end }}

{{- define "corral.configDir" -}}/etc/corral/config{{- end }}

{{/* Secret holding the Redis password: the user's, or the chart's for an inline password. */}}
{{- define "corral.redisSecretName" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecret }}{{ else }}{{ include "corral.fullname" . }}-redis{{ end }}
{{- end }}

{{- define "corral.sentinelSecretName" -}}
{{- default .Values.redis.existingSecret .Values.redis.sentinel.existingSecret }}
{{- end }}

{{- define "corral.redisPasswordKey" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretPasswordKey }}{{ else if .Values.redis.password }}redis-password{{ end }}
{{- end }}

{{/* Grace period: explicit, or the drain timeout plus 10 s. */}}
{{- define "corral.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (int .Values.corral.shutdownTimeout) 10 }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Replicas that are always running: the floor that decides whether a PDB makes sense. */}}
{{- define "corral.minReplicas" -}}
{{- if .Values.keda.enabled }}{{ int .Values.keda.minReplicaCount }}
{{- else if .Values.autoscaling.enabled }}{{ int .Values.autoscaling.minReplicas }}
{{- else }}{{ int .Values.replicaCount }}{{ end }}
{{- end }}

{{/*
Cross-field checks the JSON schema cannot express readably. Included by every template that
renders an object, so `helm template -s` of any one file still checks.
*/}}
{{- define "corral.validate" -}}
{{- $v := .Values }}
{{- if and (not $v.redis.url) (not $v.redis.existingSecretUrlKey) (not $v.redis.sentinel.enabled) }}
{{- fail "redis: a Redis connection is required. Set redis.url (e.g. redis://redis-master:6379/0), or redis.existingSecret + redis.existingSecretUrlKey, or redis.sentinel.enabled with hosts and masterName. Without one every pod would start a private embedded Redis and elect itself." }}
{{- end }}
{{- with $v.redis.url }}
{{- $u := urlParse . }}
{{- if and $u.userinfo (contains ":" $u.userinfo) }}
{{- fail "redis.url holds a password, and values end up in the pod spec as plain text: put the whole URL in a Secret (redis.existingSecret + redis.existingSecretUrlKey), or only the password (redis.existingSecret + redis.existingSecretPasswordKey) and keep redis.url without it" }}
{{- end }}
{{- end }}
{{- if and $v.redis.sentinel.existingSecretPasswordKey (not (or $v.redis.sentinel.existingSecret $v.redis.existingSecret)) }}
{{- fail "redis.sentinel.existingSecretPasswordKey needs redis.sentinel.existingSecret (or redis.existingSecret): the Secret holding that key" }}
{{- end }}
{{- if and (or $v.redis.sentinel.existingSecretPasswordKey $v.redis.sentinel.username $v.redis.sentinel.tls) (not $v.redis.sentinel.enabled) }}
{{- fail "redis.sentinel.existingSecretPasswordKey, username and tls apply to Sentinels: set redis.sentinel.enabled" }}
{{- end }}
{{- if and $v.redis.existingSecretUrlKey (not $v.redis.existingSecret) }}
{{- fail "redis.existingSecretUrlKey needs redis.existingSecret (the Secret holding that key)" }}
{{- end }}
{{- if and $v.redis.existingSecretPasswordKey (not $v.redis.existingSecret) }}
{{- fail "redis.existingSecretPasswordKey needs redis.existingSecret (the Secret holding that key)" }}
{{- end }}
{{- if and $v.redis.password $v.redis.existingSecret }}
{{- fail "redis.password and redis.existingSecret are exclusive: keep the password in the existing Secret" }}
{{- end }}
{{- if $v.redis.sentinel.enabled }}
{{- if not $v.redis.sentinel.masterName }}
{{- fail "redis.sentinel.masterName is required when redis.sentinel.enabled" }}
{{- end }}
{{- if not $v.redis.sentinel.hosts }}
{{- fail "redis.sentinel.hosts needs at least one host:port when redis.sentinel.enabled" }}
{{- end }}
{{- end }}
{{- if and $v.redis.tls.enabled (not $v.redis.tls.existingSecret) (or $v.redis.tls.certKey $v.redis.tls.keyKey) }}
{{- fail "redis.tls.certKey/keyKey need redis.tls.existingSecret" }}
{{- end }}
{{- if ne (empty $v.redis.tls.certKey) (empty $v.redis.tls.keyKey) }}
{{- fail "redis.tls.certKey and redis.tls.keyKey go together (client certificate and its key)" }}
{{- end }}
{{- if and (eq $v.corral.election "zookeeper") (not $v.zookeeper.hosts) }}
{{- fail "zookeeper.hosts is required when corral.election is zookeeper (Redis is still required for jobs)" }}
{{- end }}
{{- if and $v.keda.enabled $v.autoscaling.enabled }}
{{- fail "keda.enabled and autoscaling.enabled are exclusive: KEDA creates its own HorizontalPodAutoscaler" }}
{{- end }}
{{- if and $v.metrics.serviceMonitor.enabled $v.metrics.podMonitor.enabled }}
{{- fail "metrics.serviceMonitor.enabled and metrics.podMonitor.enabled are exclusive: both would scrape every pod twice" }}
{{- end }}
{{- if lt (int $v.keda.minReplicaCount) 1 }}
{{- fail "keda.minReplicaCount must be at least 1: the leader (scheduler, periodic jobs, recovery) runs inside these pods" }}
{{- end }}
{{- $grace := int (include "corral.terminationGracePeriodSeconds" .) }}
{{- $need := add (int $v.corral.shutdownTimeout) 5 }}
{{- if lt $grace $need }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least corral.shutdownTimeout + 5 (%d): the kubelet would SIGKILL nodes still draining jobs" $grace $need) }}
{{- end }}
{{- range $key := list "namespace" "redis" "redis_url" "redis_password" "redis_sentinels" "redis_sentinel_master" "tasks_dir" "http_host" "http_port" "election" "zookeeper_hosts" "node_id" "config" }}
{{- if hasKey $v.corral.config $key }}
{{- fail (printf "corral.config.%s: the chart sets this itself (env or flag, which win over corral.toml); use its chart value instead (corral.*, redis.*, zookeeper.*, tasks.*)" $key) }}
{{- end }}
{{- end }}
{{- if and $v.tasks.files $v.tasks.existingConfigMap }}
{{- fail "tasks.files and tasks.existingConfigMap are exclusive" }}
{{- end }}
{{- if eq (include "corral.imageTag" .) "latest" }}
{{- fail "image.tag latest is not allowed: pin a version (or image.digest) so every pod runs the same code" }}
{{- end }}
{{- if and $v.keda.enabled (not $v.keda.prometheus.serverAddress) }}
{{- fail "keda.prometheus.serverAddress is required with keda.enabled (e.g. http://prometheus-operated.monitoring:9090): KEDA scales on jobs waiting plus busy workers, read from Prometheus; on waiting jobs alone a scale-down stops pods in the middle of jobs" }}
{{- end }}
{{- end }}

{{/* corral.toml: how the node behaves. Where it connects and listens are env and flags. */}}
{{- define "corral.configToml" -}}
{{- $c := .Values.corral }}
{{- $cfg := dict "queues" (include "corral.queues" .) "concurrency" (int $c.concurrency) "scheduler" $c.scheduler "log_format" $c.logFormat "log_level" $c.logLevel "shutdown_timeout" $c.shutdownTimeout }}
{{- if not (kindIs "invalid" $c.lease) }}{{ $_ := set $cfg "lease" $c.lease }}{{ end }}
{{- /* Sentinel: a leader renewal counts once a replica has it (the old primary's side stops early) */}}
{{- if and .Values.redis.sentinel.enabled (eq $c.election "redis") }}{{ $_ := set $cfg "leader_wait_replicas" 1 }}{{ end }}
{{- $cfg = mergeOverwrite $cfg (deepCopy $c.config) -}}
# corral.toml rendered by the Corral Helm chart; keys are `corral node` flags with dashes as
# underscores. Flags given on the command line win over this file.
{{ toToml $cfg }}
{{- end }}

{{/*
Container args of `corral node` (exec form: Corral is PID 1 and receives SIGTERM): what ties the
node to this pod (config file, tasks mount, listening address, election backend).
*/}}
{{- define "corral.args" -}}
- node
- --config
- {{ include "corral.configDir" . }}/corral.toml
- --tasks-dir
- {{ include "corral.tasksDir" . | quote }}
- --http-host
- "0.0.0.0"
- --http-port
- {{ .Values.corral.httpPort | quote }}
- --election
- {{ .Values.corral.election | quote }}
{{- if eq .Values.corral.election "zookeeper" }}
- --zookeeper-hosts
- {{ join "," .Values.zookeeper.hosts | quote }}
{{- end }}
{{- range .Values.corral.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Container env: identity from the downward API, and the Redis connection as the env form of the
node's flags (CORRAL_REDIS_URL = --redis-url, ...), so every `corral` command run in the pod
(`kubectl exec deploy/<name> -- corral status`) finds the same Redis and namespace.
*/}}
{{- define "corral.env" -}}
- name: CORRAL_NODE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: CORRAL_NAMESPACE
  value: {{ .Values.corral.namespace | quote }}
{{- with include "corral.processes" . }}
- name: CORRAL_PROCESSES
  value: {{ . | quote }}
{{- end }}
{{- if .Values.redis.existingSecretUrlKey }}
- name: CORRAL_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret | quote }}
      key: {{ .Values.redis.existingSecretUrlKey | quote }}
{{- else if .Values.redis.url }}
- name: CORRAL_REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{- end }}
{{- with include "corral.redisPasswordKey" . }}
- name: CORRAL_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "corral.redisSecretName" $ | quote }}
      key: {{ . | quote }}
{{- end }}
{{- if .Values.redis.sentinel.enabled }}
- name: CORRAL_REDIS_SENTINELS
  value: {{ join "," .Values.redis.sentinel.hosts | quote }}
- name: CORRAL_REDIS_SENTINEL_MASTER
  value: {{ .Values.redis.sentinel.masterName | quote }}
{{- with .Values.redis.sentinel.existingSecretPasswordKey }}
- name: CORRAL_REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "corral.sentinelSecretName" $ | quote }}
      key: {{ . | quote }}
{{- end }}
{{- with .Values.redis.sentinel.username }}
- name: CORRAL_REDIS_SENTINEL_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if .Values.redis.sentinel.tls }}
- name: CORRAL_REDIS_SENTINEL_TLS
  value: "true"
{{- end }}
{{- end }}
{{- if .Values.redis.tls.enabled }}
{{- if .Values.redis.tls.existingSecret }}
- name: CORRAL_REDIS_TLS_CA_FILE
  value: {{ printf "%s/%s" .Values.redis.tls.mountPath .Values.redis.tls.caKey | quote }}
{{- end }}
{{- if .Values.redis.tls.certKey }}
- name: CORRAL_REDIS_TLS_CERT_FILE
  value: {{ printf "%s/%s" .Values.redis.tls.mountPath .Values.redis.tls.certKey | quote }}
- name: CORRAL_REDIS_TLS_KEY_FILE
  value: {{ printf "%s/%s" .Values.redis.tls.mountPath .Values.redis.tls.keyKey | quote }}
{{- end }}
{{- end }}
{{- include "corral.uiEnv" . | nindent 0 }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Size of the cpu_bound process pool (`--processes`): corral.processes when set, else the container's
CPU limit rounded up, else its CPU request rounded up (a pod without a limit may burst, but its
request is what it is sized for); empty without either (the node then reads its cgroup quota).
*/}}
{{- define "corral.processes" -}}
{{- if .Values.corral.processes -}}
{{ .Values.corral.processes }}
{{- else -}}
{{- $res := .Values.resources | default dict -}}
{{- $cpu := "" -}}
{{- if and $res.limits $res.limits.cpu -}}
{{- $cpu = toString $res.limits.cpu -}}
{{- else if and $res.requests $res.requests.cpu -}}
{{- $cpu = toString $res.requests.cpu -}}
{{- end -}}
{{- if $cpu -}}
{{- if hasSuffix "m" $cpu -}}
{{ max 1 (ceil (divf (trimSuffix "m" $cpu | float64) 1000) | int) }}
{{- else -}}
{{ max 1 (ceil ($cpu | float64) | int) }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
The Corral cluster a scraped node belongs to, for the alerts and the dashboard: the Redis key
namespace as the `redis_namespace` target label (the Kubernetes `namespace` label comes from the
Prometheus Operator). Every release on one Redis namespace in one Kubernetes namespace (e.g. a
worker-only release and the release that leads) is one cluster.
*/}}
{{- define "corral.clusterRelabelings" -}}
- action: replace
  targetLabel: redis_namespace
  replacement: {{ .Values.corral.namespace | quote }}
- action: replace
  targetLabel: helm_release
  replacement: {{ .Release.Name | quote }}
{{- end }}

{{/*
TCP ports the pods connect to: the Redis URL's (6379 by default), every Sentinel's, every
ZooKeeper host's, and networkPolicy.egressPorts; one per line.
*/}}
{{- define "corral.egressPorts" -}}
{{- $ports := list }}
{{- with .Values.redis.url }}
{{- $host := (urlParse .).host }}
{{- $ports = append $ports (ternary (regexReplaceAll "^.*:" $host "") "6379" (regexMatch ":[0-9]+$" $host)) }}
{{- end }}
{{- if .Values.redis.sentinel.enabled }}
{{- range .Values.redis.sentinel.hosts }}{{ $ports = append $ports (regexReplaceAll "^.*:" . "") }}{{ end }}
{{- end }}
{{- if eq .Values.corral.election "zookeeper" }}
{{- range .Values.zookeeper.hosts }}{{ $ports = append $ports (regexReplaceAll "^.*:" . "") }}{{ end }}
{{- end }}
{{- range .Values.networkPolicy.egressPorts }}{{ $ports = append $ports (toString .) }}{{ end }}
{{- range (uniq $ports) }}
{{ . }}
{{- end }}
{{- end }}

{{/*
KEDA TriggerAuthentication parameters (secretTargetRef entries), empty when there are none: the
Redis password and, for a URL kept in a Secret, the address; the Sentinels' password; TLS
(tls=enable from the chart's Secret, ca/cert/key from redis.tls.existingSecret).
*/}}
{{- define "corral.kedaAuthParams" -}}
{{- $v := .Values }}
{{- with include "corral.redisPasswordKey" . }}
- parameter: password
  name: {{ include "corral.redisSecretName" $ | quote }}
  key: {{ . | quote }}
{{- end }}
{{- if and $v.keda.existingSecretAddressKey (not $v.keda.redisAddress) (not $v.redis.sentinel.enabled) }}
- parameter: address
  name: {{ $v.redis.existingSecret | quote }}
  key: {{ $v.keda.existingSecretAddressKey | quote }}
{{- end }}
{{- if and $v.redis.sentinel.enabled $v.redis.sentinel.existingSecretPasswordKey }}
- parameter: sentinelPassword
  name: {{ include "corral.sentinelSecretName" . | quote }}
  key: {{ $v.redis.sentinel.existingSecretPasswordKey | quote }}
{{- end }}
{{- if and $v.redis.tls.enabled $v.redis.tls.existingSecret }}
- parameter: tls
  name: {{ printf "%s-keda-tls" (include "corral.fullname" .) | quote }}
  key: tls
- parameter: ca
  name: {{ $v.redis.tls.existingSecret | quote }}
  key: {{ $v.redis.tls.caKey | quote }}
{{- if $v.redis.tls.certKey }}
- parameter: cert
  name: {{ $v.redis.tls.existingSecret | quote }}
  key: {{ $v.redis.tls.certKey | quote }}
- parameter: key
  name: {{ $v.redis.tls.existingSecret | quote }}
  key: {{ $v.redis.tls.keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}
