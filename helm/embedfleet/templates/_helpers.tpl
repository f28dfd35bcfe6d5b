{{- define "embedfleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "embedfleet.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "embedfleet.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "embedfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "embedfleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "embedfleet.image" -}}
{{- if .gpu -}}
{{- printf "%s:%s" .Values.image.gpuRepository (default (printf "%s-gpu" .Chart.AppVersion) .Values.image.gpuTag) -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "embedfleet.s3Secret" -}}
{{- default (printf "%s-s3" (include "embedfleet.fullname" .)) .Values.s3.credentials.existingSecret -}}
{{- end -}}

{{/* Environment shared by every embedfleet container. */}}
{{- define "embedfleet.env" -}}
- name: EMBEDFLEET_NATS_URL
  value: {{ .Values.nats.url | quote }}
- name: EMBEDFLEET_PREFIX
  value: {{ .Values.nats.prefix | quote }}
- name: EMBEDFLEET_NATS_REPLICAS
  value: {{ .Values.nats.replicas | quote }}
- name: EMBEDFLEET_MILVUS_ADDR
  value: {{ .Values.milvus.address | quote }}
- name: EMBEDFLEET_INDEX_TYPE
  value: {{ .Values.milvus.indexType | quote }}
- name: EMBEDFLEET_MILVUS_TLS
  value: {{ .Values.milvus.tls | quote }}
- name: EMBEDFLEET_S3_ENDPOINT
  value: {{ .Values.s3.endpoint | quote }}
- name: EMBEDFLEET_S3_REGION
  value: {{ .Values.s3.region | quote }}
- name: EMBEDFLEET_S3_INSECURE
  value: {{ .Values.s3.insecure | quote }}
- name: EMBEDFLEET_S3_PATH_STYLE
  value: {{ .Values.s3.pathStyle | quote }}
- name: EMBEDFLEET_POOL
  value: {{ .Values.pool | quote }}
- name: EMBEDFLEET_MODELS_DIR
  value: /models
- name: EMBEDFLEET_MODELS
  value: {{ join "," .Values.models | quote }}
- name: EMBEDFLEET_NO_EXIF_ORIENTATION
  value: {{ not .Values.exifOrientation | quote }}
- name: EMBEDFLEET_DECODE
  value: {{ .Values.decode | quote }}
- name: EMBEDFLEET_MAX_OBJECT_MIB
  value: {{ .Values.limits.maxObjectMiB | int | quote }}
- name: EMBEDFLEET_MAX_PIXELS
  value: {{ .Values.limits.maxPixels | int64 | quote }}
- name: EMBEDFLEET_MAX_JPEG_SCANS
  value: {{ .Values.limits.maxJPEGScans | int | quote }}
- name: EMBEDFLEET_MAX_DECODE_TIME
  value: {{ .Values.limits.maxDecodeTime | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "embedfleet.s3Secret" . }}
      key: {{ .Values.s3.credentials.accessKeyKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "embedfleet.s3Secret" . }}
      key: {{ .Values.s3.credentials.secretKeyKey }}
{{- with .Values.nats.auth.existingSecret }}
- name: EMBEDFLEET_NATS_USER
  valueFrom: {secretKeyRef: {name: {{ . }}, key: {{ $.Values.nats.auth.userKey }}, optional: true}}
- name: EMBEDFLEET_NATS_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ . }}, key: {{ $.Values.nats.auth.passwordKey }}, optional: true}}
- name: EMBEDFLEET_NATS_TOKEN
  valueFrom: {secretKeyRef: {name: {{ . }}, key: {{ $.Values.nats.auth.tokenKey }}, optional: true}}
{{- end }}
{{- with .Values.milvus.auth.existingSecret }}
- name: EMBEDFLEET_MILVUS_USER
  valueFrom: {secretKeyRef: {name: {{ . }}, key: {{ $.Values.milvus.auth.userKey }}, optional: true}}
- name: EMBEDFLEET_MILVUS_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ . }}, key: {{ $.Values.milvus.auth.passwordKey }}, optional: true}}
- name: EMBEDFLEET_MILVUS_TOKEN
  valueFrom: {secretKeyRef: {name: {{ . }}, key: {{ $.Values.milvus.auth.tokenKey }}, optional: true}}
{{- end }}
{{- end -}}

{{/* The models volume and, without an existing claim, the sync init container. */}}
{{- define "embedfleet.modelsVolume" -}}
- name: models
{{- if .Values.modelStore.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.modelStore.existingClaim }}
    readOnly: true
{{- else }}
  emptyDir: {}
{{- end }}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "embedfleet.modelsInit" -}}
{{- if not .Values.modelStore.existingClaim }}
initContainers:
  - name: models-sync
    image: {{ include "embedfleet.image" (dict "Values" .Values "Chart" .Chart "gpu" false) }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    args: ["models", "sync", "--from", {{ .Values.modelStore.syncFrom | quote }}]
    env:
      {{- include "embedfleet.env" . | nindent 6 }}
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    volumeMounts:
      - {name: models, mountPath: /models}
      - {name: tmp, mountPath: /tmp}
{{- end }}
{{- end -}}
