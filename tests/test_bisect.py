"""Bisection on the test bed: a default branch of merged PRs (merge commits with side-branch commits,
so only the first-parent line is a candidate), baselines in the real S3 server, bisection runs as
regression Jobs in the Kubernetes emulator whose workload the test plays (metrics.json, then the
Job succeeds). The automatic one runs under `python -m bot serve`, restarted mid-round."""
from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import kubernetes

from tests.conftest import INSTALLATION, NAMESPACE, Bed, BedFactory, payload, wait_for
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator
from tests.emulators.kuberay import KubeRay
from tests.emulators.s3 import S3Server, free_port
from tests.serving import serving
from tests.test_create_once import post
from tests.test_regression import MAIN, MAINTAINER, REPO

CONFIG = """\
registry: harbor.example.com/flops
regression:
  image: harbor.example.com/flops/regression-runtime:py311
  command: ["python", "train.py"]
  metrics:
    accuracy: {direction: higher, tolerance: 0.01}
  bisect: {auto: true, parallel: 3}
"""
GOOD, BAD = 0.912, 0.861
ISSUE = 7


def setup(github: GitHubEmulator, config: str = CONFIG) -> str:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    github.add_repo(REPO, default_branch=MAIN)
    github.set_permission(REPO, MAINTAINER, "admin")
    return github.commit(REPO, MAIN, {".github/flops.yml": config, "train.py": "print(0)\n"})


def merges(github: GitHubEmulator, count: int) -> list[str]:
    """`count` PRs merged into the default branch, one merge commit each (PR #101.. by @dev1..)."""
    shas = []
    for i in range(1, count + 1):
        base = github.branch_sha(REPO, MAIN)
        side = github.commit(REPO, f"feature-{i}", {f"feature_{i}.py": "x = 1\n"}, parents=[base], author=f"dev{i}")
        github.add_pull(REPO, 100 + i, side, base_branch=MAIN, head_ref=f"feature-{i}", user=f"dev{i}")
        merge = github.commit(REPO, MAIN, {f"feature_{i}.py": "x = 1\n"}, parents=[base, side],
                              message=f"Merge pull request #{100 + i}")
        github.merged(REPO, 100 + i, merge)
        shas.append(merge)
    return shas


def push_event(before: str, sha: str) -> dict[str, Any]:
    data = payload("push")
    data.update(ref=f"refs/heads/{MAIN}", before=before, after=sha, deleted=False, created=False)
    data["installation"]["id"] = INSTALLATION
    data["repository"]["default_branch"] = MAIN
    data["head_commit"].update(id=sha, timestamp="2026-11-22T09:30:00Z")
    data["commits"] = [{**data["commits"][0], "id": sha, "added": [], "removed": [], "modified": ["train.py"]}]
    return data


def runs(kube: KubeEmulator, sha: str | None = None, *, bisection: bool = True) -> list[dict[str, Any]]:
    found = kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "regression"})
    return [j for j in found if ("flops.dev/bisect" in j["metadata"]["labels"]) == bisection
            and sha in (None, j["metadata"]["annotations"]["flops.dev/sha"])]


def unfinished(kube: KubeEmulator) -> list[dict[str, Any]]:
    return [j for j in runs(kube) if not (j.get("status") or {}).get("conditions")]


def finish(kube: KubeEmulator, s3: S3Server, job: dict[str, Any], accuracy: float) -> None:
    """The workload: metrics.json under FLOPS_OUTPUT, then the Job succeeds."""
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    data = json.dumps({"metrics": {"accuracy": accuracy}}).encode()
    s3.client().put_object(env["FLOPS_S3_BUCKET"], env["FLOPS_OUTPUT"] + "metrics.json", io.BytesIO(data), len(data))
    kube.succeed_job(NAMESPACE, job["metadata"]["name"])


def accuracy_of(shas: list[str], culprit: int) -> dict[str, float]:
    """Commits before the culprit (1-based) keep the accuracy; from it on it is lower."""
    return {sha: (GOOD if i < culprit else BAD) for i, sha in enumerate(shas, 1)}


def baseline_done(github: GitHubEmulator, sha: str) -> bool:
    return any(r["status"] == "completed" and r["output"]["title"] == "Baseline recorded"
               for r in github.check_runs_for(REPO, sha, "flops/regression"))


