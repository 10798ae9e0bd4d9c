{{/* Chart name, truncated to a DNS label. */}}
{{- define "datasweep.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name when it already contains the chart name (release "datasweep" -> "datasweep"). */}}
{{- define "datasweep.fullname" -}}
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

{{/* Cluster-scoped objects are shared by every release in the cluster: prefix them with the namespace. */}}
{{- define "datasweep.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "datasweep.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "datasweep.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "datasweep.selectorLabels" -}}
app.kubernetes.io/name: {{ include "datasweep.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "datasweep.labels" -}}
helm.sh/chart: {{ include "datasweep.chart" . }}
{{ include "datasweep.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: datasweep
{{- end }}

{{- define "datasweep.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "datasweep.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false (the operator needs an existing ServiceAccount)" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespaces the operator watches in namespace mode (default: the release namespace), de-duplicated. */}}
{{- define "datasweep.watchedNamespaces" -}}
{{- $namespaces := .Values.watch.namespaces | default (list .Release.Namespace) }}
{{- toJson (uniq $namespaces) }}
{{- end }}

{{/* Namespaces that get the worker ServiceAccount: every watched one, or the release namespace cluster-wide. */}}
{{- define "datasweep.workerNamespaces" -}}
{{- if .Values.watch.allNamespaces }}
{{- toJson (list .Release.Namespace) }}
{{- else }}
{{- include "datasweep.watchedNamespaces" . }}
{{- end }}
{{- end }}

{{- define "datasweep.dataClaimName" -}}
{{- default .Values.data.claimName .Values.data.existingClaim }}
{{- end }}

{{/* REPO:TAG or REPO@DIGEST; the tag defaults to the chart's appVersion. Argument: dict "image" ... "root" $. */}}
{{- define "datasweep.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag | toString) }}
{{- end }}
{{- end }}

{{/* The operator's config file (mounted at /etc/datasweep/config.yaml). */}}
{{- define "datasweep.config" -}}
{{- $jobDefaults := deepCopy .Values.jobDefaults }}
{{- $_ := set $jobDefaults "serviceAccountName" .Values.workerServiceAccount.name }}
{{- $config := dict
  "dataRoot" .Values.data.dataRoot
  "dataClaimName" (include "datasweep.dataClaimName" .)
  "volumes" .Values.sourceVolumes
  "images" (dict
    "worker" (include "datasweep.imageRef" (dict "image" .Values.workerImages.worker "root" .))
    "trainer" (include "datasweep.imageRef" (dict "image" .Values.workerImages.trainer "root" .))
    "pullPolicy" .Values.workerImages.pullPolicy
    "pullSecrets" .Values.imagePullSecrets)
  "jobDefaults" $jobDefaults
  "queueName" .Values.queueName
  "maxPoints" .Values.maxPoints
  "retries" .Values.retries
  "retryBackoffSeconds" .Values.retryBackoffSeconds
  "inputWaitTimeoutSeconds" .Values.inputWaitTimeoutSeconds
  "podsNotCreatedTimeoutSeconds" .Values.podsNotCreatedTimeoutSeconds
  "resyncPeriodSeconds" .Values.resyncPeriodSeconds
  "podStuckReportSeconds" .Values.podStuckReportSeconds
  "podStuckTimeoutSeconds" .Values.podStuckTimeoutSeconds
  "apiQps" .Values.scale.apiQps
  "apiBurst" .Values.scale.apiBurst
  "createConcurrency" .Values.scale.createConcurrency
  "maxJobsPerNamespace" .Values.scale.maxJobsPerNamespace
  "statusIntervalSeconds" .Values.scale.statusIntervalSeconds
  "progressIntervalSeconds" .Values.scale.progressIntervalSeconds
  "progressWritesPerSecond" .Values.scale.progressWritesPerSecond
  "peeringLifetimeSeconds" .Values.scale.peeringLifetimeSeconds
}}
{{- toYaml $config }}
{{- end }}

{{/*
RBAC rules, explicit verbs only (no wildcards). Framework rules are what Kopf itself needs; application rules
are what datasweep's handlers need. With one replica Kopf runs standalone (no kopfpeerings access); with more,
the replicas peer through KopfPeering objects.
*/}}
{{- define "datasweep.rbac.frameworkClusterRules" -}}
# Kopf discovers the custom resources it serves by scanning CRDs.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
# Kopf follows namespaces when the watched set is given as patterns.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}

{{- define "datasweep.rbac.frameworkNamespacedRules" -}}
# Kopf posts Kubernetes events for handler progress and errors (CacheHit, JobCreated, ...).
- apiGroups: [""]
  resources: ["events"]
  # list, watch: the Job controller reports pods it cannot create only as FailedCreate Events
  verbs: ["create", "patch", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if gt (int .Values.replicaCount) 1 }}
# Peering: each replica writes its record (priority, lifetime) into the KopfPeering object and watches it.
- apiGroups: ["zalando.org"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- if .Values.watch.allNamespaces }}
- apiGroups: ["zalando.org"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
{{- end }}

{{- define "datasweep.rbac.applicationRules" -}}
# datasweep's own objects. Never delete: deleting an Experiment or a Batch must never delete data, and
# Artifacts are removed only by people (`datasweep gc`).
- apiGroups: ["datasweep.io"]
  resources: ["experiments", "batches", "artifacts"]
  verbs: ["get", "list", "watch", "create", "patch", "update"]
- apiGroups: ["datasweep.io"]
  resources: ["experiments/status", "batches/status", "artifacts/status"]
  verbs: ["get", "patch", "update"]
# Jobs are adopted by their Artifact with blockOwnerDeletion, which the OwnerReferencesPermissionEnforcement
# admission plugin (enabled on hardened clusters, OpenShift) allows only with update on the owner's finalizers.
- apiGroups: ["datasweep.io"]
  resources: ["artifacts/finalizers"]
  verbs: ["update"]
# The producing Jobs of Artifacts.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete", "patch"]
# Pods are read only, for their termination messages (the worker's manifest summary).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Headless Services give multi-node training pods stable names (MASTER_ADDR = pod 0).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Read only: prompts given as a ConfigMap key (configMapKeyRef). Worker specs reach Jobs as pod annotations.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch"]
# Only `get`, to report a missing API-key Secret clearly; Jobs read the key through secretKeyRef.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- if .Values.trainJob.enabled }}
# Kubeflow Trainer: `launcher: trainjob` emits a TrainJob instead of an Indexed Job.
- apiGroups: ["trainer.kubeflow.org"]
  resources: ["trainjobs"]
  verbs: ["get", "list", "watch", "create"]
{{- end }}
{{- end }}
