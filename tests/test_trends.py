"""`tolerance: auto` and the trend charts of the sticky regression comment, on the test bed, with the
charts rendered by Mermaid itself in headless Chromium (tests/mermaid.py)."""
from __future__ import annotations

import io
import json
import re
import statistics
from pathlib import Path
from typing import Any

import pytest

from bot.core import charts, config, verdict
from bot.core.config import Metric, Tolerance
from tests.conftest import INSTALLATION, Bed, wait_for
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator
from tests.emulators.s3 import S3Server
from tests.mermaid import blocks, render
from tests.serving import serving
from tests.test_as_shipped import MAINTAINER as REVIEWER
from tests.test_as_shipped import Shipped, approve
from tests.test_bisect import baseline_done, push_event, runs
from tests.test_create_once import post
from tests.test_regression import MAIN, MAINTAINER, REPO, gate, open_pr, record_baseline, sticky

AUTO = """\
registry: harbor.example.com/flops
regression:
  image: harbor.example.com/flops/regression-runtime:py311
  command: ["python", "train.py"]
  metrics:
    accuracy: {direction: higher, tolerance: auto, auto_k: 3, auto_window: 20}
    loss: {direction: lower, tolerance: 5%}
"""
NOISY = [0.90, 0.93, 0.89, 0.92, 0.91, 0.88, 0.92]  # a metric that moves ±0.02 from run to run, no code change


def setup(bed: Bed) -> None:
    setup_github(bed.github)


def setup_github(github: GitHubEmulator) -> None:
    github.add_repo(REPO, default_branch=MAIN)
    github.set_permission(REPO, MAINTAINER, "admin")
    github.commit(REPO, MAIN, {".github/flops.yml": AUTO, "train.py": "print('train')\n"})


def finish_run(kube: KubeEmulator, s3: S3Server, job: dict[str, Any], metrics: dict[str, float]) -> None:
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    data = json.dumps({"metrics": metrics}).encode()
    s3.client().put_object(env["FLOPS_S3_BUCKET"], env["FLOPS_OUTPUT"] + "metrics.json", io.BytesIO(data), len(data))
    kube.succeed_job("flops", job["metadata"]["name"])


async def baselines(bed: Bed, values: list[float]) -> list[str]:
    return [await record_baseline(bed, {"accuracy": v, "loss": 0.2}, {"train.py": f"print({i})\n"})
            for i, v in enumerate(values)]


def test_auto_is_a_tolerance_with_k_and_a_window() -> None:
    cfg = config.parse(AUTO)
    assert cfg.regression is not None
    accuracy, loss = cfg.regression.metrics
    assert accuracy == Metric("accuracy", "higher", Tolerance(0.0, auto=True), auto_k=3.0, auto_window=20)
    assert loss.tolerance == Tolerance(5.0, relative=True) and loss.auto_k == 3.0


@pytest.mark.parametrize(("edit", "message"), [
    ("auto_k: 3", "auto_k: 0"), ("auto_k: 3", "auto_k: yes"), ("auto_window: 20", "auto_window: 4"),
    ("tolerance: auto", "tolerance: automatic")])