def bisect_check(github: GitHubEmulator, sha: str) -> dict[str, Any] | None:
    found = github.check_runs_for(REPO, sha, "flops/bisect")
    return found[-1] if found else None


async def test_an_automatic_bisection_finds_the_culprit_in_two_rounds_across_a_restart(
        tmp_path: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server) -> None:
    first = setup(github)
    same = {"PORT": str(free_port()), "FLOPS_BUCKET": "t-" + uuid.uuid4().hex[:12]}
    async with serving(tmp_path, github, kube, s3, **same) as served:
        await post(served.url, "push", push_event(github.branch_sha(REPO, MAIN), first))  # the first baseline
        [job] = await wait_for(lambda: runs(kube, first, bisection=False), timeout=30, what="the baseline run")
        finish(kube, s3, job, GOOD)
        await wait_for(lambda: baseline_done(github, first), timeout=30, what="the first baseline")
        # twelve merges land with no baseline in between (a merge queue batched them); the last is pushed
        shas = merges(github, 12)
        value = accuracy_of(shas, culprit=8)
        await post(served.url, "push", push_event(shas[-2], shas[-1]))
        [job] = await wait_for(lambda: runs(kube, shas[-1], bisection=False), timeout=30, what="the new baseline")
        finish(kube, s3, job, BAD)
        round_one = await wait_for(lambda: len(unfinished(kube)) == 3 and unfinished(kube), timeout=30,
                                   what="round 1")
        assert sorted(j["metadata"]["annotations"]["flops.dev/sha"] for j in round_one) == \
            sorted(shas[i] for i in (2, 5, 8))  # evenly spaced over the 11 commits still open
        check = await wait_for(lambda: (c := bisect_check(github, shas[-1])) and c["output"]["title"].startswith("Round 1")
                               and c, timeout=30, what="the per-round table")
        assert check["status"] == "in_progress" and f"| 1 | `{shas[2][:7]}` | — | ⏳ running |" in check["output"]["summary"]
        finish(kube, s3, round_one[0], value[round_one[0]["metadata"]["annotations"]["flops.dev/sha"]])
        await wait_for(lambda: baseline_done(github, round_one[0]["metadata"]["annotations"]["flops.dev/sha"]),
                       timeout=30, what="the first run of round 1 reported")
    finish(kube, s3, round_one[1], value[round_one[1]["metadata"]["annotations"]["flops.dev/sha"]])  # bot down
    async with serving(tmp_path, github, kube, s3, **same):
        finish(kube, s3, round_one[2], value[round_one[2]["metadata"]["annotations"]["flops.dev/sha"]])
        round_two = await wait_for(lambda: len(runs(kube)) == 5 and unfinished(kube), timeout=30, what="round 2")
        assert sorted(j["metadata"]["annotations"]["flops.dev/sha"] for j in round_two) == sorted([shas[6], shas[7]])
        for job in round_two:
            finish(kube, s3, job, value[job["metadata"]["annotations"]["flops.dev/sha"]])
        done = await wait_for(lambda: (c := bisect_check(github, shas[-1])) and c["status"] == "completed" and c,
                              timeout=30, what="the bisection's report")
        await wait_for(lambda: github.comments_on(REPO, 108), timeout=30, what="the comment on the culprit's PR")
    assert (done["conclusion"], done["output"]["title"]) == ("success", f"First bad commit {shas[7][:7]}")
    summary = done["output"]["summary"]
    assert f"First bad commit {shas[7][:7]} (#108 by @dev8): accuracy 0.912 -> 0.861." in summary
    assert "2 rounds, 5 runs (3 per round) over 12 first-parent commits; started by auto" in summary
    assert f"| 1 | `{shas[2][:7]}` | 0.912 | ✅ not worse |" in summary
    assert f"| 2 | `{shas[7][:7]}` | 0.861 | ❌ worse |" in summary
    assert f"| baseline | `{shas[11][:7]}` (bad) | 0.861 | ❌ worse |" in summary  # the baseline reused, not re-run
    assert len(runs(kube)) == 5 and len(runs(kube, shas[-1])) == 0
    [comment] = github.comments_on(REPO, 108)
    assert "<!-- flops:bisect:" in comment["body"] and f"first bad commit {shas[7][:7]}" in comment["body"]
    assert len(github.check_runs_for(REPO, shas[-1], "flops/bisect")) == 1  # the restart started no second one


