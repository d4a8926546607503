#!/usr/bin/env python3
"""Checks on the chart's rendered output, its dashboard and its alert rules; called by check.sh.

Each subcommand prints a short result on stdout (check.sh adds the "chart: ... OK" line),
problems on stderr, and exits non-zero when the check fails.

  manifests FILE KUBE_VERSION   validate every resource of a `helm template` output with
                                kubernetes-validate (strict); CRD kinds it has no schema for
                                (CRD_KINDS) are only checked for apiVersion/kind/metadata.name
  resources FILE                print "Kind/name" of every rendered resource
  same-rules FILE RULES         the PrometheusRule in FILE carries exactly RULES' groups
                                (runbook_url may have a prefix)
  same-dashboard FILE JSON      the dashboard ConfigMap in FILE carries exactly JSON
  dashboard JSON OUT_RULES      structural checks of the dashboard; writes its PromQL as
                                recording rules to OUT_RULES for `promtool check rules`
  known-metrics KNOWN NAME...   every NAME is listed in the file KNOWN
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

# Custom resources: no schema in kubernetes-validate, the CRDs live with their operators.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}


def load_docs(path: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


def manifests(path: str, kube_version: str) -> int:
    import kubernetes_validate

    failures, validated, skipped = 0, 0, []
    for doc in load_docs(path):
        kind, api = doc.get("kind"), doc.get("apiVersion")
        name = (doc.get("metadata") or {}).get("name")
        if not (kind and api and name):
            print(f"resource without apiVersion/kind/metadata.name: {doc!r:.200}", file=sys.stderr)
            failures += 1
            continue
        if (api, kind) in CRD_KINDS:
            if not isinstance(doc.get("spec"), dict):
                print(f"{kind}/{name}: no spec", file=sys.stderr)
                failures += 1
            skipped.append(kind)
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
            validated += 1
        except kubernetes_validate.ValidationError as error:
            print(f"{kind}/{name}: {'.'.join(map(str, error.path))}: {error.message}", file=sys.stderr)
            failures += 1
        except kubernetes_validate.SchemaNotFoundError as error:
            print(f"{kind}/{name}: {error}", file=sys.stderr)
            failures += 1
    note = f"; CRDs checked as YAML only: {', '.join(sorted(set(skipped)))}" if skipped else ""
    print(f"{validated} resources valid{note}")
    return 1 if failures else 0


def resources(path: str) -> int:
    for doc in load_docs(path):
        hook = (doc["metadata"].get("annotations") or {}).get("helm.sh/hook")
        print(f"{doc['kind']}/{doc['metadata']['name']}" + (f" (hook: {hook})" if hook else ""))
    return 0


def find(path: str, kind: str) -> dict:
    docs = [d for d in load_docs(path) if d.get("kind") == kind]
    if len(docs) != 1:
        raise SystemExit(f"expected one {kind} in {path}, found {len(docs)}")
    return docs[0]


def same_rules(path: str, rules_file: str) -> int:
    rendered = find(path, "PrometheusRule")["spec"]
    source = yaml.safe_load(Path(rules_file).read_text())
    for group in rendered["groups"]:
        for rule in group["rules"]:
            url = rule.get("annotations", {}).get("runbook_url", "")
            rule["annotations"]["runbook_url"] = re.sub(r"^.*?(docs/operations\.md#)", r"\1", url)
    if rendered != source:
        print(f"the PrometheusRule's groups differ from {rules_file}", file=sys.stderr)
        return 1
    alerts = sum(len(g["rules"]) for g in rendered["groups"])
    print(f"{alerts} alerts, same as {Path(rules_file).name}")
    return 0


def same_dashboard(path: str, dashboard_file: str) -> int:
    configmaps = [
        d
        for d in load_docs(path)
        if d.get("kind") == "ConfigMap" and "group-enriched-consumer.json" in (d.get("data") or {})
    ]
    if len(configmaps) != 1:
        print("no dashboard ConfigMap rendered", file=sys.stderr)
        return 1
    data = configmaps[0]
    if json.loads(data["data"]["group-enriched-consumer.json"]) != json.loads(Path(dashboard_file).read_text()):
        print(f"the dashboard ConfigMap differs from {dashboard_file}", file=sys.stderr)
        return 1
    print(f"ConfigMap/{data['metadata']['name']} labels {data['metadata']['labels'].get('grafana_dashboard')!r}")
    return 0


def dashboard(path: str, out_rules: str) -> int:
    dash = json.loads(Path(path).read_text())
    problems = []
    if not 36 <= dash.get("schemaVersion", 0) <= 41:
        problems.append(f"schemaVersion {dash.get('schemaVersion')}")
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    if variables.get("datasource", {}).get("type") != "datasource":
        problems.append("no datasource template variable")
    for name in ("namespace", "job"):
        if name not in variables:
            problems.append(f"no {name} variable")
    ids = [p["id"] for p in dash["panels"]]
    if len(ids) != len(set(ids)):
        problems.append("duplicate panel ids")
    exprs = []
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"panel {panel['title']!r}: datasource is not ${{datasource}}")
        if not panel.get("targets"):
            problems.append(f"panel {panel['title']!r}: no query")
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"panel {panel['title']!r} target {target['refId']}: datasource is not ${{datasource}}")
            expr = target["expr"]
            if "$namespace" not in expr or "$job" not in expr:
                problems.append(f"panel {panel['title']!r}: query ignores $namespace/$job")
            exprs.append(expr)
    for problem in problems:
        print(problem, file=sys.stderr)
    # Grafana's variables replaced by values, so promtool can parse each query.
    concrete = [e.replace("$__rate_interval", "5m").replace("$namespace", "ns").replace("$job", "job") for e in exprs]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(concrete)],
            }
        ]
    }
    Path(out_rules).write_text(yaml.safe_dump(rules, sort_keys=False))
    panels = sum(1 for p in dash["panels"] if p["type"] != "row")
    print(f"{panels} panels, {len(exprs)} queries")
    return 1 if problems else 0


def known_metrics(known_file: str, *names: str) -> int:
    known = {
        line.strip() for line in Path(known_file).read_text().splitlines() if line.strip() and not line.startswith("#")
    }
    unknown = sorted(set(names) - known)
    for name in unknown:
        print(f"not a metric of the consumer: {name}", file=sys.stderr)
    print(f"{len(set(names))} names, all in {Path(known_file).name}" if not unknown else f"{len(unknown)} unknown")
    return 1 if unknown else 0


COMMANDS = {
    "manifests": manifests,
    "resources": resources,
    "same-rules": same_rules,
    "same-dashboard": same_dashboard,
    "dashboard": dashboard,
    "known-metrics": known_metrics,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))
