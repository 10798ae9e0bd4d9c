#!/usr/bin/env bash
# A real (single-machine) cluster for users with Docker: kind cluster, datasweep images built and loaded,
# chart installed, sample Copa data on the data volume, and the seed 000 experiments applied.
#
#   hack/kind-up.sh                   # create/reuse the cluster, build, install, apply the examples
#   hack/kind-up.sh --no-examples     # stop after the helm install
#   hack/kind-up.sh --with-trainer    # also build the trainer image (torch, ~6 GB): every training stage runs in it
#   hack/kind-up.sh --down            # delete the cluster
#
# Needs: docker, kind, kubectl, helm (PATH, or helm from `make controlplane` in ~/.cache/datasweep/bin), and
# registry access (kind's node image, python base image). Not exercised by the project's tests: they run a real
# node in the embedded control plane instead (docs/controlplane.md).
# The generation Jobs call the OpenAI API: export OPENAI_API_KEY first to run them for real; without it
# the Secret is not created and the Experiments report the missing Secret in their Failed condition.
set -euo pipefail

CLUSTER=${DATASWEEP_KIND_CLUSTER:-datasweep}
NAMESPACE=${DATASWEEP_NAMESPACE:-ml-experiments}
TAG=${DATASWEEP_IMAGE_TAG:-dev}
repo=$(cd "$(dirname "$0")/.." && pwd)

with_examples=1
with_trainer=0
for arg in "$@"; do
  case "$arg" in
    --no-examples) with_examples=0 ;;
    --with-trainer) with_trainer=1 ;;
    --down) kind delete cluster --name "$CLUSTER"; exit 0 ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$arg' (see hack/kind-up.sh --help)" >&2; exit 2 ;;
  esac
done

log() { printf '\n==> %s\n' "$*"; }

helm_bin=$(command -v helm || true)
if [ -z "$helm_bin" ]; then
  helm_bin=$(ls "$HOME"/.cache/datasweep/bin/*/helm 2>/dev/null | head -n1 || true)
fi
missing=()
for tool in docker kind kubectl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
[ -n "$helm_bin" ] || missing+=("helm")
if [ ${#missing[@]} -gt 0 ]; then
  echo "error: missing ${missing[*]}: install them (https://kind.sigs.k8s.io/docs/user/quick-start/," \
    "https://helm.sh/docs/intro/install/) or run 'make controlplane' for helm" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "error: the Docker engine is not reachable (docker info failed): start Docker first" >&2
  exit 1
fi
if [ ! -f "$repo/README.md" ]; then
  echo "error: $repo/README.md is missing; the images install the package with 'pip install .'" >&2
  exit 1
fi

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "reusing kind cluster '$CLUSTER'"
else
  log "creating kind cluster '$CLUSTER'"
  kind create cluster --name "$CLUSTER" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

images=(operator worker)
[ "$with_trainer" = 1 ] && images+=(trainer)
for image in "${images[@]}"; do
  log "building datasweep-$image:$TAG"
  DOCKER_BUILDKIT=1 docker build -f "$repo/images/$image.Dockerfile" -t "datasweep-$image:$TAG" "$repo"
  kind load docker-image --name "$CLUSTER" "datasweep-$image:$TAG"
done

log "installing the chart into namespace '$NAMESPACE'"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# kind's local-path storage is ReadWriteOnce; one node means every pod can still mount the claim.
"$helm_bin" upgrade --install datasweep "$repo/charts/datasweep" \
  --namespace "$NAMESPACE" \
  --set image.repository=datasweep-operator --set-string image.tag="$TAG" \
  --set image.pullPolicy=Never \
  --set workerImages.worker.repository=datasweep-worker --set-string workerImages.worker.tag="$TAG" \
  --set workerImages.trainer.repository=datasweep-trainer --set-string workerImages.trainer.tag="$TAG" \
  --set workerImages.pullPolicy=Never \
  --set data.accessModes='{ReadWriteOnce}' --set data.size=5Gi \
  --wait --timeout 5m
kubectl -n "$NAMESPACE" rollout status deployment/datasweep --timeout=120s

if [ "$with_examples" = 0 ]; then
  log "done: kubectl -n $NAMESPACE get datasweep"
  exit 0
fi

log "copying a small Copa sample onto the data volume (sources/superglue/copa)"
sample=$(mktemp -d)
trap 'rm -rf "$sample"' EXIT
for split in train validation test; do
  cat >"$sample/copa_$split.jsonl" <<'EOF'
{"idx": 0, "premise": "My body cast a shadow over the grass.", "text": "My body cast a shadow over the grass.", "choice1": "The sun was rising.", "choice2": "The grass was cut.", "question": "cause", "label": 0}
{"idx": 1, "premise": "The woman tolerated her friend's difficult behavior.", "text": "The woman tolerated her friend's difficult behavior.", "choice1": "The woman knew her friend was going through a hard time.", "choice2": "The woman felt that her friend took advantage of her kindness.", "question": "cause", "label": 0}
EOF
done
kubectl -n "$NAMESPACE" delete pod datasweep-loader --ignore-not-found >/dev/null
kubectl -n "$NAMESPACE" apply -f - <<EOF >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: datasweep-loader}
spec:
  restartPolicy: Never
  securityContext: {runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001}
  containers:
    - name: loader
      image: datasweep-worker:$TAG
      imagePullPolicy: Never
      command: ["sleep", "600"]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes:
    - name: data
      persistentVolumeClaim: {claimName: datasweep-data}
EOF
kubectl -n "$NAMESPACE" wait --for=condition=Ready pod/datasweep-loader --timeout=120s >/dev/null
kubectl -n "$NAMESPACE" exec datasweep-loader -- mkdir -p /data/sources/superglue/copa
for file in "$sample"/*.jsonl; do
  kubectl -n "$NAMESPACE" cp "$file" "datasweep-loader:/data/sources/superglue/copa/$(basename "$file")"
done
kubectl -n "$NAMESPACE" delete pod datasweep-loader --wait=false >/dev/null

if [ -n "${OPENAI_API_KEY:-}" ]; then
  kubectl -n "$NAMESPACE" create secret generic openai --from-literal=api-key="$OPENAI_API_KEY" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
else
  echo "note: OPENAI_API_KEY is not set: the Experiments will report the missing Secret 'openai'"
fi

log "applying the seed 000 experiments (sources on the data volume, no extra claim)"
# The GitOps experiments read from a 'raw-data' claim; here the sample lives on the data volume itself.
kubectl kustomize "$repo/examples/gitops/experiments" \
  | sed -e "s/namespace: ml-experiments/namespace: $NAMESPACE/" \
        -e '/pvc: raw-data/d' -e 's#path: superglue/copa#path: sources/superglue/copa#' \
  | kubectl apply -f -

log "done. Watch it with:"
echo "  kubectl -n $NAMESPACE get exp,bat,art"
echo "  kubectl -n $NAMESPACE logs deploy/datasweep -f"
echo "  hack/kind-up.sh --down    # delete the cluster"
