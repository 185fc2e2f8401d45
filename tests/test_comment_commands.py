"""PR comment commands end to end on the test bed: who may run them, the fork rule pinned to a sha,
what is ignored, the reaction and the reply, and what `/build`, `/cancel`, `/retest` do to Jobs and
checks. Deliveries are the recorded `issue_comment` payloads, adapted per case and signed."""
from __future__ import annotations

from typing import Any

import kubernetes.client
import pytest

from bot.platform.github import Permissions
from tests.conftest import INSTALLATION, NAMESPACE, Bed, BedFactory, payload, wait_for
from tests.emulators.github import GitHubEmulator
from tests.samples import TWO_IMAGES

REPO = "Codertocat/Hello-World"
FORK = "mallory/Hello-World"
PR = 1
CONFIG = TWO_IMAGES + """\
deploy:
  - name: dev
    repo: Codertocat/flops-config
    branch: main
    file: dev/cronjob.yaml
    image: server
regression:
  image: harbor.example.com/flops/regression-runtime:py311
  command: ["python", "-m", "regression"]
federated:
  server: {image: server, port: 8080}
  client: {image: client}
  clients: 2
  rounds: 3
  max_clients: 4
  max_rounds: 10
"""
FILES = {".github/flops.yml": CONFIG, "Dockerfile.server": "FROM python:3.11\n", "server/app.py": "print(1)\n",
         "Dockerfile.client": "FROM python:3.11\n", "client/main.py": "print(2)\n"}


# --- the scene: a repository, a pull request, people, comments ---------------------------------------------

def open_pr(bed: Bed, *, fork: bool = False, state: str = "open", config: str = CONFIG) -> str:
    """Codertocat/Hello-World with flops.yml on master and PR #1 (from a fork if asked); the head sha."""
    gh = bed.github
    gh.add_repo(REPO, default_branch="master")
    base = gh.commit(REPO, "master", {**FILES, ".github/flops.yml": config})
    head = gh.commit(REPO, "feature", {"server/app.py": "print(3)\n"}, parents=[base])
    gh.add_pull(REPO, PR, head, base_branch="master", head_ref="feature", head_repo=FORK if fork else None,
                user="mallory" if fork else "octocat", state=state)
    return head


def push_to_pr(bed: Bed, *, fork: bool) -> str:
    """The PR author pushes again: the head moves to a new commit."""
    gh = bed.github
    head = gh.commit(REPO, "feature", {"server/app.py": "print('new')\n"})
    if fork:  # the emulator moves same-repo PR heads by itself; a fork's head is its own branch
        gh.pulls[(REPO, PR)]["head"]["sha"] = head
    return head