def test_bad_auto_settings_are_clear_config_errors(edit: str, message: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.parse(AUTO.replace(edit, message))
    text = str(caught.value)
    assert text.startswith("`regression.metrics.accuracy.") and \
        any(hint in text for hint in ("standard deviations", "between 5 and 100", "or `auto`"))


def test_auto_needs_five_baselines_else_it_is_undecided() -> None:
    metric = Metric("accuracy", "higher", Tolerance(0.0, auto=True))
    few = verdict.compare({"accuracy": 0.9}, {"accuracy": 0.5}, [metric], {"accuracy": [0.9, 0.91, 0.9, 0.92]})
    assert (few.conclusion, few.title) == ("neutral", "not enough history for an automatic tolerance")
    enough = verdict.compare({"accuracy": 0.9}, {"accuracy": 0.5}, [metric], {"accuracy": [0.9, 0.91, 0.9, 0.92, 0.9]})
    assert enough.conclusion == "failure"
    # the window keeps only the newest `auto_window` baselines: old noise does not loosen today's gate
    narrow = Metric("accuracy", "higher", Tolerance(0.0, auto=True), auto_k=3.0, auto_window=5)
    [row] = verdict.compare({"accuracy": 0.9}, {"accuracy": 0.89}, [narrow],
                            {"accuracy": [0.1, 0.9, 0.9, 0.9, 0.9, 0.91]}).rows
    assert (row.window, round(row.sigma or 0, 4), row.verdict) == (5, 0.0045, "ok")


async def test_auto_passes_a_noisy_metric_a_fixed_tolerance_fails_and_still_catches_a_drop(bed: Bed) -> None:
    setup(bed)
    shas = await baselines(bed, NOISY)
    noisy_pr = {"accuracy": 0.895, "loss": 0.2}
    fixed = verdict.compare({"accuracy": NOISY[-1]}, noisy_pr, [Metric("accuracy", "higher", Tolerance(0.01))])
    assert fixed.conclusion == "failure"  # what `tolerance: 0.01` would say of plain run-to-run noise
    open_pr(bed, {"train.py": "print('refactor')\n"})
    run = await gate(bed, noisy_pr)
    sigma = statistics.stdev(NOISY)
    assert (run["conclusion"], run["output"]["title"]) == ("success", "0 regressions / 2 metrics")
    assert f"| auto (3σ) = ±{3 * sigma:.3g} (σ {sigma:.3g} over the last 7 baselines) | ✅ ok |" \
        in run["output"]["summary"]
    [comment] = sticky(bed)
    [accuracy_chart, loss_chart] = blocks(comment["body"])
    assert f'x-axis [{", ".join(chr(34) + s[:7] + chr(34) for s in shas)}]' in accuracy_chart
    assert 'line "baseline" [0.9, 0.93, 0.89, 0.92, 0.91, 0.88, 0.92]' in accuracy_chart
    assert 'line "this PR" [0.895, 0.895' in accuracy_chart and 'line "allowed low"' in accuracy_chart
    assert "grey: the allowed band" in comment["body"]

    open_pr(bed, {"train.py": "nn.ReLU()\n"}, branch="relu")
    dropped = await gate(bed, {"accuracy": 0.80, "loss": 0.2})
    assert (dropped["conclusion"], dropped["output"]["title"]) == ("failure", "1 regression / 2 metrics")


async def test_auto_with_too_little_history_is_neutral_and_says_so(bed: Bed) -> None:
    setup(bed)
    await baselines(bed, NOISY[:3])
    open_pr(bed, {"train.py": "print('x')\n"})
    run = await gate(bed, {"accuracy": 0.5, "loss": 0.2})
    assert (run["conclusion"], run["output"]["title"]) == ("neutral", "not enough history for an automatic tolerance")
    assert "| auto (3σ): fewer than 5 baselines | ⚪ not enough history |" in run["output"]["summary"]


async def test_the_trend_charts_render_with_mermaid(bed: Bed) -> None:
    setup(bed)
    await baselines(bed, NOISY[:5])
    open_pr(bed, {"train.py": "print('x')\n"})
    await gate(bed, {"accuracy": 0.9, "loss": 0.21})
    [comment] = sticky(bed)
    texts = blocks(comment["body"])
    assert len(texts) == 2 and all(t.splitlines()[1] == "xychart-beta" for t in texts)
    accuracy, loss = await render(texts)
    for rendered in (accuracy, loss):
        assert rendered["error"] is None and rendered["type"] == "xychart"
        svg = rendered["svg"]
        # four series drawn: the baselines, this PR, the band's two edges (auto and 5% both move with the data)
        assert sorted(set(re.findall(r'class="line-plot-(\d)"', svg))) == ["0", "1", "2", "3"]
        assert f'stroke="{charts.PALETTE.split(", ")[0]}"' in svg
    baseline_path = re.search(r'class="line-plot-0"><path d="([^"]+)"', accuracy["svg"])
    assert baseline_path is not None and baseline_path.group(1).count("L") == 4  # five baselines, five points


async def test_serve_gates_with_auto_and_charts_the_trend(tmp_path: Path, github: GitHubEmulator, kube: KubeEmulator,
                                                          s3: S3Server) -> None:
    """As shipped (`python -m bot serve`): five default-branch baselines, then a PR approved: the gate
    decides with `tolerance: auto` and the sticky comment carries the charts."""
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    setup_github(github)
    github.set_permission(REPO, REVIEWER, "write")  # the approving maintainer of tests/test_as_shipped.py
    async with serving(tmp_path, github, kube, s3) as served:
        bot = Shipped(github, kube, s3, served.url, served.log, served.process)
        for i, accuracy in enumerate(NOISY[:5]):
            before = github.branch_sha(REPO, MAIN)
            sha = github.commit(REPO, MAIN, {"train.py": f"print({i})\n"})
            await post(served.url, "push", push_event(before, sha))
            [job] = await wait_for(lambda: runs(kube, sha, bisection=False), timeout=30, what="a baseline run")
            finish_run(kube, s3, job, {"accuracy": accuracy, "loss": 0.2})
            await wait_for(lambda: baseline_done(github, sha), timeout=30, what="the baseline")
        base = github.branch_sha(REPO, MAIN)
        head = github.commit(REPO, "feature", {"train.py": "print('pr')\n"}, parents=[base])
        github.add_pull(REPO, 2, head, base_branch=MAIN, head_ref="feature")
        await approve(bot, REPO, 2, head)
        [job] = await wait_for(lambda: [j for j in kube.list("jobs", "flops", labels={"flops.dev/pr": "2"})],
                               timeout=30, what="the PR's run")
        finish_run(kube, s3, job, {"accuracy": 0.895, "loss": 0.2})
        comment = await wait_for(lambda: [c for c in github.comments_on(REPO, 2) if "flops:regression" in c["body"]],
                                 timeout=30, what="the sticky comment")
    [sticky_comment] = comment
    assert "**success**" in sticky_comment["body"] and "over the last 5 baselines" in sticky_comment["body"]
    assert len(blocks(sticky_comment["body"])) == 2


def test_a_chart_holds_only_safe_names_and_plain_numbers() -> None:
    row = verdict.Row('acc"]\nline "x" [1]', "higher", 0.9, 1e-7, 0.0, "0.01", "regression")
    text = charts.chart(row, [("zz\"; drop", 0.9), ("a1b2c3d4e5", float("nan")), ("0123456789", -0.5)])
    assert 'title "acc___line__x___1_"' in text and '"?"' not in text
    assert 'x-axis ["?", "0123456"]' not in text and 'x-axis ["d", "0123456"]' in text
    assert 'line "this PR" [0.0000001, 0.0000001]' in text and "e-" not in text
    assert charts.chart(verdict.Row("m", "higher", None, None, 0.0, "0.01", "missing"), [("a", 1.0)]) == ""


def test_a_huge_value_is_left_out_of_the_chart() -> None:
    """A baseline of 1e300 (a workload's overflow) drew a y-axis and a line of 300-digit numbers: ten
    such charts are more than a GitHub comment holds. It is left out, as a NaN is."""
    row = verdict.Row("accuracy", "higher", 0.9, 0.91, 0.0, "0.01", "ok")
    text = charts.chart(row, [("a1", 0.9), ("b2", 1e300), ("c3", 0.92)])
    assert text and len(text) < 1000 and '"b2"' not in text
    assert charts.chart(verdict.Row("accuracy", "higher", 0.9, 1e300, 0.0, "0.01", "ok"), [("a1", 0.9)]) == ""
    wide = verdict.Row("accuracy", "higher", 0.9, 0.91, 0.9e300, "1e302%", "ok")
    assert "allowed" not in charts.chart(wide, [("a1", 0.9)]) and len(charts.chart(wide, [("a1", 0.9)])) < 1000
