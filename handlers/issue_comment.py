"""issue_comment: PR comment commands, for people with write access only.

An accepted comment gets an `eyes` reaction at once and one reply listing what happened.
Edited comments never re-run commands; the bot's own and other bots' comments are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot import builds, checks, commands, deploy, federated, jobs, pulls, regression
from bot.config import RepoConfig
from bot.deps import Deps
from bot.github import WRITE

router = routing.Router()
RUNS_CODE = ("regression", "build", "train", "retest")


@dataclass(frozen=True)
class Context:
    gh: GitHubAPI
    deps: Deps
    repo: str
    number: int
    user: str
    permission: str
    pr: pulls.PullRef | None
    cfg: RepoConfig | None
    default_branch: str
    delivery_id: str


@router.register("issue_comment", action="created")
async def run_comment_commands(event: sansio.Event, gh: GitHubAPI, *, deps: Deps) -> None:
    data = event.data
    comment, issue = data["comment"], data["issue"]
    if pulls.is_bot(comment["user"]) or "installation" not in data or not commands.command_lines(comment["body"]):
        return
    repo, user = data["repository"]["full_name"], comment["user"]["login"]
    permission = await deps.permissions.of(gh, repo, user)
    if permission not in WRITE:
        await reply(gh, repo, issue["number"], _not_allowed(user, permission, comment["body"]))
        return
    await react(gh, repo, comment["id"])
    ctx = await context(event, gh, deps, permission)
    bounds = commands.Bounds(ctx.cfg.federated.max_rounds, ctx.cfg.federated.max_clients) \
        if ctx.cfg and ctx.cfg.federated else commands.Bounds()
    parsed = commands.parse(comment["body"], bounds)
    lines = [f"- `{r.line[:80]}`: {r.message}" for r in parsed.refusals]
    ordered = sorted(parsed.commands, key=lambda c: c.name != "ok-to-test")  # trust first, then the rest
    for command in ordered:
        lines.append(f"- `{command.line[:80]}`: {await execute(ctx, command)}")
    await reply(gh, repo, issue["number"], f"@{user}\n" + "\n".join(lines))


async def context(event: sansio.Event, gh: GitHubAPI, deps: Deps, permission: str) -> Context:
    data = event.data
    repo, number = data["repository"]["full_name"], int(data["issue"]["number"])
    installation = int(data["installation"]["id"])
    default = data["repository"].get("default_branch") or "main"
    pr = await pulls.fetch(gh, repo, number, installation) if "pull_request" in data["issue"] else None
    ref = pr.base_sha if pr else default  # config from the base: a PR cannot loosen its own gate
    cfg = await checks.load_config(gh, repo, ref=ref, sha=pr.head_sha if pr else ref)
    return Context(gh, deps, repo, number, data["comment"]["user"]["login"], permission, pr, cfg, default,
                   event.delivery_id)


async def execute(ctx: Context, command: commands.Command) -> str:
    if command.name == "help":
        return "\n\n" + commands.help_text(ctx.permission)
    if ctx.cfg is None:
        return "this repository has no valid `.github/flops.yml` on the base branch, so there is nothing to run."
    if command.name == "redeploy":
        return await redeploy(ctx, command)
    if ctx.pr is None:
        return "this command works on pull requests only."
    if command.name == "ok-to-test":
        return await ok_to_test(ctx)
    if command.name == "cancel":
        return await cancel(ctx, command)
    if ctx.pr.state != "open":
        return "the pull request is closed."
    if command.name in RUNS_CODE and not await pulls.may_run(ctx.deps, ctx.pr):
        return pulls.fork_notice(ctx.pr)
    return await RUNNERS[command.name](ctx, command)


async def ok_to_test(ctx: Context) -> str:
    assert ctx.pr is not None
    if not ctx.pr.fork:
        return "not needed: this pull request's branch is in this repository."
    await pulls.grant(ctx.deps, ctx.pr, ctx.user, "/ok-to-test")
    return f"jobs may now run for {ctx.pr.head_sha[:7]} (a later push needs a new `/ok-to-test`)."


async def run_regression(ctx: Context, command: commands.Command) -> str:
    assert ctx.pr is not None and ctx.cfg is not None
    if ctx.cfg.regression is None:
        return "no `regression:` section in `.github/flops.yml`."
    name = await regression.start(ctx.gh, ctx.deps, ctx.cfg.regression, regression.pr_source(ctx.pr, ctx.delivery_id),
                                  trigger=f"/regression by @{ctx.user}", attempt=ctx.delivery_id)
    return f"regression Job `{name}` started for {ctx.pr.head_sha[:7]}; `flops/regression` reports the verdict." \
        if name else "a regression run for this commit is already running."


async def run_build(ctx: Context, command: commands.Command) -> str:
    assert ctx.pr is not None and ctx.cfg is not None
    unknown = [n for n in command.images if ctx.cfg.image(n) is None]
    if unknown:
        known = ", ".join(f"`{i.name}`" for i in ctx.cfg.images) or "none"
        return f"unknown image {', '.join(f'`{n}`' for n in unknown)} (configured: {known})."
    if not ctx.cfg.images:
        return "no `images:` in `.github/flops.yml`."
    started = await builds.start_for_pr(ctx.gh, ctx.deps, ctx.cfg, ctx.pr, command.images, ctx.delivery_id)
    tag = jobs.pr_tag(ctx.pr.number, ctx.pr.head_sha)
    return f"building {', '.join(f'`{n}`' for n in started)} as `{tag}` (never deployed)." if started \
        else "those builds are already running."


async def run_train(ctx: Context, command: commands.Command) -> str:
    assert ctx.pr is not None and ctx.cfg is not None
    if ctx.cfg.federated is None:
        return "no `federated:` section in `.github/flops.yml`."
    return await federated.start_for_pr(ctx.gh, ctx.deps, ctx.cfg, ctx.pr, rounds=command.rounds,
                                        clients=command.clients, trigger=f"/train by @{ctx.user}",
                                        attempt=ctx.delivery_id)


async def redeploy(ctx: Context, command: commands.Command) -> str:
    assert ctx.cfg is not None and command.target is not None
    result = await deploy.redeploy(ctx.gh, ctx.deps, ctx.cfg, ctx.repo, command.target, command.sha, ctx.default_branch)
    return f"**{result.conclusion}** · {result.title}. {result.summary}"


async def retest(ctx: Context, command: commands.Command) -> str:
    """Re-run the head's failed, timed-out or cancelled flops checks."""
    assert ctx.pr is not None and ctx.cfg is not None
    data = await ctx.gh.getitem("/repos/" + ctx.repo + "/commits/{sha}/check-runs{?filter,per_page}",
                                url_vars={"sha": ctx.pr.head_sha, "filter": "latest", "per_page": "100"})
    failed = sorted({r["name"] for r in data.get("check_runs", []) if r["name"].startswith("flops/")
                     and r.get("conclusion") in ("failure", "cancelled", "timed_out")})
    if not failed:
        return f"no failed or cancelled flops checks on {ctx.pr.head_sha[:7]}."
    done = []
    images = tuple(n[len(checks.build_name("")):] for n in failed if n.startswith(checks.build_name("")))
    if images and ctx.cfg.images:
        await builds.start_for_pr(ctx.gh, ctx.deps, ctx.cfg, ctx.pr, images, ctx.delivery_id)
        done += [checks.build_name(i) for i in images]
    if checks.REGRESSION in failed:
        await run_regression(ctx, command)
        done.append(checks.REGRESSION)
    if checks.FEDERATED in failed:
        await run_train(ctx, commands.Command("train", command.line))
        done.append(checks.FEDERATED)
    return "re-running " + ", ".join(f"`{n}`" for n in done) + "." if done else \
        "the failed checks (" + ", ".join(failed) + ") cannot be re-run from here."


