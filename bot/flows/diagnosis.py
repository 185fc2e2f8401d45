"""Why a Job failed and what it printed: the facts every reporter puts on its check run.

`diagnose` reads the pods (most specific cause first), `log_tail` the last lines of the container
that failed (masked: see `masker`), `termination_message` what a container that exited 0 left (Kaniko's
digest).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiException

from bot.core import jobs
from bot.core.text import escape, shown
from bot.flows.deps import Deps
from bot.platform import logs
from bot.platform.logs import Redactor, secret_values

log = logs.get_logger(__name__)

LOG_LINES = 50

@dataclass(frozen=True)
class Diagnosis:
    reason: str  # one line a human reads first: markdown, Kubernetes' words escaped
    pod: str | None
    container: str | None
    exit_code: int | None = None


def diagnose(result: jobs.Outcome, pods: list[dict[str, Any]]) -> Diagnosis:
    """Why a Job failed: image pull, OOMKilled, exit code, deadline, backoff — most specific first."""
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True):
        statuses = (pod.get("status") or {})
        for status in (statuses.get("initContainerStatuses") or []) + (statuses.get("containerStatuses") or []):
            state = status.get("state") or {}
            waiting = state.get("waiting") or {}
            if waiting.get("reason") in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                                         "CreateContainerConfigError"):
                why = f"{escape(waiting['reason'])}: {escape(waiting.get('message', '').strip(), 500)}"
                return Diagnosis(why.rstrip(": "), pod["metadata"]["name"], status["name"])
            terminated = state.get("terminated") or {}
            if terminated and terminated.get("exitCode", 0) != 0:
                why = terminated.get("reason") or "Error"
                text = f"container `{shown(status['name'])}` exited with code {terminated['exitCode']} ({escape(why)})"
                if why == "OOMKilled":
                    text += ": out of memory; raise the memory limit in .github/flops.yml"
                return Diagnosis(text, pod["metadata"]["name"], status["name"], terminated["exitCode"])
    if result.reason == "DeadlineExceeded":
        return Diagnosis("deadline exceeded: the Job ran longer than its timeout", _last_pod(pods), None)
    why = f"{escape(result.reason or 'Failed')}: {escape(result.message, 500)}"
    return Diagnosis(why.rstrip(": "), _last_pod(pods), None)


def _last_pod(pods: list[dict[str, Any]]) -> str | None:
    return pods[-1]["metadata"]["name"] if pods else None


def first_container(pod: dict[str, Any]) -> str:
    return str(pod["spec"]["containers"][0]["name"])


async def log_tail(deps: Deps, pod: str | None, container: str | None, pods: list[dict[str, Any]]) -> str:
    """The last lines of the container that failed, secrets masked."""
    if pod is None:
        return ""
    if container is None:
        container = next((first_container(p) for p in pods if p["metadata"]["name"] == pod), None)
        if container is None:
            return ""
    text = await deps.kube.pod_log(pod, container, tail_lines=LOG_LINES)
    spec = next((p.get("spec") or {} for p in pods if p["metadata"]["name"] == pod), {})
    return (await masker(deps, spec))(text)


async def masker(deps: Deps, pod_spec: dict[str, Any]) -> Redactor:
    """Masks the bot's own secrets, the values of every Secret the Pod receives (read by name) and
    credential shapes (`logs.Redactor`). A Secret the bot may not read is masked by shape only."""
    s = deps.settings
    values = [s.private_key, *s.webhook_secrets, s.s3.secret_key, s.s3.access_key]
    for name, keys in sorted(jobs.secrets_received(pod_spec).items()):
        try:
            data = await deps.kube.secret_data(name)
        except ApiException as exc:
            log.warning("secret unreadable; its values are masked by shape only",
                        extra={"secret": name, "status": exc.status})
            continue
        if data is not None:
            values += secret_values({k: v for k, v in data.items() if keys is None or k in keys})
    return Redactor(values)


def termination_message(pods: list[dict[str, Any]], container: str | None = None) -> str | None:
    """The termination message of a container that exited 0 (Kaniko writes the digest there)."""
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if container and status.get("name") != container:
                continue
            terminated = (status.get("state") or {}).get("terminated") or {}
            if terminated.get("exitCode") == 0 and terminated.get("message"):
                return str(terminated["message"]).strip()
    return None
