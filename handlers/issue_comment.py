"""issue_comment: PR comment commands, for people with write access only.

Permission is asked of GitHub (collaborator permission API, cached briefly), never read from
`author_association`. A comment naming a command gets an `eyes` reaction at once and one reply with
each line's outcome and links to the checks now running; one naming only unknown commands gets the
closest ones. Edited comments never re-run commands; the bot's own and other bots' comments are
ignored. Code of a fork PR runs only for a head sha a maintainer approved or `/ok-to-test`-ed.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import gidgethub
from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.core import commands, jobs
from bot.core.config import RepoConfig
from bot.core.text import shown
from bot.flows import bisect, builds, deploy, federated, lifecycle, pulls, regression, tests
from bot.flows.deps import Deps
from bot.platform import checks, logs

log = logs.get_logger(__name__)
router = routing.Router()
RUNS_CODE = ("regression", "build", "train", "retest", "test")
JUST_HELP = commands.Parsed((commands.Command("help", "/help"),))
NO_CONFIG = ("this repository has no valid `.github/flops.yml` on the base branch, so there is nothing to run "
             "(the `flops/config` check says what is wrong).")


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
    attempt: str = ""  # distinguishes this comment's Jobs from earlier ones (Job names are deterministic)
    installation: int = 0
    comment_id: int = 0


@router.register("issue_comment", action="created")
async def run_comment_commands(event: sansio.Event, gh: GitHubAPI, *, deps: Deps) -> None:
    """Only `created`: an edited comment never re-runs anything (no handler for `edited`)."""
    data = event.data
    comment = data["comment"]
    body = comment.get("body") or ""
    if pulls.is_bot(comment["user"]) or "installation" not in data or not commands.command_lines(body):
        return
    repo, number, user = data["repository"]["full_name"], int(data["issue"]["number"]), comment["user"]["login"]
    permission = await deps.permissions.of(gh, repo, user)  # the API decides, never author_association
    if not pulls.may_command(permission):
        if commands.addressed(body):  # a `/cc` meant for another bot gets no lecture from us
            await pulls.reply(gh, deps, repo, number, _not_allowed(user, permission, body), to=comment["id"])
        return
    header = f"@{user}" + (f" ([your comment]({comment['html_url']}))" if comment.get("html_url") else "") + "\n"
    grammar = commands.parse(body)  # `/train` bounds need the config; this is enough to answer without it
    if not commands.addressed(body):  # only unknown commands: name the closest ones, read nothing else
        await pulls.reply(gh, deps, repo, number, header + "\n".join(refused(grammar)), to=comment["id"])
        return
    await react(gh, repo, comment["id"])  # at once, before any slow work
    if grammar == JUST_HELP:  # needs neither the PR nor its config
        await pulls.reply(gh, deps, repo, number, header + "- `/help`: " + help_answer(permission),
                          to=comment["id"])
        return
    ctx = await load_context(event, gh, deps, permission)
    lines = await run_commands(ctx, commands.parse(body, bounds_of(ctx.cfg)))
    await pulls.reply(gh, deps, repo, number, header + "\n".join(lines), to=comment["id"])


async def load_context(event: sansio.Event, gh: GitHubAPI, deps: Deps, permission: str) -> Context:
    """The PR and its base's config; if GitHub cannot give them, the commenter hears so."""
    try:
        return await context(event, gh, deps, permission)
    except Exception:
        data = event.data
        await pulls.reply(gh, deps, data["repository"]["full_name"], int(data["issue"]["number"]),
                          f"@{data['comment']['user']['login']} flops-bot could not read this pull request or its "
                          f"`.github/flops.yml`, so nothing was run. Comment again in a minute; if it keeps "
                          f"failing, the bot's logs for delivery `{event.delivery_id}` say why.",
                          to=data["comment"]["id"])
        raise


async def run_commands(ctx: Context, parsed: commands.Parsed) -> list[str]:
    """The reply's lines: each refusal with its reason, each command's outcome, links to what runs."""
    lines = refused(parsed)
    ordered = sorted(parsed.commands, key=lambda c: c.name != "ok-to-test")  # trust first, then the rest
    for command in ordered:
        lines.append(f"- `{shown(command.line, 80)}`: {await attempt(ctx, command)}")
    if any(c.name in RUNS_CODE for c in parsed.commands):
        lines += await running_links(ctx)
    return lines


