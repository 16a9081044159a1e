{{- define "burstpilot.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "burstpilot.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "burstpilot.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "burstpilot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "burstpilot.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "burstpilot.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The rules the operator needs in a namespace (or cluster-wide): exactly the calls it makes. */}}
{{- define "burstpilot.rules" -}}
# kopf watches the pools and keeps its bookkeeping (finalizer, annotations) with patches.
- apiGroups: [burstpilot.io]
  resources: [servingpools]
  verbs: [list, watch, patch]
- apiGroups: [burstpilot.io]
  resources: [servingpools/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# The pools' decision-core state (<pool>-burstpilot-state) and replica profiles (spec.profile.configMapRef).
# No list, watch or delete; writes are restricted further to the state ConfigMaps by the
# ValidatingAdmissionPolicy (rbac.restrictStateConfigMaps): RBAC cannot match a name pattern or a label.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch]
# Other autoscalers of the same target (conflict detection): listed, never changed.
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list]
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [list]
{{- range .Values.rbac.scaleTargets }}
- apiGroups: [{{ .apiGroup | quote }}]
  resources:
  {{- range .resources }}
    - {{ printf "%s/scale" . }}
  {{- end }}
  verbs: [get, patch]
{{- end }}
{{- end -}}

{{- define "burstpilot.username" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "burstpilot.serviceAccountName" .) -}}
{{- end -}}

{{- define "burstpilot.securityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
