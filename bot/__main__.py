"""Command line: `python -m bot serve | check-config PATH | plan push PAYLOAD --config FILE`.

The only place that imports `handlers` and composes their routers.
"""
from __future__ import annotations

import argparse
import asyncio
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
from bot.flows import builds, deploy, federated, regression
from bot.platform import checks, logs
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
    plan.add_argument("event", choices=["push"])
    plan.add_argument("payload", type=Path, help="a push webhook payload (JSON)")
    plan.add_argument("--config", type=Path, required=True, help="the repository's .github/flops.yml")
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config(args.path)
    if args.command == "plan":
        return plan_push(args.payload, args.config)
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
          f"regression {'on' if parsed.regression else 'off'}, federated {'on' if parsed.federated else 'off'})")
    return 0


def plan_push(payload_path: Path, config_path: Path) -> int:
    """What a push would build: the Kaniko Jobs as YAML, from the payload's file list."""
    try:
        payload = json.loads(payload_path.read_text())
        cfg = config.parse(config_path.read_text())
    except (OSError, ValueError) as exc:
        print(f"flops-bot plan: {exc}", file=sys.stderr)
        return 1
    except config.ConfigError as error:
        for problem in error.problems:
            print(f"{config_path}: {problem.path or '(file)'}: {problem.message}", file=sys.stderr)
        return 1
    payload.setdefault("installation", {"id": 0})
    push = builds.Push.from_payload(payload)
    if not builds.wants_build(cfg, push):
        print(f"# {push.ref} is not a configured branch or tag: nothing would be built")
        return 0
    changed = builds.changed_in_payload(push)
    images = jobs.images_to_build(cfg, changed)
    tag = jobs.image_tag(push.branch or push.tag_name or "ref", push.commit_time, push.sha)
    source = jobs.Source(push.repo, push.sha, push.installation_id, ref=push.branch or push.ref)
    settings = plan_settings()
    cluster = jobs.cluster_from(settings)
    fetch = planned_source_url(settings.s3.bucket, push.repo, push.sha)
    bodies = [jobs.build_job(jobs.BuildRequest(source, image, cfg.registry, tag, push.commit_time, source_url=fetch),
                             cluster, check=checks.build_name(image.name))
              for image in images]
    why = "all images (changed files unknown)" if changed is None else f"{len(changed)} changed file(s)"
    print(f"# {len(bodies)} Kaniko Job(s) for {push.repo}@{push.sha[:7]} ({why})")
    if bodies:
        print(f"# FLOPS_SOURCE_URL: when the Job is created, {fetch}")
    print(yaml.safe_dump_all(bodies, sort_keys=False) if bodies else "# no image's paths match: nothing to build")
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
    """The whole bot: handlers' routers, the kinds of work the tracker reports, the after-build hooks."""
    return create_app(settings, handlers.router(), kinds=[builds.KIND, regression.KIND, federated.KIND],
                      after_build=[deploy.Deployer().after_build, federated.after_build], **options)


if __name__ == "__main__":
    sys.exit(main())