def refused(parsed: commands.Parsed) -> list[str]:
    return [f"- `{shown(r.line, 80)}`: {r.message}" for r in parsed.refusals]


def bounds_of(cfg: RepoConfig | None) -> commands.Bounds:
    if cfg is None or cfg.federated is None:
        return commands.Bounds()
    return commands.Bounds(cfg.federated.max_rounds, cfg.federated.max_clients)


async def context(event: sansio.Event, gh: GitHubAPI, deps: Deps, permission: str) -> Context:
    data = event.data
    repo, number = data["repository"]["full_name"], int(data["issue"]["number"])
    installation = int(data["installation"]["id"])
    default = data["repository"].get("default_branch") or "main"
    pr = await pulls.fetch(gh, repo, number, installation) if "pull_request" in data["issue"] else None
    ref = pr.base_sha if pr else default  # config from the base: a PR cannot loosen its own gate
    cfg = await checks.load_config(gh, repo, ref=ref, sha=pr.head_sha if pr else ref)
    # Job names derive from the comment, not the delivery: a redelivered comment starts nothing twice.
    return Context(gh, deps, repo, number, data["comment"]["user"]["login"], permission, pr, cfg, default,
                   event.delivery_id, attempt=f"comment-{data['comment']['id']}", installation=installation,
                   comment_id=int(data["comment"]["id"]))


async def attempt(ctx: Context, command: commands.Command) -> str:
    """One command's outcome, as a line of the reply; a failure is said, not swallowed."""
    try:
        return await execute(ctx, command)
    except Exception:
        log.exception("comment command failed", extra={"repo": ctx.repo, "pr": ctx.number, "command": command.name})
        return (f"failed inside flops-bot, so it may have done only part of the work. Comment `/{command.name}` "
                f"again to retry; the bot's logs for delivery `{ctx.delivery_id}` say why.")


async def execute(ctx: Context, command: commands.Command) -> str:
    if command.name == "help":
        return help_answer(ctx.permission)
    if command.name == "redeploy":
        return await redeploy(ctx, command) if ctx.cfg is not None else NO_CONFIG
    if command.name == "bisect" or (command.name == "cancel" and command.kind == "bisect"):
        return await run_bisect(ctx, command)  # any issue or PR: the default branch's code and config
    if ctx.pr is None:
        return "this command works on pull requests only."
    if command.name == "ok-to-test":  # neither trusting nor stopping needs the config
        return await ok_to_test(ctx, command)
    if command.name == "cancel":
        return await cancel(ctx, command)
    if ctx.cfg is None:
        return NO_CONFIG
    if ctx.pr.state != "open":
        return "the pull request is closed."
    if command.name in RUNS_CODE and not await pulls.may_run(ctx.deps, ctx.pr):
        return pulls.fork_notice(ctx.pr)
    return await RUNNERS[command.name](ctx, command)


def help_answer(permission: str) -> str:
    return "\n\n" + commands.help_text(permission)


async def running_links(ctx: Context) -> list[str]:
    """Links to the head's flops checks now running (what the commands just started, and any earlier)."""
    if ctx.pr is None:
        return []
    try:
        data = await ctx.gh.getitem("/repos/" + ctx.repo + "/commits/{sha}/check-runs{?filter,status,per_page}",
                                    url_vars={"sha": ctx.pr.head_sha, "filter": "latest", "status": "in_progress",
                                              "per_page": "100"})
    except gidgethub.GitHubException:  # the links are a convenience: the reply goes out without them
        log.warning("could not list check runs for the reply", extra={"repo": ctx.repo, "pr": ctx.number})
        return []
    runs = sorted((r["name"], r["html_url"]) for r in data.get("check_runs", [])
                  if r["name"].startswith("flops/") and r.get("status") == "in_progress" and r.get("html_url"))
    if not runs:
        return []
    return ["", f"Running on {ctx.pr.head_sha[:7]}: " + " · ".join(f"[{name}]({url})" for name, url in runs)]


