{{/*
Helpers of the rlkube chart. The objects must equal those of rlkube/launch/render.py (render_values) for the
same values, field for field and type for type, so every scalar is written with toJson (a JSON string is a YAML
double-quoted string that reads back exactly, multi-line strings included) and every count with int64.
Helpers that compute a map or list return it as JSON, read back with fromJson.
*/}}

{{/*
rlkube.validate: what the schema leaves to the templates; called for every object. (Whether output suits pvc is
checked here, not in the schema: `helm lint` validates a pvc set to null as if it kept its default.)
*/}}
{{- define "rlkube.validate" -}}
{{- if not (index .Values "experiment") -}}
{{- fail "values: experiment is required: name the experiment, e.g. --set experiment=dqn-pong-1 (at most 40 lowercase letters, digits and '-', starting and ending with a letter or digit)" -}}
{{- end -}}
{{- $onVolume := hasPrefix "/" .Values.output -}}
{{- if and (index .Values "pvc") (not $onVolume) -}}
{{- fail (printf "values: output %s is not on the pvc: with a pvc, output is the absolute path of the volume's root in the pod (e.g. /runs); for gs:// or s3:// output set pvc to null" .Values.output) -}}
{{- end -}}
{{- if and (not (index .Values "pvc")) $onVolume -}}
{{- fail (printf "values: output %s is a path in the pod, so name the pvc that holds it (or write to gs:// or s3://)" .Values.output) -}}
{{- end -}}
{{- end -}}

{{/*
rlkube.labels: the labels of every object and pod (JSON): the extra .Values.labels, then rlkube's own, which
win. managed-by is rlkube, also when Helm installs. A sweep's trial also carries rlkube.io/sweep.
*/}}
{{- define "rlkube.labels" -}}
{{- $own := dict
  "app.kubernetes.io/name" "rlkube"
  "app.kubernetes.io/instance" .Values.experiment
  "app.kubernetes.io/component" "trainer"
  "app.kubernetes.io/managed-by" "rlkube"
  "app.kubernetes.io/version" .Values.version
  "rlkube.io/experiment" .Values.experiment -}}
{{- with index .Values "sweep" }}{{ $_ := set $own "rlkube.io/sweep" . }}{{ end -}}
{{- toJson (merge $own (.Values.labels | default dict)) -}}
{{- end -}}

{{/*
rlkube.annotations: the provenance annotations of every object (JSON).
*/}}
{{- define "rlkube.annotations" -}}
{{- $provenance := .Values.provenance -}}
{{- toJson (dict
  "rlkube.io/git-commit" $provenance.gitCommit
  "rlkube.io/git-dirty" ($provenance.gitDirty | toString | lower)
  "rlkube.io/image" .Values.image
  "rlkube.io/version" .Values.version
  "rlkube.io/submit-command" $provenance.submitCommand
  "rlkube.io/created" $provenance.created) -}}
{{- end -}}

{{/*
rlkube.mapping: a map as block YAML, one `"key": "value"` line per entry in key order; {} when empty.
*/}}
{{- define "rlkube.mapping" -}}
{{- if . -}}
{{- $lines := list -}}
{{- range $key, $value := . -}}
{{- $lines = append $lines (printf "%s: %s" (toJson $key) (toJson $value)) -}}
{{- end -}}
{{- join "\n" $lines -}}
{{- else -}}
{}
{{- end -}}
{{- end -}}

