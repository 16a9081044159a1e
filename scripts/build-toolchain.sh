#!/usr/bin/env bash
# Builds the binaries of the end-to-end tier and caches them by version outside the repository:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s.io/kubernetes through a wrapper module)
#   etcd                                                             (go.etcd.io/etcd/server/v3 through a wrapper)
#   kwok, kwokctl, helm                                              (go install)
#   keda, keda-adapter, keda-admission-webhooks, KEDA's config/       (github.com/kedacore/keda/v2 through a wrapper)
#   prometheus                                                       (Debian's package, unpacked, not installed)
# Everything Go comes from the Go module proxy; Prometheus from the Debian archive through apt-get download.
# A warm run finds every component complete and rebuilds nothing. At the end it writes
# $BURSTPILOT_CACHE/toolchain.json: the absolute path of every binary, which tests/e2e reads.
#
# Environment: BURSTPILOT_CACHE (default ~/.cache/burstpilot), BURSTPILOT_K8S_VERSIONS (tried in order,
# default "v1.36.3 v1.34.4"), BURSTPILOT_ETCD_VERSION, BURSTPILOT_KWOK_VERSION, BURSTPILOT_HELM_VERSION,
# BURSTPILOT_KEDA_VERSION, BURSTPILOT_PROMETHEUS_VERSION (a Debian version; default: a cached one, else apt's
# candidate).
set -euo pipefail

