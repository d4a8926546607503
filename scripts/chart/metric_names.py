#!/usr/bin/env python3
"""Print every consumer metric the Grafana dashboard and the alert rules use.

One base name per line, sorted: group_enriched_* names as they appear in the PromQL
expressions, with a histogram's _bucket/_sum/_count suffix stripped to its base name
(group_enriched_batch_events_bucket -> group_enriched_batch_events).

Only query expressions are read: the dashboard's panel targets and variable queries,
and the rules' `expr`. Usage:

    python3 scripts/chart/metric_names.py [--dashboard FILE] [--rules FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "group-enriched-consumer"
METRIC = re.compile(r"\bgroup_enriched_[a-zA-Z0-9_]*[a-zA-Z0-9]")
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def dashboard_expressions(dashboard: dict) -> list[str]:
    """PromQL of every panel target (rows' nested panels too) and every query variable."""
    exprs: list[str] = []

    def walk_panels(panels: list[dict]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk_panels(panel.get("panels", []))

    walk_panels(dashboard.get("panels", []))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        exprs.append(query.get("query", "") if isinstance(query, dict) else query or "")
    return exprs


def rule_expressions(rules: dict) -> list[str]:
    return [rule["expr"] for group in rules.get("groups", []) for rule in group.get("rules", [])]


def metric_names(exprs: list[str]) -> set[str]:
    return {HISTOGRAM_SUFFIX.sub("", name) for expr in exprs for name in METRIC.findall(expr)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboard", type=Path, default=CHART / "dashboards" / "group-enriched-consumer.json")
    parser.add_argument("--rules", type=Path, default=CHART / "rules" / "alerts.yaml")
    args = parser.parse_args()

    exprs = dashboard_expressions(json.loads(args.dashboard.read_text()))
    exprs += rule_expressions(yaml.safe_load(args.rules.read_text()))
    names = metric_names(exprs)
    if not names:
        print("metric_names: no group_enriched_* metric found", file=sys.stderr)
        return 1
    print("\n".join(sorted(names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