def issue_comment(github: GitHubEmulator, body: str) -> dict[str, Any]:
    data = payload("issue_comment.created")
    data["issue"].update(number=ISSUE)
    data["issue"].pop("pull_request", None)
    data["comment"].update(body=body, id=github.add_comment(REPO, ISSUE, body, user=MAINTAINER)["id"])
    data["comment"]["user"]["login"] = MAINTAINER
    data["installation"]["id"] = INSTALLATION
    data["repository"]["default_branch"] = MAIN
    return data


async def comment_on_issue(bed: Bed, body: str) -> None:
    await bed.deliver("issue_comment", issue_comment(bed.github, body))
    await bed.settle()


def replies(bed: Bed) -> list[str]:
    return [c["body"] for c in bed.github.comments_on(REPO, ISSUE) if c["user"]["type"] == "Bot"]


async def baseline(bed: Bed, sha: str, accuracy: float) -> None:
    await bed.deps.artifacts.put_json(f"baselines/{REPO}/{sha}.json", {"sha": sha, "metrics": {"accuracy": accuracy}})


async def test_bisect_with_explicit_shas_measures_the_bad_end_reuses_baselines_and_replies(bed: Bed) -> None:
    good = setup(bed.github, CONFIG.replace("auto: true", "auto: false"))
    shas = merges(bed.github, 6)
    value = accuracy_of(shas, culprit=3)
    await baseline(bed, good, GOOD)
    await baseline(bed, shas[4], BAD)  # recorded earlier by a push: reused, never run again
    await comment_on_issue(bed, f"/bisect {good[:7]} {shas[-1]} metric=accuracy")
    [answer] = replies(bed)
    assert f"bisecting 6 first-parent commits in {good[:7]}..{shas[-1][:7]} on `accuracy`, 3 runs per round" in answer
    [reference] = runs(bed.kube)  # the bad end has no baseline: measured first
    assert reference["metadata"]["annotations"]["flops.dev/sha"] == shas[-1]
    while not (check := bisect_check(bed.github, shas[-1])) or check["status"] != "completed":
        job = await wait_for(lambda: unfinished(bed.kube), what="a bisection run")
        for each in job:
            finish(bed.kube, bed.s3, each, value[each["metadata"]["annotations"]["flops.dev/sha"]])
        await wait_for(lambda: not unfinished(bed.kube) or len(replies(bed)) > 1, what="the runs reported")
        await bed.settle()
    assert check["output"]["title"] == f"First bad commit {shas[2][:7]}"
    assert "(#103 by @dev3): accuracy 0.912 -> 0.861" in check["output"]["summary"]
    assert runs(bed.kube, shas[4]) == []
    final = replies(bed)[-1]
    assert len(replies(bed)) == 2 and f"first bad commit {shas[2][:7]}" in final and "/bisect by @Codertocat" in final


async def test_bisect_refusals_say_what_to_do(bed: Bed) -> None:
    good = setup(bed.github)
    shas = merges(bed.github, 3)
    await comment_on_issue(bed, f"/bisect {shas[-1][:7]} {good[:7]}")
    await comment_on_issue(bed, f"/bisect {good[:7]} {shas[-1][:7]} metric=loss")
    await comment_on_issue(bed, "/bisect")
    side = bed.github.pulls[(REPO, 102)]["head"]["sha"]
    await comment_on_issue(bed, f"/bisect {side[:7]} {shas[-1][:7]}")
    # a commit GitHub serves by sha but the default branch does not hold (a fork's head, an open branch)
    unmerged = bed.github.commit(REPO, "wip", {"train.py": "steal()\n"}, parents=[shas[-1]])
    await comment_on_issue(bed, f"/bisect {good[:7]} {unmerged[:7]}")
    backwards, unknown, nothing, off_line, elsewhere = replies(bed)
    assert f"{unmerged[:7]} is not on `{MAIN}`: a bisection runs only commits of the default branch." in elsewhere
    assert "does not descend from" in backwards and "give the older, good commit first" in backwards
    assert "`loss` is not a gated metric (`regression.metrics` gates `accuracy`)" in unknown
    assert "has no baseline in its last 100 commits" in nothing
    assert "is not on the first-parent line" in off_line
    assert runs(bed.kube) == []


