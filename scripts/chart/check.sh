#!/usr/bin/env bash
# Checks the Helm chart, its Grafana dashboard and its Prometheus alert rules:
#
#   bash scripts/chart/check.sh
#
# Installs what it needs when missing (helm built from the Go module proxy by
# install-helm.sh, kubernetes-validate from PyPI, promtool from Debian's `prometheus`),
# prints one line per check ("chart: <check> OK" or "... FAILED" followed by the
# details), then the rendered resources of the default and full-features scenarios.
# Exits non-zero when any check failed.
set -uo pipefail

# Kubernetes version the manifests are rendered for and validated against.
KUBE_VERSION="1.33.0"
KUBERNETES_VALIDATE_VERSION="1.37.0"
RELEASE="group-enriched-consumer"
NAMESPACE="consumers"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
chart="${repo}/helm/group-enriched-consumer"
scripts="${repo}/scripts/chart"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
failed=0

# check DESCRIPTION COMMAND...: runs COMMAND; OK shows its last output line, if any.
check() {
  local description="$1"; shift
  if "$@" >"${work}/out" 2>"${work}/err"; then
    local detail
    detail="$(grep -v '^\s*$' "${work}/out" | tail -n 1 | sed 's/^\s*//')"
    echo "chart: ${description} OK${detail:+ (${detail})}"
  else
    echo "chart: ${description} FAILED"
    cat "${work}/out" "${work}/err" | sed 's/^/    /'
    failed=1
  fi
}

# check_rejects DESCRIPTION EXPECTED_MESSAGE HELM_TEMPLATE_ARGS...: the render must fail
# with EXPECTED_MESSAGE (a grep -E pattern) in its error.
check_rejects() {
  local description="$1" expected="$2"; shift 2
  if "${helm}" template "${RELEASE}" "${chart}" --kube-version "${KUBE_VERSION}" "$@" >"${work}/out" 2>"${work}/err"; then
    echo "chart: ${description} FAILED (rendered without error)"
    failed=1
  elif grep -Eq -- "${expected}" "${work}/err"; then
    echo "chart: ${description} OK"
  else
    echo "chart: ${description} FAILED (error does not mention \"${expected}\")"
    sed 's/^/    /' "${work}/err"
    failed=1
  fi
}

setup_failed() { echo "chart: setup $1 FAILED"; exit 1; }

# --- tools -----------------------------------------------------------------------------
helm="$(bash "${scripts}/install-helm.sh" 2>"${work}/helm-build.log")" \
  || { cat "${work}/helm-build.log"; setup_failed "helm"; }
echo "chart: setup helm $("${helm}" version --template '{{.Version}}') OK"

if [[ "$(python3 -m pip show kubernetes-validate 2>/dev/null | sed -n 's/^Version: //p')" != "${KUBERNETES_VALIDATE_VERSION}" ]]; then
  python3 -m pip install --quiet --disable-pip-version-check "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}" \
    || setup_failed "kubernetes-validate ${KUBERNETES_VALIDATE_VERSION}"
fi
echo "chart: setup kubernetes-validate ${KUBERNETES_VALIDATE_VERSION} OK"

if ! command -v promtool >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } \
    >"${work}/apt.log" 2>&1 || { cat "${work}/apt.log"; setup_failed "promtool"; }
fi
echo "chart: setup promtool $(promtool --version 2>&1 | sed -n '1s/^promtool, version \([^ ]*\).*/\1/p') OK"

