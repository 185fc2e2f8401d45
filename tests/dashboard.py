"""Reading deploy/components/grafana-dashboard: its panels, their PromQL (parsed by promql-parser, the
Prometheus parser's Rust port), the metric names they use, and the names a `/metrics` page exports."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
COMPONENT = ROOT / "deploy" / "components" / "grafana-dashboard"
# Grafana's variables, as Grafana would substitute them before sending a query.
VARIABLES = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "1h", "$namespace": ".*"}
# The series a metric family of each type exports (prometheus_client, text format and OpenMetrics).
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"), "info": ("_info",), "unknown": ("",)}


def dashboard() -> dict[str, Any]:
    return json.loads((COMPONENT / "flops-bot.json").read_text())


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too; rows themselves left out."""
    found = []
    for panel in board["panels"]:
        found += [p for p in [panel, *panel.get("panels", [])] if p["type"] != "row"]
    return found


def expressions(board: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in panels(board) for t in p["targets"]]
    exprs += [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def substituted(expr: str) -> str:
    for name, value in sorted(VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names the query selects (a PromQL syntax error raises)."""
    if match := re.fullmatch(r"label_values\((\w+),\s*\w+\)", expr):  # Grafana's variable query, not PromQL
        expr = match.group(1)
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"select metrics by name, not by a __name__ matcher: {expr}"
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(substituted(expr)), visit)
    return names


def exported(metrics_text: str) -> set[str]:
    """Every series name a `/metrics` page (Prometheus text format) exports, by each family's type."""
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names
