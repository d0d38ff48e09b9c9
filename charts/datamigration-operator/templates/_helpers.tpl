{{/*
Names, labels and the operator's RBAC rules, shared by the templates.
*/}}

{{/* The chart name, or nameOverride; at most 63 characters (a label value). */}}
{{- define "datamigration-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources, at most 63 characters: fullnameOverride, or the
release name (plus the chart name unless the release name already contains it).
*/}}
{{- define "datamigration-operator.fullname" -}}
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

{{/* chart-version, as the helm.sh/chart label wants it. */}}
{{- define "datamigration-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every resource of the release carries. */}}
{{- define "datamigration-operator.labels" -}}
helm.sh/chart: {{ include "datamigration-operator.chart" . }}
{{ include "datamigration-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: datamigration-operator
{{- end }}

{{/* The Deployment's selector: stable across upgrades, so never add to it. */}}
{{- define "datamigration-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "datamigration-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "datamigration-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "datamigration-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The leader election's Lease, in the release namespace. */}}
{{- define "datamigration-operator.leaseName" -}}
{{- default (include "datamigration-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The operator image: repository:tag, pinned by @digest when one is given. */}}
{{- define "datamigration-operator.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The default runner image: runner.image, else the operator's own image. */}}
{{- define "datamigration-operator.runnerImage" -}}
{{- .Values.runner.image | default (include "datamigration-operator.image" .) }}
{{- end }}

{{/* runner.jobPodLabels as DATAMIGRATION_JOB_POD_LABELS wants them: k=v,k=v (sorted). */}}
{{- define "datamigration-operator.jobPodLabels" -}}
{{- $pairs := list }}
{{- range $key, $value := .Values.runner.jobPodLabels }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/*
The operator's rules on namespaced resources: a ClusterRole's in cluster-wide mode, each watched
namespace's Role's in namespaced mode. Every API call the operator makes is in
operator/datamigration/k8s/cluster.py (ClusterApi), each method commented with its verb; kopf's
watches are the decorators in operator/datamigration/controller/handlers.py.
tests/packaging/test_chart_rbac.py checks these rules against both files, in both directions.
*/}}
{{- define "datamigration-operator.rules" -}}
# DataMigrations. get: Reconciler.reconcile_once reads the migration afresh before each decision
# (ClusterApi.get_migration). list, watch: kopf's watch behind migration_event and the
# by_workload index (handlers.py). No update/patch: the operator never writes spec or metadata.
- apiGroups: [datamigration.dev]
  resources: [datamigrations]
  verbs: [get, list, watch]
# The status subresource. patch: act() records each decision in status
# (ClusterApi.patch_migration_status).
- apiGroups: [datamigration.dev]
  resources: [datamigrations/status]
  verbs: [patch]
# Phase Jobs. create: act() starts a phase (ClusterApi.create_job); get: create_job adopts the
# Job a 409 says exists; list: observe() finds the migration's Jobs by its uid label
# (ClusterApi.list_jobs); watch: kopf's job_event; delete: an abort stops running Jobs
# (ClusterApi.delete_job).
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, get, list, watch, delete]
# Pods. list: observe() reads a failed Job's pods for the exit code, and the workload's pods,
# terminating ones included, for the rollout proof (ClusterApi.list_pods); watch: kopf's
# pod_event, so the last old pod leaving is seen at once.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# The workload. get: observe() (ClusterApi.get_deployment); list, watch: kopf's
# deployment_event; patch: codeRollout mode Apply sets the new image
# (ClusterApi.set_container_image, a strategic merge patch).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, patch]
# ReplicaSets. list: observe() proves the rollout from the Deployment's ReplicaSets
# (ClusterApi.list_replicasets, when the cache is not complete yet); list, watch: kopf's
# cache_replicasets index and replicaset_event (a ReplicaSet's counts wake the migrations
# waiting on its Deployment's rollout; reads come from that cache, controller/cache.py).
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [list, watch]
# The other workload kinds of spec.workloads. get: observe() reads each one named
# (ClusterApi.get_workload); list, watch: kopf's statefulset_event, daemonset_event and
# cronjob_event wake the migrations naming one; patch: codeRollout mode Apply sets the new image
# in the pod template (ClusterApi.set_container_image).
- apiGroups: [apps]
  resources: [statefulsets, daemonsets]
  verbs: [get, list, watch, patch]
# CronJobs, the same: get (ClusterApi.get_workload), list/watch (kopf's cronjob_event), patch
# (Apply sets the image in spec.jobTemplate, ClusterApi.set_container_image).
- apiGroups: [batch]
  resources: [cronjobs]
  verbs: [get, list, watch, patch]
# ControllerRevisions. list: observe() finds a DaemonSet's newest revision, the hash every pod
# must carry (ClusterApi.list_controller_revisions).
- apiGroups: [apps]
  resources: [controllerrevisions]
  verbs: [list]
# Argo Rollouts. get: observe() reads a Rollout named in spec.workloads (ClusterApi.get_workload),
# and Apply mode reads the container's index before its JSON patch; patch: Apply sets the image in
# spec.template only, never status (ClusterApi.set_container_image). No watch: the CRD may be
# absent, so an unproven Rollout is looked at again on a timer.
- apiGroups: [argoproj.io]
  resources: [rollouts]
  verbs: [get, patch]
# Secrets. get: observe() checks that spec.database's Secret has its key
# (ClusterApi.secret_has_key returns the key's presence, never a value); list, watch: kopf's
# cache_secrets index and secret_event, so that a migration waiting for its Secret is woken by
# the Secret's creation rather than polled. The index keeps key names only (cache.secret_keys);
# values are dropped as each event arrives, never stored, logged or put in status. The URL
# itself reaches phase Jobs only through the kubelet (a secretKeyRef in their env).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
# Events. create: act() posts an Event on each transition (ClusterApi.post_event); kopf's own
# event posting is off (handlers.configure).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .Values.runner.manageRbac }}
# Runner identity. create: before a namespace's first phase Job, act() creates the runner
# ServiceAccount (ClusterApi.ensure_runner_identity; a 409 means it exists, so no get).
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [create]
# Runner identity. create: ...and the RoleBinding of that ServiceAccount to the runner
# ClusterRole, in that namespace only (ClusterApi.ensure_runner_identity).
- apiGroups: [rbac.authorization.k8s.io]
  resources: [rolebindings]
  verbs: [create]
# Runner identity. bind: lets that RoleBinding reference the runner ClusterRole (the API
# server's escalation check), for that one ClusterRole by name (ClusterApi.ensure_runner_identity).
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterroles]
  verbs: [bind]
  resourceNames: [{{ .Values.runner.clusterRole.name | quote }}]
{{- end }}
{{- end }}

{{/* The one cluster-scoped read kopf needs, in both modes. */}}
{{- define "datamigration-operator.crdRules" -}}
# CRDs. list, watch: kopf observes CustomResourceDefinitions at run time (its resource_observer),
# so it serves datamigrations even if the CRD is created or changed after the operator started.
# No namespaces: kopf lists them only in namespaced mode, to match patterns; it is given exact
# names, and without the permission it serves exactly those (with a warning at start).
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end }}
