{{/* Names: every object is the release's name and a suffix, as `helm install redspot` makes `redspot-hub`. */}}
{{- define "redspot.fullname" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "redspot.labels" -}}
app.kubernetes.io/name: redspot
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* selector labels of one component: include with (list $ "hub") */}}
{{- define "redspot.selector" -}}
app.kubernetes.io/name: redspot
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "redspot.image" -}}
{{- printf "%s:%s" .name .tag -}}
{{- end -}}

{{- define "redspot.proxyImage" -}}
{{- if .Values.proxy.image.name -}}
{{- printf "%s:%s" .Values.proxy.image.name (.Values.proxy.image.tag | default .Values.hub.image.tag) -}}
{{- else -}}
{{- include "redspot.image" .Values.hub.image -}}
{{- end -}}
{{- end -}}

{{/*
A generated secret value that survives `helm upgrade`: the value given, else the one the
release's Secret already holds (`lookup`; nothing when rendering offline), else a new one.
include with (list $ "key-in-the-secret" given-value)
*/}}
{{- define "redspot.secretValue" -}}
{{- $root := index . 0 -}}
{{- $key := index . 1 -}}
{{- $given := index . 2 -}}
{{- if $given -}}
{{- $given -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace (printf "%s-secrets" (include "redspot.fullname" $root)) | default dict -}}
{{- $data := get $existing "data" | default dict -}}
{{- if hasKey $data $key -}}
{{- index $data $key | b64dec -}}
{{- else -}}
{{- randAlphaNum 64 | sha256sum -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* the pod security every Redspot container runs with: not root, nothing more */}}
{{- define "redspot.podSecurity" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 100
fsGroup: 100
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "redspot.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* network policies: DNS, and what users' pods (servers, Ray) may reach */}}
{{- define "redspot.netpol.dns" -}}
- to:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: kube-system}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end }}
{{- define "redspot.netpol.userEgress" -}}
{{- $np := .Values.networkPolicy -}}
{{ include "redspot.netpol.dns" . }}
{{- if $np.internet }}
# the internet, not the private ranges nor the instance metadata service
- to:
    - ipBlock:
        cidr: 0.0.0.0/0
        except:
          {{- range $np.privateCIDRs }}
          - {{ . }}
          {{- end }}
          - 169.254.169.254/32
{{- end }}
{{- range $np.userEgress }}
- to:
    - ipBlock: {cidr: {{ .cidr }}}
  {{- with .ports }}
  ports:
    {{- range . }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
  {{- end }}
{{- end }}
{{- end }}

{{/* the Redspot services `redspot:` turns on, as a JSON list; settings a pod cannot
have fail the render, as `redspot hub` would refuse them */}}
{{- define "redspot.services" -}}
{{- $on := list -}}
{{- range $service, $settings := (.Values.redspot.services | default dict) -}}
{{- if and (kindIs "map" $settings) $settings.enabled -}}
{{- if not (has $service (list "models" "environments" "sharing" "warehouse")) -}}
{{- fail (printf "redspot.services.%s: not a Redspot service (models, environments, sharing, warehouse)" $service) -}}
{{- end -}}
{{- if and (eq $service "environments") (ne ($settings.builder | default "venv") "kubernetes") -}}
{{- fail (printf "redspot.services.environments.builder: on Kubernetes, environments are built by Jobs: set `kubernetes` (it is %q)" ($settings.builder | default "venv")) -}}
{{- end -}}
{{- if and (eq $service "warehouse") (ne (($.Values.redspot.warehouse | default dict).demo) false) -}}
{{- fail "redspot.warehouse.demo: the demo data set is a file on one machine's disk, which users' pods cannot read: set `false` on Kubernetes" -}}
{{- end -}}
{{- $on = append $on $service -}}
{{- end -}}
{{- end -}}
{{- toJson $on -}}
{{- end -}}

{{/* the namespace environment builds run in (redspot.services.environments.build_namespace) */}}
{{- define "redspot.buildNamespace" -}}
{{- $envs := .Values.redspot.services.environments | default dict -}}
{{- $envs.build_namespace | default "redspot-builds" -}}
{{- end -}}
