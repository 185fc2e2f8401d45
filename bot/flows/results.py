"""The report of a finished test Job (`flops.dev/kind: test`) on its `flops/test: <name>` check.

Conclusion `success` only when the command exited 0 and no JUnit failure or error is recorded;
`timed_out` past the test's timeout; `failure` otherwise. The title is the JUnit count
(`2 failed, 318 passed, 4 skipped in 3m12s`), the summary the failed tests' table (marked when
the base branch's latest run failed the same test), the text the masked log tail when there is
no JUnit file or the command failed without recording a failure. Only `<FLOPS_OUTPUT>results/`
is read: at most `jobs.UPLOAD_FILES` keys listed (past that the check says the results were
truncated), `MAX_FILES` JUnit files and `junit.MAX_BYTES` of XML.
"""
from __future__ import annotations

import asyncio
from typing import Any

from gidgethub.abc import GitHubAPI

from bot.core import jobs, junit
from bot.core.text import clip, code_block, duration, escape, shown
from bot.flows import lifecycle
from bot.flows.deps import Deps
from bot.flows.diagnosis import diagnose, log_tail
from bot.platform import checks, logs
from bot.platform.artifacts import TooLarge

log = logs.get_logger(__name__)

ANNOTATIONS_PER_REQUEST = 50  # GitHub's limit per check-run update
MAX_FILES = 100  # JUnit files read from one run


def state_key(repo: str, branch: str, test: str) -> str:
    """A branch's latest run of `test`: `{"sha", "failed": [test ids]}`, written by the bot."""
    return f"tests/{repo}/branch/{branch}/{test}.json"


async def read_junit(deps: Deps, prefix: str) -> tuple[junit.Report | None, str, str]:
    """The merged JUnit files under `prefix` (None when there are none), a problem to show, and a
    note when the run wrote more files than the bot lists (`jobs.UPLOAD_FILES`, in key order)."""
    listed, truncated = await deps.artifacts.runs.list_page(prefix, jobs.UPLOAD_FILES)
    note = (f"**Results truncated:** the run wrote more than {jobs.UPLOAD_FILES} files under `$FLOPS_RESULTS`; "
            f"only the first {jobs.UPLOAD_FILES} (in name order) were looked at. Write fewer files there "
            f"(the JUnit XML and a few reports).") if truncated else ""
    if truncated:
        log.warning("results listing truncated", extra={"prefix": shown(prefix), "limit": jobs.UPLOAD_FILES})
    keys = sorted(k for k in listed if k.lower().endswith(".xml"))
    if not keys:
        return None, "", note
    files, budget = [], junit.MAX_BYTES
    for key in keys[:MAX_FILES]:
        try:
            data = await deps.artifacts.runs.get_bytes(key, max_bytes=budget)
        except TooLarge:
            return None, f"the JUnit files are larger than {junit.MAX_BYTES // (1024 * 1024)} MB together; not read", \
                note
        if data is not None:
            files.append((key[len(prefix):], data))
            budget -= len(data)
    try:  # up to 50 MB of XML: parsed in a thread, never on the event loop
        return await asyncio.to_thread(junit.parse, files), "", note
    except junit.JUnitError as exc:
        return None, str(exc), note


async def base_failures(deps: Deps, ann: dict[str, str], test: str) -> set[str]:
    base = ann.get(jobs.DEFAULT_BRANCH, "")
    if not base:
        return set()
    try:
        record = await deps.artifacts.get_json(state_key(ann[jobs.REPO], base, test))
    except ValueError:
        return set()
    failed = record.get("failed") if isinstance(record, dict) else None
    return {str(f) for f in failed} if isinstance(failed, list) else set()