{{/*
rlkube.sequence: a list as block YAML, one `- item` line per item (objects as JSON flow mappings); [] when empty.
*/}}
{{- define "rlkube.sequence" -}}
{{- if . -}}
{{- $lines := list -}}
{{- range . -}}
{{- $lines = append $lines (printf "- %s" (toJson .)) -}}
{{- end -}}
{{- join "\n" $lines -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{/*
rlkube.metadata: name, namespace (from values, not the release), labels and annotations of an object.
Takes a dict: root (the chart's context), name, labels and annotations (added to, and overriding, the common ones).
*/}}
{{- define "rlkube.metadata" -}}
{{- $root := .root -}}
{{- include "rlkube.validate" $root -}}
{{- $labels := include "rlkube.labels" $root | fromJson -}}
{{- range $key, $value := .labels }}{{ $_ := set $labels $key $value }}{{ end -}}
{{- $annotations := include "rlkube.annotations" $root | fromJson -}}
{{- range $key, $value := .annotations }}{{ $_ := set $annotations $key $value }}{{ end -}}
name: {{ toJson .name }}
namespace: {{ toJson $root.Values.namespace }}
labels:
  {{- include "rlkube.mapping" $labels | nindent 2 }}
annotations:
  {{- include "rlkube.mapping" $annotations | nindent 2 }}
{{- end -}}

{{/*
rlkube.outputDir: the experiment's run directory, <output>/<experiment>, as render.py's output_dir names it. On a PVC
its pods mount only this directory of the volume (subPath <experiment>), so no experiment reaches another's runs.
*/}}
{{- define "rlkube.outputDir" -}}
{{- printf "%s/%s" .Values.output .Values.experiment -}}
{{- end -}}

{{/*
rlkube.hosts: pods per copy, the hosts of a TPU slice or 1. More than 1 makes one Job per copy.
*/}}
{{- define "rlkube.hosts" -}}
{{- $accelerator := index .Values "accelerator" -}}
{{- if and $accelerator (eq (toString $accelerator.type) "tpu") -}}
{{- int64 $accelerator.hosts -}}
{{- else -}}
1
{{- end -}}
{{- end -}}

{{/*
rlkube.scheduling: node selector, tolerations and accelerator limits for the hardware (JSON):
  tpu: GKE's TPU accelerator and topology labels, the google.com/tpu taint, chipsPerHost TPU chips;
  gpu: GKE's accelerator label (gke only), the nvidia.com/gpu taint, count GPUs;
  spot on gke: the gke-spot label and taint; eks: spot or on-demand capacity by karpenter or managed node groups;
then values.nodeSelector over the selector, and values.tolerations after the tolerations.
*/}}
{{- define "rlkube.scheduling" -}}
{{- $values := .Values -}}
{{- $selector := dict -}}
{{- $tolerations := list -}}
{{- $limits := dict -}}
{{- $accelerator := index $values "accelerator" -}}
{{- if and $accelerator (eq (toString $accelerator.type) "tpu") -}}
{{- $_ := set $selector "cloud.google.com/gke-tpu-accelerator" $accelerator.gkeAccelerator -}}
{{- $_ = set $selector "cloud.google.com/gke-tpu-topology" $accelerator.topology -}}
{{- $tolerations = append $tolerations (dict "key" "google.com/tpu" "operator" "Exists" "effect" "NoSchedule") -}}
{{- $_ = set $limits "google.com/tpu" (int64 $accelerator.chipsPerHost | toString) -}}
{{- else if and $accelerator (eq (toString $accelerator.type) "gpu") -}}
{{- if eq $values.provider "gke" -}}
{{- $_ := set $selector "cloud.google.com/gke-accelerator" $accelerator.name -}}
{{- end -}}
{{- $tolerations = append $tolerations (dict "key" "nvidia.com/gpu" "operator" "Exists" "effect" "NoSchedule") -}}
{{- $_ := set $limits "nvidia.com/gpu" (int64 $accelerator.count | toString) -}}
{{- end -}}
{{- if and (eq $values.provider "gke") $values.spot -}}
{{- $_ := set $selector "cloud.google.com/gke-spot" "true" -}}
{{- $tolerations = append $tolerations (dict "key" "cloud.google.com/gke-spot" "operator" "Equal" "value" "true" "effect" "NoSchedule") -}}
{{- end -}}
{{- if eq $values.provider "eks" -}}
{{- if eq $values.capacitySelector "karpenter" -}}
{{- $_ := set $selector "karpenter.sh/capacity-type" (ternary "spot" "on-demand" (not (not $values.spot))) -}}
{{- else -}}
{{- $_ := set $selector "eks.amazonaws.com/capacityType" (ternary "SPOT" "ON_DEMAND" (not (not $values.spot))) -}}
{{- end -}}
{{- end -}}
{{- range $key, $value := $values.nodeSelector }}{{ $_ := set $selector $key $value }}{{ end -}}
{{- $tolerations = concat $tolerations $values.tolerations -}}
{{- toJson (dict "nodeSelector" $selector "tolerations" $tolerations "limits" $limits) -}}
{{- end -}}

{{/*
rlkube.podIdentity: the start of every pod's spec: as the experiment's own ServiceAccount, without an API token,
as a non-root user.
*/}}
{{- define "rlkube.podIdentity" -}}
restartPolicy: Never
serviceAccountName: {{ toJson .Values.experiment }}
# Training needs no Kubernetes API access, so the pod gets no token.
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ int64 .Values.terminationGracePeriodSeconds }}
securityContext:
  runAsNonRoot: true
  runAsUser: 1000
  runAsGroup: 1000
  fsGroup: 1000
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/*
rlkube.trainerPod: the trainer's pod spec. Takes a dict: root, args (of `rlkube train`), subdomain ("" for none)
and rayHead (true: a Ray head's, without command and args: KubeRay starts Ray in it, and the copy runs as the
RayJob's entrypoint). On a PVC, it mounts only the experiment's own directory of it (rlkube.outputDir).
*/}}
{{- define "rlkube.trainerPod" -}}
{{- $root := .root -}}
{{- $values := $root.Values -}}
{{- $scheduling := include "rlkube.scheduling" $root | fromJson -}}
{{- /* Node disk is requested and capped, so a copy that fills /tmp is evicted alone rather than its neighbours. */ -}}
{{- $requests := merge (dict "ephemeral-storage" $values.ephemeralStorage) $values.resources -}}
{{- $limits := dict "ephemeral-storage" $values.ephemeralStorage -}}
{{- if hasKey $values.resources "memory" }}{{ $_ := set $limits "memory" $values.resources.memory }}{{ end -}}
{{- range $key, $value := $scheduling.limits }}{{ $_ := set $limits $key $value }}{{ end -}}
{{- $pvc := index $values "pvc" -}}
{{ include "rlkube.podIdentity" $root }}
containers:
  - name: trainer
    image: {{ toJson $values.image }}
    {{- if not .rayHead }}
    command:
      - rlkube
      - train
    args:
      {{- include "rlkube.sequence" .args | nindent 6 }}
    {{- end }}
    {{- /* The root file system is read-only: home and caches (TensorFlow's, matplotlib's, pip's, rlkube's
    mirror of a run in a bucket, W&B's run files) go to the /tmp emptyDir. values.env comes after rlkube's
    own. */}}
    env:
      - name: RLKUBE_EXPERIMENT
        value: {{ toJson $values.experiment }}
      - name: HOME
        value: /tmp
      - name: MPLCONFIGDIR
        value: /tmp/matplotlib
      - name: XDG_CACHE_HOME
        value: /tmp/.cache
      - name: WANDB_DIR
        value: /tmp
      {{- if .rayHead }}
      {{- /* A stopped Ray job (its RayJob deleted by `rlkube cancel`) gets SIGTERM, and Ray's SIGKILL follows after
      RAY_JOB_STOP_WAIT_TIME_S (3 s by default): the pod's grace period lets the learner checkpoint. */}}
      - name: RAY_JOB_STOP_WAIT_TIME_S
        value: {{ toString (int64 $values.terminationGracePeriodSeconds) | toJson }}
      {{- end }}
      {{- with $values.env }}
      {{- include "rlkube.sequence" . | nindent 6 }}
      {{- end }}
    {{- with $values.envFromSecrets }}
    {{- /* Credentials (e.g. an S3-compatible server's keys) reach the process without appearing in the Job. */}}
    envFrom:
      {{- range . }}
      - secretRef:
          name: {{ toJson . }}
      {{- end }}
    {{- end }}
    resources:
      requests:
        {{- include "rlkube.mapping" $requests | nindent 8 }}
      limits:
        {{- include "rlkube.mapping" $limits | nindent 8 }}
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities:
        drop:
          - ALL
    volumeMounts:
      - name: config
        mountPath: /etc/rlkube
        readOnly: true
      - name: tmp
        mountPath: /tmp
      - name: shm
        mountPath: /dev/shm
      {{- if $pvc }}
      - name: runs
        mountPath: {{ include "rlkube.outputDir" $root | toJson }}
        subPath: {{ toJson $values.experiment }}
      {{- end }}
