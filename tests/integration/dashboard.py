"""Read the PromQL out of the Grafana dashboard and substitute its variables as Grafana would."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD_PATH = Path(__file__).resolve().parents[2] / "examples" / "grafana" / "memscope-dashboard.json"


def load_dashboard(path: Path = DASHBOARD_PATH) -> dict:
    """The dashboard JSON as a dict."""
    return json.loads(path.read_text())


def panel_queries(dashboard: dict) -> list[tuple[str, str]]:
    """``(panel title, expr)`` of every Prometheus target of every panel (rows included)."""
    queries = []
    stack = list(dashboard["panels"])
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            queries.append((panel["title"], target["expr"]))
    return queries


def variable_queries(dashboard: dict) -> dict[str, str]:
    """Name -> ``label_values(...)`` query of every query-type template variable."""
    result = {}
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            result[var["name"]] = query["query"] if isinstance(query, dict) else query
    return result


_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>[a-zA-Z_]\w*)\)$")


def split_label_values(query: str) -> tuple[str | None, str]:
    """``label_values(selector, label)`` -> ``(selector, label)`` (selector may be None)."""
    match = _LABEL_VALUES.match(query.strip())
    if match is None:
        raise ValueError(f"not a label_values() query: {query!r}")
    return match.group("selector"), match.group("label")


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Replace ``$name`` / ``${name}`` (longest names first so ``$__rate_interval`` is whole)."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    if "$" in expr:
        raise ValueError(f"unsubstituted variable left in {expr!r}")
    return expr
