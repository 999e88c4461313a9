{{/* Names and labels shared by every template of the chart. */}}

{{- define "meridian.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* RELEASE-meridian, shortened to RELEASE when the release name already says meridian. */}}
{{- define "meridian.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "meridian.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "meridian.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "proxy"). */}}
{{- define "meridian.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meridian.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "meridian.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-controller" (include "meridian.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "meridian.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Leader election is on when more than one controller runs, or when forced. */}}
{{- define "meridian.leaderElect" -}}
{{- if or (gt (int .Values.controller.replicas) 1) .Values.controller.leaderElect -}}true{{- end -}}
{{- end -}}

{{- define "meridian.controllerURL" -}}
{{- printf "https://%s-controller.%s.svc:%d" (include "meridian.fullname" .) .Release.Namespace (int .Values.controller.port) -}}
{{- end -}}

{{/*
The Secret holding a component's certificate (tls.crt, tls.key, ca.crt): the one named in
`tls.<component>Secret`, else the one the chart generates; call with
(dict "root" $ "component" "proxy").
*/}}
{{- define "meridian.tlsSecret" -}}
{{- $given := get .root.Values.tls (printf "%sSecret" .component) -}}
{{- default (printf "%s-%s-tls" (include "meridian.fullname" .root) .component) $given -}}
{{- end -}}

{{/*
The config file: the user's `config` value with the listen addresses of the three processes
set from the chart's ports, so the Services, probes and processes cannot disagree.
*/}}
{{- define "meridian.config" -}}
{{- $c := deepCopy .Values.config -}}
{{- $controller := default (dict) $c.controller -}}
{{- $_ := set $controller "listen" (printf "0.0.0.0:%d" (int .Values.controller.port)) -}}
{{- $_ := set $controller "admin_listen" (printf "0.0.0.0:%d" (int .Values.controller.adminPort)) -}}
{{- $_ := set $controller "tls" (dict "cert" "/etc/meridian-tls/tls.crt" "key" "/etc/meridian-tls/tls.key" "client_ca" "/etc/meridian-tls/ca.crt") -}}
{{- $_ := set $c "controller" $controller -}}
{{- $proxy := default (dict) $c.proxy -}}
{{- $_ := set $proxy "listen" (printf "0.0.0.0:%d" (int .Values.proxy.port)) -}}
{{- $_ := set $proxy "admin_listen" (printf "0.0.0.0:%d" (int .Values.proxy.adminPort)) -}}
{{- $_ := set $c "proxy" $proxy -}}
{{- $dns := default (dict) $c.dns -}}
{{- $_ := set $dns "listen" (printf "0.0.0.0:%d" (int .Values.dns.port)) -}}
{{- $_ := set $dns "admin_listen" (printf "0.0.0.0:%d" (int .Values.dns.adminPort)) -}}
{{- $_ := set $c "dns" $dns -}}
{{- toYaml $c -}}
{{- end -}}

{{/* The pod-level parts every Meridian pod shares. */}}
{{- define "meridian.podCommon" -}}
securityContext:
  runAsNonRoot: true
  fsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Environment from the downward API: the pod's own name, namespace and address. */}}
{{- define "meridian.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end -}}

{{/*
A subscriber (proxy or DNS) as a Deployment or a DaemonSet; call with
(dict "root" $ "component" "proxy" "values" .Values.proxy "ports" LIST "command" "proxy").
*/}}
{{- define "meridian.subscriber" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $fullname := include "meridian.fullname" $root -}}
apiVersion: apps/v1
kind: {{ $v.kind }}
metadata:
  name: {{ $fullname }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "meridian.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  {{- if eq $v.kind "Deployment" }}
  replicas: {{ int $v.replicas }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "meridian.selectorLabels" (dict "root" $root "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "meridian.selectorLabels" (dict "root" $root "component" .component) | nindent 8 }}
      annotations:
        # A changed config rolls the pods: the processes read it once at start.
        checksum/config: {{ include "meridian.config" $root | sha256sum }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- include "meridian.podCommon" $root | nindent 6 }}
      # Subscribers never talk to Kubernetes: no API token in their pods.
      automountServiceAccountToken: false
      containers:
        - name: {{ .component }}
          image: {{ include "meridian.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            - {{ .command }}
            - -c
            - /etc/meridian/config.yaml
            - --controller
            - {{ include "meridian.controllerURL" $root }}
            - --state-dir
            - /var/lib/meridian
            - --vantage
            - $(POD_NAME)
            {{- if $v.region }}
            - --region
            - {{ $v.region | quote }}
            {{- end }}
            # The controller's CA, and this part's client certificate: its name is the
            # vantage pattern the pod name falls under.
            - --tls-dir
            - /etc/meridian-tls
            {{- if $root.Values.auth.subscriberTokenSecret }}
            - --token-file
            - /etc/meridian-token/token
            {{- end }}
            {{- range $v.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          env:
            {{- include "meridian.podEnv" $root | nindent 12 }}
          ports:
            {{- toYaml .ports | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: admin
            periodSeconds: 2
          livenessProbe:
            httpGet:
              path: /livez
              port: admin
            periodSeconds: 10
            failureThreshold: 3
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          {{- with $v.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            - name: config
              mountPath: /etc/meridian
              readOnly: true
            - name: state
              mountPath: /var/lib/meridian
            - name: tls
              mountPath: /etc/meridian-tls
              readOnly: true
            {{- if $root.Values.auth.subscriberTokenSecret }}
            - name: token
              mountPath: /etc/meridian-token
              readOnly: true
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ $fullname }}-config
        # The last good table: kept across container restarts in the pod, so a restarted
        # process serves it while the controller is unreachable.
        - name: state
          emptyDir: {}
        # Mounted as a directory (no subPath), so a renewed certificate reaches the files
        # and the process reloads it without a restart.
        - name: tls
          secret:
            secretName: {{ include "meridian.tlsSecret" (dict "root" $root "component" .component) }}
        {{- if $root.Values.auth.subscriberTokenSecret }}
        - name: token
          secret:
            secretName: {{ $root.Values.auth.subscriberTokenSecret }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}