async def report(job: dict[str, Any], result: jobs.Outcome, deps: Deps) -> str:
    """Tracker reporter for `flops.dev/kind: test`."""
    ann = jobs.annotations_of(job)
    gh = deps.github.for_installation(int(ann[jobs.INSTALLATION]))
    test = ann.get(jobs.TEST_NAME, "")
    parsed, problem, truncated = await read_junit(deps, ann[jobs.OUTPUT] + jobs.RESULTS_PREFIX)
    timed_out = result.reason == "DeadlineExceeded"
    broken = bool(parsed and parsed.broken)
    conclusion = "timed_out" if timed_out else "success" if result.succeeded and not broken and not problem \
        else "failure"
    pods = await deps.kube.job_pods(jobs.name_of(job)) if not result.succeeded else []
    diagnosis = diagnose(result, pods) if not result.succeeded else None
    title, lines = _headline(ann, result, parsed, diagnosis.reason if diagnosis else "", problem)
    lines += [truncated] if truncated else []
    if parsed is not None:
        base = ann.get(jobs.DEFAULT_BRANCH, "")
        table = parsed.table(await base_failures(deps, ann, test) if broken else (), base)
        lines += [table] if table else []
    text = None
    if diagnosis is not None and not broken:
        tail = await log_tail(deps, diagnosis.pod, "test", pods)
        text = f"Last lines of the log (Job `{jobs.name_of(job)}`):\n\n{code_block(tail)}" if tail else None
    summary, notes = "\n\n".join(lines), parsed.annotations() if parsed is not None else []
    if notes and ann.get(jobs.CHECK_RUN):  # annotated before it completes: nobody sees it finished without them
        await annotate(gh, ann[jobs.REPO], ann[jobs.CHECK_RUN], title, summary + checks.dropped_note(ann), text, notes)
    check_id = await _finish(gh, ann, conclusion, title, summary, text)
    if notes and not ann.get(jobs.CHECK_RUN):  # the check was created completed just now
        await annotate(gh, ann[jobs.REPO], check_id, title, summary + checks.dropped_note(ann), text, notes)
    if parsed is not None:
        if ann.get(jobs.REF) and jobs.PR not in ann:  # a configured branch's push: its latest run
            await deps.artifacts.put_json(state_key(ann[jobs.REPO], ann[jobs.REF], test), {
                "sha": ann[jobs.SHA], "run": ann[jobs.RUN_ID], "failed": [c.id for c in parsed.broken]})
    return conclusion


def _headline(ann: dict[str, str], result: jobs.Outcome, parsed: junit.Report | None, reason: str,
              problem: str) -> tuple[str, list[str]]:
    """(title, summary paragraphs before the table)."""
    lines = []
    if result.reason == "DeadlineExceeded":
        limit = duration(int(ann.get(jobs.TIMEOUT) or 0))
        title = f"Timed out after {limit}" + (f": {parsed.title}" if parsed else "")
        lines.append(f"**Timed out:** the command ran longer than the test's `timeout` ({limit}) and was stopped; "
                     f"the results it had written are shown. Raise `timeout` in `.github/flops.yml` if it is "
                     f"legitimately slow.")
    elif result.succeeded:
        title = parsed.title if parsed else "Passed (no JUnit file)"
        lines.append("The command exited 0." + ("" if parsed or problem else f" {_NO_JUNIT}"))
    else:
        title = parsed.title if parsed else "Failed (results not read)" if problem else "Failed (no JUnit file)"
        lines.append(f"**Failed:** {reason}." + ("" if parsed or problem else f" {_NO_JUNIT}"))
    if problem:
        lines.append(f"**Results not read:** {escape(problem, 500)}")
        title = "Results not read" if parsed is None and result.succeeded else title
    return title, lines


_NO_JUNIT = (f"No JUnit XML was found under `$FLOPS_RESULTS` (`{jobs.RESULTS}`): write one there (for pytest, "
             f"`--junitxml={jobs.RESULTS}/junit.xml`) to get the failed tests on this check.")


async def _finish(gh: GitHubAPI, ann: dict[str, str], conclusion: str, title: str, summary: str,
                  text: str | None) -> str:
    """Complete the Job's check (created completed if the bot died before making it); its id."""
    summary += checks.dropped_note(ann)
    if ann.get(jobs.CHECK_RUN):
        await checks.complete(gh, ann[jobs.REPO], ann[jobs.CHECK_RUN], conclusion, title=title, summary=summary,
                              text=text)
        return ann[jobs.CHECK_RUN]
    return str(await checks.post_completed(gh, ann[jobs.REPO], ann[jobs.SHA], ann[jobs.CHECK_NAME], conclusion,
                                           title=title, summary=summary, text=text))


async def annotate(gh: GitHubAPI, repo: str, check_id: str, title: str, summary: str, text: str | None,
                   annotations: list[dict[str, Any]]) -> None:
    """GitHub takes at most 50 annotations per update (each update appends them; the output it
    carries replaces the old one, so the same title, summary and text go with every batch)."""
    output: dict[str, Any] = {"title": clip(title, 1000), "summary": clip(summary)}
    if text:
        output["text"] = clip(text)
    for start in range(0, len(annotations), ANNOTATIONS_PER_REQUEST):
        batch = annotations[start:start + ANNOTATIONS_PER_REQUEST]
        await gh.patch("/repos/" + repo + "/check-runs/{id}", url_vars={"id": check_id},
                       data={"output": {**output, "annotations": batch}})
    if annotations:
        log.info("test annotations posted", extra={"repo": repo, "check": check_id, "count": len(annotations),
                                                   "first": shown(annotations[0]["path"])})


KIND = lifecycle.Kind(jobs.TEST, report)