volumes:
  - name: config
    configMap:
      name: {{ toJson $values.experiment }}
  - name: tmp
    emptyDir:
      sizeLimit: {{ toJson $values.tmpSizeLimit }}
  - name: shm
    emptyDir:
      medium: Memory
      sizeLimit: {{ toJson $values.shmSizeLimit }}
  {{- if $pvc }}
  - name: runs
    persistentVolumeClaim:
      claimName: {{ toJson $pvc }}
  {{- end }}
{{- with $scheduling.nodeSelector }}
nodeSelector:
  {{- include "rlkube.mapping" . | nindent 2 }}
{{- end }}
{{- with $scheduling.tolerations }}
tolerations:
  {{- include "rlkube.sequence" . | nindent 2 }}
{{- end }}
{{- with index $values "priorityClass" }}
priorityClassName: {{ toJson . }}
{{- end }}
{{- with .subdomain }}
subdomain: {{ toJson . }}
{{- end }}
{{- end -}}

{{/*
rlkube.raySidePod: a RayJob's pod beside its learner, a Ray worker's (name `actor`: holds actors) or the job's
submitter's (name `submitter`: submits the entrypoint and streams the driver's output). CPU and memory only, no
accelerator, nothing of the runs (the learner writes them) nor the profile's Secrets (neither needs credentials); the
profile's own node selector and tolerations place it. Takes a dict: root, name, cpu, memory.
*/}}
{{- define "rlkube.raySidePod" -}}
{{- $values := .root.Values -}}
{{ include "rlkube.podIdentity" .root }}
containers:
  - name: {{ .name }}
    image: {{ toJson $values.image }}
    env:
      - name: RLKUBE_EXPERIMENT
        value: {{ toJson $values.experiment }}
      - name: HOME
        value: /tmp
      - name: MPLCONFIGDIR
        value: /tmp/matplotlib
      - name: XDG_CACHE_HOME
        value: /tmp/.cache
      - name: WANDB_DIR
        value: /tmp
      {{- with $values.env }}
      {{- include "rlkube.sequence" . | nindent 6 }}
      {{- end }}
    resources:
      requests:
        cpu: {{ toJson .cpu }}
        memory: {{ toJson .memory }}
        ephemeral-storage: {{ toJson $values.ephemeralStorage }}
      limits:
        memory: {{ toJson .memory }}
        ephemeral-storage: {{ toJson $values.ephemeralStorage }}
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities:
        drop:
          - ALL
    volumeMounts:
      - name: tmp
        mountPath: /tmp
      - name: shm
        mountPath: /dev/shm
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ toJson $values.tmpSizeLimit }}
  - name: shm
    emptyDir:
      medium: Memory
      sizeLimit: {{ toJson $values.shmSizeLimit }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- include "rlkube.mapping" . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- include "rlkube.sequence" . | nindent 2 }}
{{- end }}
{{- with index $values "priorityClass" }}
priorityClassName: {{ toJson . }}
{{- end }}
{{- end -}}