CACHE=${BURSTPILOT_CACHE:-$HOME/.cache/burstpilot}
K8S_VERSIONS=${BURSTPILOT_K8S_VERSIONS:-v1.36.3 v1.34.4}
ETCD_VERSION=${BURSTPILOT_ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${BURSTPILOT_KWOK_VERSION:-v0.8.0}
HELM_VERSION=${BURSTPILOT_HELM_VERSION:-v3.22.0}
KEDA_VERSION=${BURSTPILOT_KEDA_VERSION:-v2.21.0}
PROM_VERSION=${BURSTPILOT_PROMETHEUS_VERSION:-}

# Modules come through the Go module proxy this machine is configured with (go env GOPROXY).
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { printf '%s build-toolchain: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null || die "Go is not on PATH (needs Go >= 1.26 for Kubernetes v1.36 and kwok v0.8)"
GO_VERSION=$(go env GOVERSION)
mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
flock 9  # one build at a time (make test and a background build may overlap)

# complete DIR: true when DIR holds a finished build (written last, after every binary is in place).
complete() { [ -f "$1/.complete" ]; }
# finish DIR SECONDS: marks DIR complete and records how long the cold build took.
finish() { printf 'built_by=%s\nbuild_seconds=%s\n' "$GO_VERSION" "$2" >"$1/.complete"; }

build_kubernetes() { # VERSION -> prints the bin directory
  local version=$1 dest="$CACHE/kubernetes/$1" src="$CACHE/src/kubernetes-$1"
  if complete "$dest"; then echo "$dest/bin"; return 0; fi
  if [ -f "$dest.failed" ] && grep -qx "$GO_VERSION" "$dest.failed"; then
    log "kubernetes $version failed before with $GO_VERSION (rm $dest.failed to retry)"; return 1
  fi
  local t0=$SECONDS minor=${version#v1.}; minor=${minor%%.*}
  log "kubernetes $version: resolving the release's go.mod"
  local info gomod commit date
  info=$(go mod download -json "k8s.io/kubernetes@$version") || return 1
  gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")
  commit=$(sed -n 's/^[[:space:]]*"Hash": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")
  date=$(sed -n 's/^[[:space:]]*"Time": "\(.*\)",\{0,1\}$/\1/p' <<<"$info" | head -1)
  [ -f "$gomod" ] || { log "no go.mod for k8s.io/kubernetes@$version"; return 1; }
  mkdir -p "$src"
  {
    echo "module burstpilot.local/kubernetes-toolchain"
    echo
    grep -m1 '^go ' "$gomod"
    # godebug lines (single or block) must equal the release's: a dependency's godebug is ignored.
    awk '/^godebug \(/{b=1} b{print} b&&/^\)/{b=0;next} /^godebug [^(]/{print}' "$gomod"
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    echo "replace ("
    # every staging module, e.g. "k8s.io/api => ./staging/src/k8s.io/api" -> "k8s.io/api => k8s.io/api v0.36.3"
    sed -n "s#^[[:space:]]*\(k8s.io/[A-Za-z0-9._-]*\) => ./staging/src/.*#\t\1 => \1 v0.${version#v1.}#p" "$gomod"
    echo ")"
  } >"$src/go.mod"
  log "kubernetes $version: $(grep -c ' => ' "$src/go.mod") staging modules replaced; building (slow when cold)"
  local pkg=k8s.io/component-base/version cg=k8s.io/client-go/pkg/version ld="-s -w"
  for p in $pkg $cg; do
    ld+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitCommit=${commit:-unknown}"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=${date:-1970-01-01T00:00:00Z}"
  done
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp/bin"
  # One go build for the four binaries, so shared packages compile once.
  if ! (cd "$src" && go build -mod=mod -trimpath -tags notest,grpcnotrace -ldflags "$ld" -o "$dest.tmp/bin/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl); then
    mkdir -p "$(dirname "$dest")" && echo "$GO_VERSION" >"$dest.failed"; rm -rf "$dest.tmp"; return 1
  fi
  local reported  # captured first: grep -q in a pipe would stop the writer early (SIGPIPE under pipefail)
  reported=$("$dest.tmp/bin/kubectl" version --client 2>/dev/null || true)
  grep -q "$version" <<<"$reported" || { log "kubectl does not report $version: $reported"; return 1; }
  finish "$dest.tmp" $((SECONDS - t0))
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  log "kubernetes $version built in $((SECONDS - t0)) s"
  echo "$dest/bin"
}

build_etcd() {
  local dest="$CACHE/etcd/$ETCD_VERSION" src="$CACHE/src/etcd-$ETCD_VERSION"
  complete "$dest" && return 0
  local t0=$SECONDS info commit gover
  log "etcd $ETCD_VERSION: building go.etcd.io/etcd/server/v3 through a wrapper module"
  info=$(go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  commit=$(sed -n 's/^[[:space:]]*"Hash": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")
  gover=$(grep -m1 '^go ' "$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")")
  local sha=${commit:0:12}; sha=${sha:-$ETCD_VERSION}  # the proxy may not report the commit
  mkdir -p "$src"
  printf 'module burstpilot.local/etcd-toolchain\n\n%s\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "$gover" "$ETCD_VERSION" >"$src/go.mod"
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp/bin"
  (cd "$src" && go build -mod=mod -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$sha" \
    -o "$dest.tmp/bin/etcd" go.etcd.io/etcd/server/v3)
  local reported
  reported=$("$dest.tmp/bin/etcd" --version)
  grep -q "${ETCD_VERSION#v}" <<<"$reported" || die "etcd does not report $ETCD_VERSION: $reported"
  finish "$dest.tmp" $((SECONDS - t0))
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  log "etcd built in $((SECONDS - t0)) s"
}

build_keda() {
  # KEDA's operator, its metrics API server (the adapter) and its admission webhooks, from one go build in a
  # wrapper module that requires github.com/kedacore/keda/v2. A dependency's replace and exclude directives
  # are ignored, so the wrapper repeats KEDA's own (read from its go.mod), and starts from KEDA's go.sum so
  # every module is checked against the hashes KEDA pinned. KEDA's config/ (CRDs, RBAC, APIService; kustomize)
  # comes from the same module.
  local dest="$CACHE/keda/$KEDA_VERSION" src="$CACHE/src/keda-$KEDA_VERSION" mod=github.com/kedacore/keda/v2
  complete "$dest" && return 0
  local t0=$SECONDS info gomod dir commit
  log "keda $KEDA_VERSION: building $mod (operator, adapter, webhooks) through a wrapper module (slow when cold)"
  info=$(go mod download -json "$mod@$KEDA_VERSION")
  gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")
  commit=$(sed -n 's/^[[:space:]]*"Hash": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")
  [ -f "$gomod" ] && [ -d "$dir/config/crd" ] || die "no go.mod or config/crd for $mod@$KEDA_VERSION"
  mkdir -p "$src"
  {
    echo "module burstpilot.local/keda-toolchain"
    echo
    grep -m1 '^go ' "$gomod"
    awk '/^godebug \(/{b=1} b{print} b&&/^\)/{b=0;next} /^godebug [^(]/{print}' "$gomod"
    echo
    echo "require $mod $KEDA_VERSION"
    echo
    # replace and exclude directives, single-line or block, exactly as KEDA's go.mod has them
    awk '/^(replace|exclude) \(/{b=1} b{print} b&&/^\)/{b=0;next} /^(replace|exclude) [^(]/{print}' "$gomod"
  } >"$src/go.mod"
  cp "$dir/go.sum" "$src/go.sum" && chmod u+w "$src/go.sum"
  log "keda $KEDA_VERSION: $(grep -cE '^(replace|exclude) |=>' "$src/go.mod") replace/exclude lines from its go.mod"
  local ld="-s -w -X $mod/version.Version=${KEDA_VERSION#v} -X $mod/version.GitCommit=${commit:-$KEDA_VERSION}"
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp/bin"
  (cd "$src" && go build -mod=mod -trimpath -ldflags "$ld" -o "$dest.tmp/bin/" \
    "$mod/cmd/operator" "$mod/cmd/adapter" "$mod/cmd/webhooks")
  # KEDA's Makefile names them keda, keda-adapter, keda-admission-webhooks
  mv "$dest.tmp/bin/operator" "$dest.tmp/bin/keda"
  mv "$dest.tmp/bin/adapter" "$dest.tmp/bin/keda-adapter"
  mv "$dest.tmp/bin/webhooks" "$dest.tmp/bin/keda-admission-webhooks"
  # The build info names the module and version each binary was built from (it leaves out -ldflags under
  # -trimpath; the e2e tier checks the version KEDA's operator logs at start).
  local reported
  reported=$(go version -m "$dest.tmp/bin/keda")
  grep -qE "^[[:space:]]*mod[[:space:]]+$mod[[:space:]]+$KEDA_VERSION[[:space:]]" <<<"$reported" ||
    die "keda is not built from $mod $KEDA_VERSION: $reported"
  cp -r "$dir/config" "$dest.tmp/config" && chmod -R u+w "$dest.tmp/config"
  finish "$dest.tmp" $((SECONDS - t0))
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  log "keda built in $((SECONDS - t0)) s"
}

go_install() { # NAME VERSION LDFLAGS PACKAGE...
  local name=$1 version=$2 ld=$3; shift 3
  local dest="$CACHE/$name/$version"
  complete "$dest" && return 0
  local t0=$SECONDS
  log "$name $version: go install $*"
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp/bin"
  GOBIN="$dest.tmp/bin" go install -trimpath -ldflags "-s -w $ld" "${@/%/@$version}"
  finish "$dest.tmp" $((SECONDS - t0))
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  log "$name built in $((SECONDS - t0)) s"
}

fetch_prometheus() { # -> sets PROM_VERSION and prometheus (the binary's path)
  if [ -z "$PROM_VERSION" ]; then
    local cached
    cached=$(ls -1d "$CACHE"/prometheus/*/.complete 2>/dev/null | sort -V | tail -1 || true)
    if [ -n "$cached" ]; then PROM_VERSION=$(basename "$(dirname "$cached")"); fi
  fi
  if [ -z "$PROM_VERSION" ]; then
    PROM_VERSION=$(apt-cache policy prometheus 2>/dev/null | sed -n 's/^[[:space:]]*Candidate: //p')
    if [ -z "$PROM_VERSION" ] || [ "$PROM_VERSION" = "(none)" ]; then
      log "prometheus: no candidate in apt's lists; running apt-get update"
      apt-get update -qq >&2
      PROM_VERSION=$(apt-cache policy prometheus | sed -n 's/^[[:space:]]*Candidate: //p')
    fi
    [ -n "$PROM_VERSION" ] && [ "$PROM_VERSION" != "(none)" ] || die "apt knows no prometheus package"
  fi
  local dest="$CACHE/prometheus/$PROM_VERSION"
  if ! complete "$dest"; then
    local t0=$SECONDS tmp
    log "prometheus $PROM_VERSION: apt-get download + dpkg-deb -x (not installed, no daemon started)"
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download -qq "prometheus=$PROM_VERSION" >&2)
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
    dpkg-deb -x "$tmp"/prometheus_*.deb "$dest.tmp"
    rm -rf "$tmp"
    "$dest.tmp/usr/bin/prometheus" --version >/dev/null 2>&1 || die "unpacked prometheus does not run"
    finish "$dest.tmp" $((SECONDS - t0))
    rm -rf "$dest" && mv "$dest.tmp" "$dest"
  fi
  prometheus="$dest/usr/bin/prometheus"
}

t_all=$SECONDS
fetch_prometheus
# Helm's default Kubernetes version (helm lint/template without a cluster) is that of its client-go, as in
# Helm's own Makefile; without these ldflags it says v1.20.
helm_kminor=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' |
  xargs grep -m1 'k8s.io/client-go v0\.' | sed 's/.*v0\.\([0-9]*\)\..*/\1/')
helm_ld="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ld+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$helm_kminor"
done
go_install helm "$HELM_VERSION" "$helm_ld" helm.sh/helm/v3/cmd/helm
go_install kwok "$KWOK_VERSION" "" \
  sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
# kwok's own stage configurations (from the same module): fast node and pod lifecycles, node heartbeats by Lease.
kwok_stages="$CACHE/kwok/$KWOK_VERSION/stages.yaml"
if [ ! -f "$kwok_stages" ]; then
  kwok_dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  for f in "$kwok_dir"/kustomize/stage/node/fast/node-*.yaml "$kwok_dir"/kustomize/stage/node/heartbeat-with-lease/node-*.yaml \
    "$kwok_dir"/kustomize/stage/pod/fast/pod-*.yaml; do
    echo "---"; cat "$f"
  done >"$kwok_stages.tmp"
  mv "$kwok_stages.tmp" "$kwok_stages"
fi
build_etcd
k8s_bin=
for v in $K8S_VERSIONS; do
  if k8s_bin=$(build_kubernetes "$v"); then k8s_version=$v; break; fi
  log "kubernetes $v did not build; trying the next version"
  k8s_bin=
done
[ -n "$k8s_bin" ] || die "no Kubernetes version of [$K8S_VERSIONS] builds with $GO_VERSION"
build_keda
keda_dir="$CACHE/keda/$KEDA_VERSION"

manifest="$CACHE/toolchain.json"
cat >"$manifest.tmp" <<EOF
{
  "kubernetes_version": "$k8s_version",
  "etcd_version": "$ETCD_VERSION",
  "kwok_version": "$KWOK_VERSION",
  "helm_version": "$HELM_VERSION",
  "keda_version": "$KEDA_VERSION",
  "prometheus_version": "$PROM_VERSION",
  "kube-apiserver": "$k8s_bin/kube-apiserver",
  "kube-controller-manager": "$k8s_bin/kube-controller-manager",
  "kube-scheduler": "$k8s_bin/kube-scheduler",
  "kubectl": "$k8s_bin/kubectl",
  "etcd": "$CACHE/etcd/$ETCD_VERSION/bin/etcd",
  "kwok": "$CACHE/kwok/$KWOK_VERSION/bin/kwok",
  "kwokctl": "$CACHE/kwok/$KWOK_VERSION/bin/kwokctl",
  "kwok-stages": "$kwok_stages",
  "helm": "$CACHE/helm/$HELM_VERSION/bin/helm",
  "keda-operator": "$keda_dir/bin/keda",
  "keda-adapter": "$keda_dir/bin/keda-adapter",
  "keda-admission-webhooks": "$keda_dir/bin/keda-admission-webhooks",
  "keda-config": "$keda_dir/config",
  "prometheus": "$prometheus"
}
EOF
mv "$manifest.tmp" "$manifest"
log "toolchain ready in $((SECONDS - t_all)) s: $manifest"
