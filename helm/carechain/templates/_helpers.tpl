{{/*
Names, labels and the pieces every CareChain pod shares. The six services run the same image;
`carechain serve <service>` picks the service and CARECHAIN_* variables configure it
(services/carechain/runtime/config.py is the one definition of those variables).
*/}}

{{- define "carechain.services" -}}
identity storage ledger consent audit records
{{- end }}

{{- define "carechain.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "carechain.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "carechain.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "carechain.selectorLabels" -}}
app.kubernetes.io/name: {{ include "carechain.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "carechain.labels" -}}
helm.sh/chart: {{ include "carechain.chart" . }}
{{ include "carechain.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: carechain
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "ledger") */}}
{{- define "carechain.componentSelectorLabels" -}}
{{ include "carechain.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "carechain.componentLabels" -}}
{{ include "carechain.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Object name of a component: <fullname>-<component> */}}
{{- define "carechain.componentName" -}}
{{- printf "%s-%s" (include "carechain.fullname" .root) .component }}
{{- end }}

{{/* ServiceAccount of a service: <serviceAccount.namePrefix><service> (default carechain-<service>). */}}
{{- define "carechain.serviceAccountName" -}}
{{- $prefix := .root.Values.serviceAccount.namePrefix | default (printf "%s-" (include "carechain.fullname" .root)) }}
{{- printf "%s%s" $prefix .service }}
{{- end }}

{{/* Services whose callers can balance per call over every pod (stateless, or sharing their backend). */}}
{{- define "carechain.balancedServices" -}}
identity storage consent audit
{{- end }}

{{/*
In-cluster address of a service: <fullname>-<service>.<namespace>.svc:<port> (the ClusterIP Service);
with grpc.loadBalancing=round_robin, for balanced services, dns:/// of the headless
<fullname>-<service>-replicas Service (one address per ready pod; carechain.client.balancing).
*/}}
{{- define "carechain.address" -}}
{{- $port := (index .root.Values .service).port }}
{{- if and (eq .root.Values.grpc.loadBalancing "round_robin") (has .service (splitList " " (include "carechain.balancedServices" .))) }}
{{- printf "dns:///%s-%s-replicas.%s.svc:%d" (include "carechain.fullname" .root) .service .root.Release.Namespace (int $port) }}
{{- else }}
{{- include "carechain.serviceAddress" . }}
{{- end }}
{{- end }}

{{/* The ClusterIP Service address of a service (what clients outside the services, like helm test, use). */}}
{{- define "carechain.serviceAddress" -}}
{{- $port := (index .root.Values .service).port }}
{{- printf "%s-%s.%s.svc:%d" (include "carechain.fullname" .root) .service .root.Release.Namespace (int $port) }}
{{- end }}

{{/* <registry>/<repository>@<digest> or :<tag>; registry: global.imageRegistry, else image.registry (may be empty). */}}
{{- define "carechain.image" -}}
{{- $registry := .Values.global.imageRegistry | default .Values.image.registry }}
{{- $repository := ternary (printf "%s/%s" $registry .Values.image.repository) .Values.image.repository (ne $registry "") }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when a service talks to Vault/OpenBao: (dict "root" $ "service" "identity") */}}
{{- define "carechain.usesVault" -}}
{{- $v := .root.Values }}
{{- if or (eq $v.signing.backend "vault") (and (eq .service "identity") (eq $v.identity.keyBackend "vault")) }}true{{ end }}
{{- end }}

{{- define "carechain.usesEtcd" -}}
{{- $v := .root.Values }}
{{- if or (and (eq .service "ledger") (eq $v.ledger.orderer "etcd")) (and (eq .service "audit") (eq $v.audit.store "etcd")) }}true{{ end }}
{{- end }}

{{/* "true" when a service uses etcd and mounts any of its CA, client certificate or password Secrets. */}}
{{- define "carechain.mountsEtcdSecrets" -}}
{{- $e := .root.Values.etcd }}
{{- if and (include "carechain.usesEtcd" .) (or $e.caSecret.name $e.clientCertSecret.name $e.passwordSecret.name) }}true{{ end }}
{{- end }}

{{- define "carechain.usesS3" -}}
{{- if and (eq .service "storage") (eq .root.Values.storage.blobBackend "s3") }}true{{ end }}
{{- end }}

{{/* "true" when the pod logs into Vault with its ServiceAccount token (the only reason to mount it). */}}
{{- define "carechain.usesKubernetesAuth" -}}
{{- if and (include "carechain.usesVault" .) (eq .root.Values.vault.auth.method "kubernetes") }}true{{ end }}
{{- end }}

{{/* Vault role of a service for Kubernetes auth. */}}
{{- define "carechain.vaultRole" -}}
{{- $auth := .root.Values.vault.auth }}
{{- default (printf "%s%s" $auth.rolePrefix .service) (index $auth.roles .service) }}
{{- end }}

{{/*
"true" when a Deployment keeps its embedded store on a PersistentVolume: identity with keyBackend=local,
storage with blobBackend=local (and persistence.enabled). With Vault / S3 they keep nothing on disk and
scale freely. (dict "root" $ "service" "identity")
*/}}
{{- define "carechain.usesVolume" -}}
{{- $v := .root.Values }}
{{- $s := index $v .service }}
{{- if and (hasKey $s "persistence") $s.persistence.enabled (or (and (eq .service "identity") (eq $v.identity.keyBackend "local")) (and (eq .service "storage") (eq $v.storage.blobBackend "local"))) }}true{{ end }}
{{- end }}

{{/* Update strategy type of the validators' StatefulSets: ledger.updateStrategy.type, else OnDelete with several. */}}
{{- define "carechain.validatorUpdateStrategy" -}}
{{- if .Values.ledger.updateStrategy.type }}{{ .Values.ledger.updateStrategy.type }}
{{- else if gt (len .Values.ledger.validators) 1 }}OnDelete
{{- else }}RollingUpdate{{ end }}
{{- end }}

{{/* Mount paths inside every container. */}}
{{- define "carechain.paths.data" -}}/var/lib/carechain{{- end }}
{{- define "carechain.paths.trust" -}}/etc/carechain/trust{{- end }}
{{- define "carechain.paths.keys" -}}/etc/carechain/keys{{- end }}
{{- define "carechain.paths.vaultCa" -}}/etc/carechain/ca/vault{{- end }}
{{- define "carechain.paths.s3Ca" -}}/etc/carechain/ca/s3{{- end }}
{{- define "carechain.paths.etcd" -}}/etc/carechain/etcd{{- end }}
{{- define "carechain.paths.tls" -}}/etc/carechain/tls{{- end }}
{{- define "carechain.paths.otelCa" -}}/etc/carechain/ca/otel{{- end }}

{{/*
(list <defaults> <overrides>): the overrides merged over the defaults (nested maps too) as YAML; keys
whose value is null in either are left out, so `runAsUser: null` removes the chart's default.
*/}}
{{- define "carechain.merged" -}}
{{- $merged := dict }}
{{- range $key, $value := (index . 0 | default dict) }}{{ if not (kindIs "invalid" $value) }}{{ $_ := set $merged $key $value }}{{ end }}{{ end }}
{{- range $key, $value := (index . 1 | default dict) }}
{{- if kindIs "invalid" $value }}{{ $_ := unset $merged $key }}
{{- else if and (kindIs "map" $value) (kindIs "map" (index $merged $key)) }}{{ $_ := set $merged $key (mergeOverwrite (deepCopy (index $merged $key)) $value) }}
{{- else }}{{ $_ := set $merged $key $value }}{{ end }}
{{- end }}
{{- toYaml $merged }}
{{- end }}

{{/*
Secret with tls.crt, tls.key and ca.crt of a service or of the helm test client:
(dict "root" $ "name" "ledger"); default <fullname>-<name>-tls (what the chart's Certificates write).
*/}}
{{- define "carechain.tlsSecretName" -}}
{{- default (printf "%s-%s-tls" (include "carechain.fullname" .root) .name) (index .root.Values.tls.secretNames .name) }}
{{- end }}

{{/* The port kubelet probes: the plaintext health port with TLS, else the serving port. */}}
{{- define "carechain.probePort" -}}
{{- if .root.Values.tls.enabled }}{{ .root.Values.tls.healthPort }}{{ else }}{{ (index .root.Values .service).port }}{{ end }}
{{- end }}

{{/*
Names of the Kubernetes Services that route to a service's pods, hence the DNS names its
certificate must carry: (dict "root" $ "service" "ledger").
*/}}
{{- define "carechain.serviceObjectNames" -}}
{{- $name := include "carechain.componentName" (dict "root" .root "component" .service) }}
{{- $names := list $name }}
{{- if eq .service "audit" }}{{ $names = append $names (printf "%s-headless" $name) }}{{ end }}
{{- if has .service (splitList " " (include "carechain.balancedServices" .)) }}{{ $names = append $names (printf "%s-replicas" $name) }}{{ end }}
{{- if eq .service "ledger" }}
{{- range .root.Values.ledger.validators }}{{ $names = append $names (printf "%s-%s" $name .name) }}{{ end }}
{{- end }}
{{- join " " $names }}
{{- end }}

{{/* SANs of a service's certificate: every form of every Service name that reaches it. */}}
{{- define "carechain.tlsDnsNames" -}}
{{- $ns := .root.Release.Namespace }}
{{- range $name := splitList " " (include "carechain.serviceObjectNames" .) }}
- {{ $name }}
- {{ $name }}.{{ $ns }}
- {{ $name }}.{{ $ns }}.svc
- {{ $name }}.{{ $ns }}.svc.{{ $.root.Values.tls.clusterDomain }}
{{- end }}
{{- end }}

{{/*
The projected `tls` volume of a pod: its own certificate and key, and the CA bundle (from the same
Secret, or tls.caBundle). (dict "root" $ "name" "ledger")
*/}}
{{- define "carechain.tlsVolume" -}}
{{- $tls := .root.Values.tls }}
{{- $secret := include "carechain.tlsSecretName" . }}
- name: tls
  projected:
    defaultMode: 288  # 0440: readable by the pod's group (fsGroup) only
    sources:
      - secret:
          name: {{ $secret }}
          items:
            - key: tls.crt
              path: tls.crt
            - key: tls.key
              path: tls.key
            {{- if not $tls.caBundle.name }}
            - key: ca.crt
              path: ca.crt
            {{- end }}
      {{- if $tls.caBundle.name }}
      - {{ ternary "secret" "configMap" (eq $tls.caBundle.kind "Secret") }}:
          name: {{ $tls.caBundle.name }}
          items:
            - key: {{ $tls.caBundle.key }}
              path: ca.crt
      {{- end }}
{{- end }}

{{/*
Workload annotations: with tls.reloader, Stakater Reloader rolls the pods when their certificate
(or CA bundle) changes, since the services read those files once, at start. (dict "root" $ "service" "x")
*/}}
{{- define "carechain.workloadAnnotations" -}}
{{- $tls := .root.Values.tls }}
{{- if and $tls.enabled $tls.reloader }}
{{- $secrets := list (include "carechain.tlsSecretName" (dict "root" .root "name" .service)) }}
{{- if and $tls.caBundle.name (eq $tls.caBundle.kind "Secret") }}{{ $secrets = append $secrets $tls.caBundle.name }}{{ end }}
secret.reloader.stakater.com/reload: {{ join "," $secrets | quote }}
{{- if and $tls.caBundle.name (eq $tls.caBundle.kind "ConfigMap") }}
configmap.reloader.stakater.com/reload: {{ $tls.caBundle.name | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* CARECHAIN_TLS_* file settings of a pod that mounts the `tls` volume. */}}
{{- define "carechain.tlsFileEnv" -}}
CARECHAIN_TLS_CERT_FILE: "{{ include "carechain.paths.tls" . }}/tls.crt"
CARECHAIN_TLS_KEY_FILE: "{{ include "carechain.paths.tls" . }}/tls.key"
CARECHAIN_TLS_CA_FILE: "{{ include "carechain.paths.tls" . }}/ca.crt"
{{- end }}

{{/*
Cross-field checks the JSON schema cannot explain well; each fails `helm install` with a message
naming the values to change.
*/}}
{{- define "carechain.validate" -}}
{{- $v := .Values }}
{{- $trust := 0 }}
{{- if $v.trustBundle.existingConfigMap }}{{ $trust = add1 $trust }}{{ end }}
{{- if $v.trustBundle.existingSecret }}{{ $trust = add1 $trust }}{{ end }}
{{- if $v.trustBundle.publicKeys }}{{ $trust = add1 $trust }}{{ end }}
{{- if ne $trust 1 }}
{{- fail "trustBundle: set exactly one of trustBundle.existingConfigMap, trustBundle.existingSecret or trustBundle.publicKeys (the <principal>.pub keys every service verifies with)" }}
{{- end }}
{{- if and (eq $v.signing.backend "file") (not $v.signing.keysSecret) }}
{{- fail "signing.keysSecret: name the Secret holding svc-<service>.pem signing keys (signing.backend=file)" }}
{{- end }}
{{- $vaultNeeded := or (eq $v.signing.backend "vault") (eq $v.identity.keyBackend "vault") }}
{{- if and $vaultNeeded (not $v.vault.address) }}
{{- fail "vault.address: required when signing.backend=vault or identity.keyBackend=vault" }}
{{- end }}
{{- if and $vaultNeeded (eq $v.vault.auth.method "token") (not $v.vault.auth.tokenSecret.name) }}
{{- fail "vault.auth.tokenSecret.name: required with vault.auth.method=token" }}
{{- end }}
{{- if eq $v.storage.blobBackend "s3" }}
{{- if not $v.s3.endpoint }}{{ fail "s3.endpoint: required when storage.blobBackend=s3" }}{{ end }}
{{- if not $v.s3.credentialsSecret.name }}{{ fail "s3.credentialsSecret.name: required when storage.blobBackend=s3" }}{{ end }}
{{- end }}
{{- if and (or (eq $v.ledger.orderer "etcd") (eq $v.audit.store "etcd")) (not $v.etcd.endpoints) }}
{{- fail "etcd.endpoints: required when ledger.orderer=etcd or audit.store=etcd" }}
{{- end }}
{{- if and $v.etcd.username (not $v.etcd.passwordSecret.name) }}
{{- fail "etcd.passwordSecret.name: name the Secret holding the password of etcd.username" }}
{{- end }}
{{- if and $v.etcd.passwordSecret.name (not $v.etcd.username) }}
{{- fail "etcd.username: required with etcd.passwordSecret (the etcd user the services log in as)" }}
{{- end }}
{{- if or $v.etcd.caSecret.name $v.etcd.clientCertSecret.name }}
{{- range $v.etcd.endpoints }}
{{- if not (hasPrefix "https://" .) }}
{{- fail (printf "etcd.endpoints: %s is not https:// but etcd.caSecret/etcd.clientCertSecret configure TLS to etcd" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (eq $v.otel.tracesExporter "otlp") (not $v.otel.endpoint) }}
{{- fail "otel.endpoint: required when otel.tracesExporter=otlp" }}
{{- end }}
{{- range $svc := list "identity" "storage" }}
{{- $s := index $v $svc }}
{{- if and (include "carechain.usesVolume" (dict "root" $ "service" $svc)) (or (gt (int $s.replicas) 1) $s.autoscaling.enabled) }}
{{- fail (printf "%s: a PersistentVolume (%s.persistence.enabled=true) is mounted by one pod only: set %s.replicas=1 and %s.autoscaling.enabled=false, or turn persistence off (storage: with blobBackend=s3)" $svc $svc $svc $svc) }}
{{- end }}
{{- end }}
{{- if and (eq $v.identity.keyBackend "local") (or (gt (int $v.identity.replicas) 1) $v.identity.autoscaling.enabled) }}
{{- fail "identity: keyBackend=local keeps keys and the registry in one pod's volume: use identity.keyBackend=vault to run more than one replica" }}
{{- end }}
{{- if and (eq $v.storage.blobBackend "local") (or (gt (int $v.storage.replicas) 1) $v.storage.autoscaling.enabled) }}
{{- fail "storage: blobBackend=local keeps blobs in one pod's volume: use storage.blobBackend=s3 to run more than one replica" }}
{{- end }}
{{- if and (eq $v.audit.store "sqlite") (gt (int $v.audit.replicas) 1) }}
{{- fail "audit: store=sqlite keeps the hash-chained trail in one pod's volume: use audit.store=etcd to run more than one replica" }}
{{- end }}
{{- $names := dict }}
{{- range $v.ledger.validators }}
{{- if hasKey $names .name }}{{ fail (printf "ledger.validators: the name %q is used twice" .name) }}{{ end }}
{{- $_ := set $names .name true }}
{{- end }}
{{- /* vault-bootstrap's role for a validator (carechain-ledger for svc-ledger, else carechain-<id>) may sign
     with the key named like the validator's id only: another key needs a role made for it (vaultRole). */}}
{{- if and (eq $v.signing.backend "vault") (eq $v.vault.auth.method "kubernetes") }}
{{- range $v.ledger.validators }}
{{- $id := include "carechain.validatorId" (dict "root" $ "validator" .) }}
{{- if and .signingKeyName (ne .signingKeyName $id) (not .vaultRole) }}
{{- fail (printf "ledger.validators[%s].signingKeyName: %s is not the key of the Vault role this validator logs in with (%s may sign with %s only): set id: %s instead (`vault-bootstrap --validator %s` makes its key and role carechain-%s), or name a role that may use the key in vaultRole" .name .signingKeyName (include "carechain.validatorVaultRole" (dict "root" $ "validator" .)) $id .signingKeyName .signingKeyName .signingKeyName) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (gt (len $v.ledger.validators) 1) (ne $v.ledger.orderer "etcd") }}
{{- fail "ledger.validators: several validators share one order and exchange signatures through etcd: set ledger.orderer=etcd" }}
{{- end }}
{{- $ingressTls := $v.ingress.tls }}
{{- if and $ingressTls.enabled (eq $ingressTls.source "certManager") (not $ingressTls.certManager.issuerRef.name) }}
{{- fail "ingress.tls.certManager.issuerRef.name: required when ingress.tls.source=certManager" }}
{{- end }}
{{- if and $ingressTls.enabled (not $v.ingress.enabled) }}
{{- fail "ingress.tls.enabled: the gateway certificate is served by the Ingress: set ingress.enabled=true" }}
{{- end }}
{{- if $v.tls.enabled }}
{{- if and (eq $v.tls.source "certManager") (not $v.tls.certManager.issuerRef.name) }}
{{- fail "tls.certManager.issuerRef.name: required when tls.source=certManager (the issuer of the services' certificates, e.g. a CA Issuer of the network's private CA)" }}
{{- end }}
{{- if and (eq $v.tls.source "existingSecret") $v.tls.clientCertificates }}
{{- fail "tls.clientCertificates: the chart issues client certificates only with tls.source=certManager; with existingSecret give your callers certificates of your CA yourself" }}
{{- end }}
{{- range $svc := splitList " " (include "carechain.services" .) }}
{{- if eq (int (index $v $svc).port) (int $v.tls.healthPort) }}
{{- fail (printf "tls.healthPort: %d is %s.port; the plaintext health port must differ from every serving port" (int $v.tls.healthPort) $svc) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The whole pod template of one service.
(dict "root" $ "service" "ledger" "validator" <validator or nil>)
*/}}
{{- define "carechain.podTemplate" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $svc := .service }}
{{- $s := index $v $svc }}
{{- $ctx := dict "root" $root "service" $svc "component" $svc }}
{{- $selector := include "carechain.componentSelectorLabels" $ctx | fromYaml }}
metadata:
  labels:
    {{- include "carechain.componentLabels" $ctx | nindent 4 }}
    {{- with .validator }}
    carechain.io/validator: {{ .name }}
    {{- end }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "carechain.serviceEnv" $ctx | sha256sum }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "carechain.serviceAccountName" $ctx }}
  automountServiceAccountToken: {{ include "carechain.usesKubernetesAuth" $ctx | eq "true" }}
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ add (int $v.shutdownGraceSeconds) 10 }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- /* podSecurityContext, then <service>.podSecurityContext over it; a key set to null is left out
       (OpenShift's restricted SCC assigns runAsUser, runAsGroup and fsGroup itself). */}}
  securityContext:
    {{- include "carechain.merged" (list $v.podSecurityContext $s.podSecurityContext) | nindent 4 }}
  {{- $init := concat $v.initContainers $s.initContainers }}
  {{- with $init }}
  initContainers:
    {{- tpl (toYaml .) $root | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ $svc }}
      image: {{ include "carechain.image" $root }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      command: ["carechain"]
      args: ["serve", "{{ $svc }}"]
      ports:
        - name: grpc
          containerPort: {{ $s.port }}
          protocol: TCP
        {{- if $v.tls.enabled }}
        # Plaintext, grpc.health.v1 only: kubelet gRPC probes cannot speak TLS. On no Service.
        - name: health
          containerPort: {{ $v.tls.healthPort }}
          protocol: TCP
        {{- end }}
        {{- if $v.metrics.enabled }}
        # Prometheus /metrics, plain HTTP (docs/observability.md).
        - name: metrics
          containerPort: {{ $v.metrics.port }}
          protocol: TCP
        {{- end }}
      envFrom:
        - configMapRef:
            name: {{ include "carechain.componentName" $ctx }}-env
        {{- range $secret := compact (list $v.extraEnvVarsSecret $s.extraEnvVarsSecret) }}
        - secretRef:
            name: {{ $secret }}
        {{- end }}
      {{- $env := include "carechain.podEnv" . | trim }}
      {{- $extraEnv := concat $v.extraEnvVars $s.extraEnvVars }}
      {{- if or $env $extraEnv }}
      env:
        {{- with $env }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- with $extraEnv }}
        {{- tpl (toYaml .) $root | nindent 8 }}
        {{- end }}
      {{- end }}
      {{- $probePort := include "carechain.probePort" $ctx | int }}
      {{- /* Timing of each probe: probes.<probe>, then <service>.probes.<probe> over it. */}}
      {{- range $probe := list "startupProbe" "readinessProbe" "livenessProbe" }}
      {{ $probe }}:
        grpc:
          port: {{ $probePort }}
        {{- include "carechain.merged" (list (index $v.probes $probe) (index (default dict $s.probes) $probe)) | nindent 8 }}
      {{- end }}
      resources:
        {{- toYaml $s.resources | nindent 8 }}
      securityContext:
        {{- include "carechain.merged" (list $v.containerSecurityContext $s.containerSecurityContext) | nindent 8 }}
      volumeMounts:
        - name: data
          mountPath: {{ include "carechain.paths.data" . }}
        - name: tmp
          mountPath: /tmp
        - name: trust
          mountPath: {{ include "carechain.paths.trust" . }}
          readOnly: true
        {{- if eq $v.signing.backend "file" }}
        - name: signing-key
          mountPath: {{ include "carechain.paths.keys" . }}
          readOnly: true
        {{- end }}
        {{- if and (include "carechain.usesVault" $ctx) $v.vault.caSecret.name }}
        - name: vault-ca
          mountPath: {{ include "carechain.paths.vaultCa" . }}
          readOnly: true
        {{- end }}
        {{- if and (include "carechain.usesS3" $ctx) $v.s3.caSecret.name }}
        - name: s3-ca
          mountPath: {{ include "carechain.paths.s3Ca" . }}
          readOnly: true
        {{- end }}
        {{- if include "carechain.mountsEtcdSecrets" $ctx }}
        - name: etcd-credentials
          mountPath: {{ include "carechain.paths.etcd" . }}
          readOnly: true
        {{- end }}
        {{- if $v.tls.enabled }}
        - name: tls
          mountPath: {{ include "carechain.paths.tls" . }}
          readOnly: true
        {{- end }}
        {{- if and (eq $v.otel.tracesExporter "otlp") $v.otel.caBundle.name }}
        - name: otel-ca
          mountPath: {{ include "carechain.paths.otelCa" . }}
          readOnly: true
        {{- end }}
        {{- with concat $v.extraVolumeMounts $s.extraVolumeMounts }}
        {{- tpl (toYaml .) $root | nindent 8 }}
        {{- end }}
    {{- with concat $v.sidecars $s.sidecars }}
    {{- tpl (toYaml .) $root | nindent 4 }}
    {{- end }}
  volumes:
    {{- if not (has $svc (list "ledger" "audit")) }}
    {{- if include "carechain.usesVolume" $ctx }}
    - name: data
      persistentVolumeClaim:
        claimName: {{ include "carechain.componentName" $ctx }}-data
    {{- else }}
    - name: data
      emptyDir: {}
    {{- end }}
    {{- end }}
    - name: tmp
      emptyDir:
        sizeLimit: 256Mi
    - name: trust
      {{- if $v.trustBundle.existingSecret }}
      secret:
        secretName: {{ $v.trustBundle.existingSecret }}
      {{- else }}
      configMap:
        name: {{ default (printf "%s-trust" (include "carechain.fullname" $root)) $v.trustBundle.existingConfigMap }}
      {{- end }}
    {{- if eq $v.signing.backend "file" }}
    - name: signing-key
      secret:
        {{- $secretName := $v.signing.keysSecret }}
        {{- $key := printf "svc-%s.pem" $svc }}
        {{- with .validator }}
        {{- $secretName = default $v.signing.keysSecret (dig "signingKey" "secretName" "" .) }}
        {{- $key = dig "signingKey" "key" "svc-ledger.pem" . }}  {{- /* an entry may leave signingKey out */}}
        {{- end }}
        secretName: {{ $secretName }}
        defaultMode: 288  # 0440: readable by the pod's group (fsGroup) only
        items:
          - key: {{ $key }}
            path: signing.pem
    {{- end }}
    {{- if and (include "carechain.usesVault" $ctx) $v.vault.caSecret.name }}
    - name: vault-ca
      secret:
        secretName: {{ $v.vault.caSecret.name }}
        items:
          - key: {{ $v.vault.caSecret.key }}
            path: ca.crt
    {{- end }}
    {{- if and (include "carechain.usesS3" $ctx) $v.s3.caSecret.name }}
    - name: s3-ca
      secret:
        secretName: {{ $v.s3.caSecret.name }}
        items:
          - key: {{ $v.s3.caSecret.key }}
            path: ca.crt
    {{- end }}
    {{- if include "carechain.mountsEtcdSecrets" $ctx }}
    {{- $etcd := $v.etcd }}
    - name: etcd-credentials
      projected:
        defaultMode: 288  # 0440: readable by the pod's group (fsGroup) only
        sources:
          {{- with $etcd.caSecret.name }}
          - {{ ternary "configMap" "secret" (eq $etcd.caSecret.kind "ConfigMap") }}:
              name: {{ . }}
              items:
                - key: {{ $etcd.caSecret.key }}
                  path: ca.crt
          {{- end }}
          {{- with $etcd.clientCertSecret.name }}
          - secret:
              name: {{ . }}
              items:
                - key: {{ $etcd.clientCertSecret.certKey }}
                  path: client.crt
                - key: {{ $etcd.clientCertSecret.keyKey }}
                  path: client.key
          {{- end }}
          {{- with $etcd.passwordSecret.name }}
          - secret:
              name: {{ . }}
              items:
                - key: {{ $etcd.passwordSecret.key }}
                  path: password
          {{- end }}
    {{- end }}
    {{- if $v.tls.enabled }}
    {{- include "carechain.tlsVolume" (dict "root" $root "name" $svc) | nindent 4 }}
    {{- end }}
    {{- if and (eq $v.otel.tracesExporter "otlp") $v.otel.caBundle.name }}
    - name: otel-ca
      {{ ternary "secret" "configMap" (eq $v.otel.caBundle.kind "Secret") }}:
        {{ ternary "secretName" "name" (eq $v.otel.caBundle.kind "Secret") }}: {{ $v.otel.caBundle.name }}
        items:
          - key: {{ $v.otel.caBundle.key }}
            path: ca.crt
    {{- end }}
    {{- with concat $v.extraVolumes $s.extraVolumes }}
    {{- tpl (toYaml .) $root | nindent 4 }}
    {{- end }}
  {{- if $v.topologySpread.enabled }}
  topologySpreadConstraints:
    {{- range $v.topologySpread.topologyKeys }}
    - maxSkew: {{ $v.topologySpread.maxSkew }}
      topologyKey: {{ . }}
      whenUnsatisfiable: {{ $v.topologySpread.whenUnsatisfiable }}
      labelSelector:
        matchLabels:
          {{- toYaml $selector | nindent 10 }}
    {{- end }}
  {{- end }}
  {{- with $s.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $s.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $s.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Per-pod environment: secrets (by reference) and what differs between validators. */}}
{{- define "carechain.podEnv" -}}
{{- $v := .root.Values }}
{{- $ctx := dict "root" .root "service" .service }}
{{- if and (include "carechain.usesVault" $ctx) (eq $v.vault.auth.method "token") }}
- name: CARECHAIN_VAULT_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $v.vault.auth.tokenSecret.name }}
      key: {{ $v.vault.auth.tokenSecret.key }}
{{- end }}
{{- if include "carechain.usesS3" $ctx }}
- name: CARECHAIN_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.s3.credentialsSecret.name }}
      key: {{ $v.s3.credentialsSecret.accessKeyKey }}
