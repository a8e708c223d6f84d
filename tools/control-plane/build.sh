#!/usr/bin/env bash
# Build the local Kubernetes control plane for the tests from the Go module proxy, once per
# version: kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes), etcd
# (go.etcd.io/etcd/server/v3), kwok and helm. Binaries are cached outside the repository under
# $AIRFLOW_ADAPTIVE_K8S_CACHE (default ~/.cache/airflow-adaptive/control-plane)/<versions>/bin;
# a present binary is never rebuilt. Prints the bin directory on its last line.
#
# | what | version | why |
# |---|---|---|
# | Kubernetes | v1.37.2 | in-place pod resize is GA since 1.35; the newest patch on the proxy |
# | etcd | v3.7.3 server module | Kubernetes 1.37 builds against the etcd v3.7 client |
# | kwok | v0.8.0 | newest release; Stages for resize emulation |
# | helm | v4.3.1 | newest v4 release |
set -euo pipefail
K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.3}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v4.3.1}"
CACHE="${AIRFLOW_ADAPTIVE_K8S_CACHE:-$HOME/.cache/airflow-adaptive/control-plane}"
BIN="$CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION/bin"
WORK="$CACHE/build"
mkdir -p "$BIN" "$WORK"
export GOFLAGS="${GOFLAGS:--trimpath}" CGO_ENABLED=0
staging="v0.${K8S_VERSION#v1.}"

log() { echo "[control-plane] $*" >&2; }
timed() { local name=$1; shift; local t0=$SECONDS; "$@"; log "$name built in $((SECONDS - t0)) s"; }

build_kubernetes() {
    local dir="$WORK/kubernetes-$K8S_VERSION"
    mkdir -p "$dir"
    # k8s.io/kubernetes points its staging modules (k8s.io/api, ...) at ./staging; outside its own
    # tree they must be replaced by their published v0.X.Y versions.
    curl -fsSL "https://proxy.golang.org/k8s.io/kubernetes/@v/$K8S_VERSION.mod" -o "$dir/kubernetes.mod"
    {
        echo "module airflow-adaptive/control-plane-kubernetes"
        echo
        echo "go 1.26"
        echo
        echo "require k8s.io/kubernetes $K8S_VERSION"
        echo
        grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$dir/kubernetes.mod" \
            | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
    } > "$dir/go.mod"
    cat > "$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
    (cd "$dir" && go mod tidy -e >/dev/null 2>&1 || true; cd "$dir" && go mod download)
    # Without the version stamped in, the binaries call themselves v0.0.0-master (what `go build`
    # outside the Kubernetes tree gives); clients and version-gated behaviour read these.
    local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
    local ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    done
    for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
        [ -x "$BIN/$cmd" ] || (cd "$dir" && timed "$cmd" go build -tags tools -ldflags "$ldflags" -o "$BIN/$cmd" "k8s.io/kubernetes/cmd/$cmd")
    done
}

build_etcd() {
    [ -x "$BIN/etcd" ] && return
    local dir="$WORK/etcd-$ETCD_VERSION"
    mkdir -p "$dir"
    cat > "$dir/go.mod" <<MOD
module airflow-adaptive/control-plane-etcd

go 1.26

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
    cat > "$dir/main.go" <<'GO'
// etcd's server module has the server's entry point but no main package of its own.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    (cd "$dir" && go mod tidy && timed etcd go build -o "$BIN/etcd" .)
}

build_tool() {  # name module@version
    [ -x "$BIN/$1" ] && return
    timed "$1" env GOBIN="$BIN" go install "$2"
}

build_etcd
build_tool kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
build_tool helm "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
build_kubernetes
# kwok serves container logs from files named by its Logs / ClusterLogs objects; the tests create
# them per pod or namespace, so the cluster needs kwok's CRDs for them, which ships in kwok's module rather than its binary.
CRDS="$BIN/../crds"
for crd in logs clusterlogs; do
    [ -f "$CRDS/kwok.x-k8s.io_$crd.yaml" ] && continue
    mkdir -p "$CRDS"
    src="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/crd/bases/kwok.x-k8s.io_$crd.yaml"
    [ -f "$src" ] || (cd "$WORK" && GOFLAGS=-mod=mod go mod download "sigs.k8s.io/kwok@$KWOK_VERSION")
    cp "$src" "$CRDS/"
done
echo "$BIN"
