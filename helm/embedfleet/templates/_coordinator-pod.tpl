{{- define "embedfleet.coordinatorPod" -}}
metadata:
  labels:
    {{- include "embedfleet.selector" . | nindent 4 }}
    app.kubernetes.io/component: coordinator
spec:
  restartPolicy: Never
  serviceAccountName: {{ include "embedfleet.serviceAccountName" . }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  {{- include "embedfleet.modelsInit" . | nindent 2 }}
  containers:
    - name: coordinator
      image: {{ include "embedfleet.image" (dict "Values" .Values "Chart" .Chart "gpu" false) }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - coordinator
        - run
        - --source={{ .Values.coordinator.source }}
        - --job-size={{ .Values.coordinator.jobSize }}
        - --max-failed={{ .Values.coordinator.maxFailed }}
        - --timeout={{ .Values.coordinator.timeout }}
        {{- if .Values.coordinator.incremental }}
        - --incremental
        {{- else }}
        - --wait
        {{- end }}
      env:
        {{- include "embedfleet.env" . | nindent 8 }}
      resources:
        {{- toYaml .Values.coordinator.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - {name: models, mountPath: /models, readOnly: true}
        - {name: tmp, mountPath: /tmp}
  volumes:
    {{- include "embedfleet.modelsVolume" . | nindent 4 }}
{{- end -}}
