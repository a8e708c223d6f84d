{{/*
Names. Objects are named after the release (`<release>-worker`, `<release>-mlflow`, ...) so that
DAGs and the Airflow chart can refer to them without knowing this chart's name. Helm caps release
names at 53 characters, so `<release>-training` (the longest suffix) stays within a DNS label.
*/}}
{{- define "airflow-adaptive.name" -}}
{{- .Release.Name | trunc 53 | trimSuffix "-" -}}
{{- end -}}

{{- define "airflow-adaptive.workerServiceAccount" -}}
{{- printf "%s-worker" (include "airflow-adaptive.name" .) -}}
{{- end -}}

{{- define "airflow-adaptive.trainingServiceAccount" -}}
{{- printf "%s-training" (include "airflow-adaptive.name" .) -}}
{{- end -}}

{{- define "airflow-adaptive.mlflowName" -}}
{{- printf "%s-mlflow" (include "airflow-adaptive.name" .) -}}
{{- end -}}

{{/*
Cluster-scoped objects are shared by every namespace: the namespace is part of their name so
that two releases of the same name in different namespaces do not take each other's binding.
*/}}
{{- define "airflow-adaptive.clusterName" -}}
{{- printf "%s-%s-node-fit" .Release.Namespace (include "airflow-adaptive.name" .) -}}
{{- end -}}

{{- define "airflow-adaptive.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that never change for an object: safe in a Deployment's selector. */}}
{{- define "airflow-adaptive.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "airflow-adaptive.labels" -}}
helm.sh/chart: {{ include "airflow-adaptive.chart" . }}
{{ include "airflow-adaptive.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: airflow-adaptive
{{- end -}}

{{/* The in-cluster address of the chart's MLflow server (the cluster domain is left to DNS search). */}}
{{- define "airflow-adaptive.mlflowUrl" -}}
{{- printf "http://%s.%s.svc:%d" (include "airflow-adaptive.mlflowName" .) .Release.Namespace (int .Values.mlflow.service.port) -}}
{{- end -}}

{{/*
--allowed-hosts for `mlflow server`: every name the Service answers to, bare (a client that
omits the default port) and with the port, plus localhost on any port (`kubectl port-forward`,
as MLflow's own default allows), plus
mlflow.allowedHosts. Given --allowed-hosts, MLflow drops its default list (localhost and private
addresses); /health stays exempt, so the kubelet's probes by pod IP still pass.
*/}}
{{- define "airflow-adaptive.mlflowAllowedHosts" -}}
{{- $svc := include "airflow-adaptive.mlflowName" . -}}
{{- $ns := .Release.Namespace -}}
{{- $port := int .Values.mlflow.service.port -}}
{{- $hosts := list -}}
{{- range $name := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns $.Values.mlflow.clusterDomain) -}}
{{- $hosts = append $hosts $name -}}
{{- $hosts = append $hosts (printf "%s:%d" $name $port) -}}
{{- end -}}
{{- $hosts = concat $hosts (list "localhost" "localhost:*" "127.0.0.1" "127.0.0.1:*") -}}
{{- concat $hosts .Values.mlflow.allowedHosts | uniq | join "," -}}
{{- end -}}
