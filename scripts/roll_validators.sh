#!/usr/bin/env bash
# Roll the ledger validators of a CareChain Helm release one at a time, after a `helm upgrade`.
#
# With several validators the chart gives each validator's StatefulSet `updateStrategy: OnDelete`
# (docs/deploy.md, "Upgrades"): an upgrade changes no validator pod by itself, because Kubernetes would
# otherwise restart every validator at once and final writes would wait for a quorum. This deletes the
# pod of each validator whose StatefulSet has a pending revision, waits until the new pod is Ready (gRPC
# health SERVING: it has replayed the order and checked the published signatures), then goes on to the
# next one. Usage: scripts/roll_validators.sh <release> [namespace] (kubectl's current context).
set -euo pipefail
release=${1:?usage: roll_validators.sh <release> [namespace]}
namespace=${2:-$(kubectl config view --minify -o jsonpath='{..namespace}')}
namespace=${namespace:-default}
selector="app.kubernetes.io/instance=$release,app.kubernetes.io/component=ledger"
statefulsets=$(kubectl -n "$namespace" get statefulsets -l "$selector" -o name)
[[ -n "$statefulsets" ]] || { echo "no validator StatefulSets of release $release in $namespace" >&2; exit 1; }
for sts in $statefulsets; do
    current=$(kubectl -n "$namespace" get "$sts" -o jsonpath='{.status.currentRevision}')
    update=$(kubectl -n "$namespace" get "$sts" -o jsonpath='{.status.updateRevision}')
    pod="${sts#statefulset.apps/}-0"
    running=$(kubectl -n "$namespace" get pod "$pod" -o jsonpath='{.metadata.labels.controller-revision-hash}' 2>/dev/null || true)
    if [[ "$running" == "$update" ]]; then
        echo "$pod already runs $update"
        continue
    fi
    echo "rolling $pod: ${running:-$current} -> $update"
    kubectl -n "$namespace" delete pod "$pod" --wait=true
    # The StatefulSet controller recreates the pod at the update revision; wait until it is Ready.
    until kubectl -n "$namespace" get pod "$pod" >/dev/null 2>&1; do sleep 2; done
    kubectl -n "$namespace" wait --for=condition=Ready "pod/$pod" --timeout=15m
done
echo "every validator of $release runs its StatefulSet's update revision"