async def test_cancel_bisect_stops_the_runs_and_the_search(bed: Bed) -> None:
    good = setup(bed.github)
    shas = merges(bed.github, 8)
    await baseline(bed, good, GOOD)
    await baseline(bed, shas[-1], BAD)
    await comment_on_issue(bed, f"/bisect {good} {shas[-1]}")
    assert len(unfinished(bed.kube)) == 3
    await comment_on_issue(bed, "/cancel bisect")
    assert "(3 runs stopped)" in replies(bed)[-1]
    check = bisect_check(bed.github, shas[-1])
    assert check is not None and (check["conclusion"], check["output"]["title"]) == ("cancelled", "Bisection cancelled")
    await comment_on_issue(bed, "/cancel bisect")
    assert "`/cancel bisect`: no bisection is running." in replies(bed)[-1]


async def test_a_drop_right_after_the_previous_baseline_needs_no_run_and_is_told_on_the_culprits_pr(
        bed: Bed) -> None:
    first = setup(bed.github)
    await bed.deliver("push", push_event(bed.github.branch_sha(REPO, MAIN), first))
    await bed.settle()
    finish(bed.kube, bed.s3, runs(bed.kube, first, bisection=False)[0], GOOD)
    await wait_for(lambda: baseline_done(bed.github, first), what="the first baseline")
    [merge] = merges(bed.github, 1)
    await bed.deliver("push", push_event(first, merge))
    await bed.settle()
    finish(bed.kube, bed.s3, runs(bed.kube, merge, bisection=False)[0], BAD)
    done = await wait_for(lambda: (c := bisect_check(bed.github, merge)) and c["status"] == "completed" and c,
                          what="the bisection's report")
    assert (done["conclusion"], done["output"]["title"]) == ("success", f"First bad commit {merge[:7]}")
    assert "0 rounds, 0 runs (3 per round) over 1 first-parent commits; started by auto" in done["output"]["summary"]
    await bed.settle()
    [told] = bed.github.comments_on(REPO, 101)
    assert f"first bad commit {merge[:7]} (#101 by @dev1): accuracy 0.912 -> 0.861" in told["body"]
    assert runs(bed.kube) == []


async def test_a_failed_run_is_skipped_and_the_search_goes_on(bed: Bed) -> None:
    good = setup(bed.github)
    shas = merges(bed.github, 4)
    value = accuracy_of(shas, culprit=4)
    await baseline(bed, good, GOOD)
    await baseline(bed, shas[-1], BAD)
    await comment_on_issue(bed, f"/bisect {good} {shas[-1]}")
    round_one = {j["metadata"]["annotations"]["flops.dev/sha"]: j for j in unfinished(bed.kube)}
    assert sorted(round_one) == sorted(shas[:3])  # three open commits, three runs per round
    bed.kube.fail_job(NAMESPACE, round_one[shas[1]]["metadata"]["name"])
    for sha in (shas[0], shas[2]):
        finish(bed.kube, bed.s3, round_one[sha], value[sha])
    done = await wait_for(lambda: (c := bisect_check(bed.github, shas[-1])) and c["status"] == "completed" and c,
                          what="the bisection's report")
    assert done["output"]["title"] == f"First bad commit {shas[3][:7]}"  # the skipped one was before a good one
    assert f"| 1 | `{shas[1][:7]}` | — | ⚠️ no result (run failed) |" in done["output"]["summary"]


async def first_round_of_three(bed: Bed) -> tuple[str, list[str], dict[str, Any], dict[str, Any]]:
    """`/bisect` over 3 merges whose ends have baselines: the good commit, the merges, and round 1's two
    runs, oldest first."""
    good = setup(bed.github)
    shas = merges(bed.github, 3)
    await baseline(bed, good, GOOD)
    await baseline(bed, shas[-1], BAD)
    await comment_on_issue(bed, f"/bisect {good} {shas[-1]}")
    one, two = sorted(unfinished(bed.kube), key=lambda j: shas.index(j["metadata"]["annotations"]["flops.dev/sha"]))
    return good, shas, one, two


