#!/usr/bin/env bash
# Build a pinned Helm v3 from the Go module proxy into <repo>/.cache/bin.
# Idempotent: does nothing when that version is already built there.
# Prints the helm binary path on stdout (progress goes to stderr).
set -euo pipefail

HELM_VERSION="v3.22.0"
# Kubernetes version helm assumes for .Capabilities and lint deprecation checks:
# the one of the client-go that helm v3.22.0 is built with (k8s.io/client-go v0.37.0),
# set the way helm's own Makefile sets it (an unstamped build would assume v1.20).
K8S_MAJOR="1"
K8S_MINOR="37"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin_dir="${repo_root}/.cache/bin"
helm_bin="${bin_dir}/helm"
want="${HELM_VERSION} k8s v${K8S_MAJOR}.${K8S_MINOR}.0"

have() {
  [[ -x "${helm_bin}" ]] || return 1
  local v k
  v="$("${helm_bin}" version --template '{{.Version}}' 2>/dev/null)" || return 1
  k="$(kube_version_of "${helm_bin}")" || return 1
  [[ "${v} k8s ${k}" == "${want}" ]]
}

# The KubeVersion a helm binary assumes, read through a throw-away chart.
kube_version_of() {
  local tmp
  tmp="$(mktemp -d)"
  mkdir -p "${tmp}/c/templates"
  printf 'apiVersion: v2\nname: c\nversion: 0.0.0\n' >"${tmp}/c/Chart.yaml"
  printf 'kubeVersion: {{ .Capabilities.KubeVersion.Version }}\n' >"${tmp}/c/templates/v.yaml"
  "$1" template x "${tmp}/c" 2>/dev/null | sed -n 's/^kubeVersion: //p'
  rm -rf "${tmp}"
}

if have; then
  echo "install-helm: helm ${want} already built at ${helm_bin}" >&2
  echo "${helm_bin}"
  exit 0
fi

command -v go >/dev/null || { echo "install-helm: go toolchain not found" >&2; exit 1; }
mkdir -p "${bin_dir}"
echo "install-helm: building helm ${want} with $(go version) (a few minutes on 2 cores)" >&2
start=$(date +%s)
pkg="helm.sh/helm/v3"
ldflags="-s -w -X ${pkg}/internal/version.version=${HELM_VERSION} -X ${pkg}/internal/version.gitTreeState=clean"
ldflags+=" -X ${pkg}/pkg/lint/rules.k8sVersionMajor=${K8S_MAJOR} -X ${pkg}/pkg/lint/rules.k8sVersionMinor=${K8S_MINOR}"
ldflags+=" -X ${pkg}/pkg/chartutil.k8sVersionMajor=${K8S_MAJOR} -X ${pkg}/pkg/chartutil.k8sVersionMinor=${K8S_MINOR}"
GOBIN="${bin_dir}" CGO_ENABLED=0 go install -trimpath -ldflags "${ldflags}" "${pkg}/cmd/helm@${HELM_VERSION}"
echo "install-helm: built helm ${HELM_VERSION} in $(( $(date +%s) - start ))s" >&2
have || { echo "install-helm: ${helm_bin} does not report ${want}" >&2; exit 1; }
echo "${helm_bin}"
