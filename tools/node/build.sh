#!/usr/bin/env bash
# Prepare the real node for the tests (tests marked `kubelet`): the container runtime from Debian,
# the static pause binary, and the node's images (tools/node/images.py), cached under
# $AIRFLOW_ADAPTIVE_NODE_CACHE (default ~/.cache/airflow-adaptive/node). The kubelet itself is
# built with the control plane (tools/control-plane/build.sh). Prints the images' JSON file on
# its last line.
#
# | what | version | why |
# |---|---|---|
# | containerd | Debian bookworm 1.6.20 | 4 min less on the cold path than building 2.x; runs pods, in-place resizes and OOM kills as 2.x did in the trial. The kubelet 1.37 warns that 1.x loses support in 1.38: move to 2.x with the kubelet |
# | runc | Debian bookworm 1.1.5 | cgroup v1 and v2, cgroupfs driver |
# | CNI plugins | Debian bookworm 1.1.1 | bridge + host-local + loopback (+ portmap) |
# | mmdebstrap | Debian bookworm | the images' base root filesystem without Docker |
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${AIRFLOW_ADAPTIVE_NODE_CACHE:-$HOME/.cache/airflow-adaptive/node}"
mkdir -p "$CACHE"
log() { echo "[node] $*" >&2; }

need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v nsenter >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        log "missing ${need[*]} and not root: the real node needs root; the kubelet tests will fail"
    else
        log "installing ${need[*]} from Debian"
        t0=$SECONDS
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >&2
        log "packages installed in $((SECONDS - t0)) s"
    fi
fi
# The package may start its own containerd on the default socket where an init system runs; the
# node runs its own and wants no second one left behind.
if [ -S /run/containerd/containerd.sock ] && pgrep -x containerd >/dev/null && ! pgrep -f airflow-adaptive-node >/dev/null; then
    log "note: a system containerd is running; the node uses its own socket and leaves it alone"
fi

PAUSE="$CACHE/pause"
if [ ! -x "$PAUSE" ]; then
    (cd tools/node/pause && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$PAUSE" .)
fi
t0=$SECONDS
.venv/bin/python tools/node/images.py --cache "$CACHE/images" --pause "$PAUSE" > "$CACHE/images.json"
log "images ready in $((SECONDS - t0)) s"
echo "$CACHE/images.json"
