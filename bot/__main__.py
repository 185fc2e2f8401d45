"""Command line: `python -m bot serve | check-config PATH | plan push PAYLOAD --config FILE`.

The only place that imports `handlers` and composes their routers.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import uvloop
import yaml
from aiohttp import web

import handlers
from bot.core import config, jobs
from bot.core.config.consent import CONSENT_PATH, parse_consent
from bot.flows import bisect, builds, deploy, federated, pulls, results, reuse, tests
from bot.platform import checks, logs
from bot.platform.artifacts import Artifacts
from bot.platform.settings import Settings, SettingsError, from_env, needs_setup, setup_mode_from
from bot.platform.sources import SOURCE_URL_TTL
from bot.service.app import create_app
from bot.service.setup import create_setup_app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description="flops-bot: ML CI/CD GitHub App")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the webhook server")
    check = sub.add_parser("check-config", help="validate a .github/flops.yml (or, by its name, a config "
                                                "repository's flops-deploy.yml); exit 1 when invalid")
    check.add_argument("path", type=Path)
    plan = sub.add_parser("plan", help="print the Jobs an event would create, as YAML (no cluster needed)")
    plan.add_argument("event", choices=["push", "pull_request"])
    plan.add_argument("payload", type=Path, help="a push or pull_request webhook payload (JSON)")
    plan.add_argument("--config", type=Path, required=True, help="the repository's .github/flops.yml")
    plan.add_argument("--tree", type=Path, help="the commit's `git/trees/<sha>?recursive=1` answer (JSON): "
                                                "hashes the `inputs` of content-addressed images")
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config(args.path)
    if args.command == "plan":
        return plan_push(args.payload, args.config, args.tree) if args.event == "push" else \
            plan_pull_request(args.payload, args.config)
    return serve()


def check_config(path: Path) -> int:
    try:
        text = path.read_text()
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        if path.name == Path(CONSENT_PATH).name:
            consent = parse_consent(text)
            print(f"{path}: ok ({len(consent.allow)} allow entr{'y' if len(consent.allow) == 1 else 'ies'})")
            return 0
        parsed = config.parse(text)
    except config.ConfigError as error:
        for problem in error.problems:
            print(f"{path}: {problem.path or '(file)'}: {problem.message}", file=sys.stderr)
        return 1
    print(f"{path}: ok ({len(parsed.images)} image(s), {len(parsed.deploy)} deploy target(s), "
          f"regression {'on' if parsed.regression else 'off'}, federated {'on' if parsed.federated else 'off'}, "
          f"{len(parsed.tests)} test(s))")
    return 0


def read_plan_inputs(payload_path: Path, config_path: Path, tree_path: Path | None = None
                     ) -> tuple[dict[str, Any], config.RepoConfig, dict[str, Any] | None] | None:
    """The payload, the config and (for `--tree`) the commit's trees API answer; None once the
    problem is printed."""
    try:
        payload = json.loads(payload_path.read_text())
        cfg = config.parse(config_path.read_text())
        tree = json.loads(tree_path.read_text()) if tree_path is not None else None
        if tree is not None and not isinstance(tree, dict):
            raise ValueError(f"{tree_path} is not a trees API answer (a JSON object with `tree`)")
    except (OSError, ValueError) as exc:
        print(f"flops-bot plan: {exc}", file=sys.stderr)
        return None
    except config.ConfigError as error:
        for problem in error.problems:
            print(f"{config_path}: {problem.path or '(file)'}: {problem.message}", file=sys.stderr)
        return None
    payload.setdefault("installation", {"id": 0})
    return payload, cfg, tree


def plan_pull_request(payload_path: Path, config_path: Path) -> int:
    """The test Jobs a pull request's head would start, as YAML (`paths` not applied: the changed
    files of a PR are not in its payload). A fork's start only after a maintainer's grant."""
    inputs = read_plan_inputs(payload_path, config_path)
    if inputs is None:
        return 1
    payload, cfg, _ = inputs
    pr = pulls.PullRef.from_api(payload["pull_request"], int(payload["installation"]["id"]))
    src = jobs.Source(pr.repo, pr.head_sha, pr.installation_id, ref=pr.base_ref, pr=pr.number)
    cluster = jobs.cluster_from(plan_settings())
    chosen = [t for t in cfg.tests if "pull_request" in t.on]
    bodies = []
    for test in chosen:
        name = jobs.name_of_test(src, test.name)
        if test.build:  # the PR build it would wait for (pinned by digest once built)
            test = dataclasses.replace(test, image=f"{cfg.pr_registry or cfg.registry}/{test.image}:"
                                                   f"{jobs.pr_tag(pr.number, pr.head_sha)}", build=False)
        upload = {"url": "<presigned POST policy URL>", "fields": {}, "prefix": jobs.results_prefix(pr.repo, name)}
        bodies.append(jobs.job_of_test(src, cluster, tests.workload(test), test=test.name,
                                       source_url="<presigned URL of the source>", timeout=test.timeout,
                                       trigger="pull request", upload=upload))
    fork = " (a fork: only after an approval or /ok-to-test of this head)" if pr.fork else ""
    print(f"# {len(bodies)} test Job(s) for {pr.repo}#{pr.number}@{pr.head_sha[:7]}{fork}; `paths` not applied")
    print(yaml.safe_dump_all(bodies, sort_keys=False) if bodies else "# no test runs on pull requests")
    return 0


def plan_push(payload_path: Path, config_path: Path, tree_path: Path | None = None) -> int:
    """What a push would build: the Kaniko Jobs as YAML, from the payload's file list; with the
    commit's tree, which content-addressed images reuse a build (the bucket is read when configured)."""
    inputs = read_plan_inputs(payload_path, config_path, tree_path)
    if inputs is None:
        return 1
    payload, cfg, tree = inputs
    push = builds.Push.from_payload(payload)
    if not builds.wants_build(cfg, push):
        print(f"# {push.ref} is not a configured branch or tag: nothing would be built")
        return 0
    changed = builds.changed_in_payload(push)
    images = jobs.images_to_build(cfg, changed)
    tag = jobs.image_tag(push.branch or push.tag_name or "ref", push.commit_time, push.sha)
    source = jobs.Source(push.repo, push.sha, push.installation_id, ref=push.branch or push.ref)
    settings = plan_settings()
    store = Artifacts(settings.s3) if os.environ.get("MINIO_ENDPOINT") else None
    fetch = planned_source_url(settings.s3.bucket, push.repo, push.sha)
    requests = [jobs.BuildRequest(source, image, cfg.registry, tag, push.commit_time, source_url=fetch)
                for image in images]
    try:
        notes, todo = asyncio.run(reuse.plan(store, requests, tree))
    except Exception as exc:  # noqa: BLE001 - the bucket unreachable or refusing: say so, no traceback
        print(f"flops-bot plan: reading the build records in bucket {settings.s3.bucket!r} failed: {exc}",
              file=sys.stderr)
        return 1
    cluster = jobs.cluster_from(settings)
    bodies = [jobs.build_job(request, cluster, check=checks.build_name(request.image.name)) for request in todo]
    why = "all images (changed files unknown)" if changed is None else f"{len(changed)} changed file(s)"
    print(f"# {len(bodies)} Kaniko Job(s) for {push.repo}@{push.sha[:7]} ({why})")
    if notes:
        print("\n".join(notes))
    if bodies:
        print(f"# FLOPS_SOURCE_URL: when the Job is created, {fetch}")
    print(yaml.safe_dump_all(bodies, sort_keys=False) if bodies else
          "# nothing to build" if images else "# no image's paths match: nothing to build")
    return 0