{{/*
rlkube.shellWords: a list of words as one shell command line, as Python's shlex.join writes it: a word of only
letters, digits and @%+=:,./_- as it is, any other single-quoted.
*/}}
{{- define "rlkube.shellWords" -}}
{{- $words := list -}}
{{- range . -}}
{{- if regexMatch "^[A-Za-z0-9@%+=:,./_-]+$" . -}}
{{- $words = append $words . -}}
{{- else -}}
{{- $words = append $words (printf "'%s'" (replace "'" "'\"'\"'" .)) -}}
{{- end -}}
{{- end -}}
{{- join " " $words -}}
{{- end -}}

{{/*
rlkube.rayjob: copy `copy` as a RayJob (KubeRay), <experiment>-copy-<copy>: its learner is the job's driver on the Ray
head, which has the trainer's pod, and its --num-workers actors are Ray actors on the worker pods. Takes a dict: root,
copy, args. Ray gives the driver RAY_ADDRESS, so the actors join this cluster.
*/}}
{{- define "rlkube.rayjob" -}}
{{- $root := .root -}}
{{- $values := $root.Values -}}
{{- $copyLabel := dict "rlkube.io/copy" (toString .copy) -}}
{{- $podLabels := include "rlkube.labels" $root | fromJson -}}
{{- $_ := set $podLabels "rlkube.io/copy" (toString .copy) -}}
{{- $jobLabels := deepCopy $copyLabel -}}
{{- with index $values "queue" }}{{ $_ := set $jobLabels "kueue.x-k8s.io/queue-name" . }}{{ end -}}
{{- $deadline := index $values "activeDeadlineSeconds" -}}
apiVersion: ray.io/v1
kind: RayJob
metadata:
  {{- include "rlkube.metadata" (dict "root" $root "name" (printf "%s-copy-%d" $values.experiment (int .copy)) "labels" $jobLabels "annotations" (dict)) | nindent 2 }}