- name: CARECHAIN_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.s3.credentialsSecret.name }}
      key: {{ $v.s3.credentialsSecret.secretKeyKey }}
{{- end }}
{{- if .validator }}
{{- $ledger := dict "root" .root "service" "ledger" "component" "ledger" }}
{{- $id := include "carechain.validatorId" (dict "root" .root "validator" .validator) }}
{{- $ids := list }}
{{- $peers := list }}
{{- range $v.ledger.validators }}
{{- $ids = append $ids (include "carechain.validatorId" (dict "root" $.root "validator" .)) }}
{{- if ne .name $.validator.name }}
{{- $peers = append $peers (printf "%s-%s:%d" (include "carechain.componentName" $ledger) .name (int $v.ledger.port)) }}
{{- end }}
{{- end }}
- name: CARECHAIN_VALIDATOR_ID
  value: {{ $id | quote }}
- name: CARECHAIN_VALIDATORS
  value: {{ join "," $ids | quote }}
- name: CARECHAIN_QUORUM
  value: {{ default 0 $v.ledger.quorum | int | quote }}
- name: CARECHAIN_PEER_ADDRESSES
  value: {{ join "," $peers | quote }}
{{- if eq $v.signing.backend "vault" }}
- name: CARECHAIN_SIGNING_KEY_NAME
  value: {{ default $id .validator.signingKeyName | quote }}
{{- if and (eq $v.vault.auth.method "kubernetes") (or (ne $id "svc-ledger") .validator.vaultRole) }}
- name: CARECHAIN_VAULT_KUBERNETES_ROLE
  value: {{ include "carechain.validatorVaultRole" (dict "root" .root "validator" .validator) | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A validator's Vault role (Kubernetes auth): its vaultRole, else what `vault-bootstrap` makes for it:
carechain-<id> (`--validator <id>`: signing with that validator's key only), or the ledger's role for
svc-ledger. (dict "root" $ "validator" <entry of ledger.validators>)
*/}}
{{- define "carechain.validatorVaultRole" -}}
{{- $id := include "carechain.validatorId" . }}
{{- if .validator.vaultRole }}{{ .validator.vaultRole }}
{{- else if ne $id "svc-ledger" }}{{ printf "carechain-%s" $id }}
{{- else }}{{ include "carechain.vaultRole" (dict "root" .root "service" "ledger") }}{{ end }}
{{- end }}

{{/*
A validator's principal id: its `id`, else svc-ledger for a lone validator, else validator-<name>.
(dict "root" $ "validator" <entry of ledger.validators>)
*/}}
{{- define "carechain.validatorId" -}}
{{- if .validator.id }}{{ .validator.id }}{{ else if eq (len .root.Values.ledger.validators) 1 }}svc-ledger{{ else }}validator-{{ .validator.name }}{{ end }}
{{- end }}

{{/*
Non-secret CARECHAIN_* and OTEL_* settings of one service (its ConfigMap): (dict "root" $ "service" "x")
*/}}
{{- define "carechain.serviceEnv" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $svc := .service }}
{{- $s := index $v $svc }}
{{- $ctx := dict "root" $root "service" $svc }}
CARECHAIN_LISTEN_ADDRESS: "0.0.0.0:{{ $s.port }}"
CARECHAIN_DATA_DIR: {{ include "carechain.paths.data" . | quote }}
CARECHAIN_TRUST_DIR: {{ include "carechain.paths.trust" . | quote }}
CARECHAIN_CHAIN_ID: {{ $v.chainId | quote }}
CARECHAIN_LOG_LEVEL: {{ $v.logLevel | quote }}
CARECHAIN_SHUTDOWN_GRACE_SECONDS: {{ $v.shutdownGraceSeconds | int64 | quote }}
CARECHAIN_RPC_TIMEOUT_SECONDS: {{ $v.rpcTimeoutSeconds | quote }}
CARECHAIN_PEER_LOAD_BALANCING: {{ $v.grpc.loadBalancing | quote }}
CARECHAIN_MAX_CONNECTION_AGE_SECONDS: {{ $v.grpc.maxConnectionAgeSeconds | quote }}
CARECHAIN_MAX_CONNECTION_AGE_GRACE_SECONDS: {{ $v.grpc.maxConnectionAgeGraceSeconds | quote }}
{{- if $v.tls.enabled }}
{{- /* TLS listener and TLS (mutual: with this service's certificate) to every peer. */}}
{{ include "carechain.tlsFileEnv" . }}
CARECHAIN_TLS_REQUIRE_CLIENT_CERT: {{ and $v.tls.mutual (or (ne $svc "records") $v.tls.gatewayMutual) | quote }}
CARECHAIN_HEALTH_LISTEN_ADDRESS: "0.0.0.0:{{ $v.tls.healthPort }}"
{{- end }}
{{- /* Every peer a service may call (nobody calls records, so there is no records address). */}}
{{- range $peer := list "identity" "storage" "ledger" "consent" "audit" }}
{{- if ne $peer $svc }}
CARECHAIN_{{ upper $peer }}_ADDRESS: {{ include "carechain.address" (dict "root" $root "service" $peer) | quote }}
{{- end }}
{{- end }}
CARECHAIN_SIGNING_BACKEND: {{ $v.signing.backend | quote }}
{{- if eq $v.signing.backend "file" }}
CARECHAIN_SIGNING_KEY_FILE: "{{ include "carechain.paths.keys" . }}/signing.pem"
{{- else if ne $svc "ledger" }}
CARECHAIN_SIGNING_KEY_NAME: {{ default (printf "svc-%s" $svc) $s.signingKeyName | quote }}
{{- end }}
{{- if include "carechain.usesVault" $ctx }}
CARECHAIN_VAULT_ADDRESS: {{ $v.vault.address | quote }}
CARECHAIN_VAULT_AUTH_METHOD: {{ $v.vault.auth.method | quote }}
{{- if eq $v.vault.auth.method "kubernetes" }}
CARECHAIN_VAULT_KUBERNETES_ROLE: {{ include "carechain.vaultRole" $ctx | quote }}
CARECHAIN_VAULT_KUBERNETES_MOUNT: {{ $v.vault.auth.kubernetesMount | quote }}
{{- end }}
CARECHAIN_VAULT_TRANSIT_MOUNT: {{ $v.vault.transitMount | quote }}
CARECHAIN_VAULT_KV_MOUNT: {{ $v.vault.kvMount | quote }}
{{- with $v.vault.namespace }}
CARECHAIN_VAULT_NAMESPACE: {{ . | quote }}
{{- end }}
{{- if $v.vault.caSecret.name }}
CARECHAIN_VAULT_CA_CERT: "{{ include "carechain.paths.vaultCa" . }}/ca.crt"
{{- end }}
{{- end }}
{{- if include "carechain.usesEtcd" $ctx }}
CARECHAIN_ETCD_ENDPOINTS: {{ join "," $v.etcd.endpoints | quote }}
CARECHAIN_ETCD_PREFIX: {{ $v.etcd.prefix | quote }}
{{- if $v.etcd.caSecret.name }}
CARECHAIN_ETCD_CA_FILE: "{{ include "carechain.paths.etcd" . }}/ca.crt"
{{- end }}
{{- if $v.etcd.clientCertSecret.name }}
CARECHAIN_ETCD_CERT_FILE: "{{ include "carechain.paths.etcd" . }}/client.crt"
CARECHAIN_ETCD_KEY_FILE: "{{ include "carechain.paths.etcd" . }}/client.key"
{{- end }}
{{- if $v.etcd.username }}
CARECHAIN_ETCD_USERNAME: {{ $v.etcd.username | quote }}
CARECHAIN_ETCD_PASSWORD_FILE: "{{ include "carechain.paths.etcd" . }}/password"
{{- end }}
{{- end }}
{{- if eq $svc "identity" }}
CARECHAIN_KEY_BACKEND: {{ $s.keyBackend | quote }}
CARECHAIN_TOKEN_TTL_SECONDS: {{ $s.tokenTtlSeconds | quote }}
{{- $fhirBase := include "carechain.fhirBaseUrl" $root }}
{{- if and $v.fhir.enabled $fhirBase }}
{{- /* SMART client assertions name the FHIR gateway's token endpoint as their audience. */}}
CARECHAIN_SMART_TOKEN_URL: {{ printf "%s/token" (trimSuffix "/" $fhirBase) | quote }}
{{- end }}
{{- else if eq $svc "storage" }}
CARECHAIN_BLOB_BACKEND: {{ $s.blobBackend | quote }}
{{- if include "carechain.usesS3" $ctx }}
CARECHAIN_S3_ENDPOINT: {{ $v.s3.endpoint | quote }}
CARECHAIN_S3_BUCKET: {{ $v.s3.bucket | quote }}
CARECHAIN_S3_SECURE: {{ $v.s3.secure | quote }}
{{- with $v.s3.region }}
CARECHAIN_S3_REGION: {{ . | quote }}
{{- end }}
CARECHAIN_S3_OBJECT_LOCK_DAYS: {{ $v.s3.objectLockDays | int64 | quote }}
{{- if $v.s3.caSecret.name }}
CARECHAIN_S3_CA_CERT: "{{ include "carechain.paths.s3Ca" . }}/ca.crt"
{{- end }}
{{- end }}
{{- else if eq $svc "ledger" }}
CARECHAIN_ORDERER: {{ $s.orderer | quote }}
CARECHAIN_BLOCK_MAX_TRANSACTIONS: {{ $s.blockMaxTransactions | int64 | quote }}
CARECHAIN_BLOCK_MAX_WAIT_MS: {{ $s.blockMaxWaitMs | int64 | quote }}
{{- else if eq $svc "consent" }}
CARECHAIN_DECISION_TOKEN_TTL_SECONDS: {{ $s.decisionTokenTtlSeconds | quote }}
{{- /* The validator set whose quorum certificates consent accepts on ledger blocks (docs/security.md). */}}
{{- if $v.ledger.validators }}
{{- $ids := list }}
{{- range $v.ledger.validators }}
{{- $ids = append $ids (include "carechain.validatorId" (dict "root" $root "validator" .)) }}
{{- end }}
CARECHAIN_LEDGER_VALIDATORS: {{ join "," $ids | quote }}
CARECHAIN_LEDGER_QUORUM: {{ default 0 $v.ledger.quorum | int | quote }}
{{- end }}
{{- else if eq $svc "audit" }}
CARECHAIN_AUDIT_STORE: {{ $s.store | quote }}
{{- /* The ledger checkpoints audit publishes are verified against the configured validators. */}}
{{- $ids := list }}
{{- range $v.ledger.validators }}
{{- $ids = append $ids (include "carechain.validatorId" (dict "root" $root "validator" .)) }}
{{- end }}
CARECHAIN_VALIDATORS: {{ join "," $ids | quote }}
CARECHAIN_QUORUM: {{ default 0 $v.ledger.quorum | int | quote }}
{{- else if eq $svc "records" }}
CARECHAIN_MAX_RECORD_BYTES: {{ $s.maxRecordBytes | int64 | quote }}
{{- end }}
{{- /* The ledger metadata key (records and consent only): the Transit key when they use Vault. */}}
{{- if and (has $svc (list "records" "consent")) (include "carechain.usesVault" $ctx) }}
CARECHAIN_LEDGER_METADATA_KEY_BACKEND: "vault"
{{- end }}
{{- if $v.metrics.enabled }}
CARECHAIN_METRICS_LISTEN_ADDRESS: "0.0.0.0:{{ $v.metrics.port }}"
{{- end }}
OTEL_SERVICE_NAME: "carechain-{{ $svc }}"
OTEL_TRACES_EXPORTER: {{ $v.otel.tracesExporter | quote }}
{{- if eq $v.otel.tracesExporter "otlp" }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ $v.otel.endpoint | quote }}
OTEL_EXPORTER_OTLP_INSECURE: {{ $v.otel.insecure | quote }}
{{- if $v.otel.caBundle.name }}
OTEL_EXPORTER_OTLP_CERTIFICATE: "{{ include "carechain.paths.otelCa" . }}/ca.crt"
{{- end }}
{{- end }}
{{- $attrs := list (printf "service.namespace=%s" $root.Release.Namespace) (printf "k8s.namespace.name=%s" $root.Release.Namespace) }}
{{- range $k, $val := $v.otel.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $k (toString $val)) }}
{{- end }}
OTEL_RESOURCE_ATTRIBUTES: {{ join "," $attrs | quote }}
{{- end }}