# --- chart: lint, render, validate each scenario ---------------------------------------
render() { # render VALUES_FILE OUT
  "${helm}" template "${RELEASE}" "${chart}" --namespace "${NAMESPACE}" --kube-version "${KUBE_VERSION}" -f "$1" >"$2"
}
scenarios=("${chart}"/ci/*.yaml)
[[ -e "${scenarios[0]}" ]] || { echo "chart: no values files in ${chart}/ci FAILED"; exit 1; }
for values in "${scenarios[@]}"; do
  name="ci/$(basename "${values}")"
  rendered="${work}/$(basename "${values}" .yaml).rendered.yaml"
  check "helm lint --strict ${name}" "${helm}" lint --strict --kube-version "${KUBE_VERSION}" -f "${values}" "${chart}"
  check "helm template ${name}" render "${values}" "${rendered}"
  check "kubernetes-validate --strict (Kubernetes ${KUBE_VERSION}) ${name}" \
    python3 "${scripts}/chart_checks.py" manifests "${rendered}" "${KUBE_VERSION}"
done

full="${work}/full-features-hpa.rendered.yaml"
default="${work}/default-values.rendered.yaml"
check "PrometheusRule carries rules/alerts.yaml (ci/full-features-hpa.yaml)" \
  python3 "${scripts}/chart_checks.py" same-rules "${full}" "${chart}/rules/alerts.yaml"
check "dashboard ConfigMap carries dashboards/group-enriched-consumer.json (ci/full-features-hpa.yaml)" \
  python3 "${scripts}/chart_checks.py" same-dashboard "${full}" "${chart}/dashboards/group-enriched-consumer.json"
check "terminationGracePeriodSeconds = shutdownTimeoutSeconds + margin (25+10, 40+10)" \
  bash -c "grep -q 'terminationGracePeriodSeconds: 35$' '${default}' && grep -q 'terminationGracePeriodSeconds: 50$' '${full}'"

# --- chart: what it must refuse --------------------------------------------------------
base=(-f "${chart}/ci/default-values.yaml")
check_rejects "rejects HPA and KEDA together" "mutually exclusive" \
  "${base[@]}" --set autoscaling.enabled=true --set keda.enabled=true
check_rejects "rejects autoscaling.maxReplicas > kafka.partitions" "autoscaling.maxReplicas \(7\) must not exceed kafka.partitions \(6\)" \
  "${base[@]}" --set autoscaling.enabled=true --set autoscaling.maxReplicas=7
check_rejects "rejects keda.maxReplicas > kafka.partitions" "keda.maxReplicas \(9\) must not exceed kafka.partitions \(8\)" \
  "${base[@]}" --set keda.enabled=true --set keda.maxReplicas=9 --set kafka.partitions=8
check_rejects "rejects replicaCount > kafka.partitions" "replicaCount \(4\) must not exceed kafka.partitions \(3\)" \
  "${base[@]}" --set replicaCount=4 --set kafka.partitions=3
check_rejects "rejects shutdownTimeoutSeconds not below the consumer's stall timeout" "shutdownTimeoutSeconds \(60\) must be below HEALTH_STALL_TIMEOUT_S" \
  "${base[@]}" --set shutdownTimeoutSeconds=60
check_rejects "rejects shutdownTimeoutSeconds not below HEALTH_STALL_TIMEOUT_S from extraEnv" "shutdownTimeoutSeconds \(40\) must be below HEALTH_STALL_TIMEOUT_S \(30" \
  "${base[@]}" --set shutdownTimeoutSeconds=40 --set 'extraEnv[0].name=HEALTH_STALL_TIMEOUT_S' --set-string 'extraEnv[0].value=30'
check_rejects "rejects a missing Track API token" "Track API token is required" \
  "${base[@]}" --set trackApi.existingSecret=
check_rejects "rejects trackApi.token together with trackApi.existingSecret" "not both" \
  "${base[@]}" --set trackApi.token=t
check_rejects "rejects a missing kafka.bootstrapServers" "kafka.bootstrapServers is required" \
  --set trackApi.existingSecret=s
check_rejects "rejects unknown values (values.schema.json)" "additional properties|additionalProperties" \
  "${base[@]}" --set kafka.bootstrapServer=typo

# --- alerts ----------------------------------------------------------------------------
check "promtool check rules rules/alerts.yaml" promtool check rules "${chart}/rules/alerts.yaml"
check "promtool test rules tests/chart/alerts_test.yaml" promtool test rules "${repo}/tests/chart/alerts_test.yaml"

# --- dashboard -------------------------------------------------------------------------
check "dashboard structure dashboards/group-enriched-consumer.json" \
  python3 "${scripts}/chart_checks.py" dashboard "${chart}/dashboards/group-enriched-consumer.json" "${work}/dashboard-queries.yaml"
check "promtool parses every dashboard query" promtool check rules "${work}/dashboard-queries.yaml"

# --- metric names ----------------------------------------------------------------------
check "metric_names.py: dashboard and alerts use only the consumer's metrics" \
  bash -c "names=\$(python3 '${scripts}/metric_names.py') && python3 '${scripts}/chart_checks.py' known-metrics '${repo}/tests/chart/known_metrics.txt' \${names}"

# --- rendered resources ----------------------------------------------------------------
for scenario in default-values full-features-hpa; do
  echo "chart: rendered resources, ci/${scenario}.yaml:"
  python3 "${scripts}/chart_checks.py" resources "${work}/${scenario}.rendered.yaml" 2>&1 | sed 's/^/    /'
done

if (( failed )); then
  echo "chart: FAILED"
  exit 1
fi
echo "chart: all checks passed"