def comment(bed: Bed, body: str, *, user: str = "alice", user_type: str = "User", association: str = "MEMBER",
            on_pr: bool = True, action: str = "created") -> dict[str, Any]:
    """The webhook GitHub sends for `body` written by `user` (the comment also exists in the emulator)."""
    seeded = bed.github.add_comment(REPO, PR, body, user=user)
    data = payload(f"issue_comment.{action}")
    data["installation"] = {"id": INSTALLATION, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uNzc="}
    data["comment"].update(id=seeded["id"], body=body, html_url=seeded["html_url"], author_association=association)
    data["comment"]["user"].update(login=user, type=user_type)
    data["sender"].update(login=user, type=user_type)
    if on_pr:
        data["issue"]["pull_request"] = {"url": f"https://api.github.com/repos/{REPO}/pulls/{PR}",
                                         "html_url": f"https://github.com/{REPO}/pull/{PR}"}
    return data


async def say(bed: Bed, body: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Deliver a comment, wait until the bot is done with it, return the bot's new replies."""
    data = comment(bed, body, **kwargs)
    await bed.deliver("issue_comment", data)
    await bed.settle()
    return [c for c in replies(bed) if c["id"] > data["comment"]["id"]]


def replies(bed: Bed) -> list[dict[str, Any]]:
    return [c for c in bed.github.comments_on(REPO, PR) if c["user"]["login"] == bed.github.bot_login]


def eyes(bed: Bed) -> list[int]:
    return [r["comment_id"] for r in bed.github.reactions if r["content"] == "eyes"]


def jobs_of(bed: Bed, kind: str | None = None) -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/managed-by": "flops-bot", **({"flops.dev/kind": kind} if kind else {})}
    return bed.kube.list("jobs", NAMESPACE, labels=labels)


def builds_by_image(bed: Bed) -> dict[str, dict[str, Any]]:
    return {j["metadata"]["annotations"]["flops.dev/image"]: j for j in jobs_of(bed, "build")}


def done(bed: Bed, sha: str) -> list[dict[str, Any]]:
    return [r for r in bed.github.check_runs_for(REPO, sha) if r["status"] == "completed"]


def allow(bed: Bed, user: str = "alice", permission: str = "write") -> None:
    bed.github.set_permission(REPO, user, permission)


# --- who may run commands ------------------------------------------------------------------------------

@pytest.mark.parametrize("permission", ["write", "maintain", "admin"])
async def test_write_maintain_and_admin_run_commands(bed: Bed, permission: str) -> None:
    head = open_pr(bed)
    allow(bed, "alice", permission)
    [answer] = await say(bed, "/build server")
    assert set(builds_by_image(bed)) == {"server"}
    assert "building `server` as `pr-1-" + head[:7] + "`" in answer["body"]
    assert answer["body"].startswith("@alice")


@pytest.mark.parametrize("permission", ["read", "triage", None])
async def test_read_triage_and_strangers_get_a_polite_no_and_nothing_runs(bed: Bed, permission: str | None) -> None:
    head = open_pr(bed)
    if permission:
        allow(bed, "bob", permission)
    [answer] = await say(bed, "/build\n/regression\n/ok-to-test", user="bob")
    assert "need write access" in answer["body"] and f"**{permission or 'none'}**" in answer["body"]
    assert "nothing was run" in answer["body"]
    assert jobs_of(bed) == []
    assert bed.github.check_runs_for(REPO, head) == []
    assert eyes(bed) == []


async def test_permission_is_asked_of_the_api_not_guessed_from_author_association(bed: Bed) -> None:
    open_pr(bed)
    allow(bed, "owner-looking", "read")
    allow(bed, "newcomer", "write")
    [refused] = await say(bed, "/build server", user="owner-looking", association="OWNER")
    assert "need write access" in refused["body"]
    [accepted] = await say(bed, "/build server", user="newcomer", association="NONE")
    assert "building `server`" in accepted["body"]
    asked = [c.path for c in bed.github.calls_to("GET", r"/collaborators/.+/permission$")]
    assert asked == [f"/repos/{REPO}/collaborators/owner-looking/permission",
                     f"/repos/{REPO}/collaborators/newcomer/permission"]


async def test_permission_is_cached_for_a_short_time(bed: Bed) -> None:
    open_pr(bed)
    allow(bed, "alice", "write")
    now = [1000.0]
    bed.deps.permissions = Permissions(ttl=60, clock=lambda: now[0])
    await say(bed, "/help")
    allow(bed, "alice", "read")  # revoked: the cached answer still holds for up to a minute
    [within] = await say(bed, "/help")
    assert "**write**" in within["body"]
    assert len(bed.github.calls_to("GET", r"/collaborators/alice/permission$")) == 1
    now[0] += 61
    [after] = await say(bed, "/build")
    assert "need write access" in after["body"] and "**read**" in after["body"]
    assert len(bed.github.calls_to("GET", r"/collaborators/alice/permission$")) == 2
    assert jobs_of(bed) == []


async def test_custom_repository_role_based_on_write_may_run_commands(bed: Bed) -> None:
    """GitHub reports a custom role as `role_name: <name>` with the base `permission: write`."""
    open_pr(bed)
    allow(bed, "carol", "read")  # what the emulator would say; GitHub's answer for the custom role follows
    bed.github.fail_next("GET", r"/collaborators/carol/permission$", 200,
                         body={"permission": "write", "role_name": "ml-engineer", "user": {"login": "carol"}})
    [answer] = await say(bed, "/help", user="carol")
    assert "**write** (you can run these commands)" in answer["body"]


# --- the fork rule, pinned to a sha ---------------------------------------------------------------------

async def test_fork_pr_runs_nothing_until_ok_to_test_and_only_for_that_sha(bed: Bed) -> None:
    head = open_pr(bed, fork=True)
    allow(bed, "alice", "write")
    [refused] = await say(bed, "/build server")
    assert "comes from a fork" in refused["body"] and head[:7] in refused["body"]
    assert jobs_of(bed) == []

    [granted] = await say(bed, "/ok-to-test")
    assert f"jobs may now run for {head[:7]}" in granted["body"]
    [built] = await say(bed, "/build server")
    assert f"`pr-1-{head[:7]}`" in built["body"]
    assert [j["metadata"]["annotations"]["flops.dev/sha"] for j in jobs_of(bed, "build")] == [head]

    moved = push_to_pr(bed, fork=True)
    [again] = await say(bed, "/build server\n/regression\n/train\n/retest")
    assert again["body"].count("comes from a fork") == 4 and moved[:7] in again["body"]
    assert [j["metadata"]["annotations"]["flops.dev/sha"] for j in jobs_of(bed)] == [head]


async def test_ok_to_test_and_build_in_one_comment_trusts_first(bed: Bed) -> None:
    head = open_pr(bed, fork=True)
    allow(bed, "alice", "admin")
    [answer] = await say(bed, "/build client\n/ok-to-test")
    assert "jobs may now run" in answer["body"] and "building `client`" in answer["body"]
    assert set(builds_by_image(bed)) == {"client"}
    assert builds_by_image(bed)["client"]["metadata"]["annotations"]["flops.dev/sha"] == head


async def test_ok_to_test_with_a_sha_refuses_when_the_head_moved_on(bed: Bed) -> None:
    reviewed = open_pr(bed, fork=True)
    allow(bed, "alice", "write")
    moved = push_to_pr(bed, fork=True)  # pushed while the maintainer was reading
    [answer] = await say(bed, f"/ok-to-test {reviewed[:10]}\n/build")
    assert f"nothing allowed: the head is now {moved[:7]}, not {reviewed[:7]}" in answer["body"]
    assert "comes from a fork" in answer["body"]
    assert jobs_of(bed) == []
    [pinned] = await say(bed, f"/ok-to-test {moved}\n/build server")
    assert "jobs may now run" in pinned["body"] and "building `server`" in pinned["body"]


async def test_ok_to_test_by_someone_without_write_access_does_nothing(bed: Bed) -> None:
    open_pr(bed, fork=True)
    allow(bed, "mallory", "read")
    allow(bed, "alice", "write")
    [refused] = await say(bed, "/ok-to-test", user="mallory")
    assert "need write access" in refused["body"]
    [still] = await say(bed, "/build")
    assert "comes from a fork" in still["body"]
    assert jobs_of(bed) == []


async def test_an_approving_review_of_the_head_trusts_the_fork_sha(bed: Bed) -> None:
    head = open_pr(bed, fork=True)
    allow(bed, "alice", "write")
    review = payload("pull_request_review.submitted")
    review["installation"] = {"id": INSTALLATION}
    review["review"].update(state="approved", commit_id=head)
    review["review"]["user"]["login"] = "alice"
    review["pull_request"] = bed.github.pulls[(REPO, PR)]
    await bed.deliver("pull_request_review", review)
    await bed.settle()
    [answer] = await say(bed, "/build server")
    assert "building `server`" in answer["body"]


async def test_an_ok_to_test_survives_a_restart(make_bed: BedFactory, github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    first = await make_bed()
    head = open_pr(first, fork=True)
    allow(first, "alice", "write")
    await say(first, "/ok-to-test")
    await first.server.close()
    second = await make_bed()
    [answer] = await say(second, "/build server")
    assert f"`pr-1-{head[:7]}`" in answer["body"]


async def test_same_repository_prs_need_no_ok_to_test(bed: Bed) -> None:
    open_pr(bed)
    allow(bed, "alice", "write")
    [answer] = await say(bed, "/ok-to-test")
    assert "not needed" in answer["body"]


# --- what is ignored -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("login", "user_type"), [("flops-bot[bot]", "Bot"), ("renovate[bot]", "User"),
                                                  ("ci-helper", "Bot")])
async def test_bot_comments_are_ignored(bed: Bed, login: str, user_type: str) -> None:
    open_pr(bed)
    allow(bed, login, "admin")
    calls = len(bed.github.calls)
    assert await say(bed, "/build\n/help", user=login, user_type=user_type) == []
    assert bed.github.calls[calls:] == [] and eyes(bed) == [] and jobs_of(bed) == []


async def test_edited_comments_do_not_run_commands(bed: Bed) -> None:
    open_pr(bed)
    allow(bed, "alice", "write")
    data = comment(bed, "/build", action="edited")
    data["changes"] = {"body": {"from": "typo"}}
    calls = len(bed.github.calls)
    response = await bed.deliver("issue_comment", data)
    await bed.settle()
    assert response.status == 202
    assert bed.github.calls[calls:] == [] and replies(bed) == [] and jobs_of(bed) == []


async def test_comments_without_commands_and_commands_for_other_bots(bed: Bed) -> None:
    open_pr(bed)
    allow(bed, "bob", "read")
    assert await say(bed, "LGTM, but see `/build` in the docs\n> /build\n```\n/build\n```", user="bob") == []
    assert await say(bed, "/cc @alice\n/bulid", user="bob") == []  # not ours to refuse
    assert len(bed.github.calls_to("GET", r"/permission$")) == 1  # asked once: the first had no command line
    assert jobs_of(bed) == []


# --- reaction and reply --------------------------------------------------------------------------------

async def test_accepted_comment_gets_eyes_at_once_then_one_reply_with_links(bed: Bed) -> None:
    head = open_pr(bed)
    allow(bed, "alice", "write")
    data = comment(bed, "Let's see.\n/build")
    await bed.deliver("issue_comment", data)
    await bed.settle()
    assert eyes(bed) == [data["comment"]["id"]]
    posts = [c.path for c in bed.github.calls if c.method == "POST"]
    reaction = posts.index(f"/repos/{REPO}/issues/comments/{data['comment']['id']}/reactions")
    first_check = next(i for i, p in enumerate(posts) if p.endswith("/check-runs"))
    assert reaction < first_check  # acknowledged before any work
    [answer] = replies(bed)
    assert f"([your comment]({data['comment']['html_url']}))" in answer["body"]
    for run in bed.github.check_runs_for(REPO, head):
        assert f"[{run['name']}]({run['html_url']})" in answer["body"]
    assert len(bed.github.check_runs_for(REPO, head)) == 2


async def test_one_reply_per_accepted_comment(bed: Bed) -> None:
    open_pr(bed)
    allow(bed, "alice", "write")
    assert len(await say(bed, "/build server\n/cancel build\n/help")) == 1
    assert len(await say(bed, "/help")) == 1
    assert len(replies(bed)) == 2 and len(eyes(bed)) == 2


async def test_help_lists_the_commands_and_the_callers_permission(bed: Bed) -> None:
    open_pr(bed)
    allow(bed, "alice", "maintain")
    allow(bed, "bob", "triage")
    [mine] = await say(bed, "/help")
    for name in ("regression", "build", "train", "redeploy", "retest", "cancel", "ok-to-test", "help"):
        assert f"| `/{name}` |" in mine["body"]
    assert "**maintain** (you can run these commands)" in mine["body"]
    [theirs] = await say(bed, "/help", user="bob")
    assert "| `/build` |" in theirs["body"] and "**triage** (commands need write access)" in theirs["body"]
    assert len(eyes(bed)) == 1  # only the accepted one
    assert bed.github.calls_to("GET", r"/pulls/|/contents/") == []  # /help alone needs neither


async def test_a_formatted_command_is_answered_and_runs_nothing(bed: Bed) -> None:
    open_pr(bed)
    allow(bed, "alice", "write")
    [answer] = await say(bed, "/build **server**")
    assert "`/build` was written with formatting" in answer["body"] and "plain text" in answer["body"]
    assert jobs_of(bed) == []


async def test_unknown_command_gets_the_closest_one(bed: Bed) -> None:
    open_pr(bed)
    allow(bed, "alice", "write")
    [answer] = await say(bed, "/bulid server\n/retset")
    assert "`/bulid` is not a flops-bot command. Did you mean `/build`?" in answer["body"]
    assert "Did you mean `/retest`?" in answer["body"]
    assert jobs_of(bed) == [] and eyes(bed) == []  # nothing accepted, so no 👀
    assert bed.github.calls_to("GET", r"/pulls/|/contents/") == []  # and nothing else was read


async def test_when_github_cannot_give_the_pull_request_the_commenter_hears_so(bed: Bed) -> None:
    open_pr(bed)
    allow(bed, "alice", "write")
    bed.github.fail_next("GET", rf"/repos/{REPO}/pulls/{PR}$", 404)
    [answer] = await say(bed, "/build")
    assert "could not read this pull request" in answer["body"] and "nothing was run" in answer["body"]
    assert jobs_of(bed) == []


@pytest.mark.parametrize(("line", "problem"), [
    ("/build server nope", "unknown image `nope` (configured: `server`, `client`)"),
    ("/build Server", "`Server` is not an image name"),
    ("/train rounds=0", "`rounds` must be between 1 and 10"),
    ("/train clients=5", "`clients` must be between 1 and 4 (the repository's `max_clients`), got 5."),
    ("/train rounds=three", "`rounds` must be a whole number, got `three`."),
    ("/train epochs=3", "`/train` takes `rounds=N` and `clients=N`, not `epochs=3`."),
    ("/redeploy prod", "`prod` is not a deploy target (known: `dev`)"),
    ("/redeploy dev not-a-sha", "`not-a-sha` is not a commit sha"),
    ("/redeploy", "usage: `/redeploy <target> [<sha>]`"),
    ("/regression now", "`/regression` takes no arguments"),
    ("/cancel everything", "usage: `/cancel [build|regression|train|test|bisect]`."),
])
async def test_bad_arguments_are_refused_naming_the_problem_before_any_job(bed: Bed, line: str,
                                                                           problem: str) -> None:
    head = open_pr(bed)
    allow(bed, "alice", "write")
    [answer] = await say(bed, line)
    assert problem in answer["body"]
    assert jobs_of(bed) == [] and bed.github.check_runs_for(REPO, head) == []


async def test_commands_on_a_plain_issue_or_a_closed_pr(bed: Bed) -> None:
    open_pr(bed, state="closed")
    allow(bed, "alice", "write")
    [closed] = await say(bed, "/build\n/regression")
    assert closed["body"].count("the pull request is closed") == 2
    [issue] = await say(bed, "/build", on_pr=False)
    assert "works on pull requests only" in issue["body"]
    assert jobs_of(bed) == []


async def test_regression_and_train_pass_the_gate_for_a_trusted_head(bed: Bed) -> None:
    head = open_pr(bed)
    allow(bed, "alice", "write")
    [answer] = await say(bed, "/regression\n/train rounds=2 clients=3")
    assert "regression Job" in answer["body"] and head[:7] in answer["body"]
    assert "2 rounds, 3 clients" in answer["body"]
    assert len(jobs_of(bed, "regression")) == 1


# --- what the commands do -------------------------------------------------------------------------------

async def test_build_makes_kaniko_jobs_tagged_pr_n_sha7_and_never_deploys(bed: Bed) -> None:
    head = open_pr(bed)
    allow(bed, "alice", "write")
    await say(bed, "/build")
    jobs = builds_by_image(bed)
    assert set(jobs) == {"server", "client"}
    for image, job in jobs.items():
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--destination=harbor.example.com/flops-pr/{image}:pr-1-{head[:7]}" in args
        assert job["metadata"]["labels"]["flops.dev/pr"] == "1"
        bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"], message="sha256:" + "cd" * 32)
    await wait_for(lambda: len(done(bed, head)) == 2, what="both build reports")
    await bed.settle()
    runs = bed.github.check_runs_for(REPO, head)
    assert sorted((r["name"], r["conclusion"]) for r in runs) == [
        ("flops/build: client", "success"), ("flops/build: server", "success")]
    assert bed.github.calls_to("GET", r"flops-config") == [] and bed.github.calls_to("PUT", r"/contents/") == []


async def test_a_new_push_to_the_pr_cancels_the_old_heads_builds(bed: Bed) -> None:
    old = open_pr(bed)
    allow(bed, "alice", "write")
    await say(bed, "/build server")
    new = push_to_pr(bed, fork=False)
    data = payload("pull_request.synchronize")
    pull = bed.github.pulls[(REPO, PR)]
    data["pull_request"].update(number=PR, state="open")
    data["pull_request"]["head"].update(sha=new, ref="feature")
    data["pull_request"]["base"].update(sha=pull["base"]["sha"], ref="master")
    data.update(number=PR, before=old, after=new, installation={"id": INSTALLATION})
    await bed.deliver("pull_request", data)
    await bed.settle()
    assert builds_by_image(bed) == {}  # the old head's Kaniko Job is gone
    [run] = bed.github.check_runs_for(REPO, old, "flops/build: server")
    assert run["conclusion"] == "cancelled" and new[:7] in run["output"]["summary"]


async def test_a_second_build_while_one_runs_starts_only_what_is_not_building(bed: Bed) -> None:
    head = open_pr(bed)
    allow(bed, "alice", "write")
    await say(bed, "/build server")
    [answer] = await say(bed, "/build")
    assert "building `client`" in answer["body"] and f"Already building for {head[:7]}: `server`" in answer["body"]
    assert sorted(builds_by_image(bed)) == ["client", "server"] and len(jobs_of(bed, "build")) == 2


async def test_a_redelivered_comment_starts_nothing_twice(bed: Bed) -> None:
    open_pr(bed)
    allow(bed, "alice", "write")
    data = comment(bed, "/build server")
    await bed.deliver("issue_comment", data, delivery="first")
    await bed.settle()
    await bed.deliver("issue_comment", data, delivery="redelivered")
    await bed.settle()
    assert len(jobs_of(bed, "build")) == 1


async def test_cancel_stops_this_prs_running_jobs_and_their_checks_become_cancelled(bed: Bed) -> None:
    head = open_pr(bed)
    allow(bed, "alice", "write")
    await say(bed, "/build")
    [kept] = await say(bed, "/cancel regression")
    assert "nothing was running" in kept["body"] and len(jobs_of(bed, "build")) == 2
    [answer] = await say(bed, "/cancel")
    assert "cancelled 2 running Jobs" in answer["body"]
    assert jobs_of(bed) == []
    runs = bed.github.check_runs_for(REPO, head)
    assert [r["conclusion"] for r in runs] == ["cancelled", "cancelled"]
    assert all("Cancelled by @alice" in r["output"]["summary"] for r in runs)


async def test_cancel_and_ok_to_test_work_even_when_the_base_config_is_broken(bed: Bed) -> None:
    head = open_pr(bed, fork=True)
    allow(bed, "alice", "write")
    await say(bed, "/ok-to-test\n/build server")
    broken = bed.github.commit(REPO, "master", {".github/flops.yml": "registry: [not, a, string]\n"})
    bed.github.pulls[(REPO, PR)]["base"]["sha"] = broken
    [answer] = await say(bed, "/cancel\n/ok-to-test\n/build")
    assert "cancelled 1 running Job" in answer["body"] and "jobs may now run" in answer["body"]
    assert "no valid `.github/flops.yml` on the base branch" in answer["body"]
    assert jobs_of(bed) == []
    assert [r["conclusion"] for r in bed.github.check_runs_for(REPO, head, "flops/build: server")] == ["cancelled"]


async def test_cancel_train_also_drops_a_run_waiting_for_its_images(bed: Bed) -> None:
    head = open_pr(bed)
    allow(bed, "alice", "write")
    [waiting] = await say(bed, "/train")
    assert "starts when the images are built" in waiting["body"]
    [answer] = await say(bed, "/cancel")
    assert "will not start" in answer["body"]
    [again] = await say(bed, "/build")  # images built later start no forgotten run
    for job in jobs_of(bed, "build"):
        bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"], message="sha256:" + "ef" * 32)
    await wait_for(lambda: len(done(bed, head)) == 2, what="both build reports")
    await bed.settle()
    assert jobs_of(bed, "federated-server") == []
    assert "building" in again["body"]


async def test_retest_reruns_a_check_whose_job_was_deleted_while_the_bot_was_down(make_bed: BedFactory,
                                                                                    github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    bed = await make_bed()
    head = open_pr(bed)
    allow(bed, "alice", "write")
    await say(bed, "/build server")
    name = builds_by_image(bed)["server"]["metadata"]["name"]
    await bed.server.close()  # the bot is down ...
    with kubernetes.client.ApiClient(bed.kube.client_configuration()) as api:  # ... while someone deletes the Job
        kubernetes.client.BatchV1Api(api).delete_namespaced_job(name, NAMESPACE)
    bed = await make_bed()
    [stuck] = bed.github.check_runs_for(REPO, head, "flops/build: server")
    assert stuck["status"] == "in_progress"  # nothing told the bot: the check is still open
    [answer] = await say(bed, "/retest")
    assert "re-running `flops/build: server`" in answer["body"]
    old, new = bed.github.check_runs_for(REPO, head, "flops/build: server")
    assert (old["conclusion"], new["status"]) == ("cancelled", "in_progress")
    assert name in old["output"]["summary"] and len(builds_by_image(bed)) == 1


async def test_retest_reruns_only_the_failed_flops_checks(bed: Bed) -> None:
    head = open_pr(bed)
    allow(bed, "alice", "write")
    [nothing] = await say(bed, "/retest")
    assert f"no failed or cancelled flops checks on {head[:7]}" in nothing["body"]
    await say(bed, "/build")
    jobs = builds_by_image(bed)
    bed.kube.fail_job(NAMESPACE, jobs["server"]["metadata"]["name"])
    bed.kube.succeed_job(NAMESPACE, jobs["client"]["metadata"]["name"], message="sha256:" + "ab" * 32)
    await wait_for(lambda: len(done(bed, head)) == 2, what="both build reports")
    [answer] = await say(bed, "/retest")
    assert "re-running `flops/build: server`" in answer["body"]
    runs = [(r["name"], r["status"], r["conclusion"]) for r in bed.github.check_runs_for(REPO, head)]
    assert sorted(runs, key=str) == sorted([("flops/build: server", "completed", "failure"),
                                            ("flops/build: client", "completed", "success"),
                                            ("flops/build: server", "in_progress", None)], key=str)
    assert len(jobs_of(bed, "build")) == 3


async def test_a_failure_inside_a_command_is_reported_in_the_reply(bed: Bed) -> None:
    open_pr(bed)
    allow(bed, "alice", "write")
    bed.github.fail_next("POST", r"/check-runs$", 422, body={"message": "Validation Failed"})
    [answer] = await say(bed, "/build server\n/help")
    assert "failed inside flops-bot" in answer["body"] and "Comment `/build` again" in answer["body"]
    assert "| `/help` |" in answer["body"]  # the other commands of the comment still ran