async def test_bisect_asked_again_after_a_deleted_run_retries_that_commit(bed: Bed) -> None:
    good, shas, one, two = await first_round_of_three(bed)
    finish(bed.kube, bed.s3, one, GOOD)
    with kubernetes.client.ApiClient(bed.kube.client_configuration()) as api:  # `kubectl delete job`: no report
        kubernetes.client.BatchV1Api(api).delete_namespaced_job(two["metadata"]["name"], NAMESPACE)
    await wait_for(lambda: (c := bisect_check(bed.github, shas[-1])) and c["status"] == "completed",
                   what="the search ended without the deleted run")
    await comment_on_issue(bed, f"/bisect {good} {shas[-1]}")
    assert "bisecting 3 first-parent commits" in replies(bed)[-1]
    [again] = await wait_for(lambda: unfinished(bed.kube), what="the deleted commit's run again")
    assert again["metadata"]["annotations"]["flops.dev/sha"] == shas[1]
    finish(bed.kube, bed.s3, again, BAD)
    done = await wait_for(lambda: (c := bisect_check(bed.github, shas[-1])) and c["status"] == "completed" and c,
                          what="the second report")
    assert (done["conclusion"], done["output"]["title"]) == ("success", f"First bad commit {shas[1][:7]}")


async def test_bisect_without_shas_takes_the_latest_baseline_and_the_newest_better_one(bed: Bed) -> None:
    good = setup(bed.github)
    shas = merges(bed.github, 4)
    for sha, accuracy in ((good, GOOD), (shas[1], GOOD), (shas[3], BAD)):
        await baseline(bed, sha, accuracy)
    await comment_on_issue(bed, "/bisect")
    assert f"bisecting 2 first-parent commits in {shas[1][:7]}..{shas[3][:7]} on `accuracy`" in replies(bed)[-1]
    [job] = unfinished(bed.kube)
    assert job["metadata"]["annotations"]["flops.dev/sha"] == shas[2]
    assert job["metadata"]["labels"]["flops.dev/bisect"] == f"{shas[1][:7]}-{shas[3][:7]}"


async def test_a_run_deleted_by_hand_moves_the_search_on_by_itself(bed: Bed) -> None:
    """`kubectl delete job` of a running bisection run: its check is closed and, with no `/bisect` asked
    again, the search takes its next step (the deleted commit skipped like `git bisect skip`)."""
    _, shas, one, two = await first_round_of_three(bed)
    finish(bed.kube, bed.s3, one, GOOD)
    await wait_for(lambda: f"`{shas[0][:7]}` | 0.912 | ✅ not worse" in bisect_check(bed.github, shas[-1])["output"]["summary"],
                   what="the step after the first run")
    with kubernetes.client.ApiClient(bed.kube.client_configuration()) as api:
        kubernetes.client.BatchV1Api(api).delete_namespaced_job(two["metadata"]["name"], NAMESPACE)
    done = await wait_for(lambda: (c := bisect_check(bed.github, shas[-1])) and c["status"] == "completed" and c,
                          what="the bisection's report without a second /bisect")
    assert (done["conclusion"], done["output"]["title"]) == ("neutral", "First bad commit not pinned down")
    assert f"one of {shas[1][:7]}, {shas[2][:7]}: {shas[1][:7]} could not be measured" in done["output"]["summary"]
    [deleted] = bed.github.check_runs_for(REPO, shas[1], "flops/regression")
    assert (deleted["conclusion"], deleted["output"]["title"]) == ("cancelled", "Job deleted")


async def test_at_most_three_bisections_of_a_repository_run_at_once(bed: Bed) -> None:
    good = setup(bed.github, CONFIG.replace("auto: true", "auto: false"))
    shas = merges(bed.github, 8)
    await baseline(bed, good, GOOD)
    for sha in shas[4:]:
        await baseline(bed, sha, BAD)
    for bad in shas[4:]:  # four ranges: three start, the fourth is refused
        await comment_on_issue(bed, f"/bisect {good[:7]} {bad[:7]}")
    *started, refused = replies(bed)
    assert all("bisecting" in r for r in started) and len(started) == 3
    assert "nothing started: 3 bisections of this repository are running already" in refused
    assert "`/cancel bisect`" in refused and bisect_check(bed.github, shas[7]) is None
    assert {j["metadata"]["labels"]["flops.dev/bisect"] for j in runs(bed.kube)} == \
        {f"{good[:7]}-{bad[:7]}" for bad in shas[4:7]}
    await comment_on_issue(bed, "/cancel bisect")
    await comment_on_issue(bed, f"/bisect {good[:7]} {shas[7][:7]}")  # with none running, it starts
    assert "bisecting 8 first-parent commits" in replies(bed)[-1]


