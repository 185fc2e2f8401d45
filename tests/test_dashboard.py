"""Issue 25 part 4: deploy/components/grafana-dashboard. Its PromQL parses (promql-parser) and names only
metrics the bot exports; the panels the issue asks for are there. (The same check against a running
`python -m bot serve`: tests/test_as_shipped.py.)"""
from __future__ import annotations

import pytest

from bot.platform.metrics import Metrics
from tests import dashboard


def test_every_query_parses_and_names_a_metric_the_bot_registers() -> None:
    metrics = Metrics()
    metrics.github_call("GET", "200", "4999")  # the rate-limit gauge exists once GitHub has answered
    exported = dashboard.exported(metrics.render()[0].decode())
    board = dashboard.dashboard()
    used = set()
    for expr in dashboard.expressions(board):
        names = dashboard.metric_names(expr)
        assert names, f"a query that selects no metric: {expr}"
        assert names <= exported, f"{expr} uses {sorted(names - exported)}, which the bot does not export"
        used |= names
    families = {name.removesuffix("_total").removesuffix("_bucket") for name in used}
    assert families >= {"flops_webhook_deliveries", "flops_delivery_latency_seconds", "flops_queue_depth",
                        "flops_jobs_active", "flops_run_duration_seconds", "flops_regression_verdicts",
                        "flops_github_api_calls", "flops_github_rate_limit_remaining"}


@pytest.mark.parametrize("broken", ["sum(rate(flops_queue_depth[5m])", "rate(flops_queue_depth)",
                                    "sum by (le) (flops_queue_depth{namespace=~\"$namespace\"}"])
def test_a_query_that_is_not_promql_fails(broken: str) -> None:
    with pytest.raises(ValueError):
        dashboard.metric_names(broken)


def test_a_renamed_metric_fails() -> None:
    exported = dashboard.exported(Metrics().render()[0].decode())
    assert not dashboard.metric_names("sum(rate(flops_webhook_delivery_total[5m]))") <= exported


def test_the_panels_operators_asked_for_are_there() -> None:
    board = dashboard.dashboard()
    titles = {p["title"] for p in dashboard.panels(board)}
    assert {"Deliveries by event and outcome", "Intake latency", "Queue depth", "Jobs running / queued by kind",
            "Run durations by kind", "Regression verdicts", "GitHub API calls by status",
            "GitHub rate limit remaining"} <= titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and board["uid"] == "flops-bot"
    for panel in dashboard.panels(board):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]  # any Prometheus the user picks
        assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert all(t["refId"] for t in panel["targets"])
