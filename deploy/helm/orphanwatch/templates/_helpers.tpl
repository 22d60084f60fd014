{{/*
The chart's name, or nameOverride.
*/}}
{{- define "orphanwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The objects' name: fullnameOverride, else the release name, with the
chart's name appended unless the release name contains it (release
"orphanwatch" gives "orphanwatch", as deploy/kubernetes names them).
Truncated to 63 characters, a DNS label's limit.
*/}}
{{- define "orphanwatch.fullname" -}}
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
Labels of every object: the selector's, and Helm's.
*/}}
{{- define "orphanwatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "orphanwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
What tells this release's objects from another's.
*/}}
{{- define "orphanwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "orphanwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The agent's pods: the DaemonSet's selector, the Service's and the monitors'.
*/}}
{{- define "orphanwatch.agentSelectorLabels" -}}
{{ include "orphanwatch.selectorLabels" . }}
app.kubernetes.io/component: agent
{{- end }}

{{- define "orphanwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "orphanwatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: the existing ServiceAccount to run as, when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "orphanwatch.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The agent listens on this port: fixed, so that Prometheus' instance label
is stable (README, "Alerting").
*/}}
{{- define "orphanwatch.metricsPort" -}}
9877
{{- end }}

{{/*
The monitors' relabelings. The operator labels each target with the scraped
pod's namespace, pod and container: orphanwatch's own. orphanwatch's series
carry those labels for the PostgreSQL container they are about, so the
target's must go, or Prometheus would rename the real ones to
exported_namespace/exported_pod/exported_container and give series without
them orphanwatch's pod name. The node is the incident's node.
*/}}
{{- define "orphanwatch.relabelings" -}}
- action: replace
  sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: node
- action: labeldrop
  regex: (namespace|pod|container)
{{- end }}

{{/*
The critical priority classes, which clusters may admit only under a quota.
*/}}
{{- define "orphanwatch.criticalPriority" -}}
{{- has .Values.priorityClassName (list "system-node-critical" "system-cluster-critical") }}
{{- end }}