RAY_CONFIG = CONFIG.replace("  bisect:", """  ray:
    version: "2.40.0"
    head: {resources: {cpu: "1", memory: 1Gi}}
  bisect:""")


async def test_a_ray_bisection_waits_for_its_running_rayjobs(bed: Bed) -> None:
    """With `regression.ray` the runs are RayJobs: the first one reported took the others, not found
    among batch Jobs, for deleted runs and started the next round over them."""
    good = setup(bed.github, RAY_CONFIG.replace("auto: true", "auto: false"))
    shas = merges(bed.github, 8)
    await baseline(bed, good, GOOD)
    await baseline(bed, shas[-1], BAD)
    await comment_on_issue(bed, f"/bisect {good} {shas[-1]}")
    rayjobs = bed.kube.list("rayjobs", NAMESPACE, labels={"flops.dev/bisect": f"{good[:7]}-{shas[-1][:7]}"})
    assert len(rayjobs) == 3 and runs(bed.kube) == []
    first = rayjobs[0]
    [head] = [c for c in first["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]]
    env = {e["name"]: e.get("value") for e in head["env"]}
    data = json.dumps({"metrics": {"accuracy": GOOD}}).encode()
    bed.s3.client().put_object(env["FLOPS_S3_BUCKET"], env["FLOPS_OUTPUT"] + "metrics.json", io.BytesIO(data), len(data))
    KubeRay(bed.kube).succeed(first["metadata"]["name"])
    sha = first["metadata"]["annotations"]["flops.dev/sha"]
    await wait_for(lambda: baseline_done(bed.github, sha), what="the first RayJob reported")
    await bed.settle()
    summary = bisect_check(bed.github, shas[-1])["output"]["summary"]
    assert summary.count("⏳ running") == 2 and "no result" not in summary
    assert len(bed.kube.list("rayjobs", NAMESPACE, labels={"flops.dev/kind": "regression"})) == 3


async def test_a_round_whose_runs_all_failed_stops_the_search(bed: Bed) -> None:
    """A regression run that always fails (a broken image) skipped every probe and probed on: up to
    `max_commits` GPU runs for nothing. A round without a single result stops the bisection."""
    good = setup(bed.github)
    shas = merges(bed.github, 12)
    await baseline(bed, good, GOOD)
    await baseline(bed, shas[-1], BAD)
    await comment_on_issue(bed, f"/bisect {good} {shas[-1]}")
    round_one = unfinished(bed.kube)
    assert len(round_one) == 3
    for job in round_one:
        bed.kube.fail_job(NAMESPACE, job["metadata"]["name"])
    done = await wait_for(lambda: (c := bisect_check(bed.github, shas[-1])) and c["status"] == "completed" and c,
                          what="the bisection stopped")
    assert (done["conclusion"], done["output"]["title"]) == ("neutral", "Bisection stopped")
    assert "every run of round 1 failed or was deleted" in done["output"]["summary"]
    await bed.settle()
    assert len(runs(bed.kube)) == 3 and "every run of round 1 failed" in replies(bed)[-1]


async def test_the_limit_counts_running_bisections_however_many_have_ended(bed: Bed) -> None:
    """The running ones were found by reading every record of the repository, at most the 1,000 a
    listing returns: past 1,000 ended bisections the limit counted none, and `/cancel bisect` found none."""
    good = setup(bed.github, CONFIG.replace("auto: true", "auto: false"))
    shas = merges(bed.github, 8)
    await baseline(bed, good, GOOD)
    for sha in shas[4:]:
        await baseline(bed, sha, BAD)
    ended = json.dumps({"id": "x", "repo": REPO, "installation": INSTALLATION, "default_branch": MAIN, "good": good,
                        "bad": shas[-1], "metric": {"name": "accuracy"}, "candidates": [], "parallel": 3,
                        "check_run": 1, "trigger": "auto", "status": "done"}).encode()
    client = bed.s3.client()
    for n in range(1000):  # listed before the real ones ("-" sorts before hex digits)
        client.put_object(bed.deps.artifacts.bucket, f"bisect/{REPO}/-ended-{n:04}.json", io.BytesIO(ended), len(ended))
    for bad in shas[4:]:
        await comment_on_issue(bed, f"/bisect {good[:7]} {bad[:7]}")
    assert "3 bisections of this repository are running already" in replies(bed)[-1]
    await comment_on_issue(bed, "/cancel bisect")
    assert "cancelled the bisections" in replies(bed)[-1] and "(9 runs stopped)" in replies(bed)[-1]


async def test_serve_moves_a_bisection_on_when_a_run_is_deleted(tmp_path: Path, github: GitHubEmulator,
                                                                 kube: KubeEmulator, s3: S3Server) -> None:
    good = setup(github, CONFIG.replace("auto: true", "auto: false"))
    shas = merges(github, 3)
    bucket = "t-" + uuid.uuid4().hex[:12]
    async with serving(tmp_path, github, kube, s3, FLOPS_BUCKET=bucket) as served:  # ready: the bucket exists
        for sha, accuracy in ((good, GOOD), (shas[-1], BAD)):  # recorded by earlier pushes
            data = json.dumps({"sha": sha, "metrics": {"accuracy": accuracy}}).encode()
            s3.client().put_object(bucket, f"baselines/{REPO}/{sha}.json", io.BytesIO(data), len(data))
        await post(served.url, "issue_comment", issue_comment(github, f"/bisect {good} {shas[-1]}"))
        one, two = await wait_for(lambda: len(unfinished(kube)) == 2 and sorted(
            unfinished(kube), key=lambda j: shas.index(j["metadata"]["annotations"]["flops.dev/sha"])),
            timeout=30, what="round 1")
        with kubernetes.client.ApiClient(kube.client_configuration()) as api:  # `kubectl delete job`
            kubernetes.client.BatchV1Api(api).delete_namespaced_job(two["metadata"]["name"], NAMESPACE)
        finish(kube, s3, one, GOOD)
        done = await wait_for(lambda: (c := bisect_check(github, shas[-1])) and c["status"] == "completed" and c,
                              timeout=30, what="the bisection's report")
    assert (done["conclusion"], done["output"]["title"]) == ("neutral", "First bad commit not pinned down")
    assert f"{shas[1][:7]} could not be measured" in done["output"]["summary"]


async def test_a_run_deleted_while_no_bot_ran_moves_the_search_on_at_the_next_start(
        make_bed: BedFactory, github: GitHubEmulator) -> None:
    """No watch saw the Job go: the listing at start (as every re-list) has each running bisection
    take its next step, which finds the run gone and skips it."""
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    first = await make_bed()
    good = setup(github)
    shas = merges(github, 3)
    await baseline(first, good, GOOD)
    await baseline(first, shas[-1], BAD)
    await comment_on_issue(first, f"/bisect {good} {shas[-1]}")
    one, two = sorted(unfinished(first.kube), key=lambda j: shas.index(j["metadata"]["annotations"]["flops.dev/sha"]))
    finish(first.kube, first.s3, one, GOOD)
    await wait_for(lambda: baseline_done(github, shas[0]), what="the first run reported")
    await first.settle()
    await first.server.close()  # the bot goes away; meanwhile `kubectl delete job`
    with kubernetes.client.ApiClient(first.kube.client_configuration()) as api:
        kubernetes.client.BatchV1Api(api).delete_namespaced_job(two["metadata"]["name"], NAMESPACE)
    second = await make_bed()
    done = await wait_for(lambda: (c := bisect_check(github, shas[-1])) and c["status"] == "completed" and c,
                          what="the bisection's report after the restart")
    assert (done["conclusion"], done["output"]["title"]) == ("neutral", "First bad commit not pinned down")
    await second.settle()


async def test_a_marker_left_for_an_ended_bisection_is_cleared_at_start(make_bed: BedFactory,
                                                                         github: GitHubEmulator, s3: S3Server) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    first = await make_bed()
    ended = {"id": "a-b", "repo": REPO, "installation": INSTALLATION, "default_branch": MAIN, "good": "a", "bad": "b",
             "metric": {"name": "accuracy"}, "candidates": [], "parallel": 3, "check_run": 1, "trigger": "auto",
             "status": "done"}
    await first.deps.artifacts.put_json(f"bisect/{REPO}/a-b.json", ended)
    await first.deps.artifacts.put_json(f"bisect-running/{REPO}/a-b", {"id": "a-b"})  # a crash before its delete
    await first.server.close()
    second = await make_bed()
    await wait_for(lambda: not list(s3.client().list_objects(second.deps.artifacts.bucket, prefix="bisect-running/",
                                                             recursive=True)), what="the stale marker cleared")