{{/*
The Prometheus port of a Service that a ServiceMonitor scrapes (one Service per service: the pods of
audit and of every validator are reached once, through `audit` and `ledger`, never the headless ones).
*/}}
{{- define "carechain.metricsServicePort" -}}
{{- if .Values.metrics.enabled }}
{{- range $svc := list "records" "consent" "identity" "storage" "ledger" "audit" }}
{{- if eq (int $.Values.metrics.port) (int (index $.Values $svc).port) }}
{{- fail (printf "metrics.port: %d is %s.port; choose a free port" (int $.Values.metrics.port) $svc) }}
{{- end }}
{{- end }}
{{- if and .Values.tls.enabled (eq (int .Values.metrics.port) (int .Values.tls.healthPort)) }}
{{- fail (printf "metrics.port: %d is tls.healthPort; choose a free port" (int .Values.metrics.port)) }}
{{- end }}
    - name: metrics
      port: {{ .Values.metrics.port }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
{{- end }}
{{- end }}

{{/*
The FHIR gateway's public base URL: fhir.publicBaseUrl, else https://<fhir.ingress.host> with the Ingress, else
empty (each request's own URL; then there is no SMART token endpoint).
*/}}
{{- define "carechain.fhirBaseUrl" -}}
{{- $f := .Values.fhir }}
{{- $f.publicBaseUrl | default (ternary (printf "https://%s" $f.ingress.host) "" $f.ingress.enabled) }}
{{- end }}