async def cancel(ctx: Context, command: commands.Command) -> str:
    assert ctx.pr is not None
    kinds = {"build": (jobs.BUILD,), "regression": (jobs.REGRESSION,), "train": (jobs.FEDERATED_SERVER,),
             None: (jobs.BUILD, jobs.REGRESSION, jobs.FEDERATED_SERVER)}[command.kind]
    count = await regression.cancel_for_pr(ctx.gh, ctx.deps, ctx.repo, ctx.pr.number,
                                           f"Cancelled by @{ctx.user} with `/cancel`.", kinds=kinds)
    return f"cancelled {count} running Job{'s' if count != 1 else ''}." if count else "nothing was running."


RUNNERS: dict[str, Any] = {"regression": run_regression, "build": run_build, "train": run_train, "retest": retest}


async def react(gh: GitHubAPI, repo: str, comment_id: int) -> None:
    await gh.post("/repos/" + repo + "/issues/comments/{id}/reactions", url_vars={"id": str(comment_id)},
                  data={"content": "eyes"}, accept="application/vnd.github+json")


async def reply(gh: GitHubAPI, repo: str, number: int, body: str) -> None:
    await gh.post("/repos/" + repo + "/issues/{number}/comments", url_vars={"number": str(number)},
                  data={"body": checks.clip(body)})


def _not_allowed(user: str, permission: str, body: str) -> str:
    if [c.name for c in commands.parse(body).commands] == ["help"]:
        return f"@{user}\n\n" + commands.help_text(permission)
    return (f"@{user} thanks! flops-bot commands need write access to this repository (yours: **{permission}**), "
            f"so nothing was run. A maintainer can run it for you.")