async def ok_to_test(ctx: Context, command: commands.Command) -> str:
    """Trust the fork's code at the head sha fetched now; `/ok-to-test <sha>` refuses if it moved on."""
    assert ctx.pr is not None
    if not ctx.pr.fork:
        return "not needed: this pull request's branch is in this repository."
    head = ctx.pr.head_sha
    if command.sha is not None and not head.startswith(command.sha):
        return (f"nothing allowed: the head is now {head[:7]}, not {command.sha[:7]}. Review {head[:7]}, "
                f"then comment `/ok-to-test {head}`.")
    await pulls.grant(ctx.deps, ctx.pr, ctx.user, "/ok-to-test")
    started = await tests.for_pull_request(ctx.gh, ctx.deps, ctx.cfg, ctx.pr, trigger=f"/ok-to-test by @{ctx.user}",
                                           delivery_id=ctx.delivery_id) if ctx.cfg is not None else []
    ran = f"; {len(started)} test Job{'s' if len(started) != 1 else ''} started" if started else ""
    return f"jobs may now run for {head[:7]} (a later push needs a new `/ok-to-test`){ran}."


async def run_regression(ctx: Context, command: commands.Command) -> str:
    assert ctx.pr is not None and ctx.cfg is not None
    if ctx.cfg.regression is None:
        return "no `regression:` section in `.github/flops.yml`."
    name = await regression.start(ctx.gh, ctx.deps, ctx.cfg.regression, regression.pr_source(ctx.pr, ctx.delivery_id),
                                  trigger=f"/regression by @{ctx.user}", attempt=ctx.attempt,
                                  default_branch=ctx.default_branch)
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
    wanted = command.images or tuple(i.name for i in ctx.cfg.images)
    busy = await building(ctx)
    todo = tuple(n for n in wanted if n not in busy)
    started = await builds.start_for_pr(ctx.gh, ctx.deps, ctx.cfg, ctx.pr, todo, ctx.attempt) if todo else []
    tag = jobs.pr_tag(ctx.pr.number, ctx.pr.head_sha)
    where = f"pushed to `{ctx.cfg.pr_registry}`" if ctx.cfg.pr_registry else "not pushed: no `pr_registry` is set"
    text = f"building {', '.join(f'`{n}`' for n in started)} as `{tag}` ({where}; never deployed)." if started else ""
    for name in todo:
        earlier = await builds.reused_from(ctx.deps, ctx.pr.repo, ctx.pr.head_sha, name) if name not in started else ""
        text += f"{' ' if text else ''}reused `{name}`: inputs unchanged since {earlier[:7]}." if earlier else ""
    already = [n for n in wanted if n in busy]
    if already:
        text += (" " if text else "") + f"Already building for {ctx.pr.head_sha[:7]}: " + \
            ", ".join(f"`{n}`" for n in already) + "."
    return text or "those builds are already running."


async def building(ctx: Context) -> set[str]:
    """Images with an unfinished build Job of this PR's head (a second `/build` does not start them again)."""
    assert ctx.pr is not None
    running = await lifecycle.running(ctx.deps, jobs.BUILD, repo=ctx.repo, pr=ctx.pr.number)
    return {ann.get(jobs.IMAGE, "") for ann in map(jobs.annotations_of, running) if ann.get(jobs.SHA) == ctx.pr.head_sha}


async def run_train(ctx: Context, command: commands.Command) -> str:
    assert ctx.pr is not None and ctx.cfg is not None
    if ctx.cfg.federated is None:
        return "no `federated:` section in `.github/flops.yml`."
    return await federated.start_for_pr(ctx.gh, ctx.deps, ctx.cfg, ctx.pr, rounds=command.rounds,
                                        clients=command.clients, trigger=f"/train by @{ctx.user}",
                                        attempt=ctx.attempt)