def planned_source_url(bucket: str, repo: str, sha: str) -> str:
    """What a build's init container would fetch: the bot signs the URL only when it creates the Job."""
    return (f"a presigned GET (valid {SOURCE_URL_TTL.days} days) of s3://{bucket}/{jobs.source_key(repo, sha)}, "
            "the commit's source the bot uploads from GitHub")


def plan_settings() -> Settings:
    """Settings for planning: the environment where set, harmless placeholders elsewhere."""
    env = {"GITHUB_APP_ID": "1", "GITHUB_PRIVATE_KEY": "unused", "GITHUB_WEBHOOK_SECRET": "unused",
           "MINIO_ENDPOINT": "minio.minio.svc.cluster.local:9000", "MINIO_ACCESS_KEY": "unused",
           "MINIO_SECRET_KEY": "unused", "KUBERNETES_SERVICE_HOST": "planning", **os.environ}
    env["KUBERNETES_SERVICE_HOST"] = "planning"
    return from_env(env)


def serve() -> int:
    try:
        if needs_setup(os.environ):
            return serve_setup(*setup_mode_from(os.environ))
        settings = from_env()
    except SettingsError as error:
        for problem in error.problems:
            print(f"flops-bot: {problem}", file=sys.stderr)
        print("flops-bot: see README.md, 'Configuration', for every variable", file=sys.stderr)
        return 2
    run(settings)
    return 0


def serve_setup(host: str, port: int, log_level: str) -> int:
    """No App credentials at all: the App-registration page (health 200, readiness failing), bound
    to `FLOPS_SETUP_HOST` (default 127.0.0.1: this machine, or `kubectl port-forward`)."""
    logs.configure(logs.Redactor(), log_level)
    shown = f"[{host}]" if ":" in host else host
    print(f"flops-bot: no GitHub App credentials; open http://{shown}:{port}/ to register the App", file=sys.stderr)
    web.run_app(create_setup_app(os.environ), host=host, port=port, print=None)
    return 0


def run(settings: Settings) -> None:
    configure_logging(settings)
    web.run_app(build_app(settings), port=settings.port, print=None, shutdown_timeout=30, loop=event_loop())


def event_loop() -> asyncio.AbstractEventLoop:
    """The loop `serve` runs on: uvloop (libuv), whose transports and scheduling cost the intake
    less per delivery than asyncio's own loop (benchmarks/RESULTS.md, issue 22)."""
    return uvloop.new_event_loop()


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """JSON logs on stderr at `LOG_LEVEL` (default INFO), the settings' secrets masked: what
    `serve` runs with, and what benchmarks that start the bot must run with too."""
    logs.configure(logs.Redactor([settings.private_key, *settings.webhook_secrets, settings.s3.secret_key]),
                   settings.log_level, stream)


def build_app(settings: Settings, **options: Any) -> web.Application:
    """The whole bot: handlers' routers, the kinds of work the tracker reports, the after-build hooks.
    Regression Jobs are reported by `bisect.KIND`: the regression report, then a bisection's next step."""
    return create_app(settings, handlers.router(), kinds=[builds.KIND, bisect.KIND, federated.KIND, results.KIND],
                      after_build=[deploy.Deployer().after_build, federated.after_build, tests.after_build], **options)


if __name__ == "__main__":
    sys.exit(main())
