"""examples/tests: its flops.yml validates, `plan pull_request` prints its test Jobs, and its real
pytest run's JUnit file is what the `flops/test` report reads: all passing as shipped, and a
broken feature extraction (a constant column divided by a zero std) caught as NaN, located on
the line of the test that failed."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from bot.core import junit
from tests.conftest import payload
from tests.test_cli import run

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tests"


def pytest_junit(project: Path, out: Path) -> junit.Report:
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "log_level=WARNING",
                    "--rootdir", str(project), "--junitxml", str(out), str(project / "tests")],
                   cwd=project, capture_output=True, timeout=120)
    files = {str(p.relative_to(project)) for p in project.rglob("*.py")}
    return junit.parse([("junit.xml", out.read_bytes())], files)


def test_the_example_config_validates() -> None:
    result = run("check-config", str(EXAMPLE / "flops.yml"))
    assert result.returncode == 0, result.stderr
    assert "2 test(s)" in result.stdout


def test_plan_pull_request_prints_the_test_jobs(tmp_path: Path) -> None:
    event = tmp_path / "pr.json"
    data = payload("pull_request.opened")
    event.write_text(json.dumps(data))
    result = run("plan", "pull_request", str(event), "--config", str(EXAMPLE / "flops.yml"))
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert [d["metadata"]["annotations"]["flops.dev/check-name"] for d in docs] == [
        "flops/test: unit", "flops/test: training-smoke"]
    [container] = docs[0]["spec"]["template"]["spec"]["containers"]
    assert container["command"][-1] == "--junitxml=/flops/results/junit.xml"
    assert docs[0]["metadata"]["labels"]["flops.dev/pr"] == str(data["pull_request"]["number"])


def test_the_shipped_project_passes_and_a_broken_extraction_is_caught(tmp_path: Path) -> None:
    report = pytest_junit(EXAMPLE, tmp_path / "ok.xml")
    assert (report.count(junit.PASSED), len(report.broken)) == (6, 0), report.title
    broken = tmp_path / "broken"
    shutil.copytree(EXAMPLE, broken)
    features = broken / "src" / "churn" / "features.py"
    features.write_text(features.read_text().replace("if std > 0 else np.zeros_like(column)", ""))
    report = pytest_junit(broken, tmp_path / "broken.xml")
    [failed] = report.broken
    assert failed.id == "tests.test_features::test_constant_columns_and_unknown_plans_give_no_nan"
    [note] = report.annotations()
    source = (broken / note["path"]).read_text().splitlines()
    assert note["path"] == "tests/test_features.py" and "isnan" in source[note["start_line"] - 1]


def test_plan_pull_request_names_the_pr_build_a_test_in_an_images_entry_runs_in(tmp_path: Path) -> None:
    event, cfg = tmp_path / "pr.json", tmp_path / "flops.yml"
    data = payload("pull_request.opened")
    event.write_text(json.dumps(data))
    cfg.write_text("registry: r.example.com/t\npr_registry: r.example.com/t-pr\nimages: [{name: runtime, dockerfile: D}]\n"
                   "tests: [{name: unit, image: runtime, command: [pytest]}, {name: x, image: a/b, command: [x], "
                   "on: [push]}]\n")
    result = run("plan", "pull_request", str(event), "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    [doc] = [d for d in yaml.safe_load_all(result.stdout) if d]  # `x` runs on pushes only
    head = data["pull_request"]["head"]["sha"]
    assert doc["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"r.example.com/t-pr/runtime:pr-{data['pull_request']['number']}-{head[:7]}"
