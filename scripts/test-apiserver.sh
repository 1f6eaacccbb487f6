#!/usr/bin/env bash
# The operator's API-server tests: obtains etcd, kube-apiserver (built once and cached outside
# the repository), helm and the linters (scripts/k8s-test-bin.sh), then runs
#   - hadolint on the Dockerfile
#   - helm lint, and helm template | kubernetes-validate (schemas 1.33)
#   - the ignored operator tests against a real kube-apiserver + etcd on loopback (the end-to-end
#     ones run pods as local processes in private mount namespaces: root needed), including
#     `helm install` of the chart.
# Called by scripts/test.sh; usable alone. First run on a fresh machine: ~7-10 minutes for the
# apiserver build; later runs reuse the cache.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
eval "$(scripts/k8s-test-bin.sh)"
export PRETRAIN_ETCD PRETRAIN_KUBE_APISERVER PRETRAIN_HELM

echo "== hadolint Dockerfile; the Dockerfile's build step, run here as CI has no Docker engine"
"$PRETRAIN_LINT_BIN/hadolint" Dockerfile
build="cargo build --release --locked -p pretrain-runtime -p pretrain-operator --bins"
grep -qF "RUN $build" Dockerfile || { echo "Dockerfile's build step differs from: $build" >&2; exit 1; }
$build

echo "== helm lint / template | kubernetes-validate"
helm_home=$(mktemp -d)
trap 'rm -rf "$helm_home"' EXIT
export HELM_CACHE_HOME=$helm_home/cache HELM_CONFIG_HOME=$helm_home/config HELM_DATA_HOME=$helm_home/data
"$PRETRAIN_HELM" lint --strict charts/pretrain-operator
for values in "" "--set replicaCount=2 --set watchNamespace=ml --set metrics.service.enabled=false"; do
  # shellcheck disable=SC2086
  "$PRETRAIN_HELM" template op charts/pretrain-operator --namespace ops --include-crds $values \
    > "$helm_home/rendered.yaml"
  "$PRETRAIN_LINT_BIN/kubernetes-validate" -k 1.33.0 --strict "$helm_home/rendered.yaml"
  # watchNamespace=ml: RBAC is a Role and RoleBinding in ml only; otherwise cluster-wide.
  if [[ $values == *watchNamespace=ml* ]]; then
    if grep -q '^kind: ClusterRole' "$helm_home/rendered.yaml" \
      || [ "$(grep -c '^  namespace: ml$' "$helm_home/rendered.yaml")" != 2 ]; then
      echo "watchNamespace=ml must render a Role and RoleBinding in ml and no ClusterRole" >&2
      exit 1
    fi
  elif ! grep -q '^kind: ClusterRoleBinding$' "$helm_home/rendered.yaml"; then
    echo "without watchNamespace the chart must render a ClusterRole and its binding" >&2
    exit 1
  fi
done
"$PRETRAIN_LINT_BIN/kubernetes-validate" -k 1.33.0 --strict crds/*.yaml

echo "== operator tests against kube-apiserver $("$PRETRAIN_KUBE_APISERVER" --version 2>/dev/null | awk '{print $2}')"
cargo test -p pretrain-operator --release --locked --test main -- --ignored --test-threads "${PRETRAIN_APISERVER_TEST_THREADS:-4}"