spec:
  entrypoint: {{ include "rlkube.shellWords" (concat (list "rlkube" "train") .args) | toJson }}
  {{- /* A submitter pod (a Job of KubeRay's, from the template below) submits the entrypoint to the head's dashboard
  and follows the driver's output: its log is the copy's log. (In HTTPMode the driver's output stays in a file on the
  head.) The template is rlkube's, so it runs under Pod Security `restricted`. */}}
  submissionMode: K8sJobMode
  submitterPodTemplate:
    metadata:
      labels:
        {{- include "rlkube.mapping" $podLabels | nindent 8 }}
    spec:
      {{- include "rlkube.raySidePod" (dict "root" $root "name" "submitter" "cpu" "100m" "memory" "512Mi") | nindent 6 }}
  shutdownAfterJobFinishes: true
  {{- /* A failed copy is retried on a new Ray cluster of its own; the other copies run on. */}}
  backoffLimit: {{ int64 $values.retriesPerCopy }}
  {{- if not (kindIs "invalid" $deadline) }}
  activeDeadlineSeconds: {{ int64 $deadline }}
  {{- end }}
  rayClusterSpec:
    headGroupSpec:
      {{- /* No CPUs for Ray on the head: every actor is placed on a worker, the learner keeps the head. */}}
      rayStartParams:
        num-cpus: "0"
        object-store-memory: {{ toJson $values.ray.objectStoreMemory }}
      template:
        metadata:
          labels:
            {{- include "rlkube.mapping" $podLabels | nindent 12 }}
        spec:
          {{- include "rlkube.trainerPod" (dict "root" $root "args" (list) "subdomain" "" "rayHead" true) | nindent 10 }}
    workerGroupSpecs:
      - groupName: actors
        replicas: {{ int64 $values.ray.workers }}
        minReplicas: {{ int64 $values.ray.workers }}
        maxReplicas: {{ int64 $values.ray.workers }}
        rayStartParams:
          num-cpus: {{ toJson $values.ray.numCpus }}
          object-store-memory: {{ toJson $values.ray.objectStoreMemory }}
        template:
          metadata:
            labels:
              {{- include "rlkube.mapping" $podLabels | nindent 14 }}
          spec:
            {{- include "rlkube.raySidePod" (dict "root" $root "name" "actor" "cpu" $values.ray.cpu "memory" $values.ray.memory) | nindent 12 }}
{{- end -}}

{{/*
rlkube.job: an Indexed Job of `indices` pods. Takes a dict: root, name, indices, args, labels (added to the
common ones, on the Job and its pods) and subdomain ("" for none). One failing index does not stop the others
(backoffLimitPerIndex), and a preempted or evicted pod is retried without counting as a failure.
On a PVC, the pods mount only the experiment's own directory of it (rlkube.outputDir).
*/}}
{{- define "rlkube.job" -}}
{{- $root := .root -}}
{{- $values := $root.Values -}}
{{- $podLabels := include "rlkube.labels" $root | fromJson -}}
{{- range $key, $value := .labels }}{{ $_ := set $podLabels $key $value }}{{ end -}}
{{- $jobLabels := deepCopy .labels -}}
{{- with index $values "queue" }}{{ $_ := set $jobLabels "kueue.x-k8s.io/queue-name" . }}{{ end -}}
{{- $deadline := index $values "activeDeadlineSeconds" -}}
{{- $ttl := index $values "ttlSecondsAfterFinished" -}}
apiVersion: batch/v1
kind: Job
metadata:
  {{- include "rlkube.metadata" (dict "root" $root "name" .name "labels" $jobLabels "annotations" (dict)) | nindent 2 }}
spec:
  completionMode: Indexed
  completions: {{ int64 .indices }}
  parallelism: {{ int64 .indices }}
  backoffLimitPerIndex: {{ int64 $values.retriesPerCopy }}
  {{- /* A user error (`rlkube train`'s exit code 2) fails its index at once: every retry would fail the same way.
  A writer superseded by its copy's replacement pod (exit code 3) is no failure of the copy. */}}
  podFailurePolicy:
    rules:
      - action: Ignore
        onPodConditions:
          - type: DisruptionTarget
      - action: FailIndex
        onExitCodes:
          containerName: trainer
          operator: In
          values:
            - 2
      - action: Ignore
        onExitCodes:
          containerName: trainer
          operator: In
          values:
            - 3
  {{- /* A hung copy gives its accelerator back at the deadline; a finished Job is cleaned up after the TTL. */}}
  {{- if not (kindIs "invalid" $deadline) }}
  activeDeadlineSeconds: {{ int64 $deadline }}
  {{- end }}
  {{- if not (kindIs "invalid" $ttl) }}
  ttlSecondsAfterFinished: {{ int64 $ttl }}
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "rlkube.mapping" $podLabels | nindent 8 }}
    spec:
      {{- include "rlkube.trainerPod" (dict "root" $root "args" .args "subdomain" .subdomain) | nindent 6 }}
{{- end -}}
