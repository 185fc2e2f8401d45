"""What every pod the bot starts must look like (#15 finding 5), asserted on Jobs read back from the
Kubernetes emulator: no API token, the runtime's seccomp filter, no privilege escalation, and no
capabilities except the few a root Kaniko build needs."""
from __future__ import annotations

from typing import Any

KANIKO_CAPABILITIES = {"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETUID", "SETGID", "SETFCAP"}


def assert_fenced(job: dict[str, Any]) -> None:
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    containers = pod["containers"] + pod.get("initContainers", [])
    for container in containers:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert not context.get("privileged"), container["name"]
        added = set(context["capabilities"].get("add", []))
        assert added <= (KANIKO_CAPABILITIES if container["name"] == "kaniko" else set()), container["name"]