async def redeploy(ctx: Context, command: commands.Command) -> str:
    assert command.target is not None
    trusted = await builds.trusted_config(ctx.gh, ctx.repo, ctx.default_branch)  # not a PR base's targets
    if trusted is None:
        return (f"`{ctx.default_branch}` has no valid `.github/flops.yml`, and only the default branch's file "
                f"names deploy targets.")
    result = await deploy.redeploy(ctx.gh, ctx.deps, trusted, ctx.repo, command.target, command.sha, ctx.default_branch,
                                   requested_by=ctx.user)
    return f"**{result.conclusion}** · {result.title}. {result.summary}"


async def retest(ctx: Context, command: commands.Command) -> str:
    """Re-run the head's failed, timed-out or cancelled flops checks."""
    assert ctx.pr is not None and ctx.cfg is not None
    data = await ctx.gh.getitem("/repos/" + ctx.repo + "/commits/{sha}/check-runs{?filter,per_page}",
                                url_vars={"sha": ctx.pr.head_sha, "filter": "latest", "per_page": "100"})
    runs = data.get("check_runs", [])
    failed = sorted({r["name"] for r in runs if r["name"].startswith("flops/")
                     and r.get("conclusion") in ("failure", "cancelled", "timed_out")} | await _orphaned(ctx, runs))
    if not failed:
        return f"no failed or cancelled flops checks on {ctx.pr.head_sha[:7]}."
    done: list[str] = []
    images = tuple(image.name for name in failed if (image := builds.image_for_check(ctx.cfg, name)) is not None)
    if images:
        started = await builds.start_for_pr(ctx.gh, ctx.deps, ctx.cfg, ctx.pr, images, ctx.attempt)
        done += [f"`{checks.build_name(i)}`" for i in started]
    names = tuple(test for name in failed if (test := tests.test_of(name)) and ctx.cfg.test(test) is not None)
    if names:
        await run_tests(ctx, commands.Command("test", command.line, tests=names))
        done += [f"`{jobs.check_name(n)}`" for n in names]
    if checks.REGRESSION in failed and ctx.cfg.regression is not None:
        done.append(f"`{checks.REGRESSION}` ({await run_regression(ctx, command)})")
    if checks.FEDERATED in failed and ctx.cfg.federated is not None:
        done.append(f"`{checks.FEDERATED}` ({await run_train(ctx, await _train_again(ctx, command, runs))})")
    left = [f"`{n}`" for n in failed if not any(d.startswith(f"`{n}`") for d in done)]
    text = ("re-running " + ", ".join(done) + "." if done else "")
    if left:
        text += (" " if text else "") + f"Not re-run from here: {', '.join(left)} (push a fix, or use the check's " \
                                        f"Re-run button)."
    return text


async def _train_again(ctx: Context, command: commands.Command, runs: list[dict[str, Any]]) -> commands.Command:
    """`/train` with the failed run's own rounds and clients (read off its server Job while it
    exists, and still within the configured bounds); the config's defaults otherwise."""
    assert ctx.cfg is not None and ctx.cfg.federated is not None
    fed = ctx.cfg.federated
    previous = next((r for r in runs if r["name"] == checks.FEDERATED and r.get("external_id")), None)
    job = await ctx.deps.kube.get_job(previous["external_id"]) if previous else None
    ann = jobs.annotations_of(job) if job else {}
    rounds, clients = ann.get(jobs.ROUNDS, ""), ann.get(jobs.CLIENTS, "")
    return commands.Command(
        "train", command.line,
        rounds=int(rounds) if rounds.isdigit() and 1 <= int(rounds) <= fed.max_rounds else None,
        clients=int(clients) if clients.isdigit() and 1 <= int(clients) <= fed.max_clients else None)


async def _orphaned(ctx: Context, runs: list[dict[str, Any]]) -> set[str]:
    """flops checks still open whose Job is gone (deleted while the bot was down): closed as
    `cancelled`, so `/retest` runs them again instead of leaving them open for ever."""
    names = set()
    for run in runs:
        job = run.get("external_id")
        if not run["name"].startswith("flops/") or run.get("status") == "completed" or not job \
                or await ctx.deps.kube.get_job(job) is not None or await ctx.deps.kube.get_job(job, jobs.RAYJOB):
            continue
        await checks.complete(ctx.gh, ctx.repo, run["id"], "cancelled", title="Job deleted",
                              summary=f"Its Job `{job}` no longer exists (deleted while flops-bot was not "
                                      f"running), so there is no result; `/retest` by @{ctx.user} runs it again.")
        names.add(run["name"])
    return names


async def cancel(ctx: Context, command: commands.Command) -> str:
    """Stop this PR's unfinished Jobs of that kind (checks -> `cancelled`), and a `/train` waiting for images."""
    assert ctx.pr is not None
    kinds = {"build": (jobs.BUILD,), "regression": (jobs.REGRESSION,), "train": (jobs.FEDERATED_SERVER,),
             "test": (jobs.TEST,), None: (jobs.BUILD, jobs.REGRESSION, jobs.FEDERATED_SERVER, jobs.TEST)}[command.kind]
    count = await lifecycle.cancel_for_pr(ctx.gh, ctx.deps, ctx.repo, ctx.pr.number,
                                          f"Cancelled by @{ctx.user} with `/cancel`.", kinds=kinds)
    waiting = command.kind in (None, "train") and await _drop_pending_train(ctx)
    text = f"cancelled {count} running Job{'s' if count != 1 else ''}" if count else ""
    if waiting:
        text += ("; " if text else "") + f"the federated run waiting for the images of {ctx.pr.head_sha[:7]} will not start"
    return text + "." if text else "nothing was running."


async def _drop_pending_train(ctx: Context) -> bool:
    assert ctx.pr is not None
    return await federated.drop_pending(ctx.deps, ctx.repo, ctx.pr.head_sha)


async def run_bisect(ctx: Context, command: commands.Command) -> str:
    """`/bisect [<good> <bad>] [metric=<name>]` and `/cancel bisect`."""
    if command.name == "cancel":
        return await bisect.cancel(ctx.gh, ctx.deps, ctx.repo, ctx.user)
    good, bad = command.shas or ("", "")
    request = bisect.Request(ctx.repo, ctx.installation, ctx.default_branch, f"/bisect by @{ctx.user}", good, bad,
                             command.metric, reply_to=(ctx.number, ctx.comment_id))
    try:
        return await bisect.start(ctx.gh, ctx.deps, request)
    except bisect.Refused as refused:
        return f"nothing started: {refused}"


Runner = Callable[[Context, commands.Command], Awaitable[str]]
async def run_tests(ctx: Context, command: commands.Command) -> str:
    """`/test [name ...]`: the named tests (all without names) on the PR head, `paths` aside."""
    assert ctx.pr is not None and ctx.cfg is not None
    unknown = [n for n in command.tests if ctx.cfg.test(n) is None]
    if unknown or not ctx.cfg.tests:
        known = ", ".join(f"`{t.name}`" for t in ctx.cfg.tests) or "none are configured"
        return f"no test {', '.join(f'`{n}`' for n in unknown)} in `.github/flops.yml` (known: {known})." \
            if unknown else "no `tests:` in `.github/flops.yml`."
    names = command.tests or tuple(t.name for t in ctx.cfg.tests)
    started = await tests.for_pull_request(ctx.gh, ctx.deps, ctx.cfg, ctx.pr, trigger=f"/test by @{ctx.user}",
                                           names=names, attempt=ctx.attempt, delivery_id=ctx.delivery_id)
    return f"started {len(started)} test Job{'s' if len(started) != 1 else ''} on {ctx.pr.head_sha[:7]}." \
        if started else "those tests are already running for this commit."


RUNNERS: dict[str, Runner] = {"regression": run_regression, "build": run_build, "train": run_train, "retest": retest,
                              "test": run_tests}


async def react(gh: GitHubAPI, repo: str, comment_id: int) -> None:
    await gh.post("/repos/" + repo + "/issues/comments/{id}/reactions", url_vars={"id": str(comment_id)},
                  data={"content": "eyes"}, accept="application/vnd.github+json")




def _not_allowed(user: str, permission: str, body: str) -> str:
    if [c.name for c in commands.parse(body).commands] == ["help"]:
        return f"@{user}\n\n" + commands.help_text(permission)
    return (f"@{user} thanks! flops-bot commands need write access to this repository (yours: **{permission}**), "
            f"so nothing was run. A maintainer can run it for you.")
